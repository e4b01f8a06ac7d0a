"""What admitting a job answers, and what it reads on the way: the outcome types every
producer renders (ingress, the HTTP APIs, CLI, client), the outcome log lines, and the
channels' allowlists as admission checks them. `Service.admit` is the one admission path."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from taskrunner.errors import DuplicateJob, NotAllowed
from taskrunner.models import ChannelConfig, Job
from taskrunner.store import Admission, Store

log = logging.getLogger("taskrunner.service")

# The channel's settings as this process sees them now (None: unknown here, ask Redis).
ChannelLookup = Callable[[str], ChannelConfig | None]
CHANNEL_CACHE_S = 1.0  # how long a channel's allowlist read from Redis is reused at ingress
CHANNEL_CACHE_MAX = 1000


@dataclass(frozen=True, slots=True)
class Refused(Admission):
    """A job not queued because an allowlist refuses its program (status 'notallowed');
    `error` says which and what to do."""

    error: NotAllowed


def accepted_id(admission: Admission) -> str:
    """The id of the job a push got into the queue's hands (created now, or by an earlier
    push with that id); DuplicateJob naming the live job when a distinct channel refused it."""
    if admission.status == "duplicate":
        live = admission.job_id
        raise DuplicateJob(
            f"job refused: live job {live} has the same dedup key in this distinct channel;"
            " wait for it to end, or cancel it",
            live_id=live,
        )
    return admission.job_id


def log_admission(job: Job, admission: Admission, source: str) -> None:
    """One log line per admitted job; refusals are logged by whoever renders them."""
    extra = {"job_id": job.id, "channel": job.channel}
    if admission.status == "ok":
        log.debug("job %s queued in %s (from %s)", job.id, job.channel, source, extra=extra)
    elif admission.status == "routed":  # this routing ran twice (a lost reply): done
        log.debug("message of job %s was routed already", job.id, extra=extra)
    elif admission.status == "exists":
        log.info(
            "job %s (from %s): a job with this id exists already; nothing created",
            job.id, source, extra=extra,
        )  # fmt: skip
    elif admission.status == "duplicate":
        log.info(
            "job refused: duplicate of live job %s in channel %s (from %s)",
            admission.job_id, job.channel, source,
            extra={"job_id": admission.job_id, "channel": job.channel},
        )  # fmt: skip


class ChannelAllowlists:
    """Channels' allowlists for ingress checks: from the runner's live view of its channels
    when it has one; else read from Redis, one read per channel at a time (concurrent submits
    share it) and reused for CHANNEL_CACHE_S. Runners check again at run time."""

    def __init__(self, store: Store, lookup: ChannelLookup | None) -> None:
        self._store = store
        self._lookup = lookup
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._reads: dict[str, asyncio.Future[ChannelConfig | None]] = {}

    async def get(self, name: str) -> tuple[str, ...]:
        """The channel's patterns; () when it has none or does not exist (enqueue refuses)."""
        config = self._lookup(name) if self._lookup is not None else None
        if config is not None:
            return config.allow
        cached = self._cache.get(name)
        if cached is not None and time.monotonic() - cached[0] < CHANNEL_CACHE_S:
            return cached[1]
        read = self._reads.get(name)
        if read is None:
            read = asyncio.ensure_future(self._store.get_channel(name))
            self._reads[name] = read
            read.add_done_callback(lambda _done: self._reads.pop(name, None))
        config = await asyncio.shield(read)
        allow = () if config is None else config.allow
        if config is not None:
            if len(self._cache) >= CHANNEL_CACHE_MAX:
                self._cache.clear()
            self._cache[name] = (time.monotonic(), allow)
        return allow
