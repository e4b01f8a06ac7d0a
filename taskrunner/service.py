"""The service core every adapter calls (ingress, the HTTP APIs, CLI, client): admit jobs,
manage channels, read. Adapters never reach the store themselves.

`Service.admit` is the one admission path: allowlists, dedup and known ids, channels made on
first use, batching; `push` adds the push deadline for a client's single job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskrunner.admission import (
    ChannelAllowlists,
    ChannelLookup,
    Refused,
    log_admission,
)
from taskrunner.allow import check_program
from taskrunner.channel_fields import apply_channel_fields, parse_worker_count
from taskrunner.dead import DeadItems, no_job
from taskrunner.errors import (
    ChannelNotFound,
    Conflict,
    NotAllowed,
    OutcomeUnknown,
    StoreUnavailable,
)
from taskrunner.kingtask import (
    KINGTASK_CHANNEL,
    in_kingtask_channel,
    missing_channel_hint,
    program_of,
)
from taskrunner.models import RPC, ChannelConfig, Job
from taskrunner.parsing import job_from_fields
from taskrunner.service_reads import ServiceReads
from taskrunner.store import (
    DEAD_LETTER_RAW_BYTES,
    REQUEST_CONNECTIONS,
    Admission,
    ChannelSnapshot,
    Notice,
    Store,
    Subscription,
)
from taskrunner.validation import Limits, validate_channel_name

# What adapters (HTTP APIs, CLI, client) use of the store's types: they import the service only.
__all__ = [
    "DEAD_LETTER_RAW_BYTES",
    "REQUEST_CONNECTIONS",
    "Admission",
    "ChannelSnapshot",
    "Notice",
    "Service",
    "ServiceSettings",
    "Subscription",
]

log = logging.getLogger("taskrunner.service")

PUSH_DEADLINE_S = 1.8  # a push answers within this, even when Redis does not

DEFAULT_CHANNELS = ("biz", "cron")


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
    # the runner's --default-channels: biz and cron are default channels too (False: only the
    # default one is, and biz or cron an operator deleted stay deleted)
    default_channels: bool = True


# Told of a channel this process just changed, so its own next request sees the change.
ChannelUpdated = Callable[[ChannelConfig], None]


class Service(DeadItems, ServiceReads):
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

    @classmethod
    def from_url(cls, url: str, settings: ServiceSettings) -> Service:
        """A service on the Redis at `url` (any form taskrunner accepts: redis://, rediss://,
        unix://, redis+sentinel://)."""
        return cls(Store.from_url(url), settings)

    @property
    def url_for_logs(self) -> str:
        """The store's Redis URL, its password redacted."""
        return self.store.url_for_logs

    async def ping(self) -> None:
        """StoreUnavailable, naming the address, unless Redis answers (see Store.ping)."""
        await self.store.ping()

    async def close(self) -> None:
        """Close the store's connections (the caller made this service with `from_url`)."""
        await self.store.close()

    def subscribe_changes(self) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """A subscription to every notice of a change a page shows: jobs' states, queues
        moving, channels' settings, dead letters."""
        k = self.store.keys
        return self.store.subscribe(
            k.job_events, k.wake_events, k.schedule_events, k.channel_events,
            k.dead_letter_events,
        )  # fmt: skip

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
        """`push` the job the fields describe; InvalidJob / InvalidChannel on bad input."""
        return await self.push(self.parse_job(fields), source=source)

    async def push(self, job: Job, *, source: str) -> Admission:
        """Admit one job a client pushed, within PUSH_DEADLINE_S (else OutcomeUnknown). Raises
        NotAllowed when an allowlist refuses its program, ChannelNotFound when its channel does
        not exist; a duplicate's admission is returned (see `accepted_id`)."""
        async with self.push_deadline(job):
            (admission,) = await self.admit([job], source=source)
        if isinstance(admission, Refused):
            raise admission.error
        if admission.status == "nochan":
            raise ChannelNotFound(
                f"channel {job.channel!r} does not exist: {missing_channel_hint(job)}"
            )
        return admission

    @contextlib.asynccontextmanager
    async def push_deadline(self, job: Job) -> AsyncIterator[None]:
        """Bound a push's Redis calls by PUSH_DEADLINE_S. OutcomeUnknown, naming the job's id
        (safe to push again: a job with that id runs once), when Redis did not answer in time
        or failed: the job may have been queued all the same."""
        try:
            async with asyncio.timeout(PUSH_DEADLINE_S):
                yield
        except (TimeoutError, StoreUnavailable) as exc:
            why = "did not answer" if isinstance(exc, TimeoutError) else f"failed ({exc})"
            raise OutcomeUnknown(
                f"Redis {why} within {PUSH_DEADLINE_S:g} s: job {job.id} may or may not be"
                f' queued; push it again with "id": "{job.id}" to be sure (a job with that id'
                " runs once)",
                job_id=job.id,
            ) from exc

    async def admit(
        self, jobs: Sequence[Job], *, source: str, messages: Sequence[bytes] = ()
    ) -> list[Admission]:
        """Admit jobs, one admission each in order: a job whose program an allowlist refuses is
        `Refused` and not queued; the others are queued in one round trip (see Admission; a
        lone job shares its round trip with concurrent pushes). A channel made on first use
        found missing (kingtask's, or a default one Redis lost) is created and its jobs queued
        again. `messages`, at ingress: the prepare-queue messages the jobs were parsed from,
        each dropped from the in-flight list as its job is admitted."""
        raws = list(messages) or [b""] * len(jobs)
        refusals = [await self._refusal(job) for job in jobs]
        items = [(j, raw) for j, raw, no in zip(jobs, raws, refusals, strict=True) if no is None]
        queued = iter(await self._enqueue(items))
        admissions = [
            next(queued) if no is None else Refused("notallowed", job.id, error=no)
            for job, no in zip(jobs, refusals, strict=True)
        ]
        for job, admission in zip(jobs, admissions, strict=True):
            log_admission(job, admission, source)
        return admissions

    async def _refusal(self, job: Job) -> NotAllowed | None:
        try:
            await self.check_allowed(job)
        except NotAllowed as exc:
            return exc
        return None

    async def _enqueue(self, items: Sequence[tuple[Job, bytes]]) -> list[Admission]:
        admissions = await self._enqueue_batch(items)
        lost = [
            i for i, (admission, (job, _)) in enumerate(zip(admissions, items, strict=True))
            if admission.status == "nochan" and self._made_on_first_use(job)
        ]  # fmt: skip
        if lost:
            await self._create_on_first_use([items[i][0] for i in lost])
            again = await self._enqueue_batch([items[i] for i in lost])
            for i, admission in zip(lost, again, strict=True):
                admissions[i] = admission
        return admissions

    async def _enqueue_batch(self, items: Sequence[tuple[Job, bytes]]) -> list[Admission]:
        runner_id = self.settings.runner_id
        if len(items) == 1:  # coalesced with the pushes of this event-loop turn
            job, raw = items[0]
            return [await self.store.enqueue(job, runner_id=runner_id, raw=raw)]
        return await self.store.enqueue_many(items, runner_id=runner_id) if items else []

    def _made_on_first_use(self, job: Job) -> bool:
        """kingtask's channel, and (on a runner) the default channels, which Redis may lose
        with its data: CONTRACT section 4."""
        restores = self.settings.restores_default_channels
        return in_kingtask_channel(job) or (restores and job.channel in self.default_channel_names)

    async def _create_on_first_use(self, jobs: Sequence[Job]) -> None:
        restores = self.settings.restores_default_channels
        if restores and any(job.channel in self.default_channel_names for job in jobs):
            await self.ensure_default_channels()  # gone with Redis's data: they come back
        if any(in_kingtask_channel(job) for job in jobs):
            config = self.channel_config(KINGTASK_CHANNEL, distinct=False)
            if await self.store.create_channel(config, exist_ok=True):
                log.info(
                    "channel %s created for kingtask jobs (%d workers)",
                    config.name, config.worker_count,
                )  # fmt: skip

    async def check_allowed(self, job: Job) -> None:
        """Raise NotAllowed unless the runner's allowlist and the job's channel's admit the
        program the job would run (rpc jobs run none). Runners check again at run time."""
        if job.kind == RPC:
            return
        channel_allow = await self._allowlists.get(job.channel)
        if not (self.settings.allow or channel_allow):
            return  # any program: no need to split a (maybe big) task line to find it
        program = program_of(job, shell=self.settings.shell, bin_path=self.settings.bin_path)
        if program is None:
            return
        check_program(
            program, runner=self.settings.allow, channel=channel_allow, channel_name=job.channel
        )

    async def cancel(self, job_id: str, *, result_ttl_s: int | None = None) -> str:
        """Cancel a queued, scheduled or running job; returns the state it is in now."""
        ttl_s = self.settings.result_ttl_s if result_ttl_s is None else result_ttl_s
        state = await self.store.cancel(job_id, result_ttl_s=ttl_s)
        if state == "missing":
            raise no_job(job_id)
        return state

    # -- channels -------------------------------------------------------------------------

    def channel_config(
        self,
        name: str,
        *,
        distinct: bool,
        worker_count: object = 0,
        worker_field: str = "worker count",
    ) -> ChannelConfig:
        """A new channel's settings. `worker_count` as the client gave it (0 or blank: the
        runner's --concurrent); `worker_field` names it in the error when it is not a valid count."""
        workers = parse_worker_count(worker_count, worker_field, zero_ok=True)
        return ChannelConfig(
            name=validate_channel_name(name),
            distinct=distinct,
            worker_count=workers or self.settings.concurrent,
        )

    async def create_channel(self, config: ChannelConfig) -> None:
        await self.store.create_channel(config)
        log.info(
            "channel %s created: worker_count=%d distinct=%s",
            config.name, config.worker_count, config.distinct,
        )  # fmt: skip

    @property
    def default_channel_names(self) -> tuple[str, ...]:
        """The channels ensured at start: the default one, and biz and cron unless the runner
        runs with --no-default-channels."""
        extra = DEFAULT_CHANNELS if self.settings.default_channels else ()
        return tuple(dict.fromkeys((self.settings.default_channel, *extra)))

    async def ensure_default_channels(self) -> None:
        """As upstream on every start (channel.go): create those of the default channels that
        are missing, with distinct=true; existing ones are left as they are. Also called when
        the default channel is found gone (a Redis that lost its data: CONTRACT section 4)."""
        configs = [self.channel_config(name, distinct=True) for name in self.default_channel_names]
        for name in await self.store.create_channels(configs):
            log.info(
                "channel %s created (default, distinct, %d workers)", name, configs[0].worker_count
            )

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
            raise ChannelNotFound(f"channel {name!r} does not exist")
        if status.startswith("busy"):
            _, queued, scheduled, running = status.split()
            raise Conflict(
                f"channel {name!r} still has {queued} queued, {scheduled} scheduled and"
                f" {running} running jobs: pause it and let them finish, or cancel them, first"
            )
        log.info("channel %s deleted", name)
