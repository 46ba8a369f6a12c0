-- Sets the remaining lease of a lock to ARGV[2] ms from now, if `token` holds it.
-- KEYS[1]  the lock
-- ARGV[1]  the holder's token
-- ARGV[2]  the new lease, in milliseconds
-- Reply    {1, lease end (µs since the epoch)} when extended, else {0, 0}
-- Clock    now_us(), for the lease's end
local ends = lease_extend(KEYS[1], ARGV[1], ARGV[2])
if not ends then
  return {0, 0}
end
return {1, ends}
