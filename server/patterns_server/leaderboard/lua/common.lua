-- Shared by the leaderboard scripts (joined before each of them into one script).
--
-- A board is a ZSET. Scores are stored so that better always sorts first in ascending
-- order (a HIGH_FIRST board stores the negated score; the server converts), which puts the
-- members of a tie in member order too. A member's rank is 1 + the number of members with
-- a strictly better (lower stored) score: ties share a rank.
--
-- Every script gets KEYS[1], the board's base key (its hash tag and order), and ARGV[1],
-- ARGV[2]: the period ("none", "day", "week", "month") and the offset from the current
-- one (0 or -1). The board's key is the base key and the period's number, in the same
-- slot; it is made here, from the Redis clock, so that every server agrees on when a
-- period ends.
local DAY = 86400

-- Year and month (1 to 12) of a day counted from 1970-01-01 (H. Hinnant's algorithm).
local function civil(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return year, month
end

-- The day (counted from 1970-01-01) on which a month starts.
local function month_start(year, month)
  if month <= 2 then
    year = year - 1
  end
  local era = math.floor(year / 400)
  local yoe = year - era * 400
  local mp = month > 2 and month - 3 or month + 9
  local doy = math.floor((153 * mp + 2) / 5)
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- The board's key, and when it expires (seconds since the epoch; nil: never).
local function board()
  local period, offset = ARGV[1], tonumber(ARGV[2])
  if period == 'none' then
    return KEYS[1] .. ':all', nil
  end
  local day = math.floor(now_ms() / 1000 / DAY)
  if period == 'day' then
    local index = day + offset
    return KEYS[1] .. ':day' .. index, (index + 2) * DAY
  elseif period == 'week' then  -- Monday-based: 1970-01-01 was a Thursday
    local index = math.floor((day + 3) / 7) + offset
    return KEYS[1] .. ':week' .. index, (index * 7 - 3 + 14) * DAY
  end
  local year, month = civil(day)
  local index = year * 12 + month - 1 + offset
  local ends = index + 2
  return KEYS[1] .. ':month' .. index,
    month_start(math.floor(ends / 12), ends % 12 + 1) * DAY
end

-- The rank of a stored score.
local function rank_of(key, stored)
  return redis.call('ZCOUNT', key, '-inf', '(' .. stored) + 1
end

-- A flat reply for members from position `first` (0-based) to `last`: member, stored
-- score and rank for each.
local function entries(key, first, last)
  local found = redis.call('ZRANGE', key, first, last, 'WITHSCORES')
  local reply = {}
  local rank, previous = 0, nil
  for i = 1, #found, 2 do
    local stored = found[i + 1]
    if stored ~= previous then  -- a new score: its rank is its position, unless it
      rank = (i == 1) and rank_of(key, stored) or first + (i + 1) / 2  -- began earlier
      previous = stored
    end
    reply[#reply + 1] = found[i]
    reply[#reply + 1] = stored
    reply[#reply + 1] = rank
  end
  return reply
end
