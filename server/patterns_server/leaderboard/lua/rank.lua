-- A member's standing.
-- KEYS[1]  the board's base key; ARGV[1], ARGV[2] its period and offset (see common.lua)
-- ARGV[3]  the member
-- Reply    {stored score, rank}, or {} when the member is not on the board
-- Clock    now_ms(), for the period's board
local key = board()
local stored = redis.call('ZSCORE', key, ARGV[3])
if not stored then
  return {}
end
return {stored, rank_of(key, stored)}
