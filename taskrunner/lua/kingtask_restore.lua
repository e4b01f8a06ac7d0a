-- Put a runner's claimed and unadmitted kingtask requests back into request_uuid_set.
-- KEYS: 1 the runner's kingtask in-flight list, 2 kingtask's request_uuid_set
-- Returns how many were put back.
local uuids = redis.call('LRANGE', KEYS[1], 0, -1)
for _, uuid in ipairs(uuids) do redis.call('SADD', KEYS[2], uuid) end
redis.call('DEL', KEYS[1])
return #uuids
