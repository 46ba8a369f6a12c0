-- Shared by merge.lua and count_union.lua (joined before them into one script).
-- On Redis Cluster a HyperLogLog in another slot cannot be named in a script: its raw
-- value (GET) is passed as an argument instead. merge_values copies each such value into
-- `scratch` (a key of this slot) and merges it into `target`, then deletes the scratch key.
local function merge_values(target, scratch, values, first)
  for i = first, #values do
    redis.call('SET', scratch, values[i])
    redis.call('PFMERGE', target, scratch)
  end
  redis.call('DEL', scratch)
end
