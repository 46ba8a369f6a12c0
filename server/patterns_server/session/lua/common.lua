-- Shared by the session scripts (joined before each of them into one script).
-- KEYS[1] is a user's base key `...:session:{<user tag>}`, and every key of the user
-- derives from it, so all share its hash tag, one Cluster slot, and one script:
--   KEYS[1]..':u'             the user's index: a ZSET of the random parts of the ids of
--                             the user's sessions, scored by when each ends (ms);
--   KEYS[1]..':c'             the same ids scored in the order they were created: the
--                             Redis clock's µs at Create, made unique (List pages by it);
--   KEYS[1]..':b'             while ':c' is being built for ids that ':u' holds and ':c'
--                             lacks (indexed by a server older than ':c'): the ZSCAN
--                             cursor of ':u' that the build has reached;
--   KEYS[1]..':s:'..<random>  a session: a HASH with u = the user id, c = when it was
--                             created, l = last seen, t = its ttl (all ms), and
--                             'a:'..<name> per attribute; it expires when it ends (l + t).
-- Every script does a bounded amount of work, whatever the number of sessions: at most
-- SLICE sessions ended, pruned or indexed per run (session.py's SLICE, the same number).

local index = KEYS[1] .. ':u'
local created = KEYS[1] .. ':c'
local building = KEYS[1] .. ':b'
local SLICE = 500

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

-- Forgets sessions (random parts, at most a few thousand) in both indexes.
local function unindex(randoms)
  if #randoms > 0 then
    redis.call('ZREM', index, unpack(randoms))
    redis.call('ZREM', created, unpack(randoms))
  end
end

-- Drops from the indexes up to SLICE of the sessions that have ended (their hashes have
-- expired with them); the rest go with later runs. Readers never trust the index alone:
-- counts are of the sessions that end after now, and a listed session is read from its
-- hash. (An index left empty goes with them: Redis deletes empty sorted sets.)
local function prune(now)
  unindex(redis.call('ZRANGE', index, '-inf', now, 'BYSCORE', 'LIMIT', 0, SLICE))
end

-- How many of the user's sessions end after `now` (ms).
local function live_count(now)
  return redis.call('ZCOUNT', index, '(' .. now, '+inf')
end

-- Indexes session `random`, ending at `ends`, and keeps the indexes at least that long.
local function index_session(random, ends, now)
  redis.call('ZADD', index, ends, random)
  expire_no_sooner(index, ends, now)
  expire_no_sooner(created, ends, now)
end

-- A score as Redis reads it back: µs scores have 16 digits, more than Lua prints.
local function exact(score)
  return string.format('%.0f', score)
end

-- A creation score not yet taken, from `score` up (ties would make pages ambiguous).
local function unique_creation(score)
  while redis.call('ZCOUNT', created, exact(score), exact(score)) > 0 do
    score = score + 1
  end
  return exact(score)
end

-- Ends `randoms` (sessions of the user): deletes each and forgets it; how many were live.
local function end_sessions(randoms)
  local ended = 0
  for _, random in ipairs(randoms) do
    ended = ended + redis.call('DEL', session_key(random))
  end
  unindex(randoms)
  return ended
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
