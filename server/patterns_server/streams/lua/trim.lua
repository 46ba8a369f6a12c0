-- Trims a stream once, or sets its retention and applies it.
-- KEYS[1]  the stream
-- KEYS[2]  its retention (HASH)
-- ARGV[1]  'trim' (trim once) or 'set' (store the retention, then apply it)
-- ARGV[2]  max_len (0: none)
-- ARGV[3]  max_age (ms; 0: none)
-- Reply    how many entries went
-- Clock    now_ms() once
local max_len, max_age = tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[1] == 'set' then
  if max_len == 0 and max_age == 0 then
    redis.call('DEL', KEYS[2])
  else
    redis.call('HSET', KEYS[2], 'n', max_len, 'a', max_age)
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
return trim(KEYS[1], max_len, max_age, now_ms())
