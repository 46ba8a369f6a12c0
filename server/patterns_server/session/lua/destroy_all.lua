-- Ends up to SLICE sessions of a user, never one of them: one slice of DestroyAll, which
-- runs it until nothing is left.
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the random part of the id of the session to keep, or ''
-- Reply    {how many live sessions it ended, 1 if the user has others left else 0}
-- Clock    now_ms(), to prune the index
prune(now_ms())
-- The sessions that end soonest: ended ones not yet pruned, live ones, maybe the kept one.
local slice = redis.call('ZRANGE', index, 0, SLICE)
local ending = {}
for _, random in ipairs(slice) do
  if random ~= ARGV[1] and #ending < SLICE then
    ending[#ending + 1] = random
  end
end
local ended = end_sessions(ending)
local others = redis.call('ZCARD', index)
if ARGV[1] ~= '' and redis.call('ZSCORE', index, ARGV[1]) then
  others = others - 1
end
return {ended, others > 0 and 1 or 0}
