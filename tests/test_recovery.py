"""Recovery when a live runner is declared dead: its heartbeat came later than the lease (an
overloaded host, a long pause), so another runner hands its jobs back while it still runs.

Found by scripts/chaos (scenario 1 on a saturated 2-core machine): jobs stayed `running` for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from taskrunner.models import ChannelConfig, Job
from taskrunner.runner import Runner
from taskrunner.store import Store
from tests.support.runners import RunnerHarness, make_settings, stored_job
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio

SLOW = "slow-host:1:abcdef"  # a runner that is alive, but whose heartbeat is late


@pytest.fixture
async def judge(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[Runner]:
    """A runner object (not started: no loops of its own) to call recover_dead_runners on."""
    runner = Runner(make_settings(redis_url, lease_s=1.0), Store.from_url(redis_url))
    await runner.store.create_channel(ChannelConfig(name="work"))
    await runner.store.register_runner(runner.runner_id)
    try:
        yield runner
    finally:
        await runner.store.close()


async def enqueue(store: Store, *ids: str) -> None:
    for job_id in ids:
        await store.enqueue(Job(id=job_id, task="true", channel="work"), runner_id="test")


async def slow_runner_holds(store: Store, *, queued: tuple[str, ...] = ()) -> None:
    """SLOW registers and claims job "a"; the `queued` jobs wait behind it."""
    await enqueue(store, "a", *queued)
    await store.register_runner(SLOW)
    assert [c.job.id for c in await store.claim("work", count=1, runner_id=SLOW)] == ["a"]


async def test_claims_of_a_runner_declared_dead_are_refused_so_no_job_is_left_running(
    judge: Runner, redis: aioredis.Redis
) -> None:
    store = judge.store
    await slow_runner_holds(store, queued=("b",))
    await redis.zadd(store.keys.runners, {SLOW: 0})  # its last beat is long past the lease

    snapshot = store.runner_job_channels

    async def claim_meanwhile(runner_id: str) -> dict[str, str]:
        jobs = await snapshot(runner_id)
        await store.claim("work", count=1, runner_id=SLOW)  # the slow runner goes on claiming
        return jobs

    store.runner_job_channels = claim_meanwhile  # type: ignore[method-assign]
    await judge.liveness.recover_dead_runners()

    assert (await stored_job(store, "a")).state == "queued"  # handed back
    b = await stored_job(store, "b")
    held = {m.decode() for m in await redis.smembers(store.keys.runner_jobs(SLOW))}
    # Either its claim was refused, or the job is still held where a recovery can find it.
    assert b.state == "queued" or "b" in held, (b, held)
    assert not await store.heartbeat(SLOW)  # it learns it was declared dead: it stops its jobs
    await store.register_runner(SLOW)  # and rejoins, claiming again
    assert [c.job.id for c in await store.claim("work", count=2, runner_id=SLOW)] == ["a", "b"]


async def test_a_runner_that_beats_again_before_the_verdict_keeps_its_jobs(
    judge: Runner, redis: aioredis.Redis
) -> None:
    store = judge.store
    await slow_runner_holds(store)

    async def stale_then_beat(*, lease_s: float) -> list[str]:
        await redis.zadd(store.keys.runners, {SLOW: 0})
        stale = await Store.stale_runners(store, lease_s=lease_s)
        assert await store.heartbeat(SLOW)  # its late beat lands before the verdict
        return stale

    store.stale_runners = stale_then_beat  # type: ignore[method-assign]
    assert await judge.liveness.recover_dead_runners() == 0
    job = await stored_job(store, "a")
    assert (job.state, job.runner) == ("running", SLOW)
    assert await store.heartbeat(SLOW)


async def after_a_hang(judge: Runner, redis: aioredis.Redis) -> Store:
    """SLOW holds job "a"; then Redis hung: no liveness call of anyone landed for long."""
    store = judge.store
    await slow_runner_holds(store)
    await redis.zadd(store.keys.runners, {SLOW: 0, judge.runner_id: 0})
    await redis.hset(store.keys.liveness, "last_beat", 0)
    return store


async def test_after_redis_hung_nobody_is_declared_dead_for_a_lease(
    judge: Runner, redis: aioredis.Redis
) -> None:
    # Found by scripts/chaos (Redis SIGSTOPped for 10 s): no beat landed meanwhile, so when it
    # woke up every runner looked dead to the first runner whose recovery query ran.
    store = await after_a_hang(judge, redis)
    assert await store.heartbeat(judge.runner_id, lease_s=1.0)  # the first beat after it
    assert await judge.liveness.recover_dead_runners() == 0  # SLOW gets a lease to beat again
    assert (await stored_job(store, "a")).state == "running"
    await redis.hset(store.keys.liveness, "judge_after", 0)  # a lease later, SLOW still silent
    assert await judge.liveness.recover_dead_runners() == 1
    assert (await stored_job(store, "a")).state == "queued"


async def test_after_redis_hung_a_recovery_query_served_before_any_beat_judges_nobody(
    judge: Runner, redis: aioredis.Redis
) -> None:
    # Found by the chaos smoke run in CI: after a SIGSTOP, one runner's recovery query reached
    # Redis before any runner's beat (a beat on a new connection waits for its handshake).
    store = await after_a_hang(judge, redis)
    assert await judge.liveness.recover_dead_runners() == 0  # the first call after it: no verdict
    assert (await stored_job(store, "a")).state == "running"
    assert await store.heartbeat(SLOW, lease_s=1.0)  # SLOW's beat lands a little later
    await redis.hset(store.keys.liveness, "judge_after", 0)
    assert await judge.liveness.recover_dead_runners() == 0  # it beat in time: it keeps its job


async def test_a_job_handed_back_and_claimed_again_between_two_audits_is_not_an_orphan(
    judge: Runner, redis: aioredis.Redis
) -> None:
    # Found by scripts/chaos (scenario 2): after a false verdict, a job was handed back, claimed
    # again by the same runner, and its audit took the new claim (its reply on the way) for the
    # old one: it handed the job back once more, and two runners ran it.
    store, me = judge.store, judge.runner_id
    await enqueue(store, "a")
    await store.claim("work", count=1, runner_id=me)  # a claim whose reply never came
    await judge.liveness._audit_owned_jobs()  # "a" looks orphaned once
    await store.hand_back(runner_id=me, job_id="a", channel="work", reason="runner lost")
    [again] = await store.claim("work", count=1, runner_id=me)  # its reply is on the way
    await judge.liveness._audit_owned_jobs()  # a new claim: not the one seen before
    job = await stored_job(store, "a")
    assert (job.state, job.attempt, again.attempt) == ("running", 2, 2)
    await judge.liveness._audit_owned_jobs()  # seen twice and still not started here: handed back
    assert (await stored_job(store, "a")).state == "queued"


async def test_a_slow_audit_does_not_hold_up_the_heartbeat(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    # Found by scripts/chaos (scenario 2): after Redis came back, a runner's audit of its jobs
    # took seconds of round trips, its heartbeat waited behind it, and it was declared dead.
    runner = await runners.start(lease_s=1.0)
    audits = 0

    async def slow_audit(runner_id: str) -> dict[str, str]:
        nonlocal audits
        audits += 1
        await asyncio.sleep(3.0)
        return {}

    runner.store.runner_job_channels = slow_audit  # type: ignore[method-assign]
    await wait_until(lambda: audits > 0, message="an audit to start")
    for _ in range(8):  # two leases: every beat still lands within the lease
        await asyncio.sleep(0.25)
        seconds, micros = await redis.time()
        last_beat_ms = await redis.zscore(runner.store.keys.runners, runner.runner_id)
        assert seconds * 1000 + micros / 1000 - (last_beat_ms or 0) < 1000
