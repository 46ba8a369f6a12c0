-- Adds a key to a tag's index, before its entry is stored (so that an invalidation of
-- the tag that starts from now on finds it), and says when the tag was last invalidated.
-- KEYS[1]  the tag's index
-- KEYS[2]  the tag's invalidation marker
-- ARGV[1]  the key
-- ARGV[2]  "ttl" or "at", ARGV[3] the entry's expiry (as in set.lua)
-- Reply    the tag's last invalidation (ms since the epoch), 0 if none
-- Clock    now_ms(), to place the expiry and prune expired keys
local now = now_ms()
local expire_at = expiry_of(ARGV[2], ARGV[3], now) + 1000  -- stored a little later: outlive it
-- Forget some keys whose entries have expired since they were tagged.
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
if #dead > 0 then
  redis.call('ZREM', KEYS[1], unpack(dead))
end
redis.call('ZADD', KEYS[1], expire_at, ARGV[1])
expire_no_sooner(KEYS[1], expire_at, now)
return tonumber(redis.call('GET', KEYS[2]) or '0')
