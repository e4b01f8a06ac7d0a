"""TaskRunner's HTTP API as upstream serves it (mylxsw/coyotes, the Go TaskRunner), kept
byte-compatible: `GET /`, `GET /status`, `POST /push`, `POST /queue`.

Answers are TaskRunner's envelope `{"status_code", "message", "data"}` (see `common.envelope`),
errors too, with the HTTP status equal to `status_code`; the error middleware in `api/app.py`
renders them. Each handler reads the request, calls one service operation, renders."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from taskrunner.api.common import SERVICE, envelope, read_fields
from taskrunner.errors import InvalidJob
from taskrunner.parsing import channel_alias
from taskrunner.service import ChannelSnapshot

# Upstream's task status numbers in /status.
STATUS_QUEUED_NO_MARK = 0
STATUS_QUEUED = 1
STATUS_RUNNING = 2


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/status", status)
    app.router.add_post("/push", push)
    app.router.add_post("/queue", create_queue)


async def index(request: web.Request) -> web.Response:
    return web.Response(text="TaskRunner Started.")


async def status(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    channel = request.query.get("channel") or None
    snapshots = await service.snapshots(channel)
    data = {snap.channel: _channel_status(snap) for snap in snapshots}
    stats = await service.counters()
    recent = await service.dead_letters(start=0, count=10)
    return envelope(data, dead_letters={"count": stats.get("dead_letters", 0), "recent": recent})


def _channel_status(snap: ChannelSnapshot) -> dict[str, Any]:
    tasks = [
        {
            "task_name": job.task,
            "channel": snap.channel,
            "status": _status_number(job.state, job.has_dedup_mark),
            "id": job.id,
            "state": job.state,
            **({"task_truncated": True} if job.task_truncated else {}),
        }
        for job in snap.jobs
    ]
    return {
        "tasks": tasks,
        "count": snap.queued + snap.running,
        "queued": snap.queued,
        "running": snap.running,
        "scheduled": snap.scheduled,
    }


def _status_number(state: str, has_mark: bool) -> int:
    if state == "running":
        return STATUS_RUNNING
    return STATUS_QUEUED if has_mark else STATUS_QUEUED_NO_MARK


async def push(request: web.Request) -> web.Response:
    fields = channel_alias(await read_fields(request))
    admission = await request.app[SERVICE].submit(fields, source="http /push")
    data = {"task_name": fields["task"], "result": admission.accepted, "id": admission.job_id}
    return envelope(data)


async def create_queue(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    fields = await read_fields(request)
    name = fields.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidJob('"name" is required: the channel name to create')
    distinct = str(fields.get("distinct", "false")).strip().lower() == "true"
    config = service.channel_config(
        name, distinct=distinct, worker_count=fields.get("worker", 0), worker_field='"worker"'
    )
    await service.create_channel(config)
    return envelope(None)
