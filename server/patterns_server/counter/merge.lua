-- Merges HyperLogLogs into a destination and returns its new count, in one atomic step.
-- On Redis Cluster a source in another slot cannot be named here: its raw value (GET) is
-- passed instead, copied into a scratch key of this slot, merged, and the scratch deleted.
-- KEYS[1]   the destination (keeps its own items)
-- KEYS[2]   scratch key in the destination's slot; never left behind
-- KEYS[3..] sources in this slot
-- ARGV[1]   expiry of the destination in milliseconds from now; "0" leaves it as it is
-- ARGV[2..] raw values of sources in other slots
-- Returns the destination's estimated cardinality.
redis.call('PFMERGE', KEYS[1], unpack(KEYS, 3))
for i = 2, #ARGV do
  redis.call('SET', KEYS[2], ARGV[i])
  redis.call('PFMERGE', KEYS[1], KEYS[2])
end
redis.call('DEL', KEYS[2])
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return redis.call('PFCOUNT', KEYS[1])
