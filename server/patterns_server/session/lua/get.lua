-- Reads a session; with touch, first slides its end to its ttl from now.
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the random part of its id
-- ARGV[2]  '1' to touch it
-- Reply    the session (see reply_of), or nil when there is none
-- Clock    now_ms(), for a touch
if ARGV[2] == '1' then
  local key = session_key(ARGV[1])
  local ttl = redis.call('HGET', key, 't')
  if not ttl then
    return false
  end
  local now = now_ms()
  local ends = now + tonumber(ttl)
  redis.call('HSET', key, 'l', now)
  redis.call('PEXPIREAT', key, ends)
  prune(now)
  index_session(ARGV[1], ends, now)
end
return reply_of(ARGV[1])
