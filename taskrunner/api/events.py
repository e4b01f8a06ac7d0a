"""Live "something changed" notices for the dashboard, from Redis pub/sub.

One `EventHub` per HTTP app holds one subscription (one Redis connection), started when the first
listener arrives and closed when the last one leaves, however many pages are open. Notices are
merged into a per-listener pending `Change`, so a slow page gets fewer, larger changes instead of
an ever-growing queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

from taskrunner.errors import StoreUnavailable
from taskrunner.service import Notice, Service, Subscription

log = logging.getLogger("taskrunner.api.events")

COALESCE_S: Final = 0.1  # notices arriving within this window after the first make one change
MAX_NOTICES_PER_CHANGE: Final = 1000
MAX_JOB_IDS: Final = 100  # a change names at most this many jobs; beyond, `more_jobs`
LISTEN_POLL_S: Final = 5.0  # a bound on one blocking read, not a polling interval
SUBSCRIBED_MARK: Final = "taskrunner-dashboard"


@dataclass(slots=True)
class Change:
    """Notices gathered into one: which jobs (id -> last state), which channels' queues moved,
    which channels' settings changed, whether dead letters changed."""

    notices: int = 0
    jobs: dict[str, str] = field(default_factory=dict)
    more_jobs: bool = False
    queues: set[str] = field(default_factory=set)
    channels: set[str] = field(default_factory=set)
    dead_letters: bool = False

    def add(self, notice: Notice) -> None:
        self.notices += 1
        if notice.topic == "job":
            self._job(*notice.job())
        elif notice.topic in ("wake", "schedule"):
            self.queues.add(notice.queue()[0])
        elif notice.topic == "channels":
            self.channels.add(notice.data)
        elif notice.topic == "dead_letters":
            self.dead_letters = True

    def merge(self, other: Change) -> None:
        self.notices += other.notices
        for job_id, state in other.jobs.items():
            self._job(job_id, state)
        self.more_jobs |= other.more_jobs
        self.queues |= other.queues
        self.channels |= other.channels
        self.dead_letters |= other.dead_letters

    def _job(self, job_id: str, state: str) -> None:
        if job_id in self.jobs or len(self.jobs) < MAX_JOB_IDS:
            self.jobs[job_id] = state
        else:
            self.more_jobs = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "notices": self.notices,
            "jobs": self.jobs,
            "more_jobs": self.more_jobs,
            "queues": sorted(self.queues),
            "channels": sorted(self.channels),
            "dead_letters": self.dead_letters,
        }


class Listener:
    """One open page's view of the hub: `next()` gives the changes since the last call."""

    def __init__(self) -> None:
        self._pending: Change | None = None
        self._wakeup = asyncio.Event()
        self.lost = False  # the subscription broke: end the stream, the page reconnects

    def offer(self, change: Change) -> None:
        if self._pending is None:
            self._pending = Change()
        self._pending.merge(change)
        self._wakeup.set()

    def lose(self) -> None:
        self.lost = True
        self._wakeup.set()

    async def next(self, *, timeout_s: float) -> Change | None:
        """The pending change, waiting up to `timeout_s` for one; None if none came."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout_s)
        self._wakeup.clear()
        change, self._pending = self._pending, None
        return change


class EventHub:
    def __init__(self, service: Service) -> None:
        self._service = service
        self._listeners: set[Listener] = set()
        self._pump: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[Listener]:
        """A listener, once Redis has confirmed the subscription (so nothing published after
        this returns is missed); raises StoreUnavailable if Redis cannot be reached."""
        listener = Listener()
        self._listeners.add(listener)
        try:
            await asyncio.shield(self._start())
            yield listener
        finally:
            self._listeners.discard(listener)
            if not self._listeners:
                await self.close()

    def _start(self) -> asyncio.Future[None]:
        if self._pump is None or self._pump.done() or self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._pump = asyncio.create_task(self._run(self._ready), name="dashboard-events")
        return self._ready

    async def close(self) -> None:
        """Drop the subscription (idempotent); a later `listen` starts a new one."""
        pump, self._pump, self._ready = self._pump, None, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _run(self, ready: asyncio.Future[None]) -> None:
        try:
            async with self._service.subscribe_changes() as subscription:
                early = await _confirm(subscription)
                ready.set_result(None)
                while True:
                    if early.notices:
                        self._offer(early)
                    early = await _gather(subscription)
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)  # the listener waiting for it gets the error
                return
            if isinstance(exc, StoreUnavailable):
                log.warning("dashboard events: Redis subscription lost: %s", exc)
            else:
                log.exception("dashboard events: the subscription failed")
            for listener in list(self._listeners):
                listener.lose()
        finally:
            if not ready.done():
                ready.cancel()

    def _offer(self, change: Change) -> None:
        for listener in self._listeners:
            listener.offer(change)


async def _confirm(subscription: Subscription) -> Change:
    """Wait until Redis has processed the SUBSCRIBE: a PING on the same connection is answered
    after it. Notices that arrive first are kept."""
    early = Change()
    await subscription.ping(SUBSCRIBED_MARK)
    while True:
        notice = await subscription.next(timeout_s=LISTEN_POLL_S)
        if notice is None:
            continue
        if notice.kind == "pong" and notice.data == SUBSCRIBED_MARK:
            return early
        if notice.kind == "message":
            early.add(notice)


async def _gather(subscription: Subscription) -> Change:
    """Wait for a notice, then gather what else comes within COALESCE_S into one change."""
    change = Change()
    while not change.notices:
        await _read_into(change, subscription, timeout_s=LISTEN_POLL_S)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + COALESCE_S
    while change.notices < MAX_NOTICES_PER_CHANGE:
        remaining_s = deadline - loop.time()
        if remaining_s <= 0:
            break
        await _read_into(change, subscription, timeout_s=remaining_s)
    return change


async def _read_into(change: Change, subscription: Subscription, *, timeout_s: float) -> None:
    notice = await subscription.next(timeout_s=timeout_s)
    if notice is not None and notice.kind == "message":
        change.add(notice)
