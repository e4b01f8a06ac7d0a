"""The only module that talks to Redis: key helpers, Lua scripts, and typed operations."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection, DefaultParser
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from taskrunner.errors import (
    ChannelExists,
    InvalidChannel,
    InvalidJob,
    StoreRefusing,
    StoreUnavailable,
)
from taskrunner.jobs import (
    CHANNEL_NAME_RE,
    JOB_RECORD_NAMES,
    ChannelConfig,
    Job,
    JobState,
    validate_channel_name,
)
from taskrunner.models import SUMMARY_FIELDS, SUMMARY_TEXT_BYTES
from taskrunner.redis_url import RedisTarget, parse_redis_url, redact_url

__all__ = ["CONNECTION_ERRORS", "UNAVAILABLE_ERRORS", "Keys", "Store", "redact_url"]

log = logging.getLogger("taskrunner.store")

# Bytes of a refused message a dead letter keeps: any command line a queue normally carries is
# kept whole (and can be retried); of a longer message, its first bytes and its size.
DEAD_LETTER_RAW_BYTES: Final = 8192
DEAD_LETTER_PAGE: Final = 100  # entries read at a time when looking for one by id
TAKE_BATCH_BYTES: Final = 1024 * 1024  # messages taken in one round trip stop past this size

# Errors that mean "Redis is not reachable right now": callers back off and try again.
CONNECTION_ERRORS: Final = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
# HTTP requests draw from a pool of their own, long polls included: when all its connections
# are in use a request answers 503 at once (POOL_EXHAUSTED_ERRORS), and the runner's own loops,
# on the store's main pool, and its heartbeat, on a connection of its own, never wait for them.
REQUEST_CONNECTIONS: Final = 64
PING_TIMEOUT_S: Final = 10.0  # start-up: a Redis that takes the connection but never answers
POOL_EXHAUSTED_ERRORS: Final = (redis_errors.MaxConnectionsError,)


class ServerBusyError(redis_errors.ResponseError):
    """BUSY: Redis runs a script or function longer than its busy-reply-threshold."""


class PersistenceError(redis_errors.ResponseError):
    """MISCONF: Redis refuses writes because it cannot write its snapshot to disk."""


# Replies of a Redis that is up but cannot serve now: out of memory (maxmemory, noeviction), a
# long script (BUSY), a failed snapshot (MISCONF), loading its data (LOADING), a replica since
# a failover (READONLY), a replica cut from its primary (MASTERDOWN). redis-py raises the first
# two as plain ResponseErrors: this module's connections parse them into the classes above.
SERVER_REFUSALS: Final = (
    redis_errors.OutOfMemoryError,
    ServerBusyError,
    PersistenceError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
)
# Everything that means "Redis unavailable": every loop logs once, backs off and retries; a
# result is retried until it lands; HTTP answers 503 with `unavailable_reason`.
UNAVAILABLE_ERRORS: Final = (*CONNECTION_ERRORS, *SERVER_REFUSALS)


def out_of_reach(exc: BaseException) -> bool:
    """Whether a heartbeat that failed with `exc` leaves the lease standing (the watchdog's
    silence fence hears of it): Redis could not serve us (down, refused, reset, timed out), or
    refuses every runner alike (out of memory, busy, loading, MISCONF), so nobody can be judged
    meanwhile (heartbeat.lua). Not a failure of this process (a pool with no free connection),
    nor a server only we may be talking to (READONLY or MASTERDOWN: a replica after a failover,
    while the others judge on the new primary)."""
    only_ours = (
        redis_errors.ReadOnlyError,
        redis_errors.ClusterDownError,
        redis_errors.TryAgainError,
    )
    if isinstance(exc, (*POOL_EXHAUSTED_ERRORS, *only_ours)):
        return False
    return isinstance(exc, UNAVAILABLE_ERRORS)


_REASONS: Final = (
    (redis_errors.OutOfMemoryError, "out of memory (maxmemory reached)"),
    (ServerBusyError, "busy (BUSY: a long script)"),
    (PersistenceError, "refusing writes (MISCONF: it cannot save its snapshot)"),
    (redis_errors.BusyLoadingError, "loading its data (LOADING)"),
    (redis_errors.ReadOnlyError, "read-only (READONLY: a replica, after a failover?)"),
    (redis_errors.ClusterDownError, "cut from its primary or cluster"),
    (POOL_EXHAUSTED_ERRORS, "busy with too many requests of this process"),
)


def unavailable_reason(exc: BaseException) -> str:
    """Why Redis is unavailable, for a log line or an HTTP 503 ("out of memory (maxmemory
    reached): <Redis's words>"): `exc` is one of UNAVAILABLE_ERRORS."""
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return f"{reason}: {exc}"
    return f"out of reach ({exc.__class__.__name__})"  # its words may name the address


@dataclass(frozen=True, slots=True)
class Keys:
    """Every Redis key and pub/sub channel name taskrunner uses, in one place. A channel's keys
    are only built for a valid channel name (InvalidChannel otherwise)."""

    prefix: str = "task"

    @property
    def prepare_queue(self) -> str:
        return f"{self.prefix}:prepare:queue"

    def prepare_inflight(self, runner_id: str) -> str:
        return f"{self.prefix}:prepare:inflight:{runner_id}"

    @property
    def channels(self) -> str:
        return f"{self.prefix}:channels"

    def queue(self, channel: str) -> str:
        return f"{self.prefix}:queue:{validate_channel_name(channel)}"

    def scheduled(self, channel: str) -> str:
        return f"{self.prefix}:scheduled:{validate_channel_name(channel)}"

    def running(self, channel: str) -> str:
        return f"{self.prefix}:running:{validate_channel_name(channel)}"

    def distinct(self, channel: str) -> str:
        return f"{self.prefix}:distinct:{validate_channel_name(channel)}"

    def recent(self, channel: str) -> str:
        return f"{self.prefix}:recent:{validate_channel_name(channel)}"

    @property
    def dead_jobs(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}:job:"

    def job(self, job_id: str) -> str:
        return f"{self.job_prefix}{job_id}"

    @property
    def runners(self) -> str:
        return f"{self.prefix}:runners"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def liveness(self) -> str:
        return f"{self.prefix}:runners:liveness"

    def runner_jobs(self, runner_id: str) -> str:
        return f"{self.prefix}:runner:{runner_id}:jobs"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:dead_letters"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    def daily(self, date: str) -> str:
        return f"{self.prefix}:daily:{date}"

    # pub/sub channels
    @property
    def wake_events(self) -> str:
        return f"{self.prefix}:events:wake"

    @property
    def schedule_events(self) -> str:
        return f"{self.prefix}:events:schedule"

    @property
    def job_events(self) -> str:
        return f"{self.prefix}:events:job"

    @property
    def channel_events(self) -> str:
        return f"{self.prefix}:events:channels"

    @property
    def cancel_events(self) -> str:
        return f"{self.prefix}:events:cancel"

    @property
    def dead_letter_events(self) -> str:
        return f"{self.prefix}:events:dead_letters"


LIST_CHUNK: Final = 500
PRIMARY_CHECK_S: Final = 1.0  # redis+sentinel://: how often the sentinels are asked at most
COALESCE_MAX: Final = 500  # enqueues sent in one pipeline at most
# One Lua script call: (script name, keys, args).
ScriptCall = tuple[str, Sequence[Any], Sequence[Any]]
# A page of job ids from one index: (start, count) -> ids.
IdSource = Callable[[int, int], Awaitable[list[str]]]

# How many ended jobs each channel's recent index keeps (records themselves expire by TTL).
RECENT_CAP: Final = 10000
HANDED_BACK: Final = "handed_back"  # Store.hand_back: the job is queued again

# Fields a claim returns, in this order (see lua/claim.lua): the Job's, and the attempt's.
CLAIM_FIELDS: Final = (*JOB_RECORD_NAMES, "attempt", "due_at")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job this runner now owns for one attempt; `due_at`: unix seconds it was due to start
    (its retry's or run_at's due time, else its creation)."""

    job: Job
    attempt: int
    due_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Admission:
    """What happened to an enqueue: `status` is 'ok' (created), 'exists' (a job has this id
    already: a retried push; nothing created), 'duplicate' (refused: a live job has the same
    dedup key in a distinct channel; `job_id` is that job's) or 'nochan'."""

    status: str
    job_id: str

    @property
    def accepted(self) -> bool:
        """The job with this id is in the queue's hands: created now, or by an earlier push."""
        return self.status in ("ok", "exists")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _load_script(name: str) -> str:
    return resources.files("taskrunner").joinpath(f"lua/{name}.lua").read_text("utf-8")


class Store:
    """Typed operations on taskrunner's Redis data. Owns its connection pool, a connection for
    the heartbeat alone, and the stores made by `for_requests` (closed with it)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        keys: Keys = Keys(),
        url: str = "",
        sentinel: Sentinel | None = None,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.url = url
        self._sentinel = sentinel  # closed with the store (redis+sentinel:// URLs)
        self._scripts = {
            name: client.register_script(_load_script(name))
            for name in (
                "enqueue", "claim", "finish", "hand_back", "promote", "dead_letter", "heartbeat",
                "cancel", "retry_dead", "drop_dead", "dead_letter_take", "delete_channel", "take_batch",
                "summary",
                "defer",
            )
        }  # fmt: skip
        self._pending: list[tuple[ScriptCall, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._beat_client: aioredis.Redis | None = None  # from the first heartbeat
        self._children: list[Store] = []

    @classmethod
    def from_url(cls, url: str, *, keys: Keys = Keys()) -> Store:
        """A store on any URL form of `taskrunner.redis_url` (ConfigError if invalid). With
        redis+sentinel://, connections go to the primary the sentinels name at the time, so
        they follow it after a failover."""
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
            client = aioredis.Redis(**options, **target.node_kwargs())
            return cls(_packing_in_c(client), keys=keys, url=url)
        sentinel = _sentinel(target)
        client = sentinel.master_for(
            str(target.service),
            connection_pool_class=_PrimaryPool,
            **options,
            **target.node_kwargs(),
        )
        return cls(_packing_in_c(client), keys=keys, url=url, sentinel=sentinel)

    @property
    def url_for_logs(self) -> str:
        return redact_url(self.url)

    def for_requests(self, *, max_connections: int = REQUEST_CONNECTIONS) -> Store:
        """A store on the same Redis for HTTP requests, with a pool of its own of at most
        `max_connections`: past that, requests fail at once (POOL_EXHAUSTED_ERRORS) instead of
        taking connections the runner's loops need. Closed with this store."""
        child = Store(
            _sibling(self.redis, max_connections=max_connections), keys=self.keys, url=self.url
        )
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

    def follows_primary(self, pubsub: PubSub) -> bool:
        """False when Sentinel moved the primary away from the server `pubsub` listens on: the
        caller subscribes again, on a connection to the new primary. True for other URLs."""
        pool, connection = self.redis.connection_pool, pubsub.connection
        if not isinstance(pool, SentinelConnectionPool) or connection is None:
            return True
        return pool.master_address is None or _address(connection) == pool.master_address

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys), args=list(args))

    # -- channels -------------------------------------------------------------------------

    async def load_channels(self) -> dict[str, ChannelConfig]:
        raw = await self.redis.hgetall(self.keys.channels)
        channels = {}
        for name_b, value in raw.items():
            name = _text(name_b)
            try:
                channels[name] = ChannelConfig.from_json(validate_channel_name(name), value)
            except (InvalidChannel, InvalidJob) as exc:  # hand-written JSON: skip, do not stop
                log.warning("ignoring stored channel %r: %s", name[:100], exc)
        return channels

    async def get_channel(self, name: str) -> ChannelConfig | None:
        raw = await self.redis.hget(self.keys.channels, validate_channel_name(name))
        return None if raw is None else ChannelConfig.from_json(name, raw)

    async def create_channel(self, config: ChannelConfig, *, exist_ok: bool = False) -> bool:
        """Create a channel; False if it existed and `exist_ok`, else ChannelExists."""
        created = await self.redis.hsetnx(self.keys.channels, config.name, config.to_json())
        if not created and not exist_ok:
            raise ChannelExists(f"channel {config.name!r} already exists")
        if created:
            await self.redis.publish(self.keys.channel_events, config.name)
        return bool(created)

    async def create_channels(self, configs: Sequence[ChannelConfig]) -> list[str]:
        """Create those of the channels that do not exist, in one transaction: a runner reading
        the channels meanwhile sees all of them or none. Returns the names created."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for config in configs:
                pipe.hsetnx(self.keys.channels, config.name, config.to_json())
            done = await pipe.execute()
        created = [config.name for config, new in zip(configs, done, strict=True) if new]
        for name in created:
            await self.redis.publish(self.keys.channel_events, name)
        return created

    async def put_channel(self, config: ChannelConfig) -> None:
        await self.redis.hset(self.keys.channels, config.name, config.to_json())
        await self.redis.publish(self.keys.channel_events, config.name)

    async def update_channel(
        self, name: str, change: Callable[[ChannelConfig], ChannelConfig]
    ) -> ChannelConfig:
        """Read, change and write one channel atomically (WATCH); InvalidChannel if missing."""
        key = self.keys.channels
        validate_channel_name(name)
        updated: ChannelConfig | None = None

        async def apply(pipe: Any) -> None:
            nonlocal updated
            raw = await pipe.hget(key, name)
            if raw is None:
                raise InvalidChannel(f"channel {name!r} does not exist")
            updated = change(ChannelConfig.from_json(name, raw))
            pipe.multi()
            pipe.hset(key, name, updated.to_json())

        await self.redis.transaction(apply, key)
        await self.redis.publish(self.keys.channel_events, name)
        assert updated is not None
        return updated

    async def delete_channel(self, name: str) -> str:
        """'deleted', 'missing', or 'busy Q S R' when jobs still wait or run in it."""
        k = self.keys
        ch = validate_channel_name(name)
        status = _text(
            await self._run(
                "delete_channel",
                [k.channels, k.queue(ch), k.scheduled(ch), k.running(ch), k.distinct(ch),
                 k.recent(ch)],
                [ch],
            )
        )  # fmt: skip
        if status == "deleted":
            await self.redis.publish(self.keys.channel_events, name)
        return status

    # -- ingress --------------------------------------------------------------------------

    async def take_message(self, runner_id: str, *, timeout_s: float) -> bytes | None:
        """Move the oldest prepare-queue message into this runner's in-flight list."""
        raw = await self.redis.blmove(
            self.keys.prepare_queue,
            self.keys.prepare_inflight(runner_id),
            timeout_s,  # type: ignore[arg-type]  # Redis takes fractional seconds
            "RIGHT",
            "LEFT",
        )
        return None if raw is None else _bytes(raw)

    async def take_messages(
        self,
        runner_id: str,
        *,
        count: int,
        max_bytes: int,
        dead_letter_cap: int,
        batch_bytes: int = TAKE_BATCH_BYTES,
    ) -> TakenMessages:
        """Up to `count` messages to route, no blocking: those already in this runner's in-flight
        list (a take whose reply was lost left them there), then waiting ones moved into it.
        A message over `max_bytes` is dead-lettered inside Redis (its first bytes and its size
        kept) and only its size comes back: a runner never reads one whole. The batch stops
        after the message that brings it to `batch_bytes`."""
        k = self.keys
        messages, refused = await self._run(
            "take_batch",
            [k.prepare_queue, k.prepare_inflight(runner_id), k.dead_letters, k.stats],
            [
                count, max_bytes, DEAD_LETTER_RAW_BYTES, round(time.time(), 3), dead_letter_cap,
                k.dead_letter_events, batch_bytes,
            ],
        )  # fmt: skip
        return TakenMessages([_bytes(m) for m in messages], [int(size) for size in refused])

    async def inflight_messages(self, runner_id: str) -> list[bytes]:
        """Messages taken by this runner and not yet routed (oldest first)."""
        items = await self.redis.lrange(self.keys.prepare_inflight(runner_id), 0, -1)
        return [_bytes(item) for item in reversed(items)]

    async def restore_inflight(self, runner_id: str) -> int:
        """Hand a runner's unrouted messages back to the head of the prepare queue."""
        source, target = self.keys.prepare_inflight(runner_id), self.keys.prepare_queue
        moved = 0
        while await self.redis.lmove(source, target, "LEFT", "RIGHT") is not None:
            moved += 1
        return moved

    async def enqueue(
        self, job: Job, *, runner_id: str, raw: bytes = b"", now: float | None = None
    ) -> Admission:
        """Admit a job atomically (dedup, idempotent id); drop `raw` from in-flight if given.

        Enqueues made in the same event-loop turn (concurrent HTTP requests) share one round
        trip."""
        status, job_id = await self._coalesced(self._enqueue_call(job, runner_id, raw, now))
        return Admission(_text(status), _text(job_id))

    def _coalesced(self, call: ScriptCall) -> asyncio.Future[Any]:
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

    async def enqueue_many(
        self, items: Sequence[tuple[Job, bytes]], *, runner_id: str
    ) -> list[Admission]:
        """`enqueue` for each (job, raw message), in one round trip."""
        now = time.time()
        replies = await self._run_many(
            [self._enqueue_call(job, runner_id, raw, now) for job, raw in items]
        )
        return [Admission(_text(status), _text(job_id)) for status, job_id in replies]

    def _enqueue_call(
        self, job: Job, runner_id: str, raw: bytes, now: float | None
    ) -> tuple[str, list[Any], list[Any]]:
        now = time.time() if now is None else now
        due_ms = int(job.run_at * 1000) if job.run_at is not None and job.run_at > now else 0
        k, ch = self.keys, job.channel
        fields = [item for pair in job.to_record().items() for item in pair]
        return (
            "enqueue",
            [
                k.channels, k.job(job.id), k.queue(ch), k.scheduled(ch), k.distinct(ch),
                k.stats, k.prepare_inflight(runner_id),
            ],
            [
                ch, job.id, job.effective_dedup_key(), raw, due_ms, k.job_prefix,
                k.wake_events, k.schedule_events, k.job_events, *fields,
            ],
        )  # fmt: skip

    async def dead_letter(
        self, *, raw: bytes, reason: str, runner_id: str, source: str, cap: int
    ) -> int:
        """Keep a refused message with its reason; returns the running dead-letter count.

        The entry keeps the message's first DEAD_LETTER_RAW_BYTES bytes (all of a message that
        is no longer), its size in bytes, and whether it was cut (`truncated`)."""
        kept = utf8_prefix(raw, DEAD_LETTER_RAW_BYTES)
        entry = json.dumps(
            {
                "reason": reason,
                "source": source,
                "at": round(time.time(), 3),
                "raw": kept.decode("utf-8", "backslashreplace"),
                "size": len(raw),
                "truncated": len(kept) < len(raw),
            },
            ensure_ascii=False,
        )
        k = self.keys
        return int(
            await self._run(
                "dead_letter",
                [k.prepare_inflight(runner_id), k.dead_letters, k.stats],
                [raw, entry, cap, k.dead_letter_events],
            )
        )

    async def dead_letters(self, *, start: int = 0, count: int = 100) -> list[dict[str, Any]]:
        """Refused messages, newest first, each with a stable `id` (a hash of the entry)."""
        if count <= 0:
            return []  # LRANGE 0 -1 would be the whole list
        items = await self.redis.lrange(self.keys.dead_letters, start, start + count - 1)
        return [_dead_letter(item) for item in items]

    async def dead_letter_count(self) -> int:
        return int(await self.redis.llen(self.keys.dead_letters))

    async def find_dead_letter(self, letter_id: str) -> tuple[bytes, dict[str, Any]] | None:
        """The stored entry with that id and its decoded form, read a page at a time."""
        start = 0
        while True:
            items = await self.redis.lrange(
                self.keys.dead_letters, start, start + DEAD_LETTER_PAGE - 1
            )
            for item in items:
                entry = _dead_letter(item)
                if entry["id"] == letter_id:
                    return _bytes(item), entry
            if len(items) < DEAD_LETTER_PAGE:
                return None
            start += DEAD_LETTER_PAGE

    async def take_dead_letter(self, letter_id: str, *, requeue: bool) -> dict[str, Any] | None:
        """Remove one dead letter by id; with `requeue`, push its message back for routing
        (the caller refuses that for a `truncated` entry: only its first bytes were kept)."""
        found = await self.find_dead_letter(letter_id)
        if found is None:
            return None
        item, entry = found
        raw = str(entry.get("raw", "")) if requeue else ""
        taken = await self._run(
            "dead_letter_take",
            [self.keys.dead_letters, self.keys.prepare_queue],
            [item, raw, self.keys.dead_letter_events],
        )
        return entry if taken else None

    # -- execution ------------------------------------------------------------------------

    async def claim(self, channel: str, *, count: int, runner_id: str) -> list[Claimed]:
        """Take up to `count` queued jobs; none while the runner is declared dead."""
        return _claimed(await self._run(*self._claim_call(channel, count, runner_id)))

    def _claim_call(self, channel: str, count: int, runner_id: str) -> ScriptCall:
        k = self.keys
        return (
            "claim",
            [k.queue(channel), k.runner_jobs(runner_id), k.running(channel), k.runners],
            [count, runner_id, k.job_events, k.job_prefix, *CLAIM_FIELDS],
        )

    async def finish(
        self,
        claimed: Claimed,
        *,
        runner_id: str,
        state: JobState,
        result: Mapping[str, str | bytes],
        result_ttl_s: int,
        due_at: float = 0.0,
        claim_next: int = 0,
    ) -> tuple[bool, list[Claimed]]:
        """Record an attempt's end, and claim up to `claim_next` jobs of the same channel in the
        same round trip. The bool is False if this runner no longer owned the attempt."""
        k, job = self.keys, claimed.job
        fields = [item for pair in result.items() for item in pair]
        calls: list[ScriptCall] = [
            (
                "finish",
                [
                k.job(job.id), k.runner_jobs(runner_id), k.running(job.channel),
                k.distinct(job.channel), k.daily(time.strftime("%Y-%m-%d")),
                k.scheduled(job.channel), k.recent(job.channel), k.dead_jobs,
            ],
            [
                job.id, runner_id, claimed.attempt, state.value, int(due_at * 1000),
                max(1, result_ttl_s), k.job_events, k.schedule_events, job.channel, RECENT_CAP,
                *fields,
            ],
            )
        ]  # fmt: skip
        if claim_next > 0:
            calls.append(self._claim_call(job.channel, claim_next, runner_id))
        replies: list[Any] = await asyncio.gather(
            *(self._coalesced(call) for call in calls), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return bool(replies[0]), _claimed(replies[1]) if claim_next > 0 else []

    async def _run_many(
        self, calls: Sequence[ScriptCall], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Several scripts in one round trip (a pipeline of EVALSHAs, not a transaction).

        With raise_on_error=False, a call that failed has its exception in its reply's place.
        A call refused with NOSCRIPT (Redis restarted, or its script cache was flushed) did not
        run: only those are sent again once the scripts are loaded. The others ran, and running
        one twice (a claim) would take a job nobody starts."""
        replies = await self._pipeline(calls)
        missing = [i for i, reply in enumerate(replies) if _no_script(reply)]
        if missing:
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

    async def load_scripts(self) -> None:
        for script in self._scripts.values():
            await self.redis.script_load(script.script)

    async def hand_back(
        self,
        *,
        runner_id: str,
        job_id: str,
        channel: str,
        reason: str,
        started: bool = True,
        result_ttl_s: int = 86400,
    ) -> str:
        """Put a job `runner_id` runs back at the head of its queue: 'handed_back'; or, if a
        cancel was requested meanwhile, end it: 'cancelled'; '' if it was not that runner's.
        A job claimed but never `started` goes back with its attempt uncounted."""
        k = self.keys
        done = await self._run(
            "hand_back",
            [
                k.runner_jobs(runner_id), k.job(job_id), k.queue(channel), k.running(channel),
                k.distinct(channel), k.daily(time.strftime("%Y-%m-%d")), k.recent(channel),
            ],
            [
                job_id, reason, k.wake_events, channel, "1" if started else "0",
                max(1, result_ttl_s), k.job_events, RECENT_CAP,
            ],
        )  # fmt: skip
        return {1: HANDED_BACK, 2: "cancelled"}.get(int(done), "")

    async def defer(self, claimed: Claimed, *, runner_id: str, delay_s: float, reason: str) -> str:
        """Put back an attempt that could not start for lack of resources: `scheduled` again
        `delay_s` from now, its attempt not counted ('deferred'); 'cancel_requested' (nothing
        changed: record it cancelled); '' if the attempt is no longer this runner's."""
        k, job = self.keys, claimed.job
        due_ms = int((time.time() + delay_s) * 1000)
        done = await self._run(
            "defer",
            [k.job(job.id), k.runner_jobs(runner_id), k.running(job.channel),
             k.scheduled(job.channel)],
            [job.id, runner_id, claimed.attempt, due_ms, reason, k.job_events,
             k.schedule_events, job.channel],
        )  # fmt: skip
        return {1: "deferred", 2: "cancel_requested"}.get(int(done), "")

    async def cancel(self, job_id: str, *, result_ttl_s: int) -> str:
        """Cancel a job; returns its state afterwards ('running' = its runner was told)."""
        channel = await self.redis.hget(self.keys.job(job_id), "channel")
        if channel is None:
            return "missing"
        k, ch = self.keys, _text(channel)
        state = await self._run(
            "cancel",
            [
                k.job(job_id),
                k.queue(ch),
                k.scheduled(ch),
                k.distinct(ch),
                k.daily(time.strftime("%Y-%m-%d")),
                k.recent(ch),
            ],
            [job_id, max(1, result_ttl_s), k.job_events, k.cancel_events, RECENT_CAP],
        )
        return _text(state)

    async def wait_final(self, job_id: str, *, timeout_s: float) -> dict[str, str] | None:
        """The job's record once it is final (woken by pub/sub, not by polling), or None."""
        async with self.subscribe(self.keys.job_events) as pubsub:
            deadline = time.monotonic() + timeout_s
            while True:
                record = await self.get_job(job_id)
                if record is None or JobState(record.get("state", "queued")).is_final:
                    return record
                while (remaining := deadline - time.monotonic()) > 0:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=remaining
                    )
                    if message is not None and _text(message["data"]).split(" ")[0] == job_id:
                        break
                else:
                    return record

    async def retry_dead(self, job_id: str) -> Admission:
        """Queue a dead job again; status 'ok', 'duplicate', 'nochan', 'missing' or its state."""
        channel = await self.redis.hget(self.keys.job(job_id), "channel")
        if channel is None:
            await self.redis.zrem(self.keys.dead_jobs, job_id)
            return Admission("missing", "")
        k, ch = self.keys, _text(channel)
        status, holder = await self._run(
            "retry_dead",
            [k.job(job_id), k.dead_jobs, k.queue(ch), k.distinct(ch), k.recent(ch), k.channels],
            [job_id, k.job_prefix, k.wake_events, k.job_events, ch],
        )
        return Admission(_text(status), _text(holder))

    async def drop_dead(self, job_id: str) -> str:
        """Delete a dead job's record: 'dropped', 'missing', or its state if not dead."""
        channel = _text(await self.redis.hget(self.keys.job(job_id), "channel"))
        recent = self.keys.recent(channel) if channel else self.keys.dead_jobs
        return _text(
            await self._run(
                "drop_dead",
                [self.keys.job(job_id), self.keys.dead_jobs, recent],
                [job_id, self.keys.job_events],
            )
        )

    async def promote_due(self, channel: str, *, limit: int = 1000) -> tuple[int, float | None]:
        """Queue the channel's due jobs; returns (moved, next due unix time or None)."""
        k = self.keys
        moved, next_ms = await self._run(
            "promote",
            [k.scheduled(channel), k.queue(channel)],
            [int(time.time() * 1000), limit, k.job_prefix, k.wake_events, channel],
        )
        next_due = float(next_ms)
        return int(moved), None if next_due < 0 else next_due / 1000

    # -- runners and recovery -------------------------------------------------------------

    async def _liveness(self, runner_id: str, mode: str, *args: Any) -> Any:
        keys = [self.keys.runners, self.keys.liveness]
        if mode in ("forget", "leave"):
            keys.append(self.keys.runner_jobs(runner_id))
        return await self._run("heartbeat", keys, [runner_id, mode, *args])

    async def register_runner(self, runner_id: str, *, lease_s: float | None = None) -> None:
        await self._liveness(runner_id, "register", _ms(lease_s))

    async def heartbeat(self, runner_id: str, *, lease_s: float | None = None) -> bool:
        """Refresh this runner's liveness; False if another runner declared it dead. With
        `lease_s`: when no runner beat for 3/4 of it (Redis hung or was away), nobody is
        declared dead for a lease from now. Sent on a connection of its own, which no other
        call of this store can take (one heartbeat at a time)."""
        if self._beat_client is None:
            self._beat_client = _sibling(self.redis, max_connections=1)
        beat = await self._scripts["heartbeat"](
            keys=[self.keys.runners, self.keys.liveness],
            args=[runner_id, "beat", _ms(lease_s)],
            client=self._beat_client,
        )
        return int(beat) >= 0

    async def unregister_runner(self, runner_id: str) -> int:
        """Leave, unless the runner still holds jobs (their end could not be written): it then
        stays registered, and another runner hands them back once its lease expires. Returns
        the number of jobs it still holds."""
        return int(await self._liveness(runner_id, "leave"))

    async def data_epoch(self) -> str:
        """A token naming the taskrunner data this Redis holds: set by the first runner to ask,
        gone with the data (FLUSHALL, a restart without persistence). A runner that finds it
        changed knows Redis lost the data it had (a new token is set then)."""
        await self.redis.set(self.keys.epoch, secrets.token_hex(8), nx=True)
        return _text(await self.redis.get(self.keys.epoch))

    async def stale_runners(self, *, lease_s: float) -> list[str]:
        """Runners whose last beat is older than the lease, or that were declared dead."""
        rows = await self._liveness("", "stale", int(lease_s * 1000))
        return [_text(row) for row in rows]

    async def declare_dead(self, runner_id: str, *, lease_s: float) -> bool:
        """Declare a stale runner dead, atomically with the check that it is still stale (and
        that the beats of all runners have not just resumed after Redis hung or was away): from
        then on its heartbeat says so and its claims are refused. False if not."""
        return bool(await self._liveness(runner_id, "judge", int(lease_s * 1000)))

    async def runner_job_channels(self, runner_id: str) -> dict[str, str]:
        """The jobs a runner holds, with each job's channel."""
        ids = [_text(i) for i in await self.redis.smembers(self.keys.runner_jobs(runner_id))]
        return {i: _text(c) for i, c in (await self._job_field(ids, "channel")).items()}

    async def job_attempts(self, job_ids: Collection[str]) -> dict[str, str]:
        """The current attempt number of each job (jobs without a record left out)."""
        found = await self._job_field(list(job_ids), "attempt")
        return {i: _text(a) for i, a in found.items() if a is not None}

    async def _job_field(self, ids: Sequence[str], field: str) -> dict[str, Any]:
        """One field of each job's record, in one round trip (None where there is none)."""
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), field)
            return dict(zip(ids, await pipe.execute(), strict=True))

    async def runners(self) -> list[tuple[str, float]]:
        """Registered runners with their last heartbeat (unix seconds, Redis clock); runners
        declared dead and not forgotten yet are left out."""
        rows: list[Any] = await self.redis.zrangebyscore(
            self.keys.runners, 0, "+inf", withscores=True
        )
        return [(_text(r), float(score) / 1000) for r, score in rows]

    async def forget_runner(self, runner_id: str) -> None:
        """Remove a runner declared dead once its jobs and messages were handed back (not if
        it has registered again since: its job set is its own again)."""
        await self._liveness(runner_id, "forget")

    # -- reading --------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> dict[str, str] | None:
        record = await self.redis.hgetall(self.keys.job(job_id))
        return {_text(f): _text(v) for f, v in record.items()} if record else None

    async def channel_snapshot(self, channel: str, *, limit: int) -> ChannelSnapshot:
        """Queued and running jobs of a channel (ids up to `limit` each) with their counts."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(k.queue(channel))
            pipe.scard(k.running(channel))
            pipe.zcard(k.scheduled(channel))
            if limit > 0:  # counts only otherwise: LRANGE -0 -1 would read the whole queue
                pipe.lrange(k.queue(channel), -limit, -1)
                pipe.srandmember(k.running(channel), limit)
            queued_n, running_n, scheduled_n, *listed = await pipe.execute()
        queued, running = listed or ([], [])
        queued_ids = [_text(i) for i in reversed(queued)]
        running_ids = [_text(i) for i in running]
        ids = running_ids + queued_ids
        rows = await self._cut_fields(ids, ("task", "dedup", "state"))
        jobs = [
            JobSummary(job_id, _text(task), bool(dedup), _text(state), "task" in cut)
            for job_id, ((task, dedup, state), cut) in zip(ids, rows, strict=True)
            if task is not None
        ]
        return ChannelSnapshot(channel, int(queued_n), int(running_n), int(scheduled_n), jobs)

    async def list_jobs(
        self, *, channels: Sequence[str], state: JobState | None, offset: int, limit: int
    ) -> tuple[list[dict[str, str]], int | None]:
        """Job summaries of the channels, optionally in one state, with offset paging.

        Order per channel: running, queued (oldest first), scheduled and retrying (soonest due
        first), ended (newest first). Returns (jobs, next offset or None at the end)."""
        sources = [src for ch in channels for src in self._job_sources(ch, state)]
        found: list[dict[str, str]] = []
        skip, position = offset, offset
        for source in sources:
            start = 0
            while len(found) < limit + 1:
                ids = await source(start, LIST_CHUNK)
                if not ids:
                    break
                start += len(ids)
                for record in await self._summaries(ids):
                    if record is None or (state is not None and record["state"] != state):
                        continue
                    if skip > 0:
                        skip -= 1
                        continue
                    found.append(record)
                if len(ids) < LIST_CHUNK:
                    break
            if len(found) > limit:
                break
        more = len(found) > limit
        return found[:limit], position + limit if more else None

    def _job_sources(self, channel: str, state: JobState | None) -> list[IdSource]:
        k, r = self.keys, self.redis

        async def running(start: int, count: int) -> list[str]:
            if start:
                return []
            return sorted(_text(i) for i in await r.smembers(k.running(channel)))

        async def queued(start: int, count: int) -> list[str]:
            end = -1 - start
            items = await r.lrange(k.queue(channel), end - count + 1, end)
            return [_text(i) for i in reversed(items)]

        async def scheduled(start: int, count: int) -> list[str]:
            return [
                _text(i) for i in await r.zrange(k.scheduled(channel), start, start + count - 1)
            ]

        async def ended(start: int, count: int) -> list[str]:
            items = await r.zrange(k.recent(channel), start, start + count - 1, desc=True)
            return [_text(i) for i in items]

        by_state: dict[JobState, list[IdSource]] = {
            JobState.RUNNING: [running],
            JobState.QUEUED: [queued],
            JobState.SCHEDULED: [scheduled],
            JobState.RETRYING: [scheduled],
        }
        if state is None:
            return [running, queued, scheduled, ended]
        return by_state.get(state, [ended])

    async def _summaries(self, ids: Sequence[str]) -> list[dict[str, str] | None]:
        """The jobs' SUMMARY_FIELDS; a text cut to SUMMARY_TEXT_BYTES is flagged `NAME_truncated`
        (`args`, which would not be a JSON list any more, is left out then)."""
        summaries: list[dict[str, str] | None] = []
        for row, cut in await self._cut_fields(ids, SUMMARY_FIELDS):
            record = {
                f: _text(v) for f, v in zip(SUMMARY_FIELDS, row, strict=True) if v is not None
            }
            for name in cut:
                record[f"{name}_truncated"] = "1"
            if "args" in cut:
                del record["args"]
            summaries.append(record if "state" in record else None)
        return summaries

    async def _cut_fields(
        self, ids: Sequence[str], fields: Sequence[str]
    ) -> list[tuple[list[Any], set[str]]]:
        """Each job's `fields` (None where missing), a long value cut to its first
        SUMMARY_TEXT_BYTES in Redis, with the names of those cut: a listing never reads a
        job's big values whole."""
        if not ids:
            return []
        calls = [("summary", [self.keys.job(i)], [SUMMARY_TEXT_BYTES, *fields]) for i in ids]
        rows = []
        for reply in await self._run_many(calls):
            *values, cut = reply
            rows.append((values, {fields[int(i) - 1] for i in cut}))
        return rows

    async def dead_jobs(self, *, offset: int, limit: int) -> tuple[list[dict[str, str]], int]:
        """Dead jobs, newest first, with their last error; and how many there are."""
        k = self.keys
        ids: list[str] = []
        if limit > 0:  # ZRANGE 0 -1 would be every dead job
            found = await self.redis.zrange(k.dead_jobs, offset, offset + limit - 1, desc=True)
            ids = [_text(i) for i in found]
        total = int(await self.redis.zcard(k.dead_jobs))
        records = await self._summaries(ids)
        gone = [i for i, rec in zip(ids, records, strict=True) if rec is None]
        if gone:
            await self.redis.zrem(k.dead_jobs, *gone)
        return [rec for rec in records if rec is not None], total - len(gone)

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.stats)
        return {_text(f): int(v) for f, v in raw.items()}

    async def daily_counts(self, date: str) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.daily(date))
        return {_text(f): int(v) for f, v in raw.items()}

    async def queue_counts(self, channels: Sequence[str]) -> QueueCounts:
        """Job counts by channel and dead totals in one round trip, with O(1) commands only."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in channels:
                pipe.llen(k.queue(name))
                pipe.zcard(k.scheduled(name))
                pipe.scard(k.running(name))
            pipe.zcard(k.dead_jobs)
            pipe.llen(k.dead_letters)
            counts = [int(n) for n in await pipe.execute()]
        return QueueCounts(
            queued=dict(zip(channels, counts[0:-2:3], strict=True)),
            scheduled=dict(zip(channels, counts[1:-2:3], strict=True)),
            running=dict(zip(channels, counts[2:-2:3], strict=True)),
            dead_jobs=counts[-2],
            dead_letters=counts[-1],
        )

    # -- pub/sub --------------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[PubSub]:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            yield pubsub
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    # -- kingtask -------------------------------------------------------------------------

    async def undo_count(self, *, now: float | None = None) -> int:
        """kingtask's backlog over all channels: queued jobs plus scheduled ones already due."""
        now_ms = int((time.time() if now is None else now) * 1000)
        stored = [_text(n) for n in await self.redis.hkeys(self.keys.channels)]
        names = [name for name in stored if CHANNEL_NAME_RE.match(name)]
        if not names:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(self.keys.queue(name))
                pipe.zcount(self.keys.scheduled(name), "-inf", now_ms)
            counts = await pipe.execute()
        return sum(int(c) for c in counts)


def _ms(seconds: float | None) -> int | str:
    return "" if seconds is None else int(seconds * 1000)


def _claimed(rows: Sequence[Sequence[Any]]) -> list[Claimed]:
    claimed = []
    for row in rows:
        record = {f: _text(v) for f, v in zip(CLAIM_FIELDS, row, strict=True) if v is not None}
        due_ms = record.get("due_at")
        due_at = float(due_ms) / 1000 if due_ms else float(record.get("created_at") or 0)
        claimed.append(Claimed(Job.from_record(record), int(record["attempt"]), due_at))
    return claimed


def utf8_prefix(data: bytes, max_bytes: int) -> bytes:
    """The first `max_bytes` bytes of `data`, not cutting a UTF-8 sequence in two (as
    lua/take_batch.lua does)."""
    if len(data) <= max_bytes:
        return data
    cut = max_bytes
    while cut > max(0, max_bytes - 3) and 0x80 <= data[cut] < 0xC0:  # a continuation byte
        cut -= 1
    return data[:cut]


@dataclass(frozen=True, slots=True)
class TakenMessages:
    """What one take from the prepare queue gave: messages to route, and the sizes of those
    dead-lettered in Redis for being over the size limit."""

    messages: list[bytes]
    refused_sizes: list[int]


def _dead_letter(item: bytes | str) -> dict[str, Any]:
    # surrogateescape, then backslashreplace: take_batch.lua keeps a message's bytes as they
    # came, so a byte that is not UTF-8 shows as \xNN, as in the entries written from Python.
    text = item.decode("utf-8", "surrogateescape") if isinstance(item, bytes) else item
    try:
        entry = json.loads(text)
    except ValueError:
        entry = {"reason": "unreadable dead-letter entry", "raw": text}
    if not isinstance(entry, dict):
        entry = {"reason": "unreadable dead-letter entry", "raw": text}
    for name, value in entry.items():
        if isinstance(value, str):
            entry[name] = value.encode("utf-8", "surrogateescape").decode(
                "utf-8", "backslashreplace"
            )
    entry["id"] = hashlib.sha1(_bytes(item)).hexdigest()[:16]
    return entry


@dataclass(frozen=True, slots=True)
class JobSummary:
    id: str
    task: str
    has_dedup_mark: bool
    state: str
    task_truncated: bool = False  # only the first SUMMARY_TEXT_BYTES of the command are in `task`


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    channel: str
    queued: int
    running: int
    scheduled: int
    jobs: list[JobSummary]


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueCounts:
    """Counts over every runner: jobs by channel, dead jobs, dead letters kept."""

    queued: dict[str, int]
    scheduled: dict[str, int]
    running: dict[str, int]
    dead_jobs: int
    dead_letters: int


# -- commands packed by hiredis -------------------------------------------------------------


def _packing_in_c(client: aioredis.Redis) -> aioredis.Redis:
    """The client, its connections packing commands with hiredis (C) as redis-py's own sync
    connections do: its asyncio ones pack them in Python, a tenth of a runner's time per job."""
    pool = client.connection_pool
    pool.connection_class = _hiredis_packing(pool.connection_class)
    pool.connection_kwargs["parser_class"] = _RefusalParser  # (copied by _sibling's pools)
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


def _sibling(client: aioredis.Redis, *, max_connections: int) -> aioredis.Redis:
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


def _no_script(reply: Any) -> bool:
    return isinstance(reply, redis_errors.NoScriptError) or (
        isinstance(reply, redis_errors.ResponseError) and str(reply).startswith("NOSCRIPT")
    )
