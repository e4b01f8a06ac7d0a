"""The OpenAPI 3.0.3 document of the native API (`GET /api/openapi.json`).

The job schemas are generated from the models (`models.JobCreate`, `models.JobRecord`), so a
job field and its limits are written once; the routes are a small table. Every route
`api/native.py` registers is described here, and nothing else; tests/test_openapi.py checks
both directions and runs generated requests against a live runner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec
from msgspec import UNSET

from taskrunner.allow import MAX_PATTERN_CHARS, MAX_PATTERNS
from taskrunner.jobs import JOB_ID_RE, MAX_SECONDS, JobState
from taskrunner.models import NAME_PATTERN, Intervals, JobCreate, JobRecord, schema_pattern
from taskrunner.service import MAX_WORKERS
from taskrunner.store import DEAD_LETTER_RAW_BYTES

# The API's limits on paging and waiting (api/native.py enforces them).
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
MAX_OFFSET: Final = 10_000_000
DEFAULT_WAIT_S: Final = 30.0
MAX_WAIT_S: Final = 300.0

JOB_ID_PATTERN: Final = schema_pattern(JOB_ID_RE)


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("schemas", schema_name)}},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    """The error responses an operation can give; 401 and 503 apply to every operation."""
    names = {
        400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 413: "TooLarge",
        415: "NotJson",
    }  # fmt: skip
    chosen = {str(s): _ref("responses", names[s]) for s in statuses}
    return {
        **chosen,
        "401": _ref("responses", "Unauthorized"),
        "503": _ref("responses", "Unavailable"),
    }


def _body(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": description,
        "content": {"application/json": {"schema": _ref("schemas", schema_name)}},
    }


_BODY_ERRORS: Final = (400, 413, 415)
_NO_CONTENT: Final = {"description": "Done; no content."}
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

_CHANNEL: Final = {
    "type": "object",
    "required": [
        "name",
        "distinct",
        "worker_count",
        "paused",
        "timeout",
        "retries",
        "retry_intervals",
        "queued",
        "scheduled",
        "running",
    ],
    "properties": {
        "name": {"type": "string"},
        "distinct": {"type": "boolean"},
        "worker_count": {"type": "integer"},
        "paused": {"type": "boolean"},
        "timeout": {"type": "number"},
        "retries": {"type": "integer"},
        "retry_intervals": {"type": "array", "items": {"type": "number"}},
        "log_output": {"type": "boolean", "description": "Present (true) when output is logged."},
        "allow": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Present when the channel has an allowlist of programs.",
        },
        "queued": {"type": "integer", "minimum": 0},
        "scheduled": {"type": "integer", "minimum": 0, "description": "Delayed or retrying."},
        "running": {"type": "integer", "minimum": 0},
    },
}

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


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


_PARAMETERS: Final = {
    "JobId": _param("id", "path", {"type": "string", "pattern": JOB_ID_PATTERN}, "Job id."),
    "ChannelName": _param(
        "name", "path", {"type": "string", "pattern": NAME_PATTERN}, "Channel name."
    ),
    "DeadLetterId": _param(
        "id", "path", {"type": "string", "pattern": "^[0-9a-f]{16}$"}, "Dead letter id."
    ),
    "Offset": _param(
        "offset",
        "query",
        {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
        "Items to skip.",
    ),
    "Limit": _param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "Items per page.",
    ),
    "ChannelFilter": _param(
        "channel", "query", {"type": "string", "pattern": NAME_PATTERN}, "Only this channel's jobs."
    ),
    "StateFilter": _param(
        "state",
        "query",
        {"type": "string", "enum": [s.value for s in JobState]},
        "Only jobs in this state.",
    ),
    "WaitTimeout": _param(
        "timeout",
        "query",
        {
            "type": "number",
            "exclusiveMinimum": True,
            "minimum": 0,
            "maximum": MAX_WAIT_S,
            "default": DEFAULT_WAIT_S,
        },
        "Seconds to wait at most.",
    ),
}

_RESPONSES: Final = {
    "BadRequest": _json("Error", "The request is invalid; the message names what to fix."),
    "Unauthorized": _json(
        "Error", "Missing or wrong bearer token (runner started with --auth-token)."
    ),
    "NotFound": _json("Error", "No such job, channel, dead letter or route."),
    "Conflict": _json("Error", "The request clashes with the current state."),
    "Forbidden": _json(
        "Error",
        "An allowlist (the runner's --allow or the channel's `allow`) refuses the job's program.",
    ),
    "TooLarge": _json("Error", "The request body is over 1 MiB."),
    "NotJson": _json("Error", "The body is not sent as application/json."),
    "Unavailable": _json("Error", "Redis is unavailable; try again shortly."),
}


def _page(item_schema: str, key: str, extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key, *required],
        "properties": {key: {"type": "array", "items": _ref("schemas", item_schema)}, **extra},
    }


_SCHEMAS: Final = {
    "Error": _ERROR,
    **_model_schemas(),
    "JobPage": _page(
        "Job",
        "jobs",
        {
            "next_offset": _nullable(
                "integer", description="Offset of the next page; null at the end."
            )
        },
        ["next_offset"],
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


def _op(
    op_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    params: Sequence[str] = (),
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        operation["parameters"] = [_ref("parameters", p) for p in params]
    if body is not None:
        operation["requestBody"] = body
    return operation


_PATHS: Final = {
    "/api/jobs": {
        "post": _op(
            "createJob",
            "Submit a job",
            {
                "201": _json("Job", "The job, queued or scheduled."),
                **_errors(*_BODY_ERRORS, 403, 404, 409),
            },
            body=_body(
                "JobCreate", "The job: section 2 fields of the ingress message, plus `channel`."
            ),
        ),
        "get": _op(
            "listJobs",
            "List jobs, by channel and state, with offset paging",
            {"200": _json("JobPage", "A page of job summaries (no output)."), **_errors(400, 404)},
            params=["ChannelFilter", "StateFilter", "Offset", "Limit"],
        ),
    },
    "/api/jobs/{id}": {
        "get": _op(
            "getJob",
            "Get a job with its result",
            {"200": _json("Job", "The job."), **_errors(404)},
            params=["JobId"],
        ),
    },
    "/api/jobs/{id}/wait": {
        "get": _op(
            "waitJob",
            "Wait until a job ends (or the timeout runs out)",
            {"200": _json("Job", "The job; `final` tells whether it ended."), **_errors(400, 404)},
            params=["JobId", "WaitTimeout"],
        ),
    },
    "/api/jobs/{id}/cancel": {
        "post": _op(
            "cancelJob",
            "Cancel a queued, scheduled or running job",
            {
                "200": _json("CancelResult", "Cancelled, or its runner was told to kill it."),
                **_errors(404, 409),
            },
            params=["JobId"],
        ),
    },
    "/api/channels": {
        "get": _op(
            "listChannels",
            "List channels with their job counts",
            {"200": _json("ChannelList", "Every channel.")} | _errors(),
        ),
        "post": _op(
            "createChannel",
            "Create a channel",
            {"201": _json("Channel", "The new channel."), **_errors(*_BODY_ERRORS, 409)},
            body=_body(
                "ChannelCreate", "Name and settings; defaults: not distinct, --concurrent workers."
            ),
        ),
    },
    "/api/channels/{name}": {
        "get": _op(
            "getChannel",
            "Get a channel",
            {"200": _json("Channel", "The channel."), **_errors(400, 404)},
            params=["ChannelName"],
        ),
        "patch": _op(
            "updateChannel",
            "Change a channel's settings (live on every runner)",
            {"200": _json("Channel", "The channel as changed."), **_errors(*_BODY_ERRORS, 404)},
            params=["ChannelName"],
            body=_body("ChannelUpdate", "The settings to change."),
        ),
        "delete": _op(
            "deleteChannel",
            "Delete an empty channel",
            {"204": _NO_CONTENT, **_errors(400, 404, 409)},
            params=["ChannelName"],
        ),
    },
    "/api/channels/{name}/pause": {
        "post": _op(
            "pauseChannel",
            "Pause a channel: its jobs stay queued",
            {"200": _json("Channel", "The channel.")} | _errors(400, 404),
            params=["ChannelName"],
        ),
    },
    "/api/channels/{name}/resume": {
        "post": _op(
            "resumeChannel",
            "Resume a paused channel",
            {"200": _json("Channel", "The channel.")} | _errors(400, 404),
            params=["ChannelName"],
        ),
    },
    "/api/stats": {
        "get": _op(
            "getStats",
            "Counters, per-channel counts, dead totals and runners",
            {"200": _json("Stats", "The statistics.")} | _errors(),
        ),
    },
    "/api/dead-jobs": {
        "get": _op(
            "listDeadJobs",
            "List dead jobs (failed after their retries), newest first",
            {
                "200": _json("DeadJobPage", "A page of dead jobs with their last error."),
                **_errors(400),
            },
            params=["Offset", "Limit"],
        ),
    },
    "/api/dead-jobs/{id}/retry": {
        "post": _op(
            "retryDeadJob",
            "Queue a dead job again with a fresh retry budget",
            {"200": _json("Job", "The job, queued again."), **_errors(404, 409)},
            params=["JobId"],
        ),
    },
    "/api/dead-jobs/{id}": {
        "delete": _op(
            "dropDeadJob",
            "Delete a dead job for good",
            {"204": _NO_CONTENT, **_errors(404, 409)},
            params=["JobId"],
        ),
    },
    "/api/dead-letters": {
        "get": _op(
            "listDeadLetters",
            "List refused ingress messages, newest first",
            {"200": _json("DeadLetterPage", "A page of dead letters."), **_errors(400)},
            params=["Offset", "Limit"],
        ),
    },
    "/api/dead-letters/{id}/retry": {
        "post": _op(
            "retryDeadLetter",
            "Push a dead letter's message back on the prepare queue (409 if it is truncated)",
            {"200": _json("DeadLetter", "The entry, now routed again."), **_errors(404, 409)},
            params=["DeadLetterId"],
        ),
    },
    "/api/dead-letters/{id}": {
        "delete": _op(
            "dropDeadLetter",
            "Delete a dead letter",
            {"204": _NO_CONTENT, **_errors(404)},
            params=["DeadLetterId"],
        ),
    },
    "/api/openapi.json": {
        "get": _op(
            "getOpenApi",
            "This document",
            {
                "200": {
                    "description": "The OpenAPI document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_errors(),
            },
        ),
    },
}

OPENAPI_DOCUMENT: Final[dict[str, Any]] = {
    "openapi": "3.0.3",
    "info": {
        "title": "taskrunner native API",
        "version": "1",
        "description": "Jobs, channels, stats, dead jobs and dead letters of a taskrunner"
        " deployment (every runner sharing one Redis). Errors are"
        ' `{"error": {"status", "message"}}` with the HTTP status.',
    },
    "security": [{"bearerAuth": []}],
    "paths": _PATHS,
    "components": {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "The runner's --auth-token (TASKRUNNER_AUTH_TOKEN); not needed"
                " when the runner was started without one.",
            }
        },
        "parameters": _PARAMETERS,
        "responses": _RESPONSES,
        "schemas": _SCHEMAS,
    },
}
