-- Describes a lock without its token.
-- KEYS[1]  the lock
-- ARGV     none
-- Reply    {1, fencing token, milliseconds left} when held, else {0, 0, 0}
-- Clock    none (PTTL)
local holder, fencing_token = lease_holder(KEYS[1])
if not holder then
  return {0, 0, 0}
end
return {1, fencing_token, redis.call('PTTL', KEYS[1])}
