-- Merges HyperLogLogs into a destination and returns its new count, in one atomic step.
-- KEYS[1]   the destination (keeps its own items)
-- KEYS[2]   scratch key in the destination's slot; never left behind
-- KEYS[3..] sources in this slot
-- ARGV[1]   expiry of the destination in milliseconds from now; "0" leaves it as it is
-- ARGV[2..] raw values of sources in other slots (see copy.lua)
-- Reply     the destination's estimated cardinality
-- Clock     none
redis.call('PFMERGE', KEYS[1], unpack(KEYS, 3))
merge_values(KEYS[1], KEYS[2], ARGV, 2)
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return redis.call('PFCOUNT', KEYS[1])
