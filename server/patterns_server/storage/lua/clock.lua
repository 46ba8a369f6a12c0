-- Time in scripts, from the Redis clock (every server agrees on it): every script that
-- needs the time asks for these functions (LuaScript.load(..., clock=True)).

-- Milliseconds since the epoch.
local function now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end

-- Microseconds since the epoch.
local function now_us()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end

-- Makes `key` live at least until `ends` (ms since the epoch), never shorter than it
-- would already (`now` is now_ms()): an index lives as long as its longest-lived member.
local function expire_no_sooner(key, ends, now)
  local left = redis.call('PTTL', key)
  if left < 0 or now + left < ends then
    redis.call('PEXPIREAT', key, ends)
  end
end
