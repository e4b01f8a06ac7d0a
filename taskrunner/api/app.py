"""The aiohttp application: auth, error envelopes, size limits, and the route tables."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from taskrunner.api import coyotes as coyotes_api
from taskrunner.api import dashboard as dashboard_api
from taskrunner.api import kingtask as kingtask_api
from taskrunner.api import metrics as metrics_api
from taskrunner.api import native as native_api
from taskrunner.api.common import HEALTH, SERVICE, HealthCheck, envelope
from taskrunner.api.connections import BodyTimeout, ConnectionGuard, connection_cap
from taskrunner.api.metrics import Exposition
from taskrunner.config import Settings
from taskrunner.errors import (
    ChannelNotFound,
    Conflict,
    InvalidChannel,
    InvalidJob,
    JobNotFound,
    NotAllowed,
    OutcomeUnknown,
    StoreUnavailable,
    TaskRunnerError,
)
from taskrunner.service import REQUEST_CONNECTIONS, Service

log = logging.getLogger("taskrunner.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 1024 * 1024
OPEN_PATHS = frozenset({"/healthz"})
# A request answers within this (503 when Redis does not), a push within its own shorter
# deadline (service.PUSH_DEADLINE_S) that names the job id; long polls bound their own waits.
READ_DEADLINE_S = 1.8  # GET and HEAD
WRITE_DEADLINE_S = 2.5  # the others, whose own deadlines (a push's) come first
CONNECTIONS = web.AppKey("connections", ConnectionGuard)
ErrorRenderer = Callable[[int, str], web.Response]
# Renders a taskrunner error given its status, with what the error carries besides its message.
ExceptionRenderer = Callable[[int, TaskRunnerError], web.Response]
# A taskrunner error's HTTP status, by type: the first type the error is an instance of wins
# (ChannelNotFound before InvalidChannel); an error of no type listed is 500.
ERROR_STATUS: tuple[tuple[type[TaskRunnerError], int], ...] = (
    (JobNotFound, 404),
    (ChannelNotFound, 404),
    (NotAllowed, 403),
    (Conflict, 409),
    (InvalidJob, 400),
    (InvalidChannel, 400),
    (OutcomeUnknown, 503),
)


@dataclass(frozen=True, slots=True)
class ErrorShape:
    """How errors look under a path prefix: `render(status, message)` builds the response;
    `render_exception(status, exc)`, when given, renders a taskrunner error with what it
    carries (a job id); `routes_hint` lists the routes to name when a path under the prefix
    matches none."""

    render: ErrorRenderer
    routes_hint: str = ""
    render_exception: ExceptionRenderer | None = None


def _envelope_error(status: int, message: str) -> web.Response:
    return envelope(None, status=status, message=message)


def _envelope_exception(status: int, exc: TaskRunnerError) -> web.Response:
    """A push whose outcome is unknown carries its job's id in the envelope's `data`, so that
    a client pushes again with it (and the job runs once)."""
    if isinstance(exc, OutcomeUnknown):
        data = {"task_name": None, "result": False, "id": exc.job_id}
        return envelope(data, status=status, message=str(exc))
    return _envelope_error(status, str(exc))


ENVELOPE_ERRORS = ErrorShape(_envelope_error, render_exception=_envelope_exception)
# Path prefix -> error shape; the longest matching prefix wins, other paths get the envelope.
ERROR_SHAPES: dict[str, ErrorShape] = {
    prefix: ErrorShape(
        kingtask_api.error_response, kingtask_api.ROUTES_HINT, kingtask_api.exception_response
    )
    for prefix in kingtask_api.PREFIXES
}
ERROR_SHAPES[native_api.PREFIX] = ErrorShape(
    native_api.error_response, native_api.ROUTES_HINT, native_api.exception_response
)
ERROR_SHAPES[dashboard_api.PREFIX] = ErrorShape(dashboard_api.error_response)


def error_shape(path: str) -> ErrorShape:
    for prefix in sorted(ERROR_SHAPES, key=len, reverse=True):
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return ERROR_SHAPES[prefix]
    return ENVELOPE_ERRORS


def error_status(exc: TaskRunnerError) -> int:
    return next((status for kind, status in ERROR_STATUS if isinstance(exc, kind)), 500)


def error_response(shape: ErrorShape, exc: TaskRunnerError) -> web.Response:
    """A taskrunner error in the shape of the API its path belongs to, with its type's status."""
    if shape.render_exception is not None:
        return shape.render_exception(error_status(exc), exc)
    return shape.render(error_status(exc), str(exc))


def build_app(
    service: Service, health: HealthCheck, metrics: Exposition, settings: Settings
) -> web.Application:
    """The app over `service` (give it a bounded pool: Store.for_requests), `health` for
    /healthz and `metrics` for /metrics; `settings` gives the auth token, the connection limits
    and the bin path. `app[CONNECTIONS]` is the guard its site must take connections through."""
    guard = ConnectionGuard(
        max_connections=connection_cap(settings.http_max_connections),
        read_timeout_s=settings.http_read_timeout_s,
    )
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[guard.middleware, _errors_middleware, _auth_middleware(settings.auth_token)],
    )
    app[CONNECTIONS] = guard
    app[SERVICE] = service
    app[HEALTH] = health
    app.router.add_get("/healthz", _healthz)
    coyotes_api.add_routes(app, colorful_tty=settings.colorful_tty)
    kingtask_api.add_routes(app, bin_path=settings.bin_path)
    native_api.add_routes(app)
    dashboard_api.add_routes(app)
    metrics_api.add_routes(app, metrics)
    return app


async def _healthz(request: web.Request) -> web.Response:
    health = request.app[HEALTH]()
    return web.json_response(health, status=200 if health["ok"] else 503)


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
    shape, deadline_s = error_shape(request.path), _deadline_s(request)
    try:
        async with asyncio.timeout(deadline_s):
            return await handler(request)
    except BodyTimeout as exc:  # a TimeoutError too: before the deadline's clause
        return shape.render(408, str(exc))
    except TimeoutError:
        if deadline_s is not None and request.body_exists and not request.content.is_eof():
            late = BodyTimeout(_body_late(deadline_s))  # the client's fault, not Redis's
            request.content.set_exception(late)  # and no lingering read: the connection closes
            return shape.render(408, str(late))
        log.warning("%s %s: no answer from Redis in %g s", request.method, request.path,
                    deadline_s)  # fmt: skip
        return shape.render(503, f"Redis did not answer within {deadline_s:g} s; try again shortly")
    except web.HTTPRequestEntityTooLarge:
        return shape.render(
            413, f"request body is larger than {MAX_BODY_BYTES} bytes: send a smaller one"
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return shape.render(exc.status, _http_error_message(request, exc, shape))
    except OutcomeUnknown as exc:
        log.warning("%s %s: %s", request.method, request.path, exc)
        return error_response(shape, exc)
    except StoreUnavailable as exc:
        if exc.pool_exhausted:
            return shape.render(
                503,
                f"too many requests are using Redis at once (all {REQUEST_CONNECTIONS}"
                " connections of the HTTP API): try again shortly, or wait on fewer jobs at a time",
            )
        log.warning("%s %s: Redis unavailable: %s", request.method, request.path, exc)
        return shape.render(503, f"Redis is unavailable, {exc}; try again shortly")
    except TaskRunnerError as exc:
        return error_response(shape, exc)


def _body_late(deadline_s: float) -> str:
    """The deadline ran out while the request's body was still arriving."""
    return f"request body not received within {deadline_s:g} s: send the whole body at once"


def _deadline_s(request: web.Request) -> float | None:
    """How long a request may take: long polls and event streams bound their own waits."""
    if _waits_by_design(request):
        return None
    return READ_DEADLINE_S if request.method in ("GET", "HEAD") else WRITE_DEADLINE_S


def _waits_by_design(request: web.Request) -> bool:
    """Long polls and event streams: they bound their own waits."""
    path = request.path
    return path == dashboard_api.EVENTS_PATH or (
        path.startswith(native_api.PREFIX) and path.endswith("/wait")
    )


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
