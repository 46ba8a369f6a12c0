-- Moves a live session to a new id: the old id names nothing from now on.
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the random part of its id
-- ARGV[2]  the random part of its new id
-- Reply    the session under its new id (see reply_of), or nil when there is none
-- Clock    now_ms(), to prune the index
local old = session_key(ARGV[1])
local ends = ends_of(old)
if not ends then
  return false
end
redis.call('RENAME', old, session_key(ARGV[2]))
redis.call('ZREM', index, ARGV[1])
index_session(ARGV[2], ends, now_ms())
return reply_of(ARGV[2])
