"""The native JSON API under /api: jobs, channels, stats, dead jobs, dead letters, errors."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from taskrunner.runner import Runner
from tests.support.http import base_url, http
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio


async def submit(runner: Runner, **fields: Any) -> dict[str, Any]:
    status, view = await http(runner, "POST", "/api/jobs", json=fields)
    assert status == 201, view
    return dict(view)


async def wait_job(runner: Runner, job_id: str, timeout_s: float = 10) -> dict[str, Any]:
    status, view = await http(runner, "GET", f"/api/jobs/{job_id}/wait?timeout={timeout_s}")
    assert status == 200, view
    return dict(view)


def assert_error(status: int, body: Any, expected_status: int, fragment: str = "") -> None:
    assert status == expected_status, body
    assert set(body) <= {"error", "duplicate_of"} and set(body["error"]) == {"status", "message"}
    assert body["error"]["status"] == expected_status
    assert fragment in body["error"]["message"], body


# -- jobs -------------------------------------------------------------------------------------


async def test_create_get_and_wait_returns_as_soon_as_the_job_ends(runners: RunnerHarness) -> None:
    runner = await runners.start()
    created = await submit(runner, task="sleep 0.3")
    assert created["state"] in ("queued", "running") and created["final"] is False
    assert created["channel"] == "default" and created["kind"] == "command"
    status, got = await http(runner, "GET", f"/api/jobs/{created['id']}")
    assert status == 200 and got["id"] == created["id"] and got["task"] == "sleep 0.3"

    started = time.monotonic()
    done = await wait_job(runner, created["id"], timeout_s=30)
    waited = time.monotonic() - started
    assert done["state"] == "succeeded" and done["final"] is True and done["exit_code"] == 0
    assert waited < 5, f"wait took {waited:.2f} s for a 0.3 s job: it did not wake on the end"


async def test_wait_timeout_returns_the_live_job_not_final(runners: RunnerHarness) -> None:
    runner = await runners.start()
    job = await submit(runner, task="sleep 30")
    view = await wait_job(runner, job["id"], timeout_s=0.3)
    assert view["final"] is False and view["state"] in ("queued", "running")
    await http(runner, "POST", f"/api/jobs/{job['id']}/cancel")
    assert (await wait_job(runner, job["id"]))["state"] == "cancelled"


async def test_wait_answers_at_once_when_the_runner_stops(runners: RunnerHarness) -> None:
    runner = await runners.start()
    await http(runner, "POST", "/api/channels", json={"name": "held", "paused": True})
    job = await submit(runner, task="echo held", channel="held")
    waiting = asyncio.ensure_future(http(runner, "GET", f"/api/jobs/{job['id']}/wait?timeout=120"))

    async def subscribed() -> bool:
        [(_, count)] = await runner.store.redis.pubsub_numsub("task:events:job")
        return bool(count)

    await wait_until(subscribed, message="the wait to subscribe to job events")
    started = time.monotonic()
    await asyncio.wait_for(runners.stop(runner), 30)
    assert time.monotonic() - started < 10, "an open wait held the runner's stop up"
    status, view = await asyncio.wait_for(waiting, 5)
    assert status == 200 and view["final"] is False and view["state"] == "queued"


async def test_create_job_with_every_field_and_chan_alias(runners: RunnerHarness) -> None:
    runner = await runners.start()
    before = time.time()
    view = await submit(
        runner, task="printf", args=["%s", "x y"], id="all-fields", chan="cron", delay=60,
        retries=2, retry_intervals="1 2.5", timeout=5, dedup_key="k1", ts="1491800000",
    )  # fmt: skip
    assert view["id"] == "all-fields" and view["channel"] == "cron"
    assert view["state"] == "scheduled" and view["args"] == ["%s", "x y"]
    assert view["retries"] == 2 and view["retry_intervals"] == [1.0, 2.5]
    assert view["timeout"] == 5 and view["dedup_key"] == "k1" and view["ts"] == 1491800000
    assert before + 60 <= view["run_at"] <= time.time() + 60
    run_at = time.time() + 0.2
    view = await submit(runner, task="echo at", channel="biz", run_at=run_at)
    assert view["channel"] == "biz" and view["run_at"] == pytest.approx(run_at)
    assert (await wait_job(runner, view["id"]))["state"] == "succeeded"


async def test_a_numeric_id_is_taken_as_its_digits(runners: RunnerHarness) -> None:
    runner = await runners.start()
    status, view = await http(runner, "POST", "/api/jobs", json={"task": "true", "id": 42})
    assert status == 201 and view["id"] == "42", view
    status, view = await http(runner, "POST", "/api/jobs", json={"task": "true", "id": 0})
    assert status == 201 and view["id"] == "0", view
    status, view = await http(runner, "POST", "/api/jobs", json={"task": "true", "id": 0.5})
    assert (
        status == 400 and '"id" must be a string or a whole number' in view["error"]["message"]
    ), view


async def test_json_out_keeps_unicode_unescaped(runners: RunnerHarness) -> None:
    runner = await runners.start()
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url(runner) + "/api/jobs", json={"task": "echo 你好"}) as resp,
    ):
        assert resp.status == 201 and resp.content_type == "application/json"
        assert "echo 你好" in await resp.text()


async def test_a_known_id_answers_that_job_and_a_dedup_key_is_409_with_the_live_id(
    runners: RunnerHarness,
) -> None:
    runner = await runners.start()
    first = await submit(runner, task="sleep 5", channel="biz", id="dup-1")
    status, body = await http(runner, "POST", "/api/jobs", json={"task": "true", "id": "dup-1"})
    assert status == 200  # a retried push: nothing created, the job it made answered
    assert (body["id"], body["task"]) == ("dup-1", "sleep 5")
    status, body = await http(runner, "POST", "/api/jobs", json={"task": "sleep  5", "chan": "biz"})
    assert_error(status, body, 409)
    assert body["duplicate_of"] == first["id"]
    assert (await http(runner, "POST", "/api/jobs/dup-1/cancel"))[0] == 200


async def test_cancel_running_job_kills_its_process_group(
    runners: RunnerHarness, tmp_path: Path
) -> None:
    runner = await runners.start()
    pids = tmp_path / "pids"
    job = await submit(runner, task="sh", args=["-c", f"sleep 30 & echo $$ > {pids}; wait"])
    await wait_until(lambda: pids.exists() and pids.read_text().strip() != "")
    status, body = await http(runner, "POST", f"/api/jobs/{job['id']}/cancel")
    assert status == 200 and body == {"id": job["id"], "state": "running"}
    view = await wait_job(runner, job["id"])
    assert view["state"] == "cancelled" and view["final"] is True
    with pytest.raises(ProcessLookupError):
        os.killpg(int(pids.read_text()), 0)


async def test_cancel_delayed_job_never_runs_and_ended_job_is_409(
    runners: RunnerHarness, tmp_path: Path
) -> None:
    runner = await runners.start()
    marker = tmp_path / "ran"
    job = await submit(runner, task="touch", args=[str(marker)], delay=0.4)
    status, body = await http(runner, "POST", f"/api/jobs/{job['id']}/cancel")
    assert status == 200 and body == {"id": job["id"], "state": "cancelled"}
    later = await submit(runner, task="echo later", delay=0.6)
    assert (await wait_job(runner, later["id"]))["state"] == "succeeded"  # past the due time
    assert not marker.exists()
    assert (await http(runner, "GET", f"/api/jobs/{job['id']}"))[1]["state"] == "cancelled"
    status, body = await http(runner, "POST", f"/api/jobs/{later['id']}/cancel")
    assert_error(status, body, 409, "succeeded")
    status, body = await http(runner, "POST", "/api/jobs/no-such-job/cancel")
    assert_error(status, body, 404, "no-such-job")


async def test_cancelled_record_keeps_the_runner_result_ttl(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start(result_ttl_s=60)
    job = await submit(runner, task="echo later", delay=600)
    assert (await http(runner, "POST", f"/api/jobs/{job['id']}/cancel"))[0] == 200
    assert 0 < await redis.ttl(f"task:job:{job['id']}") <= 60


async def test_list_jobs_by_channel_and_state_with_cursor_paging(runners: RunnerHarness) -> None:
    # more in tests/test_listing.py
    runner = await runners.start()
    assert (await http(runner, "POST", "/api/channels", json={"name": "pages"}))[0] == 201
    ids = [
        (await submit(runner, task=f"echo {n}", channel="pages", delay=600))["id"] for n in range(7)
    ]
    await submit(runner, task="echo other", channel="cron", delay=600)
    seen: list[str] = []
    pages: list[int] = []
    cursor = ""
    while cursor is not None:
        status, body = await http(
            runner, "GET", f"/api/jobs?channel=pages&state=scheduled&limit=3&cursor={cursor}"
        )
        assert status == 200, body
        pages.append(len(body["jobs"]))
        seen += [job["id"] for job in body["jobs"]]
        assert all(j["state"] == "scheduled" and j["channel"] == "pages" for j in body["jobs"])
        cursor = body["next_cursor"]
    assert pages == [3, 3, 1]
    assert seen == ids[::-1]  # newest first
    _, body = await http(runner, "GET", "/api/jobs?channel=pages&state=queued")
    assert body == {"jobs": [], "next_cursor": None}
    _, body = await http(runner, "GET", "/api/jobs?state=scheduled&limit=500")
    assert len(body["jobs"]) == 8 and body["next_cursor"] is None


# -- channels ---------------------------------------------------------------------------------


async def test_channel_create_get_patch_and_worker_count_is_live_on_every_runner(
    runners: RunnerHarness, tmp_path: Path
) -> None:
    runner = await runners.start(concurrent=4)
    other = await runners.start(concurrent=4)
    status, created = await http(
        runner, "POST", "/api/channels", json={"name": "solo", "worker_count": 3, "retries": 1}
    )
    assert status == 201 and created == {
        "name": "solo", "distinct": False, "worker_count": 3, "paused": False, "timeout": 0.0,
        "retries": 1, "retry_intervals": [], "queued": 0, "scheduled": 0, "running": 0,
    }  # fmt: skip
    assert await http(runner, "GET", "/api/channels/solo") == (200, created)
    status, body = await http(runner, "POST", "/api/channels", json={"name": "solo"})
    assert_error(status, body, 409, "already exists")
    _, listed = await http(runner, "GET", "/api/channels")
    assert [c["name"] for c in listed["channels"]] == ["biz", "cron", "default", "solo"]

    status, patched = await http(runner, "PATCH", "/api/channels/solo", json={"worker_count": 1})
    assert status == 200 and patched["worker_count"] == 1 and patched["retries"] == 1
    for each in (runner, other):
        await wait_until(
            lambda r=each: "solo" in r.workers and r.workers["solo"].config.worker_count == 1,
            message="worker_count 1 to reach every runner",
        )
    await runners.stop(other)
    log = tmp_path / "log"
    step = f"echo start >> {log}; sleep 0.2; echo end >> {log}"
    jobs = [await submit(runner, task="sh", args=["-c", step], channel="solo") for _ in range(2)]
    for job in jobs:
        assert (await wait_job(runner, job["id"]))["state"] == "succeeded"
    assert log.read_text().split() == ["start", "end", "start", "end"]  # one at a time


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"worker_count": 0}, 400, '"worker_count"'),
        ({"worker_count": 1001}, 400, '"worker_count"'),
        ({"paused": "maybe"}, 400, '"paused"'),
        ({"workers": 2}, 400, "unknown channel field(s) workers"),
        ({"name": "other"}, 400, '"name" cannot be changed'),
        (["worker_count"], 400, "JSON list"),
    ],
)
async def test_channel_patch_refuses_bad_fields(
    runners: RunnerHarness, body: Any, status: int, fragment: str
) -> None:
    runner = await runners.start()
    got_status, reply = await http(runner, "PATCH", "/api/channels/biz", json=body)
    assert_error(got_status, reply, status, fragment)


async def test_pause_keeps_jobs_queued_and_resume_runs_them(runners: RunnerHarness) -> None:
    runner = await runners.start()
    await http(runner, "POST", "/api/channels", json={"name": "held"})
    status, paused = await http(runner, "POST", "/api/channels/held/pause")
    assert status == 200 and paused["paused"] is True
    await wait_until(lambda: "held" in runner.workers and runner.workers["held"].config.paused)
    job = await submit(runner, task="echo held", channel="held")
    reference = await submit(runner, task="echo free")  # another channel runs meanwhile
    assert (await wait_job(runner, reference["id"]))["state"] == "succeeded"
    assert (await wait_job(runner, job["id"], timeout_s=0.5))["state"] == "queued"
    _, channel = await http(runner, "GET", "/api/channels/held")
    assert channel["queued"] == 1 and channel["running"] == 0
    status, resumed = await http(runner, "POST", "/api/channels/held/resume")
    assert status == 200 and resumed["paused"] is False
    assert (await wait_job(runner, job["id"]))["state"] == "succeeded"


async def test_delete_channel_busy_default_missing_and_empty(runners: RunnerHarness) -> None:
    runner = await runners.start()
    await http(runner, "POST", "/api/channels", json={"name": "temp", "paused": True})
    job = await submit(runner, task="echo temp", channel="temp")
    status, body = await http(runner, "DELETE", "/api/channels/temp")
    assert_error(status, body, 409, "1 queued")
    status, body = await http(runner, "DELETE", "/api/channels/default")
    assert_error(status, body, 409, "default channel")
    status, body = await http(runner, "DELETE", "/api/channels/ghost")
    assert_error(status, body, 404, "does not exist")
    await http(runner, "POST", f"/api/jobs/{job['id']}/cancel")
    assert await http(runner, "DELETE", "/api/channels/temp") == (204, "")
    status, body = await http(runner, "GET", "/api/channels/temp")
    assert_error(status, body, 404, "does not exist")


async def test_stats(runners: RunnerHarness, redis: aioredis.Redis) -> None:
    runner = await runners.start()
    job = await submit(runner, task="true")
    await wait_job(runner, job["id"])
    await redis.lpush("task:prepare:queue", b"not json")
    await wait_until(lambda: runner.store.dead_letter_count(), message="the dead letter")
    status, stats = await http(runner, "GET", "/api/stats")
    assert status == 200
    assert stats["today"]["succeeded"] == 1 and stats["dead_letters"] == 1
    assert stats["dead_jobs"] == 0
    assert stats["channels"]["default"] == {"queued": 0, "scheduled": 0, "running": 0}
    assert [r["id"] for r in stats["runners"]] == [runner.runner_id]


# -- dead jobs and dead letters ---------------------------------------------------------------


async def test_dead_job_is_listed_retried_and_dropped(
    runners: RunnerHarness, tmp_path: Path
) -> None:
    runner = await runners.start()
    runs = tmp_path / "runs"
    job = await submit(runner, task="sh", args=["-c", f"echo run >> {runs}; false"], retries=1)
    dead = await wait_job(runner, job["id"])
    assert dead["state"] == "dead" and dead["attempt"] == 2
    status, body = await http(runner, "GET", "/api/dead-jobs")
    assert status == 200 and body["total"] == 1
    [listed] = body["jobs"]
    assert listed["id"] == job["id"] and listed["error"] == "exit code 1"

    status, again = await http(runner, "POST", f"/api/dead-jobs/{job['id']}/retry")
    assert status == 200 and again["id"] == job["id"] and again["revived"] == 1
    await wait_state(runner.store, job["id"], "dead")  # it was queued: dead again means it ran
    assert runs.read_text().split() == ["run"] * 4  # a fresh retry budget: two more attempts
    assert (await http(runner, "GET", f"/api/jobs/{job['id']}"))[1]["attempt"] == 2

    assert await http(runner, "DELETE", f"/api/dead-jobs/{job['id']}") == (204, "")
    assert await http(runner, "GET", "/api/dead-jobs") == (200, {"jobs": [], "total": 0})
    status, body = await http(runner, "GET", f"/api/jobs/{job['id']}")
    assert_error(status, body, 404, job["id"])
    status, body = await http(runner, "POST", f"/api/dead-jobs/{job['id']}/retry")
    assert_error(status, body, 404, job["id"])


async def test_dead_job_operations_refuse_live_jobs(runners: RunnerHarness) -> None:
    runner = await runners.start()
    job = await submit(runner, task="true")
    await wait_job(runner, job["id"])
    status, body = await http(runner, "POST", f"/api/dead-jobs/{job['id']}/retry")
    assert_error(status, body, 409, "not dead")
    status, body = await http(runner, "DELETE", f"/api/dead-jobs/{job['id']}")
    assert_error(status, body, 409, "not dead")
    status, body = await http(runner, "GET", "/api/dead-jobs?limit=0")
    assert_error(status, body, 400, '"limit"')


async def dead_letters(runner: Runner) -> dict[str, Any]:
    status, body = await http(runner, "GET", "/api/dead-letters")
    assert status == 200, body
    return dict(body)


async def test_dead_letters_list_retry_and_drop(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start()
    await redis.lpush("task:prepare:queue", b"not json")
    await wait_until(lambda: runner.store.dead_letter_count(), message="the dead letter")
    [entry] = (await dead_letters(runner))["dead_letters"]
    assert entry["raw"] == "not json" and "not valid JSON" in entry["reason"]

    # retry routes it again: still not JSON, so it comes back as a new dead letter
    status, taken = await http(runner, "POST", f"/api/dead-letters/{entry['id']}/retry")
    assert status == 200 and taken["id"] == entry["id"] and taken["raw"] == "not json"

    async def relisted() -> bool:
        body = await dead_letters(runner)
        return body["total"] == 1 and body["dead_letters"][0]["id"] != entry["id"]

    await wait_until(relisted, message="the retried message to be dead-lettered again")
    [entry] = (await dead_letters(runner))["dead_letters"]
    assert await http(runner, "DELETE", f"/api/dead-letters/{entry['id']}") == (204, "")
    assert await dead_letters(runner) == {"dead_letters": [], "total": 0}
    status, body = await http(runner, "DELETE", f"/api/dead-letters/{entry['id']}")
    assert_error(status, body, 404, entry["id"])


async def test_dead_letter_retry_routes_it_once_its_channel_exists(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    runner = await runners.start()
    await redis.lpush(
        "task:prepare:queue", b'{"task": "echo late", "chan": "later", "id": "late1"}'
    )
    await wait_until(lambda: runner.store.dead_letter_count(), message="the dead letter")
    [entry] = (await dead_letters(runner))["dead_letters"]
    assert "unknown channel 'later'" in entry["reason"]
    assert (await http(runner, "POST", "/api/channels", json={"name": "later"}))[0] == 201
    status, taken = await http(runner, "POST", f"/api/dead-letters/{entry['id']}/retry")
    assert status == 200 and taken == entry
    await wait_until(lambda: runner.store.get_job("late1"), message="the job to be routed")
    view = await wait_job(runner, "late1")
    assert view["state"] == "succeeded" and view["channel"] == "later"
    assert await dead_letters(runner) == {"dead_letters": [], "total": 0}
    status, body = await http(runner, "POST", "/api/dead-letters/0123456789abcdef/retry")
    assert_error(status, body, 404, "no dead letter")


# -- error shapes -----------------------------------------------------------------------------

JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "fragment"),
    [
        ("POST", "/api/jobs", {"data": "{not json", "headers": JSON_HEADERS}, 400, "not valid JSON"),
        ("POST", "/api/jobs", {"data": "", "headers": JSON_HEADERS}, 400, "body is empty"),
        ("POST", "/api/jobs", {"json": ["task"]}, 400, "JSON list"),
        ("POST", "/api/jobs", {"json": {"args": []}}, 400, '"task" is required'),
        ("POST", "/api/jobs", {"json": {"task": "date", "timeout": "soon"}}, 400, '"timeout"'),
        ("POST", "/api/jobs", {"json": {"task": "date", "color": 1}}, 400, "unknown job field(s) color"),
        ("POST", "/api/jobs", {"json": {"task": "date", "chan": "a", "channel": "b"}}, 400, "not both"),
        ("POST", "/api/jobs", {"json": {"task": "date", "channel": "ghost"}}, 404, "does not exist"),
        ("POST", "/api/jobs", {"json": {"task": "date", "run_at": 1e300}}, 400, '"run_at"'),
        ("POST", "/api/jobs", {"json": {"task": "date", "id": "x\n"}}, 400, '"id"'),
        ("POST", "/api/channels", {"json": {"name": "nl\n"}}, 400, "invalid channel name"),
        ("POST", "/api/jobs", {"data": {"task": "date"}}, 415, "Content-Type: application/json"),
        ("GET", "/api/jobs/nope", {}, 404, "no job 'nope'"),
        ("GET", "/api/jobs/nope/wait?timeout=0", {}, 400, '"timeout"'),
        ("GET", "/api/jobs/nope/wait?timeout=301", {}, 400, '"timeout"'),
        ("GET", "/api/jobs/nope/wait", {}, 404, "no job 'nope'"),
        ("GET", "/api/channels/ghost", {}, 404, "does not exist"),
        ("GET", "/api/channels/bad%09name", {}, 400, "invalid channel name"),
        ("POST", "/api/channels", {"json": {"worker_count": 2}}, 400, '"name" is required'),
        ("POST", "/api/channels", {"json": {"name": "biz"}}, 409, "already exists"),
        ("POST", "/api/channels/ghost/pause", {}, 404, "does not exist"),
        ("GET", "/api/nope", {}, 404, "no route GET /api/nope"),
        ("GET", "/api", {}, 404, "no route GET /api"),
        ("DELETE", "/api/jobs", {}, 405, "this path takes GET, POST"),
        ("PUT", "/api/channels/biz", {}, 405, "method not allowed"),
    ],
)  # fmt: skip
async def test_every_error_has_the_native_shape(
    runners: RunnerHarness,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    runner = await runners.start()
    got_status, body = await http(runner, method, path, **kwargs)
    assert_error(got_status, body, status, fragment)


async def test_oversized_body_is_413_in_the_native_shape(runners: RunnerHarness) -> None:
    runner = await runners.start()
    body = io.BytesIO(b"{" * (2 << 20))
    status, reply = await http(runner, "POST", "/api/jobs", data=body, headers=JSON_HEADERS)
    assert_error(status, reply, 413, "larger than")


async def test_auth_token_401_has_the_native_shape(runners: RunnerHarness) -> None:
    runner = await runners.start(auth_token="s3cret")
    for method, path in [("GET", "/api/jobs"), ("POST", "/api/jobs"), ("GET", "/api/nope")]:
        status, body = await http(runner, method, path)
        assert_error(status, body, 401, "Authorization: Bearer")
        assert "s3cret" not in str(body)
    good = {"Authorization": "Bearer s3cret"}
    status, body = await http(runner, "GET", "/api/jobs", headers={"Authorization": "Bearer no"})
    assert_error(status, body, 401)
    assert (await http(runner, "GET", "/api/jobs", headers=good))[0] == 200


async def test_kingtask_prefixes_keep_their_own_error_shape(runners: RunnerHarness) -> None:
    runner = await runners.start()
    for path in ("/api/v1/task/result/nope", "/api/task/result/nope"):
        status, body = await http(runner, "GET", path)
        assert status == 403 and isinstance(body, str), (path, body)


async def test_note_is_accepted_returned_listed_and_documented(runners: RunnerHarness) -> None:
    runner = await runners.start(task_mode=False)
    view = await submit(runner, task="true", id="noted", note="for the audit, ticket 42")
    assert view["note"] == "for the audit, ticket 42"
    status, page = await http(runner, "GET", "/api/jobs")
    assert status == 200 and [j["note"] for j in page["jobs"] if j["id"] == "noted"] == [
        "for the audit, ticket 42"
    ]
    status, body = await http(
        runner, "POST", "/api/jobs", json={"task": "true", "note": "n" * 1001}
    )
    assert_error(status, body, 400, '"note" must be a string of at most 1000 characters')
    status, document = await http(runner, "GET", "/api/openapi.json")
    schemas = document["components"]["schemas"]
    assert schemas["JobCreate"]["properties"]["note"]["maxLength"] == 1000
    assert schemas["Job"]["properties"]["note"] == {"type": "string", "nullable": True}
