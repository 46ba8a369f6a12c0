-- Gives back a fill lease without a value, if `token` still holds it, and wakes the
-- callers waiting for the fill (the first of them takes the next lease).
-- KEYS[1]  the fill lease
-- ARGV[1]  the holder's token
-- ARGV[2]  the channel on which waiters for the fill listen
-- Reply    1 when the lease ended, 2 when nobody held it, 3 when another token did
-- Clock    none
return lease_release(KEYS[1], ARGV[1], ARGV[2])
