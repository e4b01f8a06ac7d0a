"""TaskRunner's HTTP API as upstream serves it (mylxsw/coyotes, the Go TaskRunner), kept
byte-compatible: `GET /`, `GET /status`, `POST /push`, `POST /queue`.

Answers are TaskRunner's envelope `{"status_code", "message", "data"}` (see `common.envelope`),
errors too, with the HTTP status equal to `status_code`; the error middleware in `api/app.py`
renders them. Each handler reads the request, calls one service operation, renders."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from taskrunner.api import gojson
from taskrunner.api.common import SERVICE, envelope, read_fields
from taskrunner.errors import ChannelNotFound, InvalidChannel, InvalidJob
from taskrunner.parsing import channel_alias
from taskrunner.service import ChannelSnapshot, Service

# Upstream's task status numbers in /status.
STATUS_QUEUED_NO_MARK = 0
STATUS_QUEUED = 1
STATUS_RUNNING = 2


# Upstream's `GET /` under `-colorful-tty` (config/welcome.go at 93fa9c0): its banner, verbatim.
BANNER = (
    "\n"
    "   ::::::::::::::::::::\n"
    "      :+:    :+:    :+          TaskRunner v1.0\n"
    "     +:+    +:+    +:+                                    \u2588\n"
    "    +#+    +#++:++#:           Powered by mylxsw          \u2588\n"
    "   +#+    +#+    +#+     github.com/mylxsw/task-runner    \u2588\n"
    "  #+#    #+#    #+#                                       \u2588\n"
    " ###    ###    ###     " + "\u2588" * 36 + "\n"
    "\n"
)
STARTED = "TaskRunner Started."


def add_routes(app: web.Application, *, colorful_tty: bool = False) -> None:
    welcome = BANNER if colorful_tty else STARTED

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=welcome)

    app.router.add_get("/", index)
    app.router.add_get("/status", status)
    app.router.add_post("/status", status)  # upstream read `channel` with FormValue: any method
    app.router.add_post("/push", push)
    app.router.add_post("/queue", create_queue)


async def status(request: web.Request) -> web.Response:
    """Upstream's /status (http/handler/status.go): every channel's `{"tasks", "count"}` keyed by
    name, or with `channel` that one channel's object unwrapped, empty when it does not exist."""
    service = request.app[SERVICE]
    channel = (await read_fields(request, include_query=True)).get("channel") or None
    if channel is None:
        data: Any = gojson.GoMap(
            (snap.channel, _channel_status(snap)) for snap in await service.snapshots()
        )
    else:
        data = await _one_channel_status(service, str(channel))
    stats = await service.counters()
    recent = await service.dead_letters(start=0, count=10)
    return envelope(data, dead_letters={"count": stats.get("dead_letters", 0), "recent": recent})


async def _one_channel_status(service: Service, channel: str) -> dict[str, Any]:
    try:
        [snap] = await service.snapshots(channel)
    except (ChannelNotFound, InvalidChannel):
        return {"tasks": [], "count": 0}  # upstream read an empty list under any name
    return _channel_status(snap)


def _channel_status(snap: ChannelSnapshot) -> dict[str, Any]:
    """Upstream's fields first (`tasks`, `count`; each task `task_name`, `channel`, `status`),
    ours after. Tasks in upstream's order (brokers/redis/task.go, QueryTask): the queue from its
    head, newest first, then the running ones."""
    queued = [job for job in snap.jobs if job.state != "running"]
    running = [job for job in snap.jobs if job.state == "running"]
    tasks = [
        {
            "task_name": job.task,
            "channel": snap.channel,
            "status": _status_number(job.state, job.has_dedup_mark),
            "id": job.id,
            "state": job.state,
            **({"task_truncated": True} if job.task_truncated else {}),
        }
        for job in [*reversed(queued), *running]
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
