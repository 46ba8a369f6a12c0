-- Shared by the streams scripts (joined before each of them into one script).
-- An entry's fields: 'p' the payload, then 'h:<name>' per header. A stream's keys share
-- its hash tag (streams.py's _Keys): the stream, its dead-letter stream, its retention
-- (a HASH: 'n' max_len, 'a' max_age in ms), its idempotency keys and, per group, the
-- first-delivery times of its pending entries (a HASH: id -> ms).

-- Applies a retention: XTRIM MAXLEN ~ `max_len` (when > 0), then MINID ~ (now - `max_age`)
-- (when > 0, ms). Returns how many entries went.
local function trim(stream, max_len, max_age, now)
  local deleted = 0
  if max_len > 0 then
    deleted = deleted + redis.call('XTRIM', stream, 'MAXLEN', '~', max_len)
  end
  if max_age > 0 and now > max_age then
    deleted = deleted + redis.call('XTRIM', stream, 'MINID', '~', now - max_age)
  end
  return deleted
end

-- The retention stored in `meta`: max_len, max_age (ms); 0 for none.
local function retention(meta)
  local values = redis.call('HMGET', meta, 'n', 'a')
  return tonumber(values[1]) or 0, tonumber(values[2]) or 0
end
