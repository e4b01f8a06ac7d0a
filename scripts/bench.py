"""taskrunner benchmark: spawn limit, end-to-end throughput, latency, lateness, HTTP, memory.

Starts its own Redis (redis-server from PATH, else the bundled Valkey) on a free port and its own
runner process (`taskrunner run`, uvloop, as shipped), measures, prints a table and, as its last
line, one JSON object. Run it through `scripts/bench` (which prepares .venv).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import redis.asyncio as aioredis
import uvloop

from scripts._harness import (
    KEYS,
    final_events,
    free_port,
    percentile,
    redis_server,
    rss_mb,
    runner_process,
    wait_http,
)
from taskrunner.executor import ExecSpec, Execution
from taskrunner.models import ChannelConfig, Job
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


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
QUICK = Sizes(2000, 3000, 2000, 3.0, 40, 5000, 1_000_000, 200)
SMOKE = Sizes(100, 100, 100, 0.5, 5, 100, 10_000, 20)  # tests/test_bench.py: does it still run
FULL = Sizes(5000, 10000, 6000, 10.0, 150, 20000, 1_000_000, 500)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- 1. spawn limit ---------------------------------------------------------------------------


async def spawn_with_runner_path(n: int, concurrency: int = 10) -> float:
    """The runner's own spawn path (Execution: process group, pipes, pidfd) in a bare loop."""
    spec = ExecSpec(argv=("/bin/true",), timeout_s=30.0, kill_grace_s=1.0)
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            execution = await Execution.start(spec)
            result = await execution.wait()
            assert result.succeeded, result

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def spawn_with_threads(
    n: int, concurrency: int = 10, argv: Sequence[str] = ("/bin/true",)
) -> float:
    """subprocess.run from a thread pool (CPython's vfork path)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for code in pool.map(lambda _: subprocess.run(argv).returncode, range(n)):
            assert code == 0
    return n / (time.perf_counter() - started)


def with_cpu(run: Callable[[], float], n: int) -> tuple[float, float, float]:
    """`run()`'s result, the CPU time (user + system) the n processes it started used, per
    process, and the CPU this process used starting and reaping them, per process, in ms."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    own_before = time.process_time()
    result = run()
    own = time.process_time() - own_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return result, used / n * 1000, own / n * 1000


# -- the system under test ----------------------------------------------------------------------


async def make_channel(store: Store, name: str, workers: int, *, paused: bool = False) -> None:
    await store.put_channel(ChannelConfig(name=name, worker_count=workers, paused=paused))
    await asyncio.sleep(1.5)  # every runner reloads channels within a second


async def push_messages(client: aioredis.Redis, messages: Sequence[bytes]) -> None:
    for start in range(0, len(messages), 1000):
        await client.lpush(KEYS.prepare_queue, *messages[start : start + 1000])


async def throughput(client: aioredis.Redis, channel: str, task: str, n: int) -> float:
    messages = [json.dumps({"task": task, "chan": channel}).encode()] * n
    async with final_events(client) as done:
        started = time.perf_counter()
        await push_messages(client, messages)
        for _ in range(n):
            await asyncio.wait_for(done.get(), 60)
        return n / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU (user + system) a process has used, and its reaped children (the runner's jobs)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(f) / CLOCK_TICKS for f in fields[11:15])
    return utime + stime, cutime + cstime


async def throughput_and_cpu(
    client: aioredis.Redis, channel: str, task: str, n: int, *, runner: int, redis: int
) -> tuple[float, dict[str, float]]:
    """throughput(), and the CPU a job took in each process at work, in ms: the runner, the
    jobs' own processes, Redis and this benchmark's client."""
    runner_before, jobs_before = cpu_seconds(runner)
    redis_before = cpu_seconds(redis)[0]
    client_before = time.process_time()
    rate = await throughput(client, channel, task, n)
    runner_after, jobs_after = cpu_seconds(runner)
    per_job = {
        "runner": runner_after - runner_before,
        "jobs": jobs_after - jobs_before,
        "redis": cpu_seconds(redis)[0] - redis_before,
        "client": time.process_time() - client_before,
    }
    return rate, {name: used / n * 1000 for name, used in per_job.items()}


def cpu_budget(
    figures: dict[str, Any], prefix: str, cpu: dict[str, float], target_rate: float
) -> None:
    """What the machine's cores allow at the CPU a job took: the highest rate, and the runner's
    CPU a job that would leave room for `target_rate` (negative: not even a runner that used
    no CPU at all)."""
    cores = os.cpu_count() or 1
    figures[f"{prefix}_cpu"] = "{runner:.2f} / {jobs:.2f} / {redis:.2f} / {client:.2f} ms".format(
        **cpu
    )
    figures[f"{prefix}_cpu_bound"] = cores * 1000 / sum(cpu.values())
    others = cpu["jobs"] + cpu["redis"] + cpu["client"]
    figures[f"{prefix}_runner_budget"] = cores * 1000 / target_rate - others


async def start_times(client: aioredis.Redis, ids: Sequence[str]) -> dict[str, float]:
    """Each `date +%s.%N` job's own clock reading: when its process ran."""
    stamps = {}
    for job_id in ids:
        out = await client.hget(KEYS.job(job_id), "stdout")
        stamps[job_id] = float(cast(bytes, out))
    return stamps


async def start_latency(client: aioredis.Redis, duration_s: float) -> list[float]:
    """Push one `date` job every 100 ms; latency = its process's clock - the push time."""
    pushed: dict[str, float] = {}
    async with final_events(client) as done:
        n = int(duration_s * 10)
        for i in range(n):
            job_id = f"lat-{i}"
            message = json.dumps({"task": "date +%s.%N", "chan": "bench", "id": job_id})
            pushed[job_id] = time.time()
            await client.lpush(KEYS.prepare_queue, message)
            await asyncio.sleep(0.1)
        for _ in range(n):
            await asyncio.wait_for(done.get(), 30)
    started = await start_times(client, list(pushed))
    return [(started[i] - pushed[i]) * 1000 for i in pushed]


async def lateness(client: aioredis.Redis, n: int) -> list[float]:
    """Delayed `date` jobs due over the next 2 s; lateness = its process's clock - due time."""
    base = time.time() + 1.0
    due = {f"late-{i}": base + 2.0 * i / n for i in range(n)}
    async with final_events(client) as done:
        for job_id, at in reversed(due.items()):
            message = json.dumps(
                {"task": "date +%s.%N", "chan": "bench", "id": job_id, "run_at": at}
            )
            await client.lpush(KEYS.prepare_queue, message)
        for _ in range(n):
            await asyncio.wait_for(done.get(), 30)
    started = await start_times(client, list(due))
    late = [(started[i] - due[i]) * 1000 for i in due]
    assert min(late) >= 0, f"a delayed job started {min(late):.1f} ms early"
    return late


async def http_push(port: int, n: int, connections: int = 50) -> float:
    url = f"http://127.0.0.1:{port}/push"
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url, data={"task": "true", "channel": "held"}) as response:
                    assert response.status == 200, await response.text()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return n / (time.perf_counter() - started)


async def commands_per_job(port: int, client: aioredis.Redis, n: int) -> tuple[float, float]:
    """Top-level commands per /bin/true job (MONITOR, script-internal calls excluded), and
    every call INFO commandstats counts (script-internal calls included)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"MONITOR\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"+OK")
    top_level = 0

    async def count() -> None:
        nonlocal top_level
        while line := await reader.readline():
            if b"[0 lua]" not in line and b'"info"' not in line.lower():
                top_level += 1

    before = await commandstats_total(client)
    counter = asyncio.create_task(count())
    await throughput(client, "bench", "/bin/true", n)
    await asyncio.sleep(0.5)
    after = await commandstats_total(client)
    counter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await counter
    writer.close()
    return top_level / n, (after - before) / n


async def commandstats_total(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def resp(*parts: bytes) -> bytes:
    """One command in Redis's wire protocol."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


async def fill_queue(store: Store, port: int, channel: str, n: int) -> None:
    """Queue n jobs laid out exactly as the enqueue script lays them out (a job hash plus its id
    in the channel's list): one job goes through the script, the rest copy its fields, written
    as raw protocol on one connection. Going through Lua and redis-py for every job would make
    this phase take a minute; the memory is the same."""
    probe = Job(id="q0", task="echo 0", channel=channel, created_at=time.time())
    await store.enqueue(probe, runner_id="bench")
    record = cast(dict[bytes, bytes], await store.redis.hgetall(KEYS.job("q0")))
    assert record[b"state"] == b"queued", record
    fixed = [item for f, v in record.items() if f not in (b"id", b"task") for item in (f, v)]
    queue = KEYS.queue(channel).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    batch = 20000
    for start in range(1, n, batch):
        chunk = []
        for i in range(start, min(n, start + batch)):
            job_id = b"q%d" % i
            chunk.append(resp(b"HSET", KEYS.job(job_id.decode()).encode(), b"id", job_id,
                              b"task", b"echo %d" % i, *fixed))  # fmt: skip
            chunk.append(resp(b"LPUSH", queue, job_id))
        writer.write(b"".join(chunk))
        await writer.drain()
        for _ in range(len(chunk)):
            reply = await reader.readline()
            assert reply.startswith(b":"), reply
        if (start // batch) % 10 == 0:
            log(f"queued {min(n, start + batch):,} of {n:,} jobs")
    writer.close()


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


TABLE = [
    ("spawn_runner_path", "spawn: runner's own path, bare loop", "{:,.0f} /s"),
    ("spawn_threads", "spawn: subprocess.run from threads", "{:,.0f} /s"),
    ("spawn_limit", "spawn limit (fastest of the two)", "{:,.0f} /s"),
    ("true_cpu_ms", "  CPU of one /bin/true process", "{:.2f} ms"),
    ("true_parent_ms", "  CPU subprocess.run takes to start it", "{:.2f} ms"),
    ("true_cpu_cap", "  cores / that: at most", "{:,.0f} /s"),
    ("jobs_per_s", "end to end, /bin/true, 10 workers", "{:,.0f} jobs/s"),
    ("ratio", "  ratio to the spawn limit", "{:.2f}  (target >= 0.75)"),
    ("true_cpu", "  CPU a job: runner/jobs/Redis/client", "{}"),
    ("true_cpu_bound", "  the cores at that CPU: at most", "{:,.0f} jobs/s"),
    ("true_runner_budget", "  runner CPU a job 0.75 leaves room for", "{:.2f} ms"),
    ("sleep_jobs_per_s", "end to end, sleep 0.025, 50 workers", "{:,.0f} jobs/s"),
    ("sleep_ratio", "  ratio to the ideal", "{:.2f}  (target >= 0.9)"),
    ("sleep_cpu", "  CPU a job: runner/jobs/Redis/client", "{}"),
    ("sleep_cpu_bound", "  the cores at that CPU: at most", "{:,.0f} jobs/s"),
    ("sleep_runner_budget", "  runner CPU a job 0.9 leaves room for", "{:.2f} ms"),
    ("sleep_threads", "  same jobs, subprocess.run, 50 threads", "{:,.0f} /s  (no queue at all)"),
    ("sleep_threads_ratio", "    its ratio to the ideal", "{:.2f}"),
    ("sleep_cpu_ms", "  CPU of one sleep 0.025 process", "{:.2f} ms"),
    ("sleep_parent_ms", "  CPU subprocess.run takes to start it", "{:.2f} ms"),
    ("sleep_cpu_cap", "  cores / that: at most", "{:,.0f} /s"),
    ("start_p50_ms", "start latency p50 at 10 jobs/s", "{:.1f} ms"),
    ("start_p99_ms", "start latency p99 at 10 jobs/s", "{:.1f} ms  (target <= 10)"),
    ("late_p50_ms", "delayed job lateness p50", "{:.1f} ms"),
    ("late_p99_ms", "delayed job lateness p99", "{:.1f} ms  (target <= 50)"),
    ("push_req_per_s", "POST /push, 50 connections", "{:,.0f} req/s  (target >= 3,000)"),
    ("redis_cmds_per_job", "Redis commands per job (round trips)", "{:.2f}  (target <= 6)"),
    ("redis_calls_per_job_incl_scripts", "  calls incl. inside Lua scripts", "{:.1f}"),
    ("rss_idle_mb", "runner RSS idle", "{:.1f} MB"),
    ("rss_1m_queued_mb", "runner RSS, 1,000,000 jobs queued", "{:.1f} MB  (target: idle + 10)"),
    ("redis_bytes_per_queued_job", "Redis memory per queued job", "{:.0f} B  (target <= 600)"),
]
JSON_KEYS = (
    "spawn_limit", "jobs_per_s", "ratio", "sleep_jobs_per_s", "sleep_ratio", "start_p50_ms",
    "start_p99_ms", "late_p50_ms", "late_p99_ms", "push_req_per_s", "redis_cmds_per_job",
    "rss_idle_mb", "rss_1m_queued_mb", "redis_bytes_per_queued_job",
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs: under 2 minutes")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    started = time.monotonic()
    figures = uvloop.run(run(sizes))
    print(f"taskrunner bench ({'smoke' if args.smoke else 'quick' if args.quick else 'full'}, {os.cpu_count()} cores,"
          f" Redis: {figures['redis']}, {time.monotonic() - started:.0f} s)")  # fmt: skip
    for key, label, fmt in TABLE:
        print(f"  {label:<40} {fmt.format(figures[key])}")
    print(json.dumps({key: round(float(figures[key]), 2) for key in JSON_KEYS}))


if __name__ == "__main__":
    main()
