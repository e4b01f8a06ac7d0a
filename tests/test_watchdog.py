"""A process that runs jobs and dies, even by SIGKILL, leaves no job running: its watchdog
(taskrunner/watchdog.py) stops their process groups, so a job cannot overlap with its re-run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from taskrunner import watchdog
from taskrunner.guard import Watchdog
from taskrunner.watchdog import start_time
from tests.support.net import free_port
from tests.support.waiting import wait_until, wait_until_sync

pytestmark = pytest.mark.slow  # the watchdog process and killed runners

BIN_DIR = Path(sys.executable).parent
WATCHDOG_FILE = str(Path(watchdog.__file__))


def live_members(pgid: int) -> list[int]:
    """Processes of the group that are not zombies."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Groups a test started; any still alive at teardown are killed (and fail nothing)."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def test_a_killed_process_s_jobs_are_stopped_even_when_they_ignore_sigterm(
    tmp_path: Path, leftovers: list[int]
) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from taskrunner.executor import Execution
        from taskrunner.spawn import ExecSpec
        from taskrunner.guard import WATCHDOG

        async def main():
            WATCHDOG.configure(grace_s=0.3)
            spec = ExecSpec(argv=("sh", "-c", "trap '' TERM; sleep 60 & sleep 60 & wait"))
            execution = await Execution.start(spec)
            await asyncio.sleep(0)  # the watchdog is told at the end of the loop iteration
            print(execution.pid, flush=True)
            await execution.wait()

        asyncio.run(main())
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert owner.stdout is not None
    pgid = int(owner.stdout.readline())
    leftovers.append(pgid)
    wait_until_sync(lambda: len(live_members(pgid)) == 3, message="the job and its 2 sleeps")

    owner.kill()  # SIGKILL: no handler, no cleanup of its own
    owner.wait()
    owner.stdout.close()
    started = time.monotonic()
    wait_until_sync(lambda: not live_members(pgid), timeout_s=5.0, message="the group stopped")
    assert time.monotonic() - started >= 0.2  # SIGTERM was ignored: SIGKILL after the grace


def test_a_watchdog_that_died_is_replaced_and_told_every_running_group(
    leftovers: list[int],
) -> None:
    script = textwrap.dedent(
        """
        import asyncio, signal
        from taskrunner.executor import Execution
        from taskrunner.spawn import ExecSpec
        from taskrunner.guard import WATCHDOG

        async def main():
            WATCHDOG.configure(grace_s=0.3)
            first = await Execution.start(ExecSpec(argv=("sleep", "60")))
            WATCHDOG._proc.kill()  # the watchdog dies while the first job runs
            WATCHDOG._proc.wait()
            second = await Execution.start(ExecSpec(argv=("sleep", "60")))
            await asyncio.sleep(0)  # told now: the dead one is noticed and replaced
            print(first.pid, second.pid, flush=True)
            await asyncio.gather(first.wait(), second.wait())

        asyncio.run(main())
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert owner.stdout is not None
    groups = [int(pid) for pid in owner.stdout.readline().split()]
    leftovers.extend(groups)
    assert all(live_members(pgid) for pgid in groups)
    owner.kill()
    owner.wait()
    owner.stdout.close()
    wait_until_sync(
        lambda: not any(live_members(pgid) for pgid in groups), timeout_s=5.0, message="stopped"
    )


@pytest.fixture
def runner_process(tmp_path: Path, redis_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `taskrunner run` child with a 10 s lease; its stderr is a pipe."""
    argv = [
        str(BIN_DIR / "taskrunner"), "run", "--redis-url", redis_url, "--lease", "10",
        "--http-addr", f"127.0.0.1:{free_port()}", "--pidfile", str(tmp_path / "runner.pid"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKRUNNER_")}
    runner = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    yield runner
    if runner.poll() is None:
        runner.kill()
    runner.communicate(timeout=10)


async def test_a_sigkilled_runner_s_running_job_is_stopped_before_its_lease_runs_out(
    runner_process: subprocess.Popen[bytes],
    tmp_path: Path,
    redis: aioredis.Redis,
    leftovers: list[int],
) -> None:
    pid_file = tmp_path / "job.pid"
    task = f"sh -c 'echo $$ > {pid_file}; exec sleep 60'"
    await redis.lpush("task:prepare:queue", json.dumps({"task": task, "id": "long-1"}))
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    pgid = int(pid_file.read_text())
    leftovers.append(pgid)
    assert live_members(pgid)

    runner_process.kill()
    _, stderr = runner_process.communicate(timeout=10)  # EOF once the watchdog is done too
    assert not live_members(pgid)
    record = {k.decode(): v.decode() for k, v in (await redis.hgetall("task:job:long-1")).items()}
    assert record["state"] == "running"  # nobody recorded it: a lease later it runs again
    assert b"taskrunner watchdog: the runner exited with 1 job process group(s) running" in stderr


def test_a_single_process_is_stopped_only_if_its_pid_still_names_it() -> None:
    """`+pPID:START`: a pid whose start time no longer matches was reused: left alone."""
    named, reused = (subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL) for _ in range(2))
    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", WATCHDOG_FILE, "0.5"], stdin=subprocess.PIPE
        )
        assert watchdog.stdin is not None
        watchdog.stdin.write(b"+p%d:%s\n+p%d:1\n" % (named.pid, start_time(named.pid), reused.pid))
        watchdog.stdin.close()  # as if the runner died
        assert watchdog.wait(timeout=10) == 0
        assert named.wait(timeout=5) == -signal.SIGTERM
        assert reused.poll() is None
    finally:
        for proc in (named, reused):
            proc.kill()
            proc.wait()


def live_members_of(pid: int) -> bool:
    """The process is alive (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def sleeping_groups(n: int) -> list[subprocess.Popen[bytes]]:
    """n `sleep 60` processes, each leading a process group of its own."""
    return [
        subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL, process_group=0)
        for _ in range(n)
    ]


async def test_changes_are_told_once_per_loop_iteration_and_end_in_what_is_listed(
    capfd: pytest.CaptureFixture[str], leftovers: list[int]
) -> None:
    """One write per loop iteration: a group listed and unlisted within it is never told, and
    whatever the order of changes, the watchdog stops exactly the groups listed at the end."""
    sleepers = sleeping_groups(4)
    leftovers.extend(p.pid for p in sleepers)
    a, b, c, d = (p.pid for p in sleepers)
    dog = Watchdog()
    dog.configure(grace_s=0.3)
    dog.track(a)
    dog.track(b)
    dog.untrack(a)  # within the same iteration as its track: never told
    dog.track(c)
    dog.track(d)
    await asyncio.sleep(0.01)
    dog.untrack(c)  # told, then unlisted
    dog.untrack(d)  # unlisted and listed again within one iteration: still listed
    dog.track(d)
    await asyncio.sleep(0.01)
    dog.close()  # as at exit: it stops what is listed, b and d
    assert "the runner exited with 2 job process group(s) running" in capfd.readouterr().err
    assert sleepers[1].wait(timeout=5) == -signal.SIGTERM
    assert sleepers[3].wait(timeout=5) == -signal.SIGTERM
    assert sleepers[0].poll() is None and sleepers[2].poll() is None
    for proc in sleepers:
        proc.kill()
        proc.wait()
