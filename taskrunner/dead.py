"""Dead jobs (failed for good) and dead letters (refused ingress messages): the service's
operations on them, for the native API, the dashboard and `taskrunner dead`."""

from __future__ import annotations

import logging
from typing import Any

from taskrunner.errors import Conflict, InvalidChannel, JobNotFound
from taskrunner.models import JobRecord
from taskrunner.store import Store

log = logging.getLogger("taskrunner.service")


class DeadItems:
    """`Service`'s dead-job and dead-letter operations (a base class: one service object)."""

    store: Store

    async def dead_jobs(self, *, offset: int, limit: int) -> tuple[list[JobRecord], int]:
        """A page of dead jobs, newest first, and their total."""
        return await self.store.dead_jobs(offset=offset, limit=limit)

    async def dead_letters(self, *, start: int, count: int) -> list[dict[str, Any]]:
        """A page of dead letters (refused ingress messages), newest first."""
        return await self.store.dead_letters(start=start, count=count)

    async def dead_letter_count(self) -> int:
        return await self.store.dead_letter_count()

    async def retry_dead_job(self, job_id: str) -> None:
        admission = await self.store.retry_dead(job_id)
        if admission.status == "ok":
            log.info("dead job %s queued again", job_id, extra={"job_id": job_id})
            return
        if admission.status == "missing":
            raise no_job(job_id)
        if admission.status == "duplicate":
            raise Conflict(
                f"job {job_id} is a duplicate of live job {admission.job_id} in a distinct"
                " channel: wait for that one to end"
            )
        if admission.status == "nochan":
            raise InvalidChannel(
                f"job {job_id}'s channel no longer exists: create it again, then retry"
            )
        raise Conflict(f"job {job_id} is {admission.status}, not dead: only dead jobs are retried")

    async def drop_dead_job(self, job_id: str) -> None:
        status = await self.store.drop_dead(job_id)
        if status == "missing":
            raise no_job(job_id)
        if status != "dropped":
            raise Conflict(f"job {job_id} is {status}, not dead: only dead jobs are dropped")
        log.info("dead job %s dropped", job_id, extra={"job_id": job_id})

    async def take_dead_letter(self, letter_id: str, *, requeue: bool) -> dict[str, Any]:
        """Drop a dead letter, or (`requeue`) push its message back for routing: refused with
        Conflict for a message kept only in part (`truncated`)."""
        if requeue:
            found = await self.store.find_dead_letter(letter_id)
            if found is not None and found[1].get("truncated"):
                raise Conflict(_truncated_letter(letter_id, found[1]))
        entry = await self.store.take_dead_letter(letter_id, requeue=requeue)
        if entry is None:
            raise JobNotFound(
                f"no dead letter {letter_id!r}: list them with `taskrunner dead list`"
                " or GET /api/dead-letters"
            )
        log.info(
            "dead letter %s %s", letter_id, "pushed back for routing" if requeue else "dropped"
        )
        return entry


def no_job(job_id: str) -> JobNotFound:
    return JobNotFound(f"no job {job_id!r}: it never existed or its record expired")


def _truncated_letter(letter_id: str, entry: dict[str, Any]) -> str:
    kept = len(str(entry.get("raw", "")).encode("utf-8", "surrogateescape"))
    return (
        f"dead letter {letter_id} cannot be retried: only the first {kept} bytes of its"
        f" {entry.get('size', '?')}-byte message were kept, so it cannot be retried whole;"
        " push the message again from its source, and drop this entry"
        f" (DELETE /api/dead-letters/{letter_id}, or `taskrunner dead drop {letter_id}`)"
    )
