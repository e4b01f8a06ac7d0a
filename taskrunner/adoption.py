"""Adopting TaskRunner's queued commands at a switch-over: a command still queued under
upstream's keys (`taskrunner.upstream`) becomes a job of our channel of the same name, oldest
first, one atomic step per command; one that cannot (a bad command, a channel name not valid
here, a program an allowlist refuses) is dead-lettered with the reason. A runner adopts at
start (`adopt_all`: a SCAN for every upstream queue) and then every `adopt_interval_s`
(`adopt_waiting`: two commands when nothing waits); `taskrunner migrate` does `adopt_all` once."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Final

from taskrunner import upstream
from taskrunner.errors import InvalidChannel, InvalidJob, NotAllowed, StoreError
from taskrunner.metrics import RunnerMetrics
from taskrunner.models import Job
from taskrunner.reconnect import RedisRetry
from taskrunner.service import Service
from taskrunner.store import DEAD, MOVED
from taskrunner.validation import validate_channel_name

log = logging.getLogger("taskrunner.adoption")

ADOPT_BATCH: Final = 100  # commands taken per round trip
ADOPT = "adopt"
DEAD_LETTER = "dead-letter"
LEAVE = "leave"


@dataclass(slots=True)
class QueueReport:
    """What one pass did with one upstream queue; `planned` (a dry run): (action, command,
    reason) for each command, oldest first, action one of ADOPT, DEAD_LETTER, LEAVE."""

    queue: str
    channel: str
    adopted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    left: int = 0
    planned: list[tuple[str, str, str]] = field(default_factory=list)


def _shown(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


class Adoption:
    """Adoption passes on one service's Redis. `metrics` (a runner's) counts adopted jobs."""

    def __init__(
        self,
        service: Service,
        *,
        dead_letter_cap: int,
        metrics: RunnerMetrics | None = None,
    ) -> None:
        self.service = service
        self.store = service.store
        self.dead_letter_cap = dead_letter_cap
        self.metrics = metrics
        self._warned: set[bytes] = set()  # queues of channels unknown here, warned about once

    async def loop(self, *, interval_s: float) -> None:
        """A runner's: `adopt_all` at start, then `adopt_waiting` every `interval_s`."""
        backoff = RedisRetry("adopt TaskRunner's queued commands")
        started = False
        while True:
            try:
                await (self.adopt_waiting() if started else self.adopt_all())
            except StoreError as exc:
                await backoff.wait(exc)
                continue
            started = True
            backoff.ok()
            await asyncio.sleep(interval_s)

    async def adopt_all(self, *, dry_run: bool = False) -> list[QueueReport]:
        """Every upstream queue found by SCAN. One whose channel does not exist here (with a
        name valid here) is left in place, with one warning per process; `dry_run` moves
        nothing and lists what would be done to each command."""
        known = set(await self.store.load_channels())
        reports = []
        for queue in await self.store.upstream_queues():
            raw_name = upstream.channel_of(queue)
            name, name_error = _channel_name(raw_name)
            if name_error is None and name not in known:
                reports.append(await self._leave(queue, name, dry_run=dry_run))
            elif dry_run:
                reports.append(await self._plan(queue, name, name_error))
            else:
                reports.append(await self._adopt_queue(queue, name, name_error))
        return reports

    async def adopt_waiting(self) -> list[QueueReport]:
        """The upstream queues of our channels, when any holds commands (no SCAN)."""
        reports = []
        for name in await self.store.upstream_waiting():
            queue = upstream.queue_key(name.encode())
            reports.append(await self._adopt_queue(queue, *_channel_name(name.encode())))
        return reports

    async def _leave(self, queue: bytes, name: str, *, dry_run: bool) -> QueueReport:
        report = QueueReport(_shown(queue), name, left=await self.store.upstream_length(queue))
        why = f"channel {name!r} does not exist here"
        if dry_run:
            commands = await self.store.upstream_commands(queue, count=report.left)
            report.planned = [(LEAVE, _shown(raw), why) for raw in commands]
        elif queue not in self._warned and report.left:
            self._warned.add(queue)
            log.warning(
                "TaskRunner queue %s holds commands for channel %r (%d), which does not exist"
                " here: left in place; create the channel (taskrunner queue create %s) and"
                " runners adopt them within a few seconds",
                report.queue, name, report.left, name,
            )  # fmt: skip
        return report

    async def _plan(self, queue: bytes, name: str, name_error: str | None) -> QueueReport:
        report = QueueReport(_shown(queue), name)
        length = await self.store.upstream_length(queue)
        for raw in await self.store.upstream_commands(queue, count=length):
            what = await self._prepare(queue, name, name_error, raw)
            action, why = (ADOPT, "") if isinstance(what, Job) else (DEAD_LETTER, what)
            report.planned.append((action, _shown(raw), why))
        return report

    async def _adopt_queue(self, queue: bytes, name: str, name_error: str | None) -> QueueReport:
        report = QueueReport(_shown(queue), name)
        while raws := await self.store.upstream_commands(queue, count=ADOPT_BATCH):
            items = [(raw, await self._prepare(queue, name, name_error, raw)) for raw in raws]
            admissions = await self.store.adopt_commands(
                queue, items, runner_id=self.service.settings.runner_id,
                dead_letter_cap=self.dead_letter_cap,
            )  # fmt: skip
            for (raw, what), admission in zip(items, admissions, strict=True):
                self._count(report, raw, what, admission.status, admission.job_id)
            if any(a.status == "nochan" for a in admissions):
                break  # the channel was deleted meanwhile: what is left stays
        if report.adopted or report.duplicates or report.dead_lettered:
            log.info(
                "adopted commands from TaskRunner queue %s into channel %s: %d taken, %d"
                " refused as duplicates, %d dead-lettered",
                report.queue, name, report.adopted, report.duplicates, report.dead_lettered,
            )  # fmt: skip
        return report

    def _count(
        self, report: QueueReport, raw: bytes, what: Job | str, status: str, job_id: str
    ) -> None:
        if status == "ok":
            report.adopted += 1
            if self.metrics is not None:
                self.metrics.jobs_adopted.labels(report.channel).inc()
        elif status == "duplicate":
            report.duplicates += 1
            log.info(
                "TaskRunner command %r of %s refused: duplicate of live job %s in distinct"
                " channel %s", _shown(raw)[:200], report.queue, job_id, report.channel,
                extra={"job_id": job_id, "channel": report.channel},
            )  # fmt: skip
        elif status == DEAD:
            report.dead_lettered += 1
            log.warning("dead-lettered TaskRunner command %r: %s", _shown(raw)[:200], what)
        elif status != MOVED and status != "nochan":
            log.error("adopting %r from %s answered %r", _shown(raw)[:200], report.queue, status)

    async def _prepare(
        self, queue: bytes, name: str, name_error: str | None, raw: bytes
    ) -> Job | str:
        """The job a command becomes, or why it cannot be one (its dead letter's reason)."""
        where = f"TaskRunner queue {_shown(queue)}"
        if name_error is not None:
            return f"{where}: {name_error}"
        try:
            job = self.service.parse_job({"task": raw.decode("utf-8"), "channel": name})
            await self.service.check_allowed(job)
        except UnicodeDecodeError:
            return f"{where}: the command is not valid UTF-8"
        except (InvalidJob, InvalidChannel, NotAllowed) as exc:
            return f"{where}: {exc}"
        return job


def _channel_name(raw: bytes) -> tuple[str, str | None]:
    """(the channel's name as shown, None) if valid here, else (as shown, why not)."""
    shown = _shown(raw)
    try:
        validate_channel_name(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return shown, f"channel name {shown!r} is not valid UTF-8"
    except InvalidChannel as exc:
        return (
            shown,
            f"{exc}; TaskRunner accepted it, taskrunner does not: push the command to another channel",
        )
    return shown, None
