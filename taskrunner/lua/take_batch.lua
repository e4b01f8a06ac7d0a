-- Take up to N messages for a runner to route, oldest first: first the ones already in its
-- in-flight list (a take whose reply was lost, e.g. when Redis restarted, left them there),
-- then more moved from the prepare queue.
-- KEYS: 1 prepare queue, 2 runner's in-flight list. ARGV: 1 N. Returns the messages.
local n = tonumber(ARGV[1])
local out = {}
local held = redis.call('LRANGE', KEYS[2], -n, -1)
for i = #held, 1, -1 do out[#out + 1] = held[i] end
while #out < n do
  local message = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not message then break end
  out[#out + 1] = message
end
return out
