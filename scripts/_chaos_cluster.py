"""The system under test of scripts/chaos.py: a Redis with AOF on, runner processes in
slots, a monitor, and the faults: SIGKILL, Redis restarts and hangs, drains."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from scripts._chaos_jobs import CHANNELS, Planned, Run
from scripts._harness import (
    KEYS,
    RedisServer,
    free_port,
    rss_mb,
    spawn_runner,
    stop_process,
    wait_http,
)
from taskrunner.guard import zombie_children
from taskrunner.models import ChannelConfig

REAP_EVERY_S = 0.25  # how often the monitor reaps adopted processes
LEASE_S = 2.0
RUNNER_FLAGS = (
    "--lease", str(LEASE_S), "--drain-timeout", "5", "--kill-grace", "0.5", "--concurrent", "10",
)  # fmt: skip


def log(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


# -- the system under test -----------------------------------------------------------------------


@dataclass
class Slot:
    """One runner process's place: its port, pidfile and log stay across restarts."""

    index: int
    port: int
    pidfile: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    stopping: bool = False  # the harness is stopping it: an exit is expected


@dataclass
class Kill:
    at: float  # time.time() just before SIGKILL
    runner_id: str
    owned: set[str]  # the jobs Redis said it held when it died


@dataclass
class Health:
    """What the monitor saw while the scenario ran."""

    rss_max_mb: float = 0.0
    crashes: list[str] = field(default_factory=list)
    adopted: int = 0  # orphaned job processes reaped by the harness (runner killed)
    reaped_at: dict[int, float] = field(default_factory=dict)  # their pids: when (time.time())


class Cluster:
    """A scenario's Redis (AOF on) and its runner processes, watched by a monitor task."""

    def __init__(
        self, run: Run, server: RedisServer, n_runners: int, *, flags: Sequence[str] = (),
        nofile: int | None = None, slot_env: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:  # fmt: skip
        self.run = run
        self.server = server
        self.flags = (*RUNNER_FLAGS, *flags)  # the runners' options
        self.nofile = nofile  # the runners' open-file limit (ulimit -n), if lowered
        self.slot_env = dict(slot_env or {})  # slot index -> added to its runner's environment
        self.slots = [
            Slot(i, free_port(), run.workdir / f"r{i}.pid", run.workdir / f"r{i}.log")
            for i in range(n_runners)
        ]
        self.client = aioredis.Redis.from_url(
            server.url,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=40),
            retry_on_error=[RedisConnectionError],
        )
        self.gate = asyncio.Lock()  # held while Redis is away: the producer waits
        self.health = Health()
        self.kills: list[Kill] = []
        self.outages: list[tuple[float, float]] = []
        self.drains: list[int] = []  # exit codes of drained runners
        self._monitor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.hset(
            KEYS.channels,
            mapping={
                name: ChannelConfig(name=name, distinct=d, worker_count=w).to_json()
                for name, (d, w) in CHANNELS.items()
            },
        )
        for slot in self.slots:
            self._spawn(slot)
        for slot in self.slots:
            await wait_http(slot.port)
        self._monitor = asyncio.create_task(self._watch())

    def _spawn(self, slot: Slot) -> None:
        slot.stopping = False
        slot.proc = spawn_runner(
            self.server.url, slot.port, slot.pidfile, slot.log, *self.flags,
            cwd=self.run.workdir, nofile=self.nofile, env=self.slot_env.get(slot.index),
        )  # fmt: skip

    def runner_pids(self) -> list[int]:
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]

    async def runner_id(self, pid: int) -> str:
        members = cast(list[bytes], await self.client.zrange(KEYS.runners, 0, -1))
        found = [m.decode() for m in members if f":{pid}:" in m.decode()]
        return found[0] if found else ""

    async def jobs_of(self, runner_id: str) -> set[str]:
        """The ids of the jobs the runner holds right now (its set in Redis)."""
        members = cast(set[bytes], await self.client.smembers(KEYS.runner_jobs(runner_id)))
        return {m.decode() for m in members}

    async def kill(self, slot: Slot) -> None:
        """SIGKILL the slot's runner, note what it held, start a new one in its place."""
        assert slot.proc is not None
        runner_id = await self.runner_id(slot.proc.pid)
        slot.stopping = True
        at = time.time()
        slot.proc.kill()
        slot.proc.wait()
        owned = await self.jobs_of(runner_id)
        self.kills.append(Kill(at, runner_id, owned))
        with (self.run.workdir / "faults.log").open("a") as faults:
            faults.write(f"{at:.6f} SIGKILL {runner_id} holding {' '.join(sorted(owned))}\n")
        self._spawn(slot)

    async def drain(self, slot: Slot) -> None:
        """SIGUSR2: the runner drains and exits (0 expected); start a new one, wait for it."""
        assert slot.proc is not None
        slot.stopping = True
        slot.proc.send_signal(signal.SIGUSR2)
        code = await asyncio.to_thread(slot.proc.wait, 60)
        self.drains.append(code)
        self._spawn(slot)
        await wait_http(slot.port)

    async def restart_redis(self) -> None:
        async with self.gate:
            down = time.time()
            await asyncio.to_thread(self.server.restart)
            self.outages.append((down, time.time()))
        await self.client.ping()

    async def hang_redis(self, seconds: float) -> None:
        async with self.gate:
            down = time.time()
            os.kill(self.server.pid, signal.SIGSTOP)
            await asyncio.sleep(seconds)
            os.kill(self.server.pid, signal.SIGCONT)
            self.outages.append((down, time.time()))

    async def stop(self) -> list[int]:
        """Stop the monitor and every runner (SIGTERM: drain); their exit codes. Idempotent."""
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return []
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        codes = []
        for slot in self.slots:
            if slot.proc is not None:
                slot.stopping = True
                codes.append(await asyncio.to_thread(stop_process, slot.proc))
        self._reap_adopted(())
        await self.client.aclose()
        return codes

    async def _watch(self) -> None:
        """Sample RSS, restart (and count) runners that exit on their own, reap orphans."""
        while True:
            for slot in self.slots:
                proc = slot.proc
                if proc is None or slot.stopping:
                    continue
                if proc.poll() is not None:
                    self.health.crashes.append(f"runner {slot.index} exited with {proc.returncode}")
                    self._spawn(slot)
                    continue
                with contextlib.suppress(OSError, RuntimeError):
                    self.health.rss_max_mb = max(self.health.rss_max_mb, rss_mb(proc.pid))
            self._reap_adopted(s.proc.pid for s in self.slots if s.proc)
            await asyncio.sleep(REAP_EVERY_S)

    def _reap_adopted(self, keep: Iterable[int]) -> None:
        """Reap zombie children that are not our runners: processes of a killed runner (its
        jobs, its watchdog), which this harness (a child subreaper) adopted. Each one's reap
        time bounds when it died, for the overlap check."""
        for pid in zombie_children() - set(keep):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    self.health.adopted += 1
                    self.health.reaped_at[pid] = time.time()


# -- load and faults -----------------------------------------------------------------------------


async def push_paced(cluster: Cluster, items: Sequence[Planned | bytes], duration_s: float) -> None:
    """LPUSH the items in order, spread evenly over `duration_s` (20 batches a second)."""
    loop = asyncio.get_running_loop()
    started, sent = loop.time(), 0
    while sent < len(items):
        due = min(len(items), int((loop.time() - started) / duration_s * len(items)) + 1)
        batch = items[sent:due]
        if batch:
            async with cluster.gate:
                now = time.time()
                for item in batch:
                    if isinstance(item, Planned):
                        item.pushed_at = now
                await cluster.client.lpush(
                    KEYS.prepare_queue, *(i.message if isinstance(i, Planned) else i for i in batch)
                )
            sent = due
        await asyncio.sleep(0.05)


async def kill_every(cluster: Cluster, every_s: float, done: asyncio.Event) -> None:
    """Scenario 1's fault: SIGKILL one runner every `every_s`, in turn, until `done`."""
    turn = 0
    while not done.is_set():
        await asyncio.sleep(every_s)
        await cluster.kill(cluster.slots[turn % len(cluster.slots)])
        turn += 1


async def redis_outages(cluster: Cluster, load_s: float, stop_s: float) -> None:
    """Scenario 2's faults: restart, hang for `stop_s`, restart again."""
    await asyncio.sleep(load_s * 0.15)
    log("Redis: SIGTERM and start again on the same AOF")
    await cluster.restart_redis()
    await asyncio.sleep(load_s * 0.2)
    log(f"Redis: SIGSTOP for {stop_s:g} s")
    await cluster.hang_redis(stop_s)
    await asyncio.sleep(load_s * 0.2)
    log("Redis: SIGTERM and start again on the same AOF")
    await cluster.restart_redis()


async def drain_in_turn(cluster: Cluster, done: asyncio.Event) -> None:
    """Scenario 3's fault: SIGUSR2 drain and restart every runner in turn until `done`."""
    turn = 0
    while not done.is_set():
        await cluster.drain(cluster.slots[turn % len(cluster.slots)])
        turn += 1
        await asyncio.sleep(0.5)


async def load_with(
    cluster: Cluster, items: Sequence[Planned | bytes], load_s: float,
    fault: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None = None,
) -> None:  # fmt: skip
    """Push the load while `fault` runs; the fault stops once everything is pushed."""
    done = asyncio.Event()
    faults = asyncio.create_task(fault(done)) if fault is not None else None
    await push_paced(cluster, items, load_s)
    done.set()
    if faults is not None:
        await faults


def job_processes(marker: str) -> list[int]:
    """Live processes carrying the run's marker in their argv or environment (zombies excluded:
    they are counted separately)."""
    found = []
    needle, env_needle = marker.encode(), f"CHAOS_RUN={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if needle in cmdline or env_needle in Path(f"/proc/{entry}/environ").read_bytes():
                found.append(int(entry))
    return found


def zombies_under(pids: Iterable[int]) -> int:
    """Zombie children of the given processes."""
    count = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                count += sum(_is_zombie(int(c)) for c in children)
    return count


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


async def settle(predicate: Callable[[], int], timeout_s: float) -> int:
    """Poll a count until it is 0 or `timeout_s` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if not value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(0.2)
