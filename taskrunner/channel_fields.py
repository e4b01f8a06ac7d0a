"""A channel's settings from request fields (native API, `POST /queue`, CLI), in one place.

Worker counts arrive as numbers or as their digits (forms send text); each path keeps the range
it has always had: creating a channel takes 0 for the runner's --concurrent, changing one does
not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec.structs import replace

from taskrunner.allow import parse_patterns
from taskrunner.errors import InvalidJob
from taskrunner.models import ChannelConfig
from taskrunner.validation import brief, parse_count, parse_intervals, parse_seconds

MAX_WORKERS = 1000
CHANNEL_FIELDS = frozenset(
    {"distinct", "worker_count", "paused", "timeout", "retries", "retry_intervals", "log_output",
     "allow"}
)  # fmt: skip


def parse_worker_count(value: Any, name: str, *, zero_ok: bool) -> int:
    """A worker count given as a whole number or its digits (blank is 0), from 1 to
    MAX_WORKERS, or from 0 with `zero_ok` (0 = the runner's --concurrent); InvalidJob naming
    `name` otherwise."""
    low = 0 if zero_ok else 1
    text = (str(value).strip() or "0") if isinstance(value, int | str) else ""
    if (
        isinstance(value, bool)
        or not (text.isascii() and text.isdigit() and len(text) <= 4)
        or not low <= int(text) <= MAX_WORKERS
    ):
        default = " (0 = --concurrent)" if zero_ok else ""
        raise InvalidJob(
            f"{name} must be a whole number from {low} to {MAX_WORKERS}{default},"
            f" got {brief(value)}"
        )
    return int(text)


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
        changes["worker_count"] = parse_worker_count(
            fields["worker_count"], '"worker_count"', zero_ok=False
        )
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
