"""`taskrunner embedded status|stop DIR`: the bundled Valkey that `run --embedded-redis DIR`
starts keeps running after the runner stops, so it is inspected and stopped on its own."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from taskrunner import logs
from taskrunner.cli.flags import Group
from taskrunner.embedded import EmbeddedRedis


@click.group(cls=Group)
def embedded() -> None:
    """The embedded Valkey server of `run --embedded-redis DIR`, which outlives the runner."""


@embedded.command("status")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
def embedded_status(data_dir: Path) -> None:
    """Show whether a server runs on DATA_DIR (exit 0) or not (exit 1), its pid, port, data."""
    status = EmbeddedRedis(data_dir).status()
    for line in status.lines():
        click.echo(line.replace("DIR", str(status.data_dir)))
    sys.exit(0 if status.state == "running" else 1)


@embedded.command("stop")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
def embedded_stop(data_dir: Path) -> None:
    """Stop the server running on DATA_DIR; it flushes its append-only file first. Stop the
    runners that use it first: they lose their Redis."""
    logs.configure(log_format="text", colour=False, level="info")
    server = EmbeddedRedis(data_dir)
    if not server.attach_running():
        click.echo(f"no embedded Valkey runs on {server.data_dir}: nothing to stop")
        return
    server.stop()
