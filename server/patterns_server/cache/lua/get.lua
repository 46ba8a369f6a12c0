-- Reads an entry.
-- KEYS[1]  the entry
-- ARGV     none
-- Reply    {1, value, ms left} when found, else {0, '', 0}
-- Clock    none (PTTL)
local value = redis.call('HGET', KEYS[1], 'v')
if not value then
  return {0, '', 0}
end
return {1, value, redis.call('PTTL', KEYS[1])}
