-- Deletes an entry and ends any fill of its key.
-- KEYS[1]  the entry
-- KEYS[2]  its fill lease
-- ARGV[1]  the channel on which waiters for the fill listen
-- Reply    1 when the entry existed, else 0
-- Clock    none
local deleted = redis.call('DEL', KEYS[1])
lease_end(KEYS[2], ARGV[1])
return deleted
