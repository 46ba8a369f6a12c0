-- Ends whoever's lease on a lock, and wakes whoever waits for it.
-- KEYS[1]  the lock
-- ARGV[1]  the channel waiters listen on
-- Reply    1 when someone held it, else 0
-- Clock    none
return lease_end(KEYS[1], ARGV[1]) and 1 or 0
