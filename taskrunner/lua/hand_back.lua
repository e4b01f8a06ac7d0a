-- Put a running job back at the head of its channel queue (drain, or its runner died).
-- KEYS: 1 runner's job set, 2 job hash, 3 channel queue, 4 channel running set
-- ARGV: 1 id, 2 reason, 3 wake channel, 4 channel
-- Returns 1 if handed back, 0 if someone else already did (or it had ended).
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SREM', KEYS[4], ARGV[1])
if redis.call('HGET', KEYS[2], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[2], 'state', 'queued', 'handed_back', ARGV[2])
redis.call('HDEL', KEYS[2], 'runner')
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
