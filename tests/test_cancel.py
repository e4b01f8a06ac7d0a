"""Cancel queued, scheduled and running jobs; wait for results through pub/sub."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from taskrunner.errors import JobNotFound
from taskrunner.models import ChannelConfig
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio


async def test_cancel_running_job_kills_its_group(runners: RunnerHarness, tmp_path: Path) -> None:
    runner = await runners.start()
    pids = tmp_path / "pids"
    job = await runner.service.submit(
        {"task": "sh", "args": ["-c", f"sleep 30 & echo $$ > {pids}; wait"], "retries": 3},
        source="t",
    )
    await wait_state(runner.store, job.job_id, "running")

    await wait_until(lambda: pids.exists() and pids.read_text().strip() != "")
    assert await runner.service.cancel(job.job_id) == "running"
    record = await wait_state(runner.store, job.job_id, "cancelled")
    assert record.attempt == 1  # no retry after a cancel
    with pytest.raises(ProcessLookupError):
        os.killpg(int(pids.read_text()), 0)


async def test_cancel_scheduled_job_means_it_never_runs(
    runners: RunnerHarness, redis: aioredis.Redis, tmp_path: Path
) -> None:
    runner = await runners.start()
    marker = tmp_path / "ran"
    job = await runner.service.submit(
        {"task": "touch", "args": [str(marker)], "delay": 0.4}, source="t"
    )
    assert await runner.service.cancel(job.job_id) == "cancelled"
    later = await runner.service.submit({"task": "echo later", "delay": 0.6}, source="t")
    await wait_state(runner.store, later.job_id, "succeeded")  # the due time has passed
    assert not marker.exists()
    assert await redis.zcard("task:scheduled:default") == 0
    assert await redis.hlen("task:distinct:default") == 0  # its dedup mark was released


async def test_cancel_queued_job_and_errors(runners: RunnerHarness, redis: aioredis.Redis) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="held", paused=True))
    job = await runner.service.submit({"task": "true", "channel": "held"}, source="t")
    assert await runner.service.cancel(job.job_id) == "cancelled"
    assert await redis.llen("task:queue:held") == 0
    assert await runner.service.cancel(job.job_id) == "cancelled"  # already final: says so
    with pytest.raises(JobNotFound):
        await runner.service.cancel("no-such-job")


async def test_wait_final_returns_as_soon_as_the_job_ends(runners: RunnerHarness) -> None:
    runner = await runners.start()
    job = await runner.service.submit({"task": "sleep", "args": ["0.5"]}, source="t")
    started = time.monotonic()
    record = await runner.store.wait_final(job.job_id, timeout_s=10)
    waited = time.monotonic() - started
    assert record is not None and record.state == "succeeded"
    assert waited >= 0.45  # it waited for the job, not for a polling tick


async def test_wait_final_times_out_with_the_live_record(runners: RunnerHarness) -> None:
    runner = await runners.start()
    job = await runner.service.submit({"task": "sleep", "args": ["5"]}, source="t")
    record = await asyncio.wait_for(runner.store.wait_final(job.job_id, timeout_s=0.3), 5)
    assert record is not None and record.state in ("queued", "running")
