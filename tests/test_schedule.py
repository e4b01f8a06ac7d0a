"""Delayed jobs and retries wait in Redis and start when due."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.support.runners import RunnerHarness, stored_job, wait_state

pytestmark = pytest.mark.asyncio


async def test_delayed_job_waits_then_runs(runners: RunnerHarness, tmp_path: Path) -> None:
    runner = await runners.start()
    stamp = tmp_path / "ran"
    pushed = time.time()
    job = await runner.service.submit(
        {"task": "sh", "args": ["-c", f"date +%s.%N > {stamp}"], "delay": 0.5}, source="t"
    )
    assert (await stored_job(runner.store, job.job_id)).state == "scheduled"
    await wait_state(runner.store, job.job_id, "succeeded")
    assert float(stamp.read_text()) >= pushed + 0.5


async def test_delayed_jobs_survive_a_restart(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start()
    ids = [
        (
            await runner.service.submit({"task": f"echo {n}", "delay": 0.3 + n / 10}, source="t")
        ).job_id
        for n in range(3)
    ]
    await runners.stop(runner)
    assert await redis.zcard("task:scheduled:default") == 3
    runner = await runners.start()
    for job_id in ids:
        await wait_state(runner.store, job_id, "succeeded")


async def test_retry_intervals_give_the_documented_attempt_times(
    runners: RunnerHarness, tmp_path: Path
) -> None:
    # "60 600 3600" scaled down 1000x, with one more retry than intervals: the last repeats.
    runner = await runners.start()
    log = tmp_path / "attempts"
    job = await runner.service.submit(
        {
            "task": "sh",
            "args": ["-c", f"date +%s.%N >> {log}; exit 1"],
            "retries": 4,
            "retry_intervals": "0.06 0.6 1.2",
            "channel": "cron",
        },
        source="t",
    )
    record = await wait_state(runner.store, job.job_id, "dead", timeout_s=15)
    times = [float(t) for t in log.read_text().split()]
    assert len(times) == 5 and record.attempt == 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, interval in zip(gaps, [0.06, 0.6, 1.2, 1.2], strict=True):
        assert interval <= gap < interval + 0.5, gaps
    assert record.error == "exit code 1"


async def test_retry_then_success_releases_the_dedup_mark(
    runners: RunnerHarness, redis: aioredis.Redis, tmp_path: Path
) -> None:
    runner = await runners.start()
    flag = tmp_path / "second"
    task = f"test -e {flag} || (touch {flag}; exit 1)"
    job = await runner.service.submit(
        {"task": "sh", "args": ["-c", task], "retries": 1, "retry_intervals": [0.1]}, source="t"
    )
    record = await wait_state(runner.store, job.job_id, "succeeded")
    assert record.attempt == 2
    assert await redis.hlen("task:distinct:default") == 0
