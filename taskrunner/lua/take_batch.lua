-- Take up to N messages for a runner to route, oldest first: first the ones already in its
-- in-flight list (a take whose reply was lost, e.g. when Redis restarted, left them there),
-- then more moved from the prepare queue.
-- A message longer than the size limit is not returned: it is dead-lettered here, keeping its
-- first bytes and its size, so a runner never reads a huge message whole. With N = 0, only
-- that is done to the in-flight list.
-- KEYS: 1 prepare queue, 2 runner's in-flight list, 3 dead-letter list, 4 stats hash.
-- ARGV: 1 N, 2 size limit (bytes), 3 bytes of a refused message kept, 4 now (unix seconds),
--       5 dead-letter list cap, 6 dead-letter events channel, 7 bytes a batch may hold (it
--       stops after the message that reaches it: one message always fits).
-- Returns {messages, {size of each message dead-lettered}}.
local n = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local max_bytes = tonumber(ARGV[7])
local out, refused, bytes = {}, {}, 0

-- The first `keep` bytes, not cutting a UTF-8 sequence in two.
local function prefix(message)
  if #message <= keep then return message end
  local cut = keep
  while cut > keep - 3 and cut > 0 do
    local byte = string.byte(message, cut + 1)
    if byte < 0x80 or byte >= 0xC0 then break end -- the next byte starts a character
    cut = cut - 1
  end
  return string.sub(message, 1, cut)
end

local function dead_letter(message)
  local entry = cjson.encode({
    reason = 'message is ' .. #message .. ' bytes, over the limit of ' .. limit,
    source = 'prepare_queue', at = tonumber(ARGV[4]), raw = prefix(message),
    size = #message, truncated = true,
  })
  redis.call('LPUSH', KEYS[3], entry)
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
  redis.call('HINCRBY', KEYS[4], 'dead_letters', 1)
  refused[#refused + 1] = #message
end

-- The whole in-flight list (a batch or so): its messages over the limit go first (a blocking
-- take, BLMOVE, brings messages of any size); the n oldest of the rest are returned.
local held = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #held, 1, -1 do
  if #held[i] > limit then
    redis.call('LREM', KEYS[2], -1, held[i])
    dead_letter(held[i])
  elseif #out < n and bytes < max_bytes then
    out[#out + 1] = held[i]
    bytes = bytes + #held[i]
  end
end
local budget = n - #out
while budget > 0 and bytes < max_bytes do
  local message = redis.call('RPOP', KEYS[1])
  if not message then break end
  budget = budget - 1
  if #message > limit then
    dead_letter(message)
  else
    redis.call('LPUSH', KEYS[2], message)
    out[#out + 1] = message
    bytes = bytes + #message
  end
end
if #refused > 0 then redis.call('PUBLISH', ARGV[6], 'added') end
return {out, refused}
