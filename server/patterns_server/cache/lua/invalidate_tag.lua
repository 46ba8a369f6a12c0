-- Marks a tag invalidated now: fill leases granted before this cannot store under it.
-- KEYS[1]  the tag's invalidation marker
-- ARGV[1]  how long to keep the marker (ms): the longest lease there can be
-- Returns nothing of use.
redis.call('SET', KEYS[1], now_ms(), 'PX', ARGV[1])
return 1
