-- Deletes a consumer group, with its pending entries and first-delivery times.
-- KEYS[1]  the stream
-- KEYS[2]  the group's first-delivery times (HASH)
-- ARGV[1]  the group
-- Reply    1 when the group existed, else 0
-- Clock    none
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
return redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
