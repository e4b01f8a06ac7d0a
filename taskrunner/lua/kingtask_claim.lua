-- Claim one of kingtask's requests: SPOP its uuid into this runner's in-flight list.
-- KEYS: 1 kingtask's request_uuid_set, 2 this runner's kingtask in-flight list
-- ARGV: 1 prefix of kingtask's request hashes ('t_')
-- The request hash t_<uuid> is named by the uuid popped, so it cannot be passed in KEYS:
-- kingtask's key names are fixed upstream and unprefixed, so they are not Cluster-safe anyway.
-- Returns false when no request waits, else {uuid, field, value, ...} of its hash (no fields:
-- the hash is missing). The uuid stays in flight until admitted or dead-lettered; a runner
-- lost meanwhile has it put back in the set (kingtask_restore.lua).
local uuid = redis.call('SPOP', KEYS[1])
if not uuid then return false end
redis.call('LPUSH', KEYS[2], uuid)
local reply = {uuid}
for _, item in ipairs(redis.call('HGETALL', ARGV[1] .. uuid)) do reply[#reply + 1] = item end
return reply
