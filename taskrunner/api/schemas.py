"""The component schemas of the native API's OpenAPI document (see `api/openapi.py`).

The job schemas are generated from the models (`models.JobCreate`, `models.JobRecord`) and the
channel's from `models.ChannelConfig`, so a field and its limits are written once; the others
(stats, dead letters, errors) describe answers that have no model of their own."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from msgspec import UNSET

from taskrunner.allow import MAX_PATTERN_CHARS, MAX_PATTERNS
from taskrunner.channel_fields import MAX_WORKERS
from taskrunner.models import NAME_PATTERN, ChannelConfig, Intervals, JobCreate, JobRecord
from taskrunner.service import DEAD_LETTER_RAW_BYTES
from taskrunner.validation import MAX_SECONDS


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


_SECONDS: Final = {"type": "number", "minimum": 0, "maximum": MAX_SECONDS}
_COUNT: Final = {"type": "integer", "minimum": 0, "maximum": 1000}


def _nullable(type_name: str, **more: Any) -> dict[str, Any]:
    return {"type": type_name, "nullable": True, **more}


def openapi_schema(node: Any) -> Any:
    """A JSON Schema (2020-12, as msgspec writes it) in OpenAPI 3.0's dialect: `anyOf` with
    `{"type": "null"}` becomes `nullable`, and titles (class names) go."""
    if isinstance(node, list):
        return [openapi_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {k: openapi_schema(v) for k, v in node.items() if k != "title"}
    options = schema.get("anyOf", [])
    if {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        del schema["anyOf"]
        schema.update(rest[0] if len(rest) == 1 else {"anyOf": rest}, nullable=True)
    return schema


def _model_schemas() -> dict[str, Any]:
    """`JobCreate` and `Job` from the models. A record field is required when it is always
    rendered (its default is not UNSET), and a record may carry fields the model lacks."""
    _, components = msgspec.json.schema_components(
        [JobCreate, JobRecord], ref_template="#/components/schemas/{name}"
    )
    job = components.pop("JobRecord")
    job["required"] = [
        f.encode_name for f in msgspec.structs.fields(JobRecord) if f.default is not UNSET
    ]
    job["additionalProperties"] = True
    components["Job"] = job
    components["JobCreate"]["allOf"] = [
        {"not": {"required": ["channel", "chan"]}},
        {"not": {"required": ["run_at", "delay"]}},
    ]
    return dict(openapi_schema(components))


_INTERVALS: Final = openapi_schema(msgspec.json.schema(Intervals))


_CHANNEL_FIELDS: Final = {
    "distinct": {"type": "boolean", "description": "Refuse a job whose dedup key is live."},
    "worker_count": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_WORKERS,
        "description": "Jobs run at once, per runner process; changes take effect live.",
    },
    "paused": {"type": "boolean", "description": "A paused channel starts no new jobs."},
    "timeout": {**_SECONDS, "description": "Default job timeout in seconds (0: runner's)."},
    "retries": {**_COUNT, "description": "Default retries of its jobs."},
    "retry_intervals": _INTERVALS,
    "log_output": {
        "type": "boolean",
        "description": "Log the captured output lines of each ended job (default false).",
    },
    "allow": {
        "type": "array",
        "maxItems": MAX_PATTERNS,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_PATTERN_CHARS,
            "pattern": r"^[^\x00-\x1f\x7f]+$",
        },
        "description": "Programs its jobs may run: names or globs matched against the"
        " program's file name, or path globs matched against its path (docs/SECURITY.md);"
        " [] (the default): any program.",
    },
}

# Present only when set, as `ChannelConfig.as_dict` renders them.
_CHANNEL_OPTIONAL: Final = {
    "log_output": "Present (true) when output is logged.",
    "allow": "Present when the channel has an allowlist of programs.",
}


def _channel_schema() -> dict[str, Any]:
    """`Channel`: the stored settings (generated from `ChannelConfig`) with the job counts."""
    _, components = msgspec.json.schema_components([ChannelConfig])
    stored = components["ChannelConfig"]["properties"]
    properties = {
        name: {k: v for k, v in s.items() if k != "default"} for name, s in stored.items()
    }
    for name, description in _CHANNEL_OPTIONAL.items():
        properties[name]["description"] = description
    counts = {
        "queued": {"type": "integer", "minimum": 0},
        "scheduled": {"type": "integer", "minimum": 0, "description": "Delayed or retrying."},
        "running": {"type": "integer", "minimum": 0},
    }
    return {
        "type": "object",
        "required": [n for n in properties if n not in _CHANNEL_OPTIONAL] + list(counts),
        "properties": {**properties, **counts},
    }


_CHANNEL: Final = _channel_schema()

_COUNTS: Final = {"type": "object", "additionalProperties": {"type": "integer"}}

_STATS: Final = {
    "type": "object",
    "required": ["counters", "today", "channels", "dead_jobs", "dead_letters", "runners"],
    "properties": {
        "counters": {**_COUNTS, "description": "Lifetime counters (refused, dead_letters, ...)."},
        "today": {**_COUNTS, "description": "Today's succeeded, failed and cancelled counts."},
        "channels": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["queued", "scheduled", "running"],
                "properties": {k: {"type": "integer"} for k in ("queued", "scheduled", "running")},
            },
        },
        "dead_jobs": {"type": "integer", "minimum": 0},
        "dead_letters": {"type": "integer", "minimum": 0},
        "runners": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "last_seen"],
                "properties": {"id": {"type": "string"}, "last_seen": {"type": "number"}},
            },
        },
    },
}

_DEAD_LETTER: Final = {
    "type": "object",
    "description": "A refused ingress message with the reason.",
    "required": ["id", "reason", "raw"],
    "additionalProperties": True,
    "properties": {
        "id": {"type": "string"},
        "reason": {"type": "string"},
        "source": {"type": "string"},
        "at": {"type": "number", "description": "Unix seconds."},
        "raw": {
            "type": "string",
            "description": "The message as received; when `truncated`, only its first"
            f" {DEAD_LETTER_RAW_BYTES} bytes.",
        },
        "size": {"type": "integer", "minimum": 0, "description": "The message's size in bytes."},
        "truncated": {
            "type": "boolean",
            "description": "Only the first bytes were kept: it cannot be retried.",
        },
    },
}

_ERROR: Final = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {
                "status": {"type": "integer", "description": "Equals the HTTP status."},
                "message": {"type": "string", "description": "What was wrong and what to do."},
            },
        },
        "duplicate_of": {
            "type": "string",
            "description": "POST /api/jobs only: the id of the live job this one duplicates.",
        },
    },
}


def _page(item_schema: str, key: str, extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key, *required],
        "properties": {key: {"type": "array", "items": ref("schemas", item_schema)}, **extra},
    }


SCHEMAS: Final = {
    "Error": _ERROR,
    **_model_schemas(),
    "JobPage": _page(
        "Job",
        "jobs",
        {
            "next_cursor": _nullable(
                "string",
                description="Pass it as `cursor` for the next page (older jobs); null at the"
                " end. A filtered page may hold fewer jobs than `limit`, even none, and still"
                " have one.",
            )
        },
        ["next_cursor"],
    ),
    "CancelResult": {
        "type": "object",
        "required": ["id", "state"],
        "properties": {
            "id": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["cancelled", "running"],
                "description": "running: its runner was told to kill it.",
            },
        },
    },
    "ChannelCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {"name": {"type": "string", "pattern": NAME_PATTERN}, **_CHANNEL_FIELDS},
    },
    "ChannelUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": _CHANNEL_FIELDS,
    },
    "Channel": _CHANNEL,
    "ChannelList": _page("Channel", "channels", {}, []),
    "Stats": _STATS,
    "DeadJobPage": _page("Job", "jobs", {"total": {"type": "integer", "minimum": 0}}, ["total"]),
    "DeadLetter": _DEAD_LETTER,
    "DeadLetterPage": _page(
        "DeadLetter", "dead_letters", {"total": {"type": "integer", "minimum": 0}}, ["total"]
    ),
}
