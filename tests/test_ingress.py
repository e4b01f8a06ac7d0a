"""The prepare queue: TaskRunner's wire format, dead letters, and nothing lost in routing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from taskrunner.models import Job
from taskrunner.validation import Limits
from tests.support.runners import RunnerHarness, stored_job, wait_state
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio

QUEUE = "task:prepare:queue"


async def job_ids_in_state(redis: aioredis.Redis, state: str) -> list[str]:
    ids = []
    async for key in redis.scan_iter(match="task:job:*"):
        if (await redis.hget(key, "state")) == state.encode():
            ids.append(key.decode().removeprefix("task:job:"))
    return ids


async def test_php_style_payload_runs_in_its_channel(
    runners: RunnerHarness, redis: aioredis.Redis, tmp_path: Path
) -> None:
    runner = await runners.start()
    out = tmp_path / "out.txt"
    # PHP: json_encode([...], JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE)
    payload = (
        '{"task":"sh -c \\"printf 报表/日报 > ' + str(out) + '\\"","chan":"biz","ts":1491800000}'
    )
    assert "/" in payload and "报表" in payload  # slashes and UTF-8 are not escaped
    await redis.lpush(QUEUE, payload.encode())
    await wait_until(out.exists, message="the PHP-style job to run")
    assert out.read_text() == "报表/日报"
    await wait_until(  # the file is written before the job's end is recorded
        lambda: job_ids_in_state(redis, "succeeded"), message="the job to be recorded"
    )
    [job_id] = await job_ids_in_state(redis, "succeeded")
    record = await runner.store.get_job(job_id)
    assert record is not None
    assert record.channel == "biz" and record.ts == 1491800000


async def test_missing_or_empty_chan_uses_default_and_ts_may_be_a_string(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start(channel_default="main")
    await redis.lpush(QUEUE, json.dumps({"task": "echo a", "ts": "1491800000", "id": "a"}))
    await redis.lpush(
        QUEUE, json.dumps({"task": "echo b", "chan": "", "ts": 1491800000.5, "id": "b"})
    )
    for job_id in ("a", "b"):
        record = await wait_state(runner.store, job_id, "succeeded")
        assert record.channel == "main"


async def test_numeric_ids_and_numeric_strings_as_producers_send_them(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    """Upstream ignored `id` and `timeout`; producers send `"id": 42` and numeric strings."""
    runner = await runners.start()
    await redis.lpush(QUEUE, json.dumps({"task": "true", "chan": "biz", "id": 42}))
    await redis.lpush(QUEUE, json.dumps({"task": "true", "id": 0, "timeout": "30", "ts": "9"}))
    assert (await wait_state(runner.store, "42", "succeeded")).channel == "biz"
    record = await wait_state(runner.store, "0", "succeeded")
    assert (record.timeout, record.ts) == (30, 9)


async def test_optional_fields_id_args_timeout_dedup_key(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start()
    await redis.lpush(
        QUEUE,
        json.dumps({"task": "printf", "args": ["%s|%s", "a b", "$HOME"], "id": "args-1"}),
    )
    record = await wait_state(runner.store, "args-1", "succeeded")
    assert record.stdout == "a b|$HOME"  # exact argv, no splitting, no shell
    await redis.lpush(QUEUE, json.dumps({"task": "sleep 5", "timeout": 0.3, "id": "slow"}))
    record = await wait_state(runner.store, "slow", "failed")
    assert "timed out" in record.error
    await redis.lpush(QUEUE, json.dumps({"task": "sleep 1", "dedup_key": "k", "id": "d1"}))
    await redis.lpush(QUEUE, json.dumps({"task": "sleep 2", "dedup_key": "k", "id": "d2"}))
    await wait_state(runner.store, "d1", "succeeded")
    assert await runner.store.get_job("d2") is None  # refused: same dedup key, default is distinct


BAD_MESSAGES = [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe garbage", "not valid JSON"),
    (b"[1, 2]", "JSON list, expected an object"),
    (b'{"chan": "biz"}', '"task" is required'),
    (b'{"task": ""}', '"task" is required'),
    (b'{"task": 42}', '"task" is required'),
    (b'{"task": "date", "ts": "yesterday"}', '"ts" must be a number'),
    (b'{"task": "date", "timeout": "30s"}', '"timeout" must be a number or a numeric string'),
    (b'{"task": "date", "id": 1.5}', '"id" must be a string or a whole number'),
    (b'{"task": "date", "args": "nope"}', '"args" must be a JSON list'),
    (b'{"task": "date", "chan": 7}', "must be a string"),
    (b'{"task": "date", "chan": "tab\\there"}', "invalid channel name"),
    (b'{"task": "date", "chan": "nochannel"}', "unknown channel 'nochannel'"),
    (b'{"task": "echo \'unbalanced"}', "cannot be split"),
]


async def test_bad_messages_are_dead_lettered_and_the_runner_keeps_going(
    runners: RunnerHarness, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    runner = await runners.start(limits=Limits(max_message_bytes=1000))
    oversized = json.dumps({"task": "echo " + "x" * 2000}).encode()
    bad = [*BAD_MESSAGES, (oversized, "over the limit of 1000")]
    for raw, _ in bad:
        await redis.lpush(QUEUE, raw)
    await redis.lpush(QUEUE, json.dumps({"task": "true", "id": "after"}))
    await wait_state(runner.store, "after", "succeeded")
    letters = await runner.store.dead_letters(count=100)
    assert len(letters) == len(bad)
    by_raw = {letter["raw"]: letter["reason"] for letter in letters}
    for raw, reason in bad:
        key = raw.decode("utf-8", "backslashreplace")
        assert reason in by_raw[key], (raw, by_raw[key])
    assert (await runner.store.stats())["dead_letters"] == len(bad)
    warnings = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(warnings) == len(bad)  # one log line each
    assert await redis.llen(QUEUE) == 0
    assert await redis.llen(runner.store.keys.prepare_inflight(runner.runner_id)) == 0


async def test_message_taken_by_a_crashed_runner_is_routed_later(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    # A runner took a message (BLMOVE into its in-flight list) and died before routing it.
    dead = "crashed-host:1:abc"
    await redis.zadd("task:runners", {dead: 0})
    await redis.lpush(f"task:prepare:inflight:{dead}", json.dumps({"task": "true", "id": "orphan"}))
    runner = await runners.start(lease_s=0.5)
    record = await wait_state(runner.store, "orphan", "succeeded", timeout_s=15)
    assert record.attempt == 1
    assert await redis.exists(f"task:prepare:inflight:{dead}") == 0
    assert await redis.zscore("task:runners", dead) is None


async def test_unrouted_messages_go_back_on_close(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start(task_mode=False)
    inflight = runner.store.keys.prepare_inflight(runner.runner_id)
    await redis.lpush(inflight, b'{"task": "true", "id": "held"}')
    await runners.stop(runner)
    assert await redis.lrange(QUEUE, 0, -1) == [b'{"task": "true", "id": "held"}']


async def test_no_task_mode_routes_but_runs_nothing(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start(task_mode=False)
    await redis.lpush(QUEUE, json.dumps({"task": "true", "id": "parked"}))
    await wait_state(runner.store, "parked", "queued")
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        assert (await stored_job(runner.store, "parked")).state == "queued"


# Found by scripts/chaos: a Redis restart while a runner takes or routes messages (the command
# runs, its reply is lost, redis-py sends it again), and hostile messages.


async def test_message_stranded_in_flight_by_a_lost_reply_is_routed_without_a_restart(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start()
    # A take ran in Redis but its reply was lost: the message sits in our in-flight list.
    inflight = runner.store.keys.prepare_inflight(runner.runner_id)
    await redis.lpush(inflight, json.dumps({"task": "true 1", "id": "stranded"}))
    await redis.lpush(QUEUE, json.dumps({"task": "true 2", "id": "after"}))
    await wait_state(runner.store, "after", "succeeded")
    await wait_state(runner.store, "stranded", "succeeded", timeout_s=5)
    assert await redis.llen(inflight) == 0


async def test_routing_repeated_after_a_lost_reply_neither_refuses_nor_dead_letters_twice(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start(task_mode=False)
    store, inflight = runner.store, runner.store.keys.prepare_inflight("r1")
    good, bad = b'{"task": "true", "id": "once"}', b"not json"
    for raw in (good, bad):
        await redis.lpush(inflight, raw)
    job = Job(id="once", task="true", channel="default")
    for _ in range(2):  # the second call is redis-py sending the same script again
        [admission] = await store.enqueue_many([(job, good)], runner_id="r1")
        assert admission.status != "duplicate"
        await store.dead_letter(raw=bad, reason="bad", runner_id="r1", source="t", cap=100)
    stats = await store.stats()
    assert stats.get("refused", 0) == 0 and stats["dead_letters"] == 1
    assert await redis.llen("task:dead_letters") == 1 and await redis.llen(inflight) == 0


@pytest.mark.parametrize("raw", [b"", b"[" * 100_000, b'{"a":' * 30_000 + b"1" + b"}" * 30_000])
async def test_empty_or_deeply_nested_message_is_dead_lettered_once(
    runners: RunnerHarness, redis: aioredis.Redis, raw: bytes
) -> None:
    runner = await runners.start()
    await redis.lpush(QUEUE, raw)
    await redis.lpush(QUEUE, json.dumps({"task": "true", "id": "after"}))
    await wait_state(runner.store, "after", "succeeded")
    assert (await runner.store.stats())["dead_letters"] == 1
    assert await redis.llen(runner.store.keys.prepare_inflight(runner.runner_id)) == 0
    await runners.stop(runner)  # nothing left to put back, and it stopped cleanly
    assert await redis.llen(QUEUE) == 0 and not runner.failed


async def test_a_note_in_the_message_is_kept_on_the_job(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start()
    message = {"task": "true", "chan": "biz", "id": "noted", "note": "from the PHP app"}
    await redis.lpush(QUEUE, json.dumps(message))
    record = await wait_state(runner.store, "noted", "succeeded")
    assert record.note == "from the PHP app"
