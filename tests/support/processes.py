"""Processes seen from tests: the project's scripts (scripts/bench, scripts/chaos) run as the
executables run them, and what a process is connected to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ESTABLISHED = "01"  # a TCP state in /proc/PID/net/tcp


def run_script(name: str, *args: str, timeout_s: float) -> tuple[int, str, str]:
    """Run `python -m scripts.NAME` from the project root with this interpreter, as the
    executable scripts/NAME does: (exit code, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", f"scripts.{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def connected_to(pid: int, port: int) -> bool:
    """Whether process `pid` holds an established TCP connection to 127.0.0.1:`port` (read
    from /proc): a runner waiting on a paused Redis is in its Redis call once this holds."""
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = set()
    for fd in fd_dir.iterdir() if fd_dir.exists() else ():
        try:
            target = os.readlink(fd)
        except OSError:  # closed since we listed it
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].rpartition(":")[2], 16)
        if remote_port == port and fields[3] == ESTABLISHED and fields[9] in inodes:
            return True
    return False


def catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` installed (SigCgt in /proc/PID/status), so
    a test sends a stop signal only once the program can act on it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False
