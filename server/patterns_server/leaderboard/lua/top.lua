-- A page. ARGV[3] how many to skip; ARGV[4] how many.
-- Returns {total, member, stored score, rank, member, ...}.
local key = board()
local first = tonumber(ARGV[3])
local reply = entries(key, first, first + tonumber(ARGV[4]) - 1)
table.insert(reply, 1, redis.call('ZCARD', key))
return reply
