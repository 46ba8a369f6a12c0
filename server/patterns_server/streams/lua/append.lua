-- Appends an entry, applies the stream's retention and wakes its consumers; with an
-- idempotency key, answers the first append's id instead when the key is remembered.
-- KEYS[1]  the stream
-- KEYS[2]  its retention (HASH)
-- KEYS[3]  optional: the idempotency key (STRING: the id), remembered for ARGV[2] ms
-- ARGV[1]  the stream's wake-up channel
-- ARGV[2]  the idempotency window (ms; with KEYS[3])
-- ARGV[3..]  the entry's fields and values
-- Reply    {id, 1 when a duplicate else 0}
-- Clock    now_ms() once, when the retention has a max_age
if KEYS[3] then
  local first = redis.call('GET', KEYS[3])
  if first then
    return {first, 1}
  end
end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
local max_len, max_age = retention(KEYS[2])
if max_len > 0 or max_age > 0 then
  trim(KEYS[1], max_len, max_age, max_age > 0 and now_ms() or 0)
end
if KEYS[3] then
  redis.call('SET', KEYS[3], id, 'PX', ARGV[2])
end
redis.call('PUBLISH', ARGV[1], '')
return {id, 0}
