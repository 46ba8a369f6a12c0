-- Grants a lock if nobody holds it, with the next fencing token of its name.
-- KEYS[1]  the lock
-- KEYS[2]  the name's fencing counter: it never expires, so tokens keep growing across
--          expiries and restarts
-- ARGV[1]  the new holder's token
-- ARGV[2]  the lease, in milliseconds
-- Returns {1, fencing token, lease end (µs since the epoch)} when granted, else
-- {0, 0, milliseconds left of the current holder's lease}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, 0, redis.call('PTTL', KEYS[1])}
end
local fencing_token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fencing_token, 'PX', ARGV[2])
return {1, fencing_token, now_us() + tonumber(ARGV[2]) * 1000}
