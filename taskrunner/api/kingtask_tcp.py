"""kingtask's TCP broker protocol (linlams/kingtask `task/task.go`, `broker/broker.go`) on
`--kingtask-addr HOST:PORT`, for Go programs that call `task.NewBrokerClient(addr)`,
`Delay(t)`, `GetResult(t)` and `Close()`.

A message is one type byte (`config/const.go`: 1 request a task, 2 get a result, 3 close)
followed, for 1 and 2, by one JSON object. There is no length prefix: the object ends where its
braces balance. Replies are JSON as Go's encoding/json writes task.go's structs:
`{"status":0,"message":""}` or `{"status":1,"message":"..."}` (StatusResult) for a request and
for any error, `{"is_result_exist":N,"is_success":N,"message":"..."}` (Reply) for a result.

A request becomes a script job through `kingtask.task_request_job` and `Service.push`, the
HTTP API's admission path; a result is read as the HTTP API reads it (`result_reply`).
Bounds (TcpLimits): a frame's size, the time its object may take after its type byte, the idle
time between messages and the number of connections. A client that breaks the framing gets one
error reply, one log line, and its connection closed; nothing else is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from taskrunner.admission import accepted_id
from taskrunner.aio import cancel_and_wait
from taskrunner.api.kingtask import result_reply
from taskrunner.config import Settings
from taskrunner.errors import ConfigError, InvalidJob, ProtocolError, TaskRunnerError
from taskrunner.kingtask import task_request_job
from taskrunner.service import Service
from taskrunner.validation import JOB_ID_RE, brief, load_json

log = logging.getLogger("taskrunner.kingtask_tcp")

TYPE_REQUEST_TASK: Final = 1  # config/const.go
TYPE_GET_RESULT: Final = 2
TYPE_CLOSE: Final = 3
RESULT_KEY_PREFIX: Final = "r_"  # task.go's GetResult asks for {"key": "r_<uuid>"}
GO_READ_BYTES: Final = 512  # task.go reads each reply with one Read into 512 bytes
CLOSE_WAIT_S: Final = 1.0  # at close: how long a handler may take to see its connection end
OK_REPLY: Final = b'{"status":0,"message":""}'
# encoding/json escapes these inside strings (HTML safety, JavaScript line separators)
GO_ESCAPES: Final = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
GO_ESCAPES_EXTRA: Final = {"\u2028": "\\u2028", "\u2029": "\\u2029"}
_OUTSIDE_STRING = re.compile(rb'["{}\[\]]')
_INSIDE_STRING = re.compile(rb'["\\]')

# upstream broker.go's answer while `r_<uuid>` is not written (running, unknown or expired)
NOT_FINISHED: Final = {"is_result_exist": 0, "is_success": 0, "message": ""}


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpLimits:
    max_frame_bytes: int = 64 * 1024  # one JSON object, type byte excluded
    frame_timeout_s: float = 10.0  # from a type byte to the end of its object; a reply's write
    idle_timeout_s: float = 300.0  # between messages
    max_connections: int = 256
    reply_timeout_s: float = 10.0  # reading a result from Redis


def go_json(value: dict[str, Any]) -> bytes:
    """`value` as Go's json.Marshal writes a struct with these fields in this order."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (GO_ESCAPES | GO_ESCAPES_EXTRA).items():
        text = text.replace(char, escape)
    return text.encode("utf-8", "replace")


def error_reply(message: str) -> bytes:
    """StatusResult with status 1, cut to fit task.go's one 512-byte read (a longer reply
    would also leave bytes that spoil the connection's next reply)."""
    reply = go_json({"status": 1, "message": message})
    while len(reply) > GO_READ_BYTES:
        message = message[: -(len(reply) - GO_READ_BYTES + 3)] + "..."
        reply = go_json({"status": 1, "message": message})
    return reply


class ObjectEnd:
    """Where one JSON object ends in bytes that arrive in pieces: its braces balance outside
    strings. Checks only that it starts with `{`; json.loads judges the rest."""

    def __init__(self) -> None:
        self._pos = 0
        self._depth = 0
        self._in_string = False

    def scan(self, buf: bytes | bytearray) -> int | None:
        """The end offset of the object in `buf` (which only grows), or None: more to come."""
        if self._depth == 0:
            start = len(buf) - len(bytes(buf[self._pos :]).lstrip())
            if start == len(buf):
                return None
            if buf[start] != ord("{"):
                raise ProtocolError(
                    f"a message must be its type byte and a JSON object, got {bytes(buf[start : start + 20])!r}"
                )
            self._pos, self._depth = start + 1, 1
        while True:
            pattern = _INSIDE_STRING if self._in_string else _OUTSIDE_STRING
            found = pattern.search(buf, self._pos)
            if found is None:
                self._pos = len(buf)
                return None
            at, char = found.start(), buf[found.start()]
            if char == ord("\\"):
                if at + 1 >= len(buf):
                    self._pos = at  # the escaped byte has not arrived
                    return None
                self._pos = at + 2
                continue
            self._pos = at + 1
            if char == ord('"'):
                self._in_string = not self._in_string
            elif char in b"{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    return self._pos


class Connection:
    """One client's byte stream, read one message at a time."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: TcpLimits
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.peer = _peer(writer)
        self._buf = bytearray()

    async def message_type(self) -> int | None:
        """The next type byte; None when the client closed or stayed idle too long."""
        if not self._buf:
            try:
                async with asyncio.timeout(self.limits.idle_timeout_s):
                    data = await self.reader.read(self.limits.max_frame_bytes)
            except TimeoutError:
                log.debug("kingtask TCP %s: idle for %g s, closed", self.peer, self.limits.idle_timeout_s)  # fmt: skip
                return None
            if not data:
                return None
            self._buf += data
        kind = self._buf[0]
        del self._buf[:1]
        return kind

    async def json_object(self) -> dict[str, Any]:
        """The JSON object after a type byte, within the frame's size and time bounds."""
        limits, end, scanner = self.limits, None, ObjectEnd()
        try:
            async with asyncio.timeout(limits.frame_timeout_s):
                while (end := scanner.scan(self._buf)) is None:
                    if len(self._buf) > limits.max_frame_bytes:
                        break
                    data = await self.reader.read(limits.max_frame_bytes)
                    if not data:
                        raise ProtocolError("the connection closed in the middle of a message")
                    self._buf += data
        except TimeoutError:
            raise ProtocolError(
                f"incomplete message: its JSON object did not end within {limits.frame_timeout_s:g} s"
            ) from None
        if end is None or end > limits.max_frame_bytes:
            raise ProtocolError(
                f"message over {limits.max_frame_bytes} bytes: send at most that much JSON"
            )
        frame, self._buf[:end] = bytes(self._buf[:end]), b""
        try:
            value = load_json(frame, "the message is not valid JSON", "the message is nested too deeply")  # fmt: skip
        except InvalidJob as exc:
            raise ProtocolError(str(exc)) from None
        if not isinstance(value, dict):
            raise ProtocolError("a message must be a JSON object")
        return value

    async def send(self, reply: bytes) -> None:
        self.writer.write(reply)
        async with asyncio.timeout(self.limits.frame_timeout_s):
            await self.writer.drain()

    async def send_quietly(self, reply: bytes) -> None:
        """A last reply before closing: the client may be gone already."""
        with contextlib.suppress(OSError, TimeoutError):
            await self.send(reply)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


class KingtaskTcpServer:
    """The listener and its connections; `stop_accepting()` at drain, `close()` at stop."""

    def __init__(
        self,
        service: Service,
        *,
        host: str,
        port: int,
        bin_path: Path | None,
        limits: TcpLimits | None = None,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.bin_path = bin_path
        self.limits = limits or TcpLimits()
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.Task[Any], Connection] = {}
        self._full_logged = False

    def open_count(self) -> int:
        return len(self._open)

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on --kingtask-addr {self.host}:{self.port}: {exc.strerror}:"
                " choose another address, or stop what holds it"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "kingtask TCP broker protocol on %s:%d: at most %d connections, %d-byte messages",
            self.host, self.port, self.limits.max_connections, self.limits.max_frame_bytes,
        )  # fmt: skip

    def stop_accepting(self) -> None:
        """Drain: no new connection; open ones are still answered."""
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        """Stop listening and close every connection; idempotent. A handler still waiting on
        Redis after CLOSE_WAIT_S is cancelled."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        handlers, self._open = dict(self._open), {}
        for conn in handlers.values():
            conn.writer.transport.abort()  # its read ends: the handler returns
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=CLOSE_WAIT_S)
            await cancel_and_wait(list(pending))
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, self.limits)
        task = asyncio.current_task()
        try:
            if (
                self._server is None
                or task is None
                or len(self._open) >= self.limits.max_connections
            ):
                await self._refuse(conn)
                return
            self._open[task] = conn
            await self._converse(conn)
        finally:
            self._open.pop(task, None)  # type: ignore[arg-type]
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _refuse(self, conn: Connection) -> None:
        limit = self.limits.max_connections
        if not self._full_logged:
            log.warning(
                "kingtask TCP: %d connections open, the limit: refusing new ones (first %s)",
                limit, conn.peer,
            )  # fmt: skip
            self._full_logged = True
        await conn.send_quietly(
            error_reply(
                f"too many connections ({limit}) to this broker: close idle ones, or try again"
            )
        )

    async def _converse(self, conn: Connection) -> None:
        """Answer messages until the client closes, idles, or breaks the framing."""
        try:
            while (kind := await conn.message_type()) not in (None, TYPE_CLOSE):
                if kind not in (TYPE_REQUEST_TASK, TYPE_GET_RESULT):
                    raise ProtocolError(
                        f"unknown message type {kind}: 1 requests a task, 2 gets a result,"
                        " 3 closes (task.go's framing)"
                    )
                fields = await conn.json_object()
                await conn.send(await self._answer(kind, fields))
        except ProtocolError as exc:
            log.info("kingtask TCP %s: %s; connection closed", conn.peer, exc)
            await conn.send_quietly(error_reply(str(exc)))
        except (OSError, TimeoutError) as exc:
            log.info("kingtask TCP %s: %r; connection closed", conn.peer, exc)
        finally:
            if len(self._open) <= self.limits.max_connections // 2:
                self._full_logged = False

    async def _answer(self, kind: int, fields: dict[str, Any]) -> bytes:
        try:
            if kind == TYPE_REQUEST_TASK:
                job = task_request_job(
                    fields,
                    bin_path=self.bin_path,
                    now=time.time(),
                    limits=self.service.settings.limits,
                )
                accepted_id(await self.service.push(job, source="tcp kingtask"))
                return OK_REPLY
            return await self._result(fields)
        except TaskRunnerError as exc:
            return error_reply(str(exc))

    async def _result(self, fields: dict[str, Any]) -> bytes:
        """Reply for `{"key": "r_<uuid>"}`: not-exist (0 0 "") while the job runs, is
        unknown or its result expired, as upstream's broker answers a missing `r_` hash."""
        key = fields.get("key")
        if not isinstance(key, str) or not key.startswith(RESULT_KEY_PREFIX):
            raise InvalidJob(
                f'"key" must be "r_" and the task\'s uuid, got {brief(key)}:'
                " task.go's GetResult sends it"
            )
        job_id = key[len(RESULT_KEY_PREFIX) :]
        if not JOB_ID_RE.match(job_id):
            return go_json(NOT_FINISHED)
        try:
            async with asyncio.timeout(self.limits.reply_timeout_s):
                record = await self.service.find_job(job_id)
        except TimeoutError:
            wait_s = self.limits.reply_timeout_s
            return error_reply(f"Redis did not answer within {wait_s:g} s: ask again")
        if record is None or not record.final:
            return go_json(NOT_FINISHED)
        return go_json(result_reply(record))


async def start_kingtask_tcp(settings: Settings, service: Service) -> KingtaskTcpServer | None:
    """The server `--kingtask-addr` asks for, listening; None when it is off."""
    addr = settings.kingtask_host_port()
    if addr is None:
        return None
    server = KingtaskTcpServer(service, host=addr[0], port=addr[1], bin_path=settings.bin_path)
    await server.start()
    return server
