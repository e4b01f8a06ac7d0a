"""Every error taskrunner raises on purpose derives from TaskRunnerError."""

from __future__ import annotations


class TaskRunnerError(Exception):
    """Base of every taskrunner error; the message says what was wrong and what to do."""


class ConfigError(TaskRunnerError):
    """A setting is invalid (bad flag, bad config file, bad environment variable)."""


class InvalidJob(TaskRunnerError):
    """An ingress message or API request does not describe a valid job."""


class ProtocolError(TaskRunnerError):
    """A client broke a wire protocol's framing (kingtask's TCP broker protocol): the
    connection is answered once and closed."""


class InvalidArgument(InvalidJob):
    """A kingtask request lacks a field or names an unknown choice, where kingtask answers
    "invalid argument" (the-no/kingtask core/errors/errors.go): kingtask's API answers that
    text as is, the detail (this error's text) in a header."""


class InvalidChannel(TaskRunnerError):
    """A channel name is malformed, or a channel cannot be used as asked."""


class ChannelNotFound(InvalidChannel):
    """A well-formed channel name names no channel: create the channel first."""


class Conflict(TaskRunnerError):
    """The request clashes with the current state (a live duplicate, a busy channel, ...)."""


class ChannelExists(Conflict):
    """A channel with that name already exists."""


class DuplicateJob(Conflict):
    """A job was refused: a live job has the same id, or the same dedup key in a distinct
    channel. `live_id` is that live job's id."""

    def __init__(self, message: str, *, live_id: str) -> None:
        super().__init__(message)
        self.live_id = live_id


class OutcomeUnknown(TaskRunnerError):
    """A push got no answer from Redis in time: the job may or may not be queued. `job_id` is
    its id: pushing again with that id is safe (it runs once)."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobNotFound(TaskRunnerError):
    """No job record with that id (never existed, or expired)."""


class ResultNotExist(JobNotFound):
    """kingtask's "result not exist": no job with that id, or not finished yet (its result
    hash `r_<uuid>` is written when the job ends)."""


class StoreError(TaskRunnerError):
    """Redis answered a store operation with an error (a script's, a command's): not an
    outage; the message is Redis's words."""


class StoreUnavailable(StoreError):
    """Redis cannot be reached, or cannot serve now. The message says why (for a log line or
    an HTTP 503). `detail`: what Redis or the socket said, which may name the address (None
    when the message says it all already); `out_of_reach`: Redis could not serve this runner
    as it cannot serve any other (down, reset, timed out, out of memory, busy, loading), so a
    heartbeat lost to it leaves the lease standing (the watchdog's silence fence);
    `pool_exhausted`: no free connection in this process's own pool (not Redis's fault)."""

    def __init__(
        self,
        message: str,
        *,
        detail: str | None = None,
        out_of_reach: bool = True,
        pool_exhausted: bool = False,
    ) -> None:
        super().__init__(message)
        self.detail = detail
        self.out_of_reach = out_of_reach
        self.pool_exhausted = pool_exhausted


class StoreRefusing(StoreUnavailable):
    """Redis answers but cannot serve now (loading its data, out of memory, busy, read-only):
    it is reachable, so a runner starting waits for it instead of giving up."""


class SpawnError(TaskRunnerError):
    """The job's command could not be started (not found, not executable, bad cwd)."""


class ResourceExhausted(SpawnError):
    """The job's command could not be started for lack of resources for the moment (open
    files, processes, memory): the job is started again later, not failed."""


class NotAllowed(TaskRunnerError):
    """A job's program is refused by an allowlist (the runner's --allow, or its channel's)."""
