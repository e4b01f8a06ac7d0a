"""TaskRunner's HTTP API: `/`, `/status`, `/push`, `/queue`, auth, limits, envelopes."""

from __future__ import annotations

import io
import logging
import sys

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.http_exceptions import BadHttpMethod

from taskrunner.logs import ClientErrorFilter, configure
from tests.support.http import base_url, http
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_index_is_upstream_banner(runners: RunnerHarness) -> None:
    runner = await runners.start()
    assert await http(runner, "GET", "/") == (200, "TaskRunner Started.")


async def test_push_multipart_as_upstream_readme(runners: RunnerHarness) -> None:
    runner = await runners.start()
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("task", "date")
    form.add_field("channel", "biz")
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url(runner) + "/push", data=form()) as resp,
    ):
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        assert resp.status == 200
        body = await resp.json()
    assert body["status_code"] == 200 and body["message"] == "ok"
    assert body["data"]["task_name"] == "date" and body["data"]["result"] is True
    record = await wait_state(runner.store, body["data"]["id"], "succeeded")
    assert record.channel == "biz"


async def test_push_urlencoded_and_json_with_extensions(runners: RunnerHarness) -> None:
    runner = await runners.start()
    status, body = await http(runner, "POST", "/push", data={"task": "echo form", "id": "f1"})
    assert status == 200 and body["data"] == {"task_name": "echo form", "result": True, "id": "f1"}
    status, body = await http(
        runner, "POST", "/push",
        json={"task": "printf", "args": ["%s", "x y"], "channel": "cron", "id": "j1", "timeout": 5},
    )  # fmt: skip
    assert status == 200 and body["data"]["result"] is True
    assert (await wait_state(runner.store, "f1", "succeeded")).channel == "default"
    record = await wait_state(runner.store, "j1", "succeeded")
    assert record.stdout == "x y" and record.channel == "cron"


async def test_push_duplicate_on_distinct_channel_answers_false_with_live_id(
    runners: RunnerHarness,
) -> None:
    runner = await runners.start()
    _, first = await http(runner, "POST", "/push", data={"task": "sleep 1", "channel": "biz"})
    _, second = await http(runner, "POST", "/push", data={"task": "sleep   1", "channel": "biz"})
    assert first["data"]["result"] is True
    assert second["data"]["result"] is False
    assert second["data"]["id"] == first["data"]["id"]  # same program + argv
    await wait_state(runner.store, first["data"]["id"], "succeeded")
    _, third = await http(runner, "POST", "/push", data={"task": "sleep 1", "channel": "biz"})
    assert third["data"]["result"] is True  # the mark was released at the final state


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"data": {"channel": "biz"}}, 400, '"task" is required'),
        ({"data": {"task": "date", "channel": "bad\x7fname"}}, 400, "invalid channel name"),
        ({"data": {"task": "date", "channel": "ghost"}}, 404, "channel 'ghost' does not exist"),
        ({"data": {"task": "date", "timeout": "soon"}}, 400, '"timeout" must be a number'),
        (
            {"data": "{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "not valid JSON",
        ),
        ({"json": ["task"]}, 400, "must be a JSON object"),
        (
            {"data": b"task=date", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported Content-Type",
        ),
    ],
)
async def test_push_bad_input_is_a_4xx_envelope(
    runners: RunnerHarness, kwargs: dict[str, object], status: int, fragment: str
) -> None:
    runner = await runners.start()
    got_status, body = await http(runner, "POST", "/push", **kwargs)  # type: ignore[arg-type]
    assert got_status == status
    assert body["status_code"] == status and body["data"] is None
    assert fragment in body["message"]


async def test_push_oversized_body_is_413(runners: RunnerHarness) -> None:
    runner = await runners.start()
    body = io.BytesIO(b"task=" + b"x" * (2 * 1024 * 1024))
    status, reply = await http(runner, "POST", "/push", data=body, headers=FORM)
    assert status == 413 and reply["status_code"] == 413
    assert "larger than" in reply["message"]


async def test_queue_create_then_conflict_and_validation(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start(concurrent=7)
    assert await http(runner, "POST", "/queue", data={"name": "mail", "distinct": "true", "worker": "3"}) == (
        200, {"status_code": 200, "message": "ok", "data": None},
    )  # fmt: skip
    assert (await http(runner, "POST", "/queue", data={"name": "plain"}))[0] == 200
    channels = await runner.store.load_channels()
    assert (channels["mail"].distinct, channels["mail"].worker_count) == (True, 3)
    assert (channels["plain"].distinct, channels["plain"].worker_count) == (False, 7)
    status, body = await http(runner, "POST", "/queue", data={"name": "mail"})
    assert status == 409 and "already exists" in body["message"]
    for data, fragment in [
        ({"name": "x", "worker": "-1"}, '"worker"'),
        ({"name": "x", "worker": "many"}, '"worker"'),
        ({"worker": "1"}, '"name" is required'),
        ({"name": "a\u202eb"}, "invalid channel name"),
    ]:
        status, body = await http(runner, "POST", "/queue", data=data)
        assert status == 400 and fragment in body["message"], body
    # upstream's stored layout: {"name", "distinct", "worker_count"}
    raw = await redis.hget("task:channels", "mail")
    assert raw is not None and b'"worker_count":3' in raw and b'"distinct":true' in raw


async def test_status_shape_and_status_numbers(runners: RunnerHarness) -> None:
    runner = await runners.start()
    await http(runner, "POST", "/queue", data={"name": "one", "worker": "1", "distinct": "true"})
    await http(runner, "POST", "/queue", data={"name": "loose", "worker": "1"})
    await runners.stop(runner)  # nothing runs: the jobs stay queued
    runner = await runners.start(task_mode=False)
    _, body = await http(runner, "POST", "/push", data={"task": "sleep 1", "channel": "one"})
    await http(runner, "POST", "/push", data={"task": "sleep 2", "channel": "loose"})
    status, body = await http(runner, "GET", "/status")
    assert status == 200 and body["status_code"] == 200
    assert set(body["data"]) >= {"default", "biz", "cron", "one", "loose"}
    assert body["data"]["biz"]["tasks"] == [] and body["data"]["biz"]["count"] == 0
    [queued] = body["data"]["one"]["tasks"]
    assert {k: queued[k] for k in ("task_name", "channel", "status")} == {
        "task_name": "sleep 1", "channel": "one", "status": 1,
    }  # fmt: skip
    assert body["data"]["loose"]["tasks"][0]["status"] == 0  # queued without a dedup mark
    assert body["data"]["one"]["count"] == 1
    await runners.stop(runner)
    runner = await runners.start()
    await wait_state(runner.store, queued["id"], "running")
    _, body = await http(runner, "GET", "/status", params={"channel": "one"})
    assert list(body["data"])[:2] == ["tasks", "count"]  # unwrapped, as upstream
    assert body["data"]["tasks"][0]["status"] == 2
    for ghost in ("ghost", "x" * 300):  # unknown, invalid: an empty list, as upstream
        status, body = await http(runner, "GET", "/status", params={"channel": ghost})
        assert status == 200 and body["data"] == {"tasks": [], "count": 0}


async def test_status_shows_dead_letters(runners: RunnerHarness, redis: aioredis.Redis) -> None:
    runner = await runners.start()
    await redis.lpush("task:prepare:queue", b"{oops")

    async def counted() -> bool:
        _, body = await http(runner, "GET", "/status")
        return bool(body["dead_letters"]["count"] == 1)

    await wait_until(counted, message="the dead letter to show in /status")
    _, body = await http(runner, "GET", "/status")
    assert body["dead_letters"]["recent"][0]["raw"] == "{oops"


async def test_auth_token_guards_everything_but_healthz(runners: RunnerHarness) -> None:
    runner = await runners.start(auth_token="s3cret")
    for method, path in [("GET", "/"), ("GET", "/status"), ("POST", "/push"), ("POST", "/queue")]:
        status, body = await http(runner, method, path)
        assert status == 401 and body["status_code"] == 401, path
        assert "s3cret" not in str(body)
    status, _ = await http(runner, "GET", "/status", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    status, _ = await http(runner, "GET", "/status", headers={"Authorization": "Bearer s3cret"})
    assert status == 200
    status, body = await http(runner, "GET", "/healthz")
    assert status == 200 and body["ok"] is True


async def test_unknown_route_is_an_envelope_404(runners: RunnerHarness) -> None:
    runner = await runners.start()
    status, body = await http(runner, "GET", "/nope")
    assert status == 404 and body["status_code"] == 404
    status, body = await http(runner, "GET", "/push")
    assert status == 405 and body["status_code"] == 405


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"task=true"),  # no boundary
        ("multipart/form-data; boundary=", b'{"task": "true"}'),  # an empty one
        ("multipart/form-data; boundary=zz", b"--zz\r\nno colon here\r\n\r\ntrue\r\n--zz--\r\n"),
    ],
)
async def test_malformed_multipart_body_is_a_4xx_on_every_form_endpoint(
    runners: RunnerHarness, content_type: str, body: bytes
) -> None:
    # Found by scripts/chaos (hostile HTTP): these were 500 Internal Server Error.
    runner = await runners.start()
    headers = {"Content-Type": content_type}
    for path, status in (("/push", 400), ("/queue", 400), ("/api/v1/task/rpc", 403)):
        code, answer = await http(runner, "POST", path, data=body, headers=headers)
        assert code == status, (path, code, answer)
        message = answer["message"] if isinstance(answer, dict) else answer
        assert "form" in message, (path, message)


async def test_requests_aiohttp_cannot_parse_are_one_info_line_not_an_error_traceback() -> None:
    # Found by scripts/chaos: `FOO / HTTP/1.1` on a kept-alive connection, a broken header or
    # chunk: aiohttp answers 400 and logged an ERROR with a traceback for each one.
    root, server_log = logging.getLogger(), logging.getLogger("aiohttp.server")
    handlers, level, filters = root.handlers[:], root.level, server_log.filters[:]
    try:
        configure(level="info")
        configure(level="info")  # installs its filter once
        [installed] = [f for f in server_log.filters if isinstance(f, ClientErrorFilter)]
    finally:
        root.handlers[:], server_log.filters[:] = handlers, filters
        root.setLevel(level)
    try:
        raise BadHttpMethod("FOO / HTTP/1.1")
    except BadHttpMethod:
        record = server_log.makeRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
            ("127.0.0.1",), sys.exc_info(),
        )  # fmt: skip
    assert installed.filter(record)
    assert (record.levelno, record.exc_info) == (logging.INFO, None)
    assert record.getMessage().startswith("Error handling request from 127.0.0.1: 400")
    unexpected = server_log.makeRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "boom", (), (ValueError, ValueError(), None)
    )
    assert installed.filter(unexpected) and unexpected.levelno == logging.ERROR
