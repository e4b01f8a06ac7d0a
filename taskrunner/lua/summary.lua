-- A job's fields for a listing, each long value cut to its first bytes (whole UTF-8 characters),
-- so a listing stays small whatever its jobs hold (a 64 KiB command, 64 KiB of args).
-- KEYS: 1 job hash. ARGV: 1 bytes kept of a value, 2.. field names.
-- Returns the values in ARGV's order (nil where missing), then a list of the cut ones' positions.
local keep = tonumber(ARGV[1])
local n = #ARGV - 1
local values = redis.call('HMGET', KEYS[1], unpack(ARGV, 2))
local cut = {}
for i = 1, n do
  local value = values[i]
  if value and #value > keep then
    local at = keep
    while at > keep - 3 and at > 0 do
      local byte = string.byte(value, at + 1)
      if byte < 0x80 or byte >= 0xC0 then break end -- the next byte starts a character
      at = at - 1
    end
    values[i] = string.sub(value, 1, at)
    cut[#cut + 1] = i
  end
end
values[n + 1] = cut
return values
