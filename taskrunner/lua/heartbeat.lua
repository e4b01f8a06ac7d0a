-- Runner liveness on Redis's clock. KEYS: 1 runners zset. ARGV: 1 runner id, 2 mode.
-- mode 'register': add; 'beat': refresh, -1 if the runner was declared dead; 'leave': remove;
-- 'stale': ARGV[3] = lease ms, returns the ids whose last beat is older than the lease.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mode = ARGV[2]
if mode == 'register' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
elseif mode == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
elseif mode == 'stale' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
elseif not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return -1
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
return now
