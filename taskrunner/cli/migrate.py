"""`taskrunner migrate --from taskrunner`: adopt the commands still queued under TaskRunner's
keys once, as a runner does at start (`taskrunner.adoption`), printing what moves."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from taskrunner.adoption import Adoption, QueueReport
from taskrunner.cli.flags import Command
from taskrunner.cli.options import emit, json_option, redis_options, with_service
from taskrunner.config import Settings


@click.command(cls=Command)
@redis_options
@click.option(
    "--from",
    "source",
    type=click.Choice(["taskrunner"]),
    required=True,
    help="What to migrate from: taskrunner (TaskRunner's <chan>:tasks:queue lists).",
)
@click.option("--dry-run", is_flag=True, help="List what would move, and move nothing.")
@json_option("Print each queue's report as JSON.")
def migrate(source: str, dry_run: bool, as_json: bool, **opts: Any) -> None:
    """Move the commands still queued in TaskRunner's channel queues into taskrunner's
    channels as jobs, oldest first, each in one atomic step; a command that cannot be a job
    is dead-lettered with the reason; a queue whose channel does not exist here is left. Runners
    do the same at start and every 10 s."""
    cap = Settings().dead_letter_cap
    reports = with_service(
        opts, lambda s: Adoption(s, dead_letter_cap=cap).adopt_all(dry_run=dry_run)
    )
    emit([asdict(r) for r in reports], as_json, lambda: _text(reports, dry_run=dry_run))


def _text(reports: list[QueueReport], *, dry_run: bool) -> str:
    if not reports:
        return "no TaskRunner queue (<chan>:tasks:queue) found: nothing to migrate"
    lines = []
    for r in reports:
        if dry_run:
            lines.append(f"{r.queue} -> channel {r.channel}: commands {len(r.planned)}")
            lines += [f"  {action:<11} {command}" + (f"  ({why})" if why else "")
                      for action, command, why in r.planned]  # fmt: skip
        else:
            lines.append(
                f"{r.queue} -> channel {r.channel}: adopted {r.adopted}, refused as duplicates"
                f" {r.duplicates}, dead-lettered {r.dead_lettered}, left {r.left}"
            )
    if dry_run:
        lines.append("dry run: nothing moved")
    return "\n".join(lines)
