"""taskrunner benchmark: spawn limit, end-to-end throughput, latency, lateness, HTTP, memory.

Starts its own Redis (redis-server from PATH, else the bundled Valkey) on a free port and its own
runner process (`taskrunner run`, uvloop, as shipped), measures, prints a table and, as its last
line, one JSON object. Run it through `scripts/bench` (which prepares .venv). This module holds
the sizes and the order of the run; the workloads are in _bench_workloads.py, the table and the
JSON line in _bench_report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvloop

from scripts._bench_report import print_report
from scripts._bench_workloads import (
    commands_per_job,
    cpu_budget,
    fill_queue,
    http_push,
    lateness,
    log,
    make_channel,
    spawn_with_runner_path,
    spawn_with_threads,
    start_latency,
    throughput,
    throughput_and_cpu,
    with_cpu,
)
from scripts._harness import (
    KEYS,
    free_port,
    percentile,
    redis_server,
    rss_mb,
    runner_process,
    wait_http,
)
from taskrunner.store import Store


@dataclass(frozen=True)
class Sizes:
    spawn: int
    jobs: int
    sleep_jobs: int
    latency_s: float
    late_jobs: int
    http_requests: int
    queued: int
    monitor_jobs: int


QUICK = Sizes(2000, 3000, 2000, 3.0, 40, 5000, 1_000_000, 200)
SMOKE = Sizes(100, 100, 100, 0.5, 5, 100, 10_000, 20)  # tests/test_bench.py: does it still run
FULL = Sizes(5000, 10000, 6000, 10.0, 150, 20000, 1_000_000, 500)


# -- the run ------------------------------------------------------------------------------------


async def run(sizes: Sizes) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    log(f"1/8 spawn limit: {sizes.spawn} x /bin/true at concurrency 10")
    own = await spawn_with_runner_path(sizes.spawn)
    threads, figures["true_cpu_ms"], figures["true_parent_ms"] = await asyncio.to_thread(
        with_cpu, lambda: spawn_with_threads(sizes.spawn), sizes.spawn
    )
    figures["spawn_runner_path"] = own
    figures["spawn_threads"] = threads
    figures["spawn_limit"] = max(own, threads)
    # The same sleep jobs as (3) with no queue at all: what this machine's cores allow.
    (
        figures["sleep_threads"],
        figures["sleep_cpu_ms"],
        figures["sleep_parent_ms"],
    ) = await asyncio.to_thread(
        with_cpu,
        lambda: spawn_with_threads(sizes.sleep_jobs, 50, ("sleep", "0.025")),
        sizes.sleep_jobs,
    )
    cores = os.cpu_count() or 1  # the processes' own CPU alone caps any runner at this rate:
    figures["true_cpu_cap"] = cores * 1000 / figures["true_cpu_ms"]
    figures["sleep_cpu_cap"] = cores * 1000 / figures["sleep_cpu_ms"]

    with tempfile.TemporaryDirectory(prefix="taskrunner-bench-") as tmp:
        workdir = Path(tmp)
        with redis_server(workdir) as server:
            http_port = free_port()
            client = aioredis.Redis.from_url(server.url)
            store = Store.from_url(server.url)
            figures["redis"] = server.kind
            with runner_process(server.url, workdir, http_port) as proc:
                await wait_http(http_port)
                await make_channel(store, "bench", 10)
                await make_channel(store, "sleepy", 50)
                await make_channel(store, "held", 10, paused=True)
                await throughput(client, "bench", "/bin/true", 200)  # warm up
                figures["rss_idle_mb"] = rss_mb(proc.pid)

                pids = {"runner": proc.pid, "redis": server.pid}
                log(f"2/8 end to end: {sizes.jobs} x /bin/true, worker_count 10")
                figures["jobs_per_s"], cpu = await throughput_and_cpu(
                    client, "bench", "/bin/true", sizes.jobs, **pids
                )
                figures["ratio"] = figures["jobs_per_s"] / figures["spawn_limit"]
                cpu_budget(figures, "true", cpu, 0.75 * figures["spawn_limit"])

                log(f"3/8 end to end: {sizes.sleep_jobs} x sleep 0.025, worker_count 50")
                sleepy, cpu = await throughput_and_cpu(
                    client, "sleepy", "sleep 0.025", sizes.sleep_jobs, **pids
                )
                figures["sleep_jobs_per_s"] = sleepy
                ideal = min(50 / 0.025, figures["spawn_limit"])
                figures["sleep_ratio"] = sleepy / ideal
                figures["sleep_threads_ratio"] = figures["sleep_threads"] / ideal
                cpu_budget(figures, "sleep", cpu, 0.9 * ideal)

                log(f"4/8 start latency at 10 jobs/s for {sizes.latency_s:.0f} s")
                latencies = await start_latency(client, sizes.latency_s)
                figures["start_p50_ms"] = percentile(latencies, 0.5)
                figures["start_p99_ms"] = percentile(latencies, 0.99)

                log(f"5/8 lateness of {sizes.late_jobs} delayed jobs")
                late = await lateness(client, sizes.late_jobs)
                figures["late_p50_ms"] = percentile(late, 0.5)
                figures["late_p99_ms"] = percentile(late, 0.99)

                log(f"6/8 POST /push: {sizes.http_requests} requests over 50 connections")
                figures["push_req_per_s"] = await http_push(http_port, sizes.http_requests)
                await client.delete(KEYS.queue("held"))

                log(f"7/8 Redis commands per job ({sizes.monitor_jobs} jobs under MONITOR)")
                top, every = await commands_per_job(server.port, client, sizes.monitor_jobs)
                figures["redis_cmds_per_job"] = top
                figures["redis_calls_per_job_incl_scripts"] = every

                log(f"8/8 memory: {sizes.queued:,} jobs queued in a paused channel")
                await make_channel(store, "parked", 10, paused=True)
                figures["rss_idle_mb"] = min(figures["rss_idle_mb"], rss_mb(proc.pid))
                used_before = (await client.info("memory"))["used_memory"]
                await fill_queue(store, server.port, "parked", sizes.queued)
                used_after = (await client.info("memory"))["used_memory"]
                await asyncio.sleep(3.0)  # a few channel reloads and heartbeats with it queued
                figures["rss_1m_queued_mb"] = rss_mb(proc.pid)
                figures["queued_jobs"] = sizes.queued
                figures["redis_bytes_per_queued_job"] = (used_after - used_before) / sizes.queued
            await client.aclose()
            await store.close()
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs: under 2 minutes")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    started = time.monotonic()
    figures = uvloop.run(run(sizes))
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    print_report(figures, mode, time.monotonic() - started)


if __name__ == "__main__":
    main()
