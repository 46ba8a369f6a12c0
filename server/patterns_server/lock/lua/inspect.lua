-- Describes a lock without its token.
-- KEYS[1]  the lock
-- Returns {1, fencing token, milliseconds left} when held, else {0, 0, 0}.
local value = redis.call('GET', KEYS[1])
if not value then
  return {0, 0, 0}
end
return {1, tonumber(string.match(value, ':(%d+)$')), redis.call('PTTL', KEYS[1])}
