"""Adopting TaskRunner's queued commands (`<chan>:tasks:queue`, written as the Go code writes
them: tests/support/upstream_go.py) at the store and adoption level: run order, one atomic step
per command beside a Go runner, duplicates, dead letters, dry run, and the idle pass's cost."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from taskrunner.adoption import ADOPT, DEAD_LETTER, LEAVE, Adoption
from taskrunner.service import Service, ServiceSettings
from taskrunner.store import MOVED
from tests.support.runners import RunnerHarness
from tests.support.upstream_go import go_channel, go_push, go_take
from tests.support.waiting import wait_until

CAP = 10000


@pytest.fixture
async def service(redis_url: str) -> AsyncIterator[Service]:
    svc = Service.from_url(redis_url, ServiceSettings(runner_id="test"))
    try:
        yield svc
    finally:
        await svc.close()


def adoption(service: Service) -> Adoption:
    return Adoption(service, dead_letter_cap=CAP)


async def queued_tasks(redis: aioredis.Redis, channel: str) -> list[str]:
    """Our channel's queued jobs' commands, in the order workers claim them (RPOP: tail first)."""
    ids = await redis.lrange(f"task:queue:{channel}", 0, -1)
    return [
        (await redis.hget(f"task:job:{i.decode()}", "task") or b"").decode() for i in reversed(ids)
    ]


async def test_commands_are_adopted_oldest_first_and_leave_upstreams_keys(
    service: Service, redis: aioredis.Redis
) -> None:
    await go_channel(redis, "mail", distinct=True, workers=1)
    commands = [f"echo {n}" for n in range(250)]  # more than one batch
    for command in commands:
        assert await go_push(redis, "mail", command, distinct=True) == 1
    await redis.sadd("mail:tasks:queue:exec", "echo running-in-go")

    (report,) = await adoption(service).adopt_all()

    assert (report.channel, report.adopted, report.duplicates, report.dead_lettered) == (
        "mail", 250, 0, 0,
    )  # fmt: skip
    assert await queued_tasks(redis, "mail") == commands
    assert not await redis.exists("mail:tasks:queue")
    assert not await redis.keys("mail:tasks:queue:*:dis")  # every dedup mark cleared
    assert await redis.smembers("mail:tasks:queue:exec") == {b"echo running-in-go"}  # untouched
    assert await redis.hget("task:stats", "adopted") == b"250"


async def test_a_command_a_go_runner_takes_meanwhile_is_not_adopted_and_none_is_lost(
    service: Service, redis: aioredis.Redis
) -> None:
    await go_channel(redis, "mail", distinct=False, workers=1)
    for n in range(6):
        await go_push(redis, "mail", f"echo {n}", distinct=False)
    queue = b"mail:tasks:queue"
    seen = await service.store.upstream_commands(queue, count=3)
    assert await go_take(redis, "mail") == "echo 0"  # a Go runner takes the oldest meanwhile
    items = [(raw, service.parse_job({"task": raw.decode(), "channel": "mail"})) for raw in seen]
    statuses = [
        a.status
        for a in await service.store.adopt_commands(
            queue, items, runner_id="test", dead_letter_cap=CAP
        )
    ]
    assert statuses == [MOVED, "ok", "ok"]  # echo 0 went to Go; echo 1, echo 2 to us

    await adoption(service).adopt_all()

    assert await redis.smembers("mail:tasks:queue:exec") == {b"echo 0"}
    assert await queued_tasks(redis, "mail") == [f"echo {n}" for n in range(1, 6)]


async def test_a_duplicate_of_a_live_job_is_taken_and_refused(
    service: Service, redis: aioredis.Redis
) -> None:
    await go_channel(redis, "mail", distinct=True, workers=1)
    live = await service.submit({"task": "php artisan send", "channel": "mail"}, source="test")
    assert live.status == "ok"
    await go_push(redis, "mail", "php artisan send", distinct=True)
    await go_push(redis, "mail", "php artisan other", distinct=True)

    (report,) = await adoption(service).adopt_all()

    assert (report.adopted, report.duplicates) == (1, 1)
    assert await queued_tasks(redis, "mail") == ["php artisan send", "php artisan other"]
    assert not await redis.exists("mail:tasks:queue", "mail:tasks:queue:php artisan send:dis")
    assert await redis.hget("task:stats", "refused") == b"1"


async def test_bad_commands_and_bad_channel_names_are_dead_lettered_with_their_reason(
    service: Service, redis: aioredis.Redis
) -> None:
    await go_channel(redis, "mail", distinct=False, workers=1)
    for command in ["echo first", 'echo "unbalanced', "echo last"]:
        await go_push(redis, "mail", command, distinct=False)
    await redis.lpush("bad\tname:tasks:queue", "echo tabbed")  # a name no channel here can have

    reports = {r.channel: r for r in await adoption(service).adopt_all()}

    assert (reports["mail"].adopted, reports["mail"].dead_lettered) == (2, 1)
    assert reports["bad\tname"].dead_lettered == 1
    assert await queued_tasks(redis, "mail") == ["echo first", "echo last"]
    assert not await redis.exists("mail:tasks:queue", "bad\tname:tasks:queue")
    letters = [json.loads(item) for item in await redis.lrange("task:dead_letters", 0, -1)]
    by_task = {json.loads(letter["raw"])["task"]: letter for letter in letters}
    assert set(by_task) == {'echo "unbalanced', "echo tabbed"}
    assert "mail:tasks:queue" in by_task['echo "unbalanced']["reason"]
    assert "invalid channel name" in by_task["echo tabbed"]["reason"]
    assert {letter["source"] for letter in letters} == {"upstream_queue"}
    # a dead letter's raw is the prepare-queue message the command stands for: retry routes it
    assert json.loads(by_task["echo tabbed"]["raw"]) == {"task": "echo tabbed", "chan": "bad\tname"}


async def test_a_queue_of_a_channel_unknown_here_is_left_with_one_warning(
    service: Service, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await go_push(redis, "reports", "echo r", distinct=False)
    adopt = adoption(service)
    with caplog.at_level(logging.WARNING, logger="taskrunner.adoption"):
        first = await adopt.adopt_all()
        await adopt.adopt_all()
    assert [(r.channel, r.left, r.adopted) for r in first] == [("reports", 1, 0)]
    assert await redis.lrange("reports:tasks:queue", 0, -1) == [b"echo r"]
    warnings = [r.getMessage() for r in caplog.records if "reports:tasks:queue" in r.getMessage()]
    assert len(warnings) == 1 and "taskrunner queue create reports" in warnings[0]

    await go_channel(redis, "reports", distinct=False, workers=1)  # created: the idle pass adopts
    (report,) = await adopt.adopt_waiting()
    assert report.adopted == 1 and not await redis.exists("reports:tasks:queue")


async def test_dry_run_lists_every_command_and_moves_nothing(
    service: Service, redis: aioredis.Redis
) -> None:
    await go_channel(redis, "mail", distinct=True, workers=1)
    await go_push(redis, "mail", "echo a", distinct=True)
    await go_push(redis, "mail", "echo 'b", distinct=True)
    await go_push(redis, "elsewhere", "echo c", distinct=False)
    before = {key: await redis.dump(key) for key in await redis.keys("*")}

    reports = await adoption(service).adopt_all(dry_run=True)

    assert {key: await redis.dump(key) for key in await redis.keys("*")} == before
    planned = {r.channel: [(action, command) for action, command, _ in r.planned] for r in reports}
    assert planned == {
        "mail": [(ADOPT, "echo a"), (DEAD_LETTER, "echo 'b")],
        "elsewhere": [(LEAVE, "echo c")],
    }


async def commands_run(redis: aioredis.Redis) -> dict[str, int]:
    """Calls of each command Redis ran so far (INFO commandstats), INFO itself left out."""
    stats = await redis.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


@pytest.mark.parametrize("channels", [3, 100])
async def test_the_idle_pass_is_one_hkeys_and_one_exists(
    service: Service, redis: aioredis.Redis, channels: int
) -> None:
    for n in range(channels):
        await go_channel(redis, f"ch{n}", distinct=False, workers=1)
    adopt = adoption(service)
    await service.store.ping()  # the pool's connection is made (HELLO/CLIENT) before counting
    before = await commands_run(redis)
    assert await adopt.adopt_waiting() == []
    after = await commands_run(redis)
    ran = {name: after[name] - before.get(name, 0) for name in after}
    assert {name: n for name, n in ran.items() if n} == {"hkeys": 1, "exists": 1}


async def test_a_runner_adopts_at_start_unless_it_runs_no_jobs(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    await go_channel(redis, "mail", distinct=False, workers=1)
    await go_push(redis, "mail", "echo adopted", distinct=False)
    routing_only = await runners.start(task_mode=False)
    assert "adopt" not in {task.get_name() for task in routing_only._loops}
    assert await redis.llen("mail:tasks:queue") == 1  # its start did not adopt
    runner = await runners.start()
    assert "adopt" in {task.get_name() for task in runner._loops}
    await wait_until(
        lambda: runner.metrics.jobs_adopted.labels("mail")._value.get() == 1,
        message="the runner to adopt the command",
    )
    assert not await redis.exists("mail:tasks:queue")
