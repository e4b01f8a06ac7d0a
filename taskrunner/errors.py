"""Every error taskrunner raises on purpose derives from TaskRunnerError."""

from __future__ import annotations


class TaskRunnerError(Exception):
    """Base of every taskrunner error; the message says what was wrong and what to do."""


class ConfigError(TaskRunnerError):
    """A setting is invalid (bad flag, bad config file, bad environment variable)."""


class InvalidJob(TaskRunnerError):
    """An ingress message or API request does not describe a valid job."""


class InvalidChannel(TaskRunnerError):
    """A channel name is malformed, or names a channel that does not exist."""


class ChannelExists(TaskRunnerError):
    """A channel with that name already exists."""


class JobNotFound(TaskRunnerError):
    """No job record with that id (never existed, or expired)."""


class StoreUnavailable(TaskRunnerError):
    """Redis cannot be reached."""


class SpawnError(TaskRunnerError):
    """The job's command could not be started (not found, not executable, bad cwd)."""
