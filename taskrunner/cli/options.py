"""What the subcommands share: Redis options, the one-shot service call, output, exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click

from taskrunner.config import redis_url_from_parts
from taskrunner.errors import ChannelExists, Conflict, JobNotFound, TaskRunnerError
from taskrunner.service import Service, ServiceSettings
from taskrunner.validation import Limits

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

EXIT_RUNTIME_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_REDIS_HOST = "127.0.0.1:6379"


def env_option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that also reads TASKRUNNER_<NAME> from the environment."""
    name = decls[0].lstrip("-").split("/")[0].replace("-", "_").upper()
    kwargs.setdefault("envvar", f"TASKRUNNER_{name}")
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


def redis_options(func: F) -> F:
    """The Redis connection options of every subcommand (legacy --host/--password hidden)."""
    for decorator in reversed(
        [
            env_option(
                "--redis-url",
                help="Redis URL, overriding --redis-host: redis://[:PASS@]HOST:PORT/DB,"
                " rediss://... (TLS; ?ssl_ca_certs=FILE), unix:///PATH.sock?db=N, or"
                " redis+sentinel://[:PASS@]SENTINELS/SERVICE/DB with SENTINELS as"
                " HOST:PORT,HOST:PORT (follows the primary across failovers;"
                " ?sentinel_password=P). Passwords are never shown.",
            ),
            env_option(
                "--redis-host",
                default=None,
                help=f"Redis HOST:PORT.  [default: {DEFAULT_REDIS_HOST}]",
            ),
            env_option("--redis-password", default=None, help="Redis password."),
            env_option(
                "--redis-db", type=int, default=0, show_default=True, help="Redis database number."
            ),
            env_option(
                "--host",
                "legacy_host",
                default=None,
                hidden=True,
                envvar="TASKRUNNER_HOST",
                help="Old name of --redis-host.",
            ),
            env_option(
                "--password",
                "legacy_password",
                default=None,
                hidden=True,
                envvar="TASKRUNNER_PASSWORD",
                help="Old name of --redis-password.",
            ),
        ]
    ):
        func = decorator(func)
    return func


def resolve_redis_url(opts: dict[str, Any]) -> str:
    if opts.get("redis_url"):
        return str(opts["redis_url"])
    host = opts.get("redis_host") or opts.get("legacy_host") or DEFAULT_REDIS_HOST
    password = opts.get("redis_password") or opts.get("legacy_password")
    return redis_url_from_parts(host, password, int(opts.get("redis_db") or 0))


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"taskrunner: error: {message}", err=True)
    sys.exit(code)


def with_service(opts: dict[str, Any], work: Callable[[Service], Awaitable[T]]) -> T:
    """Run `work` on a service connected to the Redis the options name, then disconnect;
    a TaskRunnerError becomes an error message and its exit code."""

    async def main() -> T:
        settings = ServiceSettings(
            runner_id="cli",
            default_channel=opts.get("channel_default") or "default",
            limits=Limits(),
        )
        service = Service.from_url(resolve_redis_url(opts), settings)
        try:
            await service.ping()
            return await work(service)
        finally:
            await service.close()

    try:
        return asyncio.run(main())
    except TaskRunnerError as exc:
        fail(str(exc), exit_code(exc))


def exit_code(exc: TaskRunnerError) -> int:
    """1 for a runtime failure (unknown job, a clash with the current state), else 2."""
    if isinstance(exc, JobNotFound) or (
        isinstance(exc, Conflict) and not isinstance(exc, ChannelExists)
    ):
        return EXIT_RUNTIME_FAILURE
    return EXIT_USAGE


def json_option(help: str = "Print JSON.") -> Callable[[F], F]:
    """The `--json` flag of the subcommands that print something: sets `as_json`."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def emit(data: Any, as_json: bool, text: Callable[[], str]) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2) if as_json else text())
