"""How one attempt ended: ``ExecResult``, and how an exit code or a signal is put in words.

Both kinds of attempt end with one: a process group (taskrunner/executor.py) and an rpc job's
HTTP request (taskrunner/rpc.py); an attempt that never started gets ``not_started``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass


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


def exit_error(code: int, kill_reason: str | None, *, timeout_s: float) -> str | None:
    """The error of an attempt that ran: why it was stopped, or how it exited (None: ok)."""
    if kill_reason == "timeout":
        return f"timed out after {timeout_s} s"
    if kill_reason is not None:
        return f"terminated ({kill_reason})"
    if code < 0:
        return f"killed by signal {-code} ({describe_signal(-code)})"
    if code != 0:
        return f"exit code {code}"
    return None


def not_started(error: str) -> ExecResult:
    """The result of an attempt that never started: `error` says why."""
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
