-- Shared by every rate-limit algorithm; the files of this folder are joined into one script
-- in this order: common.lua, the algorithms, check.lua.
--
-- Every algorithm registers ALGORITHMS.<name> = decide, its state being one key.
-- decide(key, now, policy, cost) reads the state and returns, without writing anything
-- that changes a decision:
--   allowed      whether `cost` units are admitted now
--   retry_after  0 when allowed, else microseconds until they would be
--   before       {remaining, reset_after} as things stand (nothing consumed)
--   after        {remaining, reset_after} once `cost` is consumed (read only when allowed)
--   commit()     consumes `cost` and sets the state's expiry
-- Times are microseconds from Redis TIME; policy = {limit, period (µs), burst}.
local ALGORITHMS = {}

-- Numbers go to Redis as exact text: Lua would print 1764000000000000 as 1.764e+15.
local function int(x)
  return string.format('%d', x)
end
local function real(x)
  return string.format('%.17g', x)
end

-- Expiry in whole milliseconds, at least 1, never before `micros` have passed.
local function ms_ceil(micros)
  return math.max(1, math.ceil(micros / 1000))
end

-- Units left, never below zero; the epsilon absorbs float error of continuous refills
-- (99.9999999999 tokens is 100).
local function whole(units)
  return math.max(0, math.floor(units + 1e-9))
end
