"""The admin subcommands, black box: `taskrunner queue update/pause/resume/delete`, `jobs`,
`dead list/retry/drop`, push's scheduling options and the exit codes of failures.

Each command runs as a child process of the installed console script (asynchronously, so the
in-process runner of the test keeps working meanwhile) against the session's Redis server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from taskrunner.models import ChannelConfig
from tests.support.net import free_port
from tests.support.runners import RunnerHarness, stored_job, wait_state
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio

CLI_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self
        return json.loads(self.out)

    def error(self) -> str:
        """The one-line reason of a failed command."""
        lines = [line for line in self.err.splitlines() if line.startswith("taskrunner: error:")]
        assert len(lines) == 1, self
        return lines[0]


def console_script() -> str:
    found = shutil.which("taskrunner", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("console script 'taskrunner' not found next to python: pip install -e .")
    return found


async def cli(redis_url: str, *args: str) -> Ran:
    """`taskrunner ARGS --redis-url URL`, unless ARGS give their own --redis-url."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKRUNNER_")}
    url = [] if "--redis-url" in args else ["--redis-url", redis_url]
    proc = await asyncio.create_subprocess_exec(
        console_script(), *args, *url,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    assert proc.returncode is not None
    ran = Ran(proc.returncode, out.decode(), err.decode())
    print(f"$ taskrunner {' '.join(args)} -> {ran.code}\n{ran.out}{ran.err}")
    return ran


@pytest.mark.slow
async def test_queue_update_pause_resume_delete(
    runners: RunnerHarness, redis_url: str, tmp_path: Path
) -> None:
    runner = await runners.start()
    assert (await cli(redis_url, "queue", "create", "jobs", "--worker", "1")).code == 0

    nothing, zero, missing = await asyncio.gather(
        cli(redis_url, "queue", "update", "jobs"),
        cli(redis_url, "queue", "update", "jobs", "--worker", "0"),
        cli(redis_url, "queue", "update", "nope", "--worker", "2"),
    )
    assert nothing.code == 2 and "nothing to change" in nothing.err
    assert all(opt in nothing.err for opt in ("--worker", "--distinct", "--retry-intervals"))
    assert zero.code == 2 and '"worker_count" must be a whole number from 1' in zero.error()
    assert missing.code == 2 and "channel 'nope' does not exist" in missing.error()

    updated = await cli(
        redis_url, "queue", "update", "jobs", "--worker", "3", "--distinct", "--timeout", "9",
        "--retry-intervals", "1 2", "--json",
    )  # fmt: skip
    assert updated.json() == {
        "name": "jobs", "distinct": True, "worker_count": 3, "paused": False, "timeout": 9.0,
        "retries": 2, "retry_intervals": [1.0, 2.0],
    }  # fmt: skip
    await wait_until(lambda: runner.workers["jobs"].config.worker_count == 3, timeout_s=5)

    paused = await cli(redis_url, "queue", "pause", "jobs")
    assert paused.code == 0 and paused.out.startswith("channel jobs paused: ")
    await wait_until(lambda: runner.workers["jobs"].config.paused, timeout_s=5)
    marker = tmp_path / "ran"
    job = await runner.service.submit(
        {"task": "touch", "args": [str(marker)], "channel": "jobs"}, source="t"
    )

    listed, text, busy = await asyncio.gather(
        cli(redis_url, "queue", "list", "--json"),
        cli(redis_url, "queue", "list"),
        cli(redis_url, "queue", "delete", "jobs"),
    )
    [jobs] = [c for c in listed.json() if c["name"] == "jobs"]
    assert (jobs["paused"], jobs["queued"], jobs["scheduled"], jobs["running"]) == (True, 1, 0, 0)
    assert text.out.split("\n")[0].split() == [
        "CHANNEL", "WORKERS", "DISTINCT", "PAUSED", "QUEUED", "SCHEDULED", "RUNNING",
    ]  # fmt: skip
    assert "jobs 3 True True 1 0 0" in [" ".join(line.split()) for line in text.out.splitlines()]
    assert busy.code == 1 and "still has 1 queued" in busy.error()
    assert not marker.exists()

    resumed = await cli(redis_url, "queue", "resume", "jobs", "--json")
    assert resumed.json()["paused"] is False
    await wait_state(runner.store, job.job_id, "succeeded")
    assert marker.exists()

    deleted = await cli(redis_url, "queue", "delete", "jobs")
    assert deleted.code == 0 and deleted.out == "channel jobs deleted\n"
    await wait_until(lambda: "jobs" not in runner.workers, timeout_s=5)
    names = [c["name"] for c in (await cli(redis_url, "queue", "list", "--json")).json()]
    assert "jobs" not in names and "default" in names


@pytest.mark.slow
async def test_dead_jobs_and_dead_letters(
    runners: RunnerHarness, redis: aioredis.Redis, redis_url: str
) -> None:
    runner = await runners.start()
    pushed = await cli(
        redis_url, "push", "sh -c 'echo it broke >&2; exit 3'", "--retries", "1",
        "--retry-intervals", "0.1", "--json",
    )  # fmt: skip
    job_id = pushed.json()["id"]
    await wait_state(runner.store, job_id, "dead")
    await redis.lpush("task:prepare:queue", "not json")
    await wait_until(lambda: runner.store.dead_letter_count(), timeout_s=5)

    text, data = await asyncio.gather(
        cli(redis_url, "dead", "list"), cli(redis_url, "dead", "list", "--json")
    )
    lines = [" ".join(line.split()) for line in text.out.splitlines()]
    assert "dead jobs: 1" in lines and "dead letters: 1" in lines
    assert "ID CHANNEL ATTEMPTS FINISHED LAST ERROR" in lines
    assert any(line.startswith(f"{job_id} default 2 ") and "exit code 3" in line for line in lines)
    assert "ID TIME REASON MESSAGE" in lines
    assert any("message is not valid JSON" in line and "not json" in line for line in lines)
    listing = data.json()
    assert (listing["dead_jobs_total"], listing["dead_letters_total"]) == (1, 1)
    [dead_job] = listing["dead_jobs"]
    assert (dead_job["id"], dead_job["attempt"], dead_job["final"]) == (job_id, 2, True)
    [letter] = listing["dead_letters"]
    assert letter["raw"] == "not json" and letter["reason"].startswith("message is not valid JSON")

    retried = await cli(redis_url, "dead", "retry", job_id)
    assert retried.code == 0 and retried.out == f"dead job {job_id} queued again\n"
    retried = await cli(redis_url, "dead", "retry", letter["id"], "--json")
    assert retried.json() == {"id": letter["id"], "kind": "letter", "action": "retried"}

    async def dead_again() -> bool:
        record = await stored_job(runner.store, job_id)
        return record.state == "dead" and record.revived == 1

    async def letter_again() -> list[dict[str, Any]]:
        return [e for e in await runner.store.dead_letters() if e["id"] != letter["id"]]

    await wait_until(dead_again, timeout_s=10)  # the retried job ran (and failed) again
    await wait_until(letter_again, timeout_s=5)  # the message was routed (and refused) again
    [new_letter] = await letter_again()
    assert (await stored_job(runner.store, job_id)).attempt == 2  # attempts started over

    dropped_letter, dropped_job = await asyncio.gather(
        cli(redis_url, "dead", "drop", new_letter["id"]), cli(redis_url, "dead", "drop", job_id)
    )
    assert dropped_letter.out == f"dead letter {new_letter['id']} dropped\n"
    assert dropped_job.out == f"dead job {job_id} dropped\n"
    assert await runner.store.get_job(job_id) is None
    assert await runner.store.dead_letter_count() == 0
    assert (await cli(redis_url, "dead", "list")).out == "dead jobs: 0\n\ndead letters: 0\n"

    alive = await runner.service.submit({"task": "true"}, source="t")
    await wait_state(runner.store, alive.job_id, "succeeded")
    gone, not_dead = await asyncio.gather(
        cli(redis_url, "dead", "drop", job_id), cli(redis_url, "dead", "retry", alive.job_id)
    )
    assert gone.code == 1
    assert gone.error() == (
        f"taskrunner: error: no dead job or dead letter {job_id!r}:"
        " list them with `taskrunner dead list`"
    )
    assert not_dead.code == 1 and "is succeeded, not dead" in not_dead.error()


@pytest.mark.slow
async def test_jobs_listing_and_push_scheduling_options(
    runners: RunnerHarness, redis_url: str
) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="held", paused=True))
    done = await runner.service.submit({"task": "true"}, source="t")
    await wait_state(runner.store, done.job_id, "succeeded")
    before = time.time()
    soon = before + 60
    pushed = await asyncio.gather(
        cli(redis_url, "push", "echo 1", "-c", "held", "--delay", "30", "--json"),
        cli(redis_url, "push", "echo 2", "-c", "held", "--run-at", str(soon), "--json"),
        cli(redis_url, "push", "echo 3", "-c", "held", "--retry-intervals", "60 600 3600"),
    )
    after = time.time()
    delayed, at, queued = pushed[0].json()["id"], pushed[1].json()["id"], pushed[2].out.strip()

    all_jobs, page1, done_text, bad_state, bad_channel, bad_since = await asyncio.gather(
        cli(redis_url, "jobs", "--json"),
        cli(redis_url, "jobs", "-c", "held", "--limit", "2", "--json"),
        cli(redis_url, "jobs", "--state", "succeeded"),
        cli(redis_url, "jobs", "--state", "bogus"),
        cli(redis_url, "jobs", "--channel", "nope"),
        cli(redis_url, "jobs", "--since", "last week"),
    )
    listed = all_jobs.json()["jobs"]
    views = {job["id"]: job for job in listed}
    assert {i: views[i]["state"] for i in views} == {
        done.job_id: "succeeded", delayed: "scheduled", at: "scheduled", queued: "queued",
    }  # fmt: skip
    assert [job["id"] for job in listed][-1] == done.job_id  # newest first: it came first
    assert views[at]["run_at"] == pytest.approx(soon)
    assert before + 30 <= views[delayed]["run_at"] <= after + 30
    assert (views[queued]["retries"], views[done.job_id]["exit_code"]) == (3, 0)
    assert all_jobs.json()["next_cursor"] is None

    # held's jobs newest first, by creation; the cursor goes on after the page's last
    held = [job["id"] for job in listed if job["channel"] == "held"]
    assert [j["id"] for j in page1.json()["jobs"]] == held[:2]
    cursor = page1.json()["next_cursor"]
    page2 = await cli(redis_url, "jobs", "-c", "held", "--limit", "2", "--cursor", cursor, "--json")
    assert [j["id"] for j in page2.json()["jobs"]] == held[2:]
    assert page2.json()["next_cursor"] is None

    lines = done_text.out.splitlines()
    assert lines[0].split() == ["ID", "CHANNEL", "STATE", "ATTEMPT", "CREATED", "TASK", "NOTE"]
    assert lines[1].split()[:4] == [done.job_id, "default", "succeeded", "1"]
    assert lines[1].split()[-2:] == ["true", "-"] and len(lines) == 2  # no note: "-"
    assert bad_state.code == 2 and "'bogus' is not one of" in bad_state.err
    assert bad_channel.code == 2 and "channel 'nope' does not exist" in bad_channel.error()
    assert bad_since.code == 2 and 'parameter "since"' in bad_since.error()

    more = await cli(redis_url, "jobs", "-c", "held", "--command", "echo", "--limit", "1")
    *table, hint = more.out.splitlines()
    assert table[1].split()[0] == held[0]
    prefix = "more: taskrunner jobs --channel held --command echo --limit 1 --cursor "
    assert hint.startswith(prefix)
    following = await cli(redis_url, *hint.removeprefix("more: taskrunner ").split())
    assert following.out.splitlines()[1].split()[0] == held[1]

    hour_ago = await cli(redis_url, "jobs", "--since", "1h", "--until", "0.5s", "--json")
    assert len(hour_ago.json()["jobs"]) == 4  # ages: created within the hour, all of them


@pytest.mark.slow
async def test_failures_exit_with_one_line_reasons(redis_url: str) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    results = await asyncio.gather(
        cli(redis_url, "cancel", "missing"),
        cli(redis_url, "cancel", "missing", "--json"),
        cli(redis_url, "result", "missing"),
        cli(redis_url, "dead", "retry", "missing"),
        cli(redis_url, "push", "true", "--delay", "1", "--run-at", "5"),
        cli(redis_url, "push", "true", "--retry-intervals", "soon"),
        cli(redis_url, "dead", "list", "--redis-url", unreachable),
        cli(redis_url, "jobs", "--limit", "0"),
    )
    cancel, cancel_json, result, retry, both, intervals, down, limit = results
    for ran in (cancel, cancel_json, result):
        assert ran.code == 1
        assert ran.error() == (
            "taskrunner: error: no job 'missing': it never existed or its record expired"
        )
    assert retry.code == 1 and "no dead job or dead letter 'missing'" in retry.error()
    assert both.code == 2 and 'either "run_at" or "delay", not both' in both.error()
    assert intervals.code == 2 and '"retry_intervals"' in intervals.error()
    assert down.code == 2 and "cannot reach Redis" in down.error()
    assert limit.code == 2 and "--limit" in limit.err


async def test_counts_read_no_ids(runners: RunnerHarness, redis: aioredis.Redis) -> None:
    # `queue list`, `status` and the stats count with limit 0: that must not read every id
    # (LRANGE/ZRANGE 0 -1 is the whole list).
    runner = await runners.start(task_mode=False)
    await runner.store.create_channel(ChannelConfig(name="held", paused=True))
    for n in range(3):
        await runner.service.submit({"task": f"echo {n}", "channel": "held"}, source="t")
    await redis.lpush("task:prepare:queue", "not json")
    await wait_until(lambda: runner.store.dead_letter_count(), timeout_s=5)
    await redis.zadd("task:dead", {"some-job": 1})

    snapshot = await runner.store.channel_snapshot("held", limit=0)
    assert (snapshot.queued, snapshot.jobs) == (3, [])
    assert len((await runner.store.channel_snapshot("held", limit=2)).jobs) == 2
    assert await runner.service.channel_counts("held") == {
        "queued": 3,
        "scheduled": 0,
        "running": 0,
    }
    assert await runner.store.dead_letters(count=0) == []
    assert await runner.store.dead_jobs(offset=0, limit=0) == ([], 1)


async def test_push_note_is_shown_in_the_job_table_and_json(
    runners: RunnerHarness, redis_url: str
) -> None:
    runner = await runners.start()
    await runner.store.create_channel(ChannelConfig(name="held", paused=True))
    pushed = await cli(redis_url, "push", "echo noted", "-c", "held", "--note", "nightly, by ops")
    assert pushed.code == 0
    job_id = pushed.out.strip()
    table = await cli(redis_url, "jobs", "-c", "held")
    header, row = table.out.splitlines()
    assert header.split()[-1] == "NOTE" and row.endswith("nightly, by ops")
    [job] = (await cli(redis_url, "jobs", "-c", "held", "--json")).json()["jobs"]
    assert (job["id"], job["note"]) == (job_id, "nightly, by ops")
    too_long = await cli(redis_url, "push", "true", "--note", "n" * 1001)
    assert too_long.code != 0 and '"note" must be a string of at most 1000' in too_long.error()


async def test_unicode_and_spaced_channel_names_from_the_command_line(
    runners: RunnerHarness, redis_url: str
) -> None:
    """Channel names as upstream took them (issue 14): create, push, list and show."""
    runner = await runners.start()
    for name in ("报表", "my chan"):
        assert (await cli(redis_url, "queue", "create", name, "--worker", "1")).code == 0
        pushed = await cli(redis_url, "push", "true", "-c", name, "--json")
        await wait_state(runner.store, pushed.json()["id"], "succeeded")
    listed = {c["name"] for c in (await cli(redis_url, "queue", "list", "--json")).json()}
    assert {"报表", "my chan"} <= listed
    table = await cli(redis_url, "queue", "list")
    assert "报表" in table.out and "my chan" in table.out
    bad = await cli(redis_url, "queue", "create", "tab\there")
    assert bad.code == 2 and "U+0009" in bad.error()


async def test_result_shows_the_record_as_the_native_api_does(
    runners: RunnerHarness, redis_url: str
) -> None:
    runner = await runners.start()
    admission = await runner.service.submit(
        {"task": "sh", "args": ["-c", "echo out; echo err >&2"]}, source="t"
    )
    job_id = admission.job_id
    record = await wait_state(runner.store, job_id, "succeeded")
    as_json, text, waited = await asyncio.gather(
        cli(redis_url, "result", job_id, "--json"),
        cli(redis_url, "result", job_id),
        cli(redis_url, "result", job_id, "--wait", "--timeout", "5", "--json"),
    )
    view = as_json.json()
    assert view == waited.json() == record.to_view()
    assert (view["attempt"], view["exit_code"], view["final"]) == (1, 0, True)
    lines = text.out.splitlines()
    assert {f"id         {job_id}", "attempt    1", "exit_code  0", "state      succeeded"} <= set(
        lines
    ), text
    assert lines[-4:] == ["--- stdout", "out", "--- stderr", "err"], text
