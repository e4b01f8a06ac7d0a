-- Dead-letter one command of TaskRunner's (upstream's) queue that cannot be a job here (a bad
-- command, or a channel name not valid here), if it is still the oldest there (the tail), and
-- delete its dedup mark: as dead_letter.lua keeps a refused message.
-- KEYS: 1 upstream queue, 2 upstream dedup mark, 3 dead-letter list, 4 stats hash
-- ARGV: 1 the command as read at the queue's tail, 2 dead-letter entry (JSON), 3 list cap,
--       4 dead-letter events channel
-- Returns the dead-letter count, or -1 when the tail is no longer this command (nothing done).
--! include dead_letter
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[2])
return dead_letter({KEYS[1], KEYS[3], KEYS[4]}, {ARGV[1], ARGV[2], ARGV[3], ARGV[4], -1})
