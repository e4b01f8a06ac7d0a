"""GET /metrics: Prometheus text from each runner's own registry, plus gauges read from Redis.

Every figure is checked after real jobs ran on in-process runners; the text is parsed with
prometheus_client's own parser, so a malformed exposition fails here."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from taskrunner.metrics import RunnerMetrics
from taskrunner.runner import Runner
from taskrunner.store import Store
from tests.support.http import base_url, http
from tests.support.net import free_port
from tests.support.redis_servers import RedisServer
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(runner: Runner, headers: Mapping[str, str] | None = None) -> Samples:
    """GET /metrics, parsed: {(sample name, sorted labels): value}."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url(runner) + "/metrics", headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await resp.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not exposed; have {sorted(n for n, _ in samples)}"
    return samples[key]


async def push(runner: Runner, task: str, channel: str, **fields: object) -> str:
    status, body = await http(
        runner, "POST", "/api/jobs", json={"task": task, "channel": channel, **fields}
    )
    assert status == 201, body
    job_id: str = body["id"]
    return job_id


async def test_job_outcomes_durations_and_latencies_are_counted_by_channel(
    runners: RunnerHarness,
) -> None:
    runner = await runners.start()
    status, body = await http(
        runner, "POST", "/api/channels", json={"name": "m", "worker_count": 5}
    )
    assert status == 201, body
    await wait_until(lambda: "m" in runner.workers, message="channel m loaded")
    ok = await push(runner, "true", "m")
    failed = await push(runner, "false", "m")
    timed_out = await push(runner, "sleep 5", "m", timeout=0.3)
    dead = await push(runner, "false", "m", retries=1, retry_intervals=[0])
    cancelled = await push(runner, "sleep 30", "m")
    await wait_state(runner.store, cancelled, "running")
    status, _ = await http(runner, "POST", f"/api/jobs/{cancelled}/cancel")
    assert status == 200
    for job_id, state in [(ok, "succeeded"), (failed, "failed"), (timed_out, "failed"),
                          (dead, "dead"), (cancelled, "cancelled")]:  # fmt: skip
        await wait_state(runner.store, job_id, state)

    ended = ("succeeded", "failed", "cancelled", "retried")

    async def counted() -> bool:
        samples = await scrape(runner)
        return sum(value(samples, f"taskrunner_jobs_{e}_total", channel="m") for e in ended) == 6

    await wait_until(counted, message="every attempt's end counted")
    samples = await scrape(runner)
    m = {"channel": "m"}
    assert value(samples, "taskrunner_jobs_started_total", **m) == 6  # `dead` ran twice
    assert value(samples, "taskrunner_jobs_succeeded_total", **m) == 1
    assert value(samples, "taskrunner_jobs_failed_total", **m) == 3  # false, timeout, dead
    assert value(samples, "taskrunner_jobs_dead_total", **m) == 1
    assert value(samples, "taskrunner_jobs_retried_total", **m) == 1
    assert value(samples, "taskrunner_jobs_timed_out_total", **m) == 1
    assert value(samples, "taskrunner_jobs_cancelled_total", **m) == 1
    assert value(samples, "taskrunner_job_duration_seconds_count", **m) == 6
    assert value(samples, "taskrunner_job_duration_seconds_sum", **m) >= 0.3  # the timeout
    assert value(samples, "taskrunner_job_duration_seconds_bucket", le="+Inf", **m) == 6
    assert value(samples, "taskrunner_job_start_latency_seconds_count", **m) == 6
    latency_sum = value(samples, "taskrunner_job_start_latency_seconds_sum", **m)
    assert 0 <= latency_sum < 6 * 5.0, latency_sum
    assert value(samples, "taskrunner_job_start_latency_seconds_bucket", le="5.0", **m) == 6
    # Other channels are exposed at zero; nothing runs, nothing drains; Redis was read.
    assert value(samples, "taskrunner_jobs_started_total", channel="biz") == 0
    assert value(samples, "taskrunner_runner_running_jobs", **m) == 0
    assert value(samples, "taskrunner_running_jobs", **m) == 0
    assert value(samples, "taskrunner_draining") == 0
    assert value(samples, "taskrunner_redis_up") == 1
    assert value(samples, "taskrunner_dead_jobs") == 1
    assert value(samples, "taskrunner_redis_reconnects_total", loop="ingress") == 0


async def test_queue_gauges_of_a_paused_channel_and_dead_letters(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start()
    status, body = await http(runner, "POST", "/api/channels", json={"name": "p", "paused": True})
    assert status == 201, body
    for n in range(3):
        await push(runner, f"echo {n}", "p")
    await push(runner, "echo later", "p", delay=600)
    await redis.lpush("task:prepare:queue", b"not json", b'{"task": ""}')
    await wait_until(lambda: "p" in runner.workers, message="channel p loaded")

    async def routed() -> bool:
        return value(await scrape(runner), "taskrunner_dead_letters_routed_total") == 2

    await wait_until(routed, message="both bad messages dead-lettered")
    samples = await scrape(runner)
    assert value(samples, "taskrunner_queue_depth", channel="p") == 3
    assert value(samples, "taskrunner_scheduled_jobs", channel="p") == 1
    assert value(samples, "taskrunner_running_jobs", channel="p") == 0
    assert value(samples, "taskrunner_queue_depth", channel="default") == 0
    assert value(samples, "taskrunner_dead_letters") == 2
    assert value(samples, "taskrunner_dead_letters_routed_total") == 2
    assert value(samples, "taskrunner_jobs_started_total", channel="p") == 0


async def test_running_gauges_and_runners_keep_their_own_counts(runners: RunnerHarness) -> None:
    a = await runners.start()
    b = await runners.start()
    job_id = await push(a, "sleep 30", "default")
    await wait_state(a.store, job_id, "running")
    here = next(r for r in (a, b) if r.running_count())
    other = b if here is a else a
    mine, theirs = await scrape(here), await scrape(other)
    assert value(mine, "taskrunner_runner_running_jobs", channel="default") == 1
    assert value(theirs, "taskrunner_runner_running_jobs", channel="default") == 0
    assert value(mine, "taskrunner_jobs_started_total", channel="default") == 1
    assert value(theirs, "taskrunner_jobs_started_total", channel="default") == 0
    for samples in (mine, theirs):  # read from Redis: the same on every runner
        assert value(samples, "taskrunner_running_jobs", channel="default") == 1
    assert here.metrics.registry is not other.metrics.registry
    status, _ = await http(here, "POST", f"/api/jobs/{job_id}/cancel")
    assert status == 200


async def test_metrics_need_the_token_when_one_is_set(runners: RunnerHarness) -> None:
    runner = await runners.start(auth_token="s3cret")
    status, body = await http(runner, "GET", "/metrics")
    assert status == 401 and body["status_code"] == 401
    status, _ = await http(runner, "GET", "/metrics", headers={"Authorization": "Bearer nope"})
    assert status == 401
    samples = await scrape(runner, headers={"Authorization": "Bearer s3cret"})
    assert value(samples, "taskrunner_redis_up") == 1


async def test_a_redis_outage_is_counted_and_scrapes_still_answer(
    runners: RunnerHarness, redis_server: RedisServer
) -> None:
    runner = await runners.start()
    redis_server.stop()
    try:

        async def lost() -> bool:
            samples = await scrape(runner)
            return value(samples, "taskrunner_redis_reconnects_total", loop="heartbeat") >= 1

        await wait_until(lost, timeout_s=5, message="the heartbeat loop's reconnect counted")
        samples = await scrape(runner)
        assert value(samples, "taskrunner_redis_up") == 0
        assert ("taskrunner_queue_depth", (("channel", "default"),)) not in samples
        assert value(samples, "taskrunner_draining") == 0
    finally:
        redis_server.start()

    async def back() -> bool:
        return value(await scrape(runner), "taskrunner_redis_up") == 1

    await wait_until(back, timeout_s=5, message="Redis counts read again")
    samples = await scrape(runner)
    assert value(samples, "taskrunner_redis_reconnects_total", loop="heartbeat") == 1
    assert not runner.failed


async def test_a_scrape_with_redis_unreachable_gives_local_figures() -> None:
    store = Store.from_url(f"redis://127.0.0.1:{free_port()}/0")
    metrics = RunnerMetrics()
    metrics.channel("c").started(latency_s=0.004)
    try:
        text = await metrics.exposition(store, running={"c": 1}, draining=True)
    finally:
        await store.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    assert value(samples, "taskrunner_redis_up") == 0
    assert value(samples, "taskrunner_draining") == 1
    assert value(samples, "taskrunner_runner_running_jobs", channel="c") == 1
    assert (
        value(samples, "taskrunner_job_start_latency_seconds_bucket", channel="c", le="0.005") == 1
    )
