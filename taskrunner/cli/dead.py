"""Dead jobs (failed for good after their retries) and dead letters (refused ingress
messages): list them, retry one, drop one."""

from __future__ import annotations

from typing import Any

import click

from taskrunner.cli import tables
from taskrunner.cli.flags import Group
from taskrunner.cli.options import emit, json_option, redis_options, with_service
from taskrunner.errors import JobNotFound
from taskrunner.models import JobRecord
from taskrunner.service import Service


@click.group(cls=Group)
def dead() -> None:
    """Dead jobs (failed for good after their retries) and dead letters (refused messages)."""


@dead.command("list")
@redis_options
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="Show at most this many of each, newest first.",
)
@json_option()
def dead_list(limit: int, as_json: bool, **opts: Any) -> None:
    """List dead jobs and dead letters, newest first, with their totals."""

    async def work(service: Service) -> tuple[list[JobRecord], dict[str, Any]]:
        records, jobs_total = await service.dead_jobs(offset=0, limit=limit)
        return records, {
            "dead_jobs": [record.to_view() for record in records],
            "dead_jobs_total": jobs_total,
            "dead_letters": await service.dead_letters(start=0, count=limit),
            "dead_letters_total": await service.dead_letter_count(),
        }

    records, data = with_service(opts, work)
    emit(data, as_json, lambda: _dead_tables(records, data))


def _dead_tables(jobs: list[JobRecord], data: dict[str, Any]) -> str:
    letters = data["dead_letters"]
    parts = [f"dead jobs: {data['dead_jobs_total']}"]
    if jobs:
        parts.append(tables.render(tables.DEAD_JOB_COLUMNS, tables.dead_job_rows(jobs)))
    parts.append(f"\ndead letters: {data['dead_letters_total']}")
    if letters:
        parts.append(tables.render(tables.DEAD_LETTER_COLUMNS, tables.dead_letter_rows(letters)))
    if jobs or letters:
        parts.append(
            "\nretry one with `taskrunner dead retry ID`, drop it with `taskrunner dead drop ID`"
        )
    return "\n".join(parts)


@dead.command("retry")
@redis_options
@click.argument("item_id", metavar="ID")
@json_option('Print {"id", "kind", "action"} as JSON.')
def dead_retry(item_id: str, as_json: bool, **opts: Any) -> None:
    """Retry ID: a dead job is queued again (same id, attempts start over); a dead letter's
    message goes back on task:prepare:queue to be routed again."""
    kind = with_service(opts, lambda s: _take_dead(s, item_id, requeue=True))
    text = (
        f"dead job {item_id} queued again"
        if kind == "job"
        else f"dead letter {item_id} pushed back on task:prepare:queue"
    )
    emit({"id": item_id, "kind": kind, "action": "retried"}, as_json, lambda: text)


@dead.command("drop")
@redis_options
@click.argument("item_id", metavar="ID")
@json_option('Print {"id", "kind", "action"} as JSON.')
def dead_drop(item_id: str, as_json: bool, **opts: Any) -> None:
    """Delete ID for good: a dead job (its record) or a dead letter."""
    kind = with_service(opts, lambda s: _take_dead(s, item_id, requeue=False))
    emit(
        {"id": item_id, "kind": kind, "action": "dropped"},
        as_json,
        lambda: f"dead {kind} {item_id} dropped",
    )


async def _take_dead(service: Service, item_id: str, *, requeue: bool) -> str:
    """Retry or drop the dead job ID, else the dead letter ID: returns 'job' or 'letter'."""
    try:
        if requeue:
            await service.retry_dead_job(item_id)
        else:
            await service.drop_dead_job(item_id)
        return "job"
    except JobNotFound:
        pass
    try:
        await service.take_dead_letter(item_id, requeue=requeue)
    except JobNotFound:
        raise JobNotFound(
            f"no dead job or dead letter {item_id!r}: list them with `taskrunner dead list`"
        ) from None
    return "letter"
