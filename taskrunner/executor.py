"""Run one job's command as a subprocess in its own process group.

Every job gets a fresh process group (``process_group=0``). Timeout, ``terminate()`` and a
cancelled ``wait()`` signal the whole group: SIGTERM, ``kill_grace_s`` later SIGKILL. When the
leader exits on its own, whatever it left behind in its group gets the same treatment, so
nothing keeps running and nothing holds the output pipes open forever.

Reaping: the leader is reaped by ``Popen.wait()`` once its pidfd is readable. Orphaned
grandchildren are reparented to this process (it makes itself a child subreaper on Linux the
first time a job starts) and reaped with ``waitpid(-pgid)``, so no zombie is left even when
PID 1 does not reap orphans (containers without an init). What left the group (``setsid``
daemons) is found by the job's cgroup or its environment marker and stopped with the rest
when the job ends (taskrunner/escapes.py, taskrunner/cgroups.py); every job's environment is
the runner's without its ``TASKRUNNER_*`` variables. The watchdog that stops the groups when
this process dies, the subreaper and the reaping of strays are in taskrunner/guard.py.

Output capture is in taskrunner/capture.py, the ``Popen`` call and start errors in
taskrunner/spawn.py, ``ExecResult`` and the wording of exits in taskrunner/exec_result.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Coroutine
from typing import IO, Any

from taskrunner.capture import OutputCapture
from taskrunner.cgroups import CGROUPS
from taskrunner.errors import SpawnError
from taskrunner.escapes import STRAYS, new_token, reap, signal_stray
from taskrunner.exec_result import ExecResult, exit_error, not_started
from taskrunner.guard import (
    SETTLE_S,
    WATCHDOG,
    become_subreaper,
    before_the_first_job,
    guard_leader,
    helper_pids,
    running_leaders,
)
from taskrunner.spawn import ExecSpec, spawn, watch_exit

logger = logging.getLogger("taskrunner.executor")

_EOF_AFTER_GROUP_S = 1.0  # group gone but a pipe still open (a process escaped the group)
_POLL_FIRST_S = 0.001
_POLL_MAX_S = 0.05


class Execution:
    """One started process group."""

    def __init__(
        self,
        *,
        spec: ExecSpec,
        proc: subprocess.Popen[bytes],
        loop: asyncio.AbstractEventLoop,
        started_at: float,
        token: str,
        cgroup: str | None,
    ) -> None:
        self._spec = spec
        self._proc = proc
        self._token = token  # TASKRUNNER_JOB_TOKEN: what it leaves behind is found by it
        self._cgroup = cgroup  # its cgroup (taskrunner.cgroups), None without
        self._strays: set[int] = set()  # processes it left outside its group, being stopped
        self._signalled: int | None = None  # the last signal sent to what it left
        self._loop = loop
        self._started_at = started_at
        self._ended_at = started_at
        self._exit: asyncio.Future[int] = loop.create_future()
        self._out = OutputCapture(loop=loop, file=_pipe(proc.stdout), cap_bytes=spec.capture_bytes)
        self._err = OutputCapture(loop=loop, file=_pipe(proc.stderr), cap_bytes=spec.capture_bytes)
        self._kill_reason: str | None = None
        self._timeout_timer: asyncio.TimerHandle | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._awaited = False
        self._closed = False

    @classmethod
    async def start(cls, spec: ExecSpec) -> Execution:
        """Spawn the command in a new process group; SpawnError if it cannot be started."""
        loop = asyncio.get_running_loop()
        become_subreaper(os.getpid())
        before_the_first_job()
        started_at = time.monotonic()
        token, cgroup = new_token(), CGROUPS.create()
        try:
            proc = spawn(spec, token)
        except BaseException:
            if cgroup is not None:
                CGROUPS.remove(cgroup)
            raise
        WATCHDOG.track(proc.pid)
        if cgroup is not None:
            WATCHDOG.flush()  # told now: the move into its cgroup may wait for the kernel a while
            if not CGROUPS.enter(cgroup, proc.pid):
                cgroup = None
        execution = cls(
            spec=spec, proc=proc, loop=loop, started_at=started_at, token=token, cgroup=cgroup
        )
        STRAYS.begin(token, proc.pid)
        guard_leader(execution)
        try:
            execution._attach()
        except BaseException:
            execution._discard()
            raise
        logger.debug("started pid %d: %s", execution.pid, spec.argv[0])
        return execution

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def leader_running(self) -> bool:
        """Whether its leader has not been reaped yet (guard: spare its group)."""
        return self._proc.returncode is None

    def terminate(self, reason: str) -> None:
        """SIGTERM the group now and SIGKILL it after kill_grace_s; idempotent.

        The reason is recorded as the result's kill_reason unless the leader had already exited
        (then the command's own outcome stands) or an earlier reason was recorded.
        """
        if self._kill_reason is None and not self._exit.done():
            self._kill_reason = reason
        self._stop_group()

    async def wait(self) -> ExecResult:
        """Wait for the leader, clear its group, drain the pipes; return the result once.

        Cancelling the awaiting task SIGKILLs the group and reaps it before CancelledError
        propagates. A task cancelled before it ever entered wait() cannot do that: call
        terminate() then (``await Execution.start()`` never suspends, so awaiting wait() right
        after start() leaves no such gap).
        """
        if self._awaited:
            raise RuntimeError("Execution.wait() may only be awaited once")
        self._awaited = True
        try:
            await asyncio.shield(self._exit)
            await self._clear_leftovers()
            await self._drain_pipes()
        except asyncio.CancelledError:
            self._signal_group(signal.SIGKILL)
            await _finish_despite_cancel(self._reap_after_kill())
            raise
        finally:
            self._close()
        return self._result()

    def _attach(self) -> None:
        self._out.open()
        self._err.open()
        watch_exit(self._loop, self._proc, self._exit)
        self._exit.add_done_callback(self._on_exit)
        if self._spec.timeout_s > 0:
            self._timeout_timer = self._loop.call_later(self._spec.timeout_s, self._on_timeout)

    def _discard(self) -> None:
        self._signal_group(signal.SIGKILL)
        self._proc.wait()
        self._close()

    def _on_exit(self, _: asyncio.Future[int]) -> None:
        self._ended_at = time.monotonic()
        if self._timeout_timer is not None:
            self._timeout_timer.cancel()

    def _on_timeout(self) -> None:
        logger.info("pid %d timed out after %s s", self.pid, self._spec.timeout_s)
        self.terminate("timeout")

    def _stop_group(self) -> None:
        if self._kill_timer is not None or self._closed:
            return
        if self._signal_group(signal.SIGTERM):
            grace_s = self._spec.kill_grace_s
            self._kill_timer = self._loop.call_later(grace_s, self._signal_group, signal.SIGKILL)

    def _signal_group(self, signum: int) -> bool:
        """Send signum to the whole group, its cgroup and what it left reparented to us; False
        when none of them is left."""
        self._signalled = signum
        found = self._signal_strays(signum)
        if self._cgroup is not None and CGROUPS.signal(self._cgroup, signum):
            found = True
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return found
        except PermissionError as exc:
            logger.warning("cannot signal process group %d: %s", self.pid, exc)
            return found
        return True

    def _signal_strays(self, signum: int, pids: set[int] | None = None) -> bool:
        """Signal strays with their process groups (not the group of a job still running)."""
        pids = self._strays if pids is None else pids
        if pids:
            running = running_leaders() - {self.pid}
            for pid in pids:
                signal_stray(pid, signum, spare_groups=running)
        return bool(pids)

    def _leftovers_alive(self) -> bool:
        """Reap what exited, then tell whether anything of the job is left: in its group, in
        its cgroup, or reparented to us (new finds get the signal sent last, if any).

        Only valid once the leader is reaped (see _group_alive)."""
        stop, unsure = STRAYS.survey(ending=self._token, exclude=helper_pids())
        found = set(stop) - self._strays
        if found:
            logger.info(
                "pid %d: stopping %d process(es) its job left outside its process group: %s",
                self.pid, len(found), " ".join(map(str, sorted(found))),
            )  # fmt: skip
            self._strays |= found
            if self._signalled is not None:
                self._signal_strays(self._signalled, found)
        self._strays = {pid for pid in self._strays if not reap(pid)}
        alive = self._group_alive() or bool(self._strays) or unsure
        if self._cgroup is not None and CGROUPS.release(self._cgroup):
            self._cgroup = None  # it was empty: kept for the next job
        return alive or self._cgroup is not None

    def _group_alive(self) -> bool:
        """Reap exited members we own, then tell whether any member is left.

        Only valid once the leader is reaped: waitpid(-pgid) could otherwise steal its status.
        """
        _reap_group(self.pid)
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    async def _until_gone(self, *, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        delay_s = _POLL_FIRST_S
        while self._leftovers_alive():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _POLL_MAX_S)
        return True

    async def _clear_leftovers(self) -> None:
        """After the leader exited: stop what it left behind, in its group, its cgroup or
        reparented to us after leaving the group (SIGTERM, grace, SIGKILL)."""
        if not self._leftovers_alive():
            return
        logger.debug("pid %d exited; stopping what its job left", self.pid)
        self._stop_group()
        if not await self._until_gone(timeout_s=self._spec.kill_grace_s + SETTLE_S):
            logger.warning("job of pid %d still has processes after SIGKILL", self.pid)

    async def _drain_pipes(self) -> None:
        pending = [c.eof for c in (self._out, self._err) if not c.eof.done()]
        if not pending:
            return
        _, still_open = await asyncio.wait(pending, timeout=_EOF_AFTER_GROUP_S)
        if still_open:
            logger.warning("pid %d: output pipe held open outside its process group", self.pid)

    async def _reap_after_kill(self) -> None:
        await asyncio.shield(self._exit)
        if not await self._until_gone(timeout_s=SETTLE_S):
            logger.warning("job of pid %d still has processes after SIGKILL", self.pid)

    def _close(self) -> None:
        WATCHDOG.untrack(self.pid)
        STRAYS.end(self._token)
        if self._cgroup is not None:
            CGROUPS.remove(self._cgroup)
        self._closed = True
        for timer in (self._timeout_timer, self._kill_timer):
            if timer is not None:
                timer.cancel()
        self._out.close()
        self._err.close()

    def _result(self) -> ExecResult:
        code = self._exit.result()
        exit_code, signum = (None, -code) if code < 0 else (code, None)
        result = ExecResult(
            pid=self.pid,
            exit_code=exit_code,
            signal=signum,
            duration_s=self._ended_at - self._started_at,
            stdout=self._out.value(),
            stderr=self._err.value(),
            stdout_truncated=self._out.truncated,
            stderr_truncated=self._err.truncated,
            kill_reason=self._kill_reason,
            error=exit_error(code, self._kill_reason, timeout_s=self._spec.timeout_s),
        )
        logger.debug("pid %d ended: %s", self.pid, result.error or "ok")
        return result


async def run(spec: ExecSpec) -> ExecResult:
    """Start and wait; a spawn failure comes back as a result with error set."""
    try:
        execution = await Execution.start(spec)
    except SpawnError as exc:
        return not_started(str(exc))
    return await execution.wait()


def _pipe(file: IO[bytes] | None) -> IO[bytes]:
    if file is None:  # pragma: no cover - Popen was called with PIPE
        raise RuntimeError("subprocess pipe missing")
    return file


def _reap_group(pgid: int) -> None:
    """Reap every exited child of ours in the group (grandchildren reparented to us)."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


async def _finish_despite_cancel(coro: Coroutine[Any, Any, None]) -> None:
    """Run coro to the end even if the awaiting task is cancelled again meanwhile."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    task.result()
