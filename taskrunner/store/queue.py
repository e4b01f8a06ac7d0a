"""A job's way through Redis: messages taken from the prepare queue, jobs admitted (enqueue),
claimed, finished, handed back, deferred, cancelled, and scheduled ones queued once due."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from taskrunner.models import Job, JobState
from taskrunner.store.base import ScriptCall, StoreBase
from taskrunner.store.kingtask import kingtask_result_call
from taskrunner.store.records import (
    CLAIM_FIELDS,
    DEAD_LETTER_RAW_BYTES,
    HANDED_BACK,
    Admission,
    Claimed,
    TakenMessages,
    as_bytes,
    claimed_jobs,
    text,
)

TAKE_BATCH_BYTES: Final = 1024 * 1024  # messages taken in one round trip stop past this size
# How many ended jobs each channel's recent index keeps (records themselves expire by TTL).
RECENT_CAP: Final = 10000


class QueueOps(StoreBase):
    """Store operations along a job's way through the queues (see the module)."""

    async def take_message(self, runner_id: str, *, timeout_s: float) -> bytes | None:
        """Move the oldest prepare-queue message into this runner's in-flight list."""
        raw = await self.redis.blmove(
            self.keys.prepare_queue,
            self.keys.prepare_inflight(runner_id),
            timeout_s,  # type: ignore[arg-type]  # Redis takes fractional seconds
            "RIGHT",
            "LEFT",
        )
        return None if raw is None else as_bytes(raw)

    async def take_messages(
        self,
        runner_id: str,
        *,
        count: int,
        max_bytes: int,
        dead_letter_cap: int,
        batch_bytes: int = TAKE_BATCH_BYTES,
    ) -> TakenMessages:
        """Up to `count` messages to route, no blocking: those already in this runner's in-flight
        list (a take whose reply was lost left them there), then waiting ones moved into it.
        A message over `max_bytes` is dead-lettered inside Redis (its first bytes and its size
        kept) and only its size comes back: a runner never reads one whole. The batch stops
        after the message that brings it to `batch_bytes`."""
        k = self.keys
        messages, refused = await self._run(
            "take_batch",
            [k.prepare_queue, k.prepare_inflight(runner_id), k.dead_letters, k.stats],
            [
                count, max_bytes, DEAD_LETTER_RAW_BYTES, round(time.time(), 3), dead_letter_cap,
                k.dead_letter_events, batch_bytes,
            ],
        )  # fmt: skip
        return TakenMessages([as_bytes(m) for m in messages], [int(size) for size in refused])

    async def inflight_messages(self, runner_id: str) -> list[bytes]:
        """Messages taken by this runner and not yet routed (oldest first)."""
        items = await self.redis.lrange(self.keys.prepare_inflight(runner_id), 0, -1)
        return [as_bytes(item) for item in reversed(items)]

    async def restore_inflight(self, runner_id: str) -> int:
        """Hand a runner's unrouted messages back to the head of the prepare queue."""
        source, target = self.keys.prepare_inflight(runner_id), self.keys.prepare_queue
        moved = 0
        while await self.redis.lmove(source, target, "LEFT", "RIGHT") is not None:
            moved += 1
        return moved

    async def enqueue(
        self, job: Job, *, runner_id: str, raw: bytes = b"", now: float | None = None
    ) -> Admission:
        """Admit a job atomically (dedup, idempotent id); drop `raw` from in-flight if given.

        Enqueues made in the same event-loop turn (concurrent HTTP requests) share one round
        trip."""
        status, job_id = await self._coalesced(self._enqueue_call(job, runner_id, raw, now))
        return Admission(text(status), text(job_id))

    async def enqueue_many(
        self, items: Sequence[tuple[Job, bytes]], *, runner_id: str
    ) -> list[Admission]:
        """`enqueue` for each (job, raw message), in one round trip."""
        now = time.time()
        replies = await self._run_many(
            [self._enqueue_call(job, runner_id, raw, now) for job, raw in items]
        )
        return [Admission(text(status), text(job_id)) for status, job_id in replies]

    def _enqueue_call(
        self, job: Job, runner_id: str, raw: bytes, now: float | None
    ) -> tuple[str, list[Any], list[Any]]:
        now = time.time() if now is None else now
        due_ms = int(job.run_at * 1000) if job.run_at is not None and job.run_at > now else 0
        k, ch = self.keys, job.channel
        fields = [item for pair in job.to_record().items() for item in pair]
        return (
            "enqueue",
            [
                k.channels, k.job(job.id), k.queue(ch), k.scheduled(ch), k.distinct(ch),
                k.stats, k.prepare_inflight(runner_id), k.job_index, k.channel_job_index(ch),
                k.index_sweep,
            ],
            [
                ch, job.id, job.effective_dedup_key(), raw, due_ms, k.job_prefix,
                k.wake_events, k.schedule_events, k.job_events, *fields,
            ],
        )  # fmt: skip

    async def claim(self, channel: str, *, count: int, runner_id: str) -> list[Claimed]:
        """Take up to `count` queued jobs; none while the runner is declared dead."""
        return claimed_jobs(await self._run(*self._claim_call(channel, count, runner_id)))

    def _claim_call(self, channel: str, count: int, runner_id: str) -> ScriptCall:
        k = self.keys
        return (
            "claim",
            [k.queue(channel), k.runner_jobs(runner_id), k.running(channel), k.runners],
            [count, runner_id, k.job_events, k.job_prefix, *CLAIM_FIELDS],
        )

    async def finish(
        self,
        claimed: Claimed,
        *,
        runner_id: str,
        state: JobState,
        result: Mapping[str, str | bytes],
        result_ttl_s: int,
        due_at: float = 0.0,
        claim_next: int = 0,
        kingtask: Mapping[str, str] | None = None,
    ) -> tuple[bool, list[Claimed]]:
        """Record an attempt's end, and claim up to `claim_next` jobs of the same channel in the
        same round trip; `kingtask`: a final kingtask job's `r_` fields, written in it too. The
        bool is False if this runner no longer owned the attempt."""
        k, job = self.keys, claimed.job
        fields = [item for pair in result.items() for item in pair]
        calls: list[ScriptCall] = [
            (
                "finish",
                [
                k.job(job.id), k.runner_jobs(runner_id), k.running(job.channel),
                k.distinct(job.channel), k.daily(time.strftime("%Y-%m-%d")),
                k.scheduled(job.channel), k.recent(job.channel), k.dead_jobs,
            ],
            [
                job.id, runner_id, claimed.attempt, state.value, int(due_at * 1000),
                max(1, result_ttl_s), k.job_events, k.schedule_events, job.channel, RECENT_CAP,
                *fields,
            ],
            )
        ]  # fmt: skip
        if kingtask is not None:
            calls.append(kingtask_result_call(
                k, job.id, runner_id=runner_id, attempt=claimed.attempt, state=state.value,
                fields=kingtask, keep_s=result_ttl_s,
            ))  # fmt: skip
        if claim_next > 0:
            calls.append(self._claim_call(job.channel, claim_next, runner_id))
        replies: list[Any] = await asyncio.gather(
            *(self._coalesced(call) for call in calls), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return bool(replies[0]), claimed_jobs(replies[-1]) if claim_next > 0 else []

    async def hand_back(
        self,
        *,
        runner_id: str,
        job_id: str,
        channel: str,
        reason: str,
        started: bool = True,
        result_ttl_s: int = 86400,
    ) -> str:
        """Put a job `runner_id` runs back at the head of its queue: 'handed_back'; or, if a
        cancel was requested meanwhile, end it: 'cancelled'; '' if it was not that runner's.
        A job claimed but never `started` goes back with its attempt uncounted."""
        k = self.keys
        done = await self._run(
            "hand_back",
            [
                k.runner_jobs(runner_id), k.job(job_id), k.queue(channel), k.running(channel),
                k.distinct(channel), k.daily(time.strftime("%Y-%m-%d")), k.recent(channel),
            ],
            [
                job_id, reason, k.wake_events, channel, "1" if started else "0",
                max(1, result_ttl_s), k.job_events, RECENT_CAP,
            ],
        )  # fmt: skip
        return {1: HANDED_BACK, 2: "cancelled"}.get(int(done), "")

    async def defer(self, claimed: Claimed, *, runner_id: str, delay_s: float, reason: str) -> str:
        """Put back an attempt that could not start for lack of resources: `scheduled` again
        `delay_s` from now, its attempt not counted ('deferred'); 'cancel_requested' (nothing
        changed: record it cancelled); '' if the attempt is no longer this runner's."""
        k, job = self.keys, claimed.job
        due_ms = int((time.time() + delay_s) * 1000)
        done = await self._run(
            "defer",
            [k.job(job.id), k.runner_jobs(runner_id), k.running(job.channel),
             k.scheduled(job.channel)],
            [job.id, runner_id, claimed.attempt, due_ms, reason, k.job_events,
             k.schedule_events, job.channel],
        )  # fmt: skip
        return {1: "deferred", 2: "cancel_requested"}.get(int(done), "")

    async def cancel(self, job_id: str, *, result_ttl_s: int) -> str:
        """Cancel a job; returns its state afterwards ('running' = its runner was told)."""
        channel = await self.redis.hget(self.keys.job(job_id), "channel")
        if channel is None:
            return "missing"
        k, ch = self.keys, text(channel)
        state = await self._run(
            "cancel",
            [k.job(job_id), k.queue(ch), k.scheduled(ch), k.distinct(ch),
             k.daily(time.strftime("%Y-%m-%d")), k.recent(ch)],
            [job_id, max(1, result_ttl_s), k.job_events, k.cancel_events, RECENT_CAP],
        )  # fmt: skip
        return text(state)

    async def promote_due(self, channel: str, *, limit: int = 1000) -> tuple[int, float | None]:
        """Queue the channel's due jobs; returns (moved, next due unix time or None)."""
        k = self.keys
        moved, next_ms = await self._run(
            "promote",
            [k.scheduled(channel), k.queue(channel)],
            [int(time.time() * 1000), limit, k.job_prefix, k.wake_events, channel],
        )
        next_due = float(next_ms)
        return int(moved), None if next_due < 0 else next_due / 1000
