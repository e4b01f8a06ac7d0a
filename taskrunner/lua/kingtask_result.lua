-- Write kingtask's result hash r_<uuid> and count the job in kingtask's daily counter, once,
-- right after finish.lua recorded the job's final state (sent in the same round trip).
-- KEYS: 1 job hash, 2 kingtask result hash (r_<uuid>), 3 daily counter (optional:
--       success_task_count:<date> / fail_task_count:<date>)
-- ARGV: 1 runner id, 2 attempt, 3 final state, 4 result keep time s, 5 counter keep time s,
--       6.. r_ field/value pairs
-- Returns 1; 0 when finish.lua did not record this attempt's end (no longer this runner's);
-- 2 when written already (a call repeated after its reply was lost: not counted twice).
local cur = redis.call('HMGET', KEYS[1], 'runner', 'attempt', 'state', 'kingtask_result')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] or cur[3] ~= ARGV[3] then return 0 end
if cur[4] == ARGV[2] then return 2 end
redis.call('HSET', KEYS[1], 'kingtask_result', ARGV[2])
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('EXPIRE', KEYS[2], ARGV[4])
if KEYS[3] and redis.call('INCR', KEYS[3]) == 1 then  -- as kingtask: expiry set on the first
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
return 1
