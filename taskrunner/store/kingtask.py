"""kingtask's Redis protocol: requests producers leave as a hash `t_<uuid>` plus the uuid in
`request_uuid_set`, claimed by one runner each; results written as `r_<uuid>`, and the daily
counters, as kingtask's workers write them (linlams/kingtask and the-no/kingtask)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Final

from taskrunner.store.base import ScriptCall
from taskrunner.store.dead import DeadOps
from taskrunner.store.keys import Keys
from taskrunner.store.records import text

COUNTER_KEEP_S: Final = 60 * 60 * 24 * 30  # the-no/kingtask keeps a daily counter a month
# A request hash's fields, as kingtask's worker reads them.
Request = dict[str, str]


class KingtaskOps(DeadOps):
    """Store operations of kingtask's Redis protocol (see the module)."""

    async def claim_kingtask_request(self, runner_id: str) -> tuple[str, Request] | None:
        """One request's uuid moved from `request_uuid_set` into this runner's in-flight list,
        with its hash's fields ({} if it has no hash); None when none waits."""
        k = self.keys
        reply = await self._run(
            "kingtask_claim",
            [k.kingtask_requests, k.kingtask_inflight(runner_id)],
            [k.kingtask_request_prefix],
        )
        if not reply:
            return None
        items = [text(item) for item in reply]
        return items[0], dict(zip(items[1::2], items[2::2], strict=True))

    async def kingtask_inflight(self, runner_id: str) -> list[tuple[str, Request]]:
        """The requests this runner claimed and has not admitted yet (oldest first)."""
        k = self.keys
        uuids = [
            text(u)
            for u in reversed(await self.redis.lrange(k.kingtask_inflight(runner_id), 0, -1))
        ]
        return [(uuid, await self._request(uuid)) for uuid in uuids]

    async def _request(self, uuid: str) -> Request:
        raw = await self.redis.hgetall(f"{self.keys.kingtask_request_prefix}{uuid}")
        return {text(name): text(value) for name, value in raw.items()}

    async def drop_kingtask_request(self, runner_id: str, uuid: str) -> None:
        """A request admitted: its hash and its in-flight entry go, in one transaction."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(k.kingtask_inflight(runner_id), 1, uuid)
            pipe.delete(f"{k.kingtask_request_prefix}{uuid}")
            await pipe.execute()

    async def dead_letter_kingtask_request(
        self, runner_id: str, uuid: str, fields: Mapping[str, str], *, reason: str, cap: int
    ) -> int:
        """Keep a request that cannot become a job (its hash as JSON, with its key) with the
        reason, then drop its hash; returns the dead-letter count."""
        k = self.keys
        key = f"{k.kingtask_request_prefix}{uuid}"
        raw = json.dumps({"key": key, **fields}, ensure_ascii=False).encode()
        count = await self.dead_letter(
            raw=raw,
            reason=reason,
            runner_id=runner_id,
            source="kingtask",
            cap=cap,
            inflight=(k.kingtask_inflight(runner_id), uuid.encode()),
        )
        await self.redis.delete(key)
        return count

    async def restore_kingtask_requests(self, runner_id: str) -> int:
        """Put a runner's claimed, unadmitted requests back into `request_uuid_set`."""
        k = self.keys
        return int(
            await self._run(
                "kingtask_restore", [k.kingtask_inflight(runner_id), k.kingtask_requests], []
            )
        )


def kingtask_result_call(
    k: Keys, job_id: str, *, runner_id: str, attempt: int, state: str,
    fields: Mapping[str, str], keep_s: int,
) -> ScriptCall:  # fmt: skip
    """kingtask_result.lua for a job's final state (sent right after finish.lua): `r_<id>`
    with `fields`, and the day's success or fail counter unless it was cancelled."""
    keys = [k.job(job_id), k.kingtask_result(job_id)]
    if state in ("succeeded", "failed", "dead"):
        date = time.strftime("%Y-%m-%d")  # local time, as Go's time.Now().Format
        keys.append(k.kingtask_daily(state == "succeeded", date))
    pairs = [item for pair in fields.items() for item in pair]
    return (
        "kingtask_result",
        keys,
        [runner_id, attempt, state, max(1, keep_s), COUNTER_KEEP_S, *pairs],
    )
