"""Channels: their settings (one JSON value each in the channels hash), created, changed and
deleted with a notice to every runner."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from taskrunner.errors import ChannelExists, ChannelNotFound, InvalidChannel, InvalidJob
from taskrunner.models import ChannelConfig
from taskrunner.store.base import StoreBase
from taskrunner.store.records import text
from taskrunner.validation import validate_channel_name

log = logging.getLogger("taskrunner.store")


class ChannelOps(StoreBase):
    """Store operations on channels (see the module)."""

    _unusable_channels: AbstractSet[tuple[str, str]] = frozenset()  # warned about, as stored

    async def load_channels(self) -> dict[str, ChannelConfig]:
        """Every usable channel. An unusable entry (a name or JSON written by hand) is skipped
        with one warning, said again only when the entry changes: this runs every second."""
        raw = await self.redis.hgetall(self.keys.channels)
        channels = {}
        unusable = set()
        for name_b, value in raw.items():
            name = text(name_b)
            try:
                channels[name] = ChannelConfig.from_json(validate_channel_name(name), value)
            except (InvalidChannel, InvalidJob) as exc:  # hand-written JSON: skip, do not stop
                entry = (name, text(value))
                unusable.add(entry)
                if entry not in self._unusable_channels:
                    log.warning(
                        "ignoring stored channel %r: %s (fix or HDEL it in %s)",
                        name[:100], exc, self.keys.channels,
                    )  # fmt: skip
        self._unusable_channels = unusable
        return channels

    async def get_channel(self, name: str) -> ChannelConfig | None:
        raw = await self.redis.hget(self.keys.channels, validate_channel_name(name))
        return None if raw is None else ChannelConfig.from_json(name, raw)

    async def create_channel(self, config: ChannelConfig, *, exist_ok: bool = False) -> bool:
        """Create a channel; False if it existed and `exist_ok`, else ChannelExists."""
        created = await self.redis.hsetnx(self.keys.channels, config.name, config.to_json())
        if not created and not exist_ok:
            raise ChannelExists(f"channel {config.name!r} already exists")
        if created:
            await self.redis.publish(self.keys.channel_events, config.name)
        return bool(created)

    async def create_channels(self, configs: Sequence[ChannelConfig]) -> list[str]:
        """Create those of the channels that do not exist, in one transaction: a runner reading
        the channels meanwhile sees all of them or none. Returns the names created."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for config in configs:
                pipe.hsetnx(self.keys.channels, config.name, config.to_json())
            done = await pipe.execute()
        created = [config.name for config, new in zip(configs, done, strict=True) if new]
        for name in created:
            await self.redis.publish(self.keys.channel_events, name)
        return created

    async def put_channel(self, config: ChannelConfig) -> None:
        await self.redis.hset(self.keys.channels, config.name, config.to_json())
        await self.redis.publish(self.keys.channel_events, config.name)

    async def update_channel(
        self, name: str, change: Callable[[ChannelConfig], ChannelConfig]
    ) -> ChannelConfig:
        """Read, change and write one channel atomically (WATCH); ChannelNotFound if missing."""
        key = self.keys.channels
        validate_channel_name(name)
        updated: ChannelConfig | None = None

        async def apply(pipe: Any) -> None:
            nonlocal updated
            raw = await pipe.hget(key, name)
            if raw is None:
                raise ChannelNotFound(f"channel {name!r} does not exist")
            updated = change(ChannelConfig.from_json(name, raw))
            pipe.multi()
            pipe.hset(key, name, updated.to_json())

        await self.redis.transaction(apply, key)
        await self.redis.publish(self.keys.channel_events, name)
        assert updated is not None
        return updated

    async def delete_channel(self, name: str) -> str:
        """'deleted', 'missing', or 'busy Q S R' when jobs still wait or run in it."""
        k = self.keys
        ch = validate_channel_name(name)
        status = text(
            await self._run(
                "delete_channel",
                [k.channels, k.queue(ch), k.scheduled(ch), k.running(ch), k.distinct(ch),
                 k.recent(ch), k.channel_job_index(ch), k.index_sweep],
                [ch],
            )
        )  # fmt: skip
        if status == "deleted":
            await self.redis.publish(self.keys.channel_events, name)
        return status
