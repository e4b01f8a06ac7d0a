"""Delayed jobs and retries coming due: one timer armed for the earliest due time in Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from taskrunner.aio import Backoff, wait_event
from taskrunner.errors import StoreUnavailable
from taskrunner.store import Store

log = logging.getLogger("taskrunner.scheduler")

# Without any wake-up the timer still re-reads Redis this often, in case a pub/sub message
# was missed while the connection was down. It is a safety net, not the schedule.
SAFETY_RECHECK_S = 30.0


class Scheduler:
    """Moves due jobs of every channel to the head of their queue, at their due time.

    Every runner process runs one; the move is an atomic script, so a due job is queued
    once however many runners race for it. New earlier due times arrive by pub/sub (`kick`).
    """

    def __init__(self, store: Store, channel_names: Callable[[], Iterable[str]]) -> None:
        self._store = store
        self._channel_names = channel_names
        self._kick = asyncio.Event()
        self._next_due: float | None = None
        self._promoting = False
        self._closed = False

    def kick(self, due_at: float | None = None) -> None:
        """Re-arm: now, or if `due_at` is earlier than the current timer.

        While a promotion pass runs, `_next_due` is about to be replaced by what that pass read,
        which may predate this job: then always re-read."""
        if self._promoting or due_at is None or self._next_due is None or due_at < self._next_due:
            self._kick.set()

    def close(self) -> None:
        self._closed = True
        self._kick.set()

    async def run(self) -> None:
        backoff = Backoff()
        while not self._closed:
            self._kick.clear()
            self._promoting = True
            try:
                self._next_due = await self._promote_all()
            except StoreUnavailable as exc:
                delay_s = backoff.next_delay_s()
                log.warning("cannot promote due jobs (%s); retry in %.1f s", exc, delay_s)
                await self._wait(delay_s)
                continue
            finally:
                self._promoting = False
            backoff.reset()
            wait_s = SAFETY_RECHECK_S
            if self._next_due is not None:
                wait_s = min(wait_s, max(0.0, self._next_due - time.time()))
            await self._wait(wait_s)

    async def _promote_all(self) -> float | None:
        earliest: float | None = None
        for name in list(self._channel_names()):
            moved, next_due = await self._store.promote_due(name)
            if moved:
                log.debug("channel %s: %d due jobs queued", name, moved)
            if next_due is not None and (earliest is None or next_due < earliest):
                earliest = next_due
        return earliest

    async def _wait(self, timeout_s: float) -> None:
        await wait_event(self._kick, timeout_s)
