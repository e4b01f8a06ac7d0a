"""Channels: `taskrunner status` (counts per channel) and the `queue` group that creates, lists,
changes, pauses, resumes and deletes them."""

from __future__ import annotations

from typing import Any

import click

from taskrunner.cli import tables
from taskrunner.cli.flags import Command, Group
from taskrunner.cli.options import emit, json_option, redis_options, with_service
from taskrunner.service import Service

CHANNEL_CHANGES = (
    "worker_count",
    "distinct",
    "timeout",
    "retries",
    "retry_intervals",
    "log_output",
)


@click.command(cls=Command)
@redis_options
@click.option("--channel", "-c", default=None, help="Only this channel.")
@json_option()
def status(channel: str | None, as_json: bool, **opts: Any) -> None:
    """Queued, scheduled and running counts per channel."""
    snaps = with_service(opts, lambda s: s.snapshots(channel))
    data = {
        s.channel: {"queued": s.queued, "scheduled": s.scheduled, "running": s.running}
        for s in snaps
    }

    def table() -> str:
        rows = [f"{'CHANNEL':<24} {'QUEUED':>8} {'SCHEDULED':>10} {'RUNNING':>8}"]
        rows += [f"{s.channel:<24} {s.queued:>8} {s.scheduled:>10} {s.running:>8}" for s in snaps]
        return "\n".join(rows)

    emit(data, as_json, table)


@click.group(cls=Group)
def queue() -> None:
    """Create, list, update, pause, resume and delete channels."""


@queue.command("create")
@redis_options
@click.argument("name")
@click.option(
    "--distinct", is_flag=True, help="Refuse a job equal to one still live in the channel."
)
@click.option(
    "--worker",
    type=int,
    default=0,
    show_default=True,
    help="Worker count per runner (0: 5, like --concurrent).",
)
def queue_create(name: str, distinct: bool, worker: int, **opts: Any) -> None:
    """Create channel NAME."""

    async def work(service: Service) -> None:
        config = service.channel_config(
            name, distinct=distinct, worker_count=worker, worker_field="--worker"
        )
        await service.create_channel(config)

    with_service(opts, work)
    click.echo(f"channel {name} created")


@queue.command("list")
@redis_options
@json_option()
def queue_list(as_json: bool, **opts: Any) -> None:
    """List channels with their settings and queued, scheduled and running counts."""

    data = with_service(opts, lambda s: s.channels())
    emit(data, as_json, lambda: tables.render(tables.CHANNEL_COLUMNS, tables.channel_rows(data)))


@queue.command("update")
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
@json_option("Print the channel's settings as JSON.")
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


@queue.command("pause")
@redis_options
@click.argument("name")
@json_option("Print the channel's settings as JSON.")
def queue_pause(name: str, as_json: bool, **opts: Any) -> None:
    """Stop starting jobs of channel NAME; running jobs go on and new jobs still queue."""
    _update_channel(name, {"paused": True}, as_json, opts, "paused")


@queue.command("resume")
@redis_options
@click.argument("name")
@json_option("Print the channel's settings as JSON.")
def queue_resume(name: str, as_json: bool, **opts: Any) -> None:
    """Start jobs of paused channel NAME again."""
    _update_channel(name, {"paused": False}, as_json, opts, "resumed")


def _update_channel(
    name: str, fields: dict[str, Any], as_json: bool, opts: dict[str, Any], done: str
) -> None:
    config = with_service(opts, lambda s: s.update_channel(name, fields)).as_dict()
    settings = " ".join(f"{key}={value}" for key, value in config.items() if key != "name")
    emit(config, as_json, lambda: f"channel {name} {done}: {settings}")


@queue.command("delete")
@redis_options
@click.argument("name")
def queue_delete(name: str, **opts: Any) -> None:
    """Delete channel NAME. Refused (exit 1) while jobs of it are queued, scheduled or running:
    pause it and let them finish, or cancel them, first."""
    with_service(opts, lambda s: s.delete_channel(name))
    click.echo(f"channel {name} deleted")
