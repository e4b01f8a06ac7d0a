"""A TaskRunner deployment switched over to taskrunner, end to end: Redis holds what the Go code
wrote (channels in `task:channels`, commands queued in `<chan>:tasks:queue` by its push script,
distinct channels' dedup marks, a Go runner's running set), a real `taskrunner run` process
starts on it, and every queued command runs once, in upstream's order; the monitoring
equivalents README's "Switching from TaskRunner" gives answer as it says."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.support.upstream_go import go_channel, go_push
from tests.support.waiting import wait_until
from tests.test_process import Runners, q, run_cli, sh

pytestmark = pytest.mark.slow  # real `taskrunner run` processes


@pytest.fixture
def processes(tmp_path: Path, redis_url: str) -> Iterator[Runners]:
    factory = Runners(tmp_path, redis_url)
    try:
        yield factory
    finally:
        factory.cleanup()


def appender(out: Path, line: str, *, gate: Path | None = None) -> str:
    """A command appending `line` to `out`; with `gate`, only once that file exists."""
    wait = f"while [ ! -e {q(gate)} ]; do sleep 0.02; done; " if gate else ""
    return sh(f"{wait}echo {shlex.quote(line)} >> {q(out)}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def go_queue(
    redis: aioredis.Redis, channel: str, commands: list[str], *, distinct: bool
) -> None:
    await go_channel(redis, channel, distinct=distinct, workers=1)
    for command in commands:
        assert await go_push(redis, channel, command, distinct=distinct) == 1


async def test_a_switch_over_runs_every_queued_command_once_in_order(
    processes: Runners, redis: aioredis.Redis, tmp_path: Path
) -> None:
    gate, biz_out, mail_out = tmp_path / "gate", tmp_path / "biz.out", tmp_path / "mail.out"
    biz = [appender(biz_out, "biz 1", gate=gate)] + [
        appender(biz_out, f"biz {n}") for n in (2, 3, 4)
    ]
    mail = [appender(mail_out, f"mail {n}") for n in (1, 2, 3)]
    await go_queue(redis, "biz", biz, distinct=True)  # each with its dedup mark
    await go_queue(redis, "mail", mail, distinct=False)
    assert await go_push(redis, "biz", biz[1], distinct=True) == 0  # the mark refuses a repeat
    await redis.sadd("biz:tasks:queue:exec", "a command a stopped Go runner was running")

    runner = await processes.start("a")

    async def biz_first_running() -> bool:
        return (
            await redis.scard("task:running:biz") == 1 and await redis.llen("task:queue:biz") == 3
        )

    await wait_until(biz_first_running, message="biz's first command running, 3 queued")
    # README's equivalents: LLEN <chan>:tasks:queue -> LLEN task:queue:<chan>; SMEMBERS
    # <chan>:tasks:queue:exec -> SMEMBERS task:running:<chan> (job ids); <chan>:tasks:queue:
    # <cmd>:dis -> HGET task:distinct:<chan> <argv as JSON>
    (running_id,) = await redis.smembers("task:running:biz")
    assert await redis.hget(b"task:job:" + running_id, "task") == biz[0].encode()
    dedup_key = json.dumps(shlex.split(biz[0]), ensure_ascii=False)
    assert await redis.hget("task:distinct:biz", dedup_key) == running_id
    assert not await redis.keys("biz:tasks:queue:*:dis")
    assert not await redis.exists("biz:tasks:queue", "mail:tasks:queue")
    assert await redis.smembers("biz:tasks:queue:exec") == {
        b"a command a stopped Go runner was running"
    }  # left to Go
    status, _, metrics = runner.request("GET", "/metrics")
    assert status == 200
    assert 'taskrunner_queue_depth{channel="biz"} 3.0' in metrics
    assert 'taskrunner_jobs_adopted_total{channel="biz"} 4.0' in metrics
    assert 'taskrunner_jobs_adopted_total{channel="mail"} 3.0' in metrics
    assert await redis.hget("task:stats", "adopted") == b"7"
    listed = run_cli("jobs", "--redis-url", processes.redis_url, "--channel", "biz",
                     "--state", "queued", "--json")  # fmt: skip
    assert [job["task"] for job in json.loads(listed.stdout)["jobs"]] == biz[:0:-1]  # newest first

    gate.touch()
    await wait_until(lambda: len(lines(biz_out)) == 4 and len(lines(mail_out)) == 3)

    async def all_ended() -> bool:
        counts = [await redis.llen("task:queue:biz"), await redis.scard("task:running:biz"),
                  await redis.llen("task:queue:mail"), await redis.scard("task:running:mail")]  # fmt: skip
        return counts == [0, 0, 0, 0]

    await wait_until(all_ended, message="every adopted job ended")
    assert lines(biz_out) == ["biz 1", "biz 2", "biz 3", "biz 4"]
    assert lines(mail_out) == ["mail 1", "mail 2", "mail 3"]
    assert await runner.stop() == 0


async def test_a_switch_over_runs_the_commands_of_a_channel_with_a_unicode_name(
    processes: Runners, redis: aioredis.Redis, tmp_path: Path
) -> None:
    out = tmp_path / "reports.out"
    await go_queue(redis, "报表", [appender(out, f"报表 {n}") for n in (1, 2)], distinct=True)

    await processes.start("a")

    async def taken() -> bool:
        return not await redis.exists("报表:tasks:queue")

    await wait_until(taken, message="the commands of 报表 to be adopted (or dead-lettered)")
    assert await redis.lrange("task:dead_letters", 0, -1) == []
    await wait_until(lambda: len(lines(out)) == 2, message="both commands of 报表 to run")
    assert lines(out) == ["报表 1", "报表 2"]


async def test_migrate_lists_in_a_dry_run_then_moves_and_a_runner_runs_them(
    processes: Runners, redis: aioredis.Redis, tmp_path: Path
) -> None:
    out = tmp_path / "mail.out"
    mail = [appender(out, f"mail {n}") for n in (1, 2)]
    await go_queue(redis, "mail", mail, distinct=False)
    await go_push(redis, "nowhere", "echo left", distinct=False)
    url = ["--redis-url", processes.redis_url]

    dry = run_cli("migrate", "--from", "taskrunner", "--dry-run", *url)
    assert dry.returncode == 0
    assert dry.stdout.splitlines() == [
        "mail:tasks:queue -> channel mail: commands 2",
        f"  adopt       {mail[0]}",
        f"  adopt       {mail[1]}",
        "nowhere:tasks:queue -> channel nowhere: commands 1",
        "  leave       echo left  (channel 'nowhere' does not exist here)",
        "dry run: nothing moved",
    ]
    assert await redis.llen("mail:tasks:queue") == 2

    moved = run_cli("migrate", "--from", "taskrunner", *url)
    assert moved.returncode == 0
    assert "mail:tasks:queue -> channel mail: adopted 2" in moved.stdout
    assert not await redis.exists("mail:tasks:queue")
    assert await redis.llen("nowhere:tasks:queue") == 1

    await processes.start("a")
    await wait_until(lambda: len(lines(out)) == 2, message="the migrated jobs to run")
    assert lines(out) == ["mail 1", "mail 2"]
