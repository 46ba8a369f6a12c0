-- A page of a user's live sessions, newest first (in the order they were created), the
-- token of the next page, and how many live sessions the user has. It looks at no more
-- than `limit` + SLICE sessions of the creation index (those that have ended are
-- skipped, and forgotten), so a page can hold fewer than `limit` when more follow.
-- First, while the creation index lacks ids of the user's index (indexed by an older
-- server), it indexes up to SLICE of them and answers only that: the caller runs it again
-- (with '0', then the page comes once the build is over).
-- KEYS[1]  the user's base key (see common.lua)
-- ARGV[1]  the most sessions to return
-- ARGV[2]  the creation score after which the page starts, '' for the first page
-- ARGV[3]  '1': may start building the creation index; '0': only continue a build;
--          '2': page at once
-- Reply    {total, next page's creation score or '', session, session, ...} (each as
--          reply_of makes it); {-1} after a step of the build
-- Clock    now_ms(), to prune the index and count the live sessions
local now = now_ms()
prune(now)
local cursor = ARGV[3] ~= '2' and redis.call('GET', building)
if not cursor and ARGV[3] == '1'
    and redis.call('ZCARD', index) > redis.call('ZCARD', created) then
  cursor = '0'
end
if cursor then
  local step = redis.call('ZSCAN', index, cursor, 'COUNT', SLICE)
  local members = step[2]
  for i = 1, #members, 2 do
    local random = members[i]
    local at = redis.call('HGET', session_key(random), 'c')
    if not at then  -- gone without a script (evicted by Redis under memory pressure)
      unindex({random})
    elseif not redis.call('ZSCORE', created, random) then
      -- Its millisecond, and a µs in it drawn from its random id: ids created in the same
      -- ms seldom collide (each collision costs a step of unique_creation).
      local micro = (string.byte(random, 1) * 64 + string.byte(random, 2)) % 1000
      redis.call('ZADD', created, unique_creation(tonumber(at) * 1000 + micro), random)
    end
  end
  local left = redis.call('PTTL', index)
  if left > 0 then
    redis.call('PEXPIRE', created, left)
  end
  if step[1] == '0' or left <= 0 then
    redis.call('DEL', building)  -- built: the page comes in the next run
  else
    redis.call('SET', building, step[1], 'PX', left)
  end
  return {-1}
end

local limit = tonumber(ARGV[1])
local after = ARGV[2] == '' and '+inf' or '(' .. ARGV[2]
local reply = {live_count(now), ''}
local looked, found = 0, 0
while found < limit and looked < limit + SLICE do
  local batch = redis.call('ZRANGE', created, after, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0,
    math.min(limit - found, limit + SLICE - looked), 'WITHSCORES')
  if #batch == 0 then
    after = nil
    break
  end
  for i = 1, #batch, 2 do
    local session = reply_of(batch[i])
    if session then
      reply[#reply + 1] = session
      found = found + 1
    else  -- ended, not yet pruned; or evicted
      unindex({batch[i]})
    end
    looked = looked + 1
    after = '(' .. batch[i + 1]
  end
end
if after and #redis.call('ZRANGE', created, after, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1) > 0 then
  reply[2] = string.sub(after, 2)
end
return reply
