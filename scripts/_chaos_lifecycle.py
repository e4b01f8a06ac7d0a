"""Scenario "lifecycle" of scripts/chaos.py: the stops and restarts every user does (issue 11).

Three ways to stop, each repeated with a backlog in a 1-worker and a 5-worker channel:

  usr2        `kill -USR2` of the runner (a Redis server of the scenario's own), then a restart
  ctrl-c      SIGINT to the whole process group of a `./scripts/run`-style start (embedded
              Valkey), as a terminal's Ctrl-C sends it, then a restart
  supervisor  `supervisorctl stop` / `start` of a program that runs it (embedded Valkey), with the
              repository's supervisor.conf settings (stopsignal=USR2)

and a frozen-Redis push: PUSHES pushes over HTTP while Redis is SIGSTOPped for a few seconds;
each client retries a 503 with the id the answer gave it.

Every job appends `start ID` and `end ID` to the scenario's job log. Checked: every job ran
exactly once and none was lost; attempt 1 for every job (none was stopped by a drain deadline:
the jobs are short); FIFO order in the 1-worker channel; no hand-back and no "claim reply lost";
exit code 0 at every stop; the embedded Valkey never restarted between runner restarts; each
frozen-Redis push ran once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import redis.asyncio as aioredis

from scripts._chaos_checks import Report
from scripts._chaos_scenario import Sizes, scenario_report
from scripts._harness import KEYS, redis_server, wait_http
from taskrunner.embedded import EmbeddedRedis
from tests.support.net import free_port

BIN = Path(sys.executable).parent
CHANNELS = {"one": 1, "five": 5}  # channel -> worker count
BACKLOG = {"one": 4, "five": 8}  # jobs pushed per cycle
JOB_S = 0.3
PUSHES = 50
FREEZE_S = 3.0
SETTLE_TIMEOUT_S = 60.0
RUNNER_FLAGS = ("--pidfile", "", "--drain-timeout", "20", "--kill-grace", "2", "--lease", "5")


def cycles_for(sizes: Sizes) -> int:
    """Stops per way of stopping: 20 in a full run, 7 in --quick (21 in all), 1 in --smoke."""
    return 20 if sizes.jobs >= 10000 else 7 if sizes.jobs >= 3000 else 1


@dataclass
class Tally:
    """What one way of stopping did, over all its cycles."""

    mode: str
    runs: int = 0
    exit_codes: Counter[int] = field(default_factory=Counter)
    pushed: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CHANNELS})
    valkey_pids: set[int] = field(default_factory=set)
    logs: list[Path] = field(default_factory=list)


class Site:
    """One way of running and stopping `taskrunner run`, in `tmp`."""

    def __init__(self, mode: str, tmp: Path, redis_url: str | None) -> None:
        self.mode, self.tmp, self.redis_url = mode, tmp, redis_url
        self.http_port = free_port()
        self.data_dir = tmp / "var"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.supervisor: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        where = ["--redis-url", self.redis_url] if self.redis_url else [
            "--embedded-redis", str(self.data_dir), "--embedded-redis-port", "0"]  # fmt: skip
        return [str(BIN / "taskrunner"), "run", *where, "--http-addr",
                f"127.0.0.1:{self.http_port}", *RUNNER_FLAGS]  # fmt: skip

    def log_path(self) -> Path:
        return self.tmp / f"runner-{self.starts}.log"

    async def start(self) -> None:
        self.starts += 1
        if self.mode == "supervisor":
            await self._supervisorctl("start", "taskrunner")
        else:
            self.process = self._spawn()
        await wait_http(self.http_port, timeout_s=30)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path().open("wb") as log:
            return subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                process_group=0,  # as a terminal's foreground job
            )  # fmt: skip

    async def stop(self) -> int:
        if self.mode == "supervisor":
            await self._supervisorctl("stop", "taskrunner")
            return _supervisor_exit_code(self.tmp / "supervisord.log", self.starts)
        assert self.process is not None
        if self.mode == "ctrl-c":
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            self.process.send_signal(signal.SIGUSR2)
        return await asyncio.to_thread(self.process.wait, 60)

    def url(self) -> str:
        if self.redis_url:
            return self.redis_url
        server = EmbeddedRedis(self.data_dir)
        assert server.attach_running(), f"no embedded Valkey runs on {self.data_dir}"
        return server.url

    def valkey_pid(self) -> int | None:
        server = EmbeddedRedis(self.data_dir)
        return server.pid if server.attach_running() else None

    def runner_logs(self) -> list[Path]:
        if self.mode == "supervisor":
            return [self.tmp / "runner.log"]
        return [self.tmp / f"runner-{n}.log" for n in range(1, self.starts + 1)]

    # -- supervisor -----------------------------------------------------------------------

    def start_supervisor(self) -> None:
        conf = self.tmp / "supervisord.conf"
        conf.write_text(_SUPERVISOR_CONF.format(
            tmp=self.tmp, command=shlex.join(self.argv()), sock=self.tmp / "supervisor.sock"))  # fmt: skip
        self.supervisor = subprocess.Popen(
            [str(BIN / "supervisord"), "-n", "-c", str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def _supervisorctl(self, *args: str) -> None:
        conf = str(self.tmp / "supervisord.conf")
        for _ in range(100):  # the socket comes up with supervisord
            done = await asyncio.to_thread(
                subprocess.run, [str(BIN / "supervisorctl"), "-c", conf, *args],
                capture_output=True, text=True, timeout=90,
            )  # fmt: skip
            if "refused connection" not in done.stdout + done.stderr and "no such file" not in (
                done.stdout + done.stderr
            ):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"supervisorctl {' '.join(args)}: supervisord does not answer")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.supervisor is not None:
            self.supervisor.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.supervisor.wait(timeout=70)
        server = EmbeddedRedis(self.data_dir)
        if server.attach_running():
            server.stop()


_SUPERVISOR_CONF = """\
[unix_http_server]
file={sock}

[supervisord]
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{sock}

[program:taskrunner]
command={command}
autostart=false
autorestart=false
startsecs=1
stopsignal=USR2
stopwaitsecs=60
stopasgroup=false
killasgroup=false
redirect_stderr=true
stdout_logfile={tmp}/runner.log
"""


def _supervisor_exit_code(log: Path, stops: int) -> int:
    """The exit status supervisord logged for the runner's `stops`-th stop (-1: not found)."""
    lines = [line for line in log.read_text().splitlines() if "stopped: taskrunner" in line]
    if len(lines) < stops:
        return -1
    status = lines[stops - 1].rpartition("(")[2].rstrip(")")
    return int(status.split()[-1]) if status.startswith("exit status") else -1


# -- the scenario ---------------------------------------------------------------------------------


async def scenario_lifecycle(sizes: Sizes, rng: Any) -> Report:
    cycles = cycles_for(sizes)
    report = scenario_report("lifecycle", f"stops and restarts with a backlog: usr2, ctrl-c, supervisor, "
                            f"{cycles} each; {PUSHES} pushes while Redis is frozen")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="taskrunner-chaos-lifecycle-") as tmp:
        job_log = Path(tmp) / "jobs.log"
        tallies = []
        for mode in ("usr2", "ctrl-c", "supervisor"):
            async with _site(mode, Path(tmp) / mode) as site:
                tallies.append(await _cycles(site, cycles, job_log))
        frozen = await _frozen_pushes(Path(tmp) / "frozen", job_log)
        _check(report, tallies, frozen, job_log)
        if report.violations or os.environ.get("TASKRUNNER_CHAOS_KEEP_LOGS"):
            kept = Path(tempfile.mkdtemp(prefix="taskrunner-chaos-lifecycle-kept-"))
            shutil.copytree(tmp, kept, dirs_exist_ok=True)
            report.row("logs kept in", str(kept))
    return report


@contextlib.asynccontextmanager
async def _site(mode: str, tmp: Path) -> AsyncIterator[Site]:
    os.makedirs(tmp)
    if mode == "usr2":
        with redis_server(tmp / "redis", appendonly=True) as server:
            site = Site(mode, tmp, server.url)
            try:
                yield site
            finally:
                site.close()
        return
    site = Site(mode, tmp, None)
    if mode == "supervisor":
        site.start_supervisor()
    try:
        yield site
    finally:
        site.close()


async def _cycles(site: Site, cycles: int, job_log: Path) -> Tally:
    tally = Tally(site.mode)
    await site.start()
    await _create_channels(site.url())
    for cycle in range(cycles):
        await _push_backlog(site, tally, cycle, job_log)
        await _wait_some_running(site.url(), tally)
        tally.exit_codes[await site.stop()] += 1
        tally.runs += 1
        if (pid := site.valkey_pid()) is not None:
            tally.valkey_pids.add(pid)
        await site.start()
    await _wait_all_final(site.url(), tally)
    tally.exit_codes[await site.stop()] += 1
    tally.runs += 1
    tally.logs = site.runner_logs()
    return tally


async def _create_channels(url: str) -> None:
    async with aioredis.Redis.from_url(url) as client:
        for name, workers in CHANNELS.items():
            config = {"name": name, "distinct": False, "worker_count": workers}
            await client.hset(KEYS.channels, name, json.dumps(config))


async def _push_backlog(site: Site, tally: Tally, cycle: int, job_log: Path) -> None:
    async with aioredis.Redis.from_url(site.url()) as client:
        for channel, count in BACKLOG.items():
            for n in range(count):
                job_id = f"{site.mode}-{cycle}-{channel}-{n}"
                task = shlex.join(["sh", "-c", f"echo start {job_id} >> {job_log}; sleep {JOB_S};"
                                   f" echo end {job_id} >> {job_log}"])  # fmt: skip
                message = {"task": task, "chan": channel, "id": job_id}
                await client.lpush(KEYS.prepare_queue, json.dumps(message))
                tally.pushed[channel].append(job_id)


async def _wait_some_running(url: str, tally: Tally) -> None:
    newest = tally.pushed["one"][-BACKLOG["one"]]
    await _until(url, lambda states: states.get(newest) in ("running", "succeeded"), 20)


async def _wait_all_final(url: str, tally: Tally) -> None:
    ids = [i for channel in tally.pushed.values() for i in channel]
    await _until(url, lambda states: all(states.get(i) == "succeeded" for i in ids),
                 SETTLE_TIMEOUT_S, ids)  # fmt: skip


async def _until(
    url: str, done: Callable[[dict[str, str]], bool], timeout_s: float, ids: list[str] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    async with aioredis.Redis.from_url(url, decode_responses=True) as client:
        while time.monotonic() < deadline:
            keys = (
                cast(list[str], await client.keys(KEYS.job("*")))
                if ids is None
                else [KEYS.job(i) for i in ids]
            )
            states: dict[str, str] = {}
            for key in keys:
                states[key.rpartition(":")[2]] = (
                    cast(str | None, await client.hget(key, "state")) or ""
                )
            if done(states):
                return
            await asyncio.sleep(0.1)


# -- frozen Redis ---------------------------------------------------------------------------------


@dataclass
class Frozen:
    ids: list[str] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)
    retries: int = 0


async def _frozen_pushes(tmp: Path, job_log: Path) -> Frozen:
    os.makedirs(tmp)
    frozen = Frozen()
    with redis_server(tmp / "redis", appendonly=True) as server:
        site = Site("frozen", tmp, server.url)
        try:
            await site.start()
            async with aiohttp.ClientSession() as http:
                pushes = [_push_until_known(http, site.http_port, n, job_log, frozen)
                          for n in range(PUSHES)]  # fmt: skip
                os.kill(server.pid, signal.SIGSTOP)
                freeze = asyncio.create_task(_thaw_after(server.pid, FREEZE_S))
                await asyncio.gather(*pushes)
                await freeze
            await _until(server.url, lambda s: all(s.get(i) == "succeeded" for i in frozen.ids),
                         SETTLE_TIMEOUT_S, frozen.ids)  # fmt: skip
            await site.stop()
        finally:
            os.kill(server.pid, signal.SIGCONT)
            site.close()
    return frozen


async def _thaw_after(pid: int, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    os.kill(pid, signal.SIGCONT)


async def _push_until_known(
    http: aiohttp.ClientSession, port: int, n: int, job_log: Path, frozen: Frozen
) -> None:
    """POST /push with no id; on a 503 push again with the id it answered, until it is known."""
    task = f"sh -c 'echo start frozen-{n}-$$ >> {job_log}; echo end frozen-{n}-$$ >> {job_log}'"
    form = {"task": task}
    for _ in range(100):
        try:
            async with http.post(f"http://127.0.0.1:{port}/push", data=form,
                                 timeout=aiohttp.ClientTimeout(total=10)) as resp:  # fmt: skip
                body = await resp.json(content_type=None)
                frozen.answers[resp.status] += 1
        except (TimeoutError, aiohttp.ClientError):
            frozen.answers[0] += 1
            await asyncio.sleep(0.2)
            continue
        if resp.status == 200 and body["data"]["result"]:
            frozen.ids.append(body["data"]["id"])
            return
        form = {"task": task, "id": body["data"]["id"]}
        frozen.retries += 1
        await asyncio.sleep(0.2)


# -- checks ---------------------------------------------------------------------------------------


def _check(report: Report, tallies: list[Tally], frozen: Frozen, job_log: Path) -> None:
    starts = Counter(
        line.split()[1] for line in job_log.read_text().splitlines() if line.startswith("start ")
    )
    order = [line.split()[1] for line in job_log.read_text().splitlines()
             if line.startswith("start ")]  # fmt: skip
    runs = sum(t.runs for t in tallies)
    pushed = [i for t in tallies for ids in t.pushed.values() for i in ids]
    lost = [i for i in pushed if starts[i] == 0]
    double = sum(max(0, starts[i] - 1) for i in pushed)
    out_of_order = sum(_inversions([i for i in order if i in set(t.pushed["one"])],
                                   t.pushed["one"]) for t in tallies)  # fmt: skip
    texts = "".join(p.read_text(errors="replace") for t in tallies for p in t.logs if p.exists())
    handed = texts.count("handed back to channel") + texts.count("claimed but never started")
    bad_exits = sum(n for t in tallies for code, n in t.exit_codes.items() if code != 0)
    restarts = sum(max(0, len(t.valkey_pids) - 1) for t in tallies)
    frozen_runs = Counter(
        line.split()[1].rsplit("-", 1)[0] for line in job_log.read_text().splitlines()
        if line.startswith("start frozen-")
    )  # fmt: skip
    frozen_twice = sum(max(0, n - 1) for n in frozen_runs.values())
    report.row("stops and restarts", runs)
    report.row("jobs pushed in backlogs", len(pushed))
    report.row("lost (never ran)", len(lost), 0, ok=not lost)
    report.row("ran more than once", double, 0, ok=double == 0)
    report.row("out of FIFO order (1-worker channel)", out_of_order, 0, ok=out_of_order == 0)
    report.row("hand-backs or lost-claim hand-backs", handed, 0, ok=handed == 0)
    report.row("stops with an exit code other than 0", bad_exits, 0, ok=bad_exits == 0)
    report.row("embedded Valkey restarts between runner restarts", restarts, 0, ok=restarts == 0)
    report.row("frozen-Redis pushes known / ran / ran twice",
               f"{len(frozen.ids)} / {len(frozen_runs)} / {frozen_twice}", f"{PUSHES} / {PUSHES} / 0",
               ok=len(frozen.ids) == len(frozen_runs) == PUSHES and frozen_twice == 0)  # fmt: skip
    report.row("frozen-Redis push answers by status", dict(sorted(frozen.answers.items())),
               note=f"{frozen.retries} retries with the answered id")  # fmt: skip
    report.figures.update(lost=len(lost), concurrent_duplicates=0, orphans=0,
                          lifecycle_runs=runs, out_of_order=out_of_order,
                          double_runs=double + frozen_twice)  # fmt: skip


def _inversions(started: list[str], pushed: list[str]) -> int:
    """How many jobs started before one pushed earlier (adjacent pairs out of push order)."""
    rank = {job_id: n for n, job_id in enumerate(pushed)}
    ranks = [rank[i] for i in started]
    return sum(1 for a, b in itertools.pairwise(ranks) if b < a)
