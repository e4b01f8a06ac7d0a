"""One channel in this process: claims jobs up to its worker count and runs each attempt."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from taskrunner.aio import wait_event
from taskrunner.errors import InvalidJob, SpawnError
from taskrunner.executor import ExecResult, ExecSpec, Execution
from taskrunner.jobs import ChannelConfig, Job, JobState
from taskrunner.store import CONNECTION_ERRORS, Claimed, Store

log = logging.getLogger("taskrunner.channel")

T = TypeVar("T")

# A running job is told why it is being stopped; these reasons decide what happens next.
DRAIN = "drain"  # runner stopping: hand the job back to its queue
FENCED = "fenced"  # another runner took the job over: record nothing
CANCELLED = "cancelled"  # a user cancelled it: final state `cancelled`
EARLY_CANCEL_S = 10.0  # how long a cancel for a job not (yet) running here is remembered


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecPolicy:
    """Runner-wide execution settings every channel shares."""

    runner_id: str
    shell: bool = False
    kill_grace_s: float = 5.0
    default_timeout_s: float = 0.0
    capture_bytes: int = 65536
    result_ttl_s: int = 86400
    task_mode: bool = True


class ChannelWorker:
    """Claims a channel's jobs while it has free slots; FIFO; at most `worker_count` at once."""

    def __init__(self, config: ChannelConfig, *, store: Store, policy: ExecPolicy) -> None:
        self.config = config
        self._store = store
        self._policy = policy
        self._wake = asyncio.Event()
        self._closed = False
        self._attempts: dict[str, asyncio.Task[None]] = {}
        self._executions: dict[str, Execution] = {}
        self._stop_reasons: dict[str, str] = {}
        self._early_cancels: dict[str, float] = {}
        self._abandon = asyncio.Event()
        self.abandoned_writes = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def running_count(self) -> int:
        return len(self._attempts)

    def running_job_ids(self) -> list[str]:
        return list(self._attempts)

    def update(self, config: ChannelConfig) -> None:
        if config != self.config:
            log.info(
                "channel %s updated: worker_count=%d distinct=%s paused=%s",
                config.name, config.worker_count, config.distinct, config.paused,
            )  # fmt: skip
            self.config = config
            self.wake()

    def wake(self) -> None:
        self._wake.set()

    def abandon_writes(self) -> None:
        """Stop retrying Redis writes of ending attempts (stopping with Redis away)."""
        self._abandon.set()

    def close(self) -> None:
        """Stop claiming; running attempts go on until they end or are terminated."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        backoff_s = 0.1
        while not self._closed:
            free = self.config.worker_count - len(self._attempts)
            if self.config.paused or free <= 0 or not self._policy.task_mode:
                await self._sleep(None)
                continue
            self._wake.clear()
            try:
                claimed = await self._store.claim(
                    self.name, count=free, runner_id=self._policy.runner_id
                )
            except CONNECTION_ERRORS as exc:
                log.warning(
                    "channel %s: cannot claim jobs (%s); retry in %.1f s", self.name, exc, backoff_s
                )
                await self._sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            backoff_s = 0.1
            for item in claimed:
                self._start(item)
            if len(claimed) < free:
                await self._sleep(5.0)  # a wake-up comes through pub/sub; this is a safety net

    async def _sleep(self, timeout_s: float | None) -> None:
        await wait_event(self._wake, timeout_s)
        self._wake.clear()

    def expect_cancel(self, job_id: str) -> None:
        """Remember a cancel that arrived before this runner saw its claim of the job."""
        now = time.monotonic()
        self._early_cancels = {
            j: t for j, t in self._early_cancels.items() if now - t < EARLY_CANCEL_S
        }
        self._early_cancels[job_id] = now

    def _start(self, claimed: Claimed) -> None:
        job_id = claimed.job.id
        if self._early_cancels.pop(job_id, None) is not None:
            self._stop_reasons[job_id] = CANCELLED
        task = asyncio.create_task(self._attempt(claimed), name=f"job:{job_id}")
        self._attempts[job_id] = task
        task.add_done_callback(lambda _t: self._attempt_done(job_id))

    def _attempt_done(self, job_id: str) -> None:
        self._attempts.pop(job_id, None)
        self._executions.pop(job_id, None)
        self._stop_reasons.pop(job_id, None)
        self._wake.set()

    def terminate(self, job_id: str, reason: str) -> bool:
        """Stop one running attempt (its whole process group); False if not running here."""
        if job_id not in self._attempts:
            return False
        self._stop_reasons.setdefault(job_id, reason)
        execution = self._executions.get(job_id)
        if execution is not None:
            execution.terminate(reason)
        return True

    def terminate_all(self, reason: str) -> int:
        return sum(self.terminate(job_id, reason) for job_id in list(self._attempts))

    async def wait_idle(self, timeout_s: float | None) -> bool:
        """Wait until no attempt runs; False if some still run at the deadline."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._attempts:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait(list(self._attempts.values()), timeout=remaining)
        return True

    # -- one attempt ----------------------------------------------------------------------

    async def _attempt(self, claimed: Claimed) -> None:
        job = claimed.job
        extra = {"job_id": job.id, "channel": job.channel, "attempt": claimed.attempt}
        if self._stop_reasons.get(job.id) == CANCELLED:
            await self._finish(claimed, _spawn_failure("cancelled before it started"))
            return
        try:
            spec = self._spec(job)
            execution = await Execution.start(spec)
        except (SpawnError, InvalidJob) as exc:
            log.warning("job %s cannot start: %s", job.id, exc, extra=extra)
            await self._finish(claimed, _spawn_failure(str(exc)))
            return
        self._executions[job.id] = execution
        reason = self._stop_reasons.get(job.id)
        if reason is not None:
            execution.terminate(reason)
        log.info(
            "job %s started: pid=%d %s",
            job.id,
            execution.pid,
            job.task,
            extra=extra | {"pid": execution.pid},
        )
        result = await execution.wait()
        await self._finish(claimed, result)

    def _spec(self, job: Job) -> ExecSpec:
        policy = self._policy
        timeout_s = job.timeout_s or self.config.timeout_s or policy.default_timeout_s
        return ExecSpec(
            argv=job.argv(shell=policy.shell),
            timeout_s=timeout_s,
            kill_grace_s=policy.kill_grace_s,
            capture_bytes=policy.capture_bytes,
        )

    async def _finish(self, claimed: Claimed, result: ExecResult) -> None:
        try:
            await self._write_end(claimed, result)
        except WriteAbandoned:
            self.abandoned_writes += 1

    async def _write_end(self, claimed: Claimed, result: ExecResult) -> None:
        job, reason = claimed.job, self._stop_reasons.get(claimed.job.id)
        extra = {
            "job_id": job.id,
            "channel": job.channel,
            "attempt": claimed.attempt,
            "pid": result.pid,
        }
        runner_id = self._policy.runner_id
        if reason == FENCED:
            log.warning("job %s stopped: another runner took it over", job.id, extra=extra)
            return
        if reason == DRAIN:
            handed = await _persist(
                lambda: self._store.hand_back(
                    runner_id=runner_id, job_id=job.id, channel=job.channel, reason=DRAIN
                ),
                what=f"hand back job {job.id}",
                abandon=self._abandon,
            )
            log.info(
                "job %s handed back to channel %s (drain)%s",
                job.id,
                job.channel,
                "" if handed else ": not handed back (taken over, or Redis unreachable)",
                extra=extra,
            )
            return
        state, due_at = self._outcome(claimed, result, cancelled=reason == CANCELLED)
        recorded = await _persist(
            lambda: self._store.finish(
                claimed,
                runner_id=runner_id,
                state=state,
                result=result_fields(result),
                result_ttl_s=self._policy.result_ttl_s,
                due_at=due_at,
            ),
            what=f"record the result of job {job.id}",
            abandon=self._abandon,
        )
        level = logging.INFO if result.succeeded else logging.WARNING
        log.log(
            level, "job %s %s: %s in %.3f s%s", job.id, state.value,
            "exit 0" if result.succeeded else result.error, result.duration_s,
            "" if recorded else " (not recorded: taken over, or Redis unreachable)", extra=extra,
        )  # fmt: skip

    def _outcome(
        self, claimed: Claimed, result: ExecResult, *, cancelled: bool
    ) -> tuple[JobState, float]:
        if cancelled:
            return JobState.CANCELLED, 0.0
        if result.succeeded:
            return JobState.SUCCEEDED, 0.0
        job = claimed.job
        retries = self.config.retries if job.retries is None else job.retries
        intervals = job.retry_intervals or self.config.retry_intervals
        if claimed.attempt <= retries:
            index = min(claimed.attempt - 1, len(intervals) - 1)
            delay_s = intervals[index] if intervals else 0.0
            return JobState.RETRYING, time.time() + delay_s
        return (JobState.DEAD if retries > 0 else JobState.FAILED), 0.0


def result_fields(result: ExecResult) -> dict[str, str | bytes]:
    """The job-hash fields that describe one finished attempt."""
    return {
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


def _spawn_failure(message: str) -> ExecResult:
    return ExecResult(
        pid=None, exit_code=None, signal=None, duration_s=0.0, stdout=b"", stderr=b"",
        stdout_truncated=False, stderr_truncated=False, kill_reason=None, error=message,
    )  # fmt: skip


class WriteAbandoned(Exception):
    """A job's end could not be written to Redis before the runner stopped."""


async def _persist(
    operation: Callable[[], Awaitable[T]], *, what: str, abandon: asyncio.Event
) -> T:
    """Retry a Redis write until it lands: a finished job's outcome must not be lost.

    Gives up (WriteAbandoned) only once `abandon` is set: the runner is stopping, Redis is away.
    The job then stays owned by this runner in Redis, and its lease expiry hands it back."""
    delay_s = 0.1
    while True:
        try:
            return await operation()
        except CONNECTION_ERRORS as exc:
            if abandon.is_set():
                log.error(
                    "cannot %s: Redis unreachable (%s); another runner hands the job back"
                    " when this runner's lease expires", what, exc,
                )  # fmt: skip
                raise WriteAbandoned(what) from exc
            log.warning("cannot %s (%s); retrying in %.1f s", what, exc, delay_s)
            await wait_event(abandon, delay_s)
            delay_s = min(delay_s * 2, 5.0)
