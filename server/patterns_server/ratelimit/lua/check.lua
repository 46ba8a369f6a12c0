-- Decides rate-limit checks; the main body of the script (see common.lua).
-- KEYS     the state key of each check, in order
-- ARGV[1]  "1": all or nothing (consume only if every check admits); "0": each on its own
-- ARGV[2..] six values per check: algorithm name, limit, period (µs), burst (capacity for
--          the buckets), cost, peek ("1" reports without consuming)
-- Reply    four integers per check: allowed (1/0), remaining, reset_after (µs),
--          retry_after (µs)
-- Clock    now_us(), once, for every check
local now = now_us()
local all_or_nothing = ARGV[1] == '1'

-- Each check on its own is decided and consumed in turn, so a later check sees what an
-- earlier one took (the same key and policy may come twice). All or nothing decides every
-- check first, then consumes only if all admit.
local reply = {}
local function answer(decision, consume)
  local shown = decision.before
  if consume then
    decision.commit()
    shown = decision.after
  end
  reply[#reply + 1] = decision.allowed and 1 or 0
  reply[#reply + 1] = shown.remaining
  reply[#reply + 1] = shown.reset_after
  reply[#reply + 1] = decision.retry_after
end

local decisions = {}
local all_allowed = true
for arg = 2, #ARGV, 6 do
  local decide = ALGORITHMS[ARGV[arg]]
  local key = KEYS[(arg - 2) / 6 + 1]
  local policy = {limit = tonumber(ARGV[arg + 1]), period = tonumber(ARGV[arg + 2]),
                  burst = tonumber(ARGV[arg + 3])}
  local decision = decide(key, now, policy, tonumber(ARGV[arg + 4]))
  decision.peek = ARGV[arg + 5] == '1'
  if all_or_nothing then
    decisions[#decisions + 1] = decision
    all_allowed = all_allowed and decision.allowed
  else
    answer(decision, decision.allowed and not decision.peek)
  end
end
for _, decision in ipairs(decisions) do
  answer(decision, all_allowed and not decision.peek)
end
return reply
