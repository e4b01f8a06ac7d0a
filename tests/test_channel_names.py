"""Channel names as upstream took them (any non-empty name, channel.go): unicode and spaces
work everywhere, refused characters are named, keys and pub/sub notices carry any valid name."""

from __future__ import annotations

import json
import logging
import re
import unicodedata

import pytest
import redis.asyncio as aioredis

from taskrunner import Client
from taskrunner.cli import tables
from taskrunner.errors import InvalidChannel
from taskrunner.models import ChannelConfig
from taskrunner.store import Keys, Notice
from taskrunner.validation import (
    CHANNEL_NAME_RE,
    MAX_CHANNEL_NAME_BYTES,
    channel_name_schema_pattern,
    validate_channel_name,
)
from tests.support.http import http
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until

VALID = [
    "报表",
    "my chan",
    "a:b",
    "biz.mail-2",
    "émoji 🚀",
    " leading and trailing ",
    'quote"back\\slash',
    "slash/and?hash#",
    "é" * (MAX_CHANNEL_NAME_BYTES // 2),  # 200 bytes of UTF-8
]
INVALID = [
    ("", "it is empty"),
    ("biz\n", "U+000A"),
    ("tab\there", "U+0009"),
    ("nul\0", "U+0000"),
    ("del\x7f", "U+007F"),
    ("c1\x85", "U+0085"),
    ("line\u2028sep", "U+2028"),
    ("para\u2029sep", "U+2029"),
    ("override\u202e", "U+202E"),
    ("isolate\u2066", "U+2066"),
    ("lone\ud800", "U+D800"),
    ("é" * (MAX_CHANNEL_NAME_BYTES // 2) + "x", "201 bytes"),
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names(name: str) -> None:
    assert validate_channel_name(name) == name
    assert ChannelConfig(name=name).name == name


@pytest.mark.parametrize(("name", "why"), INVALID)
def test_invalid_names_say_what_is_wrong(name: str, why: str) -> None:
    with pytest.raises(InvalidChannel, match=re.escape(why)):
        validate_channel_name(name)


def test_the_schema_pattern_is_the_same_rule() -> None:
    """The OpenAPI pattern is generated from the rule: it agrees on every sample JSON can carry."""
    ecma = channel_name_schema_pattern()
    assert ecma.endswith("$")
    pattern = re.compile(ecma[:-1] + r"\Z")  # ECMA-262's `$` (no m flag) is Python's `\Z`
    for name in VALID:
        assert pattern.match(name) and CHANNEL_NAME_RE.match(name)
    for name, _ in INVALID:
        if name and "\ud800" not in name and len(name.encode()) <= MAX_CHANNEL_NAME_BYTES:
            assert not pattern.match(name), repr(name)


def test_keys_carry_any_name_whole() -> None:
    keys = Keys()
    assert keys.queue("my chan") == "task:queue:my chan"
    assert keys.scheduled("报表") == "task:scheduled:报表"
    with pytest.raises(InvalidChannel):
        keys.queue("bad\nname")


def notice(keys: Keys, channel: str, data: str) -> Notice:
    return Notice.decode({"type": "message", "channel": channel, "data": data.encode()}, keys)


def test_queue_notices_keep_spaces_in_the_channel_name() -> None:
    """A schedule notice is "<channel> <due ms>": split at the last space, not the first."""
    keys = Keys()
    scheduled = notice(keys, keys.schedule_events, "my chan 1700000000000")
    assert scheduled.queue() == ("my chan", "1700000000000")
    assert notice(keys, keys.wake_events, "my big chan").queue() == ("my big chan", "")
    assert notice(keys, keys.wake_events, "报表").queue() == ("报表", "")


async def test_a_delayed_job_in_a_spaced_channel_is_promoted_on_its_notice(
    runners: RunnerHarness, redis_url: str
) -> None:
    """The runner learns of a job scheduled by another process only from the schedule notice:
    misread, its timer stays on the 30 s safety recheck and the job waits that long."""
    runner = await runners.start()
    await runner.service.create_channel(ChannelConfig(name="my chan", worker_count=1))
    await wait_until(lambda: runner.workers.config("my chan") is not None, timeout_s=5)
    async with Client(redis_url) as client:
        job_id = await client.push("true", channel="my chan", delay=0.2)
    await wait_state(runner.store, job_id, "succeeded", timeout_s=10)


def upstream_channel(name: str, *, distinct: bool = True, workers: int = 1) -> str:
    """A channel as upstream writes it into `task:channels` (brokers.Channel as JSON)."""
    return json.dumps({"name": name, "distinct": distinct, "worker_count": workers})


async def test_stored_unicode_and_spaced_channels_load_and_run(
    runners: RunnerHarness, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.hset("task:channels", "报表", upstream_channel("报表"))
    await redis.hset("task:channels", "my chan", upstream_channel("my chan"))
    with caplog.at_level(logging.WARNING, logger="taskrunner"):
        runner = await runners.start()
        for name in ("报表", "my chan"):
            await redis.lpush(
                "task:prepare:queue",
                json.dumps({"task": "true", "chan": name, "id": f"j-{len(name)}"}),
            )
        await wait_state(runner.store, "j-2", "succeeded")
        await wait_state(runner.store, "j-7", "succeeded")
    assert not [r for r in caplog.records if "ignoring stored channel" in r.getMessage()]


async def test_an_unusable_stored_channel_is_warned_about_once(
    runners: RunnerHarness, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.hset("task:channels", "bad\nname", upstream_channel("x"))
    await redis.hset("task:channels", "broken", "{not json")
    with caplog.at_level(logging.WARNING, logger="taskrunner.store"):
        runner = await runners.start()
        for _ in range(3):
            await runner.workers.sync_channels()
        await runner.service.channels()
    warned = [r.getMessage() for r in caplog.records if "ignoring stored channel" in r.getMessage()]
    assert len(warned) == 2, warned
    assert any("U+000A" in w for w in warned) and any("invalid JSON" in w for w in warned)
    await redis.hset("task:channels", "broken", "[1]")  # changed, and still unusable: said again
    with caplog.at_level(logging.WARNING, logger="taskrunner.store"):
        await runner.workers.sync_channels()
    assert any("not an object" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["报表", "my chan", "slash/and?hash#"])
async def test_native_api_creates_and_shows_any_valid_name(
    runners: RunnerHarness, name: str
) -> None:
    runner = await runners.start()
    status, body = await http(runner, "POST", "/api/channels", json={"name": name})
    assert status == 201, body
    quoted = "".join(
        c if c.isalnum() and c.isascii() else f"%{b:02X}" for c in name for b in c.encode()
    )
    status, body = await http(runner, "GET", f"/api/channels/{quoted}")
    assert status == 200 and body["name"] == name, body
    status, body = await http(runner, "POST", "/api/jobs", json={"task": "true", "channel": name})
    assert status in (200, 201, 202), body
    await wait_state(runner.store, body["id"], "succeeded")
    status, body = await http(runner, "GET", f"/api/jobs?channel={quoted}")
    assert status == 200, body


async def test_taskrunner_api_and_metrics_take_unicode_names(runners: RunnerHarness) -> None:
    runner = await runners.start()
    status, body = await http(runner, "POST", "/queue", data={"name": '报表 "q"', "worker": "1"})
    assert status == 200, body
    status, body = await http(runner, "POST", "/push", data={"task": "true", "channel": '报表 "q"'})
    assert status == 200, body
    await wait_state(runner.store, body["data"]["id"], "succeeded")
    status, text = await http(runner, "GET", "/metrics")
    assert status == 200
    assert 'taskrunner_jobs_succeeded_total{channel="报表 \\"q\\""} 1.0' in text


@pytest.mark.parametrize(
    ("name", "cut_to"),
    [("报表", "报表"), ("my chan", "my chan"), ("数据报表汇总每日任务", "数据报...")],
)
def test_cli_tables_align_wide_characters_by_terminal_columns(name: str, cut_to: str) -> None:
    """A CJK channel name takes two columns a character: the table's columns stay aligned and a
    long name is cut to the column's width, not its character count."""

    def width(text: str) -> int:  # a terminal's columns (no combining marks here)
        return sum(2 if unicodedata.east_asian_width(char) == "W" else 1 for char in text)

    columns = [("CHANNEL", 10), ("WORKERS", -7)]
    header, row = tables.render(columns, [[name, 5]]).splitlines()
    assert width(header) == width(row) == 18, (header, row)
    assert row.startswith(cut_to) and width(row.split("  ")[0]) <= 10
