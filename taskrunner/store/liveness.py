"""Runners' liveness: registration, heartbeats (on a connection of their own), the data
epoch, stale runners declared dead, and what a runner holds."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from typing import Any

from taskrunner.store.base import StoreBase
from taskrunner.store.connection import sibling
from taskrunner.store.records import text


class LivenessOps(StoreBase):
    """Store operations on runners' liveness (see the module)."""

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
            self._beat_client = sibling(self.redis, max_connections=1)
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
        return text(await self.redis.get(self.keys.epoch))

    async def stale_runners(self, *, lease_s: float) -> list[str]:
        """Runners whose last beat is older than the lease, or that were declared dead."""
        rows = await self._liveness("", "stale", int(lease_s * 1000))
        return [text(row) for row in rows]

    async def declare_dead(self, runner_id: str, *, lease_s: float) -> bool:
        """Declare a stale runner dead, atomically with the check that it is still stale (and
        that the beats of all runners have not just resumed after Redis hung or was away): from
        then on its heartbeat says so and its claims are refused. False if not."""
        return bool(await self._liveness(runner_id, "judge", int(lease_s * 1000)))

    async def runner_job_channels(self, runner_id: str) -> dict[str, str]:
        """The jobs a runner holds, with each job's channel."""
        ids = [text(i) for i in await self.redis.smembers(self.keys.runner_jobs(runner_id))]
        return {i: text(c) for i, c in (await self._job_field(ids, "channel")).items()}

    async def job_attempts(self, job_ids: Collection[str]) -> dict[str, str]:
        """The current attempt number of each job (jobs without a record left out)."""
        found = await self._job_field(list(job_ids), "attempt")
        return {i: text(a) for i, a in found.items() if a is not None}

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
        return [(text(r), float(score) / 1000) for r, score in rows]

    async def forget_runner(self, runner_id: str) -> None:
        """Remove a runner declared dead once its jobs and messages were handed back (not if
        it has registered again since: its job set is its own again)."""
        await self._liveness(runner_id, "forget")


def _ms(seconds: float | None) -> int | str:
    return "" if seconds is None else int(seconds * 1000)
