"""The service core every adapter calls (HTTP APIs, CLI): submit jobs, manage channels, read."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskrunner.errors import InvalidChannel, InvalidJob, JobNotFound
from taskrunner.jobs import ChannelConfig, Job, Limits, job_from_fields, validate_channel_name
from taskrunner.store import Admission, ChannelSnapshot, Store

log = logging.getLogger("taskrunner.service")

DEFAULT_CHANNELS = ("biz", "cron")
STATUS_TASKS_LIMIT = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSettings:
    runner_id: str
    default_channel: str = "default"
    concurrent: int = 5
    limits: Limits = field(default_factory=Limits)


class Service:
    def __init__(self, store: Store, settings: ServiceSettings) -> None:
        self.store = store
        self.settings = settings

    # -- jobs -----------------------------------------------------------------------------

    def parse_job(self, fields: Mapping[str, Any]) -> Job:
        return job_from_fields(
            fields,
            default_channel=self.settings.default_channel,
            now=time.time(),
            limits=self.settings.limits,
        )

    async def submit(self, fields: Mapping[str, Any], *, source: str) -> Admission:
        """Validate and enqueue one job; raise InvalidJob / InvalidChannel on bad input."""
        job = self.parse_job(fields)
        admission = await self.store.enqueue(job, runner_id=self.settings.runner_id)
        if admission.status == "nochan":
            raise InvalidChannel(
                f"channel {job.channel!r} does not exist: create it first"
                " (POST /queue name=... or `taskrunner queue create NAME`)"
            )
        log.debug("job %s %s from %s", admission.job_id, admission.status, source)
        return admission

    async def cancel(self, job_id: str, *, result_ttl_s: int = 86400) -> str:
        """Cancel a queued, scheduled or running job; returns the state it is in now."""
        state = await self.store.cancel(job_id, result_ttl_s=result_ttl_s)
        if state == "missing":
            raise JobNotFound(f"no job {job_id!r}: it never existed or its record expired")
        return state

    # -- channels -------------------------------------------------------------------------

    def channel_config(self, name: str, *, distinct: bool, worker_count: int) -> ChannelConfig:
        validate_channel_name(name)
        if worker_count < 0:
            raise InvalidJob(
                f"worker count must be 0 or more (0 = --concurrent), got {worker_count}"
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

    async def ensure_default_channels(self) -> None:
        """Upstream's first start: default, biz and cron with distinct=true."""
        existing = await self.store.load_channels()
        wanted = [self.settings.default_channel]
        if not existing:
            wanted += [name for name in DEFAULT_CHANNELS if name not in wanted]
        for name in wanted:
            config = self.channel_config(name, distinct=True, worker_count=0)
            if await self.store.create_channel(config, exist_ok=True):
                log.info(
                    "channel %s created (default, distinct, %d workers)", name, config.worker_count
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
