"""Bounds on the HTTP server's connections, so slow or idle clients cannot use up descriptors.

- **Read timeout** (`--http-read-timeout`): a new connection must finish its request headers
  within it, or it is closed; once the headers are in, the body must arrive within it too, or
  the request is answered 408. Between requests of a kept-alive connection, aiohttp's keep-alive
  timeout (given the same value) closes a connection whose next request is not complete.
- **Connection cap** (`--http-max-connections`): when that many connections are open, a new one
  closes the oldest connection that is neither handling a request nor holding a complete one
  (idle between requests, or still sending its headers), sparing for FRESH_GRACE_S one that has
  sent nothing yet; if there is none, the new one is answered 503 and closed. A client that
  sends its request at once is thus not closed by a flood of slow ones.

`ConnectionGuard.protocol_factory` wraps aiohttp's protocol factory (the `web.Server`) for
`loop.create_server`; `ConnectionGuard.middleware` tells it which connections are handling a
request and starts the body timer.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

log = logging.getLogger("taskrunner.api.connections")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUTO_CAP_MIN = 16
AUTO_CAP_MAX = 1024
NOTICE_EVERY_S = 10.0  # at most one log line about refused or closed connections this often
FRESH_GRACE_S = 0.2  # a connection that has sent nothing yet is not closed to make room before
HEADERS_END = b"\r\n\r\n"
BUSY_BODY = (
    b'{"status_code":503,"message":"too many HTTP connections: try again shortly","data":null}'
)
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: " + str(len(BUSY_BODY)).encode() + b"\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n" + BUSY_BODY
)


class BodyTimeout(TimeoutError):
    """A request's body did not arrive within the read timeout (answered 408).

    A TimeoutError, so aiohttp's lingering read after the response stops quietly on it."""


def connection_cap(configured: int) -> int:
    """The connection cap: `configured`, or with 0 a quarter of the open-file limit
    (`ulimit -n`), between 16 and 1024, which leaves the rest for jobs' pipes and Redis."""
    if configured > 0:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return AUTO_CAP_MAX
    return max(AUTO_CAP_MIN, min(AUTO_CAP_MAX, soft // 4))


class ConnectionGuard:
    """Counts the server's connections, closes slow and surplus ones (see the module doc)."""

    def __init__(self, *, max_connections: int, read_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.read_timeout_s = read_timeout_s
        self._open: dict[asyncio.BaseProtocol, _Connection] = {}  # aiohttp's handler -> ours
        self.refused = 0  # answered 503: every connection was busy
        self.evicted = 0  # closed to make room for a new one
        self.timed_out = 0  # closed for not sending their headers in time
        self._noticed = (0, 0, 0)
        self._notice_at = 0.0

    @property
    def open_count(self) -> int:
        return len(self._open)

    def protocol_factory(self, server: Callable[[], asyncio.BaseProtocol]) -> Callable[[], Any]:
        """A factory for `loop.create_server`: aiohttp's handler, guarded; or, over the cap
        with no connection to close, one that answers 503 and closes."""

        def make() -> asyncio.BaseProtocol:
            if len(self._open) >= self.max_connections and not self._evict_one():
                self.refused += 1
                self._notice()
                return _Refuse()
            connection = _Connection(server(), self)
            self._open[connection.handler] = connection
            return connection

        return make

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while its request is handled; bounds the body's arrival.
        Goes first (outermost) in the app's middlewares: the error middleware inside it turns
        a BodyTimeout into the path's error shape."""
        connection = self._open.get(request.protocol)
        if connection is not None:
            connection.started()
        timer = None
        if request.body_exists and not request.content.is_eof():
            timer = asyncio.get_running_loop().call_later(
                self.read_timeout_s, _expire_body, request.content, self.read_timeout_s
            )
        try:
            return await handler(request)
        finally:
            if timer is not None:
                timer.cancel()
            if connection is not None:
                connection.busy -= 1

    def _evict_one(self) -> bool:
        """Close the oldest connection that may be closed (see the module doc); False if there
        is none."""
        now = time.monotonic()
        for connection in self._open.values():
            if connection.evictable(now):
                self.evicted += 1
                self._notice()
                self._forget(connection)
                connection.close()
                return True
        return False

    def _forget(self, connection: _Connection) -> None:
        self._open.pop(connection.handler, None)
        connection.cancel_timer()

    def _headers_late(self, connection: _Connection) -> None:
        if connection.has_request:  # its request is about to be handled: not late after all
            return
        self._forget(connection)
        if connection.transport is not None:  # else it never got connected: nothing to close
            self.timed_out += 1
            self._notice()
            connection.close()

    def _notice(self) -> None:
        """One log line every NOTICE_EVERY_S at most, with the counts since the last one."""
        now = time.monotonic()
        if now - self._notice_at < NOTICE_EVERY_S:
            return
        counts = (self.refused, self.evicted, self.timed_out)
        refused, evicted, timed_out = (c - n for c, n in zip(counts, self._noticed, strict=True))
        self._noticed, self._notice_at = counts, now
        log.warning(
            "HTTP connections: %d open (cap %d); since the last notice %d refused (all busy),"
            " %d idle closed to make room, %d closed for not sending headers in %g s",
            len(self._open), self.max_connections, refused, evicted, timed_out,
            self.read_timeout_s,
        )  # fmt: skip


def _expire_body(content: Any, timeout_s: float) -> None:
    if not content.is_eof():
        content.set_exception(
            BodyTimeout(
                f"request body not received within {timeout_s:g} s (--http-read-timeout):"
                " send the whole body at once"
            )
        )


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, with what the guard needs to know about it."""

    def __init__(self, handler: asyncio.BaseProtocol, guard: ConnectionGuard) -> None:
        self.handler: Any = handler  # aiohttp's RequestHandler: an asyncio.Protocol
        self.guard = guard
        self.transport: asyncio.BaseTransport | None = None
        self.busy = 0  # requests being handled now
        self.accepted_at = time.monotonic()
        self.got_data = False
        self.has_request = False  # a whole request head arrived and is not handled yet
        self._tail = b""  # the last bytes received while waiting for the end of a head
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            guard.read_timeout_s, guard._headers_late, self
        )

    def started(self) -> None:
        self.busy += 1
        self.has_request = False  # `busy` covers it now
        self._tail = b""
        self.cancel_timer()

    def evictable(self, now: float) -> bool:
        """Neither handling a request nor holding a whole one, and not just connected."""
        if self.busy or self.has_request or self.transport is None:
            return False
        return self.got_data or now - self.accepted_at >= FRESH_GRACE_S

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Close at once: the descriptor is freed however the client behaves."""
        self.handler.force_close()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- asyncio.Protocol, passed on to aiohttp ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.got_data = True
        if not self.has_request and not self.busy:
            seen = self._tail + data[:8192]
            self.has_request = HEADERS_END in seen or HEADERS_END in data
            self._tail = data[-3:]
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self.handler.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard._forget(self)
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class _Refuse(asyncio.Protocol):
    """Answers 503 and closes: every connection under the cap is handling a request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(BUSY_RESPONSE)
        transport.close()


class GuardedSite(web.BaseSite):
    """A TCP site like `web.TCPSite`, whose connections go through a `ConnectionGuard`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # the runner was set up: BaseSite checked
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
