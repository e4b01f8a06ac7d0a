"""`GET /metrics`: the runner's Prometheus text (see `taskrunner.metrics`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

Exposition = Callable[[], Awaitable[bytes]]
EXPOSITION: web.AppKey[Exposition] = web.AppKey("metrics_exposition")


def add_routes(app: web.Application, exposition: Exposition) -> None:
    app[EXPOSITION] = exposition
    app.router.add_get("/metrics", _metrics)


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[EXPOSITION]()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
