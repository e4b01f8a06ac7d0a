"""Results, retries and due times: what the job record shows, and that Redis holds every timer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from taskrunner.models import ChannelConfig, JobQuery, JobState, parse_job_query
from taskrunner.parsing import job_from_fields
from taskrunner.scheduler import Scheduler
from taskrunner.store import Store
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio


async def test_due_jobs_start_in_due_order_each_once(
    runners: RunnerHarness, redis: aioredis.Redis, tmp_path: Path
) -> None:
    # Pushed in reverse order, due 40 ms apart: they must start in due order, each exactly once,
    # never before their due time. How late they are is a figure for scripts/bench, not a test.
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="due", worker_count=20))
    log = tmp_path / "starts"
    base = time.time() + 0.5
    count = 20
    for n in reversed(range(count)):
        await runner.service.submit(
            {
                "task": "sh",
                "args": ["-c", f"echo {n} $(date +%s.%N) >> {log}"],
                "run_at": base + n * 0.04,
                "channel": "due",
            },
            source="t",
        )
    await wait_until(lambda: log.exists() and len(log.read_text().split("\n")) > count, 10)
    rows = [line.split() for line in log.read_text().splitlines()]
    order = [int(n) for n, _ in rows]
    assert order == list(range(count))
    for n, started in rows:
        assert float(started) >= base + int(n) * 0.04
    assert await redis.zcard("task:scheduled:due") == 0


async def test_two_runners_never_start_one_due_job_twice(
    runners: RunnerHarness, redis: aioredis.Redis, tmp_path: Path
) -> None:
    first = await runners.start()
    await runners.start()
    await first.store.create_channel(ChannelConfig(name="both", worker_count=10))
    log = tmp_path / "runs"
    due = time.time() + 0.4
    jobs = [
        await first.service.submit(
            {"task": "sh", "args": ["-c", f"echo {n} >> {log}"], "run_at": due, "channel": "both"},
            source="t",
        )
        for n in range(30)
    ]
    for job in jobs:
        await wait_state(first.store, job.job_id, "succeeded")

    async def nothing_left_to_run() -> bool:  # so a second start would be in the log by now
        return await redis.exists("task:queue:both", "task:running:both") == 0

    await wait_until(nothing_left_to_run, message="channel both to be empty and idle")
    assert sorted(int(n) for n in log.read_text().split()) == list(range(30))


async def test_a_retrying_job_shows_its_last_attempt(runners: RunnerHarness) -> None:
    runner = await runners.start()
    job = await runner.service.submit(
        {"task": "sh", "args": ["-c", "echo try; exit 3"], "retries": 1, "retry_intervals": [5]},
        source="t",
    )
    record = await wait_state(runner.store, job.job_id, "retrying")
    assert record.exit_code == 3 and record.stdout == "try\n"
    assert record.error == "exit code 3" and record.attempt == 1
    assert record.due_at >= record.finished_at + 4.5


async def test_retries_survive_a_restart(runners: RunnerHarness, tmp_path: Path) -> None:
    runner = await runners.start()
    log = tmp_path / "attempts"
    job = await runner.service.submit(
        {"task": "sh", "args": ["-c", f"echo x >> {log}; exit 1"], "retry_intervals": "1 0.2"},
        source="t",
    )
    await wait_state(runner.store, job.job_id, "retrying")
    await runners.stop(runner)
    runner = await runners.start()
    record = await wait_state(runner.store, job.job_id, "dead", timeout_s=10)
    assert record.attempt == 3 and log.read_text().split() == ["x", "x", "x"]


async def test_channel_defaults_apply_and_jobs_override_them(runners: RunnerHarness) -> None:
    runner = await runners.start()
    await runner.store.create_channel(
        ChannelConfig(name="policy", timeout_s=0.3, retries=1, retry_intervals=(0.1,))
    )
    slow = await runner.service.submit({"task": "sleep 5", "channel": "policy"}, source="t")
    record = await wait_state(runner.store, slow.job_id, "dead", timeout_s=10)
    assert record.attempt == 2 and "timed out" in record.error
    once = await runner.service.submit(
        {"task": "sleep 5", "channel": "policy", "retries": 0, "timeout": 0.2}, source="t"
    )
    record = await wait_state(runner.store, once.job_id, "failed")
    assert record.attempt == 1


async def test_daily_counters_count_each_job_once_at_its_end(runners: RunnerHarness) -> None:
    runner = await runners.start()
    today = time.strftime("%Y-%m-%d")
    before = await runner.store.daily_counts(today)
    flaky = await runner.service.submit(
        {"task": "false", "retries": 2, "retry_intervals": [0.05], "channel": "cron"}, source="t"
    )
    good = await runner.service.submit({"task": "true", "channel": "cron"}, source="t")
    await wait_state(runner.store, flaky.job_id, "dead")
    await wait_state(runner.store, good.job_id, "succeeded")
    after = await runner.store.daily_counts(today)
    assert after.get("failed", 0) - before.get("failed", 0) == 1
    assert after.get("succeeded", 0) - before.get("succeeded", 0) == 1


async def test_records_expire_after_the_result_ttl_but_dead_jobs_stay(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start(result_ttl_s=1)
    ok = await runner.service.submit({"task": "true"}, source="t")
    dead = await runner.service.submit(
        {"task": "false", "retries": 1, "retry_intervals": [0.05]}, source="t"
    )
    await wait_state(runner.store, ok.job_id, "succeeded")
    await wait_state(runner.store, dead.job_id, "dead")
    assert 0 < await redis.ttl(f"task:job:{ok.job_id}") <= 1

    async def expired() -> bool:
        return await runner.store.get_job(ok.job_id) is None

    await wait_until(expired, 3)
    assert await redis.ttl(f"task:job:{dead.job_id}") == -1
    jobs, total = await runner.store.dead_jobs(offset=0, limit=10)
    assert total == 1 and jobs[0].id == dead.job_id and jobs[0].error == "exit code 1"


async def test_dead_job_retry_gives_a_new_budget_and_drop_removes_it(
    runners: RunnerHarness, tmp_path: Path
) -> None:
    runner = await runners.start()
    flag = tmp_path / "fixed"
    job = await runner.service.submit(
        {"task": "test", "args": ["-e", str(flag)], "retries": 1, "retry_intervals": [0.05]},
        source="t",
    )
    await wait_state(runner.store, job.job_id, "dead")
    flag.touch()
    await runner.service.retry_dead_job(job.job_id)
    record = await wait_state(runner.store, job.job_id, "succeeded")
    assert record.attempt == 1 and record.revived == 1
    assert (await runner.store.dead_jobs(offset=0, limit=10))[1] == 0

    flag.unlink()
    other = await runner.service.submit(
        {"task": "test", "args": ["-e", str(flag)], "retries": 1, "retry_intervals": [0.05]},
        source="t",
    )
    await wait_state(runner.store, other.job_id, "dead")
    await runner.service.drop_dead_job(other.job_id)
    assert await runner.store.get_job(other.job_id) is None
    assert (await runner.store.dead_jobs(offset=0, limit=10))[1] == 0


async def test_list_jobs_pages_by_state(runners: RunnerHarness) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="pages", paused=True))
    ids = [
        (await runner.service.submit({"task": f"echo {n}", "channel": "pages"}, source="t")).job_id
        for n in range(7)
    ]
    seen: list[str] = []
    cursor: str | None = ""
    while cursor is not None:
        query = parse_job_query({"channel": "pages", "state": "queued", "cursor": cursor}, limit=3)
        page, cursor = await runner.service.list_jobs(query)
        assert len(page) <= 3
        seen += [job.id for job in page]
    assert seen == ids[::-1]  # newest first
    query = JobQuery(channel="pages", state=JobState.RUNNING, limit=3)
    running, _ = await runner.service.list_jobs(query)
    assert running == []


async def test_a_job_scheduled_during_a_promotion_pass_is_not_missed(redis_url: str) -> None:
    # The timer fires for a job in "b". The pass reads "a" (empty), then, while it promotes "b",
    # a job due a little later lands in "a". The pass saw neither, and the new job's due time is
    # later than the timer that just fired: its wake-up must still make the scheduler re-read.
    store = Store.from_url(redis_url)
    for name in ("a", "b"):
        await store.create_channel(ChannelConfig(name=name))
    scheduler: Scheduler | None = None
    injected: list[str] = []
    real_promote = store.promote_due

    async def promote_due(channel: str, *, limit: int = 1000) -> tuple[int, float | None]:
        moved, next_due = await real_promote(channel, limit=limit)
        if channel == "b" and moved and not injected and scheduler is not None:
            job = job_from_fields(
                {"task": "true", "channel": "a", "delay": 0.3}, default_channel="a",
                now=time.time(),
            )  # fmt: skip
            await store.enqueue(job, runner_id="t")
            injected.append(job.id)
            scheduler.kick(job.run_at)  # what the schedule event does in a runner
        return moved, next_due

    store.promote_due = promote_due  # type: ignore[method-assign]
    first = job_from_fields(
        {"task": "true", "channel": "b", "delay": 0.2}, default_channel="b", now=time.time()
    )
    await store.enqueue(first, runner_id="t")
    scheduler = Scheduler(store, lambda: ["a", "b"])
    task = asyncio.create_task(scheduler.run())
    try:
        await wait_until(lambda: injected, 5)

        async def queued() -> bool:
            return bool(await store.redis.llen("task:queue:a") == 1)

        await wait_until(queued, 3, message="the job scheduled mid-pass to be queued")
    finally:
        scheduler.close()
        await task
        await store.close()
