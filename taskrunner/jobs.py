"""Jobs and channels as data: parsing and validation of ingress messages. Pure, no I/O."""

from __future__ import annotations

import enum
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from taskrunner.allow import parse_patterns
from taskrunner.cache import bytes_lru_cache
from taskrunner.errors import InvalidChannel, InvalidJob

# \Z, not $: `$` also matches before a trailing newline, which would let "biz\n" through.
CHANNEL_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
MAX_ARGS = 1024
MAX_DEDUP_KEY_CHARS = 1024
MAX_NOTE_CHARS = 1000
MAX_INTERVALS = 64
MAX_INTERVALS_CHARS = 4096  # the space-separated form of retry_intervals
MAX_SECONDS = 10 * 365 * 86400.0
SPLIT_CACHE_BYTES = 4 * 1024 * 1024  # command lines split recently, with their words

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


def validate_channel_name(name: str) -> str:
    """Return `name` if it is a valid channel name, else raise InvalidChannel saying why."""
    if not isinstance(name, str) or not CHANNEL_NAME_RE.match(name):
        raise InvalidChannel(
            f"invalid channel name {name!r}: use 1-64 characters of A-Z a-z 0-9 _ . : -"
        )
    return name


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
            worker_count=max(0, _as_int(data.get("worker_count", 5), "worker_count")),
            paused=_as_bool(data.get("paused", False)),
            timeout_s=_seconds(data.get("timeout", 0), "timeout"),
            retries=max(0, _as_int(data.get("retries", 0), "retries")),
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


# Shell words by C regexes, exactly as `shlex.split(task)` reads them (POSIX mode, no comments):
# shlex loops over characters in Python, 30-60 ms of the event loop for a 60 KB command line
# (100 such messages stalled it for seconds); this takes 1-5 ms.
_BLANKS = " \t\r\n"  # shlex's whitespace: nothing else separates words
_QUOTING = re.compile(r"""['"\\]""")
_PLAIN_WORD = re.compile(r"[^ \t\r\n]+")
_DOUBLE_QUOTED = r'"[^"\\]*(?:\\.[^"\\]*)*"'  # inside, only \" and \\ are escapes
_WORD = re.compile(rf"""(?:[^ \t\r\n'"\\]+|\\.|'[^']*'|{_DOUBLE_QUOTED})+""", re.DOTALL)
_WORD_PART = re.compile(r"""\\(.)|'([^']*)'|"([^"\\]*(?:\\.[^"\\]*)*)\"""", re.DOTALL)
_UNFINISHED_ESCAPE = re.compile(rf"(?:\\|{_DOUBLE_QUOTED[:-1]}\\)\Z", re.DOTALL)
_DOUBLE_QUOTED_ESCAPE = re.compile(r'\\(["\\])')


def shell_words(task: str) -> list[str]:
    """`shlex.split(task)` at C speed: same words, same ValueError messages."""
    if _QUOTING.search(task) is None:
        return _PLAIN_WORD.findall(task)
    if _WORD.sub("", task).strip(_BLANKS):
        raise ValueError(_split_error(task))
    words = _WORD.findall(task)
    return [w if _QUOTING.search(w) is None else _WORD_PART.sub(_unquote, w) for w in words]


def _unquote(part: re.Match[str]) -> str:
    escaped, single, double = part.groups()
    if double is not None:
        return _DOUBLE_QUOTED_ESCAPE.sub(r"\1", double) if "\\" in double else double
    return single if escaped is None else escaped


def _split_error(task: str) -> str:
    """shlex's message for a line that does not split: at the first character no word takes."""
    covered = 0
    for word in _WORD.finditer(task):
        if task[covered : word.start()].strip(_BLANKS):
            break
        covered = word.end()
    rest = task[covered:].lstrip(_BLANKS)
    return "No escaped character" if _UNFINISHED_ESCAPE.match(rest) else "No closing quotation"


@bytes_lru_cache(SPLIT_CACHE_BYTES)  # a queue repeats its command lines
def split_command(task: str) -> tuple[str, ...]:
    """Split a command line with POSIX shell quoting rules (no shell involved)."""
    try:
        argv = tuple(shell_words(task))
    except ValueError as exc:
        raise InvalidJob(f"task {task[:80]!r} cannot be split into arguments: {exc}") from exc
    if not argv:
        raise InvalidJob("task is blank: give the command line to run")
    return argv


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size limits on every input."""

    max_message_bytes: int = 256 * 1024
    max_task_chars: int = 64 * 1024
    max_args_chars: int = 64 * 1024  # all of `args` together


def parse_message(
    raw: bytes | str, *, default_channel: str, now: float, limits: Limits = Limits()
) -> Job:
    """Parse one `task:prepare:queue` message; raise InvalidJob naming what is wrong."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > limits.max_message_bytes:
        raise InvalidJob(f"message is {size} bytes, over the limit of {limits.max_message_bytes}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJob(f"message is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidJob("message is not usable JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidJob(f"message is a JSON {type(data).__name__}, expected an object")
    fields = channel_alias(data)
    return job_from_fields(fields, default_channel=default_channel, now=now, limits=limits)


def channel_alias(fields: Mapping[str, Any], *, refuse_both: bool = False) -> dict[str, Any]:
    """`fields` with upstream's `chan` read as `channel` (TaskRunner's messages say `chan`).
    Given both, `channel` wins, as upstream's ingress and `/push` had it; `refuse_both` (the
    native API, which has no upstream to follow) refuses them with InvalidJob instead."""
    out = dict(fields)
    if "chan" in out:
        if "channel" not in out:
            out["channel"] = out.pop("chan")
        elif refuse_both:
            raise InvalidJob('give the channel as "channel" or as "chan", not both')
    return out


def job_from_fields(
    fields: Mapping[str, Any], *, default_channel: str, now: float, limits: Limits = Limits()
) -> Job:
    """Build a Job from decoded fields (JSON values, or strings from a form)."""
    task = fields.get("task")
    if not isinstance(task, str) or not task.strip():
        raise InvalidJob('"task" is required: a non-empty string with the command line to run')
    if len(task) > limits.max_task_chars:
        raise InvalidJob(
            f'"task" is {len(task)} characters, over the limit of {limits.max_task_chars}'
        )
    check_text(task, "task")
    channel = fields.get("channel")
    if channel is None or channel == "":
        channel = default_channel
    if not isinstance(channel, str):
        raise InvalidJob(f'"chan"/"channel" must be a string, got {type(channel).__name__}')
    validate_channel_name(channel)
    job_id = fields.get("id") or str(uuid.uuid4())
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise InvalidJob(f'"id" {job_id!r} is invalid: use 1-128 characters of A-Z a-z 0-9 _ . : -')
    intervals = parse_intervals(fields.get("retry_intervals"))
    retries = _opt_int(fields.get("retries"), "retries")
    if retries is None and intervals:
        retries = len(intervals)
    job = Job(
        id=job_id,
        task=task,
        channel=channel,
        args=_parse_args(fields.get("args"), limits),
        ts=_opt_number(fields.get("ts"), "ts"),
        run_at=_run_at(fields, now),
        retries=retries,
        retry_intervals=intervals,
        timeout_s=_seconds(fields.get("timeout"), "timeout"),
        dedup_key=_free_text(fields.get("dedup_key"), "dedup_key", MAX_DEDUP_KEY_CHARS),
        note=_free_text(fields.get("note"), "note", MAX_NOTE_CHARS),
        created_at=now,
    )
    if job.args is None:
        split_command(task)  # refuse unbalanced quotes now, not at run time
    return job


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
    if len(items) > MAX_INTERVALS:
        raise InvalidJob(f'"{name}" has {len(items)} entries, over the limit of {MAX_INTERVALS}')
    return tuple(_seconds(item, name) for item in items)


def _parse_args(value: Any, limits: Limits) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        check_args_length(value, limits)
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidJob(f'"args" must be a JSON list of strings: {exc}') from exc
        except RecursionError:
            raise InvalidJob('"args" must be a JSON list of strings: nested too deeply') from None
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise InvalidJob('"args" must be a list of strings (the argv after the program)')
    check_args_size(value, limits)
    for arg in value:
        check_text(arg, "args")
    return tuple(value)


def check_args_length(text: str, limits: Limits) -> None:
    """Refuse an `args` text longer than a whole message may be."""
    if len(text) > limits.max_message_bytes:
        raise InvalidJob(
            f'"args" is {len(text)} characters, over the limit of {limits.max_message_bytes}'
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


def _run_at(fields: Mapping[str, Any], now: float) -> float | None:
    run_at = _opt_number(fields.get("run_at"), "run_at")
    delay = _opt_number(fields.get("delay"), "delay")
    if run_at is not None and delay is not None:
        raise InvalidJob('give either "run_at" or "delay", not both')
    if delay is not None:
        if delay < 0 or delay > MAX_SECONDS:
            raise InvalidJob(
                f'"delay" must be between 0 and {MAX_SECONDS:.0f} seconds, got {delay}'
            )
        return now + delay
    if run_at is not None and not 0 <= run_at <= now + MAX_SECONDS:
        raise InvalidJob(
            f'"run_at" must be unix seconds, at most {MAX_SECONDS:.0f} s from now, got {run_at}'
        )
    return run_at


def _free_text(value: Any, name: str, max_chars: int) -> str | None:
    """An optional text field a producer chooses (`dedup_key`, `note`): empty is None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise InvalidJob(f'"{name}" must be a string of at most {max_chars} characters')
    return check_text(value, name, argv=False)


def _opt_number(value: Any, name: str) -> float | None:
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


def _seconds(value: Any, name: str) -> float:
    number = _opt_number(value, name)
    if number is None:
        return 0.0
    if number < 0 or number > MAX_SECONDS:
        raise InvalidJob(f'"{name}" must be between 0 and {MAX_SECONDS:.0f} seconds, got {number}')
    return number


def _opt_int(value: Any, name: str) -> int | None:
    number = _opt_number(value, name)
    if number is None:
        return None
    if number != int(number) or number < 0 or number > 1000:
        raise InvalidJob(f'"{name}" must be a whole number between 0 and 1000, got {brief(value)}')
    return int(number)


def _as_int(value: Any, name: str) -> int:
    number = _opt_int(value, name)
    return 0 if number is None else number


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _opt_float(value: str | None) -> float | None:
    return None if value is None or value == "" else float(value)


def parse_number(value: Any, name: str) -> float | None:
    """A finite number from a number or numeric string (empty = None); InvalidJob if bad."""
    return _opt_number(value, name)


def _fmt(number: float) -> str:
    """Compact text for a number stored in Redis (`5`, `0.25`, `1491800000.123`)."""
    return repr(int(number)) if number == int(number) else repr(number)


def parse_seconds(value: Any, name: str) -> float:
    """Seconds from a number or numeric string (empty = 0); InvalidJob naming `name` if bad."""
    return _seconds(value, name)


def parse_count(value: Any, name: str) -> int:
    """A whole number 0-1000 from a number or numeric string (empty = 0)."""
    return _as_int(value, name)


def _stored_patterns(channel: str, value: Any) -> tuple[str, ...]:
    """A stored channel's allowlist; a bad one refuses the channel rather than dropping the list."""
    try:
        return parse_patterns(value)
    except InvalidJob as exc:
        raise InvalidChannel(
            f"channel {channel!r} is stored with a bad allowlist: {exc}; fix it with"
            f" `taskrunner queue update {channel} --allow PATTERN`"
        ) from exc


def check_args_size(args: Sequence[str], limits: Limits) -> None:
    """InvalidJob if there are too many arguments or they are too long together."""
    if len(args) > MAX_ARGS:
        raise InvalidJob(f'"args" has {len(args)} entries, over the limit of {MAX_ARGS}')
    total = sum(len(a) for a in args)
    if total > limits.max_args_chars:
        raise InvalidJob(
            f'"args" are {total} characters together, over the limit of {limits.max_args_chars}'
        )
