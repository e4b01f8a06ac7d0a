"""Channels at work: worker limits, FIFO, dedup, live changes, timeouts, Redis outages."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from msgspec import UNSET

from taskrunner.config import Settings
from taskrunner.models import ChannelConfig
from taskrunner.store import Store
from tests.support.http import http
from tests.support.redis_servers import RedisServer, server_binary
from tests.support.runners import RunnerHarness, log_lines, stored_job, wait_state
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio


def max_overlap(lines: list[list[str]]) -> int:
    running = peak = 0
    for word, *_ in lines:
        running += 1 if word == "start" else -1
        peak = max(peak, running)
    return peak


async def test_worker_count_limits_concurrency(runners: RunnerHarness, tmp_path: Path) -> None:
    runner = await runners.start(shell=True)
    await runner.store.create_channel(ChannelConfig(name="two", worker_count=2))
    log = tmp_path / "log"
    ids = []
    for n in range(6):
        _, body = await http(runner, "POST", "/push", data={
            "task": f"echo start {n} >> {log}; sleep 0.3; echo end {n} >> {log}", "channel": "two",
        })  # fmt: skip
        ids.append(body["data"]["id"])
    for job_id in ids:
        await wait_state(runner.store, job_id, "succeeded")
    lines = log_lines(log)
    assert len(lines) == 12
    assert max_overlap(lines) == 2


async def test_fifo_within_a_channel(runners: RunnerHarness, tmp_path: Path) -> None:
    runner = await runners.start(task_mode=False)
    await runner.store.create_channel(ChannelConfig(name="line", worker_count=1))
    log = tmp_path / "order"
    for n in range(8):
        await http(runner, "POST", "/push", json={
            "task": "sh", "args": ["-c", f"echo {n} >> {log}"], "channel": "line", "id": f"j{n}",
        })  # fmt: skip
    await runners.stop(runner)
    runner = await runners.start()
    await wait_state(runner.store, "j7", "succeeded")
    assert log.read_text().split() == [str(n) for n in range(8)]


async def test_distinct_refuses_live_duplicates_and_releases_at_end(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start()
    service = runner.service
    first = await service.submit({"task": "sleep 0.5", "channel": "cron"}, source="test")
    again = await service.submit({"task": "sleep 0.5", "channel": "cron"}, source="test")
    other = await service.submit({"task": "sleep 0.6", "channel": "cron"}, source="test")
    assert first.accepted and not again.accepted and other.accepted
    assert again.job_id == first.job_id
    await wait_state(runner.store, first.job_id, "succeeded")
    assert await redis.hget("task:distinct:cron", json.dumps(["sleep", "0.5"])) is None
    assert (await service.submit({"task": "sleep 0.5", "channel": "cron"}, source="test")).accepted


async def test_non_distinct_channel_accepts_duplicates(runners: RunnerHarness) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="loose", distinct=False))
    a = await runner.service.submit({"task": "sleep 0.2", "channel": "loose"}, source="test")
    b = await runner.service.submit({"task": "sleep 0.2", "channel": "loose"}, source="test")
    assert a.accepted and b.accepted and a.job_id != b.job_id


async def test_a_known_id_answers_that_job_and_creates_nothing(runners: RunnerHarness) -> None:
    """A push retried with its id (the first one landed) runs the job once: live or ended."""
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="loose"))
    a = await runner.service.submit(
        {"task": "sleep 0.3", "channel": "loose", "id": "x1"}, source="t"
    )
    b = await runner.service.submit(
        {"task": "echo other", "channel": "loose", "id": "x1"}, source="t"
    )
    assert (a.status, b.status, b.job_id) == ("ok", "exists", "x1") and b.accepted
    await wait_state(runner.store, "x1", "succeeded")
    c = await runner.service.submit(
        {"task": "echo again", "channel": "loose", "id": "x1"}, source="t"
    )
    assert c.status == "exists"  # within its result TTL the id still names that job
    record = await stored_job(runner.store, "x1")
    assert (record.task, record.state, record.attempt) == ("sleep 0.3", "succeeded", 1)


async def test_channel_created_elsewhere_is_used_within_a_second(
    runners: RunnerHarness, redis_url: str
) -> None:
    runner = await runners.start()
    other = Store.from_url(redis_url)  # as another runner process or the CLI would
    try:
        await other.create_channel(ChannelConfig(name="fresh", worker_count=1))
        job = await runner.service.submit({"task": "true", "channel": "fresh"}, source="t")
        await wait_state(runner.store, job.job_id, "succeeded", timeout_s=1.5)
        # a stored change without any pub/sub message is picked up by the periodic reload
        await other.redis.hset(
            "task:channels", "fresh", ChannelConfig(name="fresh", worker_count=4).to_json()
        )
        await wait_until(lambda: runner.workers["fresh"].config.worker_count == 4, timeout_s=1.5)
    finally:
        await other.close()


async def test_upstream_channel_layout_loads(runners: RunnerHarness, redis: aioredis.Redis) -> None:
    await redis.hset(
        "task:channels", "legacy", '{"name":"legacy","distinct":false,"worker_count":3}'
    )
    runner = await runners.start()
    assert runner.workers["legacy"].config.worker_count == 3
    assert sorted(runner.workers) == ["biz", "cron", "default", "legacy"]


async def test_default_biz_and_cron_are_ensured_on_every_start_when_missing(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    """As upstream (channel.go) does on each start, not only when the hash is empty."""
    await redis.hset("task:channels", "default", '{"name":"default","worker_count":2}')
    await redis.hset("task:channels", "mail", '{"name":"mail","worker_count":1}')
    runner = await runners.start()
    assert sorted(runner.workers) == ["biz", "cron", "default", "mail"]
    stored = json.loads(await redis.hget("task:channels", "biz") or b"{}")
    assert stored["distinct"] is True and stored["worker_count"] == runner.settings.concurrent
    assert runner.workers["default"].config.worker_count == 2  # an existing one is kept as is


async def test_no_default_channels_keeps_biz_and_cron_deleted(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    """`--no-default-channels`: an operator deleted biz and cron on purpose; `default` is
    still ensured (jobs that name no channel go there)."""
    await redis.hset("task:channels", "mail", '{"name":"mail","worker_count":1}')
    runner = await runners.start(default_channels=False)
    assert sorted(runner.workers) == ["default", "mail"]
    status, body = await http(runner, "POST", "/push", data={"task": "true", "channel": "biz"})
    assert status == 404 and "does not exist" in body["message"], body
    assert await redis.hexists("task:channels", "biz") == 0


async def test_timeout_kills_the_whole_group(runners: RunnerHarness, tmp_path: Path) -> None:
    runner = await runners.start()
    pids = tmp_path / "pids"
    job = await runner.service.submit(
        {
            "task": "sh",
            "args": ["-c", f"sleep 30 & echo $! > {pids}; echo $$ >> {pids}; wait"],
            "timeout": 0.5,
        },
        source="t",
    )
    record = await wait_state(runner.store, job.job_id, "failed")
    assert "timed out after 0.5 s" in record.error
    assert record.signal == signal.SIGTERM
    grandchild, leader = (int(p) for p in pids.read_text().split())
    for pid in (grandchild, leader):
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )
    with pytest.raises(ProcessLookupError):
        os.killpg(leader, 0)


async def test_result_record(runners: RunnerHarness) -> None:
    runner = await runners.start(capture_bytes=100)
    job = await runner.service.submit(
        {"task": "sh", "args": ["-c", "seq 1 1000; echo oops >&2; exit 3"]}, source="t"
    )
    record = await wait_state(runner.store, job.job_id, "failed")
    assert record.exit_code == 3 and record.error == "exit code 3"
    assert record.stdout_truncated is True and len(record.stdout) <= 100
    assert record.stdout.startswith("1\n2\n") and record.stdout.endswith("999\n1000\n")
    assert record.stderr == "oops\n" and record.stderr_truncated is False
    assert record.duration > 0 and record.attempt == 1
    assert record.finished_at >= record.started_at >= record.created_at


async def test_redis_lost_while_running_loses_nothing(
    runners: RunnerHarness, tmp_path: Path
) -> None:
    binary = server_binary("redis") or server_binary("valkey")
    assert binary is not None
    server = RedisServer(
        "redis" if server_binary("redis") else "valkey", binary, tmp_path / "aof", appendonly=True
    )
    server.start()
    try:
        harness = RunnerHarness(server.url)
        runner = await harness.start()
        try:
            done = tmp_path / "done"
            job = await runner.service.submit(
                {"task": "sh", "args": ["-c", f"sleep 1; touch {done}"]}, source="t"
            )
            await wait_state(runner.store, job.job_id, "running")
            server.stop()
            await wait_until(done.exists, message="the job to keep running while Redis is away")
            server.start()
            await wait_state(runner.store, job.job_id, "succeeded", timeout_s=15)
            later = await runner.service.submit({"task": "echo after"}, source="t")
            await wait_state(runner.store, later.job_id, "succeeded", timeout_s=15)
        finally:
            await harness.stop_all()
    finally:
        server.stop()


async def test_settings_default_is_upstream(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url)
    assert (settings.concurrent, settings.http_addr, settings.channel_default) == (
        5,
        "127.0.0.1:60001",
        "default",
    )


async def test_claim_whose_reply_was_lost_is_handed_back(runners: RunnerHarness) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="held", paused=True))
    job = await runner.service.submit({"task": "echo hi", "channel": "held"}, source="t")
    # The claim runs in Redis on the runner's behalf, but the runner never hears the reply.
    [claimed] = await runner.store.claim("held", count=1, runner_id=runner.runner_id)
    assert claimed.job.id == job.job_id
    await runner.store.put_channel(ChannelConfig(name="held", paused=False))
    record = await wait_state(runner.store, job.job_id, "succeeded")
    assert record.attempt == 1 and record.handed_back is UNSET  # it never started


async def test_paused_channel_holds_jobs_until_resumed(runners: RunnerHarness) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="p", paused=True))
    job = await runner.service.submit({"task": "echo hi", "channel": "p"}, source="t")
    await wait_until(lambda: "p" in runner.workers and runner.workers["p"].config.paused)
    assert (await stored_job(runner.store, job.job_id)).state == "queued"
    await runner.store.put_channel(ChannelConfig(name="p"))
    await wait_state(runner.store, job.job_id, "succeeded")
