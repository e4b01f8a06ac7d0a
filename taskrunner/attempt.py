"""Running one attempt of a job: what it runs, starting it, judging and logging its end.

``ExecPolicy`` holds the runner-wide settings; a job becomes an ``ExecSpec`` (a command or a
kingtask script, checked against the allowlists) or an ``RpcSpec`` (an HTTP request), and
``launch`` starts it as a ``Running`` attempt. ``judge`` applies kingtask's stderr rule to its
result and ``log_output`` logs its output lines (channel ``log_output``). The channel that
claims jobs and records their ends is taskrunner/channel.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from taskrunner.allow import check_program
from taskrunner.errors import InvalidJob, SpawnError
from taskrunner.exec_result import ExecResult
from taskrunner.executor import Execution
from taskrunner.kingtask import find_script
from taskrunner.models import RPC, SCRIPT, ChannelConfig, Job
from taskrunner.rpc import RpcCall, RpcSpec
from taskrunner.spawn import ExecSpec
from taskrunner.store import Claimed

output_log = logging.getLogger("taskrunner.output")  # jobs' output lines (channel log_output)

OUTPUT_LOG_LINES = 200  # output lines logged per attempt at most (channel log_output)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecPolicy:
    """Runner-wide execution settings every channel shares."""

    runner_id: str
    shell: bool = False
    kill_grace_s: float = 5.0
    default_timeout_s: float = 0.0
    capture_bytes: int = 65536
    result_ttl_s: int = 86400
    task_mode: bool = True
    bin_path: Path | None = None  # where script jobs' executables live (--bin-path)
    allow: tuple[str, ...] = ()  # --allow: the programs this runner runs (taskrunner.allow)


class Running(Protocol):
    """A started attempt: a process group (`Execution`) or an HTTP request (`RpcCall`)."""

    def terminate(self, reason: str) -> None: ...

    async def wait(self) -> ExecResult: ...


async def launch(
    job: Job,
    *,
    config: ChannelConfig,
    policy: ExecPolicy,
    http: aiohttp.ClientSession | None,
    extra: Mapping[str, Any],
) -> Running:
    """Start the attempt; never suspends once started, so no stop can slip in between.

    `http` is the runner's client session for rpc jobs (None: they fail to start)."""
    if job.kind == RPC:
        if http is None:
            raise SpawnError(f"rpc job {job.id} cannot start: this runner has no HTTP client")
        return RpcCall.start(rpc_spec(job, config=config, policy=policy, extra=extra), session=http)
    return await Execution.start(exec_spec(job, config=config, policy=policy))


def timeout_s(job: Job, *, config: ChannelConfig, policy: ExecPolicy) -> float:
    """The job's own timeout, else its channel's, else the runner's (0: none)."""
    return job.timeout_s or config.timeout_s or policy.default_timeout_s


def exec_spec(job: Job, *, config: ChannelConfig, policy: ExecPolicy) -> ExecSpec:
    """What a command or script job runs; NotAllowed if an allowlist refuses its program."""
    if job.kind == SCRIPT:  # checked again at run time: the file may be gone or changed
        program = find_script(policy.bin_path, job.task)
        argv, cwd = (str(program), *(job.args or ())), str(program.parent)
    else:
        argv, cwd = job.argv(shell=policy.shell), None
    check_program(argv[0], runner=policy.allow, channel=config.allow, channel_name=config.name)
    return ExecSpec(
        argv=argv,
        cwd=cwd,
        job_id=job.id,
        timeout_s=timeout_s(job, config=config, policy=policy),
        kill_grace_s=policy.kill_grace_s,
        capture_bytes=policy.capture_bytes,
    )


def rpc_spec(
    job: Job, *, config: ChannelConfig, policy: ExecPolicy, extra: Mapping[str, Any]
) -> RpcSpec:
    """The HTTP request an rpc job makes; InvalidJob if it lacks a method or url."""
    if not job.method or not job.url:
        raise InvalidJob(f"rpc job {job.id} has no method or url: submit it again")
    return RpcSpec(
        method=job.method,
        url=job.url,
        body=job.body,
        timeout_s=timeout_s(job, config=config, policy=policy),
        capture_bytes=policy.capture_bytes,
        log_context=dict(extra),
    )


def judge(job: Job, result: ExecResult) -> ExecResult:
    """kingtask's rule for scripts: output on stderr is a failure, even with exit code 0."""
    if job.kind == SCRIPT and result.succeeded and result.stderr:
        return replace(
            result, error="wrote to stderr: a script reports failure there (kingtask's rule)"
        )
    return result


def context(claimed: Claimed, *, pid: int | None = None) -> dict[str, Any]:
    """A job's fields for log records (`extra=`): job_id, channel, attempt and pid if known."""
    context: dict[str, Any] = {
        "job_id": claimed.job.id,
        "channel": claimed.job.channel,
        "attempt": claimed.attempt,
    }
    if pid is not None:
        context["pid"] = pid
    return context


def log_output(result: ExecResult, extra: Mapping[str, Any]) -> None:
    """Log an attempt's captured output, one record per line, OUTPUT_LOG_LINES at most."""
    job_id, left = extra["job_id"], OUTPUT_LOG_LINES
    streams = (
        ("stdout", result.stdout, result.stdout_truncated),
        ("stderr", result.stderr, result.stderr_truncated),
    )
    for stream, data, truncated in streams:
        lines = data.decode("utf-8", "replace").splitlines()
        context = {**extra, "stream": stream}
        for line in lines[:left]:
            output_log.info("job %s %s: %s", job_id, stream, line, extra=context)
        notes = []
        if len(lines) > left:
            skipped = len(lines) - left
            notes.append(
                f"{skipped} more line(s) not logged: {OUTPUT_LOG_LINES} lines a job at most"
            )
        if truncated:
            notes.append("the middle of the output was not captured")
        if notes:
            output_log.info("job %s %s: [%s]", job_id, stream, "; ".join(notes), extra=context)
        left = max(0, left - len(lines))
