"""What kingtask reports of a finished job: its message (the HTTP result's `message`, the
`result` of `r_<uuid>`) and the fields of its result hash, as kingtask's worker writes them
(the-no/kingtask worker/worker.go `DoTaskRequest`, `ExecBin`, `SetTaskResult`). Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from taskrunner.models import RPC, SCRIPT, Job, JobState

# the-no/kingtask task/task.go: ScriptTask = 1, RpcTaskGET = 2, POST = 3, PUT = 4, DELETE = 5
TASK_TYPES: Final = {"GET": "2", "POST": "3", "PUT": "4", "DELETE": "5"}
SCRIPT_TASK_TYPE: Final = "1"
# Go's names of signals (syscall.Signal.String), as an *exec.ExitError says "signal: killed".
GO_SIGNALS: Final = {
    1: "hangup", 2: "interrupt", 3: "quit", 4: "illegal instruction", 6: "aborted",
    7: "bus error", 8: "floating point exception", 9: "killed", 10: "user defined signal 1",
    11: "segmentation fault", 12: "user defined signal 2", 13: "broken pipe",
    14: "alarm clock", 15: "terminated",
}  # fmt: skip
EXIT_CODE_RE: Final = re.compile(r"^exit code (\d+)$")
SIGNAL_RE: Final = re.compile(r"^killed by signal (\d+) ")

Fields = Mapping[str, str | bytes]


def result_message(
    *, ok: bool, stdout: str, stderr: str, error: str, answered: bool, state: str
) -> str:
    """stdout on success; else stderr, an rpc answer's body (`answered`: an rpc job that got an
    HTTP status), the exit as Go words it (`exit status 3`, `signal: killed`), or the error
    text, in that order. Trailing newlines are dropped, as kingtask does."""
    if ok:
        return stdout.rstrip("\n")
    for text in (stderr, stdout if answered else "", go_error(error), state):
        if text.strip():
            return text.rstrip("\n")
    return ""


def go_error(error: str) -> str:
    """An exit error as Go's os/exec words it; other errors as they are."""
    if match := EXIT_CODE_RE.match(error):
        return f"exit status {match[1]}"
    if match := SIGNAL_RE.match(error):
        signum = int(match[1])
        return f"signal: {GO_SIGNALS.get(signum, f'signal {signum}')}"
    return error


def result_hash(job: Job, fields: Fields, *, state: JobState, attempt: int) -> dict[str, str]:
    """The fields of `r_<uuid>` for a job that ended in `state`: the request's fields as
    kingtask stores them, `is_success` and `result`."""
    ok = state == JobState.SUCCEEDED
    return {
        "uuid": job.id,
        "bin_name": job.url or "" if job.kind == RPC else job.task,
        "args": job.body or "" if job.kind == RPC else " ".join(job.args or ()),
        "start_time": str(int(job.run_at or job.created_at)),
        "time_interval": " ".join(str(int(i)) for i in job.retry_intervals),
        "index": str(max(0, attempt - 1)),
        "max_run_time": str(int(job.timeout_s)),
        "task_type": TASK_TYPES.get(job.method or "", SCRIPT_TASK_TYPE),
        "is_success": "1" if ok else "0",
        "result": result_message(
            ok=ok,
            stdout=_text(fields, "stdout"),
            stderr=_text(fields, "stderr"),
            error=_text(fields, "error"),
            answered=job.kind == RPC and bool(_text(fields, "http_status")),
            state=state.value,
        ),
    }


def writes_result(job: Job, state: JobState) -> bool:
    """Whether a job's end writes kingtask's result hash: a script or rpc job's final end."""
    return job.kind in (SCRIPT, RPC) and state.is_final


def _text(fields: Fields, name: str) -> str:
    value = fields.get(name, "")
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
