"""The typed model of taskrunner, in one place: a job as a producer gives it (`Job`, in
`job.py`), a channel's configuration (`ChannelConfig`, in `channel.py`), and a job's stored
record as every reader sees it (`JobRecord` and `decode_record`, in `stored.py`), and a job
as an API producer gives it (`JobCreate`, in `record.py`).

Import the models from here. They check single values with `taskrunner.validation`;
whole messages are parsed into a `Job` by `taskrunner.parsing`, which builds on the models
(so the models never import it)."""

from taskrunner.models.channel import ChannelConfig
from taskrunner.models.job import (
    COMMAND,
    FINAL_STATES,
    JOB_RECORD_NAMES,
    RPC,
    SCRIPT,
    Job,
    JobState,
)
from taskrunner.models.listing import JobQuery, Position, parse_job_query
from taskrunner.models.record import (
    JOB_CREATE_FIELDS,
    NAME_PATTERN,
    Intervals,
    JobCreate,
    parse_state,
    schema_pattern,
)
from taskrunner.models.stored import (
    EMPTY_VALUES,
    SUMMARY_FIELDS,
    SUMMARY_TEXT_BYTES,
    JobRecord,
    decode_record,
)

__all__ = [
    "COMMAND",
    "EMPTY_VALUES",
    "FINAL_STATES",
    "JOB_CREATE_FIELDS",
    "JOB_RECORD_NAMES",
    "NAME_PATTERN",
    "RPC",
    "SCRIPT",
    "SUMMARY_FIELDS",
    "SUMMARY_TEXT_BYTES",
    "ChannelConfig",
    "Intervals",
    "Job",
    "JobCreate",
    "JobQuery",
    "JobRecord",
    "JobState",
    "Position",
    "decode_record",
    "parse_job_query",
    "parse_state",
    "schema_pattern",
]
