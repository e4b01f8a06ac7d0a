"""Redis that answers but refuses (issue 12): out of memory, a long script (BUSY), a failed
snapshot (MISCONF), a replica after a failover (READONLY), loading its data (LOADING); and Redis
that lost its data (FLUSHALL, a restart without persistence).

Each refusal used to kill the loop that met it, and with it the runner (exit 1); a runner started
while Redis was out of memory exited 1 at once. Now every loop treats them as "Redis unavailable":
it logs once, backs off and retries; running jobs go on and their results are written when Redis
serves again. After a data loss the default channels used to stay gone, every new message was
dead-lettered as `unknown channel 'default'`, until a restart; now they are ensured again."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis
from redis import exceptions as redis_errors

from taskrunner.errors import StoreError, StoreRefusing, StoreUnavailable
from taskrunner.runner import Runner
from taskrunner.store import Keys, Store
from taskrunner.store.errors import translated
from tests.support.http import http
from tests.support.net import HOST, free_port
from tests.support.redis_servers import RedisServer
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio

QUEUE = Keys().prepare_queue
LEASE_S = 3.0  # long enough that a refusal of a second or two declares nobody lost


async def push(redis: aioredis.Redis, job_id: str, task: str, **fields: object) -> None:
    await redis.lpush(QUEUE, json.dumps({"task": task, "id": job_id, **fields}))


def until_exists(path: Path) -> str:
    """A job's command line that runs until `path` exists: the test decides when it ends."""
    return f"sh -c 'until [ -e {path} ]; do sleep 0.02; done'"


async def test_redis_errors_become_taskrunner_s_own_with_what_callers_decide_on() -> None:
    oom = translated(redis_errors.OutOfMemoryError("OOM command not allowed"))
    assert isinstance(oom, StoreRefusing) and oom.out_of_reach and not oom.pool_exhausted
    assert str(oom) == oom.detail == "out of memory (maxmemory reached): OOM command not allowed"
    replica = translated(redis_errors.ReadOnlyError("You can't write against a replica."))
    assert isinstance(replica, StoreRefusing) and not replica.out_of_reach  # only ours
    pool = translated(redis_errors.MaxConnectionsError("Too many connections"))
    assert type(pool) is StoreUnavailable and pool.pool_exhausted and not pool.out_of_reach
    down = translated(redis_errors.ConnectionError("Error 111 connecting to h:1. Refused."))
    assert type(down) is StoreUnavailable and down.out_of_reach and not down.pool_exhausted
    assert (str(down), down.detail) == (
        "out of reach (ConnectionError)",
        "Error 111 connecting to h:1. Refused.",
    )
    wrong = translated(redis_errors.ResponseError("WRONGTYPE Operation against a key"))
    assert type(wrong) is StoreError and str(wrong) == "WRONGTYPE Operation against a key"


async def test_a_store_operation_raises_store_unavailable_chained_to_redis_s_error() -> None:
    store = Store.from_url(f"redis://{HOST}:{free_port()}/0")  # nothing listens there
    try:
        with pytest.raises(StoreUnavailable, match=r"^out of reach \(ConnectionError\)$") as info:
            await store.get_job("any")
        assert isinstance(info.value.__cause__, redis_errors.ConnectionError)
        with pytest.raises(StoreUnavailable):
            async with store.subscribe(store.keys.job_events):
                pass
    finally:
        await store.close()


def assert_alive(runner: Runner) -> None:
    assert not runner.failed, "a loop of the runner failed"
    assert not runner.stop_requested.is_set(), "the runner began to stop"
    assert all(not loop.done() for loop in runner._loops), runner._loops


async def logged(caplog: pytest.LogCaptureFixture, text: str, *, timeout_s: float = 10.0) -> None:
    await wait_until(lambda: text in caplog.text, timeout_s=timeout_s, message=repr(text))


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="taskrunner")


@asynccontextmanager
async def out_of_memory(redis: aioredis.Redis) -> AsyncIterator[None]:
    """maxmemory below what Redis uses, and no eviction: every write is refused with OOM."""
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", "1")
    try:
        yield
    finally:
        await redis.config_set("maxmemory", "0")


@pytest.fixture
def lone_server(redis_server: RedisServer, tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the session's kind for this test alone (it may be broken on purpose)."""
    server = RedisServer(redis_server.kind, redis_server.binary, tmp_path / "lone")
    server.start()
    try:
        yield server
    finally:
        server.kill()


# -- refusals while running --------------------------------------------------------------------


async def test_out_of_memory_is_ridden_out_and_the_result_lands(
    runners: RunnerHarness,
    redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    runner = await runners.start(lease_s=LEASE_S)
    await push(redis, "during", until_exists(tmp_path / "end"))
    await wait_state(runner.store, "during", "running")
    async with out_of_memory(redis):
        (tmp_path / "end").touch()  # its result may land: finish.lua frees memory first
        await logged(caplog, "cannot send heartbeat")
        await logged(caplog, "cannot take from the prepare queue")
        status, body = await http(runner, "POST", "/push", data={"task": "true"})
        assert status == 503, body
        assert "out of memory" in body["message"], body
        assert_alive(runner)
    record = await wait_state(runner.store, "during", "succeeded")
    assert record.attempt == 1
    await push(redis, "after", "true")
    await wait_state(runner.store, "after", "succeeded")
    assert_alive(runner)


async def test_a_busy_script_is_ridden_out_and_the_result_lands(
    runners: RunnerHarness,
    redis: aioredis.Redis,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    runner = await runners.start(lease_s=LEASE_S)
    await redis.config_set("lua-time-limit", "100")  # BUSY after 0.1 s instead of 5 s
    await push(redis, "during", until_exists(tmp_path / "end"))
    await wait_state(runner.store, "during", "running")
    script = "local t = redis.call('TIME')[1] + 2 while redis.call('TIME')[1] + 0 < t do end"
    busy = threading.Thread(target=_eval, args=(redis_url, script))
    busy.start()
    try:
        await logged(caplog, "busy running a script")
        (tmp_path / "end").touch()
        await logged(caplog, "cannot record the result of job during")
    finally:
        await asyncio.to_thread(busy.join)
        await redis.config_set("lua-time-limit", "5000")
    record = await wait_state(runner.store, "during", "succeeded")
    assert record.attempt == 1
    await push(redis, "after", "true")
    await wait_state(runner.store, "after", "succeeded")
    assert_alive(runner)


def _eval(url: str, script: str) -> None:
    with SyncRedis.from_url(url) as client:
        client.eval(script, 0)


async def test_writes_refused_by_a_failed_snapshot_are_ridden_out(
    lone_server: RedisServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    harness = RunnerHarness(lone_server.url)
    redis = aioredis.Redis.from_url(lone_server.url)
    try:
        runner = await harness.start(lease_s=LEASE_S)
        await push(redis, "during", until_exists(tmp_path / "end"))
        await wait_state(runner.store, "during", "running")
        shutil.rmtree(lone_server.dir)  # the snapshot cannot be written: MISCONF from now on
        await redis.config_set("save", "3600 1")
        await redis.bgsave()
        await logged(caplog, "unable to persist to disk")
        (tmp_path / "end").touch()
        await logged(caplog, "cannot record the result of job during")
        assert_alive(runner)
        await redis.config_set("save", "")
        await redis.config_set("stop-writes-on-bgsave-error", "no")
        record = await wait_state(runner.store, "during", "succeeded")
        assert record.attempt == 1
        assert_alive(runner)
    finally:
        await harness.stop_all()
        await redis.aclose()


async def test_a_failover_that_left_it_on_a_replica_is_ridden_out(
    runners: RunnerHarness,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    lone_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    runner = await runners.start(lease_s=LEASE_S)
    await push(redis, "during", until_exists(tmp_path / "end"))
    await wait_state(runner.store, "during", "running")
    other = aioredis.Redis.from_url(lone_server.url)
    try:
        # A failover: the other server takes the data and becomes the primary; ours, a replica.
        await other.replicaof(HOST, redis_server.port)
        await wait_until(lambda: _in_sync(other), message="the other server to take the data")
        await other.replicaof("NO", "ONE")
        await redis.replicaof(HOST, lone_server.port)
        await logged(caplog, "read only replica")
        (tmp_path / "end").touch()
        await logged(caplog, "cannot record the result of job during")
        assert_alive(runner)
        await redis.replicaof("NO", "ONE")  # and back again
    finally:
        await redis.replicaof("NO", "ONE")
        await other.aclose()
    record = await wait_state(runner.store, "during", "succeeded")
    assert record.attempt == 1
    assert_alive(runner)


async def _in_sync(client: aioredis.Redis) -> bool:
    info = await client.info("replication")
    return bool(info.get("master_link_status") == "up")


# -- refusals at start -------------------------------------------------------------------------


async def test_a_runner_started_while_redis_is_out_of_memory_waits_for_it(
    runners: RunnerHarness, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async with out_of_memory(redis):
        starting = asyncio.create_task(runners.start(lease_s=LEASE_S))
        await logged(caplog, "out of memory")
        assert not starting.done()
    runner = await asyncio.wait_for(starting, timeout=10.0)
    await push(redis, "first", "true")
    await wait_state(runner.store, "first", "succeeded")
    assert_alive(runner)


async def test_a_runner_started_while_redis_loads_its_data_waits_for_it(
    lone_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    with SyncRedis.from_url(lone_server.url) as client:
        for start in range(0, 20_000, 5_000):
            client.mset({f"filler:{i}": "x" for i in range(start, start + 5_000)})
        client.save()
    lone_server.stop()
    # Start without waiting for PING: it answers LOADING for about two seconds.
    lone_server.extra_args = (
        "--dbfilename", "dump.rdb", "--key-load-delay", "100",
        "--loading-process-events-interval-bytes", "1024",
    )  # fmt: skip
    loading = asyncio.create_task(asyncio.to_thread(lone_server.start))
    harness = RunnerHarness(lone_server.url)
    try:
        await wait_until(lambda: _listens(lone_server.port), message="the server to listen")
        starting = asyncio.create_task(harness.start(lease_s=LEASE_S))
        await logged(caplog, "loading")
        runner = await asyncio.wait_for(starting, timeout=20.0)
        await loading
        async with aioredis.Redis.from_url(lone_server.url) as redis:
            await push(redis, "first", "true")
        await wait_state(runner.store, "first", "succeeded")
        assert_alive(runner)
    finally:
        await asyncio.gather(loading, return_exceptions=True)
        await harness.stop_all()


def _listens(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1.0).close()
    except OSError:
        return False
    return True


# -- data loss ---------------------------------------------------------------------------------


async def test_after_a_flushall_the_default_channels_come_back_and_no_message_is_refused(
    runners: RunnerHarness, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    runner = await runners.start(lease_s=LEASE_S)
    await push(redis, "before", "true")
    await wait_state(runner.store, "before", "succeeded")
    await redis.flushall()
    await push(redis, "default", "true")
    await push(redis, "biz", "true", chan="biz")
    await wait_state(runner.store, "default", "succeeded")
    await wait_state(runner.store, "biz", "succeeded")
    status, body = await http(runner, "POST", "/push", data={"task": "true", "channel": "cron"})
    assert status == 200, body
    assert await redis.llen(Keys().dead_letters) == 0, await redis.lrange(
        Keys().dead_letters, 0, -1
    )
    await logged(caplog, "Redis lost its data")
    assert caplog.text.count("Redis lost its data") == 1
    assert "no new jobs will start here" not in caplog.text
    assert_alive(runner)


async def test_after_a_restart_without_persistence_new_jobs_run(
    runners: RunnerHarness, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    runner = await runners.start(lease_s=LEASE_S)
    await asyncio.to_thread(redis_server.restart)  # no AOF, no RDB: it comes back empty
    async with aioredis.Redis.from_url(redis_server.url) as redis:
        await push(redis, "after", "true")
        await wait_state(runner.store, "after", "succeeded")
        assert await redis.llen(Keys().dead_letters) == 0
    await logged(caplog, "Redis lost its data")
    assert_alive(runner)
