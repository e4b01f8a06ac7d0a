"""Ingress: messages taken from the prepare queue, parsed, checked and routed into their
channels' queues; those that cannot be routed are dead-lettered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TypeVar

from taskrunner.admission import Refused
from taskrunner.config import Settings
from taskrunner.errors import InvalidChannel, InvalidJob, StoreError, StoreUnavailable
from taskrunner.metrics import RunnerMetrics
from taskrunner.models import Job
from taskrunner.parsing import parse_message
from taskrunner.reconnect import Outages, RedisRetry
from taskrunner.service import Service
from taskrunner.store import DEAD_LETTER_RAW_BYTES, Admission, Store
from taskrunner.workers import ChannelWorkers

# The runner's loops log under the runner's name, as they did when they lived in runner.py.
log = logging.getLogger("taskrunner.runner")

INGRESS_BLOCK_S = 1.0
INGRESS_BATCH = 100  # messages routed per round trip under load
# Parsing holds the event loop this long at most before what is parsed is enqueued (a round
# trip, so the loop runs meanwhile): 100 messages of 60 KB once stalled /healthz for seconds.
ROUTE_SLICE_S = 0.02


IntakeT = TypeVar("IntakeT", bound="Intake")


class Intake:
    """What a loop that turns messages into jobs works with: the ingress below and kingtask's
    Redis ingress (kingtask_ingress)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        service: Service,
        *,
        runner_id: str,
        workers: ChannelWorkers,
        metrics: RunnerMetrics,
        outages: Outages,
    ) -> None:
        self.settings = settings
        self.store = store
        self.service = service
        self.runner_id = runner_id
        self.workers = workers
        self.metrics = metrics
        self._outages = outages
        self._closed = asyncio.Event()

    def alongside(self, kind: type[IntakeT]) -> IntakeT:
        """Another intake that works with this one's runner parts."""
        return kind(
            self.settings,
            self.store,
            self.service,
            runner_id=self.runner_id,
            workers=self.workers,
            metrics=self.metrics,
            outages=self._outages,
        )

    def close(self) -> None:
        """Take no more (what is taken is still made into jobs)."""
        self._closed.set()


class Ingress(Intake):
    """Takes from the prepare queue until `close()`. A message taken is in this runner's
    in-flight list until routed: a reply lost on the way is routed again, not lost."""

    async def ingress_loop(self) -> None:
        if not self.settings.task_mode:
            log.info("--no-task-mode: routing jobs but running none")
        backoff = RedisRetry("take from the prepare queue")
        resync = False
        while not self._closed.is_set():
            try:
                if resync:  # a reply may have been lost: route what we hold before taking more
                    await self.route_many(await self.store.inflight_messages(self.runner_id))
                    resync = False
                # Under load, take a batch per round trip; when the queue is empty, block.
                batch = await self._take_batch()
                if not batch:
                    raw = await self.store.take_message(self.runner_id, timeout_s=INGRESS_BLOCK_S)
                    batch = [] if raw is None else [raw]
                await self.route_many(batch)
                backoff.ok()
            except StoreUnavailable as exc:
                resync = True
                self._outages.lost("ingress", backoff)
                await backoff.wait(exc)
            except StoreError as exc:  # another error Redis answered: retry, keep the message
                resync = True
                await backoff.wait(exc)

    async def route_many(self, raws: Sequence[bytes]) -> None:
        """Route messages taken from the prepare queue (they are in our in-flight list)."""
        jobs: list[tuple[Job, bytes]] = []
        now, slice_started = time.time(), time.monotonic()
        for raw in raws:
            try:
                job = parse_message(
                    raw,
                    default_channel=self.settings.channel_default,
                    now=now,
                    limits=self.settings.limits,
                )
            except (InvalidJob, InvalidChannel) as exc:
                await self._dead_letter(raw, str(exc))
                continue
            jobs.append((job, raw))
            if time.monotonic() - slice_started >= ROUTE_SLICE_S:  # big messages: let the loop run
                await self._enqueue_routed(jobs)
                jobs, slice_started = [], time.monotonic()
        await self._enqueue_routed(jobs)

    async def _enqueue_routed(self, jobs: Sequence[tuple[Job, bytes]]) -> None:
        if not jobs:
            return
        admissions = await self.service.admit(
            [job for job, _ in jobs], source="the prepare queue", messages=[raw for _, raw in jobs]
        )
        for (job, raw), admission in zip(jobs, admissions, strict=True):
            await self._admitted(job, raw, admission)

    async def _admitted(self, job: Job, raw: bytes, admission: Admission) -> None:
        """Dead-letter the message of a job refused for good; wake the worker of a job queued."""
        if isinstance(admission, Refused):
            await self._dead_letter(raw, str(admission.error))
        elif admission.status == "nochan":
            await self._dead_letter(
                raw,
                f"unknown channel {job.channel!r}: create it with POST /queue or `taskrunner queue create`",
            )
        elif admission.status == "ok":
            worker = self.workers.get(job.channel)
            if worker is not None and job.run_at is None:
                worker.wake()  # no need to wait for our own wake-up to come back through pub/sub

    async def _take_batch(self, count: int = INGRESS_BATCH) -> list[bytes]:
        """Up to `count` messages; one over the size limit is dead-lettered inside Redis (its
        first bytes kept), so it is never read whole, nor sent back."""
        limits = self.settings.limits
        taken = await self.store.take_messages(
            self.runner_id,
            count=count,
            max_bytes=limits.max_message_bytes,
            dead_letter_cap=self.settings.dead_letter_cap,
        )
        for size in taken.refused_sizes:
            self.metrics.dead_letters_routed.inc()
            log.warning(
                "dead-lettered message: message is %d bytes, over the limit of %d (first %d"
                " bytes kept)", size, limits.max_message_bytes, DEAD_LETTER_RAW_BYTES,
            )  # fmt: skip
        return taken.messages

    async def _dead_letter(self, raw: bytes, reason: str) -> None:
        if len(raw) > self.settings.limits.max_message_bytes:  # a blocking take brought it
            await self._take_batch(0)  # dead-letters it inside Redis: no need to send it back
            return
        count = await self.store.dead_letter(
            raw=raw,
            reason=reason,
            runner_id=self.runner_id,
            source="prepare_queue",
            cap=self.settings.dead_letter_cap,
        )
        self.metrics.dead_letters_routed.inc()
        log.warning("dead-lettered message #%d: %s: %r", count, reason, raw[:200])
