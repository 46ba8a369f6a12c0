-- GCRA, the generic cell rate algorithm: each unit is due one emission interval
-- (period/limit) after the previous one; requests may run ahead of schedule by at most
-- `burst` intervals. State, one STRING: the theoretical arrival time (TAT, µs) of the next
-- unit, as "<whole µs>.<fraction>"; the key expires when the TAT is reached, which is when
-- it carries no information.
--
-- Arithmetic is relative to now (`ahead` = TAT - now): a TAT near 1.8e15 µs as one double
-- has a resolution of 0.25 µs, and a few dozen checks of one key in one script run (a
-- CheckMany, a CheckStream batch) added that much error per check, enough to show a fresh
-- key one unit fewer than its burst. Stored as whole µs and a fraction, it is kept exactly.
-- Times within SLACK of each other still count as equal (an interval such as 1e6/3 µs is
-- not exact), as TIME itself has whole microseconds.
local SLACK = 0.5

-- How far the key's TAT is ahead of `now`, in µs (0 when there is none, or it is past).
-- Reads the "<whole>.<fraction>" form, and any other number (the %.17g of earlier
-- releases) as a number.
local function gcra_ahead(key, now)
  local stored = redis.call('GET', key)
  if not stored then
    return 0
  end
  local whole, fraction = string.match(stored, '^(%d+)(%.?%d*)$')
  local ahead
  if whole then
    ahead = (tonumber(whole) - now) + (tonumber('0' .. fraction) or 0)
  else
    ahead = (tonumber(stored) or now) - now
  end
  return math.max(0, ahead)
end

-- `now` + `ahead` as "<whole µs>.<fraction>" (six decimals: a millionth of a µs).
local function gcra_tat(now, ahead)
  local whole = math.floor(ahead)
  local fraction = string.format('%.6f', ahead - whole)
  if string.sub(fraction, 1, 1) == '1' then -- 0.9999996 rounds up to 1.000000
    whole, fraction = whole + 1, '0.000000'
  end
  return string.format('%.0f', now + whole) .. string.sub(fraction, 2)
end

ALGORITHMS.gcra = function(key, now, policy, cost)
  local interval = policy.period / policy.limit
  local tolerance = interval * policy.burst
  local ahead = gcra_ahead(key, now)
  local new_ahead = ahead + cost * interval
  local allow_at = new_ahead - tolerance -- relative to now, as every time below
  local allowed = allow_at <= SLACK
  local function units_left(at)
    return math.max(0, math.floor((tolerance - at + SLACK) / interval))
  end
  return {
    allowed = allowed,
    retry_after = allowed and 0 or math.ceil(allow_at),
    before = {remaining = units_left(ahead), reset_after = math.ceil(ahead)},
    after = {remaining = units_left(new_ahead), reset_after = math.ceil(new_ahead)},
    commit = function()
      redis.call('SET', key, gcra_tat(now, new_ahead), 'PX', ms_ceil(new_ahead))
    end,
  }
end
