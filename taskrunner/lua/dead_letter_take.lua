-- Take one dead-lettered message out of the list, and (retry) push its raw text back on the
-- prepare queue. KEYS: 1 dead-letter list, 2 prepare queue.
-- ARGV: 1 the exact entry, 2 raw message to push ('' = drop), 3 dead-letter events channel.
-- Returns 1, or 0 if it was gone.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then redis.call('LPUSH', KEYS[2], ARGV[2]) end
redis.call('PUBLISH', ARGV[3], 'taken')
return 1
