-- Removes members. ARGV[3..] the members.
-- Returns how many were on the board.
local key = board()
return redis.call('ZREM', key, unpack(ARGV, 3))
