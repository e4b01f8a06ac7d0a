"""kingtask's Redis ingress: requests producers leave in Redis (`t_<uuid>` plus the uuid in
`request_uuid_set`) polled, made into jobs through Service.admit, exactly once across runners.

A request is claimed by moving its uuid into this runner's in-flight list (one Lua call), then
admitted (its job's id is the uuid: admitting it twice queues it once), then its hash and
in-flight entry are removed. A runner lost in between has its in-flight uuids put back in the
set by the others' recovery; one that cannot become a job is dead-lettered with the reason."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from taskrunner.admission import Refused
from taskrunner.aio import wait_event
from taskrunner.errors import InvalidChannel, InvalidJob, StoreError, StoreUnavailable
from taskrunner.ingress import Intake
from taskrunner.kingtask_requests import request_job
from taskrunner.reconnect import RedisRetry

log = logging.getLogger("taskrunner.kingtask")

POLL_S = 1.0  # an idle poll's pause, as kingtask's worker sleeps a second when none waits


class KingtaskIngress(Intake):
    """Polls `request_uuid_set` until `close()` (runners with --bin-path only)."""

    async def poll_loop(self) -> None:
        backoff = RedisRetry("poll kingtask's request_uuid_set")
        resync = False
        while not self._closed.is_set():
            try:
                if resync:  # a reply may have been lost: admit what this runner holds first
                    for uuid, fields in await self.store.kingtask_inflight(self.runner_id):
                        await self.admit(uuid, fields)
                    resync = False
                claimed = await self.store.claim_kingtask_request(self.runner_id)
                if claimed is None:
                    await wait_event(self._closed, POLL_S)
                else:
                    await self.admit(*claimed)
                backoff.ok()
            except StoreUnavailable as exc:
                resync = True
                self._outages.lost("kingtask ingress", backoff)
                await backoff.wait(exc)
            except StoreError as exc:
                resync = True
                await backoff.wait(exc)

    async def admit(self, uuid: str, fields: Mapping[str, str]) -> None:
        """Make a claimed request a job, or dead-letter it; then drop it from in-flight."""
        settings = self.settings
        try:
            job = request_job(
                uuid, fields, bin_path=settings.bin_path, now=time.time(), limits=settings.limits
            )
        except (InvalidJob, InvalidChannel) as exc:
            await self._dead_letter(uuid, fields, str(exc))
            return
        (admission,) = await self.service.admit([job], source="kingtask request_uuid_set")
        if isinstance(admission, Refused):
            await self._dead_letter(uuid, fields, str(admission.error))
            return
        await self.store.drop_kingtask_request(self.runner_id, uuid)
        worker = self.workers.get(job.channel)
        if admission.status == "ok" and worker is not None and job.run_at is None:
            worker.wake()

    async def _dead_letter(self, uuid: str, fields: Mapping[str, str], reason: str) -> None:
        count = await self.store.dead_letter_kingtask_request(
            self.runner_id, uuid, fields, reason=reason, cap=self.settings.dead_letter_cap
        )
        self.metrics.dead_letters_routed.inc()
        log.warning("dead-lettered kingtask request t_%s (#%d): %s", uuid, count, reason)
