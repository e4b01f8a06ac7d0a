"""The store's core: its clients, its Lua scripts and how calls to them are sent (one at a time,
coalesced, or pipelined), and pub/sub subscriptions. The operations build on it by concern."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Final, Self

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.client import PubSub
from redis.asyncio.sentinel import Sentinel

from taskrunner.errors import StoreRefusing, StoreUnavailable
from taskrunner.store.connection import connect, follows_primary, sibling
from taskrunner.store.errors import (
    CONNECTION_ERRORS,
    SERVER_REFUSALS,
    no_script,
    translating,
    unavailable_reason,
)
from taskrunner.store.keys import Keys, Notice
from taskrunner.store.urls import redact_url

# HTTP requests draw from a pool of their own, long polls included: when all its connections
# are in use a request answers 503 at once (StoreUnavailable.pool_exhausted), and the runner's
# own loops, on the store's main pool, and its heartbeat, on a connection of its own, never
# wait for them.
REQUEST_CONNECTIONS: Final = 64
NOSCRIPT_TRIES: Final = 3  # loads of the scripts for calls refused with NOSCRIPT, at most
# Of a request store's connections, long polls may hold all but these with their subscriptions
# (a poll past that is refused at once, like any request finding the pool empty): the rest
# serve the polls' own reads of the record and every other request.
WAIT_HEADROOM: Final = 16
PING_TIMEOUT_S: Final = 10.0  # start-up: a Redis that takes the connection but never answers
COALESCE_MAX: Final = 500  # enqueues sent in one pipeline at most
SCRIPTS: Final = (
    "enqueue", "claim", "finish", "hand_back", "promote", "dead_letter", "heartbeat", "cancel",
    "retry_dead", "drop_dead", "dead_letter_take", "delete_channel", "take_batch", "summary",
    "defer", "adopt", "adopt_dead", "kingtask_claim", "kingtask_restore", "kingtask_result",
)  # fmt: skip
DEFAULT_KEYS: Final = Keys()  # prefix 'task'
# One Lua script call: (script name, keys, args).
ScriptCall = tuple[str, Sequence[Any], Sequence[Any]]


# `--! include NAME` in a script: NAME.lua's text as a function NAME(KEYS, ARGV) of its own.
INCLUDE: Final = re.compile(r"^--! include (\w+)$", re.MULTILINE)


def _load_script(name: str) -> str:
    text = resources.files("taskrunner").joinpath(f"lua/{name}.lua").read_text("utf-8")
    return INCLUDE.sub(
        lambda m: f"local function {m[1]}(KEYS, ARGV)\n{_load_script(m[1])}\nend", text
    )


class Subscription:
    """Pub/sub notices (Store.subscribe), decoded; Redis's errors raised as taskrunner's."""

    def __init__(self, pubsub: PubSub, store: StoreBase) -> None:
        self._pubsub = pubsub
        self._store = store

    async def next(self, *, timeout_s: float) -> Notice | None:
        """The next notice (or pong), waiting up to `timeout_s`; None if none came."""
        with translating():
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=timeout_s
            )
        return None if message is None else Notice.decode(message, self._store.keys)

    async def ping(self, mark: str) -> None:
        """Ask for a pong carrying `mark`: it comes after every notice Redis sent before."""
        with translating():
            await self._pubsub.ping(mark)

    def follows_primary(self) -> bool:
        """False when Sentinel moved the primary away from the server this listens on."""
        return follows_primary(self._store.redis, self._pubsub)


class StoreBase:
    """Typed operations on taskrunner's Redis data. Owns its connection pool, a connection for
    the heartbeat alone, and the stores made by `for_requests` (closed with it)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        keys: Keys = DEFAULT_KEYS,
        url: str = "",
        sentinel: Sentinel | None = None,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.url = url
        self._sentinel = sentinel  # closed with the store (redis+sentinel:// URLs)
        self._scripts = {name: client.register_script(_load_script(name)) for name in SCRIPTS}
        self._pending: list[tuple[ScriptCall, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._beat_client: aioredis.Redis | None = None  # from the first heartbeat
        self._children: list[StoreBase] = []
        self._waits: asyncio.Semaphore | None = None  # a request store's long-poll slots

    @classmethod
    def from_url(cls, url: str, *, keys: Keys = DEFAULT_KEYS) -> Self:
        """A store on any URL form of `taskrunner.store.urls` (ConfigError if invalid). With
        redis+sentinel://, connections go to the primary the sentinels name at the time, so
        they follow it after a failover."""
        client, sentinel = connect(url)
        return cls(client, keys=keys, url=url, sentinel=sentinel)

    @property
    def url_for_logs(self) -> str:
        return redact_url(self.url)

    def for_requests(self, *, max_connections: int = REQUEST_CONNECTIONS) -> Self:
        """A store on the same Redis for HTTP requests, with a pool of its own of at most
        `max_connections`: past that, requests fail at once (StoreUnavailable with
        `pool_exhausted`) instead of taking connections the runner's loops need. Closed with
        this store."""
        client = sibling(self.redis, max_connections=max_connections)
        child = type(self)(client, keys=self.keys, url=self.url)
        child._waits = asyncio.Semaphore(max(1, max_connections - WAIT_HEADROOM))
        self._children.append(child)
        return child

    async def close(self) -> None:
        for child in self._children:
            await child.close()
        if self._beat_client is not None:
            await self._beat_client.aclose()
        await self.redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def ping(self) -> None:
        """Raise StoreUnavailable, naming the address (password redacted), unless Redis answers;
        StoreRefusing (a StoreUnavailable) when it answers that it cannot serve now (LOADING)."""
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self.redis.ping()
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"Redis at {redact_url(self.url)} took the connection but did not answer PING"
                f" within {PING_TIMEOUT_S:.0f} s: is it stopped (SIGSTOP) or stuck? check it"
                " with redis-cli PING"
            ) from exc
        except redis_errors.AuthenticationError as exc:
            raise StoreUnavailable(
                f"Redis at {redact_url(self.url)} refused the credentials ({exc}): check the"
                " password in the URL (or --redis-password)"
            ) from exc
        except SERVER_REFUSALS as exc:
            raise StoreRefusing(
                f"Redis at {redact_url(self.url)} cannot serve now: {unavailable_reason(exc)}"
            ) from exc
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"cannot reach Redis at {redact_url(self.url)}: {exc}") from exc

    def follows_primary(self, subscription: Subscription) -> bool:
        """False when Sentinel moved the primary away from the server `subscription` listens
        on: the caller subscribes again, on a connection to the new primary. True for other
        URLs."""
        return subscription.follows_primary()

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[Subscription]:
        """A subscription to pub/sub `channels` (Keys' *_events) for the block."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            with translating():
                await pubsub.subscribe(*channels)
            yield Subscription(pubsub, self)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def load_scripts(self) -> None:
        for script in self._scripts.values():
            await self.redis.script_load(script.script)

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys), args=list(args))

    def _coalesced(self, call: ScriptCall) -> asyncio.Future[Any]:
        """The reply of `call`, sent with the others made in the same event-loop turn in one
        round trip; the future holds Redis's own error if it failed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())
        return future

    async def _flush_pending(self) -> None:
        await asyncio.sleep(0)  # let every request of this loop turn add its call
        while self._pending:
            batch, self._pending = self._pending[:COALESCE_MAX], self._pending[COALESCE_MAX:]
            try:
                replies = await self._run_many([call for call, _ in batch], raise_on_error=False)
            except Exception as exc:
                replies = [exc] * len(batch)
            for (_, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def _run_many(
        self, calls: Sequence[ScriptCall], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Several scripts in one round trip (a pipeline of EVALSHAs, not a transaction).

        With raise_on_error=False, a call that failed has its exception in its reply's place.
        A call refused with NOSCRIPT (Redis restarted, or its script cache was flushed) did not
        run: only those are sent again once the scripts are loaded. The others ran, and running
        one twice (a claim) would take a job nobody starts."""
        replies = await self._pipeline(calls)
        for _ in range(NOSCRIPT_TRIES):  # Redis may restart again between the load and the send
            missing = [i for i, reply in enumerate(replies) if no_script(reply)]
            if not missing:
                break
            await self.load_scripts()
            again = await self._pipeline([calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
        return replies

    async def _pipeline(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """One round trip of EVALSHAs; each reply or the error of its call in its place."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, keys, args in calls:
                pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))
