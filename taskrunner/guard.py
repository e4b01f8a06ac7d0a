"""Process guarding: what keeps a job's processes from outliving it or this process.

- The job watchdog (`WATCHDOG`), a client of the watchdog program (taskrunner/watchdog.py):
  told of every job's process group, it stops the groups still running when this process
  exits in any way, SIGKILL included, and fences them when the heartbeat falls silent.
- The child subreaper: orphaned grandchildren are reparented to this process, so their
  zombies can be reaped even when PID 1 does not reap orphans (containers without an init).
- Stray reaping (`adopt_unmarked`, `stop_strays`, `reap_strays`): what ended jobs left
  outside their process groups is stopped and reaped (taskrunner/escapes.py).

The executor (taskrunner/executor.py) registers each job's leader here (`guard_leader`), so
stray signals spare the groups of jobs still running.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Protocol

from taskrunner.aio import OncePerIteration
from taskrunner.cgroups import CGROUPS
from taskrunner.escapes import NONCE, STRAYS, reap, signal_stray

# Its lines keep the executor's logger name: they read as they did before the split.
logger = logging.getLogger("taskrunner.executor")

SETTLE_S = 1.0  # after SIGKILL: how long to wait for processes to vanish before giving up
_POLL_S = 0.05  # at exit: how often to look whether the strays stopped
_PR_SET_CHILD_SUBREAPER = 36


class Leader(Protocol):
    """A job's process-group leader, as the guard sees it (an executor.Execution)."""

    @property
    def pid(self) -> int: ...

    @property
    def leader_running(self) -> bool: ...


_LEADERS: weakref.WeakSet[Leader] = weakref.WeakSet()


def guard_leader(leader: Leader) -> None:
    """Register a started job's leader: strays are signalled sparing its group while it runs."""
    _LEADERS.add(leader)


class Watchdog:
    """This process's watchdog (taskrunner/watchdog.py): told of every job's process group, it
    stops the groups still running when this process exits in any way, SIGKILL included.

    Started on the first job or by `configure`; restarted, with every group it must know, if
    it died. One per process: runners in one process share it. Inside an event loop, what
    changed is told once per loop iteration, in one write (a job that started and ended within
    the iteration is never mentioned); outside one, at once. Writes never block the event
    loop: a message the pipe cannot take is dropped with a warning (that group is then not
    protected).

    Silence fencing (`watch_silence`): the runner's heartbeat loop calls `heard` after each
    heartbeat; when it falls silent (the process paused, its event loop stalled), the watchdog
    stops the job groups before the lease ends, and `fenced` tells the runner afterwards
    which of its jobs that may have hit. Runners in one process share it: any one's beat counts.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._listed: dict[bytes, bytes] = {}  # what it must stop: name -> its `+` line
        self._told: set[bytes] = set()  # the names the running watchdog has been told of
        self._changed: dict[bytes, None] = {}  # names listed or unlisted since the last write
        self._flush_soon = OncePerIteration(self._flush).request
        self.grace_s = 1.0
        self._retry_at = 0.0
        self._silence: tuple[float, float] | None = None  # (silence_s, grace_s) while watched
        self._silence_watchers = 0
        self._heard_at = 0.0  # time.monotonic() of the latest heartbeat told
        self._fenced: set[int] = set()  # groups its silence fence stopped (it says so first)
        self._fenced_partial = b""

    def configure(self, *, grace_s: float) -> None:
        """Set how long stopped groups get between SIGTERM and SIGKILL; start the watchdog."""
        self.grace_s = grace_s
        self._send(b"g%.3f\n" % grace_s)

    def watch_silence(self, *, silence_s: float, grace_s: float) -> None:
        """Stop the job groups when `heard` was not called for `silence_s` (SIGTERM, SIGKILL
        `grace_s` later). Counts from now; undone by as many `unwatch_silence()` calls."""
        self._silence_watchers += 1
        self._silence = (silence_s, grace_s)
        self._heard_at = max(self._heard_at, time.monotonic())
        self._send(self._silence_lines())

    def unwatch_silence(self) -> None:
        self._silence_watchers -= 1
        if self._silence_watchers <= 0:
            self._silence_watchers, self._silence = 0, None
            self._send(b"s0\n")

    def heard(self, sent_at: float) -> None:
        """A heartbeat sent at `sent_at` (time.monotonic()) shows the lease stands: told at
        once, as the time it was sent (the lease on Redis started later), so the fence comes a
        silence after it whatever the round trip took."""
        if self._silence is None:
            return
        self._heard_at = max(self._heard_at, sent_at)
        self._send(b"h%.6f\n" % self._heard_at)

    def silent(self) -> bool:
        """Whether the watchdog may be fencing now: no heartbeat told for the silence."""
        silence = self._silence
        return silence is not None and time.monotonic() - self._heard_at > silence[0]

    def fenced(self, pgid: int) -> bool:
        """Whether the silence fence stopped this job's group: asked once the group is gone,
        which the watchdog's word (written before its first signal) always precedes."""
        proc = self._proc
        if proc is not None and proc.stdout is not None:
            with contextlib.suppress(OSError):  # BlockingIOError: nothing more to read
                while chunk := os.read(proc.stdout.fileno(), 65536):
                    *lines, self._fenced_partial = (self._fenced_partial + chunk).split(b"\n")
                    self._fenced.update(int(line[1:]) for line in lines if line[1:].isdigit())
        if pgid in self._fenced:
            self._fenced.discard(pgid)
            return True
        return False

    def _silence_lines(self) -> bytes:
        if self._silence is None:
            return b""
        return b"s%.6f:%.6f\nh%.6f\n" % (*self._silence, self._heard_at)

    def flush(self) -> None:
        """Tell the watchdog what changed at once, not at the end of the loop iteration."""
        self._flush()

    def track(self, pgid: int) -> None:
        self._fenced.discard(pgid)  # (a group of that number, fenced once, is long gone)
        self._list(b"%d" % pgid, b"")

    def untrack(self, pgid: int) -> None:
        self._unlist(b"%d" % pgid)

    def watch_escapes(self, *, marker: str, cgroup: str | None) -> None:
        """Also stop, when this process dies, every process of its jobs, in their groups or
        not: those whose TASKRUNNER_JOB_TOKEN starts with `marker`, and all in `cgroup`. Told
        at once, before any job starts: a job whose group it has not been told of yet (the
        runner died within the iteration that started it) is found this way too."""
        self._list(b"m", marker.encode())
        if cgroup is not None:
            self._list(b"c", os.fsencode(cgroup))
        self.flush()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _list(self, name: bytes, suffix: bytes) -> None:
        self._listed[name] = b"+%s%s\n" % (name, suffix)
        self._changed[name] = None
        self._flush_soon()

    def _unlist(self, name: bytes) -> None:
        if self._listed.pop(name, None) is not None:
            self._changed[name] = None
            self._flush_soon()

    def _flush(self) -> None:
        """Tell the watchdog what changed since the last write, in one write."""
        lines = []
        for name in self._changed:
            line = self._listed.get(name)
            if line is not None:
                lines.append(line)
                self._told.add(name)
            elif name in self._told:
                lines.append(b"-%s\n" % name)
                self._told.discard(name)
        self._changed.clear()
        if lines:
            self._send(b"".join(lines))

    def close(self) -> None:
        """At this process's orderly exit: let the watchdog go (it stops any group still
        listed) and reap it, so no process of ours outlives us."""
        if self._proc is not None:
            self._flush()  # groups that ended meanwhile are not stopped again
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=self.grace_s + SETTLE_S)
        except subprocess.TimeoutExpired:
            logger.warning("the job watchdog did not exit; leaving it")
        if proc.stdout is not None:
            proc.stdout.close()

    def _ensure(self) -> subprocess.Popen[bytes] | None:
        if self._proc is None and time.monotonic() >= self._retry_at:
            self._proc = self._start()
        return self._proc

    def _start(self) -> subprocess.Popen[bytes] | None:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _WATCHDOG_FILE, f"{self.grace_s:g}"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,  # the groups its silence fence stopped (`fenced`)
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            logger.error(
                "cannot start the job watchdog (%s): if this process dies, its jobs run on;"
                " trying again in %d s", exc, _WATCHDOG_RETRY_S,
            )  # fmt: skip
            self._retry_at = time.monotonic() + _WATCHDOG_RETRY_S
            return None
        assert proc.stdin is not None and proc.stdout is not None
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        self._told = set(self._listed)
        if told := b"".join(self._listed.values()) + self._silence_lines():
            with contextlib.suppress(OSError):
                os.write(proc.stdin.fileno(), told)
        return proc

    def _send(self, message: bytes) -> None:
        for _ in range(2):
            proc = self._ensure()
            if proc is None or proc.stdin is None:
                return
            try:
                written = os.write(proc.stdin.fileno(), message)
            except BlockingIOError:
                written = 0
            except OSError as exc:  # EPIPE: it died; a new one is told every group
                logger.warning("the job watchdog is gone (%s); starting a new one", exc)
                self._proc = None
                with contextlib.suppress(OSError):
                    proc.stdin.close()
                    if proc.stdout is not None:
                        proc.stdout.close()
                proc.poll()
                continue
            if written < len(message):
                logger.warning("the job watchdog is not reading; a job group is not protected")
            return


_WATCHDOG_FILE = str(Path(__file__).with_name("watchdog.py"))
_WATCHDOG_RETRY_S = 60
WATCHDOG = Watchdog()
atexit.register(WATCHDOG.close)  # an orderly exit of any program that ran jobs reaps it too


def running_leaders() -> set[int]:
    return {leader.pid for leader in _LEADERS if leader.leader_running}


def helper_pids() -> set[int]:
    """Children of this process that are no job's: its watchdog."""
    pid = WATCHDOG.pid
    return set() if pid is None else {pid}


@functools.cache
def before_the_first_job() -> None:
    """Once: if this process dies, its watchdog also stops what its jobs left outside their
    groups (by their marker, and what is in the job cgroups); if it exits, it does so itself."""
    WATCHDOG.watch_escapes(marker=NONCE, cgroup=CGROUPS.root)
    atexit.register(_stop_strays_at_exit)  # runs before WATCHDOG.close (registered earlier)


def adopt_unmarked() -> None:
    """Called by a runner process (`taskrunner run`): every child of it that is no job's
    leader and not one it has now (the embedded Valkey) is a job's leftover, marker or not.
    Not for programs that only embed the executor: their own children would count."""
    STRAYS.adopt_unmarked(protect=helper_pids())


# Strays this process signalled outside a job's end (reap_strays): pid -> when first.
_STOPPING: dict[int, float] = {}


def stop_strays() -> int:
    """Stop the processes left behind by jobs that have ended (see taskrunner.escapes):
    SIGTERM with their process groups, SIGKILL from the first call after the grace. The
    runner calls it every few seconds; a job's end stops its own at once. Returns how many."""
    found, _ = STRAYS.survey(exclude=helper_pids(), all_threads=True)
    now, running = time.monotonic(), running_leaders()
    for pid in list(_STOPPING):
        if pid not in found:
            del _STOPPING[pid]
    for pid in found:
        late = now - _STOPPING.setdefault(pid, now) >= WATCHDOG.grace_s
        signal_stray(pid, signal.SIGKILL if late else signal.SIGTERM, spare_groups=running)
    if found:
        logger.info(
            "stopping %d process(es) left behind by jobs that have ended: %s",
            len(found), " ".join(map(str, sorted(found))),
        )  # fmt: skip
    CGROUPS.tidy()
    return len(found)


def _stop_strays_at_exit() -> None:
    """At an orderly exit: stop what ended jobs left (SIGTERM, the grace, SIGKILL), then
    remove the job cgroups."""
    found = set(STRAYS.survey(exclude=helper_pids(), all_threads=True)[0])
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            signal_stray(pid, signum)
        deadline = time.monotonic() + (WATCHDOG.grace_s if signum == signal.SIGTERM else SETTLE_S)
        while found and time.monotonic() < deadline:
            time.sleep(_POLL_S)
            found = {pid for pid in found if not reap(pid)}
    CGROUPS.close()


def reap_strays() -> int:
    """Stop what ended jobs left behind (`stop_strays`), and reap exited children that are no
    job's leader: processes that left their job's group (``setsid`` daemons) and were
    reparented to this subreaper. Returns how many were reaped."""
    stop_strays()
    leaders = running_leaders()
    reaped = 0
    for pid in zombie_children() - leaders:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped += 1
    return reaped


def zombie_children() -> set[int]:
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as fh:
                pids.update(int(p) for p in fh.read().split())
    zombies = set()
    for pid in pids:
        with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat") as fh:
            if fh.read().rpartition(")")[2].split()[0] == "Z":
                zombies.add(pid)
    return zombies


@functools.cache
def become_subreaper(pid: int) -> bool:
    """Adopt orphaned descendants so their zombies can be reaped (once per process id)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        ok = False
    if not ok:
        logger.info("pid %d cannot become a child subreaper; orphans are left to init", pid)
    return bool(ok)
