"""Adopting TaskRunner's (upstream's) queued commands: finding its channel queues, and moving
each command into our channel's queue as a job, or into the dead letters, in one atomic step
per command (lua/adopt.lua, lua/adopt_dead.lua). Upstream's keys: `taskrunner.upstream`."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Final

from taskrunner import upstream
from taskrunner.models import Job
from taskrunner.store.base import ScriptCall
from taskrunner.store.dead import DeadOps, letter_entry
from taskrunner.store.queue import QueueOps
from taskrunner.store.records import Admission, as_bytes, text

SCAN_COUNT: Final = 1000
MOVED: Final = "moved"  # the command was no longer the queue's oldest: a Go runner took it
DEAD: Final = "dead"  # the command was dead-lettered
DEAD_LETTER_SOURCE: Final = "upstream_queue"


def upstream_message(channel: bytes, command: bytes) -> bytes:
    """The prepare-queue message a command of upstream's channel queue stands for: what its
    dead letter keeps, so `taskrunner dead retry` routes it again."""
    decode = {"encoding": "utf-8", "errors": "backslashreplace"}
    message = {"task": command.decode(**decode), "chan": channel.decode(**decode)}
    return json.dumps(message, ensure_ascii=False).encode()


class AdoptOps(QueueOps, DeadOps):
    """Store operations adopting upstream's queued commands (see the module)."""

    async def upstream_queues(self) -> list[bytes]:
        """Every upstream channel queue (lists named `<chan>:tasks:queue`), by name: one SCAN
        of the whole keyspace."""
        found = self.redis.scan_iter(match=upstream.QUEUE_PATTERN, count=SCAN_COUNT, _type="list")
        return sorted({as_bytes(key) async for key in found})

    async def upstream_waiting(self) -> list[str]:
        """Our channels whose upstream queue holds commands. When none does (the usual case
        after a switch-over), two commands: HKEYS of our channels, one EXISTS of their queues."""
        names = [text(name) for name in await self.redis.hkeys(self.keys.channels)]
        queues = [upstream.queue_key(name.encode()) for name in names]
        if not queues or not await self.redis.exists(*queues):
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue)
            lengths = await pipe.execute()
        return [name for name, length in zip(names, lengths, strict=True) if length]

    async def upstream_length(self, queue: bytes) -> int:
        return int(await self.redis.llen(queue))

    async def upstream_commands(self, queue: bytes, *, count: int) -> list[bytes]:
        """Up to `count` commands of an upstream queue, oldest (next to run) first."""
        if count <= 0:
            return []  # LRANGE 0 -1 would be the whole list
        items = await self.redis.lrange(queue, -count, -1)
        return [as_bytes(item) for item in reversed(items)]

    async def adopt_commands(
        self,
        queue: bytes,
        items: Sequence[tuple[bytes, Job | str]],
        *,
        runner_id: str,
        dead_letter_cap: int,
    ) -> list[Admission]:
        """Take the oldest commands of `queue` in order, in one round trip: each (command, its
        job) is adopted; each (command, reason) dead-lettered with the reason. Each command is
        taken only if it is the oldest then, in one atomic step that also deletes its dedup
        mark. An Admission each: 'ok' (adopted, the new job's id), 'duplicate' (taken and
        refused: the live job's id), 'dead' (dead-lettered), 'nochan' or 'moved' (not taken)."""
        now = time.time()
        calls = [self._adopt_call(queue, raw, what, runner_id, dead_letter_cap, now)
                 for raw, what in items]  # fmt: skip
        replies = await self._run_many(calls)
        return [_admission(reply) for reply in replies]

    def _adopt_call(
        self, queue: bytes, raw: bytes, what: Job | str, runner_id: str, cap: int, now: float
    ) -> ScriptCall:
        mark = upstream.dedup_mark_key(queue, raw)
        if isinstance(what, str):
            k = self.keys
            entry = letter_entry(upstream_message(upstream.channel_of(queue), raw), what,
                                 DEAD_LETTER_SOURCE)  # fmt: skip
            return (
                "adopt_dead",
                [queue, mark, k.dead_letters, k.stats],
                [raw, entry, cap, k.dead_letter_events],
            )
        _, keys, args = self._enqueue_call(what, runner_id, b"", now)
        return ("adopt", [queue, mark, *keys], [raw, *args])


def _admission(reply: object) -> Admission:
    if isinstance(reply, list):
        status, job_id = reply
        return Admission(text(status), text(job_id))
    return Admission(MOVED if int(str(reply)) < 0 else DEAD, "")
