"""A runner's watchdog: stops the process groups of its running jobs when the runner dies.

The runner starts this file as a small process of its own (`python -I -S watchdog.py GRACE`,
in a new session, so a signal to the runner's group does not reach it) with a pipe on its
stdin, and writes `+PGID` when a job's process group starts, `-PGID` once it is gone, and
`gSECONDS` to change the grace. When
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


def signal_groups(groups: set[int], signum: int) -> set[int]:
    """Send signum to each group; the groups that still exist."""
    alive = set()
    for pgid in groups:
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            continue
        alive.add(pgid)
    return alive


def stop_groups(groups: set[int], grace_s: float) -> None:
    alive = signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = signal_groups(alive, 0)
    signal_groups(alive, signal.SIGKILL)


def main(argv: list[str]) -> int:
    grace_s = float(argv[1]) if len(argv) > 1 else 1.0
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the runner
    groups: set[int] = set()
    for line in sys.stdin.buffer:
        text = line.strip()
        if text[:1] == b"+" and text[1:].isdigit():
            groups.add(int(text[1:]))
        elif text[:1] == b"-" and text[1:].isdigit():
            groups.discard(int(text[1:]))
        elif text[:1] == b"g":
            with contextlib.suppress(ValueError):
                grace_s = max(0.0, float(text[1:]))
    if groups:  # the runner is gone: nobody will wait for these jobs or record them
        with contextlib.suppress(OSError):  # the runner's stderr may have gone with it
            print(
                f"taskrunner watchdog: the runner exited with {len(groups)} job process"
                f" group(s) running; stopping them (SIGTERM, SIGKILL after {grace_s:g} s)",
                file=sys.stderr,
                flush=True,
            )
        stop_groups(groups, grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
