"""Everyday stops and restarts: a clean stop is exact (issue 11).

A restart with a backlog must run the queued jobs in FIFO order, each as attempt 1, with no
"reply lost" hand-back: the faults here are ordinary ones (a Redis that forgot its scripts, a
stop that lands while a claim is on its way), not crashes.
"""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from taskrunner.jobs import ChannelConfig, Job, JobState
from taskrunner.store import Store

pytestmark = pytest.mark.asyncio


async def queued(store: Store, channel: str, *ids: str) -> None:
    await store.create_channel(ChannelConfig(name=channel, worker_count=1), exist_ok=True)
    for job_id in ids:
        await store.enqueue(Job(id=job_id, task="true", channel=channel), runner_id="test")


async def test_a_result_written_after_redis_forgot_its_scripts_claims_the_next_job_once(
    redis_url: str, redis: aioredis.Redis
) -> None:
    """A fresh Redis (the embedded Valkey restarted) knows only the scripts run since: the
    finish script fails with NOSCRIPT in the pipeline that also claims the next job. The retry
    must not claim again: the first claim ran, and its job would be owned but never started."""
    store = Store.from_url(redis_url)
    try:
        await queued(store, "one", "a", "b", "c")
        await store.register_runner("r1")
        [first] = await store.claim("one", count=1, runner_id="r1")
        await redis.script_flush()
        await store.claim("one", count=0, runner_id="r1")  # the claim script is known again
        recorded, successors = await store.finish(
            first,
            runner_id="r1",
            state=JobState.SUCCEEDED,
            result={"exit_code": "0"},
            result_ttl_s=60,
            claim_next=1,
        )
        assert recorded
        assert [s.job.id for s in successors] == ["b"]
        assert [s.attempt for s in successors] == [1]
        assert await store.runner_job_channels("r1") == {"b": "one"}
        assert (await store.get_job("c") or {}).get("state") == "queued"
    finally:
        await store.close()


async def test_a_job_claimed_but_never_started_goes_back_first_with_its_attempt_uncounted(
    redis_url: str,
) -> None:
    """A claim that lands as the runner stops (or whose reply was lost) is not an attempt."""
    store = Store.from_url(redis_url)
    try:
        await queued(store, "one", "a", "b")
        await store.register_runner("r1")
        [claimed] = await store.claim("one", count=1, runner_id="r1")
        outcome = await store.hand_back(
            runner_id="r1", job_id="a", channel="one", reason="drain", started=False
        )
        assert outcome == "handed_back"
        record = await store.get_job("a") or {}
        assert (record.get("state"), record.get("attempt"), record.get("handed_back")) == (
            "queued",
            "0",
            None,
        )
        [again] = await store.claim("one", count=1, runner_id="r1")
        assert (again.job.id, again.attempt) == ("a", claimed.attempt)
    finally:
        await store.close()


async def test_a_cancel_is_not_lost_with_its_runner(redis_url: str) -> None:
    """Cancel a running job, then its runner dies: the hand-back ends it `cancelled` instead
    of running it again from the start."""
    store = Store.from_url(redis_url)
    try:
        await queued(store, "one", "a")
        await store.register_runner("r1")
        await store.claim("one", count=1, runner_id="r1")
        assert await store.cancel("a", result_ttl_s=60) == "running"
        outcome = await store.hand_back(
            runner_id="r1", job_id="a", channel="one", reason="runner lost"
        )
        assert outcome == "cancelled"
        record = await store.get_job("a") or {}
        assert record.get("state") == "cancelled"
        assert "runner lost" in record.get("error", "")
        assert await store.claim("one", count=1, runner_id="r1") == []
        assert (await store.daily_counts(time.strftime("%Y-%m-%d"))).get("cancelled") == 1
    finally:
        await store.close()
