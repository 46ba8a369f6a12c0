-- The number of members on a board.
-- KEYS[1]  the board's base key; ARGV[1], ARGV[2] its period and offset (see common.lua)
-- Reply    the number of members
-- Clock    now_ms(), for the period's board
local key = board()
return redis.call('ZCARD', key)
