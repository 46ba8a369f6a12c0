-- Gives entries back to a group: each stays pending, its delivery count kept, made idle
-- for long enough that it is claimed (redelivered) after the delay; wakes the stream's
-- consumers.
-- KEYS[1]  the stream
-- ARGV[1]  the group
-- ARGV[2]  the consumer
-- ARGV[3]  the idle time to give them (ms): the ack timeout less the delay
-- ARGV[4]  the stream's wake-up channel
-- ARGV[5..]  the ids
-- Reply    how many were pending; or -1 when the group does not exist
-- Clock    none
local command = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
for i = 5, #ARGV do
  table.insert(command, ARGV[i])
end
table.insert(command, 'IDLE')
table.insert(command, ARGV[3])
table.insert(command, 'JUSTID')  -- JUSTID: the delivery count stays as it is
local given = redis.pcall(unpack(command))
if type(given) == 'table' and given.err then
  if string.sub(given.err, 1, 7) == 'NOGROUP' then
    return -1
  end
  return redis.error_reply(given.err)
end
redis.call('PUBLISH', ARGV[4], '')
return #given
