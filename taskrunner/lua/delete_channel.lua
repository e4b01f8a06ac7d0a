-- Delete a channel only when nothing waits or runs in it (nothing may be stranded).
-- KEYS: 1 channels hash, 2 queue, 3 scheduled zset, 4 running set, 5 distinct hash,
--       6 recent zset, 7 channel job index zset, 8 index sweep hash. ARGV: 1 channel.
-- Returns 'deleted', 'missing', or 'busy <queued> <scheduled> <running>'.
if not redis.call('HGET', KEYS[1], ARGV[1]) then return 'missing' end
local q, s, r = redis.call('LLEN', KEYS[2]), redis.call('ZCARD', KEYS[3]), redis.call('SCARD', KEYS[4])
if q + s + r > 0 then return 'busy ' .. q .. ' ' .. s .. ' ' .. r end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[5], KEYS[6], KEYS[7])
redis.call('HDEL', KEYS[8], ARGV[1])
return 'deleted'
