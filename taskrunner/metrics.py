"""Prometheus metrics of one runner process, served as `GET /metrics`.

Counters and histograms live in the runner's own `CollectorRegistry` (never the global one, so
several runners in one process keep their figures apart). Each channel binds its series once
(`ChannelMetrics`), so counting a job is a plain `inc()` or `observe()`. Gauges are computed at
scrape time: this runner's running jobs and drain state from memory, and the cluster-wide
counts from Redis in one pipeline of LLEN/ZCARD/SCARD (as cheap with a million jobs queued as
with none). A scrape while Redis is away still answers, with `taskrunner_redis_up 0`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from taskrunner.errors import StoreUnavailable
from taskrunner.models import JobState
from taskrunner.store import QueueCounts, Store

DURATION_BUCKETS_S: Final = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
LATENCY_BUCKETS_S: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
)  # fmt: skip
# The loops that reconnect to Redis with backoff (label `loop` of taskrunner_redis_reconnects).
REDIS_LOOPS: Final = ("ingress", "channels", "events", "heartbeat", "recovery", "claim")
SCRAPE_REDIS_TIMEOUT_S: Final = 2.0


class RunnerMetrics:
    """The series one runner process updates as it works."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        count = self._channel_counter
        self.jobs_started = count("jobs_started", "Attempts whose process or request started.")
        self.jobs_succeeded = count("jobs_succeeded", "Jobs that ended succeeded.")
        self.jobs_failed = count("jobs_failed", "Jobs that ended failed for good (failed or dead).")
        self.jobs_dead = count("jobs_dead", "Jobs that ended dead: failed after all their retries.")
        self.jobs_retried = count("jobs_retried", "Failed attempts that left the job retrying.")
        self.jobs_timed_out = count("jobs_timed_out", "Attempts killed by their timeout.")
        self.jobs_cancelled = count(
            "jobs_cancelled", "Running jobs stopped here by a cancel (queued ones are not counted)."
        )
        self.jobs_adopted = count(
            "jobs_adopted", "Commands adopted from TaskRunner's queues (<chan>:tasks:queue)."
        )
        self.job_duration = Histogram(
            "taskrunner_job_duration_seconds",
            "Run time of each started attempt, however it ended.",
            labelnames=("channel",),
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.job_start_latency = Histogram(
            "taskrunner_job_start_latency_seconds",
            "From the time a job was due (created, run_at, or retry due) to its process start.",
            labelnames=("channel",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.dead_letters_routed = Counter(
            "taskrunner_dead_letters_routed",
            "Prepare-queue messages this runner refused and dead-lettered.",
            registry=self.registry,
        )
        self.redis_reconnects = Counter(
            "taskrunner_redis_reconnects",
            "Times a loop lost its Redis connection and began reconnecting (once per outage).",
            labelnames=("loop",),
            registry=self.registry,
        )
        for loop in REDIS_LOOPS:
            self.redis_reconnects.labels(loop)
        self._channels: dict[str, ChannelMetrics] = {}

    def _channel_counter(self, name: str, doc: str) -> Counter:
        return Counter(f"taskrunner_{name}", doc, labelnames=("channel",), registry=self.registry)

    def channel(self, name: str) -> ChannelMetrics:
        """The channel's bound series (created at zero on first use)."""
        found = self._channels.get(name)
        if found is None:
            found = self._channels[name] = ChannelMetrics(self, name)
        return found

    def redis_lost(self, loop: str) -> None:
        self.redis_reconnects.labels(loop).inc()

    async def exposition(
        self, store: Store, *, running: Mapping[str, int], draining: bool
    ) -> bytes:
        """The Prometheus text of this runner's series plus the gauges read now.

        `running` is this runner's running attempts by channel; its keys are the channels whose
        Redis counts are read."""
        counts: QueueCounts | None
        try:
            async with asyncio.timeout(SCRAPE_REDIS_TIMEOUT_S):
                counts = await store.queue_counts(sorted(running))
        except (TimeoutError, StoreUnavailable):  # a slow Redis, or one away
            counts = None
        gauges = [*_local_gauges(running, draining=draining), *_cluster_gauges(counts)]
        return generate_latest(_Scrape(self.registry, gauges))


class ChannelMetrics:
    """One channel's series, bound once: the hot path does no label lookup."""

    __slots__ = (
        "_cancelled", "_claim_lost", "_dead", "_duration", "_failed", "_latency", "_retried",
        "_started", "_succeeded", "_timed_out",
    )  # fmt: skip

    def __init__(self, metrics: RunnerMetrics, channel: str) -> None:
        self._started = metrics.jobs_started.labels(channel)
        self._succeeded = metrics.jobs_succeeded.labels(channel)
        self._failed = metrics.jobs_failed.labels(channel)
        self._dead = metrics.jobs_dead.labels(channel)
        self._retried = metrics.jobs_retried.labels(channel)
        self._timed_out = metrics.jobs_timed_out.labels(channel)
        self._cancelled = metrics.jobs_cancelled.labels(channel)
        self._duration = metrics.job_duration.labels(channel)
        self._latency = metrics.job_start_latency.labels(channel)
        self._claim_lost = metrics.redis_reconnects.labels("claim")

    @classmethod
    def unregistered(cls, channel: str) -> ChannelMetrics:
        """Series nobody scrapes (a worker built without a runner's metrics)."""
        return RunnerMetrics().channel(channel)

    def started(self, *, latency_s: float) -> None:
        self._started.inc()
        self._latency.observe(max(0.0, latency_s))

    def ran(self, *, duration_s: float, timed_out: bool) -> None:
        self._duration.observe(duration_s)
        if timed_out:
            self._timed_out.inc()

    def ended(self, state: JobState) -> None:
        """Count an attempt's recorded end by the state it left the job in."""
        if state is JobState.SUCCEEDED:
            self._succeeded.inc()
        elif state is JobState.RETRYING:
            self._retried.inc()
        elif state is JobState.CANCELLED:
            self._cancelled.inc()
        else:
            self._failed.inc()
            if state is JobState.DEAD:
                self._dead.inc()

    def claim_lost(self) -> None:
        self._claim_lost.inc()


class _Scrape:
    """One scrape: the registry's series followed by gauges computed for it."""

    def __init__(self, registry: CollectorRegistry, gauges: list[Metric]) -> None:
        self._registry = registry
        self._gauges = gauges

    def collect(self) -> Iterable[Metric]:
        yield from self._registry.collect()
        yield from self._gauges


def _by_channel(name: str, doc: str, values: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=("channel",))
    for channel, value in sorted(values.items()):
        family.add_metric((channel,), value)
    return family


def _local_gauges(running: Mapping[str, int], *, draining: bool) -> list[Metric]:
    drain = GaugeMetricFamily(
        "taskrunner_draining",
        "1 while this runner drains (stopping), else 0.",
        value=float(draining),
    )
    here = _by_channel(
        "taskrunner_runner_running_jobs", "Attempts running in this runner process.", running
    )
    return [drain, here]


def _cluster_gauges(counts: QueueCounts | None) -> list[Metric]:
    up = GaugeMetricFamily(
        "taskrunner_redis_up", "1 if this scrape read the counts from Redis, else 0.",
        value=float(counts is not None),
    )  # fmt: skip
    if counts is None:
        return [up]
    return [
        up,
        _by_channel("taskrunner_queue_depth", "Jobs queued (all runners).", counts.queued),
        _by_channel(
            "taskrunner_scheduled_jobs", "Jobs delayed or retrying (all runners).", counts.scheduled
        ),
        _by_channel("taskrunner_running_jobs", "Jobs running (all runners).", counts.running),
        GaugeMetricFamily(
            "taskrunner_dead_jobs", "Dead jobs kept for retry or drop.", value=counts.dead_jobs
        ),
        GaugeMetricFamily(
            "taskrunner_dead_letters",
            "Refused messages kept in the dead-letter list.",
            value=counts.dead_letters,
        ),
    ]
