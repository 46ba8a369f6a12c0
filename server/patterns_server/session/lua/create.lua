-- Starts a session, first ending the user's sessions that would end soonest while the
-- user has `cap` or more (the new one is never among them). When more than SLICE would
-- have to end, it ends SLICE of them and creates nothing: the caller runs it again.
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the random part of the new session's id
-- ARGV[2]  the user id
-- ARGV[3]  the session's ttl (ms)
-- ARGV[4]  the most sessions the user may have
-- ARGV[5..]  attribute fields and values ('a:<name>', value, ...)
-- Reply    the new session (see reply_of); or {} when it only ended SLICE sessions
-- Clock    now_us() once: when it starts (ms), its creation score (µs), and to prune
local now_micros = now_us()
local now = math.floor(now_micros / 1000)
prune(now)
local excess = live_count(now) - tonumber(ARGV[4]) + 1
if excess > 0 then
  local soonest = redis.call('ZRANGE', index, '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0,
    math.min(excess, SLICE))
  end_sessions(soonest)
  if excess > SLICE then
    return {}
  end
end
local key = session_key(ARGV[1])
local ends = now + tonumber(ARGV[3])
redis.call('HSET', key, 'u', ARGV[2], 'c', now, 'l', now, 't', ARGV[3], unpack(ARGV, 5))
redis.call('PEXPIREAT', key, ends)
redis.call('ZADD', created, unique_creation(now_micros), ARGV[1])
index_session(ARGV[1], ends, now)
return reply_of(ARGV[1])
