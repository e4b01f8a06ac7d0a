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
from taskrunner.errors import (
    InvalidArgument,
    InvalidJob,
    OutcomeUnknown,
    ResultNotExist,
    TaskRunnerError,
)
from taskrunner.kingtask import rpc_job, script_job
from taskrunner.kingtask_result import result_message
from taskrunner.models import RPC, JobRecord, JobState
from taskrunner.validation import JOB_ID_RE

PREFIXES = ("/api/v1/task", "/api/task")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ROUTES_HINT = (
    "POST {p}/script, POST {p}/rpc, GET {p}/result/{{uuid}}, GET {p}/count/undo,"
    " GET {p}/result/success/{{YYYY-MM-DD}}, GET {p}/result/failure/{{YYYY-MM-DD}}"
).format(p=PREFIXES[0])
# kingtask's own texts for these errors (the-no/kingtask core/errors/errors.go)
UPSTREAM_TEXTS: tuple[tuple[type[TaskRunnerError], str], ...] = (
    (InvalidArgument, "invalid argument"),
    (ResultNotExist, "result not exist"),
)
DETAIL_HEADER = "X-Taskrunner-Detail"  # what was wrong and what to do, beside kingtask's text


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
    refusal's 403: the client should try again. Where kingtask answers a fixed text
    ("invalid argument", "result not exist"), that text, the detail in DETAIL_HEADER."""
    if isinstance(exc, OutcomeUnknown):
        return json_value(str(exc), status=status)
    upstream = next((text for kind, text in UPSTREAM_TEXTS if isinstance(exc, kind)), None)
    if upstream is None:
        return error_response(status, str(exc))
    response = json_value(upstream, status=403)
    detail = str(exc).encode("ascii", "backslashreplace").decode("ascii")
    response.headers[DETAIL_HEADER] = " ".join(detail.split())[:1000]
    return response


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
    """kingtask's result: 200 once the job ended; until then, and for a uuid never seen or
    expired, 403 "result not exist", as kingtask answers while `r_<uuid>` is not written."""
    job_id = request.match_info.get("uuid") or request.query.get("uuid", "")
    if not job_id:
        raise InvalidArgument("no uuid: ask GET /api/v1/task/result/{uuid}")
    record = None
    if JOB_ID_RE.match(job_id):
        record = await request.app[SERVICE].find_job(job_id)
    if record is None:
        raise ResultNotExist(f"no job {job_id[:200]!r}: a wrong uuid, or its result expired")
    if not record.final:
        raise ResultNotExist(f"job {job_id} is {record.state!r}: ask again until it has ended")
    return json_value(result_reply(record))


def result_reply(record: JobRecord) -> dict[str, Any]:
    """kingtask's result object for a final job's record."""
    ok = record.state == JobState.SUCCEEDED
    message = result_message(
        ok=ok,
        stdout=_text(record.stdout),
        stderr=_text(record.stderr),
        error=_text(record.error),
        answered=record.kind == RPC and isinstance(record.http_status, int),
        state=record.state,
    )
    return {"is_result_exist": 1, "is_success": int(ok), "message": message}


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
