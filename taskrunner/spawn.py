"""Starting a job's command: ``ExecSpec`` (what to run) and one ``Popen`` in a new process group.

The job's environment is the runner's without its ``TASKRUNNER_*`` variables
(taskrunner/escapes.py), stdin is /dev/null, and a bare program name found on PATH is
remembered for a second. Start
failures come back as ``SpawnError`` with a message that says what was wrong; a lack of
descriptors, processes or memory as ``ResourceExhausted`` (the job is tried again later).
``watch_exit`` resolves a future once the leader has exited and been reaped (by its pidfd).

Spawning: ``Popen`` on the event loop's thread (vfork + exec). Measured and kept over a thread
pool, ``asyncio.create_subprocess_exec`` (uvloop's is about 5 times slower) and
``os.posix_spawn``; the figures are in the README's Performance section (``scripts/bench``).
The process group, its stopping and its reaping are taskrunner/executor.py's.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

from taskrunner.errors import ResourceExhausted, SpawnError
from taskrunner.escapes import ENVIRONMENT

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


def spawn(spec: ExecSpec, token: str) -> subprocess.Popen[bytes]:
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


def watch_exit(
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
