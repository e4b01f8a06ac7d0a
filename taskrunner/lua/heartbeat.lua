-- Runner liveness on Redis's clock.
-- KEYS: 1 runners zset (last beat in ms; -1 once declared dead), 2 liveness hash: `last_beat`
--       (the last call with a lease, any runner) and `judge_after` (no verdicts before),
--       3 ('forget' and 'leave' only) the runner's job set.
-- ARGV: 1 runner id, 2 mode, 3 lease ms ('register', 'beat', 'stale', 'judge').
-- 'register': add. 'beat': refresh, -1 if the runner was declared dead. 'leave': remove,
--   unless its job set (KEYS[3]) is not empty: returns the number of jobs it still holds.
-- 'stale': the ids whose last beat is older than the lease (or that were declared dead).
-- 'judge': declare the runner dead if its last beat is still older than the lease. 1 if it is
--   dead now, else 0. When no call with a lease (beat, stale, judge, register) came from any
--   runner for 3/4 of a lease (Redis hung, restarted or was out of reach, or every runner
--   stalled), nobody is judged for a lease from the first call after that silence, whatever
--   its mode: no beat could land meanwhile, so everyone looks stale, and after a hang a
--   recovery query may be served before the runners' beats. (A shorter silence cannot make a
--   runner that beats every lease/5 look stale.)
-- 'forget': remove a runner declared dead, and its job set, unless it registered again.
-- A runner declared dead gets -1 from 'beat' and claims nothing (claim.lua) until it
-- registers again, so the jobs handed back for it are all the jobs it held.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, mode, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local score = tonumber(redis.call('ZSCORE', KEYS[1], id))

if lease then  -- `last_beat`: the last call with a lease, of any runner and any mode
  local last = tonumber(redis.call('HGET', KEYS[2], 'last_beat'))
  if last and now - last > lease * 3 / 4 then
    redis.call('HSET', KEYS[2], 'judge_after', now + lease)
  end
  redis.call('HSET', KEYS[2], 'last_beat', now)
end

local function beat()
  redis.call('ZADD', KEYS[1], now, id)
end

if mode == 'register' then
  beat()
elseif mode == 'leave' then
  -- a runner that still holds jobs (it could not hand them back) stays, so that its lease
  -- expiry hands them to others; returns how many it holds
  local held = redis.call('SCARD', KEYS[3])
  if held > 0 then return held end
  redis.call('ZREM', KEYS[1], id)
  return 0
elseif mode == 'stale' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - lease)
elseif mode == 'judge' then
  local after = tonumber(redis.call('HGET', KEYS[2], 'judge_after'))
  if not score or (after and now < after) then return 0 end
  if score >= 0 and score > now - lease then return 0 end
  redis.call('ZADD', KEYS[1], -1, id)
  return 1
elseif mode == 'forget' then
  if score and score >= 0 then return 0 end
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', KEYS[3])
  return 1
elseif not score or score < 0 then
  return -1
else
  beat()
end
return now
