"""One channel in this process: claims jobs up to its worker count and runs each attempt.

The `ChannelWorker` keeps the claim loop, the bookkeeping of its running attempts (stop reasons,
early cancels, terminate) and the writing of each end: recorded, put off or handed back.
Starting an attempt is taskrunner/attempt.py's; the Redis writes that must land and the fields
they write are taskrunner/recording.py's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

from taskrunner.aio import Backoff, wait_event
from taskrunner.attempt import ExecPolicy, Running, context, judge, launch, log_output
from taskrunner.errors import (
    InvalidJob,
    NotAllowed,
    ResourceExhausted,
    SpawnError,
    StoreUnavailable,
)
from taskrunner.exec_result import ExecResult, not_started
from taskrunner.executor import Execution
from taskrunner.guard import WATCHDOG
from taskrunner.metrics import ChannelMetrics
from taskrunner.models import ChannelConfig
from taskrunner.recording import (
    WriteAbandoned,
    final_state,
    kingtask_end,
    persist,
    result_fields,
)
from taskrunner.store import HANDED_BACK, Claimed, Store

log = logging.getLogger("taskrunner.channel")

# A running job is told why it is being stopped; these reasons decide what happens next.
DRAIN = "drain"  # runner stopping: hand the job back to its queue
FENCED = "fenced"  # another runner took the job over: record nothing
SILENCED = "silenced"  # the watchdog may have stopped it (heartbeat silent): hand it back
CANCELLED = "cancelled"  # a user cancelled it: final state `cancelled`
REFUSED = "refused"  # an allowlist refused its program: final state `failed`, no retry
EARLY_CANCEL_S = 10.0  # how long a cancel for a job not (yet) running here is remembered
SILENT_RECHECK_S = 0.1  # how often a channel looks whether its runner's heartbeat is back
NO_RESOURCES_RETRY_S = 3.0  # a job that could not start for lack of resources starts this later


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
                job_id, exc, exc_info=exc, extra=context(claimed),
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
        extra = context(claimed)
        if self._stop_reasons.get(job.id) == CANCELLED:
            await self._finish(claimed, not_started("cancelled before it started"))
            return
        try:
            running = await launch(
                job, config=self.config, policy=self._policy, http=self._http, extra=extra
            )
        except NotAllowed as exc:  # the channel's allowlist may have changed since it was queued
            log.warning("job %s refused, not retried: %s", job.id, exc, extra=extra)
            self._stop_reasons[job.id] = REFUSED
            await self._finish(claimed, not_started(f"refused at run time: {exc}"))
            return
        except ResourceExhausted as exc:  # descriptors, processes or memory: for a while
            await self._put_off(claimed, str(exc), extra)
            return
        except (SpawnError, InvalidJob) as exc:
            log.warning("job %s cannot start: %s", job.id, exc, extra=extra)
            await self._finish(claimed, not_started(str(exc)))
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
        result = judge(job, await running.wait())
        if isinstance(running, Execution) and WATCHDOG.fenced(running.pid):
            self._stop_reasons.setdefault(job.id, SILENCED)  # its end is the fence's doing
        self._metrics.ran(duration_s=result.duration_s, timed_out=result.kill_reason == "timeout")
        if self.config.log_output:
            log_output(result, extra)
        await self._finish(claimed, result)

    async def _put_off(self, claimed: Claimed, error: str, extra: dict[str, Any]) -> None:
        """The attempt could not start for lack of resources: the job waits in Redis
        NO_RESOURCES_RETRY_S, its attempt not counted, and this slot rests as long (the next
        job would most likely fail the same way)."""
        job = claimed.job
        try:
            outcome = await persist(
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
            await self._finish(claimed, not_started(error))
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

    async def _finish(self, claimed: Claimed, result: ExecResult) -> None:
        self._ended.add(claimed.job.id)
        try:
            await self._write_end(claimed, result)
        except WriteAbandoned:
            self.abandoned_writes += 1

    async def _write_end(self, claimed: Claimed, result: ExecResult) -> None:
        job, reason = claimed.job, self._stop_reasons.get(claimed.job.id)
        extra = context(claimed, pid=result.pid)
        runner_id = self._policy.runner_id
        if reason == FENCED:
            log.warning("job %s stopped: another runner took it over", job.id, extra=extra)
            return
        if reason in (DRAIN, SILENCED):
            await self._hand_back(claimed, started=True, reason=reason)
            return
        state, due_at = final_state(
            claimed,
            result,
            config=self.config,
            cancelled=reason == CANCELLED,
            refused=reason == REFUSED,
        )
        fields = result_fields(result, kind=job.kind)
        recorded, successors = await persist(
            lambda: self._store.finish(
                claimed,
                runner_id=runner_id,
                state=state,
                result=fields,
                result_ttl_s=self._policy.result_ttl_s,
                due_at=due_at,
                claim_next=self._free_after(job.id),
                kingtask=kingtask_end(claimed, fields, state),
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
        job, extra = claimed.job, context(claimed)
        outcome = await persist(
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
