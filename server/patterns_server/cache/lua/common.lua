-- Shared by the cache scripts (joined before each of them into one script).
-- An entry is a HASH: v = the value, t = its tags (a JSON array). A fill lease is a
-- STRING "<token>:<ms it was granted>" beside it. A tag's index is a ZSET of the keys
-- tagged with it, scored by when their entry expires; its marker, a STRING holding when
-- the tag was last invalidated (ms).

-- Ends a fill lease, if there is one, and wakes whoever waits for the fill.
local function end_lease(lease_key, channel)
  if redis.call('DEL', lease_key) == 1 then
    redis.call('PUBLISH', channel, '')
  end
end
