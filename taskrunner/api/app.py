"""The aiohttp application: auth, error envelopes, size limits, and the route tables."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from taskrunner.api import taskrunner as taskrunner_api
from taskrunner.api.common import HEALTH, SERVICE, envelope
from taskrunner.errors import ChannelExists, InvalidChannel, InvalidJob, TaskRunnerError
from taskrunner.store import CONNECTION_ERRORS

if TYPE_CHECKING:
    from taskrunner.runner import Runner

log = logging.getLogger("taskrunner.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 1024 * 1024
OPEN_PATHS = frozenset({"/healthz"})


def error_status(exc: TaskRunnerError) -> int:
    if isinstance(exc, ChannelExists):
        return 409
    if isinstance(exc, InvalidChannel) and "does not exist" in str(exc):
        return 404
    if isinstance(exc, InvalidJob | InvalidChannel):
        return 400
    return 500


def build_app(runner: Runner) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[_errors_middleware, _auth_middleware(runner.settings.auth_token)],
    )
    app[SERVICE] = runner.service
    app[HEALTH] = lambda: {
        "ok": True,
        "runner": runner.runner_id,
        "draining": runner.draining,
        "running": runner.running_count(),
    }
    app.router.add_get("/healthz", _healthz)
    taskrunner_api.add_routes(app)
    return app


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response(request.app[HEALTH]())


def _auth_middleware(token: str | None) -> Any:
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return envelope(
                    None,
                    status=401,
                    message="missing or wrong token: send Authorization: Bearer <token>",
                )
        return await handler(request)

    return auth


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a JSON envelope with a real status and a readable message."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return envelope(
            None, status=413, message=f"request body is larger than {MAX_BODY_BYTES} bytes"
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return envelope(None, status=exc.status, message=exc.reason)
    except TaskRunnerError as exc:
        return envelope(None, status=error_status(exc), message=str(exc))
    except CONNECTION_ERRORS as exc:
        log.warning("%s %s: Redis unavailable: %s", request.method, request.path, exc)
        return envelope(None, status=503, message="Redis is unavailable; try again shortly")
