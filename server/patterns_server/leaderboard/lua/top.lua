-- A page of the board, best first.
-- KEYS[1]  the board's base key; ARGV[1], ARGV[2] its period and offset (see common.lua)
-- ARGV[3]  how many to skip
-- ARGV[4]  how many
-- Reply    {total, member, stored score, rank, member, ...}
-- Clock    now_ms(), for the period's board
local key = board()
local first = tonumber(ARGV[3])
local reply = entries(key, first, first + tonumber(ARGV[4]) - 1)
table.insert(reply, 1, redis.call('ZCARD', key))
return reply
