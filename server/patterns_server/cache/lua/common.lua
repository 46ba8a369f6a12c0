-- Shared by the cache scripts (joined before each of them into one script).
-- An entry is a HASH: v = the value, t = its tags (a JSON array). Its fill lease is a
-- lease (lease.lua) beside it whose number is when it was granted (ms, Redis clock). A
-- tag's index is a ZSET of the keys tagged with it, scored by when their entry expires;
-- its marker, a STRING holding when the tag was last invalidated (ms).

-- The expiry of an entry (ms since the epoch) from ARGV-style `mode` ("ttl": `value` is
-- ms from now; "at": ms since the epoch) and `now` (now_ms()).
local function expiry_of(mode, value, now)
  local expire_at = tonumber(value)
  if mode == 'ttl' then
    expire_at = now + expire_at
  end
  return expire_at
end
