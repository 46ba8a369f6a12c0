-- Releases a lock if `token` holds it, and wakes whoever waits for it.
-- KEYS[1]  the lock
-- ARGV[1]  the holder's token
-- ARGV[2]  the channel waiters listen on
-- Reply    1 released, 2 held by nobody, 3 held by someone else (left alone)
-- Clock    none
return lease_release(KEYS[1], ARGV[1], ARGV[2])
