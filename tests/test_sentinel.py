"""redis+sentinel://: a runner and a producer follow the primary across a Sentinel failover.

Real servers started by the test: a primary, its replica (`--replicaof`) and one sentinel
(`redis-server CONF --sentinel`, or Valkey's binary), all with passwords: the data nodes' in the
URL's user info, the sentinel's in `?sentinel_password=`. Two ways the primary changes:
- "forced": `SENTINEL FAILOVER` promotes the replica within about a second, while the old
  primary still accepts writes until the sentinel demotes it some ten seconds later: clients
  must move by themselves;
- "killed": the primary dies (SIGKILL); the sentinel sees it down after 500 ms and promotes the
  replica; clients get connection errors until then.
Jobs pushed before (and replicated: `WAIT`) finish, jobs pushed after run: nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis
from redis.exceptions import ResponseError

from taskrunner.client import Client
from taskrunner.errors import StoreUnavailable
from taskrunner.models import JobState
from tests.support.net import HOST
from tests.support.redis_servers import RedisServer, SentinelServer
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until, wait_until_sync

pytestmark = pytest.mark.slow  # a Sentinel failover

SERVICE = "mymaster"
DATA_PASSWORD = "data-node-secret-31"
SENTINEL_PASSWORD = "sentinel-secret-47"
CHANNEL = "ha"


@dataclass
class Cluster:
    primary: RedisServer
    replica: RedisServer
    sentinel: SentinelServer

    @property
    def url(self) -> str:
        return (
            f"redis+sentinel://:{DATA_PASSWORD}@{HOST}:{self.sentinel.port}/{SERVICE}/0"
            f"?sentinel_password={SENTINEL_PASSWORD}"
        )


def _sync(server: RedisServer) -> SyncRedis:
    return SyncRedis(host=HOST, port=server.port, password=server.password)


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    """Primary, replica in sync, and a sentinel that knows the replica; all stopped after."""
    kind, binary = redis_server.kind, redis_server.binary
    primary = RedisServer(
        kind,
        binary,
        tmp_path / "primary",
        password=DATA_PASSWORD,
        extra_args=("--repl-diskless-sync-delay", "0"),
    )
    replica = RedisServer(
        kind,
        binary,
        tmp_path / "replica",
        password=DATA_PASSWORD,
        extra_args=("--replicaof", HOST, str(primary.port)),
    )
    sentinel = SentinelServer(
        kind,
        binary,
        tmp_path / "sentinel",
        primary_port=primary.port,
        service=SERVICE,
        password=SENTINEL_PASSWORD,
        primary_password=DATA_PASSWORD,
        down_after_ms=500,
        failover_timeout_ms=2500,  # an aborted attempt is tried again 5 s later
    )
    started: list[RedisServer] = []
    try:
        for server in (primary, replica):
            server.start()
            started.append(server)
        with _sync(replica) as client:
            wait_until_sync(
                lambda: client.info("replication").get("master_link_status") == "up",
                message="the replica to sync with the primary",
            )
        try:
            sentinel.start()  # after the replica linked up: its first INFO of the primary lists it
        except RuntimeError as exc:
            pytest.skip(
                f"this {kind} build ({binary}) cannot run as a Sentinel ({exc}); a build with"
                " Sentinel support (redis-server 7, valkey-server) runs this test"
            )
        started.append(sentinel)
        with _sync(sentinel) as client:
            wait_until_sync(
                lambda: _replica_known(client), message="the sentinel to know a healthy replica"
            )
        yield Cluster(primary, replica, sentinel)
    finally:
        for server in reversed(started):
            server.stop()


def _replica_known(sentinel: SyncRedis) -> bool:
    replicas = sentinel.sentinel_slaves(SERVICE)
    return any("s_down" not in r["flags"] and r.get("master-link-status") == "ok" for r in replicas)


async def _force_failover(sentinel: aioredis.Redis, *, timeout_s: float = 10.0) -> None:
    """SENTINEL FAILOVER, again while the sentinel has no replica it trusts yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
            return
        except ResponseError as exc:
            if time.monotonic() > deadline or "NOGOODSLAVE" not in str(exc):
                raise
            await asyncio.sleep(0.1)


def _async(server: RedisServer) -> aioredis.Redis:
    return aioredis.Redis(host=HOST, port=server.port, password=server.password)


@pytest.fixture
async def runners(cluster: Cluster) -> AsyncIterator[RunnerHarness]:
    harness = RunnerHarness(cluster.url)
    try:
        yield harness
    finally:
        await harness.stop_all()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["forced", "killed"])
async def test_jobs_keep_flowing_across_a_failover(
    cluster: Cluster, runners: RunnerHarness, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskrunner")
    runner = await runners.start(concurrent=2)
    service = runner.service
    await service.create_channel(service.new_channel(CHANNEL, {"worker_count": 2}))
    before = [f"before-{i}" for i in range(6)]
    async with Client(cluster.url, default_channel=CHANNEL) as producer:
        for job_id in before:
            await producer.push("sleep", args=["0.3"], id=job_id)
        await wait_state(runner.store, before[0], "running", "succeeded")
        async with _async(cluster.primary) as primary:
            assert await primary.wait(1, 5000) == 1  # every job so far is on the replica too
        async with _async(cluster.sentinel) as sentinel:
            if how == "forced":
                await _force_failover(sentinel)
            else:
                cluster.primary.kill()

            async def replica_promoted() -> bool:
                _, port = await sentinel.sentinel_get_master_addr_by_name(SERVICE)
                return int(port) == cluster.replica.port

            await wait_until(replica_promoted, timeout_s=20, message="the replica's promotion")

        # A long-lived client asks the sentinels again within a second (its idle connections
        # may still reach the old primary, which takes writes until the sentinel demotes it).
        async def producer_moved() -> bool:
            try:
                await producer.ping()
            except StoreUnavailable:  # killed: until every sentinel view agrees
                return False
            pool = producer._service.store.redis.connection_pool
            return bool(pool.master_address == (HOST, cluster.replica.port))

        await wait_until(producer_moved, message="the producer to follow the new primary")
        after = [await producer.push("true", id=f"after-{i}") for i in range(6)]

    async with _async(cluster.replica) as new_primary:

        async def all_succeeded() -> bool:
            states = [await new_primary.hget(f"task:job:{i}", "state") for i in before + after]
            return all(state == JobState.SUCCEEDED.value.encode() for state in states)

        await wait_until(all_succeeded, timeout_s=20, message="every job to succeed")
        assert (await new_primary.info("replication"))["role"] == "master"
    assert not runner.failed
    if how == "forced":  # (killed: its connection broke, and it reconnected to the new primary)
        assert "subscribing again" in caplog.text  # the wake-up subscription moved too
    assert DATA_PASSWORD not in caplog.text and SENTINEL_PASSWORD not in caplog.text
