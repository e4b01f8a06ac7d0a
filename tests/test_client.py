"""The Python client: `Client` (asyncio) and `BlockingClient`, against real runners and Redis."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from taskrunner import BlockingClient, Client, DuplicateJob, JobResult
from taskrunner.errors import (
    InvalidChannel,
    InvalidJob,
    JobNotFound,
    StoreUnavailable,
    TaskRunnerError,
)
from taskrunner.models import ChannelConfig, JobState
from tests.support.net import free_port
from tests.support.runners import RunnerHarness, wait_state

pytestmark = pytest.mark.asyncio

# `wait` must return when the job ends, not at a polling tick: generous for a loaded machine,
# far below what an interval-based wait would add.
WAIT_MARGIN_S = 1.5


async def test_wait_returns_the_final_result_as_soon_as_the_job_ends(
    runners: RunnerHarness, redis_url: str
) -> None:
    await runners.start()
    async with Client(redis_url) as client:
        job_id = await client.push("sh", args=["-c", "sleep 0.5; echo done; echo oops >&2"])
        started = time.monotonic()
        result = await client.wait(job_id, timeout_s=10)
        waited = time.monotonic() - started
    assert 0.45 <= waited < 0.5 + WAIT_MARGIN_S
    assert result.final and result.succeeded and result.state is JobState.SUCCEEDED
    assert (result.id, result.channel, result.task) == (job_id, "default", "sh")
    assert result.args == ("-c", "sleep 0.5; echo done; echo oops >&2")
    assert (result.stdout, result.stderr) == ("done\n", "oops\n")
    assert (result.exit_code, result.signal, result.error, result.attempt) == (0, None, None, 1)
    assert result.duration is not None and result.duration >= 0.45
    assert result.created_at is not None and result.started_at is not None
    assert result.finished_at is not None and result.started_at <= result.finished_at
    assert result.record.state == "succeeded" and result.record.final is True
    assert result.record.to_view()["final"] is True


async def test_wait_returns_the_cancelled_result(runners: RunnerHarness, redis_url: str) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="held", paused=True))
    async with Client(redis_url) as client:
        running = await client.push("sleep 30")
        queued = await client.push("sleep 30", channel="held")
        await wait_state(runner.store, running, "running")
        waiters = [asyncio.create_task(client.wait(i, timeout_s=10)) for i in (running, queued)]
        started = time.monotonic()
        assert await client.cancel(queued) == "cancelled"
        assert await client.cancel(running) == "running"  # its runner was told to kill it
        killed, dropped = await asyncio.gather(*waiters)
        assert time.monotonic() - started < WAIT_MARGIN_S + 0.5  # the kill grace is 0.5 s
        assert await client.cancel(queued) == "cancelled"  # already over: says how it ended
    assert killed.state is JobState.CANCELLED and killed.final and not killed.succeeded
    assert killed.attempt == 1 and killed.started_at is not None
    assert dropped.state is JobState.CANCELLED and dropped.attempt == 0
    assert dropped.started_at is None and dropped.error == "cancelled before it ran"


async def test_wait_raises_timeout_error_while_the_job_is_not_final(
    runners: RunnerHarness, redis_url: str
) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="held", paused=True))
    async with Client(redis_url) as client:
        job_id = await client.push("true", channel="held")
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=f"job {job_id} is still queued after 0.3 s"):
            await client.wait(job_id, timeout_s=0.3)
        assert 0.3 <= time.monotonic() - started < 0.3 + WAIT_MARGIN_S
        assert (await client.get(job_id)).state is JobState.QUEUED


async def test_push_options_reach_the_record(runners: RunnerHarness, redis_url: str) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="held", paused=True))
    async with Client(redis_url) as client:
        before = time.time()
        delayed = await client.push("echo later", delay=60, id="delayed-1")
        assert delayed == "delayed-1"
        spec = await client.push(
            "printf",
            channel="held",
            args=["%s\n", "a b", "c"],
            run_at=before - 5,  # already due: queued at once
            retries=5,
            retry_intervals=[0.5, 2],
            timeout=7.5,
            dedup_key="spec",
        )
        implied = await client.push("true", channel="held", retry_intervals="60 600 3600")

        scheduled = await client.get(delayed)
        assert scheduled.state is JobState.SCHEDULED and not scheduled.final
        assert before + 60 <= scheduled.record.run_at <= time.time() + 60
        assert scheduled.args is None and scheduled.exit_code is None and scheduled.stdout == ""

        result = await client.get(spec)
        assert result.state is JobState.QUEUED and result.channel == "held"
        assert (result.task, result.args) == ("printf", ("%s\n", "a b", "c"))
        record = result.record
        assert record.run_at == pytest.approx(before - 5)
        assert (record.retries, record.retry_intervals) == (5, [0.5, 2.0])
        assert (record.timeout, record.dedup_key) == (7.5, "spec")

        record = (await client.get(implied)).record
        assert (record.retries, record.retry_intervals) == (3, [60.0, 600.0, 3600.0])


async def test_duplicates_are_refused_with_the_live_id(
    runners: RunnerHarness, redis_url: str
) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="uniq", distinct=True, paused=True))
    async with Client(redis_url) as client:
        first = await client.push("echo a", channel="uniq", dedup_key="report")
        with pytest.raises(DuplicateJob) as refused:
            await client.push("echo b", channel="uniq", dedup_key="report")
        assert refused.value.live_id == first and first in str(refused.value)
        assert isinstance(refused.value, TaskRunnerError)

        assert await client.push("echo x", channel="uniq", id="mine") == "mine"
        # a push retried with its id answers that job: nothing new, nothing refused
        assert await client.push("echo y", channel="uniq", id="mine") == "mine"
        assert (await client.get("mine")).record.task == "echo x"

        assert await client.cancel(first) == "cancelled"  # its end releases the dedup mark
        again = await client.push("echo b", channel="uniq", dedup_key="report")
        assert again != first


async def test_bad_input_and_unknown_ids(runners: RunnerHarness, redis_url: str) -> None:
    await runners.start()
    async with Client(redis_url) as client:
        with pytest.raises(InvalidJob, match="task"):
            await client.push(" ")
        with pytest.raises(InvalidJob, match="cannot be split"):
            await client.push("echo 'open")
        with pytest.raises(InvalidJob, match="not both"):
            await client.push("true", delay=1, run_at=2)
        with pytest.raises(InvalidJob, match="args"):
            await client.push("echo", args="not a JSON list")
        with pytest.raises(InvalidChannel, match="create it first"):
            await client.push("true", channel="nope")
        with pytest.raises(InvalidChannel, match="invalid channel name"):
            await client.push("true", channel="no\nnewlines")
        for call in (client.get, client.wait, client.cancel):
            with pytest.raises(JobNotFound, match="no job 'missing'"):
                await call("missing")


async def test_unreachable_redis_and_closed_client(redis_url: str) -> None:
    with pytest.raises(StoreUnavailable, match="cannot reach Redis"):
        async with Client(f"redis://127.0.0.1:{free_port()}/0"):
            pass
    client = Client(redis_url, default_channel="elsewhere")
    await client.ping()
    with pytest.raises(InvalidChannel, match="'elsewhere' does not exist"):
        await client.push("true")
    await client.aclose()
    await client.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await client.get("x")


async def test_blocking_client_round_trip_from_plain_code(
    runners: RunnerHarness, redis_url: str
) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="uniq", distinct=True, paused=True))

    def script() -> tuple[JobResult, JobResult]:
        with BlockingClient(redis_url) as client:
            job_id = client.push("echo", args=["blocking"])
            done = client.wait(job_id, timeout_s=10)
            again = client.get(job_id)
            held = client.push("true", channel="uniq")
            with pytest.raises(DuplicateJob) as refused:
                client.push("true", channel="uniq")
            assert refused.value.live_id == held
            with pytest.raises(TimeoutError):
                client.wait(held, timeout_s=0.1)
            assert client.cancel(held) == "cancelled"
            with pytest.raises(JobNotFound):
                client.get("missing")
            assert sum(t.name == "taskrunner-client" for t in threading.enumerate()) == 1
        with pytest.raises(RuntimeError, match="closed"):
            client.get(job_id)
        client.close()  # idempotent
        return done, again

    done, again = await asyncio.to_thread(script)
    assert done.succeeded and done.stdout == "blocking\n"
    assert again == done  # equal fields (the record dict is not compared)
    assert not any(t.name == "taskrunner-client" for t in threading.enumerate())


async def test_push_with_a_note_returns_it_with_the_job(
    runners: RunnerHarness, redis_url: str
) -> None:
    await runners.start()
    async with Client(redis_url) as client:
        job_id = await client.push("true", note="requested by billing")
        result = await client.wait(job_id, timeout_s=10)
    assert result.succeeded and result.record.note == "requested by billing"
