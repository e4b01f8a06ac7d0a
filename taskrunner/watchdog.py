"""A runner's watchdog: stops the process groups of its running jobs when the runner dies.

The runner starts this file as a small process of its own (`python -I -S watchdog.py GRACE`,
in a new session, so a signal to the runner's group does not reach it) with a pipe on its
stdin, and writes `+PGID` when a job's process group starts, `-PGID` once it is gone (both at
the end of the event-loop iteration, so a group that came and went within one is not mentioned),
`+pPID:START` and `-pPID` for a single process (START is its start time from
/proc/PID/stat, so a reused pid is never signalled), `gSECONDS` to change the grace, and, once
before its first job, `+mNONCE` and `+cDIR`: the prefix of its jobs' TASKRUNNER_JOB_TOKEN and
the cgroup its job cgroups are in (taskrunner/escapes.py). When the pipe reaches end of file,
the runner has exited, even by SIGKILL or a crash (the kernel closes the pipe): every group
still listed, every process whose environment carries a token with that prefix and every
process in those cgroups (a job's group it was not told of yet, and what jobs left outside
their groups) gets SIGTERM and, GRACE seconds later, SIGKILL; then the cgroups are removed. So
a dead runner's job cannot overlap with its re-run, which starts a lease after the death at
the earliest; the runner keeps GRACE below the lease.

It also fences a runner that is alive but silent (paused by SIGSTOP, its event loop stalled, its
heartbeat unable to run): `sSILENCE:GRACE` turns that on (`s0` off), and the runner writes
`hTIME` after each heartbeat it sent (TIME: time.monotonic() when it was sent, the same clock
here). When no `h` came for SILENCE seconds after the latest TIME, every job group listed gets
SIGTERM and, GRACE seconds later, SIGKILL, exactly as on the runner's death; groups listed
while the silence lasts are stopped as they come. The runner picks SILENCE + GRACE below its
lease, so the groups are gone before any other runner may declare it lost (README, Reliability).
Before signalling them it writes `fPGID` for each on its stdout, for the runner to read when it
sees the job end (it hands such a job back rather than record a failure).

Standard library only and no taskrunner imports: it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field

POLL_S = 0.05


def start_time(pid: int) -> bytes:
    """The process's start time in clock ticks since boot (b"" when unknown): with the pid it
    names one process for good, whatever later reuses the number."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[19]
    except (OSError, IndexError):
        return b""


def signal_all(targets: set[int], signum: int) -> set[int]:
    """Send signum to each target (a negative number: a process group); those still alive."""
    alive = set()
    for target in targets:
        try:
            if target < 0:
                os.killpg(-target, signum)
            else:
                os.kill(target, signum)
        except (ProcessLookupError, PermissionError):
            continue
        alive.add(target)
    return alive


def stop_all(targets: set[int], grace_s: float) -> None:
    alive = signal_all(targets, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = signal_all(alive, 0)
    signal_all(alive, signal.SIGKILL)


@dataclass
class State:
    """What the runner told: what to stop, the grace, and its silence fencing."""

    grace_s: float
    # Process groups as negative numbers, single processes as positive ones, each with the
    # start time it was named with (single processes only).
    listed: dict[int, bytes] = field(default_factory=dict)
    silence_s: float = 0.0  # 0: no silence fencing
    silence_grace_s: float = 0.0
    heard_at: float = 0.0  # time.monotonic() of the latest heartbeat told
    escapes: dict[bytes, bytes] = field(default_factory=dict)  # b"m": token prefix, b"c": cgroup
    fenced_at: float = -1.0  # `heard_at` when the silence fence last came: once per silence

    def apply(self, line: bytes) -> None:
        text = line.strip()
        sign, kind = text[:1], text[1:2]
        number, _, stamp = (text[2:] if kind == b"p" else text[1:]).partition(b":")
        if sign == b"+" and kind in (b"m", b"c"):
            self.escapes[kind] = text[2:]
        elif sign in (b"+", b"-") and number.isdigit():
            target = int(number) if kind == b"p" else -int(number)
            if sign == b"+":
                self.listed[target] = stamp
            else:
                self.listed.pop(target, None)
        with contextlib.suppress(ValueError):
            if sign == b"g":
                self.grace_s = max(0.0, float(text[1:]))
            elif sign == b"h":
                self.heard_at = max(self.heard_at, float(text[1:]))
            elif sign == b"s":
                silence, _, grace = text[1:].partition(b":")
                self.silence_s, self.silence_grace_s = float(silence), float(grace or 0)
                self.heard_at = max(self.heard_at, time.monotonic())  # a new one counts from now

    def silent_for_s(self) -> float | None:
        """How long until the silence fence (<= 0: now); None when it cannot come."""
        if self.silence_s <= 0:
            return None
        # A job's group may not be told yet (the runner tells at the end of a loop iteration):
        # with jobs marked, every silence is fenced once, the survey finding them.
        unfenced = self.fenced_at != self.heard_at and self.escapes.keys() & {b"m", b"c"}
        if not unfenced and not any(t < 0 for t in self.listed):
            return None
        return self.heard_at + self.silence_s - time.monotonic()

    def fence(self) -> None:
        """The runner is silent: stop its job groups (not its single processes), those it told
        and those of its marked job processes, as on its death, and forget them."""
        self.fenced_at = self.heard_at
        listed = {t for t in self.listed if t < 0}
        for target in listed:
            del self.listed[target]
        live = live_groups()  # not a job that ended by itself, its runner too stalled to reap it
        groups = {t for t in listed if -t in live}
        marked = escaped_processes(self.escapes.get(b"m"), self.escapes.get(b"c"))
        groups |= {-pid for pid in marked if leads_group(pid)}
        if not groups:
            return
        with contextlib.suppress(OSError):  # first: the runner, asking once a group is gone, knows
            os.write(sys.stdout.fileno(), b"".join(b"f%d\n" % -t for t in groups))
        say(
            f"taskrunner watchdog: no heartbeat for {time.monotonic() - self.heard_at:.1f} s;"
            f" stopping {len(groups)} job process group(s) before the lease ends"
            f" (SIGTERM, SIGKILL after {self.silence_grace_s:g} s)"
        )
        stop_all(groups, self.silence_grace_s)


def live_groups() -> set[int]:
    """The process groups that have a member still running (a zombie does not count)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rpartition(b")")[2].split()
            except OSError:
                continue
            if fields[0] != b"Z":
                found.add(int(fields[2]))
    return found


def say(text: str) -> None:
    with contextlib.suppress(OSError):  # the runner's stderr may have gone with it
        print(text, file=sys.stderr, flush=True)


def read_lines(fd: int, state: State) -> None:
    """Apply the runner's lines until end of file, fencing when a silence is due: only once
    nothing is left to read (a heartbeat written before the moment always counts)."""
    pending = b""
    while True:
        due_s = state.silent_for_s()
        wait_s = None if due_s is None else max(0.0, due_s)
        if select.select([fd], [], [], wait_s)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                state.apply(line)
        elif due_s is not None and (state.silent_for_s() or 0.0) <= 0:
            state.fence()


def main(argv: list[str]) -> int:
    state = State(grace_s=float(argv[1]) if len(argv) > 1 else 1.0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the runner
    with contextlib.suppress(OSError):
        os.set_blocking(sys.stdout.fileno(), False)  # a runner not reading never holds us up
    read_lines(sys.stdin.fileno(), state)
    listed = state.listed
    groups = {t for t, stamp in listed.items() if t < 0 or start_time(t) == stamp}  # no reused pid
    escaped = escaped_processes(state.escapes.get(b"m"), state.escapes.get(b"c"))
    groups |= {-pid for pid in escaped if leads_group(pid)}  # one not told yet, or a daemon's
    escaped = outside(groups, escaped)
    if groups or escaped:  # the runner is gone: nobody will wait for these jobs or record them
        jobs, others = sum(t < 0 for t in groups), sum(t > 0 for t in groups)
        say(
            f"taskrunner watchdog: the runner exited with {jobs} job process group(s)"
            + (f" and {others} server process(es)" if others else "")
            + (f" and {len(escaped)} process(es) jobs left" if escaped else "")
            + f" running; stopping them (SIGTERM, SIGKILL after {state.grace_s:g} s)"
        )
        stop_all(groups | escaped, state.grace_s)
        # An environment read during an exec reads empty: one found only now goes at once.
        signal_all(escaped_processes(state.escapes.get(b"m"), None), signal.SIGKILL)
    if b"c" in state.escapes:
        remove_cgroups(state.escapes[b"c"])
    return 0


def escaped_processes(marker: bytes | None, cgroup: bytes | None) -> set[int]:
    """Processes of the runner's jobs, in their groups or not: those whose environment carries
    a job token that starts with `marker`, and those in the job cgroups below `cgroup`."""
    found: set[int] = set()
    if cgroup:
        for directory, _, _ in os.walk(cgroup):
            procs = os.path.join(directory, b"cgroup.procs")
            with contextlib.suppress(OSError, ValueError), open(procs, "rb") as fh:
                found.update(int(pid) for pid in fh.read().split())
    if marker:
        needle = b"\0TASKRUNNER_JOB_TOKEN=" + marker + b"-"
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                with contextlib.suppress(OSError), open(f"/proc/{entry}/environ", "rb") as fh:
                    if needle in b"\0" + fh.read():
                        found.add(int(entry))
    return found


def leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def outside(groups: set[int], pids: set[int]) -> set[int]:
    """The pids that are not in one of the process groups (negative numbers) of `groups`."""
    left = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if -os.getpgid(pid) not in groups:
                left.add(pid)
    return left


def remove_cgroups(root: bytes) -> None:
    """Kill what is left in the job cgroups and remove them (deepest first), and their parent."""
    with contextlib.suppress(OSError), open(os.path.join(root, b"cgroup.kill"), "wb") as fh:
        fh.write(b"1")
    deadline = time.monotonic() + 1.0
    for directory, _, _ in sorted(os.walk(root), key=lambda d: -len(d[0])):
        while True:
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError:  # EBUSY until its killed processes are gone
                if time.monotonic() >= deadline:
                    break
                time.sleep(POLL_S / 5)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
