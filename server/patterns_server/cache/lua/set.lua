-- Stores an entry, replacing its value and tags.
-- KEYS[1]  the entry
-- KEYS[2]  its fill lease
-- ARGV[1]  the value
-- ARGV[2]  "ttl" or "at": how ARGV[3] gives the expiry
-- ARGV[3]  the expiry: ms from now, or ms since the epoch
-- ARGV[4]  "1": store only if the entry does not exist
-- ARGV[5]  a lease token the store requires ("" for none)
-- ARGV[6]  the tags, a JSON array
-- ARGV[7]  the latest invalidation (ms since the epoch) of any of the tags, "0" if none:
--          a lease granted before it is no longer valid
-- ARGV[8]  the channel on which waiters for the fill listen
-- Reply    1 when stored, else 0
-- Clock    now_ms(), to place the expiry
local now = now_ms()
local expire_at = expiry_of(ARGV[2], ARGV[3], now)
if expire_at <= now then
  return 0
end
local holder, granted_at = lease_holder(KEYS[2])
if ARGV[5] ~= '' and (holder ~= ARGV[5] or granted_at <= tonumber(ARGV[7])) then
  return 0
end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 't', ARGV[6])
redis.call('PEXPIREAT', KEYS[1], expire_at)
if holder then  -- a value is here: no fill needed any more, and waiters can read it
  lease_end(KEYS[2], ARGV[8])
end
return 1
