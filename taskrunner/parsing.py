"""Parsing a producer's message (`task:prepare:queue`, `/push`, the native API) into a `Job`.

Upstream's quirks are read here, once: `chan` for `channel`, numbers as numeric strings,
`retry_intervals` as a space-separated string, `delay` beside `run_at`. Pure, no I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

from taskrunner.errors import InvalidJob
from taskrunner.models.job import Job
from taskrunner.shellwords import split_command
from taskrunner.validation import (
    MAX_DEDUP_KEY_CHARS,
    MAX_NOTE_CHARS,
    MAX_SECONDS,
    Limits,
    check_args_length,
    check_args_size,
    check_text,
    load_json,
    parse_intervals,
    parse_job_id,
    parse_number,
    parse_optional_count,
    parse_seconds,
    validate_channel_name,
)

DEFAULT_LIMITS: Final = Limits()


def parse_message(
    raw: bytes | str, *, default_channel: str, now: float, limits: Limits = DEFAULT_LIMITS
) -> Job:
    """Parse one `task:prepare:queue` message; raise InvalidJob naming what is wrong."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > limits.max_message_bytes:
        raise InvalidJob(f"message is {size} bytes, over the limit of {limits.max_message_bytes}")
    data = load_json(
        raw, "message is not valid JSON", "message is not usable JSON: nested too deeply"
    )
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
    fields: Mapping[str, Any], *, default_channel: str, now: float, limits: Limits = DEFAULT_LIMITS
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
    job_id = parse_job_id(fields.get("id")) or str(uuid.uuid4())
    intervals = parse_intervals(fields.get("retry_intervals"))
    retries = parse_optional_count(fields.get("retries"), "retries")
    if retries is None and intervals:
        retries = len(intervals)
    job = Job(
        id=job_id,
        task=task,
        channel=channel,
        args=_parse_args(fields.get("args"), limits),
        ts=parse_number(fields.get("ts"), "ts"),
        run_at=_run_at(fields, now),
        retries=retries,
        retry_intervals=intervals,
        timeout_s=parse_seconds(fields.get("timeout"), "timeout"),
        dedup_key=_free_text(fields.get("dedup_key"), "dedup_key", MAX_DEDUP_KEY_CHARS),
        note=_free_text(fields.get("note"), "note", MAX_NOTE_CHARS),
        created_at=now,
    )
    if job.args is None:
        split_command(task)  # refuse unbalanced quotes now, not at run time
    return job


def _parse_args(value: Any, limits: Limits) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        check_args_length(value, limits)
        must = '"args" must be a JSON list of strings'
        value = load_json(value, must, f"{must}: nested too deeply")
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise InvalidJob('"args" must be a list of strings (the argv after the program)')
    check_args_size(value, limits)
    for arg in value:
        check_text(arg, "args")
    return tuple(value)


def _run_at(fields: Mapping[str, Any], now: float) -> float | None:
    run_at = parse_number(fields.get("run_at"), "run_at")
    delay = parse_number(fields.get("delay"), "delay")
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
