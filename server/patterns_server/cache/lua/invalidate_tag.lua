-- Marks a tag invalidated now: fill leases granted before this cannot store under it.
-- KEYS[1]  the tag's invalidation marker
-- ARGV[1]  how long to keep the marker (ms): the longest lease there can be
-- Reply    1
-- Clock    now_ms(), the time of the invalidation
redis.call('SET', KEYS[1], now_ms(), 'PX', ARGV[1])
return 1
