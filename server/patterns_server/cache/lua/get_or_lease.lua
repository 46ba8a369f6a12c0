-- Reads an entry, or grants a lease to fill it if nobody holds one.
-- KEYS[1]  the entry
-- KEYS[2]  its fill lease
-- ARGV[1]  the token of a new lease
-- ARGV[2]  the lease's length (ms)
-- Reply    {1 (hit), value, ms left of the entry}; {2 (pending), '', ms left of another
--          caller's lease} while it fills; {3 (leased), when it was granted (ms since the
--          epoch), its end (µs since the epoch)} when this caller gets the lease (cache.py's
--          Lookup)
-- Clock    now_ms() for the lease's number (when it was granted), now_us() for its end
local value = redis.call('HGET', KEYS[1], 'v')
if value then
  return {1, value, redis.call('PTTL', KEYS[1])}
end
local granted_at, ends = lease_grant(KEYS[2], ARGV[1], ARGV[2], now_ms)
if not granted_at then
  return {2, '', ends}
end
return {3, granted_at, ends}
