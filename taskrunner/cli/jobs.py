"""Jobs: push one, show its record (optionally waiting for its end), cancel it, list them."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

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
from taskrunner.models import JOB_CREATE_FIELDS, JobRecord, JobState
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
@json_option('Print {"jobs", "next_offset"} as JSON.')
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

    def text() -> str:
        if not records:
            return "no jobs"
        table = tables.render(tables.JOB_COLUMNS, tables.job_rows(records))
        if next_offset is None:
            return table
        filters = "".join(
            f" {flag} {value}"
            for flag, value in (("--channel", channel), ("--state", state), ("--limit", limit))
            if value is not None
        )
        return f"{table}\nmore: taskrunner jobs{filters} --offset {next_offset}"

    emit({"jobs": [r.to_view() for r in records], "next_offset": next_offset}, as_json, text)
