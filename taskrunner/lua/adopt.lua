-- Adopt one command of TaskRunner's (upstream's) queue as a job of ours, if it is still the
-- oldest there (the tail: a Go runner BRPOPs it). All in one step: the job is admitted as
-- enqueue.lua admits it (`distinct` dedup included), the command leaves upstream's queue and
-- its dedup mark is deleted.
-- KEYS: 1 upstream queue, 2 upstream dedup mark of the command, 3.. enqueue.lua's KEYS 1-7
-- ARGV: 1 the command as read at the queue's tail, 2.. enqueue.lua's ARGV
-- Returns enqueue.lua's reply: 'ok' (adopted) or 'duplicate' (taken and refused: a live job
-- has its dedup key) took the command; 'nochan' changed nothing. {'moved', ''}: the tail is no
-- longer this command (a Go runner took it): nothing changed.
--! include enqueue
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then return {'moved', ''} end
local reply = enqueue({unpack(KEYS, 3)}, {unpack(ARGV, 2)})
if reply[1] == 'ok' or reply[1] == 'duplicate' then
  redis.call('RPOP', KEYS[1])
  redis.call('DEL', KEYS[2])
  if reply[1] == 'ok' then redis.call('HINCRBY', KEYS[8], 'adopted', 1) end
end
return reply
