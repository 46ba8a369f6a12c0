-- Removes members from a board.
-- KEYS[1]  the board's base key; ARGV[1], ARGV[2] its period and offset (see common.lua)
-- ARGV[3..] the members
-- Reply    how many were on the board
-- Clock    now_ms(), for the period's board
local key = board()
return redis.call('ZREM', key, unpack(ARGV, 3))
