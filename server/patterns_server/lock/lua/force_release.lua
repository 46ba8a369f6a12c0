-- Ends whoever's lease on a lock, and wakes whoever waits for it.
-- KEYS[1]  the lock
-- ARGV[1]  the channel waiters listen on
-- Returns 1 when someone held it, else 0.
if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
redis.call('PUBLISH', ARGV[1], '')
return 1
