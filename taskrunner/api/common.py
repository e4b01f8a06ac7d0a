"""Shared pieces of the HTTP adapters: typed app keys, envelopes, reading request fields."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from taskrunner.errors import InvalidJob
from taskrunner.service import Service

SERVICE = web.AppKey("service", Service)
HealthCheck = Callable[[], dict[str, Any]]
HEALTH: web.AppKey[HealthCheck] = web.AppKey("health")

JSON_UTF8 = "application/json"
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def envelope(data: Any, *, status: int = 200, message: str = "ok", **extra: Any) -> web.Response:
    """TaskRunner's envelope: `{"status_code", "message", "data"}`; HTTP status = status_code."""
    body = {"status_code": status, "message": message, "data": data, **extra}
    return web.Response(
        text=json.dumps(body, ensure_ascii=False),
        status=status,
        content_type=JSON_UTF8,
        charset="utf-8",
    )


async def read_fields(request: web.Request, *, include_query: bool = False) -> dict[str, Any]:
    """Fields from a JSON object body, a urlencoded or multipart form, and optionally the query."""
    fields: dict[str, Any] = dict(request.query) if include_query else {}
    if request.content_type == "application/json":
        body = await request.read()
        if body.strip():
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise InvalidJob(f"body is not valid JSON: {exc}") from exc
            except RecursionError:
                raise InvalidJob("body is not usable JSON: nested too deeply") from None
            if not isinstance(data, dict):
                raise InvalidJob(f"body must be a JSON object, got {type(data).__name__}")
            fields.update(data)
    elif request.content_type in FORM_TYPES:
        try:
            form = await request.post()
        except (ValueError, HttpProcessingError) as exc:  # no boundary, a broken part, ...
            raise InvalidJob(f"body is not a valid {request.content_type} form: {exc}") from None
        for name in form:
            values = form.getall(name)
            if any(not isinstance(v, str) for v in values):
                raise InvalidJob(f"field {name!r} must be text, not a file upload")
            fields[name] = values[0] if len(values) == 1 else list(values)
    elif request.body_exists:
        raise web.HTTPUnsupportedMediaType(
            reason=f"unsupported Content-Type {request.content_type}: send JSON"
            " (application/json) or a form (urlencoded or multipart)"
        )
    return fields
