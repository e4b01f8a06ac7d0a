"""A runner that is alive but silent never runs a job at the same time as its re-run elsewhere.

Three ways a live runner stopped heartbeating (issue 12): it was paused (SIGSTOP) longer than its
lease; long polls took every connection of its pool, the heartbeat's too; its event loop stalled
splitting big command lines. Its watchdog now stops its jobs when the heartbeat loop falls silent
(before the lease ends), the heartbeat has a connection of its own, request paths a bounded pool,
and splitting a command line costs milliseconds."""

from __future__ import annotations

import json
import shlex
import time

import aiohttp
import redis.asyncio as aioredis
from harness import RunnerHarness, base_url
from hypothesis import given, settings
from hypothesis import strategies as st

from taskrunner.jobs import shell_words

# -- splitting a command line costs milliseconds (the event-loop stall) ------------------------

SHELL_TEXT = st.text(alphabet=" \t\r\n'\"\\ab$`#;&|xé\0\x0b", max_size=24)


@settings(max_examples=3000, deadline=None)
@given(SHELL_TEXT)
def test_shell_words_are_shlex_words(task: str) -> None:
    try:
        expected: list[str] | str = shlex.split(task)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: list[str] | str = shell_words(task)
    except ValueError as exc:
        got = str(exc)
    assert got == expected


def big_task(n: int) -> str:
    """A distinct 60 KB command line, quoting and escapes included."""
    words = " ".join(f'w{n}x{i} \'a b\' "c\\"d" e\\ f' for i in range(2600))
    return f"true {words}"[:60_000].rsplit(" ", 1)[0]


async def test_a_hundred_60_kb_tasks_do_not_stall_the_event_loop(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    # Before: shlex split each on the event loop, 30-60 ms apiece; /healthz waited 3-6 s.
    runner = await runners.start(task_mode=False)
    messages = [json.dumps({"task": big_task(n), "id": f"big-{n}"}) for n in range(100)]
    await redis.lpush("task:prepare:queue", *messages)
    worst_s = 0.0
    async with aiohttp.ClientSession() as session:
        while await redis.llen("task:queue:default") < 100:
            started = time.monotonic()
            async with session.get(base_url(runner) + "/healthz") as resp:
                assert resp.status == 200
            worst_s = max(worst_s, time.monotonic() - started)
    print(f"worst /healthz latency: {worst_s:.3f} s")
    assert worst_s < 1.0, f"/healthz took {worst_s:.2f} s while 100 big tasks were routed"
