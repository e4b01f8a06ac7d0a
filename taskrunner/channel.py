"""One channel in this process: claims jobs up to its worker count and runs each attempt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp

from taskrunner.aio import Backoff, wait_event
from taskrunner.allow import check_program
from taskrunner.errors import (
    InvalidJob,
    NotAllowed,
    ResourceExhausted,
    SpawnError,
    StoreUnavailable,
)
from taskrunner.executor import ExecResult, ExecSpec, Execution
from taskrunner.guard import WATCHDOG
from taskrunner.kingtask import find_script
from taskrunner.metrics import ChannelMetrics
from taskrunner.models import RPC, SCRIPT, ChannelConfig, Job, JobState
from taskrunner.rpc import RpcCall, RpcSpec
from taskrunner.store import HANDED_BACK, Claimed, Store

log = logging.getLogger("taskrunner.channel")
output_log = logging.getLogger("taskrunner.output")  # jobs' output lines (channel log_output)

T = TypeVar("T")

# A running job is told why it is being stopped; these reasons decide what happens next.
DRAIN = "drain"  # runner stopping: hand the job back to its queue
FENCED = "fenced"  # another runner took the job over: record nothing
SILENCED = "silenced"  # the watchdog may have stopped it (heartbeat silent): hand it back
CANCELLED = "cancelled"  # a user cancelled it: final state `cancelled`
REFUSED = "refused"  # an allowlist refused its program: final state `failed`, no retry
EARLY_CANCEL_S = 10.0  # how long a cancel for a job not (yet) running here is remembered
LAST_TRY_S = 1.0  # how long a write abandoned by a stop still waits for its reply
SILENT_RECHECK_S = 0.1  # how often a channel looks whether its runner's heartbeat is back
OUTPUT_LOG_LINES = 200  # output lines logged per attempt at most (channel log_output)
FIRST_RETRY_S = 0.1  # a result or hand-back Redis refused: retried after this, then doubling
NO_RESOURCES_RETRY_S = 3.0  # a job that could not start for lack of resources starts this later


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
    bin_path: Path | None = None  # where script jobs' executables live (--bin-path)
    allow: tuple[str, ...] = ()  # --allow: the programs this runner runs (taskrunner.allow)


class Running(Protocol):
    """A started attempt: a process group (`Execution`) or an HTTP request (`RpcCall`)."""

    def terminate(self, reason: str) -> None: ...

    async def wait(self) -> ExecResult: ...


class ChannelWorker:
    """Claims a channel's jobs while it has free slots; FIFO; at most `worker_count` at once.

    `http` is the runner's client session for rpc jobs (None: rpc jobs fail to start);
    `metrics` the runner's series for this channel (None: counted nowhere)."""

    def __init__(
        self,
        config: ChannelConfig,
        *,
        store: Store,
        policy: ExecPolicy,
        http: aiohttp.ClientSession | None = None,
        metrics: ChannelMetrics | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self._policy = policy
        self._http = http
        self._metrics = ChannelMetrics.unregistered(config.name) if metrics is None else metrics
        self._wake = asyncio.Event()
        self._closed = False
        self._closing = asyncio.Event()  # set with _closed: a slot's rest ends
        self._attempts: dict[str, asyncio.Task[None]] = {}
        self._executions: dict[str, Running] = {}
        self._stop_reasons: dict[str, str] = {}
        self._early_cancels: dict[str, float] = {}
        self._abandon = asyncio.Event()
        self._ended: set[str] = set()  # attempts whose process (or request) ended: writing
        self.abandoned_writes = 0
        self.handed_back = 0  # started attempts stopped and handed back to their queue

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def running_count(self) -> int:
        return len(self._attempts)

    @property
    def process_count(self) -> int:
        """Attempts whose process (or request) still runs: not those writing their end."""
        return len(self._attempts) - len(self._ended)

    def running_job_ids(self) -> list[str]:
        return list(self._attempts)

    def update(self, config: ChannelConfig) -> None:
        if config != self.config:
            log.info(
                "channel %s updated: worker_count=%d distinct=%s paused=%s log_output=%s",
                config.name, config.worker_count, config.distinct, config.paused,
                config.log_output, extra={"channel": config.name},
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
        self._closing.set()
        self._wake.set()

    async def run(self) -> None:
        backoff = Backoff()
        while not self._closed:
            free = self.config.worker_count - len(self._attempts)
            if self.config.paused or free <= 0 or not self._policy.task_mode:
                await self._sleep(None)
                continue
            if WATCHDOG.silent():  # what started now the watchdog would stop: wait for a beat
                await self._sleep(SILENT_RECHECK_S)
                continue
            self._wake.clear()
            try:
                claimed = await self._store.claim(
                    self.name, count=free, runner_id=self._policy.runner_id
                )
            except StoreUnavailable as exc:
                if not backoff.failing:  # once an outage
                    self._metrics.claim_lost()
                    log.warning(
                        "channel %s: cannot claim jobs (%s); retrying with backoff", self.name,
                        exc, extra={"channel": self.name},
                    )  # fmt: skip
                await self._sleep(backoff.next_delay_s())
                continue
            if backoff.reset():
                log.info("channel %s: claiming again", self.name, extra={"channel": self.name})
            for item in claimed:
                await self._start_or_return(item)
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

    async def _start_or_return(self, claimed: Claimed) -> None:
        """Start a job just claimed; if the runner began to stop during the claim's round trip,
        put it back unstarted: first in its queue, its attempt not counted."""
        if not self._closed:
            self._start(claimed)
            return
        try:
            await self._hand_back(claimed, started=False)
        except WriteAbandoned:
            self.abandoned_writes += 1

    def _start(self, claimed: Claimed) -> None:
        job_id = claimed.job.id
        self._stop_reasons.pop(job_id, None)  # an attempt handed back here may still be ending
        if self._early_cancels.pop(job_id, None) is not None:
            self._stop_reasons[job_id] = CANCELLED
        task = asyncio.create_task(self._attempt(claimed), name=f"job:{job_id}")
        self._attempts[job_id] = task
        task.add_done_callback(lambda done: self._attempt_done(claimed, done))

    def _attempt_done(self, claimed: Claimed, task: asyncio.Task[None]) -> None:
        job_id = claimed.job.id
        if self._attempts.get(job_id) is task:  # (not when the job runs here again already)
            del self._attempts[job_id]
            self._ended.discard(job_id)
            self._executions.pop(job_id, None)
            self._stop_reasons.pop(job_id, None)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error(
                "job %s: internal error in its attempt: %r; if still ours, the audit hands it back",
                job_id, exc, exc_info=exc, extra=_context(claimed),
            )  # fmt: skip

    def terminate(self, job_id: str, reason: str) -> bool:
        """Stop one running attempt (process group or request); False if not running here, or
        if its process already ended (its end is being written)."""
        if job_id not in self._attempts or job_id in self._ended:
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
        extra = _context(claimed)
        if self._stop_reasons.get(job.id) == CANCELLED:
            await self._finish(claimed, _spawn_failure("cancelled before it started"))
            return
        try:
            running = await self._launch(job, extra)
        except NotAllowed as exc:  # the channel's allowlist may have changed since it was queued
            log.warning("job %s refused, not retried: %s", job.id, exc, extra=extra)
            self._stop_reasons[job.id] = REFUSED
            await self._finish(claimed, _spawn_failure(f"refused at run time: {exc}"))
            return
        except ResourceExhausted as exc:  # descriptors, processes or memory: for a while
            await self._put_off(claimed, str(exc), extra)
            return
        except (SpawnError, InvalidJob) as exc:
            log.warning("job %s cannot start: %s", job.id, exc, extra=extra)
            await self._finish(claimed, _spawn_failure(str(exc)))
            return
        self._executions[job.id] = running
        reason = self._stop_reasons.get(job.id)
        if reason is not None:
            running.terminate(reason)
        self._metrics.started(latency_s=time.time() - claimed.due_at)
        pid = running.pid if isinstance(running, Execution) else None
        extra["pid"] = pid
        log.info(
            "job %s started: %s%s", job.id, "" if pid is None else f"pid={pid} ", job.task,
            extra=extra,
        )  # fmt: skip
        result = _judge(job, await running.wait())
        if isinstance(running, Execution) and WATCHDOG.fenced(running.pid):
            self._stop_reasons.setdefault(job.id, SILENCED)  # its end is the fence's doing
        self._metrics.ran(duration_s=result.duration_s, timed_out=result.kill_reason == "timeout")
        if self.config.log_output:
            _log_output(result, extra)
        await self._finish(claimed, result)

    async def _launch(self, job: Job, extra: Mapping[str, Any]) -> Running:
        """Start the attempt; never suspends once started, so no stop can slip in between."""
        if job.kind == RPC:
            if self._http is None:
                raise SpawnError(f"rpc job {job.id} cannot start: this runner has no HTTP client")
            return RpcCall.start(self._rpc_spec(job, extra), session=self._http)
        return await Execution.start(self._spec(job))

    async def _put_off(self, claimed: Claimed, error: str, extra: dict[str, Any]) -> None:
        """The attempt could not start for lack of resources: the job waits in Redis
        NO_RESOURCES_RETRY_S, its attempt not counted, and this slot rests as long (the next
        job would most likely fail the same way)."""
        job = claimed.job
        try:
            outcome = await _persist(
                lambda: self._store.defer(
                    claimed, runner_id=self._policy.runner_id, delay_s=NO_RESOURCES_RETRY_S,
                    reason=f"not started: {error}",
                ),
                what=f"put back job {job.id}", abandon=self._abandon, extra=extra,
            )  # fmt: skip
        except WriteAbandoned:
            self.abandoned_writes += 1
            return
        if outcome == "cancel_requested":
            self._stop_reasons[job.id] = CANCELLED
            await self._finish(claimed, _spawn_failure(error))
            return
        if outcome:
            log.warning(
                "job %s put back, to start in %g s (not counted as an attempt): %s",
                job.id, NO_RESOURCES_RETRY_S, error, extra=extra,
            )  # fmt: skip
        else:
            log.warning("job %s not started (%s): another runner took it over", job.id, error,
                        extra=extra)  # fmt: skip
        await wait_event(self._closing, NO_RESOURCES_RETRY_S)

    def _timeout_s(self, job: Job) -> float:
        return job.timeout_s or self.config.timeout_s or self._policy.default_timeout_s

    def _spec(self, job: Job) -> ExecSpec:
        policy = self._policy
        if job.kind == SCRIPT:  # checked again at run time: the file may be gone or changed
            program = find_script(policy.bin_path, job.task)
            argv, cwd = (str(program), *(job.args or ())), str(program.parent)
        else:
            argv, cwd = job.argv(shell=policy.shell), None
        check_program(
            argv[0], runner=policy.allow, channel=self.config.allow, channel_name=self.name
        )
        return ExecSpec(
            argv=argv,
            cwd=cwd,
            job_id=job.id,
            timeout_s=self._timeout_s(job),
            kill_grace_s=policy.kill_grace_s,
            capture_bytes=policy.capture_bytes,
        )

    def _rpc_spec(self, job: Job, extra: Mapping[str, Any]) -> RpcSpec:
        if not job.method or not job.url:
            raise InvalidJob(f"rpc job {job.id} has no method or url: submit it again")
        return RpcSpec(
            method=job.method,
            url=job.url,
            body=job.body,
            timeout_s=self._timeout_s(job),
            capture_bytes=self._policy.capture_bytes,
            log_context=dict(extra),
        )

    async def _finish(self, claimed: Claimed, result: ExecResult) -> None:
        self._ended.add(claimed.job.id)
        try:
            await self._write_end(claimed, result)
        except WriteAbandoned:
            self.abandoned_writes += 1

    async def _write_end(self, claimed: Claimed, result: ExecResult) -> None:
        job, reason = claimed.job, self._stop_reasons.get(claimed.job.id)
        extra = _context(claimed, pid=result.pid)
        runner_id = self._policy.runner_id
        if reason == FENCED:
            log.warning("job %s stopped: another runner took it over", job.id, extra=extra)
            return
        if reason in (DRAIN, SILENCED):
            await self._hand_back(claimed, started=True, reason=reason)
            return
        state, due_at = self._outcome(
            claimed, result, cancelled=reason == CANCELLED, refused=reason == REFUSED
        )
        recorded, successors = await _persist(
            lambda: self._store.finish(
                claimed,
                runner_id=runner_id,
                state=state,
                result=result_fields(result, kind=job.kind),
                result_ttl_s=self._policy.result_ttl_s,
                due_at=due_at,
                claim_next=self._free_after(job.id),
            ),
            what=f"record the result of job {job.id}",
            abandon=self._abandon,
            extra=extra,
        )
        if recorded:
            self._metrics.ended(state)
        for item in successors:  # claimed with the result: no extra round trip per job
            await self._start_or_return(item)
        level = logging.INFO if result.succeeded else logging.WARNING
        log.log(
            level, "job %s %s: %s in %.3f s%s", job.id, state.value,
            "ok" if result.succeeded else result.error, result.duration_s,
            "" if recorded else " (not recorded: another runner took the job over)", extra=extra,
        )  # fmt: skip

    async def _hand_back(self, claimed: Claimed, *, started: bool, reason: str = DRAIN) -> None:
        job, extra = claimed.job, _context(claimed)
        outcome = await _persist(
            lambda: self._store.hand_back(
                runner_id=self._policy.runner_id,
                job_id=job.id,
                channel=job.channel,
                reason=reason,
                started=started,
                result_ttl_s=self._policy.result_ttl_s,
            ),
            what=f"hand back job {job.id}",
            abandon=self._abandon,
            extra=extra,
        )
        if outcome == HANDED_BACK:
            self.handed_back += started
            log.info(
                "job %s handed back to channel %s (%s)%s",
                job.id, job.channel, reason,
                "" if started else ": claimed as the runner stopped, never started",
                extra=extra,
            )  # fmt: skip
        elif outcome:
            log.info("job %s ended %s: it was cancelled while it ran", job.id, outcome, extra=extra)
        else:
            log.warning("job %s not handed back: another runner took it over", job.id, extra=extra)

    def _free_after(self, job_id: str) -> int:
        """Slots free once this attempt ends, if this channel may claim now (else 0)."""
        if self._closed or self.config.paused or not self._policy.task_mode or WATCHDOG.silent():
            return 0
        busy = len(self._attempts) - (job_id in self._attempts)
        return max(0, self.config.worker_count - busy)

    def _outcome(
        self, claimed: Claimed, result: ExecResult, *, cancelled: bool, refused: bool = False
    ) -> tuple[JobState, float]:
        if cancelled:
            return JobState.CANCELLED, 0.0
        if refused:
            return JobState.FAILED, 0.0
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


def _judge(job: Job, result: ExecResult) -> ExecResult:
    """kingtask's rule for scripts: output on stderr is a failure, even with exit code 0."""
    if job.kind == SCRIPT and result.succeeded and result.stderr:
        return replace(
            result, error="wrote to stderr: a script reports failure there (kingtask's rule)"
        )
    return result


def _context(claimed: Claimed, *, pid: int | None = None) -> dict[str, Any]:
    """A job's fields for log records (`extra=`): job_id, channel, attempt and pid if known."""
    context: dict[str, Any] = {
        "job_id": claimed.job.id,
        "channel": claimed.job.channel,
        "attempt": claimed.attempt,
    }
    if pid is not None:
        context["pid"] = pid
    return context


def _log_output(result: ExecResult, extra: Mapping[str, Any]) -> None:
    """Log an attempt's captured output, one record per line, OUTPUT_LOG_LINES at most."""
    job_id, left = extra["job_id"], OUTPUT_LOG_LINES
    streams = (
        ("stdout", result.stdout, result.stdout_truncated),
        ("stderr", result.stderr, result.stderr_truncated),
    )
    for stream, data, truncated in streams:
        lines = data.decode("utf-8", "replace").splitlines()
        context = {**extra, "stream": stream}
        for line in lines[:left]:
            output_log.info("job %s %s: %s", job_id, stream, line, extra=context)
        notes = []
        if len(lines) > left:
            skipped = len(lines) - left
            notes.append(
                f"{skipped} more line(s) not logged: {OUTPUT_LOG_LINES} lines a job at most"
            )
        if truncated:
            notes.append("the middle of the output was not captured")
        if notes:
            output_log.info("job %s %s: [%s]", job_id, stream, "; ".join(notes), extra=context)
        left = max(0, left - len(lines))


def _spawn_failure(message: str) -> ExecResult:
    return ExecResult(
        pid=None, exit_code=None, signal=None, duration_s=0.0, stdout=b"", stderr=b"",
        stdout_truncated=False, stderr_truncated=False, kill_reason=None, error=message,
    )  # fmt: skip


class WriteAbandoned(Exception):
    """A job's end could not be written to Redis before the runner stopped."""


async def _persist(
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
    cancel it and raise StoreUnavailable, which `_persist` turns into WriteAbandoned."""
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
