"""The OpenAPI 3.0.3 document of the native API (`GET /api/openapi.json`).

The job schemas are generated from the models (`models.JobCreate`, `models.JobRecord`), so a
job field and its limits are written once; the routes are a small table. Every route
`api/native.py` registers is described here, and nothing else; tests/test_openapi.py checks
both directions and runs generated requests against a live runner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

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


class Route(NamedTuple):
    """One operation: its answer on success (status, schema, description), the error statuses
    besides 401 and 503 (an operation with a body adds 400, 413 and 415), its parameters and
    its body (schema, description)."""

    method: str
    path: str
    op_id: str
    summary: str
    status: int
    schema: str | None  # None: no content (204), or any object (the document itself)
    description: str
    errors: tuple[int, ...] = ()
    params: tuple[str, ...] = ()
    body: tuple[str, str] | None = None


_PAGE: Final = ("Offset", "Limit")
ROUTES: Final = (
    Route("post", "/api/jobs", "createJob", "Submit a job", 201, "Job",
          "The job, queued or scheduled.", (403, 404, 409),
          body=("JobCreate", "The job: section 2 fields of the ingress message, plus `channel`.")),
    Route("get", "/api/jobs", "listJobs", "List jobs, by channel and state, with offset paging",
          200, "JobPage", "A page of job summaries (no output).", (400, 404),
          ("ChannelFilter", "StateFilter", *_PAGE)),
    Route("get", "/api/jobs/{id}", "getJob", "Get a job with its result", 200, "Job", "The job.",
          (404,), ("JobId",)),
    Route("get", "/api/jobs/{id}/wait", "waitJob",
          "Wait until a job ends (or the timeout runs out)", 200, "Job",
          "The job; `final` tells whether it ended.", (400, 404), ("JobId", "WaitTimeout")),
    Route("post", "/api/jobs/{id}/cancel", "cancelJob", "Cancel a queued, scheduled or running job",
          200, "CancelResult", "Cancelled, or its runner was told to kill it.", (404, 409),
          ("JobId",)),
    Route("get", "/api/channels", "listChannels", "List channels with their job counts", 200,
          "ChannelList", "Every channel."),
    Route("post", "/api/channels", "createChannel", "Create a channel", 201, "Channel",
          "The new channel.", (409,),
          body=("ChannelCreate", "Name and settings; defaults: not distinct, --concurrent workers.")),
    Route("get", "/api/channels/{name}", "getChannel", "Get a channel", 200, "Channel",
          "The channel.", (400, 404), ("ChannelName",)),
    Route("patch", "/api/channels/{name}", "updateChannel",
          "Change a channel's settings (live on every runner)", 200, "Channel",
          "The channel as changed.", (404,), ("ChannelName",),
          ("ChannelUpdate", "The settings to change.")),
    Route("delete", "/api/channels/{name}", "deleteChannel", "Delete an empty channel", 204, None,
          "Done; no content.", (400, 404, 409), ("ChannelName",)),
    Route("post", "/api/channels/{name}/pause", "pauseChannel",
          "Pause a channel: its jobs stay queued", 200, "Channel", "The channel.", (400, 404),
          ("ChannelName",)),
    Route("post", "/api/channels/{name}/resume", "resumeChannel", "Resume a paused channel", 200,
          "Channel", "The channel.", (400, 404), ("ChannelName",)),
    Route("get", "/api/stats", "getStats", "Counters, per-channel counts, dead totals and runners",
          200, "Stats", "The statistics."),
    Route("get", "/api/dead-jobs", "listDeadJobs",
          "List dead jobs (failed after their retries), newest first", 200, "DeadJobPage",
          "A page of dead jobs with their last error.", (400,), _PAGE),
    Route("post", "/api/dead-jobs/{id}/retry", "retryDeadJob",
          "Queue a dead job again with a fresh retry budget", 200, "Job",
          "The job, queued again.", (404, 409), ("JobId",)),
    Route("delete", "/api/dead-jobs/{id}", "dropDeadJob", "Delete a dead job for good", 204, None,
          "Done; no content.", (404, 409), ("JobId",)),
    Route("get", "/api/dead-letters", "listDeadLetters",
          "List refused ingress messages, newest first", 200, "DeadLetterPage",
          "A page of dead letters.", (400,), _PAGE),
    Route("post", "/api/dead-letters/{id}/retry", "retryDeadLetter",
          "Push a dead letter's message back on the prepare queue (409 if it is truncated)", 200,
          "DeadLetter", "The entry, now routed again.", (404, 409), ("DeadLetterId",)),
    Route("delete", "/api/dead-letters/{id}", "dropDeadLetter", "Delete a dead letter", 204, None,
          "Done; no content.", (404,), ("DeadLetterId",)),
    Route("get", "/api/openapi.json", "getOpenApi", "This document", 200, None,
          "The OpenAPI document."),
)  # fmt: skip


def _operation(route: Route) -> dict[str, Any]:
    if route.schema is not None:
        success = _json(route.schema, route.description)
    elif route.status == 204:
        success = {"description": route.description}
    else:
        success = {
            "description": route.description,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    errors = (*route.errors, *(_BODY_ERRORS if route.body else ()))
    operation: dict[str, Any] = {
        "operationId": route.op_id,
        "summary": route.summary,
        "responses": {str(route.status): success, **_errors(*sorted(set(errors)))},
    }
    if route.params:
        operation["parameters"] = [_ref("parameters", p) for p in route.params]
    if route.body is not None:
        operation["requestBody"] = _body(*route.body)
    return operation


def _paths(routes: Sequence[Route]) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    return paths


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
    "paths": _paths(ROUTES),
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
