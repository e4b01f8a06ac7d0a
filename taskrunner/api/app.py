"""The aiohttp application: auth, error envelopes, size limits, and the route tables."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from taskrunner.api import dashboard as dashboard_api
from taskrunner.api import kingtask as kingtask_api
from taskrunner.api import metrics as metrics_api
from taskrunner.api import native as native_api
from taskrunner.api import taskrunner as taskrunner_api
from taskrunner.api.common import HEALTH, SERVICE, envelope
from taskrunner.errors import (
    Conflict,
    InvalidChannel,
    InvalidJob,
    JobNotFound,
    NotAllowed,
    TaskRunnerError,
)
from taskrunner.store import CONNECTION_ERRORS, POOL_EXHAUSTED_ERRORS, REQUEST_CONNECTIONS

if TYPE_CHECKING:
    from taskrunner.runner import Runner

log = logging.getLogger("taskrunner.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 1024 * 1024
OPEN_PATHS = frozenset({"/healthz"})
ErrorRenderer = Callable[[int, str], web.Response]


@dataclass(frozen=True, slots=True)
class ErrorShape:
    """How errors look under a path prefix: `render(status, message)` builds the response;
    `routes_hint` lists the routes to name when a path under the prefix matches none."""

    render: ErrorRenderer
    routes_hint: str = ""


def _envelope_error(status: int, message: str) -> web.Response:
    return envelope(None, status=status, message=message)


ENVELOPE_ERRORS = ErrorShape(_envelope_error)
# Path prefix -> error shape; the longest matching prefix wins, other paths get the envelope.
ERROR_SHAPES: dict[str, ErrorShape] = {
    prefix: ErrorShape(kingtask_api.error_response, kingtask_api.ROUTES_HINT)
    for prefix in kingtask_api.PREFIXES
}
ERROR_SHAPES[native_api.PREFIX] = ErrorShape(native_api.error_response, native_api.ROUTES_HINT)
ERROR_SHAPES[dashboard_api.PREFIX] = ErrorShape(dashboard_api.error_response)


def error_shape(path: str) -> ErrorShape:
    for prefix in sorted(ERROR_SHAPES, key=len, reverse=True):
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return ERROR_SHAPES[prefix]
    return ENVELOPE_ERRORS


def error_status(exc: TaskRunnerError) -> int:
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, NotAllowed):
        return 403
    if isinstance(exc, JobNotFound) or (
        isinstance(exc, InvalidChannel) and "does not exist" in str(exc)
    ):
        return 404
    if isinstance(exc, InvalidJob | InvalidChannel):
        return 400
    return 500


def build_app(runner: Runner) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[_errors_middleware, _auth_middleware(runner.settings.auth_token)],
    )
    app[SERVICE] = runner.service.on_store(runner.store.for_requests())  # a bounded pool
    app[HEALTH] = lambda: {
        "ok": True,
        "runner": runner.runner_id,
        "draining": runner.draining,
        "running": runner.running_count(),
    }
    app.router.add_get("/healthz", _healthz)
    taskrunner_api.add_routes(app)
    kingtask_api.add_routes(app, bin_path=runner.settings.bin_path)
    native_api.add_routes(app)
    dashboard_api.add_routes(app)
    metrics_api.add_routes(app, runner.metrics_text)
    return app


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response(request.app[HEALTH]())


def _auth_middleware(token: str | None) -> Any:
    expected = _digest(f"Bearer {token}") if token else None
    bare = _digest(token) if token else b""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path not in OPEN_PATHS:
            given = _digest(request.headers.get("Authorization", ""))
            if not (hmac.compare_digest(given, expected) or _query_token_matches(request, bare)):
                return error_shape(request.path).render(401, _auth_hint(request.path))
        return await handler(request)

    return auth


def _query_token_matches(request: web.Request, token: bytes) -> bool:
    """`?token=` stands in for the header on the dashboard page and its event stream only (a
    browser sends no header when it loads a page or opens an EventSource), compared in
    constant time like the header."""
    if request.method != "GET" or request.path not in dashboard_api.TOKEN_QUERY_PATHS:
        return False
    return hmac.compare_digest(_digest(request.query.get("token", "")), token)


def _digest(text: str) -> bytes:
    """SHA-256 of a token as sent: equal-length values for `hmac.compare_digest`, so neither
    the token nor its length leaks through timing; any bytes a client sends are fine (a header
    that is not UTF-8 arrives with surrogate escapes)."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def _auth_hint(path: str) -> str:
    if path == dashboard_api.PAGE_PATH:
        return "missing or wrong token: open /ui?token=<token>"
    return "missing or wrong token: send Authorization: Bearer <token>"


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a JSON response with a real status and a readable message, in the
    shape of the API the path belongs to (see `error_shape`)."""
    shape = error_shape(request.path)
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return shape.render(
            413, f"request body is larger than {MAX_BODY_BYTES} bytes: send a smaller one"
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return shape.render(exc.status, _http_error_message(request, exc, shape))
    except TaskRunnerError as exc:
        return shape.render(error_status(exc), str(exc))
    except POOL_EXHAUSTED_ERRORS:
        return shape.render(
            503,
            f"too many requests are using Redis at once (all {REQUEST_CONNECTIONS} connections"
            " of the HTTP API): try again shortly, or wait on fewer jobs at a time",
        )
    except CONNECTION_ERRORS as exc:
        log.warning("%s %s: Redis unavailable: %s", request.method, request.path, exc)
        return shape.render(503, "Redis is unavailable; try again shortly")


def _http_error_message(request: web.Request, exc: web.HTTPException, shape: ErrorShape) -> str:
    """The router's 404 and 405 say which routes and methods exist; other reasons stand."""
    where = f"{request.method} {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method not allowed: {where}; this path takes {allowed}"
    if isinstance(exc, web.HTTPNotFound) and exc.reason == "Not Found":
        if shape.routes_hint:
            return f"no route {where}; this API has {shape.routes_hint}"
        return f"no route {where}: check the method and the path"
    return exc.reason
