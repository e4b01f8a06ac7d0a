"""kingtask's TCP broker protocol (--kingtask-addr), driven by a client written from
linlams/kingtask's task/task.go: a type byte and json.Marshal of the request, each reply read
with one 512-byte Read. Golden replies cite task.go's structs and broker/broker.go's writers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskrunner.api.kingtask_tcp import KingtaskTcpServer, TcpLimits, error_reply, go_json
from taskrunner.config import Settings
from taskrunner.errors import ConfigError
from taskrunner.runner import Runner
from tests.support.net import free_port
from tests.support.runners import RunnerHarness, stored_job
from tests.support.waiting import wait_until
from tests.test_kingtask import EXAMPLE

REQUEST, GET_RESULT, CLOSE = 1, 2, 3  # config/const.go
OK = b'{"status":0,"message":""}'  # task.go StatusResult{Status 0}: both fields, no omitempty
NOT_EXIST = b'{"is_result_exist":0,"is_success":0,"message":""}'  # broker.go HandleTaskResult


def task_request(bin_name: str, args: list[str], start_time: int = 0, intervals: tuple[int, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """task.go's NewTaskRequest: a new uuid, args and intervals joined with spaces, start_time
    now when 0; the field order of TaskRequest's json tags."""
    return {
        "uuid": str(uuid.uuid4()),
        "bin_name": bin_name,
        "args": " ".join(args),
        "start_time": start_time or int(time.time()),
        "time_interval": " ".join(str(i) for i in intervals),
        "index": 0,
    }


def frame(kind: int, body: dict[str, Any]) -> bytes:
    return bytes([kind]) + json.dumps(body, separators=(",", ":")).encode()


class BrokerClient:
    """task.go's BrokerClient over asyncio streams (the runner shares this event loop)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> BrokerClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> bytes:
        self.writer.write(data)
        await self.writer.drain()
        return await self.reply()

    async def reply(self) -> bytes:
        return await asyncio.wait_for(self.reader.read(512), 20)  # one Read, as task.go

    async def delay(self, request: dict[str, Any]) -> bytes:
        return await self.send(frame(REQUEST, request))

    async def get_result(self, request: dict[str, Any]) -> bytes:
        return await self.send(frame(GET_RESULT, {"key": f"r_{request['uuid']}"}))

    async def final_result(self, request: dict[str, Any]) -> bytes:
        reply = b""

        async def exists() -> bool:
            nonlocal reply
            reply = await self.get_result(request)
            return reply != NOT_EXIST

        await wait_until(exists, timeout_s=15, message=f"the result of {request['uuid']}")
        return reply

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(512), 20) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    scripts = {
        "example": EXAMPLE,
        "flaky": f"#!/bin/sh\necho x >> {tmp_path}/attempts\necho try again >&2\nexit 3\n",
    }
    for name, text in scripts.items():
        (path / name).write_text(text)
        (path / name).chmod(0o755)
    return path


@pytest.fixture
async def runner(runners: RunnerHarness, bin_dir: Path) -> Runner:
    return await runners.start(bin_path=bin_dir, kingtask_addr=f"127.0.0.1:{free_port()}")


def port_of(runner: Runner) -> int:
    addr = runner.settings.kingtask_host_port()
    assert addr is not None
    return addr[1]


@pytest.fixture
async def client(runner: Runner) -> AsyncIterator[BrokerClient]:
    broker = await BrokerClient.connect(port_of(runner))
    yield broker
    broker.close()


async def small_server(runner: Runner, **limits: Any) -> KingtaskTcpServer:
    """A server on the runner's service with test-sized bounds, on a free port."""
    server = KingtaskTcpServer(
        runner.service, host="127.0.0.1", port=0, bin_path=runner.settings.bin_path,
        limits=TcpLimits(**limits),
    )  # fmt: skip
    await server.start()
    return server


# -- what kingtask's users do ------------------------------------------------------------------


async def test_seed_example_12_45_gives_1_1_57(runner: Runner, client: BrokerClient) -> None:
    request = task_request("example", ["12", "45"], 0, (5, 8, 9))  # seed 001's mytask.go
    assert await client.delay(request) == OK
    assert await client.final_result(request) == b'{"is_result_exist":1,"is_success":1,"message":"57"}'  # fmt: skip
    record = await stored_job(runner.store, request["uuid"])
    assert (record.kind, record.task, record.args) == ("script", "example", ["12", "45"])
    assert (record.retries, record.retry_intervals) == (3, [5, 8, 9])
    client.writer.write(bytes([CLOSE]))  # task.go's Close
    assert await client.closed_by_server()


async def test_unknown_uuid_and_pending_result_answer_not_exist(
    runner: Runner, client: BrokerClient
) -> None:
    assert await client.get_result(task_request("example", [])) == NOT_EXIST
    later = task_request("example", ["1", "2"], int(time.time()) + 3600)
    assert await client.delay(later) == OK
    assert await client.get_result(later) == NOT_EXIST
    assert (await stored_job(runner.store, later["uuid"])).run_at == later["start_time"]


async def test_failure_retries_at_the_intervals_then_reports_stderr(
    runner: Runner, client: BrokerClient, tmp_path: Path
) -> None:
    request = task_request("flaky", [], 0, (1,))
    assert await client.delay(request) == OK
    reply = await client.final_result(request)
    assert reply == b'{"is_result_exist":1,"is_success":0,"message":"try again"}'
    assert (tmp_path / "attempts").read_text().count("x") == 2  # the run and one retry


async def test_a_refused_request_answers_status_1_and_the_connection_goes_on(
    runner: Runner, client: BrokerClient
) -> None:
    reply = json.loads(await client.delay(task_request("missing", [])))
    assert reply["status"] == 1 and "no such file in --bin-path" in reply["message"], reply
    assert list(reply) == ["status", "message"]
    reply = json.loads(await client.delay({**task_request("example", []), "uuid": "a b"}))
    assert reply["status"] == 1 and '"uuid" must be' in reply["message"]
    request = task_request("example", ["2", "3"])
    assert await client.delay(request) == OK
    assert await client.delay(request) == OK  # the same uuid again: one job, still OK
    assert json.loads(await client.final_result(request))["message"] == "5"


async def test_many_clients_at_once(runner: Runner) -> None:
    clients = [await BrokerClient.connect(port_of(runner)) for _ in range(20)]
    requests = [task_request("example", [str(i), str(i)]) for i in range(20)]
    try:
        replies = await asyncio.gather(
            *(c.delay(r) for c, r in zip(clients, requests, strict=True))
        )
        assert replies == [OK] * 20
        results = await asyncio.gather(
            *(c.final_result(r) for c, r in zip(clients, requests, strict=True))
        )
        assert [json.loads(r)["message"] for r in results] == [str(2 * i) for i in range(20)]
    finally:
        for c in clients:
            c.close()


async def test_messages_split_across_writes_and_sent_together(client: BrokerClient) -> None:
    request = task_request("example", ["20", "22"])
    data = frame(REQUEST, request)
    for piece in (data[:1], data[1:9], data[9:30]):
        client.writer.write(piece)
        await client.writer.drain()
        await asyncio.sleep(0)  # let the server read each piece on its own
    assert await client.send(data[30:]) == OK
    await client.final_result(request)
    both = frame(GET_RESULT, {"key": f"r_{request['uuid']}"}) * 2
    client.writer.write(both)
    answer = b'{"is_result_exist":1,"is_success":1,"message":"42"}'
    replies = await client.reply()
    if replies == answer:
        replies += await client.reply()
    assert replies == answer * 2


async def test_strings_with_braces_and_escapes_are_one_message(client: BrokerClient) -> None:
    reply = json.loads(await client.delay(task_request('no"}{\\such', [])))
    assert reply["status"] == 1 and "no such file in --bin-path" in reply["message"], reply
    assert await client.get_result(task_request("x", [])) == NOT_EXIST


# -- what breaks the framing: one reply, one log line, this connection closed ------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "unknown message type 71"),
        (b"\x07{}", "unknown message type 7"),
        (b"\x00", "unknown message type 0"),
        (b"\x01[1, 2]", "must be its type byte and a JSON object"),
        (b"\x01{bad json}", "not valid JSON"),
        (b"\x02" + b'{"key":"' + b"x" * 70_000 + b'"}', "over 65536 bytes"),
        (b"\x01" + b"{" * 70_000, "over 65536 bytes"),
    ],
)
async def test_a_broken_message_is_answered_logged_once_and_closed(
    runner: Runner,
    client: BrokerClient,
    caplog: pytest.LogCaptureFixture,
    data: bytes,
    fragment: str,
) -> None:
    bystander = await BrokerClient.connect(port_of(runner))
    caplog.set_level(logging.INFO, logger="taskrunner.kingtask_tcp")
    reply = json.loads(await client.send(data))
    assert reply["status"] == 1 and fragment in reply["message"], reply
    assert await client.closed_by_server()
    lines = [r for r in caplog.records if r.name == "taskrunner.kingtask_tcp"]
    assert len(lines) == 1 and fragment in lines[0].getMessage()
    assert await bystander.get_result(task_request("x", [])) == NOT_EXIST
    bystander.close()


async def test_partial_message_times_out_and_eof_mid_message_closes(
    runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    server = await small_server(runner, frame_timeout_s=0.3)
    try:
        caplog.set_level(logging.INFO, logger="taskrunner.kingtask_tcp")
        slow = await BrokerClient.connect(server.port)
        reply = json.loads(await slow.send(b'\x01{"uuid":'))
        assert "did not end within 0.3 s" in reply["message"]
        assert await slow.closed_by_server()
        cut = await BrokerClient.connect(server.port)
        cut.writer.write(b'\x01{"uuid":"a')
        cut.writer.write_eof()
        assert b"in the middle of a message" in await cut.reply()
        assert await cut.closed_by_server()
        lines = [r.getMessage() for r in caplog.records if r.name == "taskrunner.kingtask_tcp"]
        assert len(lines) == 2 and "middle of a message" in lines[1]
        for c in (slow, cut):
            c.close()
    finally:
        await server.close()


async def test_idle_connections_close_and_the_connection_count_is_bounded(runner: Runner) -> None:
    server = await small_server(runner, idle_timeout_s=0.3)
    try:
        idle = await BrokerClient.connect(server.port)
        assert await idle.closed_by_server()
        idle.close()
    finally:
        await server.close()
    server = await small_server(runner, max_connections=2)
    try:
        first, second = [await BrokerClient.connect(server.port) for _ in range(2)]
        for c in (first, second):  # served: counted
            assert await c.get_result(task_request("x", [])) == NOT_EXIST
        third = await BrokerClient.connect(server.port)
        assert b"too many connections (2)" in await third.reply()
        assert await third.closed_by_server()
        third.close()
        first.close()
        await wait_until(lambda: server.open_count() < 2, timeout_s=5, message="a free slot")
        fourth = await BrokerClient.connect(server.port)
        assert await fourth.get_result(task_request("x", [])) == NOT_EXIST
        for c in (second, fourth):
            c.close()
    finally:
        await server.close()


async def test_drain_stops_accepting_and_close_ends_connections(
    runners: RunnerHarness, runner: Runner, client: BrokerClient
) -> None:
    await runner.drain()
    with pytest.raises(ConnectionRefusedError):
        await BrokerClient.connect(port_of(runner))
    assert await client.get_result(task_request("x", [])) == NOT_EXIST  # open ones still served
    await runners.stop(runner)
    assert await client.closed_by_server()


# -- settings and reply encoding --------------------------------------------------------------


def test_non_loopback_address_needs_insecure_and_a_token_does_not_help() -> None:
    settings = Settings(kingtask_addr="0.0.0.0:9595", auth_token="t")
    with pytest.raises(ConfigError, match=r"--kingtask-addr 0\.0\.0\.0:9595 .* --insecure"):
        settings.check_exposure()
    Settings(kingtask_addr="0.0.0.0:9595", insecure=True).check_exposure()
    Settings(kingtask_addr="localhost:9595").check_exposure()
    with pytest.raises(ConfigError, match="--kingtask-addr 'nope' must be HOST:PORT"):
        Settings(kingtask_addr="nope")


async def test_an_address_in_use_is_a_config_error(runner: Runner) -> None:
    server = KingtaskTcpServer(runner.service, host="127.0.0.1", port=port_of(runner), bin_path=None)  # fmt: skip
    with pytest.raises(ConfigError, match="cannot listen on --kingtask-addr"):
        await server.start()


def test_replies_are_encoded_as_go_marshals_them() -> None:
    assert go_json({"status": 1, "message": "a<b>&c\u2028é"}) == (
        b'{"status":1,"message":"a\\u003cb\\u003e\\u0026c\\u2028\xc3\xa9"}'
    )
    long = error_reply("x" * 2000)
    assert len(long) <= 512 and json.loads(long)["message"].endswith("...")
