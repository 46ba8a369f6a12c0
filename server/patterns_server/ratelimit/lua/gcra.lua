-- GCRA, the generic cell rate algorithm: each unit is due one emission interval
-- (period/limit) after the previous one; requests may run ahead of schedule by at most
-- `burst` intervals. State, one STRING: the theoretical arrival time (TAT, µs) of the next
-- unit; the key expires when the TAT is reached, which is when it carries no information.
ALGORITHMS.gcra = {keys = 1, decide = function(keys, now, policy, cost)
  local interval = policy.period / policy.limit
  local tolerance = interval * policy.burst
  local tat = math.max(tonumber(redis.call('GET', keys[1])) or now, now)
  local new_tat = tat + cost * interval
  local allow_at = new_tat - tolerance
  local allowed = allow_at <= now + 1e-6
  return {
    allowed = allowed,
    retry_after = allowed and 0 or math.ceil(allow_at - now),
    before = {remaining = whole((tolerance - (tat - now)) / interval),
              reset_after = math.ceil(tat - now)},
    after = {remaining = whole((tolerance - (new_tat - now)) / interval),
             reset_after = math.ceil(new_tat - now)},
    commit = function()
      redis.call('SET', keys[1], real(new_tat), 'PX', ms_ceil(new_tat - now))
    end,
  }
end}
