-- Keep a refused ingress message with its reason; drop it from the in-flight list.
-- KEYS: 1 ingress in-flight list, 2 dead-letter list, 3 stats hash
-- ARGV: 1 raw message ('' = none), 2 dead-letter entry (JSON), 3 list cap
if ARGV[1] ~= '' then redis.call('LREM', KEYS[1], 1, ARGV[1]) end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return redis.call('HINCRBY', KEYS[3], 'dead_letters', 1)
