-- Grants a lock if nobody holds it, with the next fencing token of its name.
-- KEYS[1]  the lock (a lease: "<token>:<fencing token>")
-- KEYS[2]  the name's fencing counter, the last token granted: it never expires
-- ARGV[1]  the new holder's token
-- ARGV[2]  the lease, in milliseconds
-- Reply    {1, fencing token, lease end (µs since the epoch)} when granted, else
--          {0, 0, milliseconds left of the holder's lease}
-- Clock    now_us(), for the token and the lease's end
--
-- A token is max(last + 1, now_us()): one more than the last while the counter lasts,
-- and never below the Redis clock's microseconds, so a counter that Redis lost (restarted
-- without persistence, failed over to a replica that lacked it) starts again above every
-- token granted before, as long as the clock has not gone back. Microseconds since 1970
-- stay below 2^53 (until the year 2255): exact in a Lua number, and in JavaScript.
local fencing_token, ends = lease_grant(KEYS[1], ARGV[1], ARGV[2], function()
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  local token = math.max(last + 1, now_us())
  redis.call('SET', KEYS[2], string.format('%d', token))
  return token
end)
if not fencing_token then
  return {0, 0, ends}
end
return {1, fencing_token, ends}
