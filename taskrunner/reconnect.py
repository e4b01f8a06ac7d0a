"""A runner loop's retries while Redis is unavailable: one warning when an outage begins and one
line when it ends, not a line at every retry."""

from __future__ import annotations

import logging
import time

from taskrunner.aio import Backoff
from taskrunner.errors import StoreUnavailable
from taskrunner.metrics import RunnerMetrics

# The runner's loops log under the runner's name, as they did when they lived in runner.py.
log = logging.getLogger("taskrunner.runner")


class RedisRetry:
    """Exponential backoff that logs the first failure and the recovery, not every retry."""

    def __init__(self, what: str, *, max_s: float = 5.0) -> None:
        self.what = what
        self._backoff = Backoff(max_s=max_s)

    @property
    def failing(self) -> bool:
        """Whether the last try failed: a failure now is not the first of its outage."""
        return self._backoff.failing

    async def wait(self, exc: BaseException) -> None:
        if not self.failing:
            detail = exc.detail if isinstance(exc, StoreUnavailable) else None
            why = exc if detail is None else detail  # Redis's words, or the refusal's reason
            log.warning("Redis unavailable: cannot %s (%s); retrying with backoff", self.what, why)
        await self._backoff.wait()

    def ok(self) -> None:
        if self._backoff.reset():
            log.info("Redis back: %s works again", self.what)


class Outages:
    """The runner's loops tell it each failure to reach Redis: it counts outages (a loop's
    first failure) in the metrics, and knows since when Redis has served every loop."""

    def __init__(self, metrics: RunnerMetrics) -> None:
        self.metrics = metrics
        self.connected_since = time.monotonic()

    def lost(self, loop: str, backoff: RedisRetry) -> None:
        if not backoff.failing:  # the first failure of an outage
            self.metrics.redis_lost(loop)
        self.connected_since = time.monotonic()
