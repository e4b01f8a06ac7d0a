"""Typed, JSON-ready views of stored records, shared by the native API, the CLI and the client."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from taskrunner.executor import describe_signal
from taskrunner.jobs import FINAL_STATES, JobState

_FLOATS = ("ts", "run_at", "created_at", "started_at", "finished_at", "duration", "timeout")
_INTS = ("attempt", "retries", "exit_code", "signal", "pid", "http_status", "revived")
_MS_TIMES = ("due_at",)  # stored in milliseconds, shown in seconds like every other time


def job_view(record: Mapping[str, str]) -> dict[str, Any]:
    """A job record as JSON types: numbers as numbers, flags as booleans, empty as null."""
    view: dict[str, Any] = {}
    for name, value in record.items():
        if value == "" and name not in ("stdout", "stderr"):
            view[name] = None
        elif name in _FLOATS:
            view[name] = _number(value, float)
        elif name in _INTS:
            view[name] = _number(value, int)
        elif name in _MS_TIMES:
            ms = _number(value, float)
            view[name] = None if ms is None else ms / 1000
        elif name == "args":
            view[name] = _json_list(value)
        elif name == "retry_intervals":
            view[name] = [float(item) for item in value.split()]
        elif name.endswith("_truncated") or name == "cancel_requested":
            view[name] = value == "1"
        else:
            view[name] = value
    state = record.get("state", "")
    view["final"] = state in FINAL_STATES
    view.setdefault("kind", "command")
    if view.get("signal") is not None:
        view["signal_name"] = describe_signal(int(view["signal"]))
    return view


def is_final(record: Mapping[str, str]) -> bool:
    return record.get("state", "") in {s.value for s in FINAL_STATES}


def parse_state(value: str | None) -> JobState | None:
    """A state filter from a query string; ValueError naming the accepted states."""
    if not value:
        return None
    try:
        return JobState(value)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise ValueError(f"unknown state {value!r}: use one of {names}") from None


def _number(value: str, kind: type[int] | type[float]) -> int | float | None:
    try:
        return kind(float(value)) if kind is int else kind(value)
    except ValueError:
        return None


def _json_list(value: str) -> list[Any] | str:
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, list) else value
