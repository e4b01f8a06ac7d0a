"""The OpenAPI 3.0.3 document of the native API (`GET /api/openapi.json`).

The component schemas come from `api/schemas.py` (generated from the models where there is
one); the routes are a small table. Every route
`api/native.py` registers is described here, and nothing else; tests/test_openapi.py checks
both directions and runs generated requests against a live runner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from taskrunner.api.schemas import SCHEMAS, ref
from taskrunner.models import NAME_PATTERN, SUMMARY_TEXT_BYTES, JobState, schema_pattern
from taskrunner.models.listing import MAX_COMMAND_FILTER, MAX_TIME_S, SCAN_WINDOW
from taskrunner.validation import CHANNEL_NAME_RULE, JOB_ID_RE

# The API's limits on paging and waiting (api/native.py enforces them).
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
MAX_OFFSET: Final = 10_000_000
DEFAULT_WAIT_S: Final = 30.0
MAX_WAIT_S: Final = 300.0

JOB_ID_PATTERN: Final = schema_pattern(JOB_ID_RE)
LIST_JOBS_DESCRIPTION: Final = (
    "A page of job summaries (no output), newest first by creation time across every channel;"
    " follow `next_cursor` for older jobs: jobs created meanwhile never shift a page (no job"
    " twice, none skipped). The channel and time filters use the job index: a page costs the"
    " page's size. `state` (other than running) and `command` are checked job by job: such a"
    f" page looks at {SCAN_WINDOW} jobs at most and may hold fewer than `limit`, even none,"
    " with a `next_cursor` to go on from there. Jobs are listed while their records last."
    ' `offset` is refused: pass "cursor".'
)
NAME_DESCRIPTION: Final = f"Channel name: {CHANNEL_NAME_RULE}."


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": ref("schemas", schema_name)}},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    """The error responses an operation can give; 401 and 503 apply to every operation."""
    names = {
        400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 413: "TooLarge",
        415: "NotJson",
    }  # fmt: skip
    chosen = {str(s): ref("responses", names[s]) for s in statuses}
    return {
        **chosen,
        "401": ref("responses", "Unauthorized"),
        "503": ref("responses", "Unavailable"),
    }


def _body(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": description,
        "content": {"application/json": {"schema": ref("schemas", schema_name)}},
    }


_BODY_ERRORS: Final = (400, 413, 415)


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
        "name", "path", {"type": "string", "pattern": NAME_PATTERN}, NAME_DESCRIPTION
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
        "channel",
        "query",
        {"type": "string", "pattern": NAME_PATTERN},
        f"Only this channel's jobs; {CHANNEL_NAME_RULE}.",
    ),
    "StateFilter": _param(
        "state",
        "query",
        {"type": "string", "enum": [s.value for s in JobState]},
        "Only jobs in this state.",
    ),
    "Since": _param(
        "since",
        "query",
        {"type": "number", "minimum": 0, "maximum": MAX_TIME_S},
        "Only jobs created at or after this unix time (seconds).",
    ),
    "Until": _param(
        "until",
        "query",
        {"type": "number", "minimum": 0, "maximum": MAX_TIME_S},
        "Only jobs created at or before this unix time (seconds).",
    ),
    "CommandFilter": _param(
        "command",
        "query",
        {"type": "string", "maxLength": MAX_COMMAND_FILTER},
        f"Only jobs whose command holds this text, in any case (its first {SUMMARY_TEXT_BYTES}"
        " bytes are searched).",
    ),
    "Cursor": _param(
        "cursor",
        "query",
        {"type": "string"},
        "Where the page starts: the `next_cursor` of the page before, as it is (opaque).",
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
    also: tuple[tuple[int, str], ...] = ()  # other success answers: (status, description)


_PAGE: Final = ("Offset", "Limit")
ROUTES: Final = (
    Route("post", "/api/jobs", "createJob", "Submit a job", 201, "Job",
          "The job, queued or scheduled.", (403, 404, 409),
          body=("JobCreate", "The job: section 2 fields of the ingress message, plus `channel`."),
          also=((200, "A job with this `id` exists already (a retried push): that job, as it"
                 " is; nothing was created."),)),
    Route("get", "/api/jobs", "listJobs", "List jobs newest first, filtered, with cursor paging",
          200, "JobPage", LIST_JOBS_DESCRIPTION, (400, 404),
          ("ChannelFilter", "StateFilter", "Since", "Until", "CommandFilter", "Cursor", "Limit")),
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
        "responses": {
            str(route.status): success,
            **{str(status): _json(route.schema or "", text) for status, text in route.also},
            **_errors(*sorted(set(errors))),
        },
    }
    if route.params:
        operation["parameters"] = [ref("parameters", p) for p in route.params]
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
        "schemas": SCHEMAS,
    },
}
