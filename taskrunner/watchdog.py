"""A runner's watchdog: stops the process groups of its running jobs when the runner dies.

The runner starts this file as a small process of its own (`python -I -S watchdog.py GRACE`,
in a new session, so a signal to the runner's group does not reach it) with a pipe on its
stdin, and writes `+PGID` when a job's process group starts, `-PGID` once it is gone (both at
the end of the event-loop iteration, so a group that came and went within one is not mentioned),
`+pPID:START` and `-pPID` for a single process (the embedded Valkey; START is its start time from
/proc/PID/stat, so a reused pid is never signalled), and `gSECONDS` to change the grace. When
the pipe reaches end of file, the runner has exited, even by SIGKILL or a crash (the kernel
closes the pipe): every group still listed gets SIGTERM and, GRACE seconds later, SIGKILL. So a
dead runner's job cannot overlap with its re-run, which starts a lease after the death at the
earliest; the runner keeps GRACE below the lease.

Standard library only and no taskrunner imports: it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

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


def main(argv: list[str]) -> int:
    grace_s = float(argv[1]) if len(argv) > 1 else 1.0
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the runner
    # What to stop: process groups as negative numbers, single processes as positive ones,
    # each with the start time it was named with (single processes only).
    listed: dict[int, bytes] = {}
    for line in sys.stdin.buffer:
        text = line.strip()
        sign, kind = text[:1], text[1:2]
        number, _, stamp = (text[2:] if kind == b"p" else text[1:]).partition(b":")
        if sign in (b"+", b"-") and number.isdigit():
            target = int(number) if kind == b"p" else -int(number)
            if sign == b"+":
                listed[target] = stamp
            else:
                listed.pop(target, None)
        elif sign == b"g":
            with contextlib.suppress(ValueError):
                grace_s = max(0.0, float(text[1:]))
    groups = {t for t, stamp in listed.items() if t < 0 or start_time(t) == stamp}  # no reused pid
    if groups:  # the runner is gone: nobody will wait for these jobs or record them
        with contextlib.suppress(OSError):  # the runner's stderr may have gone with it
            jobs, others = sum(t < 0 for t in groups), sum(t > 0 for t in groups)
            print(
                f"taskrunner watchdog: the runner exited with {jobs} job process group(s)"
                + (f" and {others} server process(es)" if others else "")
                + f" running; stopping them (SIGTERM, SIGKILL after {grace_s:g} s)",
                file=sys.stderr,
                flush=True,
            )
        stop_all(groups, grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
