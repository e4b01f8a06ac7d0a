"""In-process runners for tests: real Runner objects on the session's Redis server, and waits on
their jobs' records."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from taskrunner.config import Settings
from taskrunner.models import JobRecord
from taskrunner.runner import Runner
from taskrunner.store import Store
from tests.support.net import free_port
from tests.support.waiting import wait_until


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    base = Settings(
        redis_url=redis_url,
        http_addr=f"127.0.0.1:{free_port()}",
        pidfile=None,
        lease_s=1.0,
        kill_grace_s=0.5,
        drain_timeout_s=5.0,
    )
    return replace(base, **overrides)


class RunnerHarness:
    """Starts runners and stops every one it started, in reverse order."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.runners: list[Runner] = []

    async def start(self, **overrides: Any) -> Runner:
        settings = make_settings(self.redis_url, **overrides)
        runner = Runner(settings, Store.from_url(settings.redis_url))
        self.runners.append(runner)
        await runner.start()
        return runner

    async def stop(self, runner: Runner) -> None:
        if runner in self.runners:
            self.runners.remove(runner)
            with contextlib.suppress(Exception):
                await runner.drain()
            await runner.close()
            await runner.store.close()

    async def stop_all(self) -> None:
        for runner in reversed(list(self.runners)):
            await self.stop(runner)


async def wait_state(store: Store, job_id: str, *states: str, timeout_s: float = 10.0) -> JobRecord:
    """Wait until the job's record is in one of `states`; return the record."""
    seen: JobRecord | None = None

    async def reached() -> bool:
        nonlocal seen
        seen = await store.get_job(job_id)
        return seen is not None and seen.state in states

    try:
        await wait_until(reached, timeout_s=timeout_s, message=f"job {job_id} to reach {states}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; now {seen.state if seen else 'no record'}") from None
    assert seen is not None
    return seen


async def stored_job(store: Store, job_id: str) -> JobRecord:
    """The job's record, which must exist."""
    record = await store.get_job(job_id)
    assert record is not None, f"job {job_id} has no record"
    return record


def log_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []
