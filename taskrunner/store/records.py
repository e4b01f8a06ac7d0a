"""What store operations return (typed records), and the decoding of what Redis holds into
them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from taskrunner.models import JOB_RECORD_NAMES, Job

# Bytes of a refused message a dead letter keeps: any command line a queue normally carries is
# kept whole (and can be retried); of a longer message, its first bytes and its size.
DEAD_LETTER_RAW_BYTES: Final = 8192
HANDED_BACK: Final = "handed_back"  # Store.hand_back: the job is queued again

# Fields a claim returns, in this order (see lua/claim.lua): the Job's, and the attempt's.
CLAIM_FIELDS: Final = (*JOB_RECORD_NAMES, "attempt", "due_at")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job this runner now owns for one attempt; `due_at`: unix seconds it was due to start
    (its retry's or run_at's due time, else its creation)."""

    job: Job
    attempt: int
    due_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Admission:
    """What happened to an enqueue: `status` is 'ok' (created), 'exists' (a job has this id
    already: a retried push; nothing created), 'duplicate' (refused: a live job has the same
    dedup key in a distinct channel; `job_id` is that job's) or 'nochan'."""

    status: str
    job_id: str

    @property
    def accepted(self) -> bool:
        """The job with this id is in the queue's hands: created now, or by an earlier push."""
        return self.status in ("ok", "exists")


@dataclass(frozen=True, slots=True)
class TakenMessages:
    """What one take from the prepare queue gave: messages to route, and the sizes of those
    dead-lettered in Redis for being over the size limit."""

    messages: list[bytes]
    refused_sizes: list[int]


def dead_letter_entry(item: bytes | str) -> dict[str, Any]:
    """A stored dead letter, decoded, with a stable `id` (a hash of the entry)."""
    # surrogateescape, then backslashreplace: take_batch.lua keeps a message's bytes as they
    # came, so a byte that is not UTF-8 shows as \xNN, as in the entries written from Python.
    decoded = item.decode("utf-8", "surrogateescape") if isinstance(item, bytes) else item
    try:
        entry = json.loads(decoded)
    except ValueError:
        entry = {"reason": "unreadable dead-letter entry", "raw": decoded}
    if not isinstance(entry, dict):
        entry = {"reason": "unreadable dead-letter entry", "raw": decoded}
    for name, value in entry.items():
        if isinstance(value, str):
            entry[name] = value.encode("utf-8", "surrogateescape").decode(
                "utf-8", "backslashreplace"
            )
    entry["id"] = hashlib.sha1(as_bytes(item)).hexdigest()[:16]
    return entry


@dataclass(frozen=True, slots=True)
class JobSummary:
    id: str
    task: str
    has_dedup_mark: bool
    state: str
    task_truncated: bool = False  # only the first SUMMARY_TEXT_BYTES of the command are in `task`


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    channel: str
    queued: int
    running: int
    scheduled: int
    jobs: list[JobSummary]


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueCounts:
    """Counts over every runner: jobs by channel, dead jobs, dead letters kept."""

    queued: dict[str, int]
    scheduled: dict[str, int]
    running: dict[str, int]
    dead_jobs: int
    dead_letters: int


def claimed_jobs(rows: Sequence[Sequence[Any]]) -> list[Claimed]:
    claimed = []
    for row in rows:
        record = {f: text(v) for f, v in zip(CLAIM_FIELDS, row, strict=True) if v is not None}
        due_ms = record.get("due_at")
        due_at = float(due_ms) / 1000 if due_ms else float(record.get("created_at") or 0)
        claimed.append(Claimed(Job.from_record(record), int(record["attempt"]), due_at))
    return claimed


def utf8_prefix(data: bytes, max_bytes: int) -> bytes:
    """The first `max_bytes` bytes of `data`, not cutting a UTF-8 sequence in two (as
    lua/take_batch.lua does)."""
    if len(data) <= max_bytes:
        return data
    cut = max_bytes
    while cut > max(0, max_bytes - 3) and 0x80 <= data[cut] < 0xC0:  # a continuation byte
        cut -= 1
    return data[:cut]


def text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
