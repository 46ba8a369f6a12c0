-- Records a score.
-- KEYS[1]  the board's base key; ARGV[1], ARGV[2] its period and offset (see common.lua)
-- ARGV[3]  the member
-- ARGV[4]  "set", "increment" or "best"
-- ARGV[5]  the stored score (or, to increment, the stored delta)
-- Reply    {1, stored score, rank, 1 if the score changed else 0}; {0} when an increment
--          would make the score infinite (nothing is written)
-- Clock    now_ms(), for the period's board
local key, expires = board()
local member, mode, value = ARGV[3], ARGV[4], ARGV[5]
local changed
if mode == 'increment' then
  -- Lua adds doubles as Redis does: the sum it sees is the one ZINCRBY would store.
  local sum = tonumber(redis.call('ZSCORE', key, member) or '0') + tonumber(value)
  if sum == math.huge or sum == -math.huge or sum ~= sum then
    return {0}
  end
  redis.call('ZINCRBY', key, value, member)
  changed = tonumber(value) ~= 0 and 1 or 0
elseif mode == 'best' then  -- better is lower, stored
  changed = redis.call('ZADD', key, 'LT', 'CH', value, member)
else
  changed = redis.call('ZADD', key, 'CH', value, member)
end
if expires then
  redis.call('EXPIREAT', key, expires)
end
local stored = redis.call('ZSCORE', key, member)
return {1, stored, rank_of(key, stored), changed}
