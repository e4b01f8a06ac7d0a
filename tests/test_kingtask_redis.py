"""kingtask's Redis protocol with real Redis and real runners: requests left as `t_<uuid>` plus
`SADD request_uuid_set`, as kingtask's broker writes them (linlams/kingtask broker/broker.go
`AddRequestToRedis`), run once; results in `r_<uuid>` and the daily counters, as its worker
writes them (the-no/kingtask worker/worker.go `SetTaskResult`, `SetSuccessTaskCount`)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from taskrunner.runner import Runner
from tests.support.http import http
from tests.support.runners import RunnerHarness
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio

EXAMPLE = '#!/bin/sh\nprintf "%d" $(($1 + $2))\n'  # seed 001's example.go: the sum


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    scripts = {
        "example": EXAMPLE,
        "record": f'#!/bin/sh\necho "$1" >> {tmp_path}/ran\n',
        "quiet_fail": "#!/bin/sh\nexit 3\n",
    }
    for name, text in scripts.items():
        (path / name).write_text(text)
        (path / name).chmod(0o755)
    return path


async def request(redis: aioredis.Redis, bin_name: str, args: str = "", **fields: str) -> str:
    """A request as kingtask's broker leaves it: HMSET t_<uuid>, then SADD request_uuid_set."""
    task_id = str(uuid.uuid4())
    request = {
        "uuid": task_id, "bin_name": bin_name, "args": args,
        "start_time": str(int(time.time())), "time_interval": "", "index": "0", **fields,
    }  # fmt: skip
    await redis.hset(f"t_{task_id}", mapping=request)
    await redis.sadd("request_uuid_set", task_id)
    return task_id


async def result_hash(redis: aioredis.Redis, task_id: str) -> dict[str, str]:
    """Wait for `r_<uuid>` (HMGet is_success like kingtask's broker); return its fields."""
    await wait_until(lambda: redis.hexists(f"r_{task_id}", "is_success"), message=f"r_{task_id}")
    raw = await redis.hgetall(f"r_{task_id}")
    return {k.decode(): v.decode() for k, v in raw.items()}


async def test_requests_run_exactly_once_with_two_runners(
    runners: RunnerHarness, redis: aioredis.Redis, bin_dir: Path, tmp_path: Path
) -> None:
    first = await runners.start(bin_path=bin_dir)
    second = await runners.start(bin_path=bin_dir)
    ids = [await request(redis, "record", f"n{i}") for i in range(30)]
    for task_id in ids:
        assert (await result_hash(redis, task_id))["is_success"] == "1"
    ran = (tmp_path / "ran").read_text().split()
    assert sorted(ran) == sorted(f"n{i}" for i in range(30))  # each once
    assert not await redis.exists("request_uuid_set", *(f"t_{i}" for i in ids))
    for runner in (first, second):
        assert not await redis.exists(runner.store.keys.kingtask_inflight(runner.runner_id))


async def test_result_hash_has_upstream_fields_expiry_and_counts_the_day(
    runners: RunnerHarness, redis: aioredis.Redis, bin_dir: Path
) -> None:
    runner = await runners.start(bin_path=bin_dir, result_ttl_s=1000)
    task_id = await request(redis, "example", "12 45")
    fields = await result_hash(redis, task_id)
    assert fields["is_success"] == "1" and fields["result"] == "57"
    assert {k: fields[k] for k in ("uuid", "bin_name", "args", "time_interval", "index")} == {
        "uuid": task_id, "bin_name": "example", "args": "12 45", "time_interval": "", "index": "0"
    }  # fmt: skip
    assert int(fields["start_time"]) > 0 and fields["task_type"] == "1"
    assert 0 < await redis.ttl(f"r_{task_id}") <= 1000  # result_keep_time
    day = time.strftime("%Y-%m-%d")  # Go's "2006-01-02", local time
    assert await redis.get(f"success_task_count:{day}") == b"1"
    assert 29 * 86400 < await redis.ttl(f"success_task_count:{day}") <= 30 * 86400
    status, reply = await http(runner, "GET", f"/api/v1/task/result/{task_id}")
    assert (status, reply) == (200, {"is_result_exist": 1, "is_success": 1, "message": "57"})


async def test_a_silent_failure_reports_exit_status_and_counts_as_failed(
    runners: RunnerHarness, redis: aioredis.Redis, bin_dir: Path
) -> None:
    runner = await runners.start(bin_path=bin_dir)
    task_id = await request(redis, "quiet_fail")
    fields = await result_hash(redis, task_id)
    assert (fields["is_success"], fields["result"]) == ("0", "exit status 3")
    assert await redis.get(f"fail_task_count:{time.strftime('%Y-%m-%d')}") == b"1"
    assert not await redis.exists("fail_result_uuid_set")  # taskrunner retries itself
    status, reply = await http(runner, "GET", f"/api/v1/task/result/{task_id}")
    assert (status, reply) == (200, {"is_result_exist": 1, "is_success": 0, "message": "exit status 3"})  # fmt: skip


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"drop": "index"}, "lacks index"),
        ({"index": "x"}, '"index" must be a whole number'),
        ({"start_time": "soon"}, '"start_time" must be a whole number'),
        ({"time_interval": "5 x"}, '"time_interval"'),
        ({"bin_name": "missing"}, "no such file in --bin-path"),
        ({"drop": "*"}, "no hash t_"),
    ],
)
async def test_malformed_requests_are_dead_lettered_with_their_reason(
    runners: RunnerHarness,
    redis: aioredis.Redis,
    bin_dir: Path,
    change: dict[str, str],
    reason: str,
) -> None:
    runner = await runners.start(bin_path=bin_dir)
    task_id = str(uuid.uuid4())
    fields = {"uuid": task_id, "bin_name": "example", "args": "1 2", "start_time": "0",
              "time_interval": "", "index": "0"}  # fmt: skip
    drop = change.get("drop", "")
    changed = {**fields, **{k: v for k, v in change.items() if k != "drop"}}
    fields = {k: v for k, v in changed.items() if drop not in (k, "*")}
    if fields:
        await redis.hset(f"t_{task_id}", mapping=fields)
    await redis.sadd("request_uuid_set", task_id)
    await wait_until(lambda: runner.store.dead_letter_count(), message="a dead letter")
    [letter] = await runner.store.dead_letters()
    assert reason in letter["reason"] and letter["source"] == "kingtask", letter
    assert json.loads(letter["raw"])["key"] == f"t_{task_id}"
    assert not await redis.exists(f"t_{task_id}", "request_uuid_set", f"r_{task_id}")
    assert not await redis.exists(runner.store.keys.kingtask_inflight(runner.runner_id))


async def test_only_runners_with_bin_path_poll(runners: RunnerHarness, bin_dir: Path) -> None:
    def polls(runner: Runner) -> bool:
        return any(task.get_name() == "kingtask" for task in runner._loops)

    assert not polls(await runners.start())
    assert polls(await runners.start(bin_path=bin_dir))


async def test_a_request_claimed_by_a_runner_that_died_before_admitting_it_runs_once(
    runners: RunnerHarness, redis: aioredis.Redis, bin_dir: Path, tmp_path: Path
) -> None:
    runner = await runners.start(bin_path=bin_dir, lease_s=1.0)
    store = runner.store
    runner.kingtask.close()  # this runner only recovers: another one polls afterwards
    # a claim already on its way when closed still claims: wait until the loop has ended
    [poll] = [task for task in runner._loops if task.get_name() == "kingtask"]
    await asyncio.wait_for(asyncio.shield(poll), 5.0)
    task_id = await request(redis, "record", "once")
    await store.register_runner("ghost")
    claimed = await store.claim_kingtask_request("ghost")  # it dies here, before admitting
    assert claimed is not None and claimed[0] == task_id
    assert not await redis.sismember("request_uuid_set", task_id)
    await redis.zadd(store.keys.runners, {"ghost": 0})  # its last beat is long past the lease
    assert await runner.liveness.recover_dead_runners() >= 0
    assert await redis.sismember("request_uuid_set", task_id)  # put back, not lost
    second = await runners.start(bin_path=bin_dir)
    assert (await result_hash(redis, task_id))["is_success"] == "1"
    assert (tmp_path / "ran").read_text().split() == ["once"]
    assert not await redis.exists(store.keys.kingtask_inflight("ghost"))
    assert second.runner_id != runner.runner_id
