"""`taskrunner run`: its options, mapped onto Settings, and the process around the Runner
(pidfile, embedded Valkey, event loop); Go-style single-dash flags for upstream's scripts."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
import uvloop

from taskrunner import logs, memory
from taskrunner.cli.flags import Command
from taskrunner.cli.options import (
    EXIT_RUNTIME_FAILURE,
    EXIT_USAGE,
    env_option,
    fail,
    redis_options,
    resolve_redis_url,
)
from taskrunner.config import SETTINGS_FIELDS, Settings, load_config_file
from taskrunner.embedded import EmbeddedRedis
from taskrunner.errors import ConfigError, StoreUnavailable
from taskrunner.guard import WATCHDOG
from taskrunner.pidfile import pidfile
from taskrunner.runner import Runner

log = logging.getLogger("taskrunner.cli")
CONFIG_NOTES = "taskrunner.config_notes"


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """`--config FILE`: its values become defaults that flags and env vars override; what it
    holds that is no option is logged once logging is set up (`_log_config_notes`)."""
    if value:
        try:
            options, notes = load_config_file(Path(value))
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from exc
        known = {param.name for param in ctx.command.params}
        unknown = sorted(set(options) - known)
        ctx.meta[CONFIG_NOTES] = [(logging.INFO, note) for note in notes]
        if unknown:
            ctx.meta[CONFIG_NOTES].append((
                logging.WARNING,
                f"--config {value}: unknown key(s) {', '.join(unknown)} ignored: see"
                " `taskrunner run --help` for the options a config file may set",
            ))  # fmt: skip
        ctx.default_map = {**(ctx.default_map or {}), **options}
    return value


def _log_config_notes() -> None:
    for level, message in click.get_current_context().meta.get(CONFIG_NOTES, []):
        log.log(level, "%s", message)


@click.command(cls=Command)
@env_option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
            callback=_load_config, help="TOML file with any of these options, or kingtask's broker.yaml / worker.yaml"
                 " (flags and env win).")  # fmt: skip
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
    "--default-channels/--no-default-channels",
    default=True,
    show_default=True,
    help="Create biz and cron at start when missing, as TaskRunner does (off: channels you"
    " deleted stay deleted). The --channel-default channel is always created when missing.",
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
@env_option(
    "--colorful-tty/--no-colorful-tty",
    default=False,
    help="Colour the log on a terminal; GET / then answers upstream's banner.",
)
@env_option(
    "--shell/--no-shell",
    default=False,
    help="Run each task with /bin/sh -c instead of splitting it.",
)
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
    "--insecure/--no-insecure",
    default=False,
    help="Allow a non-loopback --http-addr without --auth-token, and a non-loopback"
    " --kingtask-addr.",
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
@env_option(
    "--adopt-interval",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between checks for commands queued under TaskRunner's keys (adopted as jobs).",
)
@env_option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or as JSON objects one a line.",
)
@env_option(
    "--log-level",
    type=click.Choice(["debug", "info", "warn", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Log lines of this level and above.",
)
@env_option(
    "--log-path",
    type=click.Path(file_okay=False),
    default=None,
    help="Write the log to DIR/sys.log instead of stderr (kingtask's log_path).",
)
@env_option(
    "--kingtask-addr",
    default=None,
    help="Serve kingtask's TCP broker protocol (task.NewBrokerClient) on HOST:PORT, e.g."
    " 127.0.0.1:9595 (kingtask's addr). It carries no token: a non-loopback address needs"
    " --insecure. Default: off.",
)
def run(**opts: Any) -> None:
    """Run the task runner until SIGUSR2/TERM/INT/HUP, then drain and exit 0."""
    try:
        logs.configure(
            log_format=opts["log_format"],
            colour=opts["colorful_tty"],
            level=opts["log_level"],
            log_dir=Path(opts["log_path"]) if opts["log_path"] else None,
        )
        _log_config_notes()
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
        "embedded_redis_port", "http_read_timeout", "adopt_interval",
    }  # fmt: skip
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}")
    return Settings(
        redis_url=resolve_redis_url(opts),
        embedded_redis_dir=Path(opts["embedded_redis"]) if opts["embedded_redis"] else None,
        embedded_redis_port=opts["embedded_redis_port"],
        concurrent=opts["concurrent"],
        channel_default=opts["channel_default"],
        default_channels=opts["default_channels"],
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
        adopt_interval_s=opts["adopt_interval"],
        kingtask_addr=opts["kingtask_addr"] or None,
        log_path=Path(opts["log_path"]) if opts["log_path"] else None,
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
    runner = Runner.from_url(settings, url)
    try:
        await runner.serve()
    except StoreUnavailable as exc:
        raise ConfigError(f"{exc} (is Redis running? set --redis-host or --redis-url)") from exc
    finally:
        await runner.store.close()
    log.info("taskrunner stopped%s", " after an internal failure" if runner.failed else "")
    return EXIT_RUNTIME_FAILURE if runner.failed else 0
