-- Takes up to ARGV[3] entries for a consumer: first those of its group pending longer
-- than the ack timeout (redeliveries, claimed with XAUTOCLAIM from wherever they are),
-- then new ones (XREADGROUP, without BLOCK). A claimed entry already delivered
-- max_deliveries times is appended to the dead-letter stream instead, and acknowledged;
-- a claimed entry trimmed away meanwhile is acknowledged and dropped.
-- KEYS[1]  the stream
-- KEYS[2]  its dead-letter stream
-- KEYS[3]  the group's first-delivery times (HASH: id -> ms)
-- ARGV[1]  the group
-- ARGV[2]  the consumer
-- ARGV[3]  at most this many entries
-- ARGV[4]  the ack timeout (ms): the idle time after which an entry is claimed
-- ARGV[5]  max deliveries
-- ARGV[6]  the XAUTOCLAIM cursor ('0-0' to start a pass)
-- ARGV[7]  the dead-letter stream's wake-up channel
-- Reply    {next cursor, now (ms), {id, {field, value, ...}, delivery count, first ms}...};
--          or {'NOGROUP'} when the group does not exist
-- Clock    now_ms() once: the first delivery of new entries
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local wanted, max_deliveries = tonumber(ARGV[3]), tonumber(ARGV[5])
local now = now_ms()
local claimed = redis.pcall('XAUTOCLAIM', stream, group, consumer, ARGV[4], ARGV[6],
  'COUNT', wanted, 'JUSTID')
if type(claimed) == 'table' and claimed.err then
  if string.sub(claimed.err, 1, 7) == 'NOGROUP' then
    return {'NOGROUP'}
  end
  return redis.error_reply(claimed.err)
end
local reply = {claimed[1], now}
-- Redis 7 lists the ids it dropped from the group because their entries were deleted.
if claimed[3] then
  for _, id in ipairs(claimed[3]) do
    redis.call('HDEL', KEYS[3], id)
  end
end
local taken = 0
for _, id in ipairs(claimed[2]) do
  local entry = redis.call('XRANGE', stream, id, id)[1]
  local count = redis.call('XPENDING', stream, group, id, id, 1)[1][4] + 1
  if not entry then  -- trimmed while pending (Redis 6.2 still claims it)
    redis.call('XACK', stream, group, id)
    redis.call('HDEL', KEYS[3], id)
  elseif count > max_deliveries then
    local fields = entry[2]
    table.insert(fields, 'h:dead.id')
    table.insert(fields, id)
    table.insert(fields, 'h:dead.group')
    table.insert(fields, group)
    table.insert(fields, 'h:dead.delivery_count')
    table.insert(fields, tostring(count - 1))
    table.insert(fields, 'h:dead.reason')
    table.insert(fields, 'max_deliveries')
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    redis.call('XACK', stream, group, id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('PUBLISH', ARGV[7], '')
  else
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'RETRYCOUNT', count, 'JUSTID')
    local first = tonumber(redis.call('HGET', KEYS[3], id)) or now
    table.insert(reply, {id, entry[2], count, first})
    taken = taken + 1
  end
end
if taken < wanted then
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', wanted - taken,
    'STREAMS', stream, '>')
  if read then
    for _, entry in ipairs(read[1][2]) do
      redis.call('HSET', KEYS[3], entry[1], now)
      table.insert(reply, {entry[1], entry[2], 1, now})
    end
  end
end
return reply
