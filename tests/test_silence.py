"""A runner that is alive but silent never runs a job at the same time as its re-run elsewhere.

Three ways a live runner stopped heartbeating (issue 12): it was paused (SIGSTOP) longer than its
lease; long polls took every connection of its pool, the heartbeat's too; its event loop stalled
splitting big command lines. Its watchdog now stops its jobs when the heartbeat loop falls silent
(before the lease ends), the heartbeat has a connection of its own, request paths a bounded pool,
and splitting a command line costs milliseconds."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import select
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from taskrunner import watchdog
from taskrunner.shellwords import shell_words
from taskrunner.store import REQUEST_CONNECTIONS
from tests.support.http import base_url
from tests.support.net import free_port
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until, wait_until_sync

pytestmark = pytest.mark.slow  # runners paused and starved for whole leases

BIN_DIR = Path(sys.executable).parent
LEASE_S = 4.0  # the watchdog's silence fence: 3.2 s, SIGKILL 0.4 s later (runner.silence_fence)

# -- splitting a command line costs milliseconds (the event-loop stall) ------------------------

SHELL_TEXT = st.text(alphabet=" \t\r\n'\"\\ab$`#;&|xé\0\x0b", max_size=24)


@settings(max_examples=3000, deadline=None)
@given(SHELL_TEXT)
def test_shell_words_are_shlex_words(task: str) -> None:
    try:
        expected: list[str] | str = shlex.split(task)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: list[str] | str = shell_words(task)
    except ValueError as exc:
        got = str(exc)
    assert got == expected


def big_task(n: int) -> str:
    """A distinct 60 KB command line, quoting and escapes included."""
    words = " ".join(f'w{n}x{i} \'a b\' "c\\"d" e\\ f' for i in range(2600))
    return f"true {words}"[:60_000].rsplit(" ", 1)[0]


async def test_a_hundred_60_kb_tasks_do_not_stall_the_event_loop(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    # Before: shlex split each on the event loop, 30-60 ms apiece; /healthz waited 3-6 s.
    runner = await runners.start(task_mode=False)
    messages = [json.dumps({"task": big_task(n), "id": f"big-{n}"}) for n in range(100)]
    await redis.lpush("task:prepare:queue", *messages)
    worst_s = 0.0
    async with aiohttp.ClientSession() as session:
        while await redis.llen("task:queue:default") < 100:
            started = time.monotonic()
            async with session.get(base_url(runner) + "/healthz") as resp:
                assert resp.status == 200
            worst_s = max(worst_s, time.monotonic() - started)
    print(f"worst /healthz latency: {worst_s:.3f} s")
    assert worst_s < 1.0, f"/healthz took {worst_s:.2f} s while 100 big tasks were routed"


# -- long polls that took every connection ---------------------------------------------------


async def test_long_polls_cannot_starve_the_heartbeat_or_the_runner_s_loops(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    # Before: 150 waits held 100 pub/sub connections, redis-py's whole pool; the heartbeat
    # failed with "Too many connections" and the runner was declared lost under its jobs.
    runner = await runners.start(lease_s=1.0)
    slow = await runner.service.submit({"task": "sleep", "args": ["30"]}, source="t")
    await wait_state(runner.store, slow.job_id, "running")
    url = f"{base_url(runner)}/api/jobs/{slow.job_id}/wait?timeout=20"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def wait() -> tuple[int, str]:
            async with session.get(url) as resp:
                return resp.status, await resp.text()

        waits = [asyncio.ensure_future(wait()) for _ in range(150)]
        refused = [w for w in await _first_done(waits, count=150 - REQUEST_CONNECTIONS)]
        assert {status for status, _ in refused} == {503}
        assert all("too many requests are using Redis at once" in text for _, text in refused)

        quick = await runner.service.submit({"task": "true"}, source="t")  # claims still run
        await wait_state(runner.store, quick.job_id, "succeeded")
        deadline = time.monotonic() + 3 * runner.settings.lease_s
        while time.monotonic() < deadline:  # the heartbeat lands all along
            beats = dict(await runner.store.runners())
            silent_s = (await redis_ms(redis)) / 1000 - beats[runner.runner_id]
            assert silent_s < runner.settings.lease_s, f"no heartbeat for {silent_s:.2f} s"
            await asyncio.sleep(0.05)
        answered = [w.result() for w in waits if w.done()]
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    assert {status for status, _ in answered} == {503}  # the others wait on: the job runs
    assert len(answered) < 150 - REQUEST_CONNECTIONS / 2


async def _first_done(
    futures: list[asyncio.Future[tuple[int, str]]], *, count: int
) -> list[tuple[int, str]]:
    """The results of the first `count` futures to finish."""
    done: list[tuple[int, str]] = []
    for next_done in asyncio.as_completed(futures, timeout=15):
        done.append(await next_done)
        if len(done) == count:
            return done
    return done


# -- the watchdog's silence fence -----------------------------------------------------------------

WATCHDOG_FILE = str(Path(watchdog.__file__))


def zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rpartition(")")[2].split()[0] == "Z"


def test_the_silence_fence_stops_running_groups_names_them_and_skips_ended_ones() -> None:
    running = subprocess.Popen(["sleep", "60"], process_group=0)
    ended = subprocess.Popen(["true"], process_group=0)  # not reaped: its runner is "stalled"
    wait_until_sync(lambda: zombie(ended.pid), message="the ended job's zombie")
    fence = subprocess.Popen(
        [sys.executable, "-I", "-S", WATCHDOG_FILE, "5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert fence.stdin is not None and fence.stdout is not None
    told_at = time.monotonic()
    fence.stdin.write(b"+%d\n+%d\ns0.5:0.2\nh%.6f\n" % (running.pid, ended.pid, told_at))
    fence.stdin.flush()
    try:
        assert fence.stdout.readline() == b"f%d\n" % running.pid  # named before it is signalled
        assert time.monotonic() - told_at >= 0.5
        assert running.wait(timeout=5) == -signal.SIGTERM
    finally:
        running.kill()
        rest, errors = fence.communicate(timeout=10)  # closes its stdin: the "runner" exits
        ended.wait()
    assert rest == b""  # the job that had ended by itself is not named: it was no fence's doing
    assert b"no heartbeat for 0.5 s; stopping 1 job process group(s)" in errors


def test_the_silence_fence_stops_a_job_group_it_was_not_told_of_yet() -> None:
    # The runner tells the watchdog of a job's group at the end of a loop iteration: paused
    # between the spawn and that, its job was not fenced, and ran on past the lease (a re-run
    # elsewhere beside it). Its environment marks it as this runner's job, as on a death.
    marker = secrets.token_hex(6)
    env = {**os.environ, "TASKRUNNER_JOB_TOKEN": f"{marker}-1"}
    unlisted = subprocess.Popen(["sleep", "60"], process_group=0, env=env)
    fence = subprocess.Popen(
        [sys.executable, "-I", "-S", WATCHDOG_FILE, "5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert fence.stdin is not None and fence.stdout is not None
    fence.stdin.write(b"+m%s\ns0.5:0.2\nh%.6f\n" % (marker.encode(), time.monotonic()))
    fence.stdin.flush()
    try:
        assert select.select([fence.stdout], [], [], 5)[0], "the fence never came"
        assert fence.stdout.readline() == b"f%d\n" % unlisted.pid
        assert unlisted.wait(timeout=5) == -signal.SIGTERM
    finally:
        unlisted.kill()
        rest, errors = fence.communicate(timeout=10)
    assert rest == b""  # fenced once for this silence
    assert b"stopping 1 job process group(s)" in errors


def test_heartbeats_keep_the_silence_fence_away() -> None:
    running = subprocess.Popen(["sleep", "60"], process_group=0)
    fence = subprocess.Popen(
        [sys.executable, "-I", "-S", WATCHDOG_FILE, "5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert fence.stdin is not None
    try:
        fence.stdin.write(b"+%d\ns0.3:0.1\n" % running.pid)
        for _ in range(10):  # a beat every 0.1 s for 1 s: more than three silences
            fence.stdin.write(b"h%.6f\n" % time.monotonic())
            fence.stdin.flush()
            time.sleep(0.1)  # the pace of the beats under test, not a synchronisation
        assert running.poll() is None
        fence.stdin.write(b"-%d\n" % running.pid)
    finally:
        rest, _ = fence.communicate(timeout=10)
        running.kill()
        running.wait()
    assert rest == b""


# -- a paused runner (SIGSTOP) ------------------------------------------------------------------


class Runner:
    """A `taskrunner run` child with a short lease, its output in a log file."""

    def __init__(self, tmp_path: Path, redis_url: str, name: str) -> None:
        self.port = free_port()
        self.log_path = tmp_path / f"{name}.log"
        argv = [
            str(BIN_DIR / "taskrunner"), "run", "--redis-url", redis_url, "--lease", f"{LEASE_S:g}",
            "--http-addr", f"127.0.0.1:{self.port}", "--pidfile", str(tmp_path / f"{name}.pid"),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKRUNNER_")}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        self.runner_id = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def ready(self) -> None:
        def health() -> bool:
            try:
                url = f"http://127.0.0.1:{self.port}/healthz"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    self.runner_id = json.loads(resp.read())["runner"]
                    return True
            except OSError:
                return False

        await wait_until(health, timeout_s=15, message="the runner's /healthz")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()  # its watchdog stops any job group left
        self.proc.wait(timeout=10)
        print(f"----- {self.log_path.name}\n{self.log()}")


StartRunner = Callable[[str], Runner]


@pytest.fixture
def start_runner(tmp_path: Path, redis_url: str) -> Iterator[StartRunner]:
    started: list[Runner] = []

    def start(name: str) -> Runner:
        runner = Runner(tmp_path, redis_url, name)
        started.append(runner)
        return runner

    yield start
    for runner in reversed(started):
        runner.stop()


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (a zombie its stopped parent cannot reap yet
    does not count)."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def record(redis: aioredis.Redis, job_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (await redis.hgetall(f"task:job:{job_id}")).items()}


async def redis_ms(redis: aioredis.Redis) -> float:
    seconds, micros = await redis.time()
    return seconds * 1000 + micros / 1000


async def push_pid_job(redis: aioredis.Redis, pid_file: Path, job_id: str) -> None:
    task = f"sh -c 'echo $$ >> {pid_file}; exec sleep 60'"
    await redis.lpush("task:prepare:queue", json.dumps({"task": task, "id": job_id}))
    await wait_until(lambda: len(pids(pid_file)) == 1, timeout_s=10, message="the job's pid")


async def test_a_paused_runner_s_jobs_stop_before_its_lease_ends_and_it_rejoins(
    start_runner: StartRunner, redis: aioredis.Redis, tmp_path: Path
) -> None:
    # Before: the job ran on in the paused runner; the other runner started it again after the
    # lease, and on SIGCONT the two copies overlapped until the paused one noticed.
    a = start_runner("a")
    await a.ready()
    pid_file = tmp_path / "pids"
    await push_pid_job(redis, pid_file, "paused-1")
    b = start_runner("b")  # started after: the job is a's
    await b.ready()
    (first,) = pids(pid_file)

    a.proc.send_signal(signal.SIGSTOP)
    await wait_until(lambda: not group_alive(first), timeout_s=2 * LEASE_S, interval_s=0.01)
    silent_ms = await redis_ms(redis) - float(await redis.zscore("task:runners", a.runner_id))
    assert silent_ms < LEASE_S * 1000, f"the job outlived its runner's lease: {silent_ms:.0f} ms"

    await wait_until(lambda: len(pids(pid_file)) == 2, timeout_s=4 * LEASE_S, message="re-run")
    a.proc.send_signal(signal.SIGCONT)
    await wait_until(lambda: "this runner was declared dead" in a.log(), timeout_s=2 * LEASE_S)
    ended = ("job paused-1 not handed back", "job paused-1 stopped")
    await wait_until(lambda: any(line in a.log() for line in ended), timeout_s=LEASE_S)

    job = await record(redis, "paused-1")  # a recorded nothing: b's run goes on
    assert (job["state"], job["attempt"], job.get("runner")) == ("running", "2", b.runner_id)
    assert group_alive(pids(pid_file)[1])

    async def rejoined() -> bool:
        score = await redis.zscore("task:runners", a.runner_id)
        return score is not None and score > 0 and await redis_ms(redis) - score < LEASE_S * 1000

    await wait_until(rejoined, timeout_s=2 * LEASE_S, message="a registered again and beats")
    assert a.proc.poll() is None


async def test_a_runner_paused_less_than_its_lease_hands_its_fenced_job_back(
    start_runner: StartRunner, redis: aioredis.Redis, tmp_path: Path
) -> None:
    # Paused past the silence fence but not the lease: nobody declared it lost, and its job,
    # stopped by the watchdog, must not be recorded as failed (SIGTERM is the fence's doing).
    a = start_runner("a")
    await a.ready()
    pid_file = tmp_path / "pids"
    await push_pid_job(redis, pid_file, "paused-2")
    (first,) = pids(pid_file)

    a.proc.send_signal(signal.SIGSTOP)
    await wait_until(lambda: not group_alive(first), timeout_s=2 * LEASE_S, interval_s=0.01)
    a.proc.send_signal(signal.SIGCONT)

    await wait_until(lambda: len(pids(pid_file)) == 2, timeout_s=3 * LEASE_S, message="re-run")
    job = await record(redis, "paused-2")
    assert (job["state"], job["attempt"], job.get("handed_back")) == ("running", "2", "silenced")
    assert "exit_code" not in job and "signal" not in job, job
    assert "handed back to channel default (silenced)" in a.log()
