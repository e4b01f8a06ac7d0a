"""The service core every adapter calls (HTTP APIs, CLI): submit jobs, manage channels, read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgspec.structs import replace

from taskrunner.allow import check_program, parse_patterns
from taskrunner.errors import Conflict, InvalidChannel, InvalidJob, JobNotFound, OutcomeUnknown
from taskrunner.jobs import (
    ChannelConfig,
    Job,
    JobState,
    Limits,
    brief,
    job_from_fields,
    parse_count,
    parse_intervals,
    parse_seconds,
    validate_channel_name,
)
from taskrunner.kinds import program_of
from taskrunner.store import (
    UNAVAILABLE_ERRORS,
    Admission,
    ChannelSnapshot,
    Store,
    unavailable_reason,
)

log = logging.getLogger("taskrunner.service")

PUSH_DEADLINE_S = 1.8  # a push answers within this, even when Redis does not

DEFAULT_CHANNELS = ("biz", "cron")
STATUS_TASKS_LIMIT = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSettings:
    runner_id: str
    default_channel: str = "default"
    concurrent: int = 5
    limits: Limits = field(default_factory=Limits)
    result_ttl_s: int = 86400
    allow: tuple[str, ...] = ()  # the runner's --allow (the CLI and the client have none)
    shell: bool = False  # the runner's --shell: its jobs' program is then /bin/sh
    bin_path: Path | None = None  # the runner's --bin-path (kingtask script jobs)
    # a runner's: a push to a default channel found gone (Redis lost its data) ensures them
    # again; the CLI and the client never create channels by themselves
    restores_default_channels: bool = False


# The channel's settings as this process sees them now (None: unknown here, ask Redis).
ChannelLookup = Callable[[str], ChannelConfig | None]
# Told of a channel this process just changed, so its own next request sees the change.
ChannelUpdated = Callable[[ChannelConfig], None]
CHANNEL_CACHE_S = 1.0  # how long a channel's allowlist read from Redis is reused at ingress
CHANNEL_CACHE_MAX = 1000


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


class Service:
    def __init__(
        self,
        store: Store,
        settings: ServiceSettings,
        *,
        channels: ChannelLookup | None = None,
        channel_updated: ChannelUpdated | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self._channels = channels
        self._allowlists = ChannelAllowlists(store, channels)
        self._channel_updated = channel_updated

    def on_store(self, store: Store) -> Service:
        """This service on another store: the HTTP API's, on a bounded pool of its own."""
        return Service(
            store, self.settings, channels=self._channels, channel_updated=self._channel_updated
        )

    # -- jobs -----------------------------------------------------------------------------

    def parse_job(self, fields: Mapping[str, Any]) -> Job:
        return job_from_fields(
            fields,
            default_channel=self.settings.default_channel,
            now=time.time(),
            limits=self.settings.limits,
        )

    async def submit(self, fields: Mapping[str, Any], *, source: str) -> Admission:
        """Validate and enqueue one job; raise InvalidJob / InvalidChannel on bad input,
        NotAllowed when an allowlist refuses its program."""
        job = self.parse_job(fields)
        await self.check_allowed(job)
        async with self.push_deadline(job):
            admission = await self._enqueue(job)
        if admission.status == "nochan":
            raise InvalidChannel(
                f"channel {job.channel!r} does not exist: create it first"
                " (POST /queue name=... or `taskrunner queue create NAME`)"
            )
        log.debug(
            "job %s %s from %s", admission.job_id, admission.status, source,
            extra={"job_id": admission.job_id, "channel": job.channel},
        )  # fmt: skip
        return admission

    @contextlib.asynccontextmanager
    async def push_deadline(self, job: Job) -> AsyncIterator[None]:
        """Bound a push's Redis calls by PUSH_DEADLINE_S. OutcomeUnknown, naming the job's id
        (safe to push again: a job with that id runs once), when Redis did not answer in time
        or failed: the job may have been queued all the same."""
        try:
            async with asyncio.timeout(PUSH_DEADLINE_S):
                yield
        except (TimeoutError, *UNAVAILABLE_ERRORS) as exc:
            why = (
                "did not answer"
                if isinstance(exc, TimeoutError)
                else f"failed ({unavailable_reason(exc)})"
            )
            raise OutcomeUnknown(
                f"Redis {why} within {PUSH_DEADLINE_S:g} s: job {job.id} may or may not be"
                f' queued; push it again with "id": "{job.id}" to be sure (a job with that id'
                " runs once)",
                job_id=job.id,
            ) from exc

    async def _enqueue(self, job: Job) -> Admission:
        admission = await self.store.enqueue(job, runner_id=self.settings.runner_id)
        restores = self.settings.restores_default_channels
        if admission.status == "nochan" and restores and job.channel in self.default_channel_names:
            await self.ensure_default_channels()  # gone with Redis's data: they come back
            admission = await self.store.enqueue(job, runner_id=self.settings.runner_id)
        return admission

    async def check_allowed(self, job: Job) -> None:
        """Raise NotAllowed unless the runner's allowlist and the job's channel's admit the
        program the job would run (rpc jobs run none). Runners check again at run time."""
        program = program_of(job, shell=self.settings.shell, bin_path=self.settings.bin_path)
        if program is None:
            return
        channel_allow = await self._allowlists.get(job.channel)
        check_program(
            program, runner=self.settings.allow, channel=channel_allow, channel_name=job.channel
        )

    async def cancel(self, job_id: str, *, result_ttl_s: int | None = None) -> str:
        """Cancel a queued, scheduled or running job; returns the state it is in now."""
        ttl_s = self.settings.result_ttl_s if result_ttl_s is None else result_ttl_s
        state = await self.store.cancel(job_id, result_ttl_s=ttl_s)
        if state == "missing":
            raise JobNotFound(f"no job {job_id!r}: it never existed or its record expired")
        return state

    # -- channels -------------------------------------------------------------------------

    def channel_config(self, name: str, *, distinct: bool, worker_count: int) -> ChannelConfig:
        validate_channel_name(name)
        if not 0 <= worker_count <= MAX_WORKERS:
            raise InvalidJob(
                f"worker count must be from 0 to {MAX_WORKERS} (0 = --concurrent),"
                f" got {worker_count}"
            )
        return ChannelConfig(
            name=name,
            distinct=distinct,
            worker_count=worker_count or self.settings.concurrent,
        )

    async def create_channel(self, config: ChannelConfig) -> None:
        await self.store.create_channel(config)
        log.info(
            "channel %s created: worker_count=%d distinct=%s",
            config.name, config.worker_count, config.distinct,
        )  # fmt: skip

    @property
    def default_channel_names(self) -> tuple[str, ...]:
        """The channels ensured at start: the default one, and biz and cron where none exist."""
        return tuple(dict.fromkeys((self.settings.default_channel, *DEFAULT_CHANNELS)))

    async def ensure_default_channels(self) -> None:
        """Upstream's first start: default, biz and cron with distinct=true. Also called when
        the default channel is found gone (a Redis that lost its data: CONTRACT section 4)."""
        existing = await self.store.load_channels()
        wanted = [self.settings.default_channel]
        if not existing:
            wanted = list(self.default_channel_names)
        configs = [self.channel_config(name, distinct=True, worker_count=0) for name in wanted]
        for name in await self.store.create_channels(configs):
            log.info(
                "channel %s created (default, distinct, %d workers)", name, configs[0].worker_count
            )

    # -- reading --------------------------------------------------------------------------

    async def snapshots(self, channel: str | None = None) -> list[ChannelSnapshot]:
        channels = await self.store.load_channels()
        if channel is not None:
            validate_channel_name(channel)
            if channel not in channels:
                raise InvalidChannel(f"channel {channel!r} does not exist")
            names = [channel]
        else:
            names = sorted(channels)
        return [await self.store.channel_snapshot(name, limit=STATUS_TASKS_LIMIT) for name in names]

    # -- native API operations ------------------------------------------------------------

    async def get_job(self, job_id: str) -> dict[str, str]:
        record = await self.store.get_job(job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id!r}: it never existed or its record expired")
        return record

    async def wait_job(self, job_id: str, *, timeout_s: float) -> dict[str, str]:
        """The job's record once final, or as it is when `timeout_s` runs out."""
        record = await self.store.wait_final(job_id, timeout_s=timeout_s)
        if record is None:
            raise JobNotFound(f"no job {job_id!r}: it never existed or its record expired")
        return record

    async def list_jobs(
        self, *, channel: str | None, state: JobState | None, offset: int, limit: int
    ) -> tuple[list[dict[str, str]], int | None]:
        if channel is not None:
            await self.require_channel(channel)
            names = [channel]
        else:
            names = sorted(await self.store.load_channels())
        return await self.store.list_jobs(channels=names, state=state, offset=offset, limit=limit)

    async def require_channel(self, name: str) -> ChannelConfig:
        config = await self.store.get_channel(validate_channel_name(name))
        if config is None:
            raise InvalidChannel(f"channel {name!r} does not exist")
        return config

    def new_channel(self, name: str, fields: Mapping[str, Any]) -> ChannelConfig:
        """A channel from API fields; defaults: not distinct, --concurrent workers."""
        base = ChannelConfig(
            name=validate_channel_name(name), worker_count=self.settings.concurrent
        )
        return apply_channel_fields(base, fields)

    async def update_channel(self, name: str, fields: Mapping[str, Any]) -> ChannelConfig:
        apply_channel_fields(ChannelConfig(name=name), fields)  # refuse bad input before WATCH
        config = await self.store.update_channel(
            name, lambda current: apply_channel_fields(current, fields)
        )
        log.info("channel %s updated: %s", name, config.to_json())
        if self._channel_updated is not None:
            self._channel_updated(config)  # before other runners hear of it through pub/sub
        return config

    async def delete_channel(self, name: str) -> None:
        if name == self.settings.default_channel:
            raise Conflict(
                f"channel {name!r} is the default channel: it cannot be deleted"
                " (start runners with another --channel-default first)"
            )
        status = await self.store.delete_channel(name)
        if status == "missing":
            raise InvalidChannel(f"channel {name!r} does not exist")
        if status.startswith("busy"):
            _, queued, scheduled, running = status.split()
            raise Conflict(
                f"channel {name!r} still has {queued} queued, {scheduled} scheduled and"
                f" {running} running jobs: pause it and let them finish, or cancel them, first"
            )
        log.info("channel %s deleted", name)

    async def channel_counts(self, name: str) -> dict[str, int]:
        snap = await self.store.channel_snapshot(name, limit=0)
        return {"queued": snap.queued, "scheduled": snap.scheduled, "running": snap.running}

    async def stats(self) -> dict[str, Any]:
        channels = await self.store.load_channels()
        _, dead_total = await self.store.dead_jobs(offset=0, limit=0)
        return {
            "counters": await self.store.stats(),
            "today": await self.store.daily_counts(time.strftime("%Y-%m-%d")),
            "channels": {name: await self.channel_counts(name) for name in sorted(channels)},
            "dead_jobs": dead_total,
            "dead_letters": await self.store.dead_letter_count(),
            "runners": [
                {"id": runner_id, "last_seen": seen}
                for runner_id, seen in await self.store.runners()
            ],
        }

    async def retry_dead_job(self, job_id: str) -> None:
        admission = await self.store.retry_dead(job_id)
        if admission.status == "ok":
            log.info("dead job %s queued again", job_id, extra={"job_id": job_id})
            return
        if admission.status == "missing":
            raise JobNotFound(f"no job {job_id!r}: it never existed or its record expired")
        if admission.status == "duplicate":
            raise Conflict(
                f"job {job_id} is a duplicate of live job {admission.job_id} in a distinct"
                " channel: wait for that one to end"
            )
        if admission.status == "nochan":
            raise InvalidChannel(
                f"job {job_id}'s channel no longer exists: create it again, then retry"
            )
        raise Conflict(f"job {job_id} is {admission.status}, not dead: only dead jobs are retried")

    async def drop_dead_job(self, job_id: str) -> None:
        status = await self.store.drop_dead(job_id)
        if status == "missing":
            raise JobNotFound(f"no job {job_id!r}: it never existed or its record expired")
        if status != "dropped":
            raise Conflict(f"job {job_id} is {status}, not dead: only dead jobs are dropped")
        log.info("dead job %s dropped", job_id, extra={"job_id": job_id})

    async def take_dead_letter(self, letter_id: str, *, requeue: bool) -> dict[str, Any]:
        """Drop a dead letter, or (`requeue`) push its message back for routing: refused with
        Conflict for a message kept only in part (`truncated`)."""
        if requeue:
            found = await self.store.find_dead_letter(letter_id)
            if found is not None and found[1].get("truncated"):
                raise Conflict(_truncated_letter(letter_id, found[1]))
        entry = await self.store.take_dead_letter(letter_id, requeue=requeue)
        if entry is None:
            raise JobNotFound(
                f"no dead letter {letter_id!r}: list them with `taskrunner dead list`"
                " or GET /api/dead-letters"
            )
        log.info(
            "dead letter %s %s", letter_id, "pushed back for routing" if requeue else "dropped"
        )
        return entry


def _truncated_letter(letter_id: str, entry: dict[str, Any]) -> str:
    kept = len(str(entry.get("raw", "")).encode("utf-8", "surrogateescape"))
    return (
        f"dead letter {letter_id} cannot be retried: only the first {kept} bytes of its"
        f" {entry.get('size', '?')}-byte message were kept, so it cannot be retried whole;"
        " push the message again from its source, and drop this entry"
        f" (DELETE /api/dead-letters/{letter_id}, or `taskrunner dead drop {letter_id}`)"
    )


MAX_WORKERS = 1000
CHANNEL_FIELDS = frozenset(
    {"distinct", "worker_count", "paused", "timeout", "retries", "retry_intervals", "log_output",
     "allow"}
)  # fmt: skip


def apply_channel_fields(config: ChannelConfig, fields: Mapping[str, Any]) -> ChannelConfig:
    """`config` with the given API fields applied; InvalidJob naming any bad or unknown field."""
    unknown = sorted(set(fields) - CHANNEL_FIELDS - {"name"})
    if unknown:
        raise InvalidJob(
            f"unknown channel field(s) {', '.join(unknown)}: use {', '.join(sorted(CHANNEL_FIELDS))}"
        )
    changes: dict[str, Any] = {}
    for flag in ("distinct", "paused", "log_output"):
        if flag in fields:
            changes[flag] = _flag(fields[flag], flag)
    if "worker_count" in fields:
        workers = fields["worker_count"]
        text = str(workers).strip() if isinstance(workers, int | str) else ""
        if (
            isinstance(workers, bool)
            or not (text.isascii() and text.isdigit() and len(text) <= 4)
            or not 1 <= int(text) <= MAX_WORKERS
        ):
            raise InvalidJob(
                f'"worker_count" must be a whole number from 1 to {MAX_WORKERS},'
                f" got {brief(workers)}"
            )
        changes["worker_count"] = int(text)
    if "timeout" in fields:
        changes["timeout_s"] = parse_seconds(fields["timeout"], "timeout")
    if "retry_intervals" in fields:
        changes["retry_intervals"] = parse_intervals(fields["retry_intervals"])
    if "allow" in fields:
        changes["allow"] = parse_patterns(fields["allow"], "allow")
    if "retries" in fields:
        changes["retries"] = parse_count(fields["retries"], "retries")
    elif changes.get("retry_intervals"):
        changes["retries"] = len(changes["retry_intervals"])
    return replace(config, **changes)


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise InvalidJob(f'"{name}" must be true or false, got {brief(value)}')
