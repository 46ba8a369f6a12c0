-- Acknowledges entries of a group.
-- KEYS[1]  the stream
-- KEYS[2]  the group's first-delivery times (HASH)
-- ARGV[1]  the group
-- ARGV[2..]  the ids
-- Reply    how many were pending
-- Clock    none
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('HDEL', KEYS[2], unpack(ARGV, 2))
return acked
