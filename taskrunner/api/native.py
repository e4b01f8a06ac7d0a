"""The native JSON API under `/api`: jobs, channels, stats, dead jobs and dead letters.

Thin adapters over `Service`: read and check the request, call one service operation, render
JSON. Errors are `{"error": {"status", "message"}}` (see `error_response`), rendered for every
`/api/...` path outside kingtask's prefixes by the errors middleware in `api/app.py`."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any, Final

from aiohttp import web

from taskrunner.admission import accepted_id
from taskrunner.api.common import SERVICE
from taskrunner.api.openapi import (
    DEFAULT_LIMIT,
    DEFAULT_WAIT_S,
    MAX_LIMIT,
    MAX_OFFSET,
    MAX_WAIT_S,
    OPENAPI_DOCUMENT,
)
from taskrunner.errors import DuplicateJob, InvalidJob, OutcomeUnknown, TaskRunnerError
from taskrunner.models import JOB_CREATE_FIELDS, parse_job_query
from taskrunner.parsing import channel_alias
from taskrunner.validation import plain_number

PREFIX: Final = "/api"
ROUTES_HINT: Final = "the routes listed in GET /api/openapi.json"
JSON_TYPES: Final = frozenset({"application/json"})

_dumps = functools.partial(json.dumps, ensure_ascii=False)
# Set when the HTTP server shuts down: waits answer at once instead of holding the stop up.
STOPPING = web.AppKey("native_stopping", asyncio.Event)


def add_routes(app: web.Application) -> None:
    app[STOPPING] = asyncio.Event()
    app.on_shutdown.append(_stopping)
    r = app.router
    r.add_post("/api/jobs", create_job)
    r.add_get("/api/jobs", list_jobs, allow_head=False)
    r.add_get("/api/jobs/{id}", get_job, allow_head=False)
    r.add_get("/api/jobs/{id}/wait", wait_job, allow_head=False)
    r.add_post("/api/jobs/{id}/cancel", cancel_job)
    r.add_get("/api/channels", list_channels, allow_head=False)
    r.add_post("/api/channels", create_channel)
    r.add_get("/api/channels/{name}", get_channel, allow_head=False)
    r.add_patch("/api/channels/{name}", update_channel)
    r.add_delete("/api/channels/{name}", delete_channel)
    r.add_post("/api/channels/{name}/pause", pause_channel)
    r.add_post("/api/channels/{name}/resume", resume_channel)
    r.add_get("/api/stats", stats, allow_head=False)
    r.add_get("/api/dead-jobs", list_dead_jobs, allow_head=False)
    r.add_post("/api/dead-jobs/{id}/retry", retry_dead_job)
    r.add_delete("/api/dead-jobs/{id}", drop_dead_job)
    r.add_get("/api/dead-letters", list_dead_letters, allow_head=False)
    r.add_post("/api/dead-letters/{id}/retry", retry_dead_letter)
    r.add_delete("/api/dead-letters/{id}", drop_dead_letter)
    r.add_get("/api/openapi.json", openapi_document, allow_head=False)


def reply(data: Any, *, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    """The native API's error shape: `{"error": {"status", "message"}, ...extra}`."""
    return reply({"error": {"status": status, "message": message}, **extra}, status=status)


def exception_response(status: int, exc: TaskRunnerError) -> web.Response:
    """A taskrunner error in the native shape, with the job id a client needs beside it: `id`
    when a push's outcome is unknown (push again with it), `duplicate_of` naming the live job
    that refused a push."""
    extra: dict[str, str] = {}
    if isinstance(exc, OutcomeUnknown):
        extra["id"] = exc.job_id
    elif isinstance(exc, DuplicateJob):
        extra["duplicate_of"] = exc.live_id
    return error_response(status, str(exc), **extra)


# -- jobs -------------------------------------------------------------------------------------


async def create_job(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    fields = await _json_object(request)
    _refuse_unknown(fields, JOB_CREATE_FIELDS, "job")
    fields = channel_alias(fields, refuse_both=True)
    admission = await service.submit(fields, source="http /api/jobs")
    job_id = accepted_id(admission)  # a duplicate: 409 naming the live job
    created = admission.status == "ok"  # else a job has this id: a retried push, answered
    return reply((await service.get_job(job_id)).to_view(), status=201 if created else 200)


async def list_jobs(request: web.Request) -> web.Response:
    """A page of jobs newest first; `next_cursor` continues it (see `models.listing`)."""
    if "offset" in request.query:
        raise InvalidJob(
            'query parameter "offset": /api/jobs pages with cursors: leave "offset" out and pass'
            ' the "next_cursor" of the page before as "cursor"'
        )
    query = parse_job_query(request.query, limit=_limit(request))
    records, next_cursor = await request.app[SERVICE].list_jobs(query)
    return reply({"jobs": [r.to_view() for r in records], "next_cursor": next_cursor})


async def get_job(request: web.Request) -> web.Response:
    return reply((await request.app[SERVICE].get_job(request.match_info["id"])).to_view())


async def wait_job(request: web.Request) -> web.Response:
    """The job once final, or as it is when the timeout runs out or the server stops."""
    service, job_id = request.app[SERVICE], request.match_info["id"]
    timeout_s = _wait_seconds(request.query.get("timeout"))
    waiting = asyncio.ensure_future(service.wait_job(job_id, timeout_s=timeout_s))
    stopping = asyncio.ensure_future(request.app[STOPPING].wait())
    try:
        await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, stopping):
            task.cancel()
        await asyncio.gather(waiting, stopping, return_exceptions=True)
    if waiting.cancelled():  # the server is stopping: the job as it is now
        return reply((await service.get_job(job_id)).to_view())
    return reply(waiting.result().to_view())


async def _stopping(app: web.Application) -> None:
    app[STOPPING].set()


async def cancel_job(request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    state = await request.app[SERVICE].cancel(job_id)
    if state not in ("cancelled", "running"):
        return error_response(
            409, f"job {job_id} already ended as {state}: only live jobs can be cancelled"
        )
    return reply({"id": job_id, "state": state})


# -- channels ---------------------------------------------------------------------------------


async def list_channels(request: web.Request) -> web.Response:
    return reply({"channels": await request.app[SERVICE].channels()})


async def create_channel(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    fields = await _json_object(request)
    name = fields.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidJob('"name" is required: a string with the name of the channel to create')
    config = service.new_channel(name, fields)
    await service.create_channel(config)
    return reply(await service.describe_channel(config), status=201)


async def get_channel(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    config = await service.require_channel(request.match_info["name"])
    return reply(await service.describe_channel(config))


async def update_channel(request: web.Request) -> web.Response:
    fields = await _json_object(request)
    if "name" in fields:
        raise InvalidJob(
            '"name" cannot be changed: create a channel with the new name and delete this one'
        )
    return await _change_channel(request, fields)


async def pause_channel(request: web.Request) -> web.Response:
    return await _change_channel(request, {"paused": True})


async def resume_channel(request: web.Request) -> web.Response:
    return await _change_channel(request, {"paused": False})


async def delete_channel(request: web.Request) -> web.Response:
    await request.app[SERVICE].delete_channel(request.match_info["name"])
    return web.Response(status=204)


async def _change_channel(request: web.Request, fields: dict[str, Any]) -> web.Response:
    service = request.app[SERVICE]
    config = await service.update_channel(request.match_info["name"], fields)
    return reply(await service.describe_channel(config))


# -- stats, dead jobs, dead letters -----------------------------------------------------------


async def stats(request: web.Request) -> web.Response:
    return reply(await request.app[SERVICE].stats())


async def list_dead_jobs(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    records, total = await service.dead_jobs(offset=_offset(request), limit=_limit(request))
    return reply({"jobs": [r.to_view() for r in records], "total": total})


async def retry_dead_job(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    job_id = request.match_info["id"]
    await service.retry_dead_job(job_id)
    return reply((await service.get_job(job_id)).to_view())


async def drop_dead_job(request: web.Request) -> web.Response:
    await request.app[SERVICE].drop_dead_job(request.match_info["id"])
    return web.Response(status=204)


async def list_dead_letters(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    entries = await service.dead_letters(start=_offset(request), count=_limit(request))
    return reply({"dead_letters": entries, "total": await service.dead_letter_count()})


async def retry_dead_letter(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return reply(await service.take_dead_letter(request.match_info["id"], requeue=True))


async def drop_dead_letter(request: web.Request) -> web.Response:
    await request.app[SERVICE].take_dead_letter(request.match_info["id"], requeue=False)
    return web.Response(status=204)


async def openapi_document(request: web.Request) -> web.Response:
    return reply(OPENAPI_DOCUMENT)


# -- reading requests -------------------------------------------------------------------------


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; InvalidJob (400) or 415 saying what to send."""
    if request.headers.get("Content-Type") and request.content_type not in JSON_TYPES:
        raise web.HTTPUnsupportedMediaType(
            reason="the body must be JSON: send it with Content-Type: application/json"
        )
    body = await request.read()
    if not body.strip():
        raise InvalidJob("the request body is empty: send a JSON object")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidJob(
            f"the request body is not valid JSON ({exc}): send a JSON object"
        ) from None
    if not isinstance(data, dict):
        raise InvalidJob(f"the request body is a JSON {type(data).__name__}: send a JSON object")
    return data


def _refuse_unknown(fields: dict[str, Any], known: frozenset[str], what: str) -> None:
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InvalidJob(
            f"unknown {what} field(s) {', '.join(unknown)}: use {', '.join(sorted(known))}"
        )


def _offset(request: web.Request) -> int:
    return _whole_number(request, "offset", default=0, low=0, high=MAX_OFFSET)


def _limit(request: web.Request) -> int:
    return _whole_number(request, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)


def _whole_number(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise InvalidJob(
            f'query parameter "{name}" must be a whole number from {low} to {high}, got {text!r}'
        )
    return int(text)


def _wait_seconds(text: str | None) -> float:
    if text is None:
        return DEFAULT_WAIT_S
    seconds = plain_number(text)
    if not 0 < seconds <= MAX_WAIT_S:  # False for NaN
        raise InvalidJob(
            f'query parameter "timeout" must be seconds, more than 0 and at most'
            f" {MAX_WAIT_S:.0f}, got {text!r}"
        )
    return seconds
