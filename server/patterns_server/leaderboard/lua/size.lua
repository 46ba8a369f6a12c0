-- The number of members on the board.
local key = board()
return redis.call('ZCARD', key)
