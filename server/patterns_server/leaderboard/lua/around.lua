-- A member and its neighbours.
-- KEYS[1]  the board's base key; ARGV[1], ARGV[2] its period and offset (see common.lua)
-- ARGV[3]  the member
-- ARGV[4]  how many on each side
-- Reply    {member, stored score, rank, ...}, empty when the member is not on the board
-- Clock    now_ms(), for the period's board
local key = board()
local position = redis.call('ZRANK', key, ARGV[3])
if not position then
  return {}
end
local radius = tonumber(ARGV[4])
return entries(key, math.max(0, position - radius), position + radius)
