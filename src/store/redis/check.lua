-- libratelimit: one check of one key against every configured rate, all or
-- nothing, in one round trip. The same algorithms as src/algorithm/ (read
-- those files for the reasoning); this file only restates them in Lua, in
-- microsecond ticks. tests/vectors/algorithms.txt holds the decisions both
-- must give.
--
-- KEYS[i]  the state of rate i: a string of decimal words
--          (token bucket "tat"; fixed window "start count";
--           sliding window "start current previous"). Missing = fresh.
-- ARGV[1]  cost (units; 0 is a peek and never writes)
-- ARGV[2]  "" to use the server's TIME, or a time in µs (tests only: with an
--          override every written key lives at least a minute, so that a
--          test's virtual clock never races real expiry)
-- ARGV[3 + 5*(i-1) ...]  rate i: algorithm ("t", "f" or "s"), limit, period
--          (µs), burst, interval (µs per unit = ceil(period / limit))
--
-- Reply: { rate_index (0-based), allowed (1/0), limit, remaining, reset_us,
--          retry_after_us (-1 = never) }
--
-- Lua numbers are doubles: every integer below 2^53 is exact. The limiter
-- keeps counts and durations at most 2^50 (src/store/redis/rates.rs); the one
-- product that can exceed 2^53, previous × (period − elapsed) against
-- (limit − count) × period, is computed exactly with mul2/muldiv below.
-- math.fmod is exact on doubles; `%` is not, and is not used.

local fmod, floor = math.fmod, math.floor
local TWO26 = 67108864
local TWO52 = 4503599627370496
local NEVER = math.huge

-- a / b, rounded down, for integers 0 <= a < 2^53, 0 < b.
local function idiv(a, b)
  return (a - fmod(a, b)) / b
end

-- a * b exactly, as hi * 2^52 + lo with 0 <= lo < 2^52; needs 0 <= a, b < 2^52.
local function mul2(a, b)
  local a0 = fmod(a, TWO26)
  local a1 = (a - a0) / TWO26
  local b0 = fmod(b, TWO26)
  local b1 = (b - b0) / TWO26
  local mid = a1 * b0 + a0 * b1 -- < 2^53
  local m0 = fmod(mid, TWO26)
  local lo = a0 * b0 + m0 * TWO26 -- < 2^53
  local carry = 0
  if lo >= TWO52 then
    carry = 1
    lo = lo - TWO52
  end
  return a1 * b1 + (mid - m0) / TWO26 + carry, lo
end

-- floor(a * b / c) and the remainder, exactly; needs 0 <= a, b < 2^52,
-- 0 < c <= 2^50 and a quotient below 2^52. The double estimate is within a
-- few units; the exact remainder (small, so exact as a double) corrects it.
local function muldiv(a, b, c)
  local q = floor(a * b / c)
  local nh, nl = mul2(a, b)
  local qh, ql = mul2(q, c)
  local r = (nh - qh) * TWO52 + (nl - ql)
  while r < 0 do
    q = q - 1
    r = r + c
  end
  while r >= c do
    q = q + 1
    r = r - c
  end
  return q, r
end

local cost = tonumber(ARGV[1])
local overridden = ARGV[2] ~= ''
local now
if overridden then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Token bucket (GCRA): state {tat}.
local function gcra(limit, period, burst, interval, s, now)
  local cap = burst * interval
  -- Time never runs backwards for a key: the tat was written by a check at
  -- no earlier than tat - cap, so a clock behind that runs at it (the bucket
  -- is then empty, never "more than full", and a peek passes).
  if now < s[1] - cap then now = s[1] - cap end
  local base = s[1]
  if base < now then base = now end
  local ahead = base - now -- at most cap
  local left = cap - ahead
  if cost <= burst then
    local new_ahead = ahead + cost * interval
    if new_ahead <= cap then
      local tat = now + new_ahead
      return true, burst, idiv(cap - new_ahead, interval), new_ahead, 0, { tat }, tat
    end
    return false, burst, idiv(left, interval), ahead, new_ahead - cap
  end
  return false, burst, idiv(left, interval), ahead, NEVER
end

-- Fixed window: state {start, count}. A clock behind the stored window runs
-- at its start: time never runs backwards for a key.
local function fixed(limit, period, burst, interval, s, now)
  if s[1] > now then now = s[1] end
  local start = now - fmod(now, period)
  local used = 0
  if s[1] == start then used = s[2] end
  -- A count above the limit (a key kept from a configuration with a higher
  -- one) counts as the limit.
  if used > limit then used = limit end
  local until_next = start + period - now
  if cost <= limit - used then
    used = used + cost
    local reset = until_next
    if used == 0 then reset = 0 end
    return true, limit, limit - used, reset, 0, { start, used }, start + period
  end
  local retry = until_next
  if cost > limit then retry = NEVER end
  return false, limit, limit - used, until_next, retry
end

-- Sliding window: state {start, current, previous}.
local function sliding(limit, period, burst, interval, s, now)
  if s[1] > now then now = s[1] end
  local start = now - fmod(now, period)
  local cur, prev = 0, 0
  if s[1] == start then
    cur, prev = s[2], s[3]
  elseif s[1] + period == start then
    prev = s[2]
  end
  local elapsed = now - start
  -- The previous window's units still inside the sliding window, rounded up:
  -- x more units fit exactly when x + carried <= limit, because
  -- prev*(period-elapsed) <= k*period  <=>  ceil(prev*(period-elapsed)/period) <= k.
  local carried = 0
  if prev > 0 then
    local q, r = muldiv(prev, period - elapsed, period)
    carried = q
    if r > 0 then carried = q + 1 end
  end
  local function free(x)
    local f = limit - x - carried
    if f < 0 then f = 0 end
    return f
  end
  local function reset(x)
    if x > 0 then return start + 2 * period - now end
    if prev > 0 then return start + period - now end
    return 0
  end
  -- A peek always passes, even when a clock behind the check that wrote the
  -- state finds more carried over than that check did.
  if cost == 0 or (cost <= limit - cur and carried <= limit - cur - cost) then
    local nc = cur + cost
    return true, limit, free(nc), reset(nc), 0, { start, nc, prev }, start + 2 * period
  end
  local retry
  if cost > limit then
    retry = NEVER
  else
    -- Earliest elapsed time in a window with count c0 and previous count pv
    -- at which pv*(period-e) + (c0+cost)*period <= limit*period.
    local function earliest(c0, pv)
      local room = limit - c0 - cost
      if room < 0 then return nil end
      if pv == 0 or room >= pv then return 0 end
      local q = muldiv(room, period, pv)
      return period - q
    end
    local e = earliest(cur, prev)
    if e ~= nil and e < period then
      retry = start + e - now
    else
      retry = start + period + (earliest(0, cur) or 0) - now
    end
  end
  return false, limit, free(cur), reset(cur), retry
end

local algorithms = { t = { gcra, 1 }, f = { fixed, 2 }, s = { sliding, 3 } }

local best, best_allowed, best_limit, best_remaining, best_reset, best_retry
local all_allowed = true
local writes = {}
for i = 1, #KEYS do
  local a = 3 + 5 * (i - 1)
  local algo = algorithms[ARGV[a]]
  local limit, period = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local burst, interval = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local s = { 0, 0, 0 }
  local stored = redis.call('GET', KEYS[i])
  if stored then
    local w = 1
    for word in string.gmatch(stored, '%d+') do
      if w <= algo[2] then s[w] = tonumber(word) end
      w = w + 1
    end
  end
  local allowed, lim, remaining, reset, retry, state, fresh_at =
    algo[1](limit, period, burst, interval, s, now)
  local better
  if best == nil then
    better = true
  elseif allowed ~= best_allowed then
    better = not allowed
  elseif allowed then
    better = remaining < best_remaining
  else
    better = retry > best_retry
  end
  if better then
    best, best_allowed, best_limit, best_remaining, best_reset, best_retry =
      i, allowed, lim, remaining, reset, retry
  end
  all_allowed = all_allowed and allowed
  writes[i] = { state, fresh_at }
end

if all_allowed and cost > 0 then
  for i = 1, #KEYS do
    local state, fresh_at = writes[i][1], writes[i][2]
    local words = {}
    for w = 1, #state do words[w] = string.format('%.0f', state[w]) end
    -- Milliseconds until the state is a fresh key's, rounded up.
    local ttl = idiv(fresh_at - now + 999, 1000)
    if ttl < 1 then ttl = 1 end
    if overridden and ttl < 60000 then ttl = 60000 end
    redis.call('SET', KEYS[i], table.concat(words, ' '), 'PX', string.format('%.0f', ttl))
  end
end

if best_retry == NEVER then best_retry = -1 end
local allowed_flag = 0
if best_allowed then allowed_flag = 1 end
return { best - 1, allowed_flag, best_limit, best_remaining, best_reset, best_retry }
