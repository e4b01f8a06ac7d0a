"""taskrunner: run shell commands pushed through Redis or HTTP, channel by channel."""

from __future__ import annotations

__version__ = "0.1.0"
