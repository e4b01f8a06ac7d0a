"""kingtask's requests left in Redis (a hash `t_<uuid>` and the uuid in `request_uuid_set`)
made into jobs. Pure: the fields as kingtask's broker writes them (linlams/kingtask
broker/broker.go `AddRequestToRedis`; the-no/kingtask adds `max_run_time` and `task_type`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec

from taskrunner.errors import InvalidJob
from taskrunner.kingtask import rpc_job, script_job
from taskrunner.kingtask_result import SCRIPT_TASK_TYPE, TASK_TYPES
from taskrunner.models import Job
from taskrunner.validation import JOB_ID_RE, Limits

# The fields kingtask's worker reads of every request (worker/worker.go `Run`: HMGet).
REQUIRED: Final = ("uuid", "bin_name", "args", "start_time", "time_interval", "index")
METHODS: Final = {number: method for method, number in TASK_TYPES.items()}


def request_job(
    uuid: str, fields: Mapping[str, str], *, bin_path: Path | None, now: float, limits: Limits
) -> Job:
    """The job of request `uuid` (its id is the uuid); InvalidJob saying what is malformed."""
    if not fields:
        raise InvalidJob(f"no hash t_{uuid[:200]}: write the request's hash before SADD")
    missing = [name for name in REQUIRED if name not in fields]
    if missing:
        raise InvalidJob(
            f"t_{uuid[:200]} lacks {', '.join(missing)}: a request has {', '.join(REQUIRED)}"
        )
    if fields["uuid"] != uuid:
        raise InvalidJob(f'"uuid" {fields["uuid"][:200]!r} is not the uuid of its key t_{uuid}')
    if not JOB_ID_RE.match(uuid):
        raise InvalidJob(f"uuid {uuid[:200]!r}: use 1-128 letters, digits, '_', '.', ':', '-'")
    index = _integer(fields, "index")
    _integer(fields, "start_time")  # kingtask's worker refuses what strconv.ParseInt does
    intervals = fields["time_interval"].split()
    common = {
        "args": fields["args"],
        "start_time": fields["start_time"],
        "time_interval": " ".join(intervals[index:]),  # retries left after attempt `index`
        "max_run_time": fields.get("max_run_time") or None,
    }
    task_type = fields.get("task_type") or SCRIPT_TASK_TYPE
    if task_type == SCRIPT_TASK_TYPE:
        job = script_job(
            {**common, "bin_name": fields["bin_name"]}, bin_path=bin_path, now=now, limits=limits
        )
    elif task_type in METHODS:
        rpc = {**common, "method": METHODS[task_type], "url": fields["bin_name"]}
        job = rpc_job(rpc, now=now, limits=limits)
    else:
        raise InvalidJob(f'"task_type" {task_type[:40]!r} must be 1 (script) or 2-5 (rpc)')
    return msgspec.structs.replace(job, id=uuid)


def _integer(fields: Mapping[str, str], name: str) -> int:
    text = fields[name].strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidJob(f'"{name}" must be a whole number >= 0, got {fields[name][:40]!r}')
    return int(text)
