-- Deletes an entry if it carries one of the given tags, and ends any fill of its key
-- (the fill may be for a value under those tags).
-- KEYS[1]  the entry
-- KEYS[2]  its fill lease
-- ARGV[1]  the tags, a JSON object {"tag": true, ...}
-- ARGV[2]  the channel on which waiters for the fill listen
-- Reply    1 when the entry was deleted, else 0
-- Clock    none
local deleted = 0
local carried = redis.call('HGET', KEYS[1], 't')
if carried then
  local wanted = cjson.decode(ARGV[1])
  for _, tag in ipairs(cjson.decode(carried)) do
    if wanted[tag] then
      redis.call('DEL', KEYS[1])
      deleted = 1
      break
    end
  end
end
lease_end(KEYS[2], ARGV[2])
return deleted
