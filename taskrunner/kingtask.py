"""kingtask's job kinds: script and rpc jobs built from kingtask's request fields.

Parsing is pure except `find_script`, which checks the file system: a script must be an
executable regular file directly inside --bin-path, when it is submitted and again when it runs.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from taskrunner.errors import InvalidArgument, InvalidJob
from taskrunner.models import RPC, SCRIPT, Job
from taskrunner.validation import (
    JOB_ID_RE,
    MAX_SECONDS,
    Limits,
    brief,
    check_args_length,
    check_args_size,
    check_text,
    load_json,
    parse_intervals,
    parse_number,
    parse_seconds,
    validate_channel_name,
)

KINGTASK_CHANNEL = "kingtask"
RPC_METHODS = ("GET", "PUT", "POST", "DELETE")
MAX_BIN_NAME_CHARS = 255
MAX_URL_CHARS = 8192
NO_BIN_PATH = (
    "this runner has no --bin-path, so it cannot run scripts: start it with"
    " --bin-path DIR (the directory holding the executables)"
)


def in_kingtask_channel(job: Job) -> bool:
    """A kingtask job (script or rpc) left in kingtask's own channel: kingtask had no channels,
    so that one is created on first use."""
    return job.kind in (SCRIPT, RPC) and job.channel == KINGTASK_CHANNEL


def missing_channel_hint(job: Job) -> str:
    """What to do when the channel a job names does not exist, in its API's terms."""
    if job.kind in (SCRIPT, RPC):
        return f'create it first (POST /queue name=...), or leave "channel" empty to use {KINGTASK_CHANNEL!r}'
    return "create it first (POST /queue name=... or `taskrunner queue create NAME`)"


def program_of(job: Job, *, shell: bool, bin_path: Path | None) -> str | None:
    """The program a job runs, as allowlists see it: argv[0] of its process. A command's first
    word (`task` itself when `args` is given), `/bin/sh` with `shell`; a script's absolute path
    inside `bin_path`; None for an rpc job (no process)."""
    if job.kind == RPC:
        return None
    if job.kind == SCRIPT:
        return str(bin_path.absolute() / job.task) if bin_path is not None else job.task
    return job.argv(shell=shell)[0]


def find_script(bin_path: Path | None, name: str) -> Path:
    """The executable regular file `name` directly inside `bin_path`; InvalidJob saying why not."""
    check_bin_name(name)
    if bin_path is None:
        raise InvalidJob(NO_BIN_PATH)
    path = bin_path.absolute() / name  # absolute: the script also runs with cwd = bin_path
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InvalidJob(
            f'"bin_name" {name!r}: no such file in --bin-path {bin_path}: put an executable there'
        ) from None
    except OSError as exc:
        raise InvalidJob(f'"bin_name" {name!r}: cannot read {path}: {exc.strerror}') from exc
    if not stat.S_ISREG(mode):
        raise InvalidJob(
            f'"bin_name" {name!r}: {path} is not a regular file: name an executable file'
        )
    if not os.access(path, os.X_OK):
        raise InvalidJob(f'"bin_name" {name!r}: {path} is not executable: run chmod +x {path}')
    return path


def check_bin_name(name: str) -> str:
    """Refuse names that could leave --bin-path: empty, with `/`, with `..`, or a NUL byte."""
    if not name:
        raise InvalidArgument(
            '"bin_name" is required: the name of an executable file in --bin-path'
        )
    if "/" in name or ".." in name or "\0" in name:
        raise InvalidJob(
            f'"bin_name" {name[:80]!r} must be a plain file name inside --bin-path:'
            " no '/', no '..'"
        )
    if len(name) > MAX_BIN_NAME_CHARS:
        raise InvalidJob(f'"bin_name" is longer than {MAX_BIN_NAME_CHARS} characters')
    return check_text(name, "bin_name")


def script_job(
    fields: Mapping[str, Any], *, bin_path: Path | None, now: float, limits: Limits
) -> Job:
    """kingtask's `POST .../script`: `bin_name`, `args` (space-separated) and the common fields."""
    name = fields.get("bin_name")
    if name is None or name == "":
        name = ""
    elif not isinstance(name, str):
        raise InvalidJob(f'"bin_name" must be a string, got {type(name).__name__}')
    find_script(bin_path, name)
    return Job(
        id=str(uuid.uuid4()),
        task=name,
        kind=SCRIPT,
        args=_script_args(fields.get("args"), limits),
        **_common(fields, now),
    )


def task_request_job(
    fields: Mapping[str, Any], *, bin_path: Path | None, now: float, limits: Limits
) -> Job:
    """kingtask's TaskRequest (task/task.go: `uuid`, `bin_name`, `args`, `start_time`,
    `time_interval`, `index`) as a script job whose id is the request's `uuid`: the client
    reads its result as `r_<uuid>`. `index` (upstream's retry counter) is not used."""
    job_id = fields.get("uuid")
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise InvalidJob(
            f'"uuid" must be the task\'s id (letters, digits, "_.:-", at most 128), got'
            f" {brief(job_id)}: task.NewTaskRequest makes one"
        )
    job = script_job(fields, bin_path=bin_path, now=now, limits=limits)
    return msgspec.structs.replace(job, id=job_id)


def rpc_job(fields: Mapping[str, Any], *, now: float, limits: Limits) -> Job:
    """kingtask's `POST .../rpc`: `method`, `url`, `args` (a JSON text) and the common fields."""
    method = _method(fields.get("method"))
    url = _url(fields.get("url"))
    body = _body(fields.get("args"), limits)  # sent as the body, a GET's too, as kingtask
    return Job(
        id=str(uuid.uuid4()),
        task=f"{method} {url}",
        kind=RPC,
        method=method,
        url=url,
        body=body,
        **_common(fields, now),
    )


def _common(fields: Mapping[str, Any], now: float) -> dict[str, Any]:
    """channel, start_time -> run_at, time_interval -> retries, max_run_time -> timeout."""
    intervals = _intervals(fields.get("time_interval"))
    start_time = parse_number(fields.get("start_time"), "start_time")
    if start_time is not None and not 0 <= start_time <= now + MAX_SECONDS:
        raise InvalidJob(
            f'"start_time" must be unix seconds, at most {MAX_SECONDS:.0f} s (10 years) from'
            f" now (0 or empty = now), got {brief(fields.get('start_time'))}"
        )
    return {
        "channel": _channel(fields.get("channel")),
        "run_at": start_time or None,
        "retries": len(intervals),
        "retry_intervals": intervals,
        "timeout_s": parse_seconds(fields.get("max_run_time"), "max_run_time"),
        "created_at": now,
    }


def _channel(value: Any) -> str:
    if value is None or value == "":
        return KINGTASK_CHANNEL
    if not isinstance(value, str):
        raise InvalidJob(f'"channel" must be a string, got {type(value).__name__}')
    return validate_channel_name(value)


def _intervals(value: Any) -> tuple[float, ...]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    return parse_intervals(value, "time_interval")


def _script_args(value: Any, limits: Limits) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        if len(value) > limits.max_task_chars:
            raise InvalidJob(
                f'"args" is {len(value)} characters, over the limit of {limits.max_task_chars}'
            )
        args = value.split()
    elif isinstance(value, list) and all(_is_arg(a) for a in value):
        args = [a if isinstance(a, str) else json.dumps(a) for a in value]
    elif _is_arg(value):
        args = [json.dumps(value)]
    else:
        raise InvalidJob('"args" must be a string of arguments separated by spaces')
    check_args_size(args, limits)
    return tuple(check_text(a, "args") for a in args)


def _is_arg(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _method(value: Any) -> str:
    method = value.strip().upper() if isinstance(value, str) else ""
    if method not in RPC_METHODS:
        raise InvalidArgument(f'"method" must be one of {", ".join(RPC_METHODS)}, got {value!r}')
    return method


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument('"url" is required: the http:// or https:// address to call')
    url = value.strip()
    if len(url) > MAX_URL_CHARS:
        raise InvalidJob(f'"url" is longer than {MAX_URL_CHARS} characters')
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidJob('"url" contains spaces or control characters: percent-encode them')
    check_text(url, "url")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidJob(f'"url" {url[:200]!r} is not a valid URL: {exc}') from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise InvalidJob(
            f'"url" {url[:200]!r} must be an absolute http:// or https:// URL with a host'
        )
    return url


def _body(value: Any, limits: Limits) -> str | None:
    """kingtask's `args` of an rpc job: a JSON text (a JSON value in a JSON body is accepted)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        check_args_length(value, limits)
        must = '"args" must be a JSON text'
        load_json(value, f'{must}, e.g. {{"a": 1}}', f"{must}: it is nested too deeply")
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (ValueError, RecursionError):
            raise InvalidJob('"args" must be a JSON value: it is nested too deeply') from None
    check_text(text, "args", argv=False)
    check_args_length(text, limits)
    return text
