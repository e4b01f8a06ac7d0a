-- Take up to N queued jobs of one channel for this runner (oldest first).
-- KEYS: 1 channel queue, 2 runner's job set, 3 channel running set, 4 runners zset
-- ARGV: 1 n, 2 runner id, 3 job events channel, 4 job key prefix, 5.. fields to return
-- Times come from Redis's clock, so records from runners on many hosts agree.
-- Returns one array per claimed job: the values of ARGV[5..] in order; none while the runner
-- is not registered or was declared dead (see heartbeat.lua).
local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local out = {}
local alive = tonumber(redis.call('ZSCORE', KEYS[4], ARGV[2]))
if not alive or alive < 0 then return out end
local wanted = {}
for i = 5, #ARGV do wanted[#wanted + 1] = ARGV[i] end
for _ = 1, tonumber(ARGV[1]) do
  local id = redis.call('RPOP', KEYS[1])
  if not id then break end
  local key = ARGV[4] .. id
  if redis.call('HGET', key, 'state') == 'queued' then
    redis.call('HINCRBY', key, 'attempt', 1)
    redis.call('HSET', key, 'state', 'running', 'runner', ARGV[2], 'started_at', now())
    redis.call('SADD', KEYS[2], id)
    redis.call('SADD', KEYS[3], id)
    redis.call('PUBLISH', ARGV[3], id .. ' running')
    out[#out + 1] = redis.call('HMGET', key, unpack(wanted))
  end
end
return out
