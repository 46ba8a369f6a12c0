-- Ends a session.
-- ARGV[1]  the random part of its id
-- Returns 1 when it was live, else 0.
redis.call('ZREM', index, ARGV[1])
return redis.call('DEL', session_key(ARGV[1]))
