"""Plain-text tables for the CLI: fixed-width columns, long cells cut to one line."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from msgspec import UNSET, UnsetType

from taskrunner.models import JobRecord

# A column: its header and width; a negative width right-aligns (numbers).
Column = tuple[str, int]

JOB_COLUMNS: Sequence[Column] = (
    ("ID", 36), ("CHANNEL", 16), ("STATE", 9), ("ATTEMPT", -7), ("CREATED", 19), ("TASK", 48),
    ("NOTE", 32),
)  # fmt: skip
DEAD_JOB_COLUMNS: Sequence[Column] = (
    ("ID", 36), ("CHANNEL", 16), ("ATTEMPTS", -8), ("FINISHED", 19), ("LAST ERROR", 48),
)  # fmt: skip
DEAD_LETTER_COLUMNS: Sequence[Column] = (
    ("ID", 16), ("TIME", 19), ("REASON", 48), ("MESSAGE", 40),
)  # fmt: skip
CHANNEL_COLUMNS: Sequence[Column] = (
    ("CHANNEL", 24), ("WORKERS", -7), ("DISTINCT", -8), ("PAUSED", -6), ("QUEUED", -8),
    ("SCHEDULED", -9), ("RUNNING", -7),
)  # fmt: skip


def render(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> str:
    """A header line and one line per row; trailing blanks are trimmed."""
    lines = [_line(columns, [header for header, _ in columns])]
    lines += [_line(columns, row) for row in rows]
    return "\n".join(lines)


def cut(value: Any, width: int) -> str:
    """`value` as one line of at most `width` characters ('...' marks a cut; None, "" and a
    record's UNSET are '-')."""
    text = "-" if value in (None, "", UNSET) else " ".join(str(value).split())
    if text_columns(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        used += text_columns(char)
        if used > width - 3:
            break
        kept.append(char)
    return "".join(kept) + "..."


def text_columns(text: str) -> int:
    """How many terminal columns `text` takes: East Asian wide and full-width characters
    (`报表`) take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )


def when(unix_s: float | UnsetType | None) -> str:
    """Local time of a unix timestamp, to the second ('-' for none)."""
    if unix_s is None or isinstance(unix_s, UnsetType):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_s))


def job_rows(jobs: Iterable[JobRecord]) -> list[list[Any]]:
    """Rows of JOB_COLUMNS from job records."""
    return [[j.id, j.channel, j.state, j.attempt, when(j.created_at), j.task, j.note] for j in jobs]


def dead_job_rows(jobs: Iterable[JobRecord]) -> list[list[Any]]:
    """Rows of DEAD_JOB_COLUMNS from job records."""
    return [[j.id, j.channel, j.attempt, when(j.finished_at), j.error] for j in jobs]


def dead_letter_rows(letters: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """Rows of DEAD_LETTER_COLUMNS from dead-letter entries."""
    return [
        [entry["id"], when(_number(entry.get("at"))), entry.get("reason"), _letter_text(entry)]
        for entry in letters
    ]


def _letter_text(entry: Mapping[str, Any]) -> Any:
    """A dead letter's message; one kept only in part says so (it cannot be retried)."""
    if not entry.get("truncated"):
        return entry.get("raw")
    return f"[first bytes of {entry.get('size')}] {entry.get('raw', '')}"


def channel_rows(channels: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """Rows of CHANNEL_COLUMNS from channel settings merged with their counts."""
    return [
        [c["name"], c["worker_count"], c["distinct"], c["paused"], c["queued"], c["scheduled"],
         c["running"]]
        for c in channels
    ]  # fmt: skip


def _line(columns: Sequence[Column], cells: Sequence[Any]) -> str:
    parts = []
    for (_, width), cell in zip(columns, cells, strict=True):
        text = cut(cell, abs(width))
        pad = " " * (abs(width) - text_columns(text))
        parts.append(pad + text if width < 0 else text + pad)
    return " ".join(parts).rstrip()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
