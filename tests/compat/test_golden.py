"""Golden request/response pairs of TaskRunner's HTTP API, checked byte for byte on a real runner
over a real Redis.

Each pair cites what it is derived from in upstream, github `mylxsw/coyotes` (then named
task-runner), read at the commits named: the era of the issue's commit `1aabb27`, whose README
(seeds/003) documents `/`, `/status`, `/push` and `/queue`. Every answer is
`json.Marshal(Response{StatusCode, Message, Data})` (http/response/response.go at 047d189,
L6-L15), so the bytes are Go's; our own fields (`id`, `state`, `queued`, `running`,
`scheduled`, `dead_letters`) follow upstream's. A value that upstream had none of (a job id) is
read from the answer and put in its place in the expected bytes.

Upstream's flags with an effect on an HTTP answer are here: `-colorful-tty` (`GET /`),
`-channel-default` (`/push` without a channel), `-task-mode` (queued tasks stay listed in
`/status`), `-http-addr` (every request goes to the address it names). The others
(`-redis-host`, `-redis-password`, `-redis-db`, `-host`, `-password`, `-concurrent`, `-pidfile`)
answer nothing over HTTP; their parsing is tested with the CLI."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import pytest

from taskrunner.runner import Runner
from tests.support.http import base_url, http
from tests.support.runners import RunnerHarness, wait_state

pytestmark = pytest.mark.asyncio

JSON_UTF8 = "application/json; charset=utf-8"
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NO_DEAD_LETTERS = b',"dead_letters":{"count":0,"recent":[]}}'


async def raw(runner: Runner, method: str, path: str, **kwargs: Any) -> tuple[int, str, bytes]:
    """One request; (status, Content-Type, body bytes as sent)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base_url(runner) + path, **kwargs) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def push(runner: Runner, **form: str) -> tuple[bytes, bytes]:
    """POST /push with a urlencoded form; (body bytes, the job id it names)."""
    status, kind, body = await raw(runner, "POST", "/push", data=form)
    assert (status, kind) == (200, JSON_UTF8), body
    job_id = json.loads(body)["data"]["id"].encode()
    return body, job_id


# -- GET / ------------------------------------------------------------------------------------


async def test_index(runners: RunnerHarness) -> None:
    # http/handler/home.go at 047d189 L9-L13: text/plain, config.WelcomeMessage();
    # config/welcome.go at 93fa9c0 L6-L8: without -colorful-tty, "TaskRunner Started."
    runner = await runners.start()
    assert await raw(runner, "GET", "/") == (
        200,
        "text/plain; charset=utf-8",
        b"TaskRunner Started.",
    )


async def test_index_with_colorful_tty_is_upstream_banner(runners: RunnerHarness) -> None:
    # config/welcome.go at 93fa9c0 L10-L19 (the same text as WelcomeMessageStr, its last
    # TaskRunner-era form): with -colorful-tty, the banner, from its first newline to its last
    runner = await runners.start(colorful_tty=True)
    banner = (
        "\n"
        "   ::::::::::::::::::::\n"
        "      :+:    :+:    :+          TaskRunner v1.0\n"
        "     +:+    +:+    +:+                                    █\n"
        "    +#+    +#++:++#:           Powered by mylxsw          █\n"
        "   +#+    +#+    +#+     github.com/mylxsw/task-runner    █\n"
        "  #+#    #+#    #+#                                       █\n"
        " ###    ###    ###     ████████████████████████████████████\n"
        "\n"
    )
    assert await raw(runner, "GET", "/") == (200, "text/plain; charset=utf-8", banner.encode())


# -- POST /push -------------------------------------------------------------------------------


async def test_push_multipart_as_upstream_readme(runners: RunnerHarness) -> None:
    # seeds/003 (upstream's README at 1aabb27), "使用HTTP API": multipart task=date channel=biz
    # answers {"status_code":200,"message":"ok","data":{"task_name":"date","result":true}};
    # http/handler/task.go at 93fa9c0 L37-L43: data is struct{TaskName, Result}
    runner = await runners.start(task_mode=False)
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("task", "date")
    form.add_field("channel", "biz")
    status, kind, body = await raw(runner, "POST", "/push", data=form())
    [job_id] = UUID.findall(body)
    assert (status, kind) == (200, JSON_UTF8)
    assert body == (
        b'{"status_code":200,"message":"ok","data":{"task_name":"date","result":true,"id":"'
        + job_id
        + b'"}}'
    )


async def test_push_without_channel_goes_to_channel_default(runners: RunnerHarness) -> None:
    # http/handler/task.go at 93fa9c0 L18-L22: an empty channel is -channel-default's
    runner = await runners.start(task_mode=False, channel_default="main")
    body, job_id = await push(runner, task="date")
    assert body == (
        b'{"status_code":200,"message":"ok","data":{"task_name":"date","result":true,"id":"'
        + job_id
        + b'"}}'
    )
    assert (await wait_state(runner.store, job_id.decode(), "queued")).channel == "main"


async def test_push_duplicate_on_distinct_channel_is_result_false(runners: RunnerHarness) -> None:
    # brokers/redis/redis.go at 047d189 L33-L41: a distinct channel queues a command once while
    # its mark lives, else answers 0; http/handler/task.go at 93fa9c0 L42: result = (rs == 1)
    runner = await runners.start(task_mode=False)
    _, first_id = await push(runner, task="date", channel="biz")
    body, again_id = await push(runner, task="date", channel="biz")
    assert again_id == first_id
    assert body == (
        b'{"status_code":200,"message":"ok","data":{"task_name":"date","result":false,"id":"'
        + first_id
        + b'"}}'
    )


async def test_push_answer_escapes_as_go(runners: RunnerHarness) -> None:
    # http/response/response.go at 047d189 L14: json.Marshal escapes < > & as \u003c \u003e
    # \u0026, and writes other text (here Chinese) as raw UTF-8
    runner = await runners.start(task_mode=False)
    body, job_id = await push(runner, task="echo '<b>' & 报表")
    assert body == (
        b'{"status_code":200,"message":"ok","data":{"task_name":"echo \'\\u003cb\\u003e\''
        b' \\u0026 \xe6\x8a\xa5\xe8\xa1\xa8","result":true,"id":"' + job_id + b'"}}'
    )


# -- GET /status ------------------------------------------------------------------------------


def task_json(name: bytes, channel: bytes, status: int, job_id: bytes, state: bytes) -> bytes:
    # brokers/redis/task.go at d0cb636 L19-L24: Task{task_name, channel, status (int)}
    fields = (name, channel, status, job_id, state)
    return b'{"task_name":"%s","channel":"%s","status":%d,"id":"%s","state":"%s"}' % fields


def channel_json(*tasks: bytes, queued: int = 0, running: int = 0) -> bytes:
    """taskResult{tasks, count} (http/handler/status.go at d0cb636 L14-L17), then ours."""
    counts = (queued + running, queued, running)
    tail = b'"count":%d,"queued":%d,"running":%d,"scheduled":0}' % counts
    return b'{"tasks":[' + b",".join(tasks) + b"]," + tail


def status_answer(data: bytes) -> bytes:
    return b'{"status_code":200,"message":"ok","data":' + data + NO_DEAD_LETTERS


async def test_status_of_one_channel_is_unwrapped_newest_first(runners: RunnerHarness) -> None:
    # http/handler/status.go at d0cb636 L24 and L43-L55: with `channel` (query or form,
    # FormValue), data is that channel's taskResult{tasks, count}, unwrapped;
    # brokers/redis/task.go at d0cb636 L48-L66: the queue from its head (LRANGE 0..LLEN): the
    # newest first, as commands are LPUSHed (brokers/redis/redis.go at 047d189 L29, L37);
    # status 1 with a dedup mark; -task-mode=false leaves them queued
    runner = await runners.start(task_mode=False)
    _, first = await push(runner, task="date", channel="biz")
    _, second = await push(runner, task="uptime", channel="biz")
    expected = status_answer(
        channel_json(
            task_json(b"uptime", b"biz", 1, second, b"queued"),
            task_json(b"date", b"biz", 1, first, b"queued"),
            queued=2,
        )
    )
    assert await raw(runner, "GET", "/status?channel=biz") == (200, JSON_UTF8, expected)
    form = await raw(runner, "POST", "/status", data={"channel": "biz"})
    assert form == (200, JSON_UTF8, expected)


async def test_status_of_a_non_distinct_channel_is_status_0(runners: RunnerHarness) -> None:
    # brokers/redis/task.go at d0cb636 L58-L62: status is the dedup mark's value, 0 without one
    # (a channel created without distinct sets none: brokers/redis/redis.go at 047d189 L27-L30)
    runner = await runners.start(task_mode=False)
    await raw(runner, "POST", "/queue", data={"name": "loose", "worker": "1"})
    _, job_id = await push(runner, task="date", channel="loose")
    _, _, body = await raw(runner, "GET", "/status?channel=loose")
    assert body == status_answer(
        channel_json(task_json(b"date", b"loose", 0, job_id, b"queued"), queued=1)
    )


async def test_status_of_a_running_task_is_status_2(runners: RunnerHarness) -> None:
    # brokers/redis/task.go at d0cb636 L67-L75: the running set's commands follow, status 2
    runner = await runners.start()
    _, job_id = await push(runner, task="sleep 30", channel="cron")
    await wait_state(runner.store, job_id.decode(), "running")
    _, _, body = await raw(runner, "GET", "/status?channel=cron")
    assert body == status_answer(
        channel_json(task_json(b"sleep 30", b"cron", 2, job_id, b"running"), running=1)
    )
    await http(runner, "POST", f"/api/jobs/{job_id.decode()}/cancel")
    await wait_state(runner.store, job_id.decode(), "cancelled")


@pytest.mark.parametrize("channel", ["ghost", "x" * 300], ids=["unknown", "invalid"])
async def test_status_of_an_unknown_or_invalid_channel_is_empty(
    runners: RunnerHarness, channel: str
) -> None:
    # http/handler/status.go at d0cb636 L44-L55 and brokers/redis/task.go at d0cb636 L50-L56:
    # any name reads its (empty) list: 200 with no tasks
    runner = await runners.start()
    expected = status_answer(b'{"tasks":[],"count":0}')
    assert await raw(runner, "GET", f"/status?channel={channel}") == (200, JSON_UTF8, expected)


async def test_status_of_every_channel_is_a_map_sorted_by_name(runners: RunnerHarness) -> None:
    # http/handler/status.go at d0cb636 L25-L42: without `channel`, a map[string]taskResult of
    # every channel, which json.Marshal writes with its keys sorted (by bytes: "Zed" first);
    # seeds/003's /status example lists biz, cron, default so
    runner = await runners.start(task_mode=False)
    await raw(runner, "POST", "/queue", data={"name": "Zed", "worker": "1"})
    _, job_id = await push(runner, task="date", channel="Zed")
    empty = channel_json()
    zed = channel_json(task_json(b"date", b"Zed", 0, job_id, b"queued"), queued=1)
    expected = status_answer(
        b'{"Zed":' + zed + b',"biz":' + empty + b',"cron":' + empty + b',"default":' + empty + b"}"
    )
    assert await raw(runner, "GET", "/status") == (200, JSON_UTF8, expected)


# -- POST /queue ------------------------------------------------------------------------------


async def test_queue_create_answers_data_null(runners: RunnerHarness) -> None:
    # http/handler/queue.go at 60b80d7 L16-L30: name, distinct ("true"), worker; Success(nil)
    runner = await runners.start()
    form = {"name": "mail", "distinct": "true", "worker": "3"}
    assert await raw(runner, "POST", "/queue", data=form) == (
        200,
        JSON_UTF8,
        b'{"status_code":200,"message":"ok","data":null}',
    )


# -- error answers ----------------------------------------------------------------------------


def error_bytes(status: int, message: str) -> bytes:
    # http/response/response.go at 047d189 L27-L33: Failed(message) is the envelope with its
    # message and data null (upstream's status_code 500 and HTTP 200; ours the real status)
    return b'{"status_code":%d,"message":"%s","data":null}' % (status, message.encode())


async def test_error_answers_are_the_envelope_as_go_writes_it(runners: RunnerHarness) -> None:
    runner = await runners.start(auth_token="s3cret")
    answer = await raw(runner, "GET", "/status")
    hint = "missing or wrong token: send Authorization: Bearer \\u003ctoken\\u003e"
    assert answer == (401, JSON_UTF8, error_bytes(401, hint))
    auth = {"Authorization": "Bearer s3cret"}
    status, kind, body = await raw(
        runner, "POST", "/push", data={"task": "date", "channel": "ghost"}, headers=auth
    )
    message = json.loads(body)["message"]
    assert "ghost" in message and not set(message) & set('"\\<>&')
    assert (status, kind, body) == (404, JSON_UTF8, error_bytes(404, message))
    answer = await raw(runner, "GET", "/x<y>", headers=auth)
    message = "no route GET /x\\u003cy\\u003e: check the method and the path"
    assert answer == (404, JSON_UTF8, error_bytes(404, message))
