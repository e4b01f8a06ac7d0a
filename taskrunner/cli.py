"""Command line: `taskrunner run` and the subcommands that talk to Redis directly."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import uvloop

from taskrunner import cli_admin, logs, memory, tables
from taskrunner.cli_base import (
    EXIT_RUNTIME_FAILURE,
    EXIT_USAGE,
    emit,
    env_option,
    fail,
    redis_options,
    resolve_redis_url,
    with_service,
)
from taskrunner.config import SETTINGS_FIELDS, Settings, load_config_file
from taskrunner.embedded import EmbeddedRedis
from taskrunner.errors import ConfigError, StoreUnavailable
from taskrunner.guard import WATCHDOG
from taskrunner.pidfile import pidfile
from taskrunner.runner import Runner
from taskrunner.service import Service
from taskrunner.store import Store

log = logging.getLogger("taskrunner.cli")


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """`--config FILE`: its values become defaults that flags and env vars override."""
    if value:
        try:
            options = load_config_file(Path(value))
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from exc
        ctx.default_map = {**(ctx.default_map or {}), **options}
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="taskrunner")
def cli() -> None:
    """taskrunner: run shell commands pushed through Redis or HTTP, channel by channel."""


@cli.command()
@env_option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
            callback=_load_config, help="TOML file with any of these options (flags and env win).")  # fmt: skip
@redis_options
@env_option("--embedded-redis", type=click.Path(file_okay=False), default=None,
            help="Start the bundled Valkey server with its data (AOF) in this directory.")  # fmt: skip
@env_option("--embedded-redis-port", type=int, default=6399, show_default=True,
            help="Port of the embedded Valkey on 127.0.0.1 (0: any free port).")  # fmt: skip
@env_option(
    "--concurrent",
    type=int,
    default=5,
    show_default=True,
    help="Default worker count of a channel.",
)
@env_option(
    "--channel-default",
    default="default",
    show_default=True,
    help="Channel for jobs that name none.",
)
@env_option(
    "--http-addr", default="127.0.0.1:60001", show_default=True, help="HTTP listen HOST:PORT."
)
@env_option(
    "--http-read-timeout",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds a client gets to send a request's headers, then its body (408);"
    " a connection that sends no complete request in that time is closed.",
)
@env_option(
    "--http-max-connections",
    type=int,
    default=0,
    show_default=True,
    help="Open HTTP connections at most; past it a new one closes the oldest idle one, or gets"
    " 503 when all are busy (0: a quarter of ulimit -n, 16 to 1024).",
)
@env_option(
    "--pidfile", default="/tmp/task-runner.pid", show_default=True, help="Pidfile ('' for none)."
)
@env_option(
    "--task-mode/--no-task-mode",
    default=True,
    show_default=True,
    help="Run jobs (off: route and serve HTTP only).",
)
@env_option("--colorful-tty", is_flag=True, help="Colour the log on a terminal.")
@env_option("--shell", is_flag=True, help="Run each task with /bin/sh -c instead of splitting it.")
@env_option(
    "--bin-path",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Directory of kingtask script jobs.",
)
@env_option(
    "--result-ttl",
    type=int,
    default=86400,
    show_default=True,
    help="Seconds a finished job's record is kept.",
)
@env_option(
    "--drain-timeout",
    type=float,
    default=50.0,
    show_default=True,
    help="Seconds running jobs get to finish on stop.",
)
@env_option(
    "--kill-grace",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL.",
)
@env_option(
    "--default-timeout",
    type=float,
    default=0.0,
    show_default=True,
    help="Job timeout when neither job nor channel sets one (0: none).",
)
@env_option(
    "--lease",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds without heartbeat before a runner's jobs are handed back.",
)
@env_option(
    "--auth-token",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' on HTTP (not /healthz).",
)
@env_option(
    "--insecure", is_flag=True, help="Allow a non-loopback --http-addr without --auth-token."
)
@env_option(
    "--allow",
    multiple=True,
    metavar="PATTERN",
    help="Run only programs matching PATTERN: a name or glob (php, 'backup-*') matches the"
    " program's file name, a path glob ('/usr/local/bin/*') its whole path. Repeatable;"
    " the variable takes patterns separated by spaces. Default: any program"
    " (docs/SECURITY.md).",
)
@env_option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@env_option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def run(**opts: Any) -> None:
    """Run the task runner until SIGUSR2/TERM/INT/HUP, then drain and exit 0."""
    logs.configure(
        log_format=opts["log_format"], colour=opts["colorful_tty"], level=opts["log_level"]
    )
    try:
        settings = _settings(opts)
        settings.check_exposure()
        with pidfile(settings.pidfile):
            code = _serve(settings)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    sys.exit(code)


def _settings(opts: dict[str, Any]) -> Settings:
    unknown = set(opts) - SETTINGS_FIELDS - {
        "redis_host", "redis_password", "redis_db", "legacy_host", "legacy_password",
        "result_ttl", "drain_timeout", "kill_grace", "default_timeout", "lease", "embedded_redis",
        "embedded_redis_port", "http_read_timeout",
    }  # fmt: skip
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}")
    return Settings(
        redis_url=resolve_redis_url(opts),
        embedded_redis_dir=Path(opts["embedded_redis"]) if opts["embedded_redis"] else None,
        embedded_redis_port=opts["embedded_redis_port"],
        concurrent=opts["concurrent"],
        channel_default=opts["channel_default"],
        http_addr=opts["http_addr"],
        http_read_timeout_s=opts["http_read_timeout"],
        http_max_connections=opts["http_max_connections"],
        pidfile=Path(opts["pidfile"]) if opts["pidfile"] else None,
        task_mode=opts["task_mode"],
        colorful_tty=opts["colorful_tty"],
        shell=opts["shell"],
        bin_path=Path(opts["bin_path"]).resolve() if opts["bin_path"] else None,
        result_ttl_s=opts["result_ttl"],
        drain_timeout_s=opts["drain_timeout"],
        kill_grace_s=opts["kill_grace"],
        default_timeout_s=opts["default_timeout"],
        lease_s=opts["lease"],
        auth_token=opts["auth_token"] or None,
        insecure=opts["insecure"],
        log_format=opts["log_format"],
        log_level=opts["log_level"],
        allow=tuple(opts["allow"]),
    )


def _serve(settings: Settings) -> int:
    memory.return_big_blocks()  # RSS goes back down after a big message or reply
    embedded = None
    if settings.embedded_redis_dir is not None:
        embedded = _embedded_server(settings.embedded_redis_dir, settings.embedded_redis_port)
    try:
        url = embedded.url if embedded is not None else settings.redis_url
        return uvloop.run(_serve_async(settings, url))
    finally:
        if embedded is not None:
            log.info(
                "embedded Valkey keeps running (port %d, pid %d) with the queue: the next "
                "start attaches to it; `taskrunner embedded stop %s` stops it",
                embedded.port, embedded.pid, embedded.data_dir,
            )  # fmt: skip
        WATCHDOG.close()


def _embedded_server(data_dir: Path, port: int) -> EmbeddedRedis:
    """Attach to the embedded Valkey running on `data_dir`, or start it."""
    embedded = EmbeddedRedis(data_dir, port=port or None)
    try:
        embedded.start()
    except ConfigError as exc:
        if embedded.attached or "does not answer" in str(exc):
            raise
        raise ConfigError(
            f"{exc}; choose another --embedded-redis-port (0: any free port)"
        ) from exc
    log.info(
        'push jobs with: redis-cli -p %d LPUSH task:prepare:queue \'{"task":"date","chan":"biz"}\'',
        embedded.port,
    )
    return embedded


async def _serve_async(settings: Settings, url: str) -> int:
    store = Store.from_url(url)
    runner = Runner(settings, store)
    try:
        await runner.serve()
    except StoreUnavailable as exc:
        raise ConfigError(f"{exc} (is Redis running? set --redis-host or --redis-url)") from exc
    finally:
        await store.close()
    log.info("taskrunner stopped%s", " after an internal failure" if runner.failed else "")
    return EXIT_RUNTIME_FAILURE if runner.failed else 0


# -- subcommands that talk to Redis directly --------------------------------------------------


# push options that are job fields, and the field each one sets
PUSH_FIELDS = {
    "job_id": "id", "timeout": "timeout", "dedup_key": "dedup_key", "delay": "delay",
    "run_at": "run_at", "retries": "retries", "retry_intervals": "retry_intervals",
}  # fmt: skip


@cli.command()
@redis_options
@click.argument("task")
@click.option("--channel", "-c", default="", help="Channel (default: the default channel).")
@click.option("--id", "job_id", default=None, help="Caller-chosen job id (idempotency key).")
@click.option("--timeout", type=float, default=None, help="Seconds before the job is killed.")
@click.option("--dedup-key", default=None, help="What `distinct` compares instead of the argv.")
@click.option(
    "--arg", "args", multiple=True, help="Exact argv entry after the program (repeatable)."
)
@click.option(
    "--delay", type=float, default=None, help="Run no earlier than this many seconds from now."
)
@click.option(
    "--run-at", type=float, default=None, help="Run no earlier than this unix time (seconds)."
)
@click.option(
    "--retries",
    type=int,
    default=None,
    help="Retries after the first attempt (default: the channel's, or the number of"
    " --retry-intervals).",
)
@click.option(
    "--retry-intervals",
    default=None,
    metavar='"S S ..."',
    help='Seconds between attempts, e.g. "60 600 3600"; the last one repeats.',
)
@click.option(
    "--channel-default", default="default", envvar="TASKRUNNER_CHANNEL_DEFAULT", hidden=True
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def push(task: str, channel: str, args: Sequence[str], as_json: bool, **opts: Any) -> None:
    """Queue TASK (a command line) in a channel; prints the job id.

    Exits 1 when a live job with the same id, or the same command in a distinct channel,
    refused it (its id is printed)."""
    fields: dict[str, Any] = {"task": task, "channel": channel}
    fields.update(
        {field: opts[option] for option, field in PUSH_FIELDS.items() if opts[option] is not None}
    )
    if args:
        fields["args"] = list(args)
    admission = with_service(opts, lambda s: s.submit(fields, source="cli"))
    data = {"id": admission.job_id, "result": admission.accepted, "status": admission.status}
    emit(
        data,
        as_json,
        lambda: (
            admission.job_id
            if admission.accepted
            else f"refused: duplicate of live job {admission.job_id}"
        ),
    )
    if not admission.accepted:
        sys.exit(EXIT_RUNTIME_FAILURE)


@cli.command()
@redis_options
@click.option("--channel", "-c", default=None, help="Only this channel.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
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


@cli.group()
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
        await service.create_channel(
            service.channel_config(name, distinct=distinct, worker_count=worker)
        )

    with_service(opts, work)
    click.echo(f"channel {name} created")


@queue.command("list")
@redis_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def queue_list(as_json: bool, **opts: Any) -> None:
    """List channels with their settings and queued, scheduled and running counts."""

    async def work(service: Service) -> list[dict[str, Any]]:
        channels = await service.store.load_channels()
        return [
            {**config.as_dict(), **await service.channel_counts(name)}
            for name, config in sorted(channels.items())
        ]

    data = with_service(opts, work)
    emit(data, as_json, lambda: tables.render(tables.CHANNEL_COLUMNS, tables.channel_rows(data)))


@cli.command()
@redis_options
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait until the job ends (woken by Redis pub/sub).")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds --wait waits.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
def result(job_id: str, wait: bool, timeout_s: float, as_json: bool, **opts: Any) -> None:
    """Show a job's record: state, exit code, output."""

    async def work(service: Service) -> dict[str, str] | None:
        if wait:
            return await service.store.wait_final(job_id, timeout_s=timeout_s)
        return await service.store.get_job(job_id)

    record = with_service(opts, work)
    if record is None:
        fail(f"no job {job_id!r}: it never existed or its record expired", EXIT_RUNTIME_FAILURE)
        return
    emit(record, as_json, lambda: _describe(record))
    if wait and record.get("state") not in ("succeeded", "failed", "dead", "cancelled"):
        fail(
            f"job {job_id} is still {record.get('state')} after {timeout_s} s", EXIT_RUNTIME_FAILURE
        )


def _describe(record: dict[str, str]) -> str:
    lines = [f"{name:<10} {record[name]}" for name in (
        "id", "channel", "task", "state", "attempt", "exit_code", "signal", "duration", "error",
    ) if record.get(name)]  # fmt: skip
    for stream in ("stdout", "stderr"):
        if record.get(stream):
            cut = " (truncated)" if record.get(f"{stream}_truncated") == "1" else ""
            lines.append(f"--- {stream}{cut}\n{record[stream].rstrip()}")
    return "\n".join(lines)


@cli.command()
@redis_options
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help='Print {"id", "state"} as JSON.')
def cancel(job_id: str, as_json: bool, **opts: Any) -> None:
    """Cancel a queued, scheduled or running job (running: its process group is killed).

    Exits 1 if the job is unknown or had already ended."""
    state = with_service(opts, lambda s: s.cancel(job_id))
    if as_json:
        emit({"id": job_id, "state": state}, True, str)
        if state not in ("cancelled", "running"):
            sys.exit(EXIT_RUNTIME_FAILURE)
    elif state == "cancelled":
        click.echo(f"job {job_id} cancelled")
    elif state == "running":
        click.echo(f"job {job_id} is running: its runner was told to kill it")
    else:
        fail(f"job {job_id} already ended: {state}", EXIT_RUNTIME_FAILURE)


for admin_command in (
    cli_admin.queue_update,
    cli_admin.queue_pause,
    cli_admin.queue_resume,
    cli_admin.queue_delete,
):
    queue.add_command(admin_command)
cli.add_command(cli_admin.jobs)


@cli.group()
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


cli.add_command(cli_admin.dead)


# -- entry points -----------------------------------------------------------------------------

GO_BOOL_FLAGS = {
    "task-mode": ("--task-mode", "--no-task-mode"),
    "colorful-tty": ("--colorful-tty", None),
}


def go_style_args(args: Sequence[str]) -> list[str]:
    """Accept Go's single-dash long flags (`-redis-host x`, `-task-mode=false`)."""
    long_names = {
        name[2:]
        for param in run.params
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--")
    }
    out = []
    for arg in args:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            name, sep, value = arg[1:].partition("=")
            if name in GO_BOOL_FLAGS and sep:
                on, off = GO_BOOL_FLAGS[name]
                flag = on if value.lower() in ("1", "t", "true") else off
                if flag is not None:
                    out.append(flag)
                continue
            if name in long_names:
                out.append(f"--{name}{sep}{value}")
                continue
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":
        args = ["run", *go_style_args(args[1:])]
    cli.main(args=args, prog_name="taskrunner")


def task_runner_main(argv: Sequence[str] | None = None) -> None:
    """`task-runner`: upstream's entry point; with no subcommand it is `taskrunner run`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in cli.commands:
        args = ["run", *args]
    main(args)
