-- Remove a dead job for good. KEYS: 1 job hash, 2 dead jobs zset, 3 channel recent zset.
-- ARGV: 1 id, 2 job events channel. Returns 'dropped', 'missing', or the job's state when it
-- is not dead.
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'dead' then return state end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if not state then return 'missing' end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[1] .. ' dropped')
return 'dropped'
