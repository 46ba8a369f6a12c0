-- FIXED_WINDOW: a counter per window; windows start at multiples of the period.
-- State, one HASH: w = start of the window counted (µs), n = units admitted in it.
-- A hash from an older window counts as empty, so correctness never waits on expiry.
ALGORITHMS.fixed_window = function(key, now, policy, cost)
  local start = now - now % policy.period
  local window_end = start + policy.period
  local state = redis.call('HMGET', key, 'w', 'n')
  local used = 0
  if tonumber(state[1]) == start then
    used = tonumber(state[2])
  end
  local allowed = used + cost <= policy.limit
  local until_end = window_end - now
  return {
    allowed = allowed,
    retry_after = allowed and 0 or until_end,
    before = {remaining = policy.limit - used, reset_after = used > 0 and until_end or 0},
    after = {remaining = policy.limit - used - cost, reset_after = until_end},
    commit = function()
      redis.call('HSET', key, 'w', int(start), 'n', int(used + cost))
      redis.call('PEXPIRE', key, ms_ceil(until_end))
    end,
  }
end
