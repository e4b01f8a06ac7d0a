"""Run one rpc job: an HTTP request; a 2xx answer is success, its body is the job's output.

An `RpcCall` behaves like an `executor.Execution` towards a channel: `terminate(reason)` stops
it (the request's task is cancelled), a timeout stops it with reason "timeout", and `wait()`
returns an `ExecResult` (pid and exit code None, `http_status` set when an answer came).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from taskrunner.exec_result import ExecResult

log = logging.getLogger("taskrunner.rpc")

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcSpec:
    """What to call and how long to wait for it (0 = no limit)."""

    method: str
    url: str
    body: str | None = None
    timeout_s: float = 0.0
    capture_bytes: int = 65536
    log_context: Mapping[str, Any] = field(default_factory=dict)  # `extra=` of its log records


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    reason: str
    body: bytes
    truncated: bool


def new_session() -> aiohttp.ClientSession:
    """The runner's one HTTP client for rpc jobs: no cookies kept between jobs, no client-side
    limit on time (each call has its job's timeout) or on connections (channels limit those)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )


class RpcCall:
    """One started request."""

    def __init__(self, spec: RpcSpec, task: asyncio.Task[_Answer]) -> None:
        self._spec = spec
        self._task = task
        self._started_at = time.monotonic()
        self._ended_at = self._started_at
        self._kill_reason: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        task.add_done_callback(self._on_done)

    @classmethod
    def start(cls, spec: RpcSpec, *, session: aiohttp.ClientSession) -> RpcCall:
        task = asyncio.get_running_loop().create_task(
            _request(session, spec), name=f"rpc:{spec.method} {spec.url[:100]}"
        )
        call = cls(spec, task)
        if spec.timeout_s > 0:
            call._timer = asyncio.get_running_loop().call_later(spec.timeout_s, call._on_timeout)
        return call

    def terminate(self, reason: str) -> None:
        """Cancel the request; idempotent. The first reason is kept unless it had ended."""
        if self._task.done():
            return
        if self._kill_reason is None:
            self._kill_reason = reason
        self._task.cancel()

    async def wait(self) -> ExecResult:
        """Wait for the answer (or the stop); cancelling the caller cancels the request too."""
        try:
            await asyncio.wait([self._task])
        except asyncio.CancelledError:
            self.terminate("cancelled")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([self._task])
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()
        return self._result()

    def _on_timeout(self) -> None:
        spec = self._spec
        log.info(
            "%s %s timed out after %s s", spec.method, spec.url, spec.timeout_s,
            extra=spec.log_context,
        )  # fmt: skip
        self.terminate("timeout")

    def _on_done(self, task: asyncio.Task[_Answer]) -> None:
        self._ended_at = time.monotonic()
        if not task.cancelled():
            task.exception()  # retrieved here: wait() may have been cancelled and never look

    def _result(self) -> ExecResult:
        answer, error = None, None
        if self._task.cancelled():
            error = (
                f"timed out after {self._spec.timeout_s} s"
                if self._kill_reason == "timeout"
                else f"terminated ({self._kill_reason})"
            )
        elif (exc := self._task.exception()) is not None:
            error = _failure_text(self._spec, exc)
        else:
            answer = self._task.result()
            if not 200 <= answer.status < 300:
                error = f"HTTP {answer.status} {answer.reason}: the server did not answer 2xx"
        return ExecResult(
            pid=None,
            exit_code=None,
            signal=None,
            duration_s=self._ended_at - self._started_at,
            stdout=b"" if answer is None else answer.body,
            stderr=b"",
            stdout_truncated=answer is not None and answer.truncated,
            stderr_truncated=False,
            kill_reason=self._kill_reason if self._task.cancelled() else None,
            error=error,
            http_status=None if answer is None else answer.status,
        )


async def _request(session: aiohttp.ClientSession, spec: RpcSpec) -> _Answer:
    async with session.request(spec.method, spec.url, **_payload(spec)) as resp:
        body, truncated = await _read_capped(resp.content, spec.capture_bytes)
        return _Answer(resp.status, resp.reason or "", body, truncated)


def _payload(spec: RpcSpec) -> dict[str, Any]:
    """kingtask's `args`: the request's body as given, for every method (a GET's too), typed
    application/json, as kingtask's worker sends it (the-no/kingtask worker/worker.go)."""
    if not spec.body:
        return {}
    return {"data": spec.body.encode(), "headers": JSON_HEADERS}


async def _read_capped(stream: aiohttp.StreamReader, cap_bytes: int) -> tuple[bytes, bool]:
    """The first `cap_bytes` of the body, and whether there was more (not read further)."""
    data = bytearray()
    while len(data) <= cap_bytes:
        chunk = await stream.read(cap_bytes + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data[:cap_bytes]), len(data) > cap_bytes


def _failure_text(spec: RpcSpec, exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        what = f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
        return f"{spec.method} {spec.url} failed: {what}: check the URL and that its server is up"
    detail = str(exc) or type(exc).__name__
    return f"{spec.method} {spec.url} failed: {type(exc).__name__}: {detail}"
