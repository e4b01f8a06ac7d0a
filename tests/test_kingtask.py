"""kingtask's HTTP API: script and rpc jobs, results and counts, as upstream's README uses them."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from taskrunner.models import ChannelConfig
from taskrunner.runner import Runner
from tests.support.http import base_url, http
from tests.support.net import free_port
from tests.support.redis_servers import RedisServer
from tests.support.runners import RunnerHarness, stored_job, wait_state
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio

# kingtask's example.go as a shell script: the sum on stdout, errors on stderr (exit 0 anyway).
EXAMPLE = """#!/bin/sh
if [ "$#" -ne 2 ]; then printf 'args count must be two' >&2; exit 0; fi
for n in "$1" "$2"; do
  case "$n" in ''|*[!0-9]*) printf 'err:strconv.ParseInt: parsing "%s": invalid syntax' "$n" >&2; exit 0;; esac
done
printf '%d' $(($1 + $2))
"""
FINAL = {"is_result_exist": 1, "is_success": 1}


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A --bin-path with `example`, `where` (prints its cwd), `flaky` (fails, logging each
    attempt's time), a non-executable file and a directory."""
    path = tmp_path / "bin"
    path.mkdir()
    scripts = {
        "example": EXAMPLE,
        "where": "#!/bin/sh\npwd\n",
        "flaky": f"#!/bin/sh\ndate +%s.%N >> {tmp_path}/attempts\necho try again >&2\nexit 3\n",
    }
    for name, text in scripts.items():
        (path / name).write_text(text)
        (path / name).chmod(0o755)
    (path / "notes.txt").write_text("not a program\n")
    (path / "subdir").mkdir()
    return path


async def submit(runner: Runner, path: str, **kwargs: Any) -> str:
    """POST to a kingtask route; assert it answered 200 with a JSON string uuid and return it."""
    status, body = await http(runner, "POST", path, **kwargs)
    assert status == 200, body
    assert isinstance(body, str) and str(uuid.UUID(body)) == body
    return body


async def result_of(runner: Runner, job_id: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Poll `GET /api/v1/task/result/{uuid}` until it answers 200 (403 "result not exist"
    until the job ended, as kingtask); return the result."""
    reply: dict[str, Any] = {}

    async def exists() -> bool:
        nonlocal reply
        status, reply = await http(runner, "GET", f"/api/v1/task/result/{job_id}")
        if status == 403:
            assert reply == "result not exist", reply
            return False
        assert status == 200 and reply["is_result_exist"] == 1, reply
        return True

    await wait_until(exists, timeout_s=timeout_s, message=f"the result of {job_id}")
    return reply


async def assert_403(runner: Runner, method: str, path: str, fragment: str, **kw: Any) -> None:
    """403 with `fragment` in the JSON string, or in the detail beside kingtask's own text."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base_url(runner) + path, **kw) as resp,
    ):
        body = json.loads(await resp.text())
        detail = resp.headers.get("X-Taskrunner-Detail", "")
    assert resp.status == 403, (resp.status, body)
    assert isinstance(body, str) and (fragment in body or fragment in detail), (body, detail)


# -- script jobs ----------------------------------------------------------------------------


async def test_script_as_upstream_readme(runners: RunnerHarness, bin_dir: Path) -> None:
    runner = await runners.start(bin_path=bin_dir)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            base_url(runner) + "/api/v1/task", data={"bin_name": "example", "args": "12 34"}
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        text = await resp.text()
    job_id = json.loads(text)
    assert text == f'"{job_id}"' and len(text) == 38  # as upstream: Content-Length 38
    assert await result_of(runner, job_id) == {**FINAL, "message": "46"}
    job_id = await submit(
        runner, "/api/task/script", data={"bin_name": "example", "args": "100 107"}
    )
    assert await result_of(runner, job_id) == {**FINAL, "message": "207"}


async def test_script_fields_from_json_numbers_and_the_query(
    runners: RunnerHarness, bin_dir: Path
) -> None:
    runner = await runners.start(bin_path=bin_dir)
    as_strings = {"bin_name": "example", "args": "1 2", "start_time": "0", "max_run_time": "5"}
    as_numbers = {"bin_name": "example", "args": "3 4", "start_time": 0, "max_run_time": 5}
    ids = [
        await submit(runner, "/api/v1/task/script", json=as_strings),
        await submit(runner, "/api/task/script", json=as_numbers),
        await submit(runner, "/api/v1/task/script", params={"bin_name": "example", "args": "5 6"}),
    ]
    messages = [(await result_of(runner, job_id))["message"] for job_id in ids]
    assert messages == ["3", "7", "11"]
    record = await stored_job(runner.store, ids[1])
    assert (record.kind, record.timeout, record.channel) == ("script", 5, "kingtask")
    status, reply = await http(runner, "GET", "/api/task/result", params={"uuid": ids[2]})
    assert (status, reply) == (200, {**FINAL, "message": "11"})


async def test_script_runs_inside_bin_path(runners: RunnerHarness, bin_dir: Path) -> None:
    runner = await runners.start(bin_path=bin_dir)
    job_id = await submit(runner, "/api/v1/task/script", data={"bin_name": "where"})
    assert await result_of(runner, job_id) == {**FINAL, "message": str(bin_dir)}


async def test_script_output_on_stderr_is_a_failure_with_that_message(
    runners: RunnerHarness, bin_dir: Path
) -> None:
    runner = await runners.start(bin_path=bin_dir)
    job_id = await submit(runner, "/api/v1/task", data={"bin_name": "example", "args": "12 hello"})
    assert await result_of(runner, job_id) == {
        "is_result_exist": 1,
        "is_success": 0,
        "message": 'err:strconv.ParseInt: parsing "hello": invalid syntax',
    }
    record = await stored_job(runner.store, job_id)
    assert (record.state, record.exit_code) == ("failed", 0)
    assert "stderr" in record.error


@pytest.mark.parametrize(
    ("bin_name", "fragment"),
    [
        ("../bin/example", "no '/', no '..'"),
        ("sub/example", "no '/', no '..'"),
        ("..", "no '/', no '..'"),
        ("", '"bin_name" is required'),
        ("missing", "no such file in --bin-path"),
        ("notes.txt", "is not executable: run chmod +x"),
        ("subdir", "is not a regular file"),
    ],
)
async def test_script_bin_name_must_be_an_executable_inside_bin_path(
    runners: RunnerHarness, bin_dir: Path, bin_name: str, fragment: str
) -> None:
    runner = await runners.start(bin_path=bin_dir)
    await assert_403(runner, "POST", "/api/v1/task", fragment, data={"bin_name": bin_name})


async def test_script_without_bin_path_is_refused(runners: RunnerHarness) -> None:
    runner = await runners.start()
    await assert_403(
        runner, "POST", "/api/task/script", "start it with --bin-path", data={"bin_name": "x"}
    )


async def test_script_gone_before_it_runs_fails_with_a_clear_error(
    runners: RunnerHarness, bin_dir: Path
) -> None:
    runner = await runners.start(bin_path=bin_dir)
    await runner.store.put_channel(ChannelConfig(name="held", paused=True))
    job_id = await submit(
        runner, "/api/v1/task", data={"bin_name": "example", "args": "1 1", "channel": "held"}
    )
    (bin_dir / "example").unlink()
    await runner.store.put_channel(ChannelConfig(name="held"))
    reply = await result_of(runner, job_id)
    assert reply["is_success"] == 0 and "no such file in --bin-path" in reply["message"]
    assert (await stored_job(runner.store, job_id)).state == "failed"


async def test_start_time_in_the_future_waits_then_runs(
    runners: RunnerHarness, bin_dir: Path
) -> None:
    runner = await runners.start(bin_path=bin_dir)
    start_time = time.time() + 1.0
    job_id = await submit(
        runner,
        "/api/v1/task",
        json={"bin_name": "example", "args": "2 2", "start_time": start_time},
    )
    status, reply = await http(runner, "GET", f"/api/v1/task/result/{job_id}")
    assert (status, reply) == (403, "result not exist")  # as kingtask, until it has ended
    assert (await stored_job(runner.store, job_id)).state == "scheduled"
    assert await result_of(runner, job_id) == {**FINAL, "message": "4"}
    record = await stored_job(runner.store, job_id)
    assert record.started_at >= start_time - 0.01


async def test_time_interval_retries_once_per_interval_starting_with_the_first(
    runners: RunnerHarness, bin_dir: Path, tmp_path: Path
) -> None:
    runner = await runners.start(bin_path=bin_dir)
    job_id = await submit(
        runner, "/api/v1/task", data={"bin_name": "flaky", "time_interval": "0.2 0.4"}
    )
    record = await wait_state(runner.store, job_id, "dead")
    assert record.attempt == 3 and record.retries == 2
    times = [float(t) for t in (tmp_path / "attempts").read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 2 and 0.2 <= gaps[0] < 0.4 <= gaps[1] < 0.9, gaps
    reply = await result_of(runner, job_id)
    assert reply == {"is_result_exist": 1, "is_success": 0, "message": "try again"}


# -- rpc jobs -------------------------------------------------------------------------------


class Upstream:
    """A real HTTP server for rpc jobs to call, recording what it was sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[tuple[str, str, str, str]] = []  # method, path+query, content type, body
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()
        self.slow_gone = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/sum", self.sum)
        app.router.add_post("/fail", self.fail)
        app.router.add_get("/slow", self.slow)
        return app

    async def sum(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.seen.append((request.method, request.path_qs, request.content_type, body))
        numbers = json.loads(body) if body else dict(request.query)
        return web.Response(text=str(int(numbers["a"]) + int(numbers["b"])))

    async def fail(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom: the database is down\n")

    async def slow(self, request: web.Request) -> web.Response:
        self.slow_started.set()
        try:
            await asyncio.wait_for(self.release.wait(), timeout=5.0)
        finally:
            self.slow_gone.set()
        return web.Response(text="late")


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    app_runner = web.AppRunner(server.app(), handler_cancellation=True)
    await app_runner.setup()
    await web.TCPSite(app_runner, "127.0.0.1", server.port).start()
    try:
        yield server
    finally:
        server.release.set()
        await app_runner.cleanup()


async def test_rpc_post_as_upstream_readme(runners: RunnerHarness, upstream: Upstream) -> None:
    runner = await runners.start()
    job_id = await submit(
        runner,
        "/api/v1/task/rpc",
        data={"method": "POST", "url": f"{upstream.url}/sum", "args": '{"a":132,"b":75}'},
    )
    assert await result_of(runner, job_id) == {**FINAL, "message": "207"}
    assert upstream.seen == [("POST", "/sum", "application/json", '{"a":132,"b":75}')]
    record = await stored_job(runner.store, job_id)
    assert (record.kind, record.http_status, record.stdout) == ("rpc", 200, "207")


async def test_rpc_get_sends_args_as_its_body_as_kingtask(  # the-no worker.go newHttpRequest
    runners: RunnerHarness, upstream: Upstream
) -> None:
    runner = await runners.start()
    job_id = await submit(
        runner,
        "/api/task/rpc",
        json={"method": "get", "url": f"{upstream.url}/sum", "args": {"a": 1, "b": "2"}},
    )
    assert await result_of(runner, job_id) == {**FINAL, "message": "3"}
    [(method, path_qs, content_type, body)] = upstream.seen
    assert (method, path_qs, content_type) == ("GET", "/sum", "application/json")
    assert json.loads(body) == {"a": 1, "b": "2"}


async def test_rpc_non_2xx_fails_with_the_body_as_message(
    runners: RunnerHarness, upstream: Upstream
) -> None:
    runner = await runners.start()
    job_id = await submit(
        runner, "/api/v1/task/rpc", data={"method": "POST", "url": f"{upstream.url}/fail"}
    )
    reply = await result_of(runner, job_id)
    assert reply == {"is_result_exist": 1, "is_success": 0, "message": "boom: the database is down"}
    record = await stored_job(runner.store, job_id)
    assert (record.state, record.http_status) == ("failed", 500)
    assert record.error.startswith("HTTP 500")


async def test_rpc_max_run_time_stops_a_slow_call(
    runners: RunnerHarness, upstream: Upstream
) -> None:
    runner = await runners.start()
    started = time.monotonic()
    job_id = await submit(
        runner,
        "/api/v1/task/rpc",
        data={"method": "GET", "url": f"{upstream.url}/slow", "max_run_time": "1"},
    )
    reply = await result_of(runner, job_id)
    assert time.monotonic() - started < 2.0
    assert reply == {"is_result_exist": 1, "is_success": 0, "message": "timed out after 1.0 s"}
    assert (await stored_job(runner.store, job_id)).http_status is None
    await asyncio.wait_for(upstream.slow_gone.wait(), 2.0)  # the connection was closed


async def test_rpc_connection_refused_fails_with_a_clear_error(runners: RunnerHarness) -> None:
    runner = await runners.start()
    url = f"http://127.0.0.1:{free_port()}/sum"
    job_id = await submit(runner, "/api/v1/task/rpc", data={"method": "POST", "url": url})
    reply = await result_of(runner, job_id)
    assert reply["is_success"] == 0 and "cannot connect to 127.0.0.1" in reply["message"]


async def test_rpc_cancel_and_drain_stop_the_call(
    runners: RunnerHarness, upstream: Upstream, redis: aioredis.Redis
) -> None:
    runner = await runners.start(drain_timeout_s=0.1)
    fields = {"method": "GET", "url": f"{upstream.url}/slow"}
    cancelled = await submit(runner, "/api/v1/task/rpc", data=fields)
    await asyncio.wait_for(upstream.slow_started.wait(), 5.0)
    await runner.service.cancel(cancelled)
    record = await wait_state(runner.store, cancelled, "cancelled", timeout_s=2.0)
    assert record.error == "terminated (cancelled)"
    await asyncio.wait_for(upstream.slow_gone.wait(), 2.0)

    upstream.slow_started.clear()
    handed = await submit(runner, "/api/v1/task/rpc", data=fields)
    await asyncio.wait_for(upstream.slow_started.wait(), 5.0)
    await runners.stop(runner)
    stored = await redis.hgetall(f"task:job:{handed}")
    assert (stored[b"state"], stored.get(b"handed_back")) == (b"queued", b"drain"), stored
    await asyncio.wait_for(upstream.slow_gone.wait(), 2.0)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"method": "PATCHY", "url": "http://127.0.0.1:1/"}, '"method" must be one of'),
        ({"method": "", "url": "http://127.0.0.1:1/"}, '"method" must be one of'),
        ({"method": "POST"}, '"url" is required'),
        ({"method": "POST", "url": "ftp://example.com/x"}, "http:// or https://"),
        ({"method": "POST", "url": "/relative"}, "http:// or https://"),
        ({"method": "POST", "url": "http://a b/"}, "spaces or control characters"),
        ({"method": "POST", "url": "http://h/", "args": "{oops"}, '"args" must be a JSON text'),
        ({"method": "POST", "url": "http://h/", "max_run_time": "-1"}, '"max_run_time"'),
        ({"method": "POST", "url": "http://h/", "time_interval": "1 x"}, '"time_interval"'),
        ({"method": "POST", "url": "http://h/", "start_time": "soon"}, '"start_time"'),
        ({"method": "POST", "url": "http://h/", "channel": "ghost"}, "'ghost' does not exist"),
    ],
)
async def test_rpc_bad_fields_are_403(
    runners: RunnerHarness, fields: dict[str, str], fragment: str
) -> None:
    runner = await runners.start()
    await assert_403(runner, "POST", "/api/v1/task/rpc", fragment, data=fields)


# -- channels, counts, results, errors ------------------------------------------------------


async def test_kingtask_channel_is_created_on_first_use_and_channel_is_honoured(
    runners: RunnerHarness, bin_dir: Path
) -> None:
    runner = await runners.start(bin_path=bin_dir, concurrent=3)
    assert await runner.store.get_channel("kingtask") is None
    first = await submit(runner, "/api/v1/task", data={"bin_name": "example", "args": "1 1"})
    second = await submit(runner, "/api/v1/task", data={"bin_name": "example", "args": "1 1"})
    assert first != second  # no dedup: each call is a new job
    config = await runner.store.get_channel("kingtask")
    assert config is not None and (config.distinct, config.worker_count) == (False, 3)
    on_biz = await submit(
        runner, "/api/v1/task", data={"bin_name": "example", "args": "1 1", "channel": "biz"}
    )
    for job_id in (first, second, on_biz):
        assert (await result_of(runner, job_id))["message"] == "2"
    assert (await stored_job(runner.store, on_biz)).channel == "biz"


async def test_count_undo_counts_queued_and_due_jobs(runners: RunnerHarness, bin_dir: Path) -> None:
    runner = await runners.start(bin_path=bin_dir)
    assert await http(runner, "GET", "/api/v1/task/count/undo") == (200, 0)
    await runner.store.put_channel(ChannelConfig(name="held", paused=True))
    for _ in range(3):
        await submit(runner, "/api/v1/task", data={"bin_name": "where", "channel": "held"})
    later = {"bin_name": "where", "channel": "held", "start_time": str(int(time.time()) + 3600)}
    await submit(runner, "/api/v1/task", data=later)
    assert await http(runner, "GET", "/api/v1/task/count/undo") == (200, 3)
    assert await http(runner, "GET", "/api/task/count/undo") == (200, 3)
    assert await runner.store.undo_count(now=time.time() + 7200) == 4  # once it is due


async def test_daily_success_and_failure_counts(runners: RunnerHarness, bin_dir: Path) -> None:
    runner = await runners.start(bin_path=bin_dir)
    today = time.strftime("%Y-%m-%d")
    for args in ("1 2", "3 4", "5 x"):
        job_id = await submit(runner, "/api/v1/task", data={"bin_name": "example", "args": args})
        await result_of(runner, job_id)
    assert await http(runner, "GET", f"/api/v1/task/result/success/{today}") == (200, 2)
    assert await http(runner, "GET", f"/api/task/result/failure/{today}") == (200, 1)
    assert await http(runner, "GET", "/api/v1/task/result/success/2015-10-30") == (200, 0)
    for bad in ("2015-13-45", "yesterday", "2015-1-3"):
        await assert_403(runner, "GET", f"/api/v1/task/result/failure/{bad}", "YYYY-MM-DD")


async def test_unknown_uuid_is_403_result_not_exist(runners: RunnerHarness) -> None:
    runner = await runners.start()
    unknown = str(uuid.uuid4())
    await assert_403(runner, "GET", f"/api/v1/task/result/{unknown}", "result not exist")
    await assert_403(runner, "GET", f"/api/task/result?uuid={unknown}", "result not exist")
    await assert_403(runner, "GET", "/api/task/result", "no uuid")


async def test_errors_under_the_kingtask_prefixes_are_403_json_strings(
    runners: RunnerHarness, redis_server: RedisServer
) -> None:
    runner = await runners.start()
    await assert_403(runner, "GET", "/api/v1/task/nope", "no route GET /api/v1/task/nope")
    await assert_403(runner, "GET", "/api/task/script", "method not allowed")
    await assert_403(runner, "POST", "/api/v1/task/rpc", "not valid JSON", data=b"{", headers={"Content-Type": "application/json"})  # fmt: skip
    big = io.BytesIO(b"method=" + b"x" * (2 * 1024 * 1024))
    await assert_403(runner, "POST", "/api/v1/task/rpc", "larger than", data=big, headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    status, body = await http(runner, "GET", "/nope")  # outside the prefixes: the envelope
    assert status == 404 and body["status_code"] == 404
    redis_server.stop()
    try:
        await assert_403(runner, "GET", "/api/v1/task/count/undo", "Redis is unavailable")
    finally:
        redis_server.start()


async def test_auth_failure_under_the_kingtask_prefixes_is_a_json_string(
    runners: RunnerHarness,
) -> None:
    runner = await runners.start(auth_token="s3cret")
    status, body = await http(runner, "GET", "/api/v1/task/count/undo")
    assert status == 401 and isinstance(body, str) and "Authorization: Bearer" in body
    headers = {"Authorization": "Bearer s3cret"}
    assert await http(runner, "GET", "/api/task/count/undo", headers=headers) == (200, 0)
