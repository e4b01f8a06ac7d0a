"""The round-trip savers: coalesced enqueues, batched ingress, result + next claim together."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from taskrunner.errors import StoreRefusing, StoreUnavailable
from taskrunner.models import ChannelConfig
from taskrunner.parsing import job_from_fields
from taskrunner.store import Store
from taskrunner.store.errors import CONNECTION_ERRORS
from tests.support.net import free_port
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio


async def test_concurrent_submits_share_round_trips_and_keep_dedup_exact(
    runners: RunnerHarness,
) -> None:
    runner = await runners.start(task_mode=False)
    await runner.store.create_channel(ChannelConfig(name="dd", distinct=True))
    admissions = await asyncio.gather(
        *(
            runner.service.submit({"task": f"echo {n % 10}", "channel": "dd"}, source="t")
            for n in range(100)
        )
    )
    accepted = {a.job_id for a in admissions if a.accepted}
    assert len(accepted) == 10
    for n, admission in enumerate(admissions):
        holder = admissions[n % 10].job_id
        assert admission.job_id == holder, (n, admission)


async def test_coalesced_enqueue_fails_every_waiter_when_redis_is_away() -> None:
    store = Store.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    pending = [
        store.enqueue(
            job_from_fields({"task": f"echo {n}"}, default_channel="default", now=0.0),
            runner_id="t",
        )
        for n in range(5)
    ]
    results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 20)
    assert all(
        isinstance(r, StoreUnavailable)
        and not isinstance(r, StoreRefusing)
        and isinstance(r.__cause__, CONNECTION_ERRORS)
        for r in results
    ), results
    await store.close()


async def test_a_burst_is_routed_in_batches_in_order(
    runners: RunnerHarness, redis: aioredis.Redis, tmp_path: Path
) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="burst", worker_count=1))
    await wait_until(lambda: "burst" in runner.workers, message="the channel to reach the runner")
    log = tmp_path / "order"
    messages = [
        json.dumps({"task": "sh", "args": ["-c", f"echo {n} >> {log}"], "chan": "burst"})
        for n in range(250)
    ]
    messages.insert(120, "not json")  # a bad message in the middle of a batch
    await redis.lpush("task:prepare:queue", *messages)
    await wait_until(lambda: log.exists() and len(log.read_text().split()) == 250, 30)
    assert [int(n) for n in log.read_text().split()] == list(range(250))
    assert await redis.llen("task:dead_letters") == 1


async def test_results_and_claims_survive_a_script_cache_flush(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start()
    first = await runner.service.submit({"task": "sleep 0.3", "channel": "cron"}, source="t")
    second = await runner.service.submit({"task": "true", "channel": "cron"}, source="t")
    await wait_state(runner.store, first.job_id, "running")
    await redis.script_flush()
    await wait_state(runner.store, first.job_id, "succeeded")
    await wait_state(runner.store, second.job_id, "succeeded")


async def test_commands_packed_by_hiredis_keep_redis_py_s_rules(redis_url: str) -> None:
    """The store's connections pack commands in C: binary values, numbers, two-word command
    names and pipelines arrive as redis-py would send them; a value of a wrong type is refused
    with redis-py's DataError before anything is sent."""
    store = Store.from_url(redis_url)
    client = store.redis
    try:
        raw = b"\x00\r\n$3\r\n\xff binary"
        await client.set("pack:bytes", raw)
        assert await client.get("pack:bytes") == raw
        await client.set("pack:float", 1.5)
        await client.set("pack:text", "é ü")
        assert await client.mget("pack:float", "pack:text") == [b"1.5", "é ü".encode()]
        config = await client.execute_command("CONFIG GET", "maxmemory")  # sent as 2 words
        assert [bytes(k, "utf-8") if isinstance(k, str) else k for k in config] == [b"maxmemory"]
        async with client.pipeline(transaction=True) as pipe:
            pipe.incrby("pack:n", 2).incrby("pack:n", 3).get("pack:n")
            assert await pipe.execute() == [2, 5, b"5"]
        with pytest.raises(DataError):
            await client.set("pack:bad", None)  # type: ignore[arg-type]
        with pytest.raises(DataError):
            await client.set("pack:bad", True)  # type: ignore[arg-type]
        assert "pack_command" in vars(client.connection_pool.connection_class)  # ours, in use
    finally:
        await client.delete("pack:bytes", "pack:float", "pack:text", "pack:n")
        await store.close()
