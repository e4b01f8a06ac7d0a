"""Dead letters (ingress messages refused, kept with their reason) and dead jobs (failed for
good): listed, retried, dropped."""

from __future__ import annotations

import json
import time
from typing import Any, Final

from taskrunner.models import JobRecord
from taskrunner.store.reads import ReadOps
from taskrunner.store.records import (
    DEAD_LETTER_RAW_BYTES,
    Admission,
    as_bytes,
    dead_letter_entry,
    text,
    utf8_prefix,
)

DEAD_LETTER_PAGE: Final = 100  # entries read at a time when looking for one by id


def letter_entry(raw: bytes, reason: str, source: str) -> str:
    """A dead letter as stored: `raw`'s first DEAD_LETTER_RAW_BYTES bytes (all of a message that
    is no longer), its size in bytes, whether it was cut (`truncated`), the reason and source."""
    kept = utf8_prefix(raw, DEAD_LETTER_RAW_BYTES)
    return json.dumps(
        {
            "reason": reason,
            "source": source,
            "at": round(time.time(), 3),
            "raw": kept.decode("utf-8", "backslashreplace"),
            "size": len(raw),
            "truncated": len(kept) < len(raw),
        },
        ensure_ascii=False,
    )


class DeadOps(ReadOps):
    """Store operations on dead letters and dead jobs (see the module)."""

    async def dead_letter(
        self,
        *,
        raw: bytes,
        reason: str,
        runner_id: str,
        source: str,
        cap: int,
        inflight: tuple[str, bytes] | None = None,
    ) -> int:
        """Keep a refused message with its reason (`letter_entry`); returns the running
        dead-letter count. `inflight`: the list and member to drop instead of `raw` in the
        prepare queue's in-flight list."""
        k = self.keys
        inflight_key, member = inflight or (k.prepare_inflight(runner_id), raw)
        return int(
            await self._run(
                "dead_letter",
                [inflight_key, k.dead_letters, k.stats],
                [member, letter_entry(raw, reason, source), cap, k.dead_letter_events],
            )
        )

    async def dead_letters(self, *, start: int = 0, count: int = 100) -> list[dict[str, Any]]:
        """Refused messages, newest first, each with a stable `id` (a hash of the entry)."""
        if count <= 0:
            return []  # LRANGE 0 -1 would be the whole list
        items = await self.redis.lrange(self.keys.dead_letters, start, start + count - 1)
        return [dead_letter_entry(item) for item in items]

    async def dead_letter_count(self) -> int:
        return int(await self.redis.llen(self.keys.dead_letters))

    async def find_dead_letter(self, letter_id: str) -> tuple[bytes, dict[str, Any]] | None:
        """The stored entry with that id and its decoded form, read a page at a time."""
        start = 0
        while True:
            items = await self.redis.lrange(
                self.keys.dead_letters, start, start + DEAD_LETTER_PAGE - 1
            )
            for item in items:
                entry = dead_letter_entry(item)
                if entry["id"] == letter_id:
                    return as_bytes(item), entry
            if len(items) < DEAD_LETTER_PAGE:
                return None
            start += DEAD_LETTER_PAGE

    async def take_dead_letter(self, letter_id: str, *, requeue: bool) -> dict[str, Any] | None:
        """Remove one dead letter by id; with `requeue`, push its message back for routing
        (the caller refuses that for a `truncated` entry: only its first bytes were kept)."""
        found = await self.find_dead_letter(letter_id)
        if found is None:
            return None
        item, entry = found
        raw = str(entry.get("raw", "")) if requeue else ""
        taken = await self._run(
            "dead_letter_take",
            [self.keys.dead_letters, self.keys.prepare_queue],
            [item, raw, self.keys.dead_letter_events],
        )
        return entry if taken else None

    async def retry_dead(self, job_id: str) -> Admission:
        """Queue a dead job again; status 'ok', 'duplicate', 'nochan', 'missing' or its state."""
        channel = await self.redis.hget(self.keys.job(job_id), "channel")
        if channel is None:
            await self.redis.zrem(self.keys.dead_jobs, job_id)
            return Admission("missing", "")
        k, ch = self.keys, text(channel)
        status, holder = await self._run(
            "retry_dead",
            [k.job(job_id), k.dead_jobs, k.queue(ch), k.distinct(ch), k.recent(ch), k.channels],
            [job_id, k.job_prefix, k.wake_events, k.job_events, ch],
        )
        return Admission(text(status), text(holder))

    async def drop_dead(self, job_id: str) -> str:
        """Delete a dead job's record: 'dropped', 'missing', or its state if not dead."""
        channel = text(await self.redis.hget(self.keys.job(job_id), "channel"))
        recent = self.keys.recent(channel) if channel else self.keys.dead_jobs
        return text(
            await self._run(
                "drop_dead",
                [self.keys.job(job_id), self.keys.dead_jobs, recent],
                [job_id, self.keys.job_events],
            )
        )

    async def dead_jobs(self, *, offset: int, limit: int) -> tuple[list[JobRecord], int]:
        """Dead jobs, newest first, with their last error; and how many there are."""
        k = self.keys
        ids: list[str] = []
        if limit > 0:  # ZRANGE 0 -1 would be every dead job
            found = await self.redis.zrange(k.dead_jobs, offset, offset + limit - 1, desc=True)
            ids = [text(i) for i in found]
        total = int(await self.redis.zcard(k.dead_jobs))
        records = await self._summaries(ids)
        gone = [i for i, rec in zip(ids, records, strict=True) if rec is None]
        if gone:
            await self.redis.zrem(k.dead_jobs, *gone)
        return [rec for rec in records if rec is not None], total - len(gone)
