-- Ends every session of a user but one.
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the random part of the id of the session to keep, or ''
-- Reply    how many live sessions were ended
-- Clock    now_ms(), to prune the index
prune(now_ms())
local ended = 0
for _, random in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  if random ~= ARGV[1] then
    ended = ended + redis.call('DEL', session_key(random))
    redis.call('ZREM', index, random)
  end
end
return ended
