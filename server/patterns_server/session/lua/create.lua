-- Starts a session, first ending the user's sessions that would end soonest while the
-- user has `cap` or more (the new one is never among them).
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the random part of the new session's id
-- ARGV[2]  the user id
-- ARGV[3]  the session's ttl (ms)
-- ARGV[4]  the most sessions the user may have
-- ARGV[5..]  attribute fields and values ('a:<name>', value, ...)
-- Reply    the new session (see reply_of)
-- Clock    now_ms(): when it starts, and to prune the index
local now = now_ms()
prune(now)
local excess = redis.call('ZCARD', index) - tonumber(ARGV[4]) + 1
if excess > 0 then
  for _, random in ipairs(redis.call('ZRANGE', index, 0, excess - 1)) do
    redis.call('DEL', session_key(random))
  end
  redis.call('ZREMRANGEBYRANK', index, 0, excess - 1)
end
local key = session_key(ARGV[1])
local ends = now + tonumber(ARGV[3])
redis.call('HSET', key, 'u', ARGV[2], 'c', now, 'l', now, 't', ARGV[3], unpack(ARGV, 5))
redis.call('PEXPIREAT', key, ends)
index_session(ARGV[1], ends, now)
return reply_of(ARGV[1])
