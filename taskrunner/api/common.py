"""Shared pieces of the HTTP adapters: typed app keys, envelopes, reading request fields."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from taskrunner.api import gojson
from taskrunner.errors import InvalidJob
from taskrunner.service import Service
from taskrunner.validation import load_json

SERVICE = web.AppKey("service", Service)
HealthCheck = Callable[[], dict[str, Any]]
HEALTH: web.AppKey[HealthCheck] = web.AppKey("health")

JSON_UTF8 = "application/json"
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
MAX_FORM_FIELDS = 1000


def envelope(data: Any, *, status: int = 200, message: str = "ok", **extra: Any) -> web.Response:
    """TaskRunner's envelope `{"status_code", "message", "data"}` as upstream's Go writes it
    (`gojson.marshal`), our `extra` fields after upstream's; HTTP status = status_code."""
    body = {"status_code": status, "message": message, "data": data, **extra}
    return web.Response(
        body=gojson.marshal(body), status=status, content_type=JSON_UTF8, charset="utf-8"
    )


async def read_fields(request: web.Request, *, include_query: bool = False) -> dict[str, Any]:
    """Fields from a JSON object body, a urlencoded or multipart form, and optionally the query.
    Text that is not valid UTF-8 (or the form's declared charset) is refused, never replaced."""
    fields: dict[str, Any] = {}
    if include_query:
        query = _urlencoded(request.rel_url.raw_query_string, "utf-8", "query parameter")
        fields.update(reversed(query))  # the first of repeated parameters, as request.query
    if request.content_type == "application/x-www-form-urlencoded":
        fields.update(_form_fields(await _urlencoded_body(request)))
    elif request.content_type == "application/json":
        body = await request.read()
        if body.strip():
            data = load_json(
                body, "body is not valid JSON", "body is not usable JSON: nested too deeply"
            )
            if not isinstance(data, dict):
                raise InvalidJob(f"body must be a JSON object, got {type(data).__name__}")
            fields.update(data)
    elif request.content_type in FORM_TYPES:
        try:
            form = await request.post()
        except UnicodeDecodeError as exc:
            raise InvalidJob(
                f"a form field is not valid {exc.encoding.upper()} text (byte"
                f" 0x{exc.object[exc.start]:02X}): send UTF-8, or name the part's charset"
            ) from None
        except (ValueError, HttpProcessingError) as exc:  # no boundary, a broken part, ...
            raise InvalidJob(f"body is not a valid {request.content_type} form: {exc}") from None
        for name in form:
            if any(not isinstance(v, str) for v in form.getall(name)):
                raise InvalidJob(f"field {name!r} must be text, not a file upload")
        fields.update(_form_fields(form.items()))
    elif request.body_exists:
        raise web.HTTPUnsupportedMediaType(
            reason=f"unsupported Content-Type {request.content_type}: send JSON"
            " (application/json) or a form (urlencoded or multipart)"
        )
    return fields


def _form_fields(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A form's fields: a name given once is a string, a repeated one a list of them."""
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name not in fields:
            fields[name] = value
        elif isinstance(fields[name], list):
            fields[name].append(value)
        else:
            fields[name] = [fields[name], value]
    return fields


async def _urlencoded_body(request: web.Request) -> list[tuple[str, str]]:
    body = await request.read()
    charset = request.charset or "utf-8"
    try:
        text = body.rstrip().decode(charset, "surrogateescape")
    except LookupError:
        raise InvalidJob(f"unknown charset {charset[:40]!r}: send the form in UTF-8") from None
    return _urlencoded(text, charset, "form field")


def _urlencoded(text: str, charset: str, what: str) -> list[tuple[str, str]]:
    """Decode `a=1&b=%C3%A9` strictly: a name or value whose bytes are not valid `charset` is
    an InvalidJob naming it (aiohttp and yarl would put U+FFFD in their place)."""
    try:
        pairs = urllib.parse.parse_qsl(
            text,
            keep_blank_values=True,
            encoding=charset,
            errors="surrogateescape",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:
        raise InvalidJob(f"more than {MAX_FORM_FIELDS} {what}s: send fewer") from None
    for name, value in pairs:
        for part in (name, value):
            bad = next((ord(c) - 0xDC00 for c in part if "\udc80" <= c <= "\udcff"), None)
            if bad is not None:
                raise InvalidJob(
                    f"{what} {_shown(name, charset)} is not valid {charset.upper()} text"
                    f" (byte 0x{bad:02X}): send {charset.upper()}, percent-encoded"
                )
    return pairs


def _shown(name: str, charset: str) -> str:
    return repr(name.encode(charset, "surrogateescape").decode(charset, "backslashreplace")[:80])
