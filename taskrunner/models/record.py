"""A job as a producer gives it (`JobCreate`: POST /api/jobs, the CLI's push, the client),
and the filters a reader passes. The stored record, `JobRecord`, is in `stored.py`.

`JobCreate` names every field a producer may set with its constraints, so the native API's
accepted fields and the OpenAPI schema derive from it."""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec
from msgspec import UNSET, Meta, UnsetType

from taskrunner.models.job import JobState
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


def parse_state(value: str | None) -> JobState | None:
    """A state filter from a query string; ValueError naming the accepted states."""
    if not value:
        return None
    try:
        return JobState(value)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise ValueError(f"unknown state {value!r}: use one of {names}") from None
