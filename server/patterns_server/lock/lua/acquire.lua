-- Grants a lock if nobody holds it, with the next fencing token of its name.
-- KEYS[1]  the lock (a lease: "<token>:<fencing token>")
-- KEYS[2]  the name's fencing counter: it never expires, so tokens keep growing across
--          expiries and restarts
-- ARGV[1]  the new holder's token
-- ARGV[2]  the lease, in milliseconds
-- Reply    {1, fencing token, lease end (µs since the epoch)} when granted, else
--          {0, 0, milliseconds left of the holder's lease}
-- Clock    now_us(), for the lease's end
local fencing_token, ends = lease_grant(KEYS[1], ARGV[1], ARGV[2], function()
  return redis.call('INCR', KEYS[2])
end)
if not fencing_token then
  return {0, 0, ends}
end
return {1, fencing_token, ends}
