-- Counts the union of HyperLogLogs spread over several Redis Cluster slots.
-- Sources in this slot are named; the others arrive as raw values (GET). Both are merged
-- into a scratch key, counted, and every scratch key is deleted before returning.
-- KEYS[1]   scratch key for the union
-- KEYS[2]   scratch key for one copied value
-- KEYS[3..] sources in this slot
-- ARGV[1..] raw values of sources in other slots
-- Reply     the estimated cardinality of the union
-- Clock     none
redis.call('PFMERGE', KEYS[1], unpack(KEYS, 3))
merge_values(KEYS[1], KEYS[2], ARGV, 1)
local count = redis.call('PFCOUNT', KEYS[1])
redis.call('DEL', KEYS[1])
return count
