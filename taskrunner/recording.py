"""Recording an attempt's end in Redis: its result fields, its final state, a write that lands.

``result_fields`` is what a finished attempt writes into the job's hash and ``final_state``
the state it ends in (retries and their intervals). ``persist`` retries a write until Redis
takes it, and gives up (``WriteAbandoned``) only when the runner stops with Redis away: the
job then stays owned by this runner and its lease expiry hands it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from taskrunner.aio import Backoff, wait_event
from taskrunner.errors import StoreUnavailable
from taskrunner.exec_result import ExecResult
from taskrunner.kingtask_result import result_hash, writes_result
from taskrunner.models import RPC, ChannelConfig, JobState
from taskrunner.store import Claimed

log = logging.getLogger("taskrunner.channel")

T = TypeVar("T")

LAST_TRY_S = 1.0  # how long a write abandoned by a stop still waits for its reply
FIRST_RETRY_S = 0.1  # a result or hand-back Redis refused: retried after this, then doubling


def result_fields(result: ExecResult, *, kind: str = "command") -> dict[str, str | bytes]:
    """The job-hash fields that describe one finished attempt (rpc: with `http_status`)."""
    fields: dict[str, str | bytes] = {
        "duration": f"{result.duration_s:.6f}",
        "exit_code": "" if result.exit_code is None else str(result.exit_code),
        "signal": "" if result.signal is None else str(result.signal),
        "pid": "" if result.pid is None else str(result.pid),
        "stdout": result.stdout,
        "stderr": result.stderr,
        "stdout_truncated": "1" if result.stdout_truncated else "0",
        "stderr_truncated": "1" if result.stderr_truncated else "0",
        "error": result.error or "",
    }
    if kind == RPC:
        fields["http_status"] = "" if result.http_status is None else str(result.http_status)
    return fields


def final_state(
    claimed: Claimed,
    result: ExecResult,
    *,
    config: ChannelConfig,
    cancelled: bool,
    refused: bool = False,
) -> tuple[JobState, float]:
    """The state an attempt ends the job in, and when a retry is due (0.0: not retried)."""
    if cancelled:
        return JobState.CANCELLED, 0.0
    if refused:
        return JobState.FAILED, 0.0
    if result.succeeded:
        return JobState.SUCCEEDED, 0.0
    job = claimed.job
    retries = config.retries if job.retries is None else job.retries
    intervals = job.retry_intervals or config.retry_intervals
    if claimed.attempt <= retries:
        index = min(claimed.attempt - 1, len(intervals) - 1)
        delay_s = intervals[index] if intervals else 0.0
        return JobState.RETRYING, time.time() + delay_s
    return (JobState.DEAD if retries > 0 else JobState.FAILED), 0.0


def kingtask_end(
    claimed: Claimed, fields: Mapping[str, str | bytes], state: JobState
) -> dict[str, str] | None:
    """kingtask's result hash `r_<uuid>` for a script or rpc job's final end; else None."""
    if not writes_result(claimed.job, state):
        return None
    return result_hash(claimed.job, fields, state=state, attempt=claimed.attempt)


class WriteAbandoned(Exception):
    """A job's end could not be written to Redis before the runner stopped."""


async def persist(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    abandon: asyncio.Event,
    extra: Mapping[str, Any],
) -> T:
    """Retry a Redis write until it lands: a finished job's outcome must not be lost.

    Gives up (WriteAbandoned) only once `abandon` is set: the runner is stopping, Redis is away.
    The job then stays owned by this runner in Redis, and its lease expiry hands it back."""
    backoff = Backoff(first_s=FIRST_RETRY_S)
    while True:
        try:
            return await _unless_abandoned(operation(), abandon)
        except StoreUnavailable as exc:
            if abandon.is_set():
                log.error(
                    "cannot %s: Redis unreachable (%s); another runner hands the job back"
                    " when this runner's lease expires", what, exc, extra=extra,
                )  # fmt: skip
                raise WriteAbandoned(what) from exc
            level = logging.DEBUG if backoff.failing else logging.WARNING  # once a write
            log.log(level, "cannot %s (%s); retrying until it lands", what, exc, extra=extra)
            await wait_event(abandon, backoff.next_delay_s())


async def _unless_abandoned(call: Awaitable[T], abandon: asyncio.Event) -> T:
    """Await `call`; if `abandon` is set first (a stop with Redis hung: no reply will come),
    cancel it and raise StoreUnavailable, which `persist` turns into WriteAbandoned."""
    task = asyncio.ensure_future(call)
    stop = asyncio.ensure_future(abandon.wait())
    try:
        await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not task.done():  # abandoned: a last moment for a reply on its way
        await asyncio.wait([task], timeout=LAST_TRY_S)
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise StoreUnavailable("no reply from Redis before the stop's deadline")
