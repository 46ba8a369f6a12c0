-- Reads entries in id order, without a group.
-- KEYS[1]  the stream
-- ARGV[1]  the start: an id, '(' .. id for after it, or '-'
-- ARGV[2]  at most this many entries
-- Reply    {{id, {field, value, ...}}, ...}
-- Clock    none
return redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
