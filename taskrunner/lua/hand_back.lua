-- Put a running job back at the head of its channel queue (drain, or its runner died), or end
-- it `cancelled` when a cancel was requested while it ran (the cancel is not lost with its
-- runner).
-- KEYS: 1 runner's job set, 2 job hash, 3 channel queue, 4 channel running set,
--       5 channel distinct hash, 6 daily counters hash, 7 channel recent zset
-- ARGV: 1 id, 2 reason, 3 wake channel, 4 channel, 5 '1' if the attempt started, '0' if it
--       was claimed but never started (its attempt is not counted), 6 result ttl s,
--       7 job events channel, 8 recent cap
-- Returns 1 if handed back, 2 if ended cancelled, 0 if someone else already did (or it had
-- ended).
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SREM', KEYS[4], ARGV[1])
local cur = redis.call('HMGET', KEYS[2], 'state', 'cancel_requested', 'dedup')
if cur[1] ~= 'running' then return 0 end
redis.call('HDEL', KEYS[2], 'runner')
if ARGV[5] == '0' then
  redis.call('HINCRBY', KEYS[2], 'attempt', -1)
end
if cur[2] == '1' then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[2], 'state', 'cancelled', 'handed_back', ARGV[2],
    'error', 'cancelled: its runner stopped (' .. ARGV[2] .. ') before the attempt ended',
    'finished_at', t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
  redis.call('ZADD', KEYS[7], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -tonumber(ARGV[8]) - 1)
  if cur[3] and redis.call('HGET', KEYS[5], cur[3]) == ARGV[1] then
    redis.call('HDEL', KEYS[5], cur[3])
  end
  redis.call('HINCRBY', KEYS[6], 'cancelled', 1)
  redis.call('EXPIRE', KEYS[6], 400 * 86400)
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  redis.call('PUBLISH', ARGV[7], ARGV[1] .. ' cancelled')
  return 2
end
if ARGV[5] == '0' then
  redis.call('HSET', KEYS[2], 'state', 'queued')
else
  redis.call('HSET', KEYS[2], 'state', 'queued', 'handed_back', ARGV[2])
end
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[7], ARGV[1] .. ' queued')
return 1
