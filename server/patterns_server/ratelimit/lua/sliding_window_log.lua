-- SLIDING_WINDOW_LOG: every admitted request, kept for one period; exact.
-- State, one ZSET: an entry per admission, scored by its time (µs) and named
-- "<cum>:<cost>", where cum is the running total of units admitted up to and including
-- it, zero-padded so that entries of the same microsecond sort by it too. Entries are
-- unique, and the units admitted between two entries are a subtraction.
-- A request at time t counts while t > now - period. Refused requests are not recorded.
--
-- However long the log, one check costs O(log n) Redis work plus a bounded trim: the
-- units in the window come from two cums, a refusal's wait from a binary search over
-- ranks, and at most TRIM_STEP expired entries are removed per check (the rest by later
-- checks, or with the whole key, which expires one period after its last admission).
local TRIM_STEP = 50

local function cum_and_cost(member)
  local cum, cost = string.match(member, '^(%d+):(%d+)$')
  return tonumber(cum), tonumber(cost)
end

ALGORITHMS.sliding_log = function(key, now, policy, cost)
  local horizon = now - policy.period
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local total, last_cum, base, first_rank = 0, 0, 0, 0
  if #newest > 0 then
    last_cum = cum_and_cost(newest[1])
    -- `base`: the running total just before the window.
    local expired = redis.call('ZCOUNT', key, '-inf', int(horizon))
    if expired > 0 then
      local last_expired = redis.call('ZRANGE', key, expired - 1, expired - 1)
      base = cum_and_cost(last_expired[1])
      -- Forget some admissions that left the window: this changes no decision.
      local trimmed = math.min(expired, TRIM_STEP)
      redis.call('ZREMRANGEBYRANK', key, 0, trimmed - 1)
      first_rank = expired - trimmed
    else
      local first_cum, first_cost = cum_and_cost(redis.call('ZRANGE', key, 0, 0)[1])
      base = first_cum - first_cost
    end
    total = last_cum - base
  end

  local allowed = total + cost <= policy.limit
  local retry_after = 0
  if not allowed then
    -- Enough units are free once the first entry whose cum reaches base + needed has
    -- left the window: found by binary search, cums grow with ranks.
    local target = base + total + cost - policy.limit
    local low, high = first_rank, redis.call('ZCARD', key) - 1
    local found_at = nil
    while low <= high do
      local middle = math.floor((low + high) / 2)
      local probe = redis.call('ZRANGE', key, middle, middle, 'WITHSCORES')
      if cum_and_cost(probe[1]) >= target then
        found_at = tonumber(probe[2])
        high = middle - 1
      else
        low = middle + 1
      end
    end
    retry_after = found_at and (found_at + policy.period - now) or policy.period
  end
  local reset_after = 0
  if total > 0 then
    reset_after = tonumber(newest[2]) + policy.period - now
  end
  return {
    allowed = allowed,
    retry_after = retry_after,
    before = {remaining = policy.limit - total, reset_after = reset_after},
    after = {remaining = policy.limit - total - cost, reset_after = policy.period},
    commit = function()
      redis.call('ZADD', key, int(now), string.format('%016d:%d', last_cum + cost, cost))
      redis.call('PEXPIRE', key, ms_ceil(policy.period))
    end,
  }
end
