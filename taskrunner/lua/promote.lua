-- Move due scheduled/retrying jobs of one channel to the head of its queue, earliest first.
-- KEYS: 1 channel scheduled zset, 2 channel queue
-- ARGV: 1 now ms, 2 limit, 3 job key prefix, 4 wake channel, 5 channel
-- Returns {moved, next due ms or -1}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for i = #ids, 1, -1 do
  local id = ids[i]
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[3] .. id
  local state = redis.call('HGET', key, 'state')
  if state == 'scheduled' or state == 'retrying' then
    redis.call('HSET', key, 'state', 'queued')
    redis.call('RPUSH', KEYS[2], id)
    moved = moved + 1
  end
end
if moved > 0 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nxt[2] then return {moved, nxt[2]} end
return {moved, '-1'}
