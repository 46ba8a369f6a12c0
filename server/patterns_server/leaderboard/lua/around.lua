-- A member and its neighbours. ARGV[3] the member; ARGV[4] how many on each side.
-- Returns {member, stored score, rank, ...}, empty when the member is not on the board.
local key = board()
local position = redis.call('ZRANK', key, ARGV[3])
if not position then
  return {}
end
local radius = tonumber(ARGV[4])
return entries(key, math.max(0, position - radius), position + radius)
