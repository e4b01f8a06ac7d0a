"""kingtask's HTTP API under `/api/v1/task` and `/api/task`: script and rpc jobs, results, counts.

Success is HTTP 200 with a JSON string (a new job's uuid), a JSON number (counts) or a result
object. Every error is HTTP 403 with a JSON string saying what was wrong and what to do (401 for
a missing token, 503 for a push whose outcome is unknown); `error_response` and
`exception_response` render that shape for the app's error middleware.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from msgspec import UnsetType

from taskrunner.admission import accepted_id
from taskrunner.api.common import JSON_UTF8, SERVICE, read_fields
from taskrunner.errors import InvalidJob, JobNotFound, OutcomeUnknown, TaskRunnerError
from taskrunner.kingtask import rpc_job, script_job
from taskrunner.models import RPC, JobRecord, JobState
from taskrunner.validation import JOB_ID_RE

PREFIXES = ("/api/v1/task", "/api/task")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ROUTES_HINT = (
    "POST {p}/script, POST {p}/rpc, GET {p}/result/{{uuid}}, GET {p}/count/undo,"
    " GET {p}/result/success/{{YYYY-MM-DD}}, GET {p}/result/failure/{{YYYY-MM-DD}}"
).format(p=PREFIXES[0])
NOT_FINISHED = {"is_result_exist": 0, "is_success": 0, "message": ""}


@dataclass(frozen=True, slots=True, kw_only=True)
class KingtaskConfig:
    bin_path: Path | None  # --bin-path: where script jobs' executables live


KINGTASK = web.AppKey("kingtask", KingtaskConfig)


def add_routes(app: web.Application, *, bin_path: Path | None) -> None:
    app[KINGTASK] = KingtaskConfig(bin_path=bin_path)
    app.router.add_post(PREFIXES[0], submit_script)
    for prefix in PREFIXES:
        app.router.add_post(f"{prefix}/script", submit_script)
        app.router.add_post(f"{prefix}/rpc", submit_rpc)
        app.router.add_get(f"{prefix}/result", result)
        app.router.add_get(f"{prefix}/result/{{uuid}}", result)
        app.router.add_get(f"{prefix}/result/success/{{date}}", succeeded_on)
        app.router.add_get(f"{prefix}/result/failure/{{date}}", failed_on)
        app.router.add_get(f"{prefix}/count/undo", count_undo)


def json_value(value: Any, *, status: int = 200) -> web.Response:
    """A bare JSON value (string, number or object), as kingtask answers."""
    return web.Response(
        text=json.dumps(value, ensure_ascii=False),
        status=status,
        content_type=JSON_UTF8,
        charset="utf-8",
    )


def error_response(status: int, message: str) -> web.Response:
    """kingtask's error shape: HTTP 403 with a JSON string (401 stays 401: a missing token)."""
    return json_value(message, status=401 if status == 401 else 403)


def exception_response(status: int, exc: TaskRunnerError) -> web.Response:
    """A taskrunner error in kingtask's shape; a push whose outcome is unknown is 503, not a
    refusal's 403: the client should try again."""
    if isinstance(exc, OutcomeUnknown):
        return json_value(str(exc), status=status)
    return error_response(status, str(exc))


# -- submitting -------------------------------------------------------------------------


async def submit_script(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    fields = await read_fields(request, include_query=True)
    job = script_job(
        fields,
        bin_path=request.app[KINGTASK].bin_path,
        now=time.time(),
        limits=service.settings.limits,
    )
    return json_value(accepted_id(await service.push(job, source="http kingtask")))


async def submit_rpc(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    fields = await read_fields(request, include_query=True)
    job = rpc_job(fields, now=time.time(), limits=service.settings.limits)
    return json_value(accepted_id(await service.push(job, source="http kingtask")))


# -- reading ----------------------------------------------------------------------------


async def result(request: web.Request) -> web.Response:
    job_id = request.match_info.get("uuid") or request.query.get("uuid", "")
    record = None
    if JOB_ID_RE.match(job_id):
        record = await request.app[SERVICE].find_job(job_id)
    if record is None:
        raise JobNotFound(
            f"result not exist: no job {job_id[:200]!r} (a wrong uuid, or its result expired)"
        )
    return json_value(result_reply(record))


def result_reply(record: JobRecord) -> dict[str, Any]:
    """kingtask's result object for a job record; `is_result_exist` 0 until it is final."""
    if not record.final:
        return dict(NOT_FINISHED)
    ok = record.state == JobState.SUCCEEDED
    return {"is_result_exist": 1, "is_success": int(ok), "message": _message(record, ok=ok)}


def _message(record: JobRecord, *, ok: bool) -> str:
    """stdout on success; else stderr, an rpc answer's body, or the error text (in that order).
    Trailing newlines are dropped, as kingtask did."""
    if ok:
        return _text(record.stdout).rstrip("\n")
    answered = record.kind == RPC and isinstance(record.http_status, int)
    candidates = (record.stderr, record.stdout if answered else None)
    for text in (*candidates, record.error, record.state):
        if isinstance(text, str) and text.strip():
            return text.rstrip("\n")
    return ""


def _text(value: str | UnsetType | None) -> str:
    return value if isinstance(value, str) else ""


async def count_undo(request: web.Request) -> web.Response:
    return json_value(await request.app[SERVICE].undo_count())


async def succeeded_on(request: web.Request) -> web.Response:
    return await _daily(request, "succeeded")


async def failed_on(request: web.Request) -> web.Response:
    return await _daily(request, "failed")


async def _daily(request: web.Request, counter: str) -> web.Response:
    date = request.match_info["date"]
    if not DATE_RE.match(date) or not _is_date(date):
        raise InvalidJob(f"date {date[:40]!r} must be YYYY-MM-DD, e.g. 2015-10-30")
    counts = await request.app[SERVICE].daily_counts(date)
    return json_value(counts.get(counter, 0))


def _is_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True
