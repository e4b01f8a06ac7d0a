"""Admin subcommands on Redis directly: list jobs, change and delete channels, dead jobs and
dead letters. `taskrunner.cli` registers them on its `taskrunner` and `queue` groups."""

from __future__ import annotations

from typing import Any

import click

from taskrunner import tables
from taskrunner.cli_base import emit, redis_options, with_service
from taskrunner.errors import JobNotFound
from taskrunner.jobs import JobState
from taskrunner.models import job_view
from taskrunner.service import Service

CHANNEL_CHANGES = (
    "worker_count",
    "distinct",
    "timeout",
    "retries",
    "retry_intervals",
    "log_output",
)


@click.command("update")
@redis_options
@click.argument("name")
@click.option(
    "--worker", "worker_count", type=int, default=None, help="Worker count per runner (1-1000)."
)
@click.option(
    "--distinct/--no-distinct",
    default=None,
    help="Refuse (or stop refusing) a job equal to one still live in the channel.",
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds before a job of the channel is killed (0: the runner's default).",
)
@click.option(
    "--retries",
    type=int,
    default=None,
    help="Retries after the first attempt of a job that sets none.",
)
@click.option(
    "--retry-intervals",
    default=None,
    metavar='"S S ..."',
    help='Seconds between attempts, e.g. "60 600 3600" (sets --retries to their number'
    " unless given).",
)
@click.option(
    "--log-output/--no-log-output",
    default=None,
    help="Log (or stop logging) the output lines of the channel's jobs when they end.",
)
@click.option(
    "--allow",
    multiple=True,
    metavar="PATTERN",
    help="Let the channel's jobs run only programs matching PATTERN (a name or glob, or a"
    " path glob such as '/usr/local/bin/*'); repeatable; replaces the channel's list.",
)
@click.option("--allow-any", is_flag=True, help="Remove the channel's allowlist: any program.")
@click.option("--json", "as_json", is_flag=True, help="Print the channel's settings as JSON.")
def queue_update(
    name: str, allow: tuple[str, ...], allow_any: bool, as_json: bool, **opts: Any
) -> None:
    """Change channel NAME's settings; every runner applies them at once."""
    changes = {field: opts.pop(field) for field in CHANNEL_CHANGES}
    fields = {field: value for field, value in changes.items() if value is not None}
    if allow and allow_any:
        raise click.UsageError("give --allow PATTERN or --allow-any, not both")
    if allow or allow_any:
        fields["allow"] = list(allow)
    if not fields:
        raise click.UsageError(
            "nothing to change: give one or more of --worker, --distinct/--no-distinct,"
            " --timeout, --retries, --retry-intervals, --log-output/--no-log-output,"
            " --allow PATTERN, --allow-any (pausing is `queue pause NAME`)"
        )
    _update_channel(name, fields, as_json, opts, "updated")


@click.command("pause")
@redis_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the channel's settings as JSON.")
def queue_pause(name: str, as_json: bool, **opts: Any) -> None:
    """Stop starting jobs of channel NAME; running jobs go on and new jobs still queue."""
    _update_channel(name, {"paused": True}, as_json, opts, "paused")


@click.command("resume")
@redis_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the channel's settings as JSON.")
def queue_resume(name: str, as_json: bool, **opts: Any) -> None:
    """Start jobs of paused channel NAME again."""
    _update_channel(name, {"paused": False}, as_json, opts, "resumed")


def _update_channel(
    name: str, fields: dict[str, Any], as_json: bool, opts: dict[str, Any], done: str
) -> None:
    config = with_service(opts, lambda s: s.update_channel(name, fields)).as_dict()
    settings = " ".join(f"{key}={value}" for key, value in config.items() if key != "name")
    emit(config, as_json, lambda: f"channel {name} {done}: {settings}")


@click.command("delete")
@redis_options
@click.argument("name")
def queue_delete(name: str, **opts: Any) -> None:
    """Delete channel NAME. Refused (exit 1) while jobs of it are queued, scheduled or running:
    pause it and let them finish, or cancel them, first."""
    with_service(opts, lambda s: s.delete_channel(name))
    click.echo(f"channel {name} deleted")


@click.command()
@redis_options
@click.option("--channel", "-c", default=None, help="Only this channel.")
@click.option(
    "--state",
    "-s",
    type=click.Choice([s.value for s in JobState]),
    default=None,
    help="Only jobs in this state.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="Show at most this many.",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip this many (the next page's offset is printed at the end).",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"jobs", "next_offset"} as JSON.')
def jobs(channel: str | None, state: str | None, limit: int, offset: int, as_json: bool,
         **opts: Any) -> None:  # fmt: skip
    """List jobs channel by channel: running, queued (oldest first), scheduled and retrying
    (soonest first), then ended ones (newest first, while their records last)."""
    records, next_offset = with_service(
        opts,
        lambda s: s.list_jobs(
            channel=channel, state=JobState(state) if state else None, offset=offset, limit=limit
        ),
    )
    views = [job_view(record) for record in records]

    def text() -> str:
        if not views:
            return "no jobs"
        table = tables.render(tables.JOB_COLUMNS, tables.job_rows(views))
        if next_offset is None:
            return table
        filters = "".join(
            f" {flag} {value}"
            for flag, value in (("--channel", channel), ("--state", state), ("--limit", limit))
            if value is not None
        )
        return f"{table}\nmore: taskrunner jobs{filters} --offset {next_offset}"

    emit({"jobs": views, "next_offset": next_offset}, as_json, text)


@click.group()
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dead_list(limit: int, as_json: bool, **opts: Any) -> None:
    """List dead jobs and dead letters, newest first, with their totals."""

    async def work(service: Service) -> dict[str, Any]:
        records, jobs_total = await service.store.dead_jobs(offset=0, limit=limit)
        return {
            "dead_jobs": [job_view(record) for record in records],
            "dead_jobs_total": jobs_total,
            "dead_letters": await service.store.dead_letters(start=0, count=limit),
            "dead_letters_total": await service.store.dead_letter_count(),
        }

    data = with_service(opts, work)
    emit(data, as_json, lambda: _dead_tables(data))


def _dead_tables(data: dict[str, Any]) -> str:
    jobs, letters = data["dead_jobs"], data["dead_letters"]
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
@click.option("--json", "as_json", is_flag=True, help='Print {"id", "kind", "action"} as JSON.')
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
@click.option("--json", "as_json", is_flag=True, help='Print {"id", "kind", "action"} as JSON.')
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
