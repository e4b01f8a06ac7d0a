-- Give a dead job a new life: queue it again with a fresh retry budget, same id.
-- KEYS: 1 job hash, 2 dead jobs zset, 3 channel queue, 4 channel distinct hash,
--       5 channel recent zset, 6 channels hash
-- ARGV: 1 id, 2 job key prefix, 3 wake channel, 4 job events channel, 5 channel
-- Returns {'ok', id}, {'duplicate', live holder's id}, {'nochan', ''} or {state, ''} when the
-- job is not dead ('missing' when it has no record).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'missing', ''}
end
if state ~= 'dead' then return {state, ''} end
if not redis.call('HGET', KEYS[6], ARGV[5]) then return {'nochan', ''} end
local dedup = redis.call('HGET', KEYS[1], 'dedup')
if dedup then
  local holder = redis.call('HGET', KEYS[4], dedup)
  if holder and holder ~= ARGV[1] then
    local other = redis.call('HGET', ARGV[2] .. holder, 'state')
    if other and other ~= 'succeeded' and other ~= 'failed' and other ~= 'cancelled'
        and other ~= 'dead' then
      return {'duplicate', holder}
    end
  end
  redis.call('HSET', KEYS[4], dedup, ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempt', 0)
redis.call('HINCRBY', KEYS[1], 'revived', 1)
if redis.call('LPUSH', KEYS[3], ARGV[1]) == 1 then redis.call('PUBLISH', ARGV[3], ARGV[5]) end
redis.call('PUBLISH', ARGV[4], ARGV[1] .. ' queued')
return {'ok', ARGV[1]}
