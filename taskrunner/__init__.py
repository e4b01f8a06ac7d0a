"""taskrunner: run shell commands pushed through Redis or HTTP, channel by channel."""

from __future__ import annotations

__version__ = "0.1.0"

from taskrunner.client import BlockingClient, Client, JobResult
from taskrunner.errors import DuplicateJob

__all__ = ["BlockingClient", "Client", "DuplicateJob", "JobResult", "__version__"]
