"""The embedded Valkey server as a process: is it still the process a pid was recorded for,
does its port answer PING, and stopping it (SIGTERM, which flushes its AOF, then SIGKILL).

`embedded.EmbeddedRedis` decides when to attach, start or stop; this module only probes and
signals, without the state file, the data dir or its lock. Linux: start times come from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Literal

HOST = "127.0.0.1"
STOP_TIMEOUT_S = 10.0  # SIGTERM, then SIGKILL after this long
PING_TIMEOUT_S = 1.0

Answer = Literal["ready", "loading", "silent"]


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class ServerState:
    """What DIR/embedded.json records of the server running on DIR. `started` is the process's
    start time (clock ticks after boot, from /proc): a pid reused by another process differs."""

    pid: int
    port: int
    started: int

    def alive(self) -> bool:
        """True while the recorded process runs (the same one: its start time matches)."""
        return start_time(self.pid) == self.started


def bindable(port: int) -> bool:
    """True if nothing listens on `port` of HOST now (a new server could bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def ping(port: int) -> Answer:
    """PING the server on `port`: 'ready' (PONG), 'loading' (LOADING its data), or 'silent'."""
    try:
        with socket.create_connection((HOST, port), timeout=PING_TIMEOUT_S) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return "silent"
    if reply.startswith(b"+PONG"):
        return "ready"
    return "loading" if reply.startswith(b"-LOADING") else "silent"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks after boot (/proc/PID/stat field 22), or None
    when no such process runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
    except OSError:
        return None
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def terminate(state: ServerState, process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (the server flushes its AOF and exits), SIGKILL after STOP_TIMEOUT_S."""
    for signum, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        if not state.alive():
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signum)
        until = time.monotonic() + wait_s
        while state.alive() and time.monotonic() < until:
            if process is not None:
                process.poll()  # our child: reap it, or it stays a zombie
            time.sleep(0.02)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1.0)
