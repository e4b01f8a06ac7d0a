"""What scripts/bench.py and scripts/chaos.py share: their own Redis server, `taskrunner run`
child processes, the job events feed, and small measurements (RSS, percentiles).

Both scripts run as modules from the project root (`python -m scripts.NAME`, as scripts/NAME
does); the Redis server class comes from tests/support/redis_servers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from taskrunner.store import Keys
from tests.support.net import free_port
from tests.support.redis_servers import RedisServer, server_binary

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "FINAL",
    "KEYS",
    "ROOT",
    "RedisServer",
    "final_events",
    "free_port",
    "percentile",
    "redis_server",
    "rss_mb",
    "runner_process",
    "spawn_runner",
    "stop_process",
    "wait_http",
]

KEYS = Keys()
FINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})
TASKRUNNER = Path(sys.executable).with_name("taskrunner")


@contextlib.contextmanager
def redis_server(workdir: Path, *, appendonly: bool = False) -> Iterator[RedisServer]:
    """redis-server from PATH, else the bundled Valkey, on a free port with its files in
    `workdir`; stopped on exit."""
    binary = server_binary("redis")
    kind: Any = "redis"
    if binary is None:
        binary, kind = server_binary("valkey"), "valkey"
    assert binary is not None
    server = RedisServer(kind, binary, workdir, appendonly=appendonly)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def spawn_runner(
    url: str,
    http_port: int,
    pidfile: Path,
    log_path: Path,
    *extra: str,
    cwd: Path | None = None,
    nofile: int | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `taskrunner run` on `url`, logging (appending) to `log_path`; its jobs run in
    `cwd` (default: ours); with `nofile`, under that open-file limit (`ulimit -n`); `env`
    is added to our environment."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [
                str(TASKRUNNER), "run", "--redis-url", url,
                "--http-addr", f"127.0.0.1:{http_port}", "--pidfile", str(pidfile), *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            preexec_fn=None if nofile is None else functools.partial(_limit_files, nofile),
            env=None if env is None else {**os.environ, **env},
        )  # fmt: skip


def _limit_files(nofile: int) -> None:
    """In the child, before exec: `ulimit -n NOFILE` (soft and hard)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, *, timeout_s: float = 30.0
) -> int:
    """Send `sig` and reap; SIGKILL if it is still there after `timeout_s`. Returns the code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@contextlib.contextmanager
def runner_process(url: str, workdir: Path, http_port: int) -> Iterator[subprocess.Popen[bytes]]:
    """One runner with default flags (10 workers a channel), stopped with SIGTERM on exit."""
    proc = spawn_runner(
        url, http_port, workdir / "runner.pid", workdir / "runner.log", "--concurrent", "10"
    )
    try:
        yield proc
    finally:
        stop_process(proc)


async def wait_http(port: int, timeout_s: float = 20.0) -> None:
    """Wait until a runner answers GET /healthz on `port`."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the runner on port {port} did not answer /healthz in time")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def final_events(client: aioredis.Redis) -> AsyncIterator[asyncio.Queue[str]]:
    """A queue of job ids as they reach a final state (from the job events channel)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(KEYS.job_events)

    async def pump() -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None:
                job_id, _, state = message["data"].decode().partition(" ")
                if state in FINAL:
                    queue.put_nowait(job_id)

    task = asyncio.create_task(pump())
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pubsub.aclose()  # type: ignore[no-untyped-call]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
