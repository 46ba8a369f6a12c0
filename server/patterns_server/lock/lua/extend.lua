-- Sets the remaining lease of a lock to ARGV[2] ms from now, if `token` holds it.
-- KEYS[1]  the lock
-- ARGV[1]  the holder's token
-- ARGV[2]  the new lease, in milliseconds
-- Returns {1, lease end (µs since the epoch)} when extended, else {0, 0}.
if not held_by(redis.call('GET', KEYS[1]), ARGV[1]) then
  return {0, 0}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, now_us() + tonumber(ARGV[2]) * 1000}
