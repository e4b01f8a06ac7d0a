-- Admit one job: idempotency on its id, `distinct` dedup, then queue or schedule it.
-- KEYS: 1 channels hash, 2 job hash, 3 channel queue, 4 channel scheduled zset,
--       5 channel distinct hash, 6 stats hash, 7 ingress in-flight list, 8 job index zset,
--       9 channel job index zset, 10 index sweep hash
-- ARGV: 1 channel, 2 job id, 3 dedup key, 4 raw message to drop from KEYS[7] ('' = none),
--       5 due ms (0 = now), 6 job key prefix, 7 wake channel, 8 schedule channel,
--       9 job events channel, 10.. record field/value pairs
-- Returns {status, id}: 'ok' with the new id, 'exists' when a job has that id already,
-- 'duplicate' with the id of the live job with the same dedup key, 'nochan',
-- or 'routed' when the raw message is no longer in flight: it was routed already (this call
-- ran twice because its reply was lost, or the message was handed to another runner).
-- A new job is indexed by creation time (microseconds) in KEYS[8] and KEYS[9]; each call also
-- looks at the next two entries of each index (from where the last call stopped, round and
-- round) and removes those whose record is gone: an index adds one entry per call and sweeps
-- two, so it holds the live records plus at most about as many stale ids.
local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local conf = redis.call('HGET', KEYS[1], ARGV[1])
if not conf then return {'nochan', ''} end
local ok, decoded = pcall(cjson.decode, conf)
local distinct = ok and type(decoded) == 'table'
  and (decoded.distinct == true or decoded.distinct == 'true' or decoded.distinct == 1)

local function live(key)
  local state = redis.call('HGET', key, 'state')
  return state and state ~= 'succeeded' and state ~= 'failed'
    and state ~= 'cancelled' and state ~= 'dead'
end
if ARGV[4] ~= '' and redis.call('LREM', KEYS[7], 1, ARGV[4]) == 0 then
  return {'routed', ARGV[2]}
end
local function refuse(id)
  redis.call('HINCRBY', KEYS[6], 'refused', 1)
  return {'duplicate', id}
end

-- an id that names a job (live, dead, or ended within its result TTL): a push retried with
-- its id creates nothing and answers with that job (the first push landed)
if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists', ARGV[2]} end
if distinct then
  local holder = redis.call('HGET', KEYS[5], ARGV[3])
  if holder and live(ARGV[6] .. holder) then return refuse(holder) end
  redis.call('HSET', KEYS[5], ARGV[3], ARGV[2])
end

redis.call('DEL', KEYS[2])
local fields = {}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
local created = now()
redis.call('HSET', KEYS[2], 'created_at', created)
if distinct then redis.call('HSET', KEYS[2], 'dedup', ARGV[3]) end

local due = tonumber(ARGV[5])
if due > 0 then
  redis.call('HSET', KEYS[2], 'state', 'scheduled', 'due_at', ARGV[5])
  redis.call('ZADD', KEYS[4], due, ARGV[2])
  if redis.call('ZRANGE', KEYS[4], 0, 0)[1] == ARGV[2] then
    redis.call('PUBLISH', ARGV[8], ARGV[1] .. ' ' .. ARGV[5])
  end
else
  redis.call('HSET', KEYS[2], 'state', 'queued')
  if redis.call('LPUSH', KEYS[3], ARGV[2]) == 1 then redis.call('PUBLISH', ARGV[7], ARGV[1]) end
end
local score = (string.gsub(created, '%.', ''))
local function index(key, field)
  redis.call('ZADD', key, score, ARGV[2])
  local at = tonumber(redis.call('HGET', KEYS[10], field) or '0')
  local ids = redis.call('ZRANGE', key, at, at + 1)
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', ARGV[6] .. id) == 1 then at = at + 1 else redis.call('ZREM', key, id) end
  end
  if #ids < 2 then at = 0 end
  redis.call('HSET', KEYS[10], field, at)
end
index(KEYS[8], '')
index(KEYS[9], ARGV[1])
redis.call('PUBLISH', ARGV[9], ARGV[2] .. (due > 0 and ' scheduled' or ' queued'))
return {'ok', ARGV[2]}
