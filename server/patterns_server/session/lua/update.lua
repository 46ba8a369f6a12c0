-- Removes and sets attributes of a live session (never one that has ended), unless the
-- session would then carry more than the most attributes allowed.
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the random part of its id
-- ARGV[2]  the most attributes a session may carry
-- ARGV[3]  n, how many attribute fields to remove
-- ARGV[4 .. 3+n]  the fields to remove ('a:<name>'; none of them also set)
-- ARGV[4+n ..]  fields and values to set ('a:<name>', value, ...)
-- Reply    {1, the session (see reply_of)...} when updated; {0} when there is no such
--          session; {2, the number of attributes it would carry} when that is too many
--          (and nothing is written) (session.py's Updated)
-- Clock    none
local key = session_key(ARGV[1])
if redis.call('EXISTS', key) == 0 then
  return {0}
end
local removes = tonumber(ARGV[3])
local count = redis.call('HLEN', key) - 4 -- less u, c, l and t
for i = 4, 3 + removes do
  count = count - redis.call('HEXISTS', key, ARGV[i])
end
for i = 4 + removes, #ARGV, 2 do
  count = count + 1 - redis.call('HEXISTS', key, ARGV[i])
end
if count > tonumber(ARGV[2]) then
  return {2, count}
end
if removes > 0 then
  redis.call('HDEL', key, unpack(ARGV, 4, 3 + removes))
end
if #ARGV >= 4 + removes then
  redis.call('HSET', key, unpack(ARGV, 4 + removes))
end
local session = reply_of(ARGV[1])
table.insert(session, 1, 1)
return session
