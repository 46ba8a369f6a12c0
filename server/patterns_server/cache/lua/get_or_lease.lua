-- Reads an entry, or grants a lease to fill it if nobody holds one.
-- KEYS[1]  the entry
-- KEYS[2]  its fill lease
-- ARGV[1]  the token of a new lease
-- ARGV[2]  the lease's length (ms)
-- Returns {1, value, ms left} on a hit; {2, '', ms left of someone's lease} while another
-- caller fills; {3, '', lease end (ms since the epoch)} when this caller gets the lease.
local value = redis.call('HGET', KEYS[1], 'v')
if value then
  return {1, value, redis.call('PTTL', KEYS[1])}
end
local leased = redis.call('PTTL', KEYS[2])
if leased > 0 then
  return {2, '', leased}
end
local now = now_ms()
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. now, 'PX', ARGV[2])
return {3, '', now + tonumber(ARGV[2])}
