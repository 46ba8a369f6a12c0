-- Shared by the lock scripts (joined before each of them into one script).
-- A lock is one STRING, "<token>:<fencing token>", that expires with the lease.

-- Whether the lock's value belongs to the holder of `token`.
local function held_by(value, token)
  return value and string.sub(value, 1, #token + 1) == token .. ':'
end
