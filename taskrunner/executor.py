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

Output: both pipes are read with ``loop.add_reader`` from the moment the process starts, and
keep being drained after the cap; only the first and last ``capture_bytes // 2`` bytes are kept.

Spawning: ``Popen`` on the event loop's thread (vfork + exec). Measured and kept over a thread
pool, ``asyncio.create_subprocess_exec`` (uvloop's is about 5 times slower) and
``os.posix_spawn``; the figures are in the README's Performance section (``scripts/bench``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import IO, Any

from taskrunner.cgroups import CGROUPS
from taskrunner.errors import ResourceExhausted, SpawnError
from taskrunner.escapes import ENVIRONMENT, STRAYS, new_token, reap, signal_stray
from taskrunner.guard import (
    SETTLE_S,
    WATCHDOG,
    become_subreaper,
    before_the_first_job,
    guard_leader,
    helper_pids,
    running_leaders,
)

logger = logging.getLogger("taskrunner.executor")

_READ_SIZE = 65536
_EOF_AFTER_GROUP_S = 1.0  # group gone but a pipe still open (a process escaped the group)
_POLL_FIRST_S = 0.001
_POLL_MAX_S = 0.05
_FOUND_TTL_S = 1.0  # how long a program found on PATH is started without searching again
_FOUND_MAX = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecSpec:
    """What to run and how long to let it run."""

    argv: tuple[str, ...]
    cwd: str | None = None
    env: Mapping[str, str] | None = None  # None: the runner's; TASKRUNNER_* are never passed on
    job_id: str | None = None  # passed to the job as TASKRUNNER_JOB_ID
    timeout_s: float = 0.0
    kill_grace_s: float = 5.0
    capture_bytes: int = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    """How one execution ended, with the head and tail of its output."""

    pid: int | None
    exit_code: int | None
    signal: int | None
    duration_s: float
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    kill_reason: str | None
    error: str | None
    http_status: int | None = None  # rpc jobs: the answer's status (None: no answer)

    @property
    def succeeded(self) -> bool:
        """No error: a process exited 0 unstopped, or an rpc job got a 2xx answer."""
        return self.error is None


def describe_signal(signum: int) -> str:
    """Name of a signal number, e.g. 9 -> "SIGKILL"."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        pass
    if signal.SIGRTMIN < signum < signal.SIGRTMAX:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
    return f"signal {signum}"


class _Capture:
    """Drains one pipe without blocking; keeps its first and last bytes up to a cap."""

    def __init__(self, *, loop: asyncio.AbstractEventLoop, file: IO[bytes], cap_bytes: int) -> None:
        self._loop = loop
        self._file = file
        self._fd = file.fileno()
        self._head = bytearray()
        self._tail = bytearray()
        self._head_cap = max(cap_bytes, 0) // 2
        self._tail_cap = max(cap_bytes, 0) - self._head_cap
        self._seen = 0
        self.eof: asyncio.Future[None] = loop.create_future()

    def open(self) -> None:
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        if self._file.closed:
            return
        self._loop.remove_reader(self._fd)
        self._file.close()
        if not self.eof.done():
            self.eof.set_result(None)

    @property
    def truncated(self) -> bool:
        return self._seen > self._head_cap + self._tail_cap

    def value(self) -> bytes:
        return bytes(self._head + self._tail)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            logger.warning("reading output pipe failed: %s", exc)
            chunk = b""
        if chunk:
            self._keep(chunk)
        else:
            self.close()

    def _keep(self, chunk: bytes) -> None:
        self._seen += len(chunk)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        tail = self._tail
        tail += chunk
        excess = len(tail) - self._tail_cap
        if excess > 0:
            del tail[:excess]


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
        self._out = _Capture(loop=loop, file=_pipe(proc.stdout), cap_bytes=spec.capture_bytes)
        self._err = _Capture(loop=loop, file=_pipe(proc.stderr), cap_bytes=spec.capture_bytes)
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
            proc = _spawn(spec, token)
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
        _watch_exit(self._loop, self._proc, self._exit)
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
            error=_error_text(self._spec, code, self._kill_reason),
        )
        logger.debug("pid %d ended: %s", self.pid, result.error or "ok")
        return result


async def run(spec: ExecSpec) -> ExecResult:
    """Start and wait; a spawn failure comes back as a result with error set."""
    try:
        execution = await Execution.start(spec)
    except SpawnError as exc:
        return _not_started(str(exc))
    return await execution.wait()


def _spawn(spec: ExecSpec, token: str) -> subprocess.Popen[bytes]:
    if not spec.argv:
        raise SpawnError("cannot start a job with an empty command")
    env = ENVIRONMENT.for_job(spec.env, job_id=spec.job_id, token=token)
    try:
        executable = _find_on_path(spec.argv[0], spec.env)
        try:
            return _popen(spec, env, executable)
        except FileNotFoundError:
            if executable is None:
                raise
            _FOUND.clear()  # the file went away within the cache's second: search again
            return _popen(spec, env, None)
    except OSError as exc:
        raise _spawn_error(spec, exc) from exc
    except ValueError as exc:  # e.g. an embedded NUL byte
        raise SpawnError(f"cannot start {spec.argv[0]!r}: {exc}") from exc


def _popen(
    spec: ExecSpec, env: dict[bytes, bytes], executable: str | None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        spec.argv,
        executable=executable,
        process_group=0,
        stdin=_devnull(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=True,
        bufsize=0,
        cwd=spec.cwd,
        env=env,
    )


# Where a bare program name was found on PATH: (name, PATH) -> (when, file).
_FOUND: dict[tuple[str, str], tuple[float, str]] = {}


def _find_on_path(name: str, env: Mapping[str, str] | None) -> str | None:
    """The file a bare name (no "/") runs, as found on the job's PATH less than a second ago.

    Popen would build the candidate list in Python and let the child try each directory in
    turn while the event loop waits for its exec; a queue starts the same few programs again
    and again. None (Popen searches itself) for paths, names not found, and a PATH with
    relative entries, which depend on the job's working directory."""
    if "/" in name:
        return None
    path = (os.environ if env is None else env).get("PATH", os.defpath)
    now = time.monotonic()
    found = _FOUND.get((name, path))
    if found is not None and now - found[0] < _FOUND_TTL_S:
        return found[1]
    if not all(os.path.isabs(entry) for entry in path.split(os.pathsep)):
        return None
    file = shutil.which(name, path=path)
    if file is None:
        return None
    if len(_FOUND) >= _FOUND_MAX:
        _FOUND.clear()
    _FOUND[(name, path)] = (now, file)
    return file


@functools.cache
def _devnull() -> int:
    """One /dev/null descriptor for every job's stdin (Popen would open and close one each)."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


# Why a start can fail for the moment only: descriptors (EMFILE, ENFILE), processes (EAGAIN),
# memory (ENOMEM).
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


def _spawn_error(spec: ExecSpec, exc: OSError) -> SpawnError:
    prog = spec.argv[0]
    if exc.errno in _RESOURCE_ERRNOS:
        return ResourceExhausted(
            f"cannot start {prog} for lack of resources: {exc.strerror or exc}"
        )
    if spec.cwd is not None and exc.filename == spec.cwd:
        if isinstance(exc, FileNotFoundError):
            return SpawnError(f"cannot start {prog}: working directory not found: {spec.cwd}")
        return SpawnError(f"cannot start {prog}: working directory {spec.cwd}: {exc.strerror}")
    if isinstance(exc, FileNotFoundError):
        return SpawnError(f"command not found: {prog}")
    if isinstance(exc, PermissionError):
        return SpawnError(f"permission denied: {prog}")
    return SpawnError(f"cannot start {prog}: {exc.strerror or exc}")


def _pipe(file: IO[bytes] | None) -> IO[bytes]:
    if file is None:  # pragma: no cover - Popen was called with PIPE
        raise RuntimeError("subprocess pipe missing")
    return file


def _watch_exit(
    loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes], fut: asyncio.Future[int]
) -> None:
    """Resolve fut with the leader's return code once it has exited and been reaped."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        _wait_in_thread(loop, proc, fut)
        return

    def on_exit() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not fut.done():
            fut.set_result(proc.wait())

    try:
        loop.add_reader(pidfd, on_exit)
    except BaseException:
        os.close(pidfd)
        raise


def _wait_in_thread(
    loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes], fut: asyncio.Future[int]
) -> None:
    def copy(waited: asyncio.Future[int]) -> None:
        if not fut.done():
            fut.set_result(waited.result())

    loop.run_in_executor(None, proc.wait).add_done_callback(copy)


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


def _error_text(spec: ExecSpec, code: int, kill_reason: str | None) -> str | None:
    if kill_reason == "timeout":
        return f"timed out after {spec.timeout_s} s"
    if kill_reason is not None:
        return f"terminated ({kill_reason})"
    if code < 0:
        return f"killed by signal {-code} ({describe_signal(-code)})"
    if code != 0:
        return f"exit code {code}"
    return None


def _not_started(error: str) -> ExecResult:
    return ExecResult(
        pid=None,
        exit_code=None,
        signal=None,
        duration_s=0.0,
        stdout=b"",
        stderr=b"",
        stdout_truncated=False,
        stderr_truncated=False,
        kill_reason=None,
        error=error,
    )
