"""The frozen-Redis pushes of the lifecycle scenario (_chaos_lifecycle.py): PUSHES pushes over
HTTP while the runner's Redis is SIGSTOPped for FREEZE_S seconds; each client retries a 503 with
the id the answer gave it, so every push must run exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from scripts._chaos_stop_kinds import Site
from scripts._harness import redis_server

PUSHES = 50
FREEZE_S = 3.0


@dataclass
class Frozen:
    """What the frozen-Redis pushes got: the ids known at the end, answers by status, retries."""

    ids: list[str] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)
    retries: int = 0


async def frozen_pushes(tmp: Path, job_log: Path) -> Frozen:
    """Run the pushes against a runner of a usr2-style Site in `tmp`; wait until every known
    id has run, then stop it."""
    os.makedirs(tmp)
    frozen = Frozen()
    with redis_server(tmp / "redis", appendonly=True) as server:
        site = Site("frozen", tmp, server.url)
        try:
            await site.start()
            async with aiohttp.ClientSession() as http:
                pushes = [_push_until_known(http, site.http_port, n, job_log, frozen)
                          for n in range(PUSHES)]  # fmt: skip
                os.kill(server.pid, signal.SIGSTOP)
                freeze = asyncio.create_task(_thaw_after(server.pid, FREEZE_S))
                await asyncio.gather(*pushes)
                await freeze
            await site.until(
                lambda s: all(s.get(i) == "succeeded" for i in frozen.ids), ids=frozen.ids
            )
            await site.stop()
        finally:
            os.kill(server.pid, signal.SIGCONT)
            site.close()
    return frozen


async def _thaw_after(pid: int, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    os.kill(pid, signal.SIGCONT)


async def _push_until_known(
    http: aiohttp.ClientSession, port: int, n: int, job_log: Path, frozen: Frozen
) -> None:
    """POST /push with no id; on a 503 push again with the id it answered, until it is known."""
    task = f"sh -c 'echo start frozen-{n}-$$ >> {job_log}; echo end frozen-{n}-$$ >> {job_log}'"
    form = {"task": task}
    for _ in range(100):
        try:
            async with http.post(f"http://127.0.0.1:{port}/push", data=form,
                                 timeout=aiohttp.ClientTimeout(total=10)) as resp:  # fmt: skip
                body = await resp.json(content_type=None)
                frozen.answers[resp.status] += 1
        except (TimeoutError, aiohttp.ClientError):
            frozen.answers[0] += 1
            await asyncio.sleep(0.2)
            continue
        if resp.status == 200 and body["data"]["result"]:
            frozen.ids.append(body["data"]["id"])
            return
        form = {"task": task, "id": body["data"]["id"]}
        frozen.retries += 1
        await asyncio.sleep(0.2)
