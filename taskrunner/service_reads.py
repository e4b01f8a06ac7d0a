"""The service's reads, for the HTTP APIs, the dashboard, the CLI and the client: channel
snapshots and counts, job records (one, a page, or waited for until final), counters.

`ServiceReads` is a base class of `Service` (one service object, as with `dead.DeadItems`):
it keeps the read-only half of the service apart from admission and channel changes."""

from __future__ import annotations

import time
from typing import Any

from taskrunner.dead import no_job
from taskrunner.errors import ChannelNotFound
from taskrunner.models import ChannelConfig, JobQuery, JobRecord
from taskrunner.store import ChannelSnapshot, Store
from taskrunner.validation import validate_channel_name

STATUS_TASKS_LIMIT = 100  # the jobs a channel snapshot lists


class ServiceReads:
    """`Service`'s read-only operations (a base class: one service object)."""

    store: Store

    async def snapshots(self, channel: str | None = None) -> list[ChannelSnapshot]:
        """Each channel's counts and first jobs (only `channel`'s if given), by name."""
        channels = await self.store.load_channels()
        if channel is not None:
            validate_channel_name(channel)
            if channel not in channels:
                raise ChannelNotFound(f"channel {channel!r} does not exist")
            names = [channel]
        else:
            names = sorted(channels)
        return [await self.store.channel_snapshot(name, limit=STATUS_TASKS_LIMIT) for name in names]

    async def find_job(self, job_id: str) -> JobRecord | None:
        """The job's record; None if it never existed or its record expired."""
        return await self.store.get_job(job_id)

    async def get_job(self, job_id: str) -> JobRecord:
        """The job's record; JobNotFound if it never existed or its record expired."""
        record = await self.store.get_job(job_id)
        if record is None:
            raise no_job(job_id)
        return record

    async def wait_job(self, job_id: str, *, timeout_s: float) -> JobRecord:
        """The job's record once final, or as it is when `timeout_s` runs out."""
        record = await self.store.wait_final(job_id, timeout_s=timeout_s)
        if record is None:
            raise no_job(job_id)
        return record

    async def list_jobs(self, query: JobQuery) -> tuple[list[JobRecord], str | None]:
        """A page of job summaries, newest first across the channels (or the query's one), and
        the cursor of the next page (None at the end). ChannelNotFound for an unknown channel."""
        if query.channel is not None:
            await self.require_channel(query.channel)
            names = [query.channel]
        else:
            names = sorted(await self.store.load_channels())
        records, place = await self.store.list_jobs(query, channels=names)
        return records, None if place is None else place.cursor()

    async def require_channel(self, name: str) -> ChannelConfig:
        """The channel's settings; ChannelNotFound if there is no such channel."""
        config = await self.store.get_channel(validate_channel_name(name))
        if config is None:
            raise ChannelNotFound(f"channel {name!r} does not exist")
        return config

    async def channels(self) -> list[dict[str, Any]]:
        """Every channel's settings and job counts (`describe_channel`), by name."""
        configs = await self.store.load_channels()
        return [await self.describe_channel(configs[name]) for name in sorted(configs)]

    async def describe_channel(self, config: ChannelConfig) -> dict[str, Any]:
        """A channel's settings with its queued, scheduled and running counts."""
        return {**config.as_dict(), **await self.channel_counts(config.name)}

    async def channel_counts(self, name: str) -> dict[str, int]:
        """The channel's queued, scheduled and running job counts."""
        snap = await self.store.channel_snapshot(name, limit=0)
        return {"queued": snap.queued, "scheduled": snap.scheduled, "running": snap.running}

    async def stats(self) -> dict[str, Any]:
        """Counters, today's counts, per-channel counts, dead totals and live runners."""
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

    async def counters(self) -> dict[str, int]:
        """The lifetime counters (jobs routed, succeeded, failed, dead letters, ...)."""
        return await self.store.stats()

    async def daily_counts(self, date: str) -> dict[str, int]:
        """Jobs succeeded and failed on `date` (YYYY-MM-DD)."""
        return await self.store.daily_counts(date)

    async def undo_count(self) -> int:
        """kingtask's backlog over all channels: queued jobs plus scheduled ones already due."""
        return await self.store.undo_count()
