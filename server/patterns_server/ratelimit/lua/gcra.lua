-- GCRA, the generic cell rate algorithm: each unit is due one emission interval
-- (period/limit) after the previous one; requests may run ahead of schedule by at most
-- `burst` intervals. State, one STRING: the theoretical arrival time (TAT, µs) of the next
-- unit; the key expires when the TAT is reached, which is when it carries no information.
--
-- A TAT near 1.8e15 µs is a double with a resolution of 0.25 µs, so its sums are off by a
-- fraction of a microsecond: times within SLACK of each other count as equal (TIME itself
-- has whole microseconds), or a fresh key would show one unit fewer than its burst.
local SLACK = 0.5
ALGORITHMS.gcra = function(key, now, policy, cost)
  local interval = policy.period / policy.limit
  local tolerance = interval * policy.burst
  local tat = math.max(tonumber(redis.call('GET', key)) or now, now)
  local new_tat = tat + cost * interval
  local allow_at = new_tat - tolerance
  local allowed = allow_at <= now + SLACK
  local function units_left(at)
    return math.max(0, math.floor((tolerance - (at - now) + SLACK) / interval))
  end
  return {
    allowed = allowed,
    retry_after = allowed and 0 or math.ceil(allow_at - now),
    before = {remaining = units_left(tat), reset_after = math.ceil(tat - now)},
    after = {remaining = units_left(new_tat), reset_after = math.ceil(new_tat - now)},
    commit = function()
      redis.call('SET', key, real(new_tat), 'PX', ms_ceil(new_tat - now))
    end,
  }
end
