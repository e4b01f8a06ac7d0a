"""Job listings: newest first across channels, cursor paging that new jobs never shift, every
filter, the window of filters checked job by job, the bounded job index, and 400s naming the
parameter."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import pytest
import redis.asyncio as aioredis

import taskrunner.store.listing as store_listing
from taskrunner.models import ChannelConfig, JobQuery, JobState
from taskrunner.runner import Runner
from tests.support.http import http
from tests.support.runners import RunnerHarness, wait_state

pytestmark = pytest.mark.asyncio


async def start(runners: RunnerHarness, *channels: str, **settings: Any) -> Runner:
    runner = await runners.start(**settings)
    for name in channels:
        await runner.store.create_channel(ChannelConfig(name=name))
    return runner


async def push(runner: Runner, task: str, channel: str = "default", **fields: Any) -> str:
    """A job that stays scheduled (due in 10 minutes) unless `fields` say otherwise."""
    fields = {"delay": 600, **fields}
    admission = await runner.service.submit(
        {"task": task, "channel": channel, **fields}, source="t"
    )
    assert admission.status == "ok", admission
    return admission.job_id


async def page(runner: Runner, **params: Any) -> dict[str, Any]:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    status, body = await http(runner, "GET", f"/api/jobs?{query}")
    assert status == 200, body
    assert set(body) == {"jobs", "next_cursor"}
    return dict(body)


async def every_page(runner: Runner, **params: Any) -> tuple[list[str], list[int]]:
    """The ids of every page, following the cursors; and each page's length."""
    ids: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        body = await page(runner, **params, cursor=cursor)
        ids += [job["id"] for job in body["jobs"]]
        sizes.append(len(body["jobs"]))
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, sizes


async def test_newest_first_across_channels_by_default(runners: RunnerHarness) -> None:
    runner = await start(runners, "a", "b")
    ids = [await push(runner, f"echo {n}", "ab"[n % 2]) for n in range(6)]
    body = await page(runner)
    assert [job["id"] for job in body["jobs"]] == ids[::-1]
    assert [job["channel"] for job in body["jobs"]] == ["b", "a"] * 3
    assert body["next_cursor"] is None
    listed, sizes = await every_page(runner, limit=4)
    assert listed == ids[::-1] and sizes == [4, 2]


async def test_a_cursor_neither_repeats_nor_skips_while_jobs_arrive_and_end(
    runners: RunnerHarness,
) -> None:
    runner = await start(runners, "a", "b")
    old = [await push(runner, f"echo {n}", "ab"[n % 2]) for n in range(7)]
    first = await page(runner, limit=3)
    assert [job["id"] for job in first["jobs"]] == old[:-4:-1]
    new = [await push(runner, f"echo new {n}", "ab"[n % 2]) for n in range(5)]
    assert await runner.service.cancel(old[2]) == "cancelled"  # ended: still listed, same place
    seen = [job["id"] for job in first["jobs"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        body = await page(runner, limit=3, cursor=cursor)
        seen += [job["id"] for job in body["jobs"]]
        cursor = body["next_cursor"]
    assert seen == old[::-1]  # every old job once, in order; none of the new ones
    fresh = await page(runner, limit=5)
    assert [job["id"] for job in fresh["jobs"]] == new[::-1]


async def test_channel_state_and_command_filters(runners: RunnerHarness) -> None:
    runner = await start(runners, "a", "b")
    a_backup = await push(runner, "echo Nightly-BACKUP", "a")
    b_backup = await push(runner, "echo backup now", "b")
    a_other = await push(runner, "echo other", "a")
    ran = await push(runner, "true", "b", delay=None)
    await wait_state(runner.store, ran, "succeeded")

    async def ids(**params: Any) -> list[str]:
        listed, _ = await every_page(runner, **params)
        return listed

    assert await ids(channel="a") == [a_other, a_backup]
    assert await ids(state="scheduled") == [a_other, b_backup, a_backup]
    assert await ids(state="succeeded") == [ran]
    assert await ids(state="queued") == []
    assert await ids(command="backup") == [b_backup, a_backup]  # any case
    assert await ids(command="backup", channel="b") == [b_backup]
    assert await ids(command="BACKUP", state="succeeded") == []
    assert await ids(channel="b", state="succeeded") == [ran]


async def test_created_since_and_until(runners: RunnerHarness) -> None:
    runner = await start(runners)
    ids = [await push(runner, f"echo {n}") for n in range(5)]
    created = [(await runner.service.get_job(i)).created_at for i in ids]
    assert all(isinstance(c, float) for c in created)
    since, until = created[1], created[3]
    listed, _ = await every_page(runner, since=since, until=until, limit=1)
    assert listed == [ids[3], ids[2], ids[1]]  # both ends inclusive
    listed, _ = await every_page(runner, since=since)
    assert listed == ids[:0:-1]
    listed, _ = await every_page(runner, until=until, command="echo")
    assert listed == ids[3::-1]
    assert (await page(runner, since=time.time() + 3600))["jobs"] == []


async def test_running_jobs_come_from_the_running_sets(runners: RunnerHarness) -> None:
    runner = await start(runners, "a")
    running = [await push(runner, "sleep 30", ch, delay=None) for ch in ("default", "a", "a")]
    waiting = await push(runner, "sleep 31")
    for job_id in running:
        await wait_state(runner.store, job_id, "running")
    listed, sizes = await every_page(runner, state="running", limit=2)
    assert listed == running[::-1] and sizes == [2, 1]
    listed, _ = await every_page(runner, state="running", channel="a")
    assert listed == running[:0:-1]
    assert waiting not in listed


async def test_a_filter_checked_job_by_job_looks_at_a_window_per_page(
    runners: RunnerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_listing, "SCAN_WINDOW", 4)
    monkeypatch.setattr(store_listing, "SCAN_CHUNK", 3)
    runner = await start(runners)
    wanted = await push(runner, "echo needle")
    others = [await push(runner, f"echo hay {n}") for n in range(9)]
    listed, sizes = await every_page(runner, command="needle")
    assert listed == [wanted]
    assert sizes == [0, 0, 1]  # 4 jobs looked at per page: two empty pages with a cursor
    listed, sizes = await every_page(runner, command="hay", limit=20)
    assert listed == others[::-1] and sizes == [4, 4, 1]
    unfiltered, sizes = await every_page(runner, limit=20)  # the index answers: one page
    assert unfiltered == [*others[::-1], wanted] and sizes == [10]


async def test_the_index_drops_the_ids_of_records_gone(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await start(runners, "a")
    gone = [await push(runner, f"echo {n}", "a") for n in range(10)]
    await redis.delete(*(f"task:job:{i}" for i in gone))  # as if their records expired
    await redis.zrem("task:scheduled:a", *gone)
    assert (await page(runner))["jobs"] == []  # skipped while still indexed
    kept = [await push(runner, f"echo kept {n}", "a") for n in range(10)]
    # each enqueue looks at two more entries of each index and drops those with no record
    assert await redis.zcard("task:index:jobs") == 10
    assert await redis.zcard("task:index:jobs:a") == 10
    listed, _ = await every_page(runner)
    assert listed == kept[::-1]

    assert (await runner.service.store.list_jobs(JobQuery(state=JobState.RUNNING), channels=[]))[
        0
    ] == []
    for job_id in kept:
        assert await runner.service.cancel(job_id) == "cancelled"
    await runner.service.delete_channel("a")
    assert not await redis.exists("task:index:jobs:a")
    assert await redis.hget("task:index:sweep", "a") is None


async def test_jobs_created_before_the_index_are_indexed_when_a_runner_starts(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    first = await start(runners, "a")
    scheduled = await push(first, "echo later", "a")
    ended = await push(first, "true", "a", delay=None)
    await wait_state(first.store, ended, "succeeded")
    await first.store.create_channel(ChannelConfig(name="held", paused=True))
    queued = await push(first, "echo waits", "held", delay=None)
    await redis.delete(*await redis.keys("task:index:*"))  # as a version before the index left it
    assert (await page(first))["jobs"] == []

    await start(runners)  # the next runner to start indexes them, once
    listed, _ = await every_page(first)
    assert listed == [queued, ended, scheduled]
    assert await redis.exists("task:index:built")
    assert await first.store.index_earlier_jobs() == 0  # done already: nothing read again
    listed, _ = await every_page(first, channel="a")
    assert listed == [ended, scheduled]


@pytest.mark.parametrize(
    ("query", "status", "fragment"),
    [
        ("limit=0", 400, '"limit"'),
        ("limit=501", 400, '"limit"'),
        ("limit=ten", 400, '"limit"'),
        ("offset=10", 400, '"offset"'),
        ("state=done", 400, '"state"'),
        ("cursor=nonsense", 400, '"cursor"'),
        ("cursor=MTo5OTpiYWQgaWQ", 400, '"cursor"'),  # "1:99:bad id"
        ("since=yesterday", 400, '"since"'),
        ("until=-5", 400, '"until"'),
        ("until=nan", 400, '"until"'),
        ("until=1e308", 400, '"until"'),
        ("since=20&until=10", 400, '"since"'),
        ("command=" + "x" * 1001, 400, '"command"'),
        ("channel=ghost", 404, "channel 'ghost' does not exist"),
        ("channel=bad%0Aname", 400, "invalid channel name"),
    ],
)
async def test_a_bad_query_names_the_parameter(
    runners: RunnerHarness, query: str, status: int, fragment: str
) -> None:
    runner = await runners.start()
    got_status, body = await http(runner, "GET", f"/api/jobs?{query}")
    assert got_status == status, body
    assert fragment in body["error"]["message"], body
