-- Releases a lock if `token` holds it, and wakes whoever waits for it.
-- KEYS[1]  the lock
-- ARGV[1]  the holder's token
-- ARGV[2]  the channel waiters listen on
-- Returns 1 released, 2 not held by anyone, 3 held by someone else (left alone).
local value = redis.call('GET', KEYS[1])
if not value then
  return 2
end
if not held_by(value, ARGV[1]) then
  return 3
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], '')
return 1
