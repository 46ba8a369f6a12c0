-- Opens a consumer: creates its group at a start id if the group is absent (and the
-- stream, empty, if it is absent), and the consumer in it.
-- KEYS[1]  the stream
-- ARGV[1]  the group
-- ARGV[2]  the consumer
-- ARGV[3]  the group's start: '$', '0' or an id (the last one taken as delivered)
-- Reply    1 when the group was created, else 0
-- Clock    none
local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[3], 'MKSTREAM')
local made = 1
if type(created) == 'table' and created.err then
  if string.sub(created.err, 1, 9) ~= 'BUSYGROUP' then
    return redis.error_reply(created.err)
  end
  made = 0
end
redis.call('XGROUP', 'CREATECONSUMER', KEYS[1], ARGV[1], ARGV[2])
return made
