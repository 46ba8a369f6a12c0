-- SLIDING_WINDOW_COUNTER: the fixed window's counter plus the previous window's, weighted
-- by the share of the previous window still inside the rolling period:
--   estimate = previous * (period - elapsed) / period + current
-- State, one HASH: w = start of the current window (µs), cur and prev = units admitted in
-- it and in the window before.
ALGORITHMS.sliding_window_counter = function(key, now, policy, cost)
  local period, limit = policy.period, policy.limit
  local start = now - now % period
  local state = redis.call('HMGET', key, 'w', 'cur', 'prev')
  local counted_start = tonumber(state[1])
  local current, previous = 0, 0
  if counted_start == start then
    current, previous = tonumber(state[2]), tonumber(state[3])
  elseif counted_start == start - period then
    previous = tonumber(state[2])
  end
  local elapsed = now - start
  local estimate = previous * (period - elapsed) / period + current
  local allowed = estimate + cost <= limit

  local retry_after = 0
  if not allowed then
    -- Offsets within a window, not absolute times: those have a resolution of 0.25 µs.
    if current + cost <= limit then
      -- Later in this window, once enough of the previous window has slid out.
      local at = period * (1 - (limit - cost - current) / previous)
      retry_after = math.max(1, math.ceil(at - elapsed))
    else
      -- In the next window, where this window's count becomes the weighted one.
      local at = period * (1 - (limit - cost) / current)
      retry_after = (period - elapsed) + math.ceil(at)
    end
  end
  local until_end = start + period - now
  local function reset_after(cur)
    if cur > 0 then
      return until_end + period
    elseif previous > 0 then
      return until_end
    end
    return 0
  end
  return {
    allowed = allowed,
    retry_after = retry_after,
    before = {remaining = whole(limit - estimate), reset_after = reset_after(current)},
    after = {remaining = whole(limit - estimate - cost), reset_after = reset_after(current + cost)},
    commit = function()
      redis.call('HSET', key, 'w', int(start), 'cur', int(current + cost),
        'prev', int(previous))
      redis.call('PEXPIRE', key, ms_ceil(until_end + period))
    end,
  }
end
