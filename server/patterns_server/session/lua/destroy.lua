-- Ends a session.
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the random part of its id
-- Reply    1 when it was live, else 0
-- Clock    none
redis.call('ZREM', index, ARGV[1])
return redis.call('DEL', session_key(ARGV[1]))
