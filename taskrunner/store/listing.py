"""Job listings: pages of jobs newest first, from the job indexes enqueue.lua keeps (every job's
id by creation time in microseconds, overall and per channel), with cursor paging.

A page reads the index from the cursor's place down: O(log n + page) Redis work when no filter
applies to single jobs. The channel filter and the time range are the index's own (a channel's
index, a score range); `state=running` reads the channels' running sets (as small as the
workers). The other state filters and the command filter look at each job: a page then reads
at most SCAN_WINDOW index entries and, when it found fewer than asked, ends with a cursor to
go on from there, so a page may come back short, even empty, with a cursor."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from taskrunner.models import JobRecord, JobState
from taskrunner.models.listing import SCAN_WINDOW, JobQuery, Position
from taskrunner.store.reads import ReadOps
from taskrunner.store.records import text
from taskrunner.validation import channel_name_problem

SCAN_CHUNK: Final = 250  # index entries read at a time by a page that filters single jobs
FILTER_FIELDS: Final = ("state", "task")
INDEX_CHUNK: Final = 1000  # ids indexed at a time by `index_earlier_jobs`
# A chunk of the index: the places read, and whether the index may hold more after them.
Chunk = tuple[list[Position], bool]


class ListOps(ReadOps):
    """Store reads of job listings (see the module)."""

    async def list_jobs(
        self, query: JobQuery, *, channels: Sequence[str]
    ) -> tuple[list[JobRecord], Position | None]:
        """A page of job summaries newest first, and the place the next page starts from (None
        when there is nothing more). `channels`: those whose running sets `state=running`
        reads."""
        found: list[tuple[Position, JobRecord]] = []
        after, looked = query.after, 0
        window = SCAN_WINDOW if query.scans else max(SCAN_WINDOW, query.limit + 1)
        while True:
            want = SCAN_CHUNK if query.scans else query.limit + 1 - len(found)
            places, more = await self._chunk(query, after, min(want, window - looked), channels)
            looked += len(places)
            found += await self._matching(query, places)
            if len(found) > query.limit:
                return [r for _, r in found[: query.limit]], found[query.limit - 1][0]
            if not more:
                return [r for _, r in found], None
            after = places[-1]
            if looked >= window:
                return [r for _, r in found], after

    async def _chunk(
        self, query: JobQuery, after: Position | None, count: int, channels: Sequence[str]
    ) -> Chunk:
        if query.state is JobState.RUNNING:
            return await self._running(query, after, channels)
        key = (
            self.keys.job_index
            if query.channel is None
            else self.keys.channel_job_index(query.channel)
        )
        low = "-inf" if query.since is None else math.ceil(query.since * 1_000_000)
        high = math.inf if query.until is None else math.floor(query.until * 1_000_000)
        if after is not None and after.created_us <= high:
            return await self._index_after(key, after, low, count)
        high_arg = "+inf" if math.isinf(high) else int(high)
        rows = await self.redis.zrevrangebyscore(key, high_arg, low, 0, count, withscores=True)
        return _places(rows), len(rows) == count

    async def _index_after(self, key: str, after: Position, low: Any, count: int) -> Chunk:
        """Up to `count` places below `after`: those created in the same microsecond with a
        lower id (a handful at most), then the older ones."""
        s = after.created_us
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrangebyscore(key, s, s, withscores=True)
            pipe.zrevrangebyscore(key, f"({s}", low, 0, count, withscores=True)
            ties, older = await pipe.execute()
        places = [p for p in _places(ties) if p.job_id < after.job_id] + _places(older)
        return places[:count], len(places) >= count

    async def _running(
        self, query: JobQuery, after: Position | None, channels: Sequence[str]
    ) -> Chunk:
        """Every running job of the channels (the query's, or `channels`) in the query's time
        range and below `after`, newest first, as one chunk."""
        names = [query.channel] if query.channel is not None else list(channels)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.smembers(self.keys.running(name))
            ids = sorted({text(i) for members in await pipe.execute() for i in members})
        rows = await self._cut_fields(ids, ("created_at",))
        places = [
            Position(int(text(created).replace(".", "")), job_id)
            for job_id, ((created,), _) in zip(ids, rows, strict=True)
            if created is not None and text(created).replace(".", "").isdigit()
        ]
        since = -math.inf if query.since is None else query.since * 1_000_000
        until = math.inf if query.until is None else query.until * 1_000_000
        return sorted(
            (p for p in places if since <= p.created_us <= until and (after is None or p < after)),
            reverse=True,
        ), False

    async def _matching(
        self, query: JobQuery, places: list[Position]
    ) -> list[tuple[Position, JobRecord]]:
        """The summaries of the jobs at `places` that still have a record and pass the query's
        filters on single jobs (read first, and only those, when there are such filters)."""
        if query.scans or query.state is not None:
            rows = await self._cut_fields([p.job_id for p in places], FILTER_FIELDS)
            places = [
                p
                for p, ((state, task), _) in zip(places, rows, strict=True)
                if state is not None and query.matches(text(state), text(task))
            ]
        summaries = await self._summaries([p.job_id for p in places])
        return [(p, r) for p, r in zip(places, summaries, strict=True) if r is not None]

    async def index_earlier_jobs(self) -> int:
        """Once per Redis: index the jobs created before the job index existed (those the
        channels' queues, schedules, running sets, recent lists and the dead jobs hold), by the
        creation time of their records, so an upgrade lists them too. Returns how many were
        indexed; 0 once it was done (a second runner doing it at once does no harm)."""
        k = self.keys
        if await self.redis.exists(k.index_built):
            return 0
        stored = [text(n) for n in await self.redis.hkeys(k.channels)]
        names = [name for name in stored if channel_name_problem(name) is None]
        indexed = await self._index_ids(await self.redis.zrange(k.dead_jobs, 0, -1))
        for name in names:
            indexed += await self._index_ids(await self.redis.smembers(k.running(name)))
            for key in (k.scheduled(name), k.recent(name)):
                indexed += await self._index_ids(await self.redis.zrange(key, 0, -1))
            start = 0
            while ids := await self.redis.lrange(k.queue(name), start, start + INDEX_CHUNK - 1):
                indexed += await self._index_ids(ids)
                start += INDEX_CHUNK
        await self.redis.set(k.index_built, "1")
        return indexed

    async def _index_ids(self, raw_ids: Any) -> int:
        ids, indexed = [text(i) for i in raw_ids], 0
        for at in range(0, len(ids), INDEX_CHUNK):
            chunk = ids[at : at + INDEX_CHUNK]
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in chunk:
                    pipe.hmget(self.keys.job(job_id), "created_at", "channel")
                rows = await pipe.execute()
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, (created, channel) in zip(chunk, rows, strict=True):
                    score = text(created).replace(".", "")
                    if score.isdigit() and channel_name_problem(text(channel)) is None:
                        entry = {job_id: int(score)}
                        pipe.zadd(self.keys.job_index, entry, nx=True)
                        pipe.zadd(self.keys.channel_job_index(text(channel)), entry, nx=True)
                        indexed += 1
                await pipe.execute()
        return indexed


def _places(rows: Sequence[Any]) -> list[Position]:
    return [Position(int(score), text(member)) for member, score in rows]
