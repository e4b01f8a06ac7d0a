"""A channel's configuration (`ChannelConfig`) as stored in the `task:channels` hash."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from taskrunner.allow import parse_patterns
from taskrunner.errors import InvalidChannel, InvalidJob
from taskrunner.validation import (
    parse_count,
    parse_intervals,
    parse_seconds,
    validate_channel_name,
)


class ChannelConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A channel as stored in the `task:channels` hash (upstream's layout plus our fields)."""

    name: str
    distinct: bool = False
    worker_count: int = 5
    paused: bool = False
    timeout_s: float = msgspec.field(default=0.0, name="timeout")
    retries: int = 0
    retry_intervals: tuple[float, ...] = ()
    log_output: bool = False  # log each ended job's captured output lines
    allow: tuple[str, ...] = ()  # allowlist of programs (taskrunner.allow); () = any program

    def __post_init__(self) -> None:
        validate_channel_name(self.name)  # every key of a channel is built from a valid name

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, name: str, raw: str | bytes) -> ChannelConfig:
        """Load a stored channel, tolerating upstream's layout and missing fields."""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise InvalidChannel(f"channel {name!r} is stored as invalid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidChannel(
                f"channel {name!r} is stored as {type(data).__name__}, not an object"
            )
        return cls(
            name=name,
            distinct=_as_bool(data.get("distinct", False)),
            worker_count=max(0, parse_count(data.get("worker_count", 5), "worker_count")),
            paused=_as_bool(data.get("paused", False)),
            timeout_s=parse_seconds(data.get("timeout", 0), "timeout"),
            retries=max(0, parse_count(data.get("retries", 0), "retries")),
            retry_intervals=parse_intervals(data.get("retry_intervals", ())),
            log_output=_as_bool(data.get("log_output", False)),
            allow=_stored_patterns(name, data.get("allow")),
        )

    def as_dict(self) -> dict[str, Any]:
        """The stored (and API) form; `log_output` and `allow` only when set, so a channel
        without them keeps upstream's layout."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        for name in ("log_output", "allow"):
            if not data[name]:
                del data[name]
        return data


def _as_bool(value: Any) -> bool:
    """A stored flag: upstream writes booleans, hand-edited hashes may hold "1"/"true"."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _stored_patterns(channel: str, value: Any) -> tuple[str, ...]:
    """A stored channel's allowlist; a bad one refuses the channel rather than dropping the list."""
    try:
        return parse_patterns(value)
    except InvalidJob as exc:
        raise InvalidChannel(
            f"channel {channel!r} is stored with a bad allowlist: {exc}; fix it with"
            f" `taskrunner queue update {channel} --allow PATTERN`"
        ) from exc
