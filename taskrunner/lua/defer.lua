-- Put back a job whose attempt could not start for lack of resources (open files, processes,
-- memory): scheduled again a few seconds later, its attempt not counted. Unlike a hand-back to
-- the queue's head, the wait keeps the runner that lacks them from taking it again at once.
-- KEYS: 1 job hash, 2 runner's job set, 3 channel running set, 4 channel scheduled zset
-- ARGV: 1 id, 2 runner id, 3 attempt, 4 due ms, 5 reason, 6 job events channel,
--       7 schedule events channel, 8 channel
-- Returns 1 if put back; 2 if a cancel was requested meanwhile (nothing changed: the runner
-- records the attempt cancelled); 0 if the attempt is no longer this runner's.
local cur = redis.call('HMGET', KEYS[1], 'runner', 'attempt', 'state', 'cancel_requested')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] or cur[3] ~= 'running' then return 0 end
if cur[4] == '1' then return 2 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempt', -1)
redis.call('HDEL', KEYS[1], 'runner')
redis.call('HSET', KEYS[1], 'state', 'scheduled', 'due_at', ARGV[4], 'handed_back', ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
if redis.call('ZRANGE', KEYS[4], 0, 0)[1] == ARGV[1] then
  redis.call('PUBLISH', ARGV[7], ARGV[8] .. ' ' .. ARGV[4])
end
redis.call('PUBLISH', ARGV[6], ARGV[1] .. ' scheduled')
return 1
