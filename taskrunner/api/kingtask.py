"""kingtask's HTTP API under `/api/v1/task` and `/api/task`: script and rpc jobs, results, counts.

Success is HTTP 200 with a JSON string (a new job's uuid), a JSON number (counts) or a result
object. Every error is HTTP 403 with a JSON string saying what was wrong and what to do (401 for
a missing token); `error_response` renders that shape for the app's error middleware.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from taskrunner.api.common import JSON_UTF8, SERVICE, read_fields
from taskrunner.errors import InvalidChannel, InvalidJob, JobNotFound, TaskRunnerError
from taskrunner.jobs import JOB_ID_RE, RPC, Job, JobState
from taskrunner.kinds import KINGTASK_CHANNEL, rpc_job, script_job
from taskrunner.service import Service

log = logging.getLogger("taskrunner.api.kingtask")

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
    return json_value(await _submit(service, job))


async def submit_rpc(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    fields = await read_fields(request, include_query=True)
    job = rpc_job(fields, now=time.time(), limits=service.settings.limits)
    return json_value(await _submit(service, job))


async def _submit(service: Service, job: Job) -> str:
    """Enqueue a new job (never a duplicate); the `kingtask` channel is created on first use."""
    async with service.push_deadline(job):
        return await _admit(service, job)


async def _admit(service: Service, job: Job) -> str:
    if job.channel == KINGTASK_CHANNEL:
        config = service.channel_config(KINGTASK_CHANNEL, distinct=False, worker_count=0)
        if await service.store.create_channel(config, exist_ok=True):
            log.info(
                "channel %s created for kingtask jobs (%d workers)",
                config.name,
                config.worker_count,
            )
    await service.check_allowed(job)
    admission = await service.store.enqueue(job, runner_id=service.settings.runner_id)
    if admission.status == "nochan":
        raise InvalidChannel(
            f"channel {job.channel!r} does not exist: create it first (POST /queue name=...),"
            f' or leave "channel" empty to use {KINGTASK_CHANNEL!r}'
        )
    if not admission.accepted:
        raise TaskRunnerError(f"job {job.id} was refused ({admission.status}): submit it again")
    log.debug(
        "%s job %s queued in %s",
        job.kind,
        job.id,
        job.channel,
        extra={"job_id": job.id, "channel": job.channel},
    )
    return job.id


# -- reading ----------------------------------------------------------------------------


async def result(request: web.Request) -> web.Response:
    job_id = request.match_info.get("uuid") or request.query.get("uuid", "")
    record = None
    if JOB_ID_RE.match(job_id):
        record = await request.app[SERVICE].store.get_job(job_id)
    if record is None:
        raise JobNotFound(
            f"result not exist: no job {job_id[:200]!r} (a wrong uuid, or its result expired)"
        )
    return json_value(result_reply(record))


def result_reply(record: dict[str, str]) -> dict[str, Any]:
    """kingtask's result object for a job record; `is_result_exist` 0 until it is final."""
    state = record.get("state", "")
    if state not in {s.value for s in JobState if s.is_final}:
        return dict(NOT_FINISHED)
    ok = state == JobState.SUCCEEDED
    return {"is_result_exist": 1, "is_success": int(ok), "message": _message(record, ok=ok)}


def _message(record: dict[str, str], *, ok: bool) -> str:
    """stdout on success; else stderr, an rpc answer's body, or the error text (in that order).
    Trailing newlines are dropped, as kingtask did."""
    if ok:
        return record.get("stdout", "").rstrip("\n")
    answered = record.get("kind") == RPC and record.get("http_status")
    candidates = (record.get("stderr"), record.get("stdout") if answered else None)
    for text in (*candidates, record.get("error"), record.get("state")):
        if text and text.strip():
            return text.rstrip("\n")
    return ""


async def count_undo(request: web.Request) -> web.Response:
    return json_value(await request.app[SERVICE].store.undo_count())


async def succeeded_on(request: web.Request) -> web.Response:
    return await _daily(request, "succeeded")


async def failed_on(request: web.Request) -> web.Response:
    return await _daily(request, "failed")


async def _daily(request: web.Request, counter: str) -> web.Response:
    date = request.match_info["date"]
    if not DATE_RE.match(date) or not _is_date(date):
        raise InvalidJob(f"date {date[:40]!r} must be YYYY-MM-DD, e.g. 2015-10-30")
    counts = await request.app[SERVICE].store.daily_counts(date)
    return json_value(counts.get(counter, 0))


def _is_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True
