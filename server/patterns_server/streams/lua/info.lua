-- Describes a stream: its length, first and last ids, retention and groups.
-- KEYS[1]  the stream
-- KEYS[2]  its retention (HASH)
-- ARGV[1]  the most entries counted for a group's lag where Redis does not give it
-- Reply    {} when there is no stream; else {length, first id or '', last id,
--          max_len, max_age (ms), {{name, pending, last delivered id, lag,
--          {{consumer, pending, idle ms}, ...}}, ...}}
-- Clock    none
local function fields_of(flat)
  local out = {}
  for i = 1, #flat, 2 do
    out[flat[i]] = flat[i + 1]
  end
  return out
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local stream = fields_of(redis.call('XINFO', 'STREAM', KEYS[1]))
local first = ''
if stream['first-entry'] then
  first = stream['first-entry'][1]
end
local max_len, max_age = retention(KEYS[2])
local most = tonumber(ARGV[1])
local groups = {}
for _, flat in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local group = fields_of(flat)
  local last = group['last-delivered-id']
  -- Redis 7 says the lag, unless entries were deleted in between (then nil); 6.2 never.
  -- Redis 7 counts entries trimmed before the group reached them as lag: when no entry
  -- the group has had is retained, every entry retained is lag.
  local lag = group['lag']
  if lag and #redis.call('XRANGE', KEYS[1], '-', last, 'COUNT', 1) == 0 then
    lag = stream['length']
  end
  if not lag then
    lag = 0
    local from = '(' .. last
    while lag < most do
      -- Small pages: an entry may hold 1 MiB, and each page is copied into the script.
      local page = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', math.min(10, most - lag))
      if #page == 0 then
        break
      end
      lag = lag + #page
      from = '(' .. page[#page][1]
    end
  end
  local consumers = {}
  for _, each in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], group['name'])) do
    local consumer = fields_of(each)
    table.insert(consumers, {consumer['name'], consumer['pending'], consumer['idle']})
  end
  table.insert(groups, {group['name'], group['pending'], last, lag, consumers})
end
return {stream['length'], first, stream['last-generated-id'], max_len, max_age, groups}
