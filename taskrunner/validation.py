"""Checking one input value at a time: names, ids, numbers, seconds, counts, intervals and
text, with the limits every input is held to. Pure, no I/O.

Each check raises InvalidJob (InvalidChannel for a channel name) with a message naming the
field and saying what a valid value looks like. The models (`taskrunner.models`) and the
parsers of whole messages (`taskrunner.parsing`, `taskrunner.kingtask`) build on these."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from typing import Any

from taskrunner.errors import InvalidChannel, InvalidJob

# The channel name rule, stated once: 1 to MAX_CHANNEL_NAME_BYTES bytes of UTF-8 with none of
# these characters (upstream took any non-empty name). Each range: (first, last, what it is).
# The check, its message and the OpenAPI pattern (`channel_name_schema_pattern`) derive from it.
MAX_CHANNEL_NAME_BYTES = 200
CHANNEL_NAME_REFUSED: tuple[tuple[int, int, str], ...] = (
    (0x00, 0x1F, "control characters"),
    (0x7F, 0x9F, "control characters"),
    (0x2028, 0x2029, "line and paragraph separators"),
    (0x202A, 0x202E, "bidi embeddings and overrides"),
    (0x2066, 0x2069, "bidi isolates"),
    (0xD800, 0xDFFF, "lone surrogates"),  # not UTF-8 at all; JSON text cannot carry them
)
CHANNEL_NAME_RULE = (
    f"a channel name is 1 to {MAX_CHANNEL_NAME_BYTES} bytes of UTF-8 text without control"
    " characters, line separators or bidi controls (spaces and any script are fine)"
)


def _refused_class(ranges: Sequence[tuple[int, int, str]]) -> str:
    return "".join(f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi, _ in ranges)


# \Z, not $: `$` also matches before a trailing newline, which would let "biz\n" through.
CHANNEL_NAME_RE = re.compile(f"^[^{_refused_class(CHANNEL_NAME_REFUSED)}]+\\Z")
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
MAX_ARGS = 1024
MAX_DEDUP_KEY_CHARS = 1024
MAX_NOTE_CHARS = 1000
MAX_INTERVALS = 64
MAX_INTERVALS_CHARS = 4096  # the space-separated form of retry_intervals
MAX_SECONDS = 10 * 365 * 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size limits on every input."""

    max_message_bytes: int = 256 * 1024
    max_task_chars: int = 64 * 1024
    max_args_chars: int = 64 * 1024  # all of `args` together


def channel_name_schema_pattern() -> str:
    """CHANNEL_NAME_RE as a JSON Schema (ECMA-262) pattern. Lone surrogates are left out of
    it: JSON text cannot carry one, and in a pattern they would split the pairs of an emoji."""
    ranges = [r for r in CHANNEL_NAME_REFUSED if r[0] < 0xD800]
    return f"^[^{_refused_class(ranges)}]+$"


def channel_name_problem(name: object) -> str | None:
    """Why `name` is not a valid channel name, or None when it is one."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if not name:
        return "it is empty"
    if not CHANNEL_NAME_RE.match(name):
        for lo, hi, what in CHANNEL_NAME_REFUSED:
            bad = next((c for c in name if lo <= ord(c) <= hi), None)
            if bad is not None:
                return f"it contains U+{ord(bad):04X} ({what} are not allowed)"
    size = len(name.encode("utf-8"))
    if size > MAX_CHANNEL_NAME_BYTES:
        return f"it is {size} bytes of UTF-8, over the limit of {MAX_CHANNEL_NAME_BYTES}"
    return None


def validate_channel_name(name: str) -> str:
    """Return `name` if it is a valid channel name, else raise InvalidChannel saying why."""
    problem = channel_name_problem(name)
    if problem is not None:
        raise InvalidChannel(f"invalid channel name {brief(name)}: {problem}; {CHANNEL_NAME_RULE}")
    return name


def parse_job_id(value: Any) -> str | None:
    """A producer's job id: a string of JOB_ID_RE, or a whole number (`42`, `0`) as its digits;
    None when absent or empty (the job gets a new id). InvalidJob for anything else."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidJob(f'"id" must be a string or a whole number, got {brief(value)}')
    if not JOB_ID_RE.match(value):
        raise InvalidJob(
            f'"id" {brief(value)} is invalid: use 1-128 characters of A-Z a-z 0-9 _ . : -'
        )
    return value


def parse_intervals(value: Any, name: str = "retry_intervals") -> tuple[float, ...]:
    """`"60 600 3600"` or `[60, 600, 3600]` -> (60.0, 600.0, 3600.0); errors name `name`."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        if len(value) > MAX_INTERVALS_CHARS:
            raise InvalidJob(
                f'"{name}" is {len(value)} characters, over the limit of {MAX_INTERVALS_CHARS}'
            )
        items: Sequence[Any] = value.replace(",", " ").split()
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise InvalidJob(
            f'"{name}" must be a list of seconds or a space-separated string, got {brief(value)}'
        )
    check_count(items, name, MAX_INTERVALS)
    return tuple(parse_seconds(item, name) for item in items)


def check_count(items: Sized, name: str, limit: int, noun: str = "entries") -> None:
    """InvalidJob if the list `name` has more than `limit` items (`noun` names them)."""
    if len(items) > limit:
        raise InvalidJob(f'"{name}" has {len(items)} {noun}, over the limit of {limit}')


def load_json(text: str | bytes, invalid: str, too_deep: str) -> Any:
    """`json.loads(text)`; InvalidJob `"{invalid}: {why}"` for text that is not JSON, or
    `too_deep` for a value nested past what the parser recurses into."""
    try:
        return json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError too
        raise InvalidJob(f"{invalid}: {exc}") from exc
    except RecursionError:
        raise InvalidJob(too_deep) from None


def check_args_length(text: str, limits: Limits) -> None:
    """Refuse an `args` text longer than a whole message may be."""
    if len(text) > limits.max_message_bytes:
        raise InvalidJob(
            f'"args" is {len(text)} characters, over the limit of {limits.max_message_bytes}'
        )


def check_args_size(args: Sequence[str], limits: Limits) -> None:
    """InvalidJob if there are too many arguments or they are too long together."""
    check_count(args, "args", MAX_ARGS)
    total = sum(len(a) for a in args)
    if total > limits.max_args_chars:
        raise InvalidJob(
            f'"args" are {total} characters together, over the limit of {limits.max_args_chars}'
        )


def check_text(text: str, name: str, *, argv: bool = True) -> str:
    """Refuse text Redis cannot store (lone surrogates) or, with `argv`, a process argument
    cannot carry (NUL characters)."""
    if argv and "\0" in text:
        raise InvalidJob(f'"{name}" contains a NUL character: a command line cannot carry one')
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJob(
            f'"{name}" is not valid Unicode text (a lone surrogate such as \\ud800): send UTF-8'
        ) from None
    return text


def brief(value: Any, limit: int = 80) -> str:
    """`repr(value)`, shortened for an error message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def parse_number(value: Any, name: str) -> float | None:
    """A finite number from a number or numeric string (empty = None); InvalidJob if bad."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidJob(f'"{name}" must be a number or a numeric string, got {value!r}')
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer with hundreds of digits
            raise InvalidJob(f'"{name}" is far too large a number: {brief(value)}') from None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise InvalidJob(
                f'"{name}" must be a number or a numeric string, got {brief(value)}'
            ) from None
    else:
        raise InvalidJob(
            f'"{name}" must be a number or a numeric string, got {type(value).__name__}'
        )
    if not math.isfinite(number):
        raise InvalidJob(f'"{name}" must be a finite number, got {brief(value)}')
    return number


def parse_seconds(value: Any, name: str) -> float:
    """Seconds from a number or numeric string (empty = 0); InvalidJob naming `name` if bad."""
    number = parse_number(value, name)
    if number is None:
        return 0.0
    if number < 0 or number > MAX_SECONDS:
        raise InvalidJob(f'"{name}" must be between 0 and {MAX_SECONDS:.0f} seconds, got {number}')
    return number


def parse_optional_count(value: Any, name: str) -> int | None:
    """A whole number 0-1000 from a number or numeric string (empty = None)."""
    number = parse_number(value, name)
    if number is None:
        return None
    if number != int(number) or number < 0 or number > 1000:
        raise InvalidJob(f'"{name}" must be a whole number between 0 and 1000, got {brief(value)}')
    return int(number)


def parse_count(value: Any, name: str) -> int:
    """A whole number 0-1000 from a number or numeric string (empty = 0)."""
    number = parse_optional_count(value, name)
    return 0 if number is None else number


def plain_number(text: str) -> float:
    """A finite number written plainly in a query (ASCII, no `_`: `1.5`, `1e3`); NaN if not."""
    try:
        number = float(text) if text.isascii() and "_" not in text else math.nan
    except ValueError:
        return math.nan
    return number if math.isfinite(number) else math.nan
