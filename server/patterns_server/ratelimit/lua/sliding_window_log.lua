-- SLIDING_WINDOW_LOG: every admitted request, kept for one period.
-- State: keys[1] ZSET of admissions, member "<time>:<seq>:<cost>" scored by time (µs);
--        keys[2] HASH total = units in the ZSET, seq = a counter making members unique.
-- A request at time t counts while t > now - period. Refused requests are not recorded.
ALGORITHMS.sliding_window_log = {keys = 2, decide = function(keys, now, policy, cost)
  local log, meta = keys[1], keys[2]
  local function cost_of(member)
    return tonumber(string.match(member, ':(%d+)$'))
  end
  local total = 0
  if redis.call('EXISTS', log) == 1 then
    total = tonumber(redis.call('HGET', meta, 'total'))
    if not total then
      -- The total was lost (evicted under memory pressure): count the log again.
      total = 0
      for _, member in ipairs(redis.call('ZRANGE', log, 0, -1)) do
        total = total + cost_of(member)
      end
    end
    -- Forget admissions that left the window. This changes no decision, so it happens
    -- even when nothing is consumed; it keeps the log as short as the window.
    local horizon = int(now - policy.period)
    local expired = redis.call('ZRANGEBYSCORE', log, '-inf', horizon)
    if #expired > 0 then
      for _, member in ipairs(expired) do
        total = total - cost_of(member)
      end
      redis.call('ZREMRANGEBYSCORE', log, '-inf', horizon)
      redis.call('HSET', meta, 'total', int(total))
    end
  end

  local allowed = total + cost <= policy.limit
  local retry_after = 0
  if not allowed then
    -- Wait until the oldest admissions free enough units; each holds at least one unit,
    -- so the first `needed` entries are enough to look at.
    local needed = total + cost - policy.limit
    local oldest = redis.call('ZRANGE', log, 0, needed - 1, 'WITHSCORES')
    local freed = 0
    retry_after = policy.period  -- only if the total disagreed with the log
    for i = 1, #oldest, 2 do
      freed = freed + cost_of(oldest[i])
      if freed >= needed then
        retry_after = tonumber(oldest[i + 1]) + policy.period - now
        break
      end
    end
  end
  local reset_after = 0
  if total > 0 then
    local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
    reset_after = tonumber(newest[2]) + policy.period - now
  end
  return {
    allowed = allowed,
    retry_after = retry_after,
    before = {remaining = policy.limit - total, reset_after = reset_after},
    after = {remaining = policy.limit - total - cost, reset_after = policy.period},
    commit = function()
      local seq = redis.call('HINCRBY', meta, 'seq', 1)
      redis.call('ZADD', log, int(now), int(now) .. ':' .. seq .. ':' .. int(cost))
      redis.call('HSET', meta, 'total', int(total + cost))
      redis.call('PEXPIRE', log, ms_ceil(policy.period))
      redis.call('PEXPIRE', meta, ms_ceil(policy.period))
    end,
  }
end}
