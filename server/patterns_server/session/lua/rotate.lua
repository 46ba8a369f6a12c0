-- Moves a live session to a new id: the old id names nothing from now on.
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the random part of its id
-- ARGV[2]  the random part of its new id
-- Reply    the session under its new id (see reply_of), or nil when there is none
-- Clock    now_ms(), to keep the indexes as long as the session
local old = session_key(ARGV[1])
local ends = ends_of(old)
if not ends then
  return false
end
redis.call('RENAME', old, session_key(ARGV[2]))
local order = redis.call('ZSCORE', created, ARGV[1])
unindex({ARGV[1]})
if order then  -- its place in the creation order (else List's build indexes it)
  redis.call('ZADD', created, order, ARGV[2])
end
index_session(ARGV[2], ends, now_ms())
return reply_of(ARGV[2])
