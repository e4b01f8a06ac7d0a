"""A job as a producer gives it (`Job`), its kinds, and the states a job moves through.

`Job` is what every admission path builds and what the store writes at enqueue; its
record form (`to_record`/`from_record`) and the claim's field list derive from the class."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from taskrunner.shellwords import split_command
from taskrunner.validation import parse_intervals

# Job kinds: a command line (TaskRunner), or kingtask's script and rpc jobs.
COMMAND = "command"
SCRIPT = "script"
RPC = "rpc"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.DEAD})


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """One job as accepted from a producer, before any attempt: the fields stored at enqueue.

    `kind` is "command" (run `task`), "script" (run the file `task` inside --bin-path with
    `args`) or "rpc" (send an HTTP `method` request to `url` with `body`). A field's record
    name is its encoded name (`timeout_s` is stored as `timeout`); `to_record`, `from_record`,
    the claim's field list and the record model all derive from this class."""

    id: str
    task: str
    channel: str
    kind: str = COMMAND
    method: str | None = None
    url: str | None = None
    body: str | None = None
    args: tuple[str, ...] | None = None
    ts: float | None = None
    run_at: float | None = None
    retries: int | None = None
    retry_intervals: tuple[float, ...] = ()
    timeout_s: float = msgspec.field(default=0.0, name="timeout")
    dedup_key: str | None = None
    note: str | None = None
    created_at: float = 0.0

    def argv(self, *, shell: bool) -> tuple[str, ...]:
        """The argv to execute: explicit args, `/bin/sh -c task`, or the shlex-split task."""
        if self.args is not None:
            return (self.task, *self.args)
        if shell:
            return ("/bin/sh", "-c", self.task)
        return split_command(self.task)

    def effective_dedup_key(self) -> str:
        """What `distinct` compares: the caller's key, else program + argv.

        Script and rpc jobs (kingtask's API) are never duplicates: each call is a new job."""
        if self.kind != COMMAND:
            return f"{self.kind}:{self.id}"
        if self.dedup_key:
            return self.dedup_key
        if self.args is not None:
            return json.dumps([self.task, *self.args], ensure_ascii=False)
        return json.dumps(list(split_command(self.task)), ensure_ascii=False)

    def to_record(self) -> dict[str, str]:
        """The fields stored in the job's Redis hash at enqueue; a field left at its default
        is not written (`created_at` and `attempt` always are)."""
        record = {"attempt": "0"}
        for name, attr, default in _JOB_RECORD_FIELDS:
            value = getattr(self, attr)
            if value is not None and (value != default or name == "created_at"):
                record[name] = _record_text(value)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, str]) -> Job:
        """Rebuild a Job from its stored hash (fields as written by `to_record`; others,
        such as a claim's `attempt`, are ignored)."""
        fields: dict[str, Any] = dict(record)
        if "args" in fields:
            fields["args"] = json.loads(fields["args"])
        fields["retry_intervals"] = parse_intervals(fields.get("retry_intervals", ""))
        return msgspec.convert(fields, cls, strict=False)


# (record name, attribute, default) of each Job field, in record order.
_JOB_RECORD_FIELDS: Final = tuple(
    (f.encode_name, f.name, f.default) for f in msgspec.structs.fields(Job)
)
JOB_RECORD_NAMES: Final = tuple(name for name, _, _ in _JOB_RECORD_FIELDS)


def _record_text(value: Any) -> str:
    """One Job value as stored in Redis: text as is, numbers compact, `args` as a JSON list,
    `retry_intervals` space-separated."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        if all(isinstance(item, str) for item in value):  # args
            return json.dumps(list(value), ensure_ascii=False)
        return " ".join(_fmt(i) for i in value)
    return _fmt(value)


def _fmt(number: float) -> str:
    """Compact text for a number stored in Redis (`5`, `0.25`, `1491800000.123`)."""
    return repr(int(number)) if number == int(number) else repr(number)
