-- Releases a lock if `token` holds it, and wakes whoever waits for it.
-- KEYS[1]  the lock
-- ARGV[1]  the holder's token
-- ARGV[2]  the channel waiters listen on
-- Reply    1 released, 2 held by nobody, 3 held by someone else (left alone)
-- Clock    none
local holder = lease_holder(KEYS[1])
if not holder then
  return 2
end
if holder ~= ARGV[1] then
  return 3
end
lease_end(KEYS[1], ARGV[2])
return 1
