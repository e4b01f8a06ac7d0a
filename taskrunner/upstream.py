"""TaskRunner's (upstream's, github mylxsw/coyotes) Redis keys, in one place: what a switch-over
from a Go runner finds in Redis, and what taskrunner adopts (`taskrunner.adoption`).

Upstream (brokers/redis/key.go, queue.go, redis.go) keeps, per channel:

- `<chan>:tasks:queue`: a list of raw command strings. A push LPUSHes; a runner BRPOPs, so the
  oldest command is at the tail. taskrunner adopts these: each command becomes a job of our
  channel of that name, oldest first, one atomic step per command (lua/adopt.lua).
- `<chan>:tasks:queue:exec`: the set of commands a Go runner is running now. Never touched:
  the Go runner that runs them removes them.
- `<chan>:tasks:queue:<cmd>:dis`: a distinct channel's dedup mark (SETEX 1800 s, value `1`),
  set at push, deleted by the Go runner when the command ends. taskrunner deletes a command's
  mark when it adopts (or dead-letters) the command: from then on our own dedup (`distinct`,
  `task:distinct:<chan>`) guards it.

Rolling switch (Go and Python runners on one Redis for a while): a command is taken once,
either by a Go runner (BRPOP) or by our adoption (which takes it only while it is still the
tail), never both. Dedup across the two is not guaranteed: a Go `/push` sees only upstream's
marks, so once a command is adopted (its mark deleted) the same command pushed through a Go
runner is queued again; at its adoption it is refused as a duplicate while our job is live,
but a Go runner may take it first and run it beside ours. Stop pushing through Go runners first.

Names are bytes, as Go's strings are: a key found by SCAN may not be UTF-8."""

from __future__ import annotations

from typing import Final

QUEUE_SUFFIX: Final = b":tasks:queue"
QUEUE_PATTERN: Final = "*:tasks:queue"  # SCAN MATCH for every channel's queue
RUNNING_SUFFIX: Final = b":exec"
MARK_SUFFIX: Final = b":dis"


def queue_key(channel: bytes) -> bytes:
    """`<chan>:tasks:queue` (key.go TaskQueueKey): the channel's queued commands."""
    return channel + QUEUE_SUFFIX


def running_key(channel: bytes) -> bytes:
    """`<chan>:tasks:queue:exec` (key.go TaskQueueExecKey): commands Go runners run now."""
    return queue_key(channel) + RUNNING_SUFFIX


def dedup_mark_key(queue: bytes, command: bytes) -> bytes:
    """`<chan>:tasks:queue:<cmd>:dis` (key.go TaskQueueDistinctKey), from the queue's key."""
    return queue + b":" + command + MARK_SUFFIX


def channel_of(queue: bytes) -> bytes:
    """The channel name of a `<chan>:tasks:queue` key (b'' if the key is not one)."""
    return queue[: -len(QUEUE_SUFFIX)] if queue.endswith(QUEUE_SUFFIX) else b""
