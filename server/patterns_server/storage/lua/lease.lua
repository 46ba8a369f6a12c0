-- Leases (storage/leases.py): the right to something for a while, held by whoever has
-- its token. A lease is one STRING, "<token>:<number>", that expires when the lease
-- ends; the number is the lease's own (a lock's fencing token, the Redis time a cache
-- fill was granted). Ending a lease publishes on a channel, which wakes its waiters.
-- Scripts ask for these functions with LuaScript.load(..., lease=True).

-- Grants the lease `key` to `token` for `ttl_ms` milliseconds, unless someone holds it.
-- `number()` gives the lease's number, called only when granted. Returns the number and
-- the lease's end (µs since the epoch) when granted; else nil and the milliseconds left
-- of the holder's lease.
local function lease_grant(key, token, ttl_ms, number)
  local left = redis.call('PTTL', key)
  if left ~= -2 then
    return nil, left
  end
  local n = number()
  redis.call('SET', key, token .. ':' .. string.format('%d', n), 'PX', ttl_ms)
  return n, now_us() + tonumber(ttl_ms) * 1000
end

-- The token and number of the lease `key`; nil when nobody holds it.
local function lease_holder(key)
  local value = redis.call('GET', key)
  if not value then
    return nil, nil
  end
  local token, number = string.match(value, '^(.*):(%d+)$')
  return token, tonumber(number)
end

-- Renews the lease `key` to `ttl_ms` from now if `token` holds it: its new end (µs since
-- the epoch), else nil.
local function lease_extend(key, token, ttl_ms)
  if lease_holder(key) ~= token then
    return nil
  end
  redis.call('PEXPIRE', key, ttl_ms)
  return now_us() + tonumber(ttl_ms) * 1000
end

-- Ends the lease `key`, whoever holds it, and wakes whoever waits on `channel`: whether
-- there was one.
local function lease_end(key, channel)
  if redis.call('DEL', key) == 0 then
    return false
  end
  redis.call('PUBLISH', channel, '')
  return true
end

-- Ends the lease `key` if `token` holds it, and wakes whoever waits on `channel`: 1 when
-- it ended, 2 when nobody holds it, 3 when another token does (left alone).
local function lease_release(key, token, channel)
  local holder = lease_holder(key)
  if not holder then
    return 2
  end
  if holder ~= token then
    return 3
  end
  lease_end(key, channel)
  return 1
end
