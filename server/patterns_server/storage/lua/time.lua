-- Reads the Redis clock, as a script so that it goes by its key in a shared pipeline.
-- KEYS[1]  the Pub/Sub route: a key of the node whose clock is read (never touched)
-- ARGV     none
-- Reply    microseconds since the epoch
-- Clock    now_us()
return now_us()
