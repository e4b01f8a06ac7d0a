"""Connections to Redis: the client for any URL form (taskrunner.store.urls), commands packed
by hiredis, Redis's refusals parsed into their own error classes, a Sentinel pool that follows
the primary, and sibling clients on pools of their own (HTTP requests, the heartbeat)."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Final

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection, DefaultParser
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from taskrunner.store.errors import CONNECTION_ERRORS, PersistenceError, ServerBusyError
from taskrunner.store.urls import RedisTarget, parse_redis_url

PRIMARY_CHECK_S: Final = 1.0  # redis+sentinel://: how often the sentinels are asked at most


def connect(url: str) -> tuple[aioredis.Redis, Sentinel | None]:
    """A client for any URL form of `taskrunner.store.urls` (ConfigError if invalid), and the
    sentinels it asks for the primary (redis+sentinel://, else None: close them with it). With
    redis+sentinel://, connections go to the primary the sentinels name at the time, so they
    follow it after a failover."""
    target = parse_redis_url(url)
    # No socket_timeout: redis-py wraps every write in `asyncio.wait_for` when one is set,
    # and on Python 3.11 that can swallow a task's cancellation, so a loop could never be
    # stopped. Blocking reads carry their own timeouts (BLMOVE) and keepalive finds dead peers.
    options: dict[str, Any] = {
        # A pooled connection that died with a Redis restart is retried on a fresh one.
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        "retry_on_error": [redis_errors.ConnectionError],
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "decode_responses": False,
    }
    if not target.is_sentinel:
        return _packing_in_c(aioredis.Redis(**options, **target.node_kwargs())), None
    sentinel = _sentinel(target)
    client = sentinel.master_for(
        str(target.service),
        connection_pool_class=_PrimaryPool,
        **options,
        **target.node_kwargs(),
    )
    return _packing_in_c(client), sentinel


def follows_primary(client: aioredis.Redis, pubsub: PubSub) -> bool:
    """False when Sentinel moved the primary away from the server `pubsub` listens on: the
    caller subscribes again, on a connection to the new primary. True for other URLs."""
    pool, connection = client.connection_pool, pubsub.connection
    if not isinstance(pool, SentinelConnectionPool) or connection is None:
        return True
    return pool.master_address is None or _address(connection) == pool.master_address


# -- commands packed by hiredis -------------------------------------------------------------


def _packing_in_c(client: aioredis.Redis) -> aioredis.Redis:
    """The client, its connections packing commands with hiredis (C) as redis-py's own sync
    connections do: its asyncio ones pack them in Python, a tenth of a runner's time per job."""
    pool = client.connection_pool
    pool.connection_class = _hiredis_packing(pool.connection_class)
    pool.connection_kwargs["parser_class"] = _RefusalParser  # (copied by sibling's pools)
    return client


# redis-py's parser, with BUSY, MISCONF and UNBLOCKED replies raised as SERVER_REFUSALS rather
# than as plain ResponseErrors.
_RefusalParser: Final = type(
    "RefusalParser",
    (DefaultParser,),
    {
        "EXCEPTION_CLASSES": {
            **DefaultParser.EXCEPTION_CLASSES,
            "BUSY": ServerBusyError,
            "MISCONF": PersistenceError,
            # a blocking command (BLMOVE) cut short: the server became a replica (failover)
            "UNBLOCKED": redis_errors.ReadOnlyError,
        }
    },
)


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _hiredis_packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    if base not in _PACKING:
        _PACKING[base] = type(base.__name__, (base,), {"pack_command": _pack_command})
    return _PACKING[base]


def _pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
    """redis-py's HiredisRespSerializer.pack (redis/connection.py), for asyncio connections."""
    if isinstance(args[0], str):
        args = (*args[0].encode().split(), *args[1:])
    elif b" " in args[0]:
        args = (*args[0].split(), *args[1:])
    args = tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args)
    try:
        return [hiredis.pack_command(args)]
    except TypeError as exc:
        raise redis_errors.DataError(str(exc)) from exc


def sibling(client: aioredis.Redis, *, max_connections: int) -> aioredis.Redis:
    """A client to the same server as `client`, with the same options, on a pool of its own."""
    pool = client.connection_pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"}
    kwargs.update(connection_class=pool.connection_class, max_connections=max_connections)
    if isinstance(pool, SentinelConnectionPool):  # follows the primary, as `client` does
        kwargs.update(is_master=pool.is_master, check_connection=pool.check_connection)
        return aioredis.Redis.from_pool(
            type(pool)(pool.service_name, pool.sentinel_manager, **kwargs)
        )
    return aioredis.Redis.from_pool(type(pool)(**kwargs))  # closed with the client


# -- redis+sentinel:// -------------------------------------------------------------------------


class _PrimaryPool(SentinelConnectionPool):
    """Sentinel's pool, following a failover even while the old primary still takes writes
    (until the sentinels demote it, about ten seconds later): at most once every
    PRIMARY_CHECK_S, taking a connection first asks the sentinels where the primary is (when it
    moved, idle connections close), and a connection released after the primary moved away
    from its server is closed (redis-py's asyncio pool would keep it; its sync pool does not).
    """

    _checked_at = -math.inf

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        now = time.monotonic()
        if now - self._checked_at >= PRIMARY_CHECK_S:
            self._checked_at = now
            with contextlib.suppress(*CONNECTION_ERRORS):  # sentinels away: keep what we know
                await self.get_master_address()  # type: ignore[no-untyped-call]
        connection: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        if self.master_address is not None and _address(connection) != self.master_address:
            await connection.disconnect()
        await super().release(connection)


def _address(connection: AbstractConnection) -> tuple[Any, Any]:
    return getattr(connection, "host", None), getattr(connection, "port", None)


def _sentinel(target: RedisTarget) -> Sentinel:
    """The sentinels of a redis+sentinel:// URL: short timeouts and one retry each, so one
    sentinel down costs little before the next one is asked."""
    sentinel_options = {
        "socket_connect_timeout": 2.0,
        "socket_keepalive": True,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1),
        **target.sentinel_kwargs(),
    }
    return Sentinel(list(target.hosts), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
