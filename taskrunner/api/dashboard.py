"""The dashboard: the page at `/ui` and its server-sent event stream at `/ui/events`.

The page (HTML, CSS and JS from package data, inlined into one response) reads and changes
everything through the native JSON API; this module only serves it and relays "something
changed" notices from Redis pub/sub (`api/events.py`) to each open page. No polling on the
server: a stream waits for notices, and ends when the page goes away or the server stops."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from aiohttp import web

from taskrunner.api.common import SERVICE
from taskrunner.api.events import EventHub, Listener
from taskrunner.api.native import STOPPING
from taskrunner.errors import StoreUnavailable

log = logging.getLogger("taskrunner.api.dashboard")

PREFIX: Final = "/ui"
PAGE_PATH: Final = "/ui"
EVENTS_PATH: Final = "/ui/events"
# The only paths where `?token=` stands in for the Authorization header (see api/app.py): a
# browser cannot send a header when it loads a page or opens an EventSource.
TOKEN_QUERY_PATHS: Final = frozenset({PAGE_PATH, EVENTS_PATH})

KEEPALIVE_S: Final = 15.0  # a comment line this often: proxies keep the stream, dead peers show
MAX_STREAMS: Final = 64  # open event streams per runner process (they share one subscription)
RECONNECT_MS: Final = 2000

STREAMS = web.AppKey("dashboard_streams", set[web.StreamResponse])
HUB = web.AppKey("dashboard_hub", EventHub)


def add_routes(app: web.Application) -> None:
    """Register `/ui` and `/ui/events`; needs the native API's routes (the page's data source,
    and its STOPPING event, set when the server shuts down)."""
    if STOPPING not in app:
        raise RuntimeError("add the native API's routes before the dashboard's")
    app[STREAMS] = set()
    app[HUB] = EventHub(app[SERVICE])
    app.on_cleanup.append(_close_hub)
    app.router.add_get(PAGE_PATH, page, allow_head=False)
    app.router.add_get(EVENTS_PATH, events, allow_head=False)


def error_response(status: int, message: str) -> web.Response:
    """Errors under /ui are plain text: they are read in a browser's address bar."""
    return web.Response(text=f"{status}: {message}\n", status=status, charset="utf-8")


# -- the page ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    html: bytes
    content_security_policy: str


@functools.cache
def load_page() -> Page:
    """index.html with style.css and app.js inlined, and a CSP that allows exactly those two."""
    folder = resources.files("taskrunner") / "ui"
    html, css, js = (
        (folder / name).read_text("utf-8") for name in ("index.html", "style.css", "app.js")
    )
    for name, text, closer in (("style.css", css, "</style"), ("app.js", js, "</script")):
        if closer in text.lower():
            raise RuntimeError(f"taskrunner/ui/{name} contains {closer!r}: it cannot be inlined")
    html = html.replace("<!--inline:style.css-->", f"<style>{css}</style>", 1)
    html = html.replace("<!--inline:app.js-->", f"<script>{js}</script>", 1)
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src '{_sha256(js)}'",
            f"style-src '{_sha256(css)}'",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return Page(html.encode(), csp)


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


async def page(request: web.Request) -> web.Response:
    loaded = load_page()
    return web.Response(
        body=loaded.html,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": loaded.content_security_policy,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        },
    )


# -- the event stream -------------------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    """`text/event-stream`: `hello` once listening, then a `change` event (see
    `events.Change.as_dict`) whenever something changed; ends when the server stops."""
    streams = request.app[STREAMS]
    if len(streams) >= MAX_STREAMS:
        raise web.HTTPServiceUnavailable(
            reason=f"{MAX_STREAMS} dashboard event streams are open on this runner: close some"
        )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass events through as they come
        }
    )
    streams.add(response)
    try:
        relay = asyncio.ensure_future(_relay(request, response))
        stopping = asyncio.ensure_future(request.app[STOPPING].wait())
        try:
            await asyncio.wait([relay, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, stopping):
                task.cancel()
            await asyncio.gather(relay, stopping, return_exceptions=True)
        error = None if relay.cancelled() else relay.exception()
        if error is not None:
            raise error  # before the stream started: the errors middleware answers
    finally:
        streams.discard(response)
    return response


async def _close_hub(app: web.Application) -> None:
    await app[HUB].close()


async def _relay(request: web.Request, response: web.StreamResponse) -> None:
    async with request.app[HUB].listen() as listener:
        await response.prepare(request)
        try:
            await response.write(f"retry: {RECONNECT_MS}\n".encode() + _event("hello", {}))
            await _relay_changes(listener, response)
        except ConnectionError:
            return  # the page was closed or reloaded
        except (OSError, StoreUnavailable) as exc:  # headers are sent: end; the page reconnects
            log.warning("dashboard event stream ended: %s", exc)


async def _relay_changes(listener: Listener, response: web.StreamResponse) -> None:
    while not listener.lost:
        change = await listener.next(timeout_s=KEEPALIVE_S)
        if change is not None:
            await response.write(_event("change", change.as_dict()))
        elif not listener.lost:
            await response.write(b": keepalive\n\n")


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
