-- Adds items to a HyperLogLog and, when asked, sets its expiry, in one atomic step.
-- KEYS[1]   the HyperLogLog
-- ARGV[1]   expiry in milliseconds from now; "0" leaves the key's expiry as it is
-- ARGV[2..] the items (any number: added in chunks that stay below Lua's unpack limit)
-- Reply     1 when any register changed (some item was very probably new), else 0
-- Clock     none
local changed = 0
local last_item = #ARGV
for first = 2, last_item, 1000 do
  local last = math.min(first + 999, last_item)
  if redis.call('PFADD', KEYS[1], unpack(ARGV, first, last)) == 1 then
    changed = 1
  end
end
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return changed
