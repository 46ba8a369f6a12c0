-- A member's standing. ARGV[3] the member.
-- Returns {stored score, rank}, or {} when the member is not on the board.
local key = board()
local stored = redis.call('ZSCORE', key, ARGV[3])
if not stored then
  return {}
end
return {stored, rank_of(key, stored)}
