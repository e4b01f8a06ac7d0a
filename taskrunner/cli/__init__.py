"""The `taskrunner` command line: the click group and its entry points. Each subcommand lives
in the module named after what it acts on: `run` (the runner process), `jobs`, `queue`
(channels), `dead`, `embedded`, `migrate` (from TaskRunner); `options` holds what they share
and `tables` their text tables.
The commands reach Redis through the service, like the HTTP APIs."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from taskrunner.cli import dead, embedded, jobs, migrate, queue, run
from taskrunner.cli.flags import Group


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="taskrunner")
def cli() -> None:
    """taskrunner: run shell commands pushed through Redis or HTTP, channel by channel."""


for command in (
    run.run,
    jobs.push,
    jobs.result,
    jobs.cancel,
    jobs.jobs,
    queue.status,
    queue.queue,
    dead.dead,
    embedded.embedded,
    migrate.migrate,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """`taskrunner`: every command also takes Go's flag forms (`-redis-host x`,
    `-task-mode=false`, `-help`: taskrunner.cli.flags)."""
    cli.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="taskrunner")


def task_runner_main(argv: Sequence[str] | None = None) -> None:
    """`task-runner`: upstream's entry point; with no subcommand it is `taskrunner run`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in cli.commands:
        args = ["run", *args]
    main(args)
