"""A job's stored record: the model every reader gets (`JobRecord`), and the one place that
knows how Redis keeps it (`decode_record`).

The record lives in Redis as a hash of text fields. `decode_record` types it once: numeric
strings become numbers, "1" flags booleans, milliseconds seconds, `args` JSON a list, and ""
the field's EMPTY_VALUES entry (null; the output stays ""). A value that does not decode is
null; a field the model does not know is left out. `JobRecord.to_view()` is the JSON the
native API, the CLI's `--json`, the client and the dashboard show. A new job field is one
line in `JobRecord` (plus `job.Job` when a producer sets it): its decoding, the listing's
fields (SUMMARY_FIELDS) and the OpenAPI schema follow."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal, cast

import msgspec
from msgspec import UNSET, Meta, UnsetType
from msgspec import inspect as mi

from taskrunner.exec_result import describe_signal
from taskrunner.models.job import FINAL_STATES, JobState

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


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A job record; which fields are present depends on its kind and progress (an absent
    one is UNSET, and left out of the JSON; a stored "" is null). Build it from Redis with
    `decode_record`."""

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

    def to_view(self) -> dict[str, Any]:
        """The record as JSON types, in the model's field order; UNSET fields left out."""
        return cast(dict[str, Any], msgspec.to_builtins(self))


# -- decoding a stored record -----------------------------------------------------------------

Decode = Callable[[str], Any]
_isfinite: Final = math.isfinite
_decode_texts: Final = msgspec.json.Decoder(list[str]).decode


def _float(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if _isfinite(number) else None


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        number = _float(value)  # "3.0": an int written as a float
        return None if number is None else int(number)


def _ms(value: str) -> float | None:
    ms = _float(value)
    return None if ms is None else ms / 1000


def _texts(value: str) -> list[str] | None:
    """`args`: a JSON list of strings, else null."""
    try:
        return _decode_texts(value)
    except (msgspec.DecodeError, RecursionError):
        return None


def _intervals(value: str) -> list[float] | None:
    """`retry_intervals`: space-separated seconds, else null."""
    try:
        intervals = [float(item) for item in value.split()]
    except ValueError:
        return None
    return intervals if all(map(_isfinite, intervals)) else None


def _flag(value: str) -> bool:
    return value == "1"


def _text(value: str) -> str:
    return value


_BY_TYPE: Final[dict[Any, Decode]] = {
    mi.FloatType: _float,
    mi.IntType: _int,
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


def _decoder(field: mi.Field) -> tuple[Decode, Any]:
    """How to decode a field's stored text, and what a stored "" is: "" for text that
    cannot be null (the output, the id), null for every other field."""
    kind, nullable, extra = _field_info(field)
    empty = "" if isinstance(kind, (mi.StrType, mi.LiteralType)) and not nullable else None
    if extra.get("ms"):
        return _ms, empty
    if isinstance(kind, mi.ListType):
        return (_texts if isinstance(kind.item_type, mi.StrType) else _intervals), empty
    return _BY_TYPE[type(kind)], empty


_FIELDS: Final = cast(mi.StructType, mi.type_info(JobRecord)).fields
# Derived when decoding, never read from Redis.
DERIVED_FIELDS: Final = frozenset({"final", "signal_name"})
_STORED: Final = {
    f.encode_name: _decoder(f) for f in _FIELDS if f.encode_name not in DERIVED_FIELDS
}
_DECODERS: Final = {name: decode for name, (decode, _) in _STORED.items()}
# What a field stored as "" decodes to.
EMPTY_VALUES: Final = {name: empty for name, (_, empty) in _STORED.items()}
# A record always has these; a stored hash without one (a damaged record) reads as "".
REQUIRED_FIELDS: Final = tuple(f.encode_name for f in _FIELDS if f.required)
# The fields a job listing reads (the store cuts long ones and flags them `NAME_truncated`).
SUMMARY_FIELDS: Final = tuple(
    f.encode_name
    for f in _FIELDS
    if _field_info(f)[2].get("listed") and not f.encode_name.endswith("_truncated")
)


def decode_record(fields: Mapping[str, str]) -> JobRecord:
    """A job's stored hash (text fields, as Redis keeps them) as a JobRecord (see the
    module): `final` follows the state, `signal_name` the signal."""
    values: dict[str, Any] = dict.fromkeys(REQUIRED_FIELDS, "")
    for name, text in fields.items():
        decode = _DECODERS.get(name)
        if decode is not None:
            values[name] = decode(text) if text else EMPTY_VALUES[name]
    values["final"] = values["state"] in FINAL_STATES
    signal = values.get("signal")
    if signal is not None:
        values["signal_name"] = describe_signal(signal)
    return JobRecord(**values)
