-- A user's live sessions, newest first (by creation, then id), and how many there are.
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the most sessions to return
-- Reply    {total, session, session, ...} (each as reply_of makes it)
-- Clock    now_ms(), to prune the index
prune(now_ms())
local live = {}
for _, random in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  local created = redis.call('HGET', session_key(random), 'c')
  if created then
    live[#live + 1] = { tonumber(created), random }
  else -- gone without a script (evicted by Redis under memory pressure): forget it
    redis.call('ZREM', index, random)
  end
end
table.sort(live, function(a, b)
  if a[1] ~= b[1] then
    return a[1] > b[1]
  end
  return a[2] > b[2]
end)
local reply = { #live }
for i = 1, math.min(tonumber(ARGV[1]), #live) do
  reply[#reply + 1] = reply_of(live[i][2])
end
return reply
