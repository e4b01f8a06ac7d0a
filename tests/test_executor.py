"""Tests for taskrunner.executor: real subprocesses, on the default asyncio loop and on uvloop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import uvloop

from taskrunner.errors import SpawnError
from taskrunner.exec_result import ExecResult, describe_signal
from taskrunner.executor import Execution, run
from taskrunner.guard import reap_strays
from taskrunner.spawn import ExecSpec
from tests.support.waiting import wait_until_sync

T = TypeVar("T")

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


class OnLoop(Protocol):
    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


@pytest.fixture(params=sorted(LOOP_FACTORIES))
def on_loop(request: pytest.FixtureRequest) -> OnLoop:
    """Run a coroutine to completion on a fresh loop of the parametrized kind."""
    factory = LOOP_FACTORIES[request.param]

    def run_on(coro: Coroutine[Any, Any, T], /) -> T:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    return run_on


async def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float = 5.0, interval_s: float = 0.01
) -> None:
    """Poll predicate until it holds; fail the test when timeout_s passes first."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_gone(pid: int, *, pgid: int) -> None:
    """pid is neither running nor a zombie (a recycled pid in another group is accepted)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return
    fields = stat.rsplit(")", 1)[1].split()
    state, process_group = fields[0], int(fields[2])
    assert state != "Z", f"pid {pid} is a zombie"
    assert process_group != pgid, f"pid {pid} is still running in group {pgid}"


def assert_all_gone(result: ExecResult, *grandchildren: int) -> None:
    assert result.pid is not None
    assert not group_exists(result.pid)
    for pid in (result.pid, *grandchildren):
        assert_gone(pid, pgid=result.pid)


def sh(script: str, **options: Any) -> ExecSpec:
    return ExecSpec(argv=("sh", "-c", script), **options)


# --- core behaviour, on both loops ---------------------------------------------------------


def test_true_succeeds(on_loop: OnLoop) -> None:
    result = on_loop(run(ExecSpec(argv=("/bin/true",))))
    assert result.succeeded
    assert (result.exit_code, result.signal, result.kill_reason, result.error) == (
        0,
        None,
        None,
        None,
    )
    assert result.pid is not None
    assert result.duration_s >= 0


def test_nonzero_exit_fails(on_loop: OnLoop) -> None:
    result = on_loop(run(sh("exit 3")))
    assert not result.succeeded
    assert result.exit_code == 3
    assert result.signal is None
    assert result.error == "exit code 3"


def test_captures_stdout_and_stderr_bytes(on_loop: OnLoop) -> None:
    result = on_loop(run(sh("printf 'h\\303\\251llo\\n'; echo oops >&2")))
    assert result.succeeded
    assert result.stdout == "héllo\n".encode()
    assert result.stderr == b"oops\n"
    assert not result.stdout_truncated
    assert not result.stderr_truncated


def test_every_job_reads_an_empty_stdin_and_no_descriptor_leaks(on_loop: OnLoop) -> None:
    job = sh("cat; ls /proc/self/fd | wc -l")  # cat ends at once: its stdin is empty
    assert on_loop(run(job)).stdout.strip() == b"4"  # 0-2 and ls's own: nothing inherited
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        assert on_loop(run(job)).stdout.strip() == b"4"
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_bare_name_keeps_its_argv0_and_follows_path_changes(
    on_loop: OnLoop, tmp_path: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
    (second / "prog").write_text("#!/bin/sh\necho b\n")
    (second / "prog").chmod(0o755)
    env = {"PATH": f"{first}:{second}:/usr/bin:/bin"}
    assert on_loop(run(ExecSpec(argv=("prog",), env=env))).stdout == b"b\n"
    (second / "prog").rename(first / "prog")  # moved within the second it is remembered
    assert on_loop(run(ExecSpec(argv=("prog",), env=env))).stdout == b"b\n"
    (first / "prog").unlink()
    result = on_loop(run(ExecSpec(argv=("prog",), env=env)))
    assert result.error == "command not found: prog"
    shown = on_loop(run(ExecSpec(argv=("sh", "-c", "tr '\\0' ' ' < /proc/$$/cmdline"))))
    assert shown.stdout.split()[0] == b"sh"  # the program sees the name it was given


def test_env_and_cwd(on_loop: OnLoop, tmp_path: Path) -> None:
    spec = sh('echo "$GREETING"; pwd', env={"GREETING": "hi there"}, cwd=str(tmp_path))
    result = on_loop(run(spec))
    assert result.stdout == f"hi there\n{tmp_path}\n".encode()


def test_missing_command_gives_error_text(on_loop: OnLoop) -> None:
    result = on_loop(run(ExecSpec(argv=("no-such-command-4711",))))
    assert not result.succeeded
    assert (result.pid, result.exit_code, result.signal) == (None, None, None)
    assert result.error == "command not found: no-such-command-4711"


def test_output_over_cap_keeps_head_and_tail(on_loop: OnLoop) -> None:
    code = (
        "import sys\n"
        "for i in range(50000):\n"
        "    print(f'line {i:06d}')\n"
        "    print(f'err {i:06d}', file=sys.stderr)\n"
    )
    result = on_loop(run(ExecSpec(argv=(sys.executable, "-c", code), capture_bytes=1000)))
    assert result.succeeded
    assert result.stdout_truncated
    assert result.stderr_truncated
    assert len(result.stdout) == len(result.stderr) == 1000
    assert result.stdout.startswith(b"line 000000\nline 000001\n")
    assert result.stdout.endswith(b"line 049998\nline 049999\n")
    assert result.stderr.startswith(b"err 000000\n")
    assert result.stderr.endswith(b"err 049999\n")


@pytest.mark.parametrize(("size", "truncated"), [(999, False), (1000, False), (1001, True)])
def test_cap_boundary(on_loop: OnLoop, size: int, truncated: bool) -> None:
    spec = sh(f"head -c {size} /dev/zero | tr '\\0' x", capture_bytes=1000)
    result = on_loop(run(spec))
    assert result.stdout_truncated is truncated
    assert result.stdout == b"x" * min(size, 1000)


def test_huge_output_is_drained_with_bounded_memory(on_loop: OnLoop) -> None:
    spec = ExecSpec(argv=("head", "-c", "100000000", "/dev/zero"), capture_bytes=65536)
    tracemalloc.start()
    try:
        result = on_loop(run(spec))
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.succeeded
    assert result.stdout_truncated
    assert len(result.stdout) == 65536
    assert peak_bytes < 8 * 1024 * 1024


def test_timeout_kills_whole_group(on_loop: OnLoop) -> None:
    spec = sh("sleep 30 & echo $!; sleep 30; wait", timeout_s=0.5, kill_grace_s=0.5)
    started = time.monotonic()
    result = on_loop(run(spec))
    assert time.monotonic() - started < 3.0
    assert result.kill_reason == "timeout"
    assert result.error == "timed out after 0.5 s"
    assert result.exit_code is None
    assert result.signal == signal.SIGTERM
    assert not result.succeeded
    assert_all_gone(result, int(result.stdout))


def test_sigterm_ignored_gets_sigkill_after_grace(on_loop: OnLoop) -> None:
    spec = sh('trap "" TERM; sleep 30 & echo $!; wait', timeout_s=0.2, kill_grace_s=0.3)
    result = on_loop(run(spec))
    assert result.kill_reason == "timeout"
    assert result.signal == signal.SIGKILL
    assert result.duration_s >= 0.5
    assert_all_gone(result, int(result.stdout))


def test_terminate_records_reason(on_loop: OnLoop, tmp_path: Path) -> None:
    marker = tmp_path / "running"

    async def scenario() -> ExecResult:
        execution = await Execution.start(sh(f"touch {marker}; sleep 30", kill_grace_s=1.0))
        await wait_until(marker.exists)
        execution.terminate("cancelled")
        execution.terminate("second reason is ignored")
        return await execution.wait()

    result = on_loop(scenario())
    assert result.kill_reason == "cancelled"
    assert result.error == "terminated (cancelled)"
    assert result.signal == signal.SIGTERM
    assert not result.succeeded
    assert_all_gone(result)


def test_leftover_grandchild_is_stopped_after_leader_exits(on_loop: OnLoop) -> None:
    spec = sh("sleep 30 & echo $!", kill_grace_s=5.0)
    started = time.monotonic()
    result = on_loop(run(spec))
    assert time.monotonic() - started < 2.0
    assert result.succeeded
    assert_all_gone(result, int(result.stdout))


def test_leftover_grandchild_ignoring_sigterm_is_killed(on_loop: OnLoop) -> None:
    spec = sh('trap "" TERM; sleep 30 & echo $!', kill_grace_s=0.3)
    result = on_loop(run(spec))
    assert result.succeeded
    assert_all_gone(result, int(result.stdout))


def test_cancelled_wait_kills_and_reaps_before_raising(on_loop: OnLoop, tmp_path: Path) -> None:
    marker = tmp_path / "running"
    spec = sh(f"sleep 30 & echo $! > {marker}; wait", kill_grace_s=5.0)

    async def scenario() -> tuple[int, int]:
        execution = await Execution.start(spec)
        waiting = asyncio.Event()

        async def wait_for_result() -> ExecResult:
            waiting.set()  # no suspension between here and the first await inside wait()
            return await execution.wait()

        waiter = asyncio.ensure_future(wait_for_result())
        await waiting.wait()
        await wait_until(lambda: marker.exists() and marker.read_text().strip() != "")
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return execution.pid, int(marker.read_text())

    pid, grandchild = on_loop(scenario())
    assert not group_exists(pid)
    assert_gone(pid, pgid=pid)
    assert_gone(grandchild, pgid=pid)


def test_runs_in_its_own_process_group(on_loop: OnLoop) -> None:
    code = "import os; print(os.getpid(), os.getpgrp())"
    result = on_loop(run(ExecSpec(argv=(sys.executable, "-c", code))))
    pid, pgid = map(int, result.stdout.split())
    assert pid == pgid == result.pid
    assert pgid != os.getpgrp()


def test_many_concurrent_jobs_leak_no_fds(on_loop: OnLoop) -> None:
    async def scenario() -> list[ExecResult]:
        return await asyncio.gather(*(run(ExecSpec(argv=("/bin/true",))) for _ in range(200)))

    fds_before = len(os.listdir("/proc/self/fd"))
    results = on_loop(scenario())
    assert all(r.succeeded for r in results)
    assert len(os.listdir("/proc/self/fd")) <= fds_before


@pytest.mark.parametrize("how", ["oserror", "missing"])
def test_without_pidfd_falls_back_to_a_thread(
    on_loop: OnLoop, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    def unsupported(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    if how == "oserror":
        monkeypatch.setattr(os, "pidfd_open", unsupported)
    else:
        monkeypatch.delattr(os, "pidfd_open")
    assert on_loop(run(sh("exit 3"))).exit_code == 3
    result = on_loop(run(sh("sleep 30", timeout_s=0.2, kill_grace_s=0.5)))
    assert result.kill_reason == "timeout"
    assert result.signal == signal.SIGTERM


# --- API details, on the default loop through pytest-asyncio ------------------------------


async def test_start_raises_spawn_error_for_missing_command() -> None:
    with pytest.raises(SpawnError, match="command not found: no-such-command-4711"):
        await Execution.start(ExecSpec(argv=("no-such-command-4711",)))


async def test_start_raises_spawn_error_for_missing_cwd(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(SpawnError, match=f"/bin/true: working directory not found: {missing}"):
        await Execution.start(ExecSpec(argv=("/bin/true",), cwd=str(missing)))


async def test_start_raises_spawn_error_for_non_executable(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(SpawnError, match=f"permission denied: {script}"):
        await Execution.start(ExecSpec(argv=(str(script),)))


async def test_start_rejects_empty_argv() -> None:
    with pytest.raises(SpawnError, match="empty command"):
        await Execution.start(ExecSpec(argv=()))


async def test_wait_twice_is_an_error_and_terminate_after_is_harmless() -> None:
    execution = await Execution.start(ExecSpec(argv=("/bin/true",)))
    assert (await execution.wait()).succeeded
    execution.terminate("late")
    with pytest.raises(RuntimeError, match="only be awaited once"):
        await execution.wait()


def test_describe_signal() -> None:
    assert describe_signal(signal.SIGKILL) == "SIGKILL"
    assert describe_signal(signal.SIGTERM) == "SIGTERM"
    assert describe_signal(signal.SIGRTMIN + 2) == "SIGRTMIN+2"
    assert describe_signal(999) == "signal 999"


def test_killed_by_signal_error_text(on_loop: OnLoop) -> None:
    result = on_loop(run(sh("kill -KILL $$")))
    assert result.signal == signal.SIGKILL
    assert result.exit_code is None
    assert result.kill_reason is None
    assert result.error == "killed by signal 9 (SIGKILL)"


async def test_a_process_that_left_its_group_is_stopped_and_reaped_with_its_job(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "escaped"
    script = f"setsid sh -c 'echo $$ > {pidfile}; sleep 30' & sleep 0.1"
    result = await run(ExecSpec(argv=("sh", "-c", script), kill_grace_s=0.5))
    assert result.succeeded
    escaped = int(pidfile.read_text())
    assert not Path(f"/proc/{escaped}").exists()  # neither running nor a zombie


def test_reap_strays_reaps_exited_children_that_lead_no_job() -> None:
    child = subprocess.Popen(["true"])  # exits and stays a zombie: nobody waits for it
    stat = Path(f"/proc/{child.pid}/stat")
    wait_until_sync(lambda: stat.read_text().rpartition(")")[2].split()[0] == "Z")
    assert reap_strays() >= 1  # other tests of this session may have left strays too
    assert not stat.exists()
    child.wait()  # (its status went to reap_strays)
