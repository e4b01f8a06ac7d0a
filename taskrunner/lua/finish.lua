-- Record the end of one attempt, if this runner still owns it.
-- KEYS: 1 job hash, 2 runner's job set, 3 channel running set, 4 channel distinct hash,
--       5 daily counters hash, 6 channel scheduled zset, 7 channel recent zset, 8 dead jobs zset
-- ARGV: 1 id, 2 runner id, 3 attempt, 4 new state, 5 due ms (retrying), 6 result ttl s,
--       7 events channel, 8 schedule channel, 9 channel, 10 recent cap,
--       11.. result field/value pairs
-- A final job is indexed in the channel's recent zset (newest kept); a dead job also in the
-- dead zset, and its record does not expire: it stays until it is retried or dropped.
-- Returns 1, 2 if this call repeats one that recorded it already, or 0 when the attempt is
-- no longer this runner's (it was handed back).
local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local cur = redis.call('HMGET', KEYS[1], 'runner', 'attempt', 'state', 'dedup')
if cur[1] == ARGV[2] and cur[2] == ARGV[3] and cur[3] ~= 'running' then
  return 2  -- recorded already: an earlier call of this runner landed but its reply was lost
end
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] or cur[3] ~= 'running' then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
local fields = {}
for i = 11, #ARGV do fields[#fields + 1] = ARGV[i] end
local finished = now()
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'finished_at', finished, unpack(fields))
if ARGV[4] == 'retrying' then
  redis.call('HSET', KEYS[1], 'due_at', ARGV[5])
  redis.call('ZADD', KEYS[6], ARGV[5], ARGV[1])
  if redis.call('ZRANGE', KEYS[6], 0, 0)[1] == ARGV[1] then
    redis.call('PUBLISH', ARGV[8], ARGV[9] .. ' ' .. ARGV[5])
  end
else
  if cur[4] and redis.call('HGET', KEYS[4], cur[4]) == ARGV[1] then
    redis.call('HDEL', KEYS[4], cur[4])
  end
  local counter = 'failed'
  if ARGV[4] == 'succeeded' or ARGV[4] == 'cancelled' then counter = ARGV[4] end
  redis.call('HINCRBY', KEYS[5], counter, 1)
  redis.call('EXPIRE', KEYS[5], 400 * 86400)
  local score = math.floor(tonumber(finished) * 1000)
  redis.call('ZADD', KEYS[7], score, ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -tonumber(ARGV[10]) - 1)
  if ARGV[4] == 'dead' then
    redis.call('ZADD', KEYS[8], score, ARGV[1])
  else
    redis.call('EXPIRE', KEYS[1], ARGV[6])
  end
end
redis.call('PUBLISH', ARGV[7], ARGV[1] .. ' ' .. ARGV[4])
return 1
