-- Keep a refused ingress message with its reason; drop it from the in-flight list.
-- KEYS: 1 ingress in-flight list, 2 dead-letter list, 3 stats hash
-- ARGV: 1 raw message (may be empty), 2 dead-letter entry (JSON), 3 list cap,
--       4 dead-letter events channel, 5 LREM count (default 1: the first equal message from
--       the head; adopt_dead.lua gives -1: from the tail)
-- A message no longer in flight was dead-lettered already (this call ran twice: its reply was
-- lost): it is not kept or counted again. Returns the dead-letter count.
if redis.call('LREM', KEYS[1], tonumber(ARGV[5] or 1), ARGV[1]) == 0 then
  return tonumber(redis.call('HGET', KEYS[3], 'dead_letters') or 0)
end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('PUBLISH', ARGV[4], 'added')
return redis.call('HINCRBY', KEYS[3], 'dead_letters', 1)
