"""What scripts/bench measures and how: the spawn limit of this machine, and the workloads it
drives through a running `taskrunner run` (end-to-end throughput with the CPU each process took,
start latency, lateness of delayed jobs, POST /push, Redis commands per job, a million queued
jobs). bench.py runs them in order and reports the figures (_bench_report.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import aiohttp
import redis.asyncio as aioredis

from scripts._harness import KEYS, final_events
from taskrunner.executor import Execution
from taskrunner.models import ChannelConfig, Job
from taskrunner.spawn import ExecSpec
from taskrunner.store import Store

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
    """Queue n jobs laid out exactly as the enqueue script lays them out (a job hash, its id in
    the channel's list and in the two job indexes): one job goes through the script, the rest copy its fields, written
    as raw protocol on one connection. Going through Lua and redis-py for every job would make
    this phase take a minute; the memory is the same."""
    probe = Job(id="q0", task="echo 0", channel=channel, created_at=time.time())
    await store.enqueue(probe, runner_id="bench")
    record = cast(dict[bytes, bytes], await store.redis.hgetall(KEYS.job("q0")))
    assert record[b"state"] == b"queued", record
    fixed = [item for f, v in record.items() if f not in (b"id", b"task") for item in (f, v)]
    queue = KEYS.queue(channel).encode()
    indexes = [KEYS.job_index.encode(), KEYS.channel_job_index(channel).encode()]
    created_us = int(record[b"created_at"].replace(b".", b""))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    batch = 20000
    for start in range(1, n, batch):
        chunk = []
        for i in range(start, min(n, start + batch)):
            job_id = b"q%d" % i
            chunk.append(resp(b"HSET", KEYS.job(job_id.decode()).encode(), b"id", job_id,
                              b"task", b"echo %d" % i, *fixed))  # fmt: skip
            chunk.append(resp(b"LPUSH", queue, job_id))
            chunk += [resp(b"ZADD", key, b"%d" % (created_us + i), job_id) for key in indexes]
        writer.write(b"".join(chunk))
        await writer.drain()
        for _ in range(len(chunk)):
            reply = await reader.readline()
            assert reply.startswith(b":"), reply
        if (start // batch) % 10 == 0:
            log(f"queued {min(n, start + batch):,} of {n:,} jobs")
    writer.close()
