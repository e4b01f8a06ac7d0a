"""A job's stored record as one typed model: what the store keeps, and what the native API,
the CLI's `--json`, the client and the dashboard return for a job.

The record lives in Redis as a hash of text fields. `JobRecord` names every field with its
JSON type, so decoding (numeric strings to numbers, "1" flags to booleans, "" to null,
milliseconds to seconds, args JSON to a list), the store's listing fields, and the OpenAPI
schema all derive from it: a new job field is one line here (plus `job.Job` when a producer
sets it)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal, cast

import msgspec
from msgspec import UNSET, Meta, UnsetType
from msgspec import inspect as mi

from taskrunner.exec_result import describe_signal
from taskrunner.models.job import FINAL_STATES, JobState
from taskrunner.validation import (
    JOB_ID_RE,
    MAX_ARGS,
    MAX_DEDUP_KEY_CHARS,
    MAX_INTERVALS,
    MAX_INTERVALS_CHARS,
    MAX_NOTE_CHARS,
    MAX_SECONDS,
    Limits,
    channel_name_schema_pattern,
)

SUMMARY_TEXT_BYTES: Final = 4096  # a listing shows this much of a job's command, args, error
# Field metadata: `listed` fields are read for job listings (everything but big values);
# `ms` fields are stored in milliseconds and shown in seconds like every other time.
LISTED: Final = Meta(extra={"listed": True})
MS: Final = Meta(extra={"ms": True})


def _cut(name: str) -> Meta:
    return Meta(
        extra={"listed": True},
        description=f"In a listing: `{name}` shows its first {SUMMARY_TEXT_BYTES} bytes only.",
    )


Text = str | None
Number = float | None
Count = int | None
Kind = Literal["command", "script", "rpc"]
State = Annotated[str, Meta(extra_json_schema={"enum": [s.value for s in JobState]})]


class JobRecord(msgspec.Struct, kw_only=True):
    """A job record; which fields are present depends on its kind and progress."""

    id: Annotated[str, LISTED]
    task: Annotated[str, LISTED]
    channel: Annotated[str, LISTED]
    state: Annotated[State, LISTED]
    final: Annotated[bool, Meta(description="True once the job reached a final state.")] = False
    kind: Annotated[Kind, LISTED] = "command"
    attempt: Annotated[Count, LISTED] | UnsetType = UNSET
    retries: Annotated[Count, LISTED] | UnsetType = UNSET
    revived: Count | UnsetType = UNSET
    args: Annotated[list[str] | None, LISTED] | UnsetType = UNSET
    retry_intervals: list[float] | UnsetType | None = UNSET
    ts: Number | UnsetType = UNSET
    run_at: Annotated[Number, LISTED] | UnsetType = UNSET
    created_at: Annotated[Number, LISTED] | UnsetType = UNSET
    started_at: Annotated[Number, LISTED] | UnsetType = UNSET
    finished_at: Annotated[Number, LISTED] | UnsetType = UNSET
    duration: Annotated[Number, LISTED] | UnsetType = UNSET
    timeout: Number | UnsetType = UNSET
    due_at: Annotated[Number, LISTED, MS] | UnsetType = UNSET
    exit_code: Annotated[Count, LISTED] | UnsetType = UNSET
    signal: Annotated[Count, LISTED] | UnsetType = UNSET
    pid: Count | UnsetType = UNSET
    http_status: Annotated[Count, LISTED] | UnsetType = UNSET
    signal_name: Text | UnsetType = UNSET
    error: Annotated[Text, LISTED] | UnsetType = UNSET
    runner: Annotated[Text, LISTED] | UnsetType = UNSET
    dedup_key: Text | UnsetType = UNSET
    dedup: Text | UnsetType = UNSET
    method: Annotated[Text, LISTED] | UnsetType = UNSET
    url: Annotated[Text, LISTED] | UnsetType = UNSET
    body: Text | UnsetType = UNSET
    note: Annotated[Text, LISTED] | UnsetType = UNSET
    handed_back: Text | UnsetType = UNSET
    stdout: str | UnsetType = UNSET
    stderr: str | UnsetType = UNSET
    stdout_truncated: bool | UnsetType = UNSET
    stderr_truncated: bool | UnsetType = UNSET
    task_truncated: Annotated[bool, _cut("task")] | UnsetType = UNSET
    url_truncated: Annotated[bool, _cut("url")] | UnsetType = UNSET
    error_truncated: Annotated[bool, _cut("error")] | UnsetType = UNSET
    args_truncated: (
        Annotated[
            bool,
            Meta(
                description=f"In a listing: `args`, over {SUMMARY_TEXT_BYTES} bytes, is left out."
            ),
        ]
        | UnsetType
    ) = UNSET
    cancel_requested: bool | UnsetType = UNSET


# -- a job as a producer gives it (POST /api/jobs, the CLI's push, the client) -------------


def schema_pattern(regex: re.Pattern[str]) -> str:
    """A validation regex as a JSON Schema pattern (which has `$`, not `\\Z`)."""
    return regex.pattern.replace("\\Z", "$")


NAME_PATTERN: Final = channel_name_schema_pattern()  # and at most MAX_CHANNEL_NAME_BYTES
NUMERIC_PATTERN: Final = r"^-?[0-9]+(\.[0-9]+)?$"
INTERVALS_PATTERN: Final = r"^ *[0-9]+(\.[0-9]+)?([ ,]+[0-9]+(\.[0-9]+)?)* *$"
Seconds = Annotated[float, Meta(ge=0, le=MAX_SECONDS)]
Intervals = Annotated[
    Annotated[list[Seconds], Meta(max_length=MAX_INTERVALS)]
    | Annotated[str, Meta(max_length=MAX_INTERVALS_CHARS, pattern=INTERVALS_PATTERN)],
    Meta(
        description="Seconds between attempts: a list, or a space-separated string such as"
        ' "60 600 3600"; the last interval repeats when there are more retries.'
    ),
]
ChannelName = Annotated[str, Meta(pattern=NAME_PATTERN)]


class JobCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Give at most one of `channel` and `chan`, and of `run_at` and `delay`."""

    task: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=Limits().max_task_chars,
            description="The command line (split with POSIX shell rules), or the program"
            " when `args` is given.",
        ),
    ]
    args: (
        Annotated[
            list[str],
            Meta(
                max_length=MAX_ARGS,
                description="Exact argv after the program; `task` is then not split.",
            ),
        ]
        | UnsetType
    ) = UNSET
    channel: (
        Annotated[ChannelName, Meta(description="Default channel when absent.")] | UnsetType
    ) = UNSET
    chan: Annotated[ChannelName, Meta(description="Alias of `channel`.")] | UnsetType = UNSET
    id: (
        Annotated[
            str,
            Meta(
                pattern=schema_pattern(JOB_ID_RE),
                description="Caller-chosen id (idempotency key); default a new UUID.",
            ),
        ]
        | Annotated[int, Meta(description='A whole number is taken as its digits (42: "42").')]
        | UnsetType
    ) = UNSET
    run_at: (
        Annotated[
            float, Meta(ge=0, description="Unix seconds: run no earlier (at most 10 years ahead).")
        ]
        | UnsetType
    ) = UNSET
    delay: Annotated[Seconds, Meta(description="Seconds from now: run no earlier.")] | UnsetType = (
        UNSET
    )
    retries: (
        Annotated[int, Meta(ge=0, le=1000, description="Retries after the first attempt.")]
        | UnsetType
    ) = UNSET
    retry_intervals: Intervals | UnsetType = UNSET
    timeout: (
        Annotated[
            Seconds,
            Meta(
                description="Seconds before the process group is killed (0: channel's, else"
                " runner's)."
            ),
        ]
        | UnsetType
    ) = UNSET
    dedup_key: (
        Annotated[
            str,
            Meta(
                max_length=MAX_DEDUP_KEY_CHARS,
                description="What `distinct` compares instead of program + argv.",
            ),
        ]
        | UnsetType
    ) = UNSET
    note: (
        Annotated[
            str,
            Meta(
                max_length=MAX_NOTE_CHARS,
                description="Free text kept with the job and shown with it (e.g. who asked"
                " for it, or why).",
            ),
        ]
        | UnsetType
    ) = UNSET
    ts: (
        Annotated[
            float | Annotated[str, Meta(pattern=NUMERIC_PATTERN)],
            Meta(description="Producer's timestamp, kept on the job."),
        ]
        | UnsetType
    ) = UNSET


# The fields a producer may set on a job (the native API refuses others).
JOB_CREATE_FIELDS: Final = frozenset(f.encode_name for f in msgspec.structs.fields(JobCreate))


# -- decoding a stored record -----------------------------------------------------------------

Decode = Callable[[str], Any]


def _number(kind: type[int] | type[float]) -> Decode:
    def decode(value: str) -> int | float | None:
        try:
            return kind(float(value)) if kind is int else kind(value)
        except ValueError:
            return None

    return decode


def _json_list(value: str) -> Any:
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, list) else value


def _ms(value: str) -> float | None:
    ms = _number(float)(value)
    return None if ms is None else ms / 1000


def _intervals(value: str) -> list[float]:
    return [float(item) for item in value.split()]


def _flag(value: str) -> bool:
    return value == "1"


def _text(value: str) -> str:
    return value


_BY_TYPE: Final[dict[Any, Decode]] = {
    mi.FloatType: _number(float),
    mi.IntType: _number(int),
    mi.BoolType: _flag,
    mi.StrType: _text,
    mi.LiteralType: _text,
}


def _field_info(field: mi.Field) -> tuple[mi.Type, bool, dict[str, Any]]:
    """A field's base type, whether it may be null, and its metadata `extra`."""
    kind, nullable, extra = field.type, False, {}
    while True:
        if isinstance(kind, mi.UnionType):
            nullable = nullable or any(isinstance(t, mi.NoneType) for t in kind.types)
            kind = next(t for t in kind.types if not isinstance(t, mi.NoneType))
        elif isinstance(kind, mi.Metadata):
            extra.update(kind.extra or {})
            kind = kind.type
        else:
            return kind, nullable, extra


def _decoder(field: mi.Field) -> tuple[Decode, bool]:
    """How to decode a field's stored text, and whether "" stays "" (text that cannot be
    null, such as the output) rather than becoming null."""
    kind, nullable, extra = _field_info(field)
    keep_empty = isinstance(kind, mi.StrType) and not nullable and not field.required
    if extra.get("ms"):
        return _ms, keep_empty
    if isinstance(kind, mi.ListType):
        return (_json_list if isinstance(kind.item_type, mi.StrType) else _intervals), keep_empty
    return _BY_TYPE[type(kind)], keep_empty


_FIELDS: Final = cast(mi.StructType, mi.type_info(JobRecord)).fields
_DECODERS: Final = {f.encode_name: _decoder(f) for f in _FIELDS}
# The fields a job listing reads (the store cuts long ones and flags them `NAME_truncated`).
SUMMARY_FIELDS: Final = tuple(
    f.encode_name
    for f in _FIELDS
    if _field_info(f)[2].get("listed") and not f.encode_name.endswith("_truncated")
)


def job_view(record: Mapping[str, str]) -> dict[str, Any]:
    """A stored job record as JSON types: numbers as numbers, flags as booleans, empty as
    null (text that cannot be null, the output, stays ""); fields the model does not know
    pass through as text."""
    view: dict[str, Any] = {}
    for name, value in record.items():
        decode, keep_empty = _DECODERS.get(name, (_text, False))
        view[name] = None if value == "" and not keep_empty else decode(value)
    view["final"] = record.get("state", "") in FINAL_STATES
    view.setdefault("kind", "command")
    if view.get("signal") is not None:
        view["signal_name"] = describe_signal(int(view["signal"]))
    return view


def parse_state(value: str | None) -> JobState | None:
    """A state filter from a query string; ValueError naming the accepted states."""
    if not value:
        return None
    try:
        return JobState(value)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise ValueError(f"unknown state {value!r}: use one of {names}") from None
