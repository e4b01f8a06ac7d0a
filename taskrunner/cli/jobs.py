"""Jobs: push one, show its record (optionally waiting for its end), cancel it, list them."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import click

from taskrunner.cli import tables
from taskrunner.cli.flags import Command
from taskrunner.cli.options import (
    EXIT_RUNTIME_FAILURE,
    emit,
    fail,
    json_option,
    redis_options,
    with_service,
)
from taskrunner.models import JOB_CREATE_FIELDS, JobRecord, JobState, parse_job_query
from taskrunner.models.listing import QUERY_PARAMETERS
from taskrunner.service import Service


def _push_fields(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The job fields given as push options: each option named after a field of
    `models.JobCreate` sets it (`--id` is `job_id`, a Python keyword otherwise)."""
    named = {"id" if option == "job_id" else option: value for option, value in opts.items()}
    return {k: v for k, v in named.items() if k in JOB_CREATE_FIELDS and v is not None}


@click.command(cls=Command)
@redis_options
@click.argument("task")
@click.option("--channel", "-c", default="", help="Channel (default: the default channel).")
@click.option("--id", "job_id", default=None, help="Caller-chosen job id (idempotency key).")
@click.option("--timeout", type=float, default=None, help="Seconds before the job is killed.")
@click.option("--dedup-key", default=None, help="What `distinct` compares instead of the argv.")
@click.option(
    "--note", default=None, help="Free text kept with the job (at most 1,000 characters)."
)
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
    "--channel-default",
    default="default",
    envvar="TASKRUNNER_CHANNEL_DEFAULT",
    hidden=True,
    help="The runners' --channel-default: where a push without --channel goes.",
)
@json_option()
def push(task: str, channel: str, args: Sequence[str], as_json: bool, **opts: Any) -> None:
    """Queue TASK (a command line) in a channel; prints the job id.

    Exits 1 when a live job with the same id, or the same command in a distinct channel,
    refused it (its id is printed)."""
    fields: dict[str, Any] = {"task": task, "channel": channel, **_push_fields(opts)}
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


@click.command(cls=Command)
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
@json_option("Print the whole record as JSON.")
def result(job_id: str, wait: bool, timeout_s: float, as_json: bool, **opts: Any) -> None:
    """Show a job's record: state, exit code, output."""

    async def work(service: Service) -> JobRecord:
        if wait:
            return await service.wait_job(job_id, timeout_s=timeout_s)
        return await service.get_job(job_id)

    record = with_service(opts, work)  # an unknown job: JobNotFound, exit 1
    view = record.to_view()
    emit(view, as_json, lambda: _describe(view))
    if wait and not record.final:
        fail(f"job {job_id} is still {record.state} after {timeout_s} s", EXIT_RUNTIME_FAILURE)


def _describe(view: Mapping[str, Any]) -> str:
    """A job's view as lines of `name value` (the set ones), then its output."""
    lines = [f"{name:<10} {view[name]}" for name in (
        "id", "channel", "task", "state", "attempt", "exit_code", "signal", "duration", "error",
    ) if view.get(name) not in (None, "")]  # fmt: skip
    for stream in ("stdout", "stderr"):
        if view.get(stream):
            cut = " (truncated)" if view.get(f"{stream}_truncated") else ""
            lines.append(f"--- {stream}{cut}\n{view[stream].rstrip()}")
    return "\n".join(lines)


@click.command(cls=Command)
@redis_options
@click.argument("job_id")
@json_option('Print {"id", "state"} as JSON.')
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


AGES: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _time_option(name: str, help_text: str) -> Callable[[Callable[..., Any]], Any]:
    return click.option(
        f"--{name}",
        default=None,
        metavar="TIME",
        help=f"{help_text}: unix seconds, or an age such as 90s, 15m, 2h, 7d (that long ago).",
    )


def _when(value: str | None, now: float) -> str | None:
    """A time option as unix seconds text: an age (`15m`) counts back from `now`."""
    if value and value[-1:] in AGES and value[:-1].replace(".", "", 1).isdigit():
        return str(now - float(value[:-1]) * AGES[value[-1]])
    return value


@click.command(cls=Command)
@redis_options
@click.option("--channel", "-c", default=None, help="Only this channel.")
@click.option(
    "--state",
    "-s",
    type=click.Choice([s.value for s in JobState]),
    default=None,
    help="Only jobs in this state.",
)
@_time_option("since", "Only jobs created at or after TIME")
@_time_option("until", "Only jobs created at or before TIME")
@click.option(
    "--command", "command", default=None, help="Only jobs whose command holds this text (any case)."
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="Show at most this many.",
)
@click.option(
    "--cursor",
    default=None,
    help="Go on from the cursor a page before printed (its next_cursor).",
)
@json_option('Print {"jobs", "next_cursor"} as JSON.')
def jobs(limit: int, as_json: bool, **opts: Any) -> None:
    """List jobs newest first (by creation time) across every channel, a page at a time.

    A page ends with the command that shows the next one (`--cursor`). With --state (other
    than running) or --command, a page looks at up to 1000 jobs and may show fewer than --limit,
    even none, with a cursor to go on."""
    now = time.time()
    params = {name: opts.get(name) for name in QUERY_PARAMETERS}
    params.update(since=_when(opts.get("since"), now), until=_when(opts.get("until"), now))
    records, next_cursor = with_service(  # a wrong value: InvalidJob, exit 2
        opts, lambda s: s.list_jobs(parse_job_query(params, limit=limit))
    )

    def text() -> str:
        table = tables.render(tables.JOB_COLUMNS, tables.job_rows(records)) if records else ""
        if next_cursor is None:
            return table or "no jobs"
        flags = "".join(
            f" --{name} {shlex.quote(str(params[name]))}"
            for name in QUERY_PARAMETERS
            if name != "cursor" and params.get(name) is not None
        )
        more = f"more: taskrunner jobs{flags} --limit {limit} --cursor {next_cursor}"
        return f"{table or 'no match among the jobs looked at: go on with'}\n{more}"

    emit({"jobs": [r.to_view() for r in records], "next_cursor": next_cursor}, as_json, text)
