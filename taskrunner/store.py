"""The only module that talks to Redis: key helpers, Lua scripts, and typed operations."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from taskrunner.errors import ChannelExists, InvalidChannel, StoreUnavailable
from taskrunner.jobs import ChannelConfig, Job, JobState, validate_channel_name

log = logging.getLogger("taskrunner.store")

# Errors that mean "Redis is not reachable right now": callers back off and try again.
CONNECTION_ERRORS: Final = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Keys:
    """Every Redis key and pub/sub channel name taskrunner uses, in one place."""

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
        return f"{self.prefix}:queue:{channel}"

    def scheduled(self, channel: str) -> str:
        return f"{self.prefix}:scheduled:{channel}"

    def running(self, channel: str) -> str:
        return f"{self.prefix}:running:{channel}"

    def distinct(self, channel: str) -> str:
        return f"{self.prefix}:distinct:{channel}"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}:job:"

    def job(self, job_id: str) -> str:
        return f"{self.job_prefix}{job_id}"

    @property
    def runners(self) -> str:
        return f"{self.prefix}:runners"

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


# Fields a claim returns, in this order (see lua/claim.lua).
CLAIM_FIELDS: Final = (
    "id", "task", "channel", "args", "ts", "run_at", "retries", "retry_intervals",
    "timeout", "dedup_key", "created_at", "attempt",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job this runner now owns for one attempt."""

    job: Job
    attempt: int


@dataclass(frozen=True, slots=True)
class Admission:
    """What happened to an enqueue: `status` is 'ok', 'duplicate' or 'nochan'."""

    status: str
    job_id: str

    @property
    def accepted(self) -> bool:
        return self.status == "ok"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _load_script(name: str) -> str:
    return resources.files("taskrunner").joinpath(f"lua/{name}.lua").read_text("utf-8")


class Store:
    """Typed operations on taskrunner's Redis data. Owns one connection pool."""

    def __init__(self, client: aioredis.Redis, *, keys: Keys = Keys(), url: str = "") -> None:
        self.redis = client
        self.keys = keys
        self.url = url
        self._scripts = {
            name: client.register_script(_load_script(name))
            for name in (
                "enqueue", "claim", "finish", "hand_back", "promote", "dead_letter", "heartbeat",
                "cancel",
            )
        }  # fmt: skip

    @classmethod
    def from_url(cls, url: str, *, keys: Keys = Keys()) -> Store:
        # No socket_timeout: redis-py wraps every write in `asyncio.wait_for` when one is set,
        # and on Python 3.11 that can swallow a task's cancellation, so a loop could never be
        # stopped. Blocking reads carry their own timeouts (BLMOVE) and keepalive finds dead peers.
        client = aioredis.Redis.from_url(
            url,
            # A pooled connection that died with a Redis restart is retried on a fresh one.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[redis_errors.ConnectionError],
            socket_connect_timeout=5.0,
            socket_keepalive=True,
            health_check_interval=30,
            decode_responses=False,
        )
        return cls(client, keys=keys, url=url)

    @property
    def url_for_logs(self) -> str:
        return redact_url(self.url)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> None:
        """Raise StoreUnavailable, naming the address, unless Redis answers."""
        try:
            await self.redis.ping()
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"cannot reach Redis at {redact_url(self.url)}: {exc}") from exc
        except redis_errors.AuthenticationError as exc:
            raise StoreUnavailable(
                f"Redis at {redact_url(self.url)} refused the password: {exc}"
            ) from exc

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
            except InvalidChannel as exc:
                log.warning("ignoring stored channel %r: %s", name, exc)
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

    async def put_channel(self, config: ChannelConfig) -> None:
        await self.redis.hset(self.keys.channels, config.name, config.to_json())
        await self.redis.publish(self.keys.channel_events, config.name)

    async def delete_channel(self, name: str) -> bool:
        removed = await self.redis.hdel(self.keys.channels, validate_channel_name(name))
        await self.redis.publish(self.keys.channel_events, name)
        return bool(removed)

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
        """Admit a job atomically (dedup, idempotent id); drop `raw` from in-flight if given."""
        now = time.time() if now is None else now
        due_ms = int(job.run_at * 1000) if job.run_at is not None and job.run_at > now else 0
        k, ch = self.keys, job.channel
        fields = [item for pair in job.to_record().items() for item in pair]
        status, job_id = await self._run(
            "enqueue",
            [
                k.channels, k.job(job.id), k.queue(ch), k.scheduled(ch), k.distinct(ch),
                k.stats, k.prepare_inflight(runner_id),
            ],
            [
                ch, job.id, job.effective_dedup_key(), raw, due_ms, k.job_prefix,
                k.wake_events, k.schedule_events, *fields,
            ],
        )  # fmt: skip
        return Admission(_text(status), _text(job_id))

    async def dead_letter(
        self, *, raw: bytes, reason: str, runner_id: str, source: str, cap: int
    ) -> int:
        """Keep a refused message with its reason; returns the running dead-letter count."""
        entry = json.dumps(
            {
                "reason": reason,
                "source": source,
                "at": round(time.time(), 3),
                "raw": raw.decode("utf-8", "backslashreplace"),
            },
            ensure_ascii=False,
        )
        k = self.keys
        return int(
            await self._run(
                "dead_letter",
                [k.prepare_inflight(runner_id), k.dead_letters, k.stats],
                [raw, entry, cap],
            )
        )

    async def dead_letters(self, *, start: int = 0, count: int = 100) -> list[dict[str, Any]]:
        items = await self.redis.lrange(self.keys.dead_letters, start, start + count - 1)
        return [json.loads(item) for item in items]

    # -- execution ------------------------------------------------------------------------

    async def claim(self, channel: str, *, count: int, runner_id: str) -> list[Claimed]:
        k = self.keys
        rows = await self._run(
            "claim",
            [k.queue(channel), k.runner_jobs(runner_id), k.running(channel)],
            [count, runner_id, "", k.job_prefix, *CLAIM_FIELDS],
        )
        claimed = []
        for row in rows:
            record = {f: _text(v) for f, v in zip(CLAIM_FIELDS, row, strict=True) if v is not None}
            claimed.append(Claimed(Job.from_record(record), int(record["attempt"])))
        return claimed

    async def finish(
        self,
        claimed: Claimed,
        *,
        runner_id: str,
        state: JobState,
        result: Mapping[str, str | bytes],
        result_ttl_s: int,
        due_at: float = 0.0,
    ) -> bool:
        """Record an attempt's end; False if this runner no longer owned it."""
        k, job = self.keys, claimed.job
        fields = [item for pair in result.items() for item in pair]
        done = await self._run(
            "finish",
            [
                k.job(job.id), k.runner_jobs(runner_id), k.running(job.channel),
                k.distinct(job.channel), k.daily(time.strftime("%Y-%m-%d")),
                k.scheduled(job.channel),
            ],
            [
                job.id, runner_id, claimed.attempt, state.value, int(due_at * 1000),
                max(1, result_ttl_s), k.job_events, k.schedule_events, job.channel, *fields,
            ],
        )  # fmt: skip
        return bool(done)

    async def hand_back(self, *, runner_id: str, job_id: str, channel: str, reason: str) -> bool:
        k = self.keys
        done = await self._run(
            "hand_back",
            [k.runner_jobs(runner_id), k.job(job_id), k.queue(channel), k.running(channel)],
            [job_id, reason, k.wake_events, channel],
        )
        return bool(done)

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
            ],
            [job_id, max(1, result_ttl_s), k.job_events, k.cancel_events],
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

    async def register_runner(self, runner_id: str) -> None:
        await self._run("heartbeat", [self.keys.runners], [runner_id, "register"])

    async def heartbeat(self, runner_id: str) -> bool:
        """Refresh this runner's liveness; False if another runner declared it dead."""
        return int(await self._run("heartbeat", [self.keys.runners], [runner_id, "beat"])) >= 0

    async def unregister_runner(self, runner_id: str) -> None:
        await self._run("heartbeat", [self.keys.runners], [runner_id, "leave"])
        await self.redis.delete(self.keys.runner_jobs(runner_id))

    async def stale_runners(self, *, lease_s: float) -> list[str]:
        rows = await self._run("heartbeat", [self.keys.runners], ["", "stale", int(lease_s * 1000)])
        return [_text(row) for row in rows]

    async def runner_job_channels(self, runner_id: str) -> dict[str, str]:
        """The jobs a runner holds, with each job's channel."""
        ids = [_text(i) for i in await self.redis.smembers(self.keys.runner_jobs(runner_id))]
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), "channel")
            channels = await pipe.execute()
        return {i: _text(c) for i, c in zip(ids, channels, strict=True)}

    async def forget_runner(self, runner_id: str) -> None:
        """Remove a dead runner once its jobs and messages were handed back."""
        await self.redis.zrem(self.keys.runners, runner_id)
        await self.redis.delete(self.keys.runner_jobs(runner_id))

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
            pipe.lrange(k.queue(channel), -limit, -1)
            pipe.srandmember(k.running(channel), limit)
            queued_n, running_n, scheduled_n, queued, running = await pipe.execute()
        queued_ids = [_text(i) for i in reversed(queued)]
        running_ids = [_text(i) for i in running]
        ids = running_ids + queued_ids
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(k.job(job_id), "task", "dedup", "state")
            rows = await pipe.execute() if ids else []
        jobs = [
            JobSummary(job_id, _text(task), bool(dedup), _text(state))
            for job_id, (task, dedup, state) in zip(ids, rows, strict=True)
            if task is not None
        ]
        return ChannelSnapshot(channel, int(queued_n), int(running_n), int(scheduled_n), jobs)

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.stats)
        return {_text(f): int(v) for f, v in raw.items()}

    async def daily_counts(self, date: str) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.daily(date))
        return {_text(f): int(v) for f, v in raw.items()}

    # -- pub/sub --------------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[PubSub]:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            yield pubsub
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class JobSummary:
    id: str
    task: str
    has_dedup_mark: bool
    state: str


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    channel: str
    queued: int
    running: int
    scheduled: int
    jobs: list[JobSummary]


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***` (safe for logs and errors)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://***@{host}"
