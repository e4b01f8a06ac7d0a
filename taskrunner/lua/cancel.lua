-- Cancel a job: queued or scheduled jobs end at once; a running job is flagged and its
-- runner told (pub/sub) to kill its process group, after which it records `cancelled`.
-- KEYS: 1 job hash, 2 channel queue, 3 channel scheduled zset, 4 channel distinct hash,
--       5 daily counters hash, 6 channel recent zset
-- ARGV: 1 id, 2 result ttl s, 3 job events channel, 4 cancel events channel, 5 recent cap
-- Returns the job's state after the call ('cancelled', 'running', a final state) or 'missing'.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('PUBLISH', ARGV[4], ARGV[1])
  return 'running'
end
if state == 'queued' then
  redis.call('LREM', KEYS[2], 1, ARGV[1])
elseif state == 'scheduled' or state == 'retrying' then
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  return state
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'error', 'cancelled before it ran',
  'finished_at', t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
redis.call('ZADD', KEYS[6], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -tonumber(ARGV[5]) - 1)
local dedup = redis.call('HGET', KEYS[1], 'dedup')
if dedup and redis.call('HGET', KEYS[4], dedup) == ARGV[1] then redis.call('HDEL', KEYS[4], dedup) end
redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
redis.call('EXPIRE', KEYS[5], 400 * 86400)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' cancelled')
return 'cancelled'
