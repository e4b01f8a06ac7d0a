"""Reading jobs and counts: a job's record (and waiting for its end), channel snapshots, job
summaries (for listings: see `listing`), statistics, queue counts, kingtask's backlog."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, Final

import redis.exceptions as redis_errors

from taskrunner.errors import StoreUnavailable
from taskrunner.models import SUMMARY_FIELDS, SUMMARY_TEXT_BYTES, JobRecord, decode_record
from taskrunner.store.base import StoreBase
from taskrunner.store.records import (
    ChannelSnapshot,
    JobSummary,
    QueueCounts,
    text,
)
from taskrunner.validation import channel_name_problem

WAIT_READ_TRIES: Final = 25  # a poll's read of the record, retried every 20 ms if the pool is full


class ReadOps(StoreBase):
    """Store reads of jobs and counts (see the module)."""

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job's record; None if it never existed or its record expired."""
        record = await self.redis.hgetall(self.keys.job(job_id))
        return decode_record({text(f): text(v) for f, v in record.items()}) if record else None

    async def wait_final(self, job_id: str, *, timeout_s: float) -> JobRecord | None:
        """The job's record once it is final (woken by pub/sub, not by polling), or None.

        A subscription holds a connection and each wake-up reads the record on another: on a
        request store, at most its pool less WAIT_HEADROOM polls are let in (the others fail at
        once, as a request finding the pool empty), so one that got in is not failed by the
        polls after it."""
        slots = self._waits
        if slots is not None and slots.locked():
            raise redis_errors.MaxConnectionsError("Too many connections (long polls)")
        async with slots or contextlib.nullcontext(), self.subscribe(self.keys.job_events) as sub:
            deadline = time.monotonic() + timeout_s
            while True:
                record = await self._read_for_wait(job_id)
                if record is None or record.final:
                    return record
                while (remaining := deadline - time.monotonic()) > 0:
                    notice = await sub.next(timeout_s=remaining)
                    if notice is not None and notice.job()[0] == job_id:
                        break
                else:
                    return record

    async def _read_for_wait(self, job_id: str) -> JobRecord | None:
        """`get_job` for a poll that holds its slot: a full pool frees up within moments."""
        for _ in range(WAIT_READ_TRIES - 1):
            try:
                return await self.get_job(job_id)
            except StoreUnavailable as exc:
                if not exc.pool_exhausted:
                    raise
                await asyncio.sleep(0.02)
        return await self.get_job(job_id)

    async def channel_snapshot(self, channel: str, *, limit: int) -> ChannelSnapshot:
        """Queued and running jobs of a channel (ids up to `limit` each) with their counts."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(k.queue(channel))
            pipe.scard(k.running(channel))
            pipe.zcard(k.scheduled(channel))
            if limit > 0:  # counts only otherwise: LRANGE -0 -1 would read the whole queue
                pipe.lrange(k.queue(channel), -limit, -1)
                pipe.srandmember(k.running(channel), limit)
            queued_n, running_n, scheduled_n, *listed = await pipe.execute()
        queued, running = listed or ([], [])
        queued_ids = [text(i) for i in reversed(queued)]
        running_ids = [text(i) for i in running]
        ids = running_ids + queued_ids
        rows = await self._cut_fields(ids, ("task", "dedup", "state"))
        jobs = [
            JobSummary(job_id, text(task), bool(dedup), text(state), "task" in cut)
            for job_id, ((task, dedup, state), cut) in zip(ids, rows, strict=True)
            if task is not None
        ]
        return ChannelSnapshot(channel, int(queued_n), int(running_n), int(scheduled_n), jobs)

    async def _summaries(self, ids: Sequence[str]) -> list[JobRecord | None]:
        """The jobs' SUMMARY_FIELDS; a text cut to SUMMARY_TEXT_BYTES is flagged `NAME_truncated`
        (`args`, which would not be a JSON list any more, is left out then). None for a job
        whose record is gone."""
        summaries: list[JobRecord | None] = []
        for row, cut in await self._cut_fields(ids, SUMMARY_FIELDS):
            record = {f: text(v) for f, v in zip(SUMMARY_FIELDS, row, strict=True) if v is not None}
            for name in cut:
                record[f"{name}_truncated"] = "1"
            if "args" in cut:
                del record["args"]
            summaries.append(decode_record(record) if "state" in record else None)
        return summaries

    async def _cut_fields(
        self, ids: Sequence[str], fields: Sequence[str]
    ) -> list[tuple[list[Any], set[str]]]:
        """Each job's `fields` (None where missing), a long value cut to its first
        SUMMARY_TEXT_BYTES in Redis, with the names of those cut: a listing never reads a
        job's big values whole."""
        if not ids:
            return []
        calls = [("summary", [self.keys.job(i)], [SUMMARY_TEXT_BYTES, *fields]) for i in ids]
        rows = []
        for reply in await self._run_many(calls):
            *values, cut = reply
            rows.append((values, {fields[int(i) - 1] for i in cut}))
        return rows

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.stats)
        return {text(f): int(v) for f, v in raw.items()}

    async def daily_counts(self, date: str) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.daily(date))
        return {text(f): int(v) for f, v in raw.items()}

    async def queue_counts(self, channels: Sequence[str]) -> QueueCounts:
        """Job counts by channel and dead totals in one round trip, with O(1) commands only."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in channels:
                pipe.llen(k.queue(name))
                pipe.zcard(k.scheduled(name))
                pipe.scard(k.running(name))
            pipe.zcard(k.dead_jobs)
            pipe.llen(k.dead_letters)
            counts = [int(n) for n in await pipe.execute()]
        return QueueCounts(
            queued=dict(zip(channels, counts[0:-2:3], strict=True)),
            scheduled=dict(zip(channels, counts[1:-2:3], strict=True)),
            running=dict(zip(channels, counts[2:-2:3], strict=True)),
            dead_jobs=counts[-2],
            dead_letters=counts[-1],
        )

    # -- kingtask -------------------------------------------------------------------------

    async def undo_count(self, *, now: float | None = None) -> int:
        """kingtask's backlog over all channels: queued jobs plus scheduled ones already due."""
        now_ms = int((time.time() if now is None else now) * 1000)
        stored = [text(n) for n in await self.redis.hkeys(self.keys.channels)]
        names = [name for name in stored if channel_name_problem(name) is None]
        if not names:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(self.keys.queue(name))
                pipe.zcount(self.keys.scheduled(name), "-inf", now_ms)
            counts = await pipe.execute()
        return sum(int(c) for c in counts)
