-- Shared by the session scripts (joined before each of them into one script).
-- KEYS[1] is a user's base key `...:session:{<user tag>}`, and every key of the user
-- derives from it, so all share its hash tag, one Cluster slot, and one script:
--   KEYS[1]..':u'             the user's index: a ZSET of the random parts of the ids of
--                             the user's sessions, scored by when each ends (ms);
--   KEYS[1]..':s:'..<random>  a session: a HASH with u = the user id, c = when it was
--                             created, l = last seen, t = its ttl (all ms), and
--                             'a:'..<name> per attribute; it expires when it ends (l + t).

local index = KEYS[1] .. ':u'

local function session_key(random)
  return KEYS[1] .. ':s:' .. random
end

-- When the session `key` ends (ms), or nil when there is no such session.
local function ends_of(key)
  local times = redis.call('HMGET', key, 'l', 't')
  if not times[1] then
    return nil
  end
  return tonumber(times[1]) + tonumber(times[2])
end

-- Drops from the index the sessions that have ended. (An index left empty goes with them:
-- Redis deletes empty sorted sets.)
local function prune(now)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
end

-- Indexes session `random`, ending at `ends`, and keeps the index at least that long.
local function index_session(random, ends, now)
  redis.call('ZADD', index, ends, random)
  expire_no_sooner(index, ends, now)
end

-- A session as a reply: the random part of its id, then its hash's fields and values.
local function reply_of(random)
  local fields = redis.call('HGETALL', session_key(random))
  if #fields == 0 then
    return false
  end
  table.insert(fields, 1, random)
  return fields
end
