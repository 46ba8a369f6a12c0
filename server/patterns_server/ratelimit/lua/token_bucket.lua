-- TOKEN_BUCKET: `burst` tokens at most, refilled continuously at limit/period per µs.
-- State, one HASH: tokens (may be fractional) and ts, the time they were counted (µs).
-- No state means a full bucket; the key expires when the bucket would be full again.
ALGORITHMS.token_bucket = function(key, now, policy, cost)
  local capacity = policy.burst
  local rate = policy.limit / policy.period
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = capacity
  if state[1] then
    tokens = math.min(capacity, tonumber(state[1]) + (now - tonumber(state[2])) * rate)
  end
  local allowed = tokens + 1e-9 >= cost
  local function refill_time(level)
    return math.ceil((capacity - level) / rate)
  end
  return {
    allowed = allowed,
    retry_after = allowed and 0 or math.ceil((cost - tokens) / rate),
    before = {remaining = whole(tokens), reset_after = refill_time(tokens)},
    after = {remaining = whole(tokens - cost), reset_after = refill_time(tokens - cost)},
    commit = function()
      redis.call('HSET', key, 'tokens', real(tokens - cost), 'ts', int(now))
      redis.call('PEXPIRE', key, ms_ceil(refill_time(tokens - cost)))
    end,
  }
end
