"""TaskRunner's (the Go upstream's) writes and takes on Redis, as its code does them, for the
switch-over tests: a push (brokers/redis/redis.go's pushToQueueCmd, run by PushTask with the
channel's `distinct` flag, which go-redis sends as "1"/"0") and a Go runner's take
(queue.go's Listen: BRPOP the channel queue, SADD the command to the running set)."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

# What upstream's push does (redis.go pushToQueueCmd), as a script of its own.
GO_PUSH = """
if ARGV[2] == '0' then
  redis.call('LPUSH', KEYS[1], ARGV[1])
  return 1
end
if redis.call('EXISTS', KEYS[2]) ~= 1 then
  redis.call('LPUSH', KEYS[1], ARGV[1])
  redis.call('SETEX', KEYS[2], 1800, '1')
  return 1
end
return 0
"""


async def go_push(redis: aioredis.Redis, channel: str, command: str, *, distinct: bool) -> int:
    """Upstream's PushTask(command, channel): 1 if queued, 0 if its dedup mark refused it."""
    queue = f"{channel}:tasks:queue"
    mark = f"{queue}:{command}:dis"
    pushed = await redis.eval(GO_PUSH, 2, queue, mark, command, "1" if distinct else "0")
    return int(pushed)


async def go_take(redis: aioredis.Redis, channel: str) -> str | None:
    """A Go runner's Listen step: BRPOP the oldest command, mark it running (SADD exec)."""
    queue = f"{channel}:tasks:queue"
    taken = await redis.brpop([queue], timeout=1)
    if taken is None:
        return None
    command = taken[1].decode() if isinstance(taken[1], bytes) else str(taken[1])
    await redis.sadd(f"{queue}:exec", command)
    return command


async def go_channel(redis: aioredis.Redis, name: str, *, distinct: bool, workers: int) -> None:
    """A channel as upstream keeps it in `task:channels` (brokers.Channel's JSON)."""
    fields = {"name": name, "distinct": distinct, "worker_count": workers}
    value = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))  # as Go marshals it
    await redis.hset("task:channels", name, value)
