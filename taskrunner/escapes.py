"""What a job leaves behind: processes that left its process group, found and stopped when it ends.

A job's processes normally stay in its process group, which the executor signals as a whole. A
process can leave the group (`setsid`, `setpgid`, a daemon's double fork); once its parent has
exited it is reparented to the runner, a child subreaper. Two ways find such processes:

- **Markers**, always. Every job's environment carries `TASKRUNNER_JOB_ID` (its id) and
  `TASKRUNNER_JOB_TOKEN` (this process's random nonce, then a random part for the attempt); every
  other `TASKRUNNER_*` variable (the runner's token, its Redis URL) is removed. A child of this
  process that is no job's leader is attributed by the token in its /proc/PID/environ: its job
  still runs, or it has ended and the process is stopped (its process group with it). A child
  that carries no token (it was started with a cleared environment) is stopped once every job
  that ran when it was first seen has ended; this rule applies only where every child is a job's
  or a known helper (`Strays.adopt_unmarked`, a `taskrunner run` process), never in a program
  that merely embeds the executor.
- **cgroup v2**, where this process may create cgroups: every job runs in a cgroup of its own,
  whose members are stopped with it (taskrunner/cgroups.py).

Standard library only; the executor wires it in (taskrunner/executor.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterable, Mapping

from taskrunner.cgroups import pid_alive

JOB_ID_VAR = "TASKRUNNER_JOB_ID"
JOB_TOKEN_VAR = "TASKRUNNER_JOB_TOKEN"
NONCE = secrets.token_hex(8)  # this process's; every job token starts with it and a "-"
_SCRUBBED = b"TASKRUNNER_"
_TOKEN_NEEDLE = b"\0" + JOB_TOKEN_VAR.encode() + b"="


# -- the job's environment -----------------------------------------------------------------------


class _Tokens:
    """Job tokens: this process's nonce, then 6 random bytes for the attempt, cut from 4 KiB
    of os.urandom at a time (one system call for 682 jobs)."""

    def __init__(self) -> None:
        self._random = b""
        self._at = 0

    def new(self) -> str:
        if self._at + 6 > len(self._random):
            self._random, self._at = os.urandom(4096), 0
        self._at += 6
        return f"{NONCE}-{self._random[self._at - 6 : self._at].hex()}"


new_token = _Tokens().new


class _Environment:
    """The environment jobs start from: the runner's (or the given one) without TASKRUNNER_*."""

    def __init__(self) -> None:
        self._source: dict[bytes, bytes] | None = None  # os.environ's data when `_base` was made
        self._base: dict[bytes, bytes] = {}

    def for_job(
        self, env: Mapping[str, str] | None, *, job_id: str | None, token: str
    ) -> dict[bytes, bytes]:
        base = self._runner_base() if env is None else _scrub(_encoded(env))
        job = dict(base)
        if job_id is not None:
            job[JOB_ID_VAR.encode()] = os.fsencode(job_id)
        job[JOB_TOKEN_VAR.encode()] = token.encode()
        return job

    def _runner_base(self) -> dict[bytes, bytes]:
        # os.environ keeps its data as a dict of bytes; comparing it with a copy is ~1 µs, so
        # the scrubbed copy is made again only when the environment changed.
        data = getattr(os.environ, "_data", None)
        if not isinstance(data, dict):  # pragma: no cover - CPython on POSIX always has it
            return _scrub(_encoded(os.environ))
        if data != self._source:
            self._source = dict(data)
            self._base = _scrub(self._source)
        return self._base


def _encoded(env: Mapping[str, str]) -> dict[bytes, bytes]:
    return {os.fsencode(k): os.fsencode(v) for k, v in env.items()}


def _scrub(env: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    return {k: v for k, v in env.items() if not k.startswith(_SCRUBBED)}


ENVIRONMENT = _Environment()


# -- processes reparented to this process --------------------------------------------------------


class Strays:
    """Children of this process that are no job's leader, sorted by whom they belong to."""

    def __init__(self) -> None:
        self._live: dict[str, int] = {}  # token of a job not ended yet -> its leader's pid
        self._unmarked: dict[int, frozenset[str]] = {}  # pid -> tokens live when first seen
        self._empty_since: dict[int, float] = {}  # pid -> when its environment first read empty
        self._adopting = False
        self._protected: frozenset[int] = frozenset()

    def begin(self, token: str, pid: int) -> None:
        self._live[token] = pid

    def end(self, token: str) -> None:
        self._live.pop(token, None)

    def adopt_unmarked(self, *, protect: Iterable[int] = ()) -> None:
        """In a runner process: also stop children without a marker once no job that ran when
        they were first seen is left. Children it has now (and `protect`) are never touched."""
        self._adopting = True
        self._protected = frozenset(children(all_threads=True)) | frozenset(protect)

    def survey(
        self, *, ending: str | None = None, exclude: Iterable[int] = (), all_threads: bool = False
    ) -> tuple[list[int], bool]:
        """The strays to stop now: those of the job ending (`ending`, its token), of jobs
        that have ended, and (adopting) unmarked ones no live job can own any more; and
        whether a child could not be told yet (its environment read empty: an exec may be
        under way, look again in a few milliseconds)."""
        found = children(all_threads=all_threads)
        candidates = found - set(self._live.values()) - self._protected - set(exclude)
        for seen in (self._unmarked, self._empty_since):
            for pid in [p for p in seen if p not in found]:
                del seen[pid]
        if not candidates:
            return [], False
        live, now = self._live.keys() - {ending}, time.monotonic()
        stop, unsure = [], False
        for pid in candidates:
            token = token_of(pid)
            if token is None:
                continue  # gone
            if token is EMPTY and now - self._empty_since.setdefault(pid, now) < EMPTY_SETTLE_S:
                unsure = True
            elif token and token is not EMPTY:
                self._empty_since.pop(pid, None)
                if token.startswith(NONCE + "-") and token not in live:
                    stop.append(pid)
            elif self._adopting:
                owners = self._unmarked.setdefault(pid, frozenset(live))
                if not owners & live:
                    stop.append(pid)
        return stop, unsure


def children(*, all_threads: bool = False) -> set[int]:
    """This process's children: of its main thread (where orphans are reparented, and what
    the event loop forks when it runs there), or of every thread."""
    if not all_threads:
        return {int(p) for p in _MAIN_CHILDREN.read().split()}
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with (
                contextlib.suppress(OSError),
                open(f"/proc/self/task/{task}/children", "rb") as fh,
            ):
                pids.update(int(p) for p in fh.read().split())
    return pids


class _ChildrenFile:
    """/proc/self/task/PID/children of the main thread, kept open: a pread is a sixth of an
    open, read and close, and a job's end reads it."""

    def __init__(self) -> None:
        self._pid = 0
        self._fd = -1

    def read(self) -> bytes:
        pid = os.getpid()
        try:
            if self._pid != pid:  # first use, or a forked child
                self._fd = os.open(f"/proc/self/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC)
                self._pid = pid
            data = os.pread(self._fd, 65536, 0)
            while len(data) % 65536 == 0 and data:  # thousands of children: read on
                more = os.pread(self._fd, 65536, len(data))
                if not more:
                    break
                data += more
        except OSError:  # out of descriptors: the next look finds them
            return b""
        return data


_MAIN_CHILDREN = _ChildrenFile()


# An environment that reads empty: a process started with none, or one reading it caught during
# an exec (about one read in twenty there). Only an empty read this long is believed.
EMPTY = "(empty)"
EMPTY_SETTLE_S = 0.05


def token_of(pid: int) -> str | None:
    """The job token in a process's environment: "" when it has none (or it cannot be read:
    it changed its user), EMPTY when the environment reads empty, None when the process is
    gone or a zombie."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return ""
    if not data:
        return None if _zombie(pid) else EMPTY
    start = (b"\0" + data).find(_TOKEN_NEEDLE)
    if start < 0:
        return ""
    start += len(_TOKEN_NEEDLE) - 1
    end = data.find(b"\0", start)
    return data[start : None if end < 0 else end].decode("ascii", "replace")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def signal_stray(pid: int, signum: int, *, spare_groups: Iterable[int] = ()) -> None:
    """Signal a stray with its process group, unless that group is this process's or one in
    `spare_groups` (running jobs'): then the process alone."""
    with contextlib.suppress(OSError):
        pgid = os.getpgid(pid)
        if pgid not in (0, os.getpgrp()) and pgid not in set(spare_groups):
            os.killpg(pgid, signum)
            return
    with contextlib.suppress(OSError):
        os.kill(pid, signum)


def reap(pid: int) -> bool:
    """Reap the child if it has exited; True when it is gone (or not ours to wait for)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not pid_alive(pid)
    return done == pid


STRAYS = Strays()
