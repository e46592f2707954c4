-- libratelimit: one check (rl_check) or one adjust (rl_adjust) of one key
-- against every configured rate, in one round trip. The same algorithms as
-- src/algorithm/ (read those files for the reasoning); this file only
-- restates them in Lua, in microsecond ticks. tests/vectors/algorithms.txt
-- holds the decisions both must give.
--
-- KEYS[1]  the state of the key: of its one rate, a string of decimal
--          words (token bucket "tat", or "+tat" when its expiry is on a
--          grid: store; fixed window "start count"; sliding window
--          "start current previous"); of several rates, "+" when its
--          expiry is on a grid (store_all), else "=", then every rate's
--          words in order, each an 8-byte little-endian integer. Missing =
--          fresh.
-- ARGV[1]  the operation and its amount:
--          "N"   check of cost N (units; 0 is a peek and never writes): all
--                or nothing (algorithm::check_all)
--          "aD"  adjust by D: settle a cost after the fact on every rate
--                (algorithm::adjust_all); D is a signed integer with
--                |D| <= 2^50 (the caller clamps it: script.rs); > 0 charges,
--                never denied, may go into debt; < 0 refunds, never past a
--                fresh key; 0 peeks
-- ARGV[2 + 3*(i-1) ...]  rate i of n (n = (#ARGV - 1) / 3, rounded down):
--          its algorithm and the two numbers it
--          reads: "t", burst, interval (µs per unit = ceil(period / limit));
--          "f" or "s", limit, period (µs)
-- ARGV[2 + 3*n]  absent: the server's TIME; or a time in µs (tests
--          only: with an override every written key lives at least a
--          minute, so that a test's virtual clock never races real expiry)
-- (Each argument costs the server ~1,200 instructions, as much as a good
-- part of a check's arithmetic: none is sent unread, the operation and its
-- amount share one, and the time override is left out when unused.)
--
-- Reply of an allowed check, when it fits: one integer
--          (remaining * (R + 1) + reset_us) * n + rate_index
--          (rate_index 0-based), where R is the longest reset an allowed
--          check of that rate can have: token bucket burst * interval,
--          fixed window period, sliding window 2 * period. Its limit is the
--          rate's own (burst, or limit), retry_after 0. It fits when
--          reset_us <= R and the whole is below 2^53 (so exact); for most
--          rates it always does ((limit + 1) * (R + 1) * n <= 2^53).
--          (Redis converts a table reply for ~7,000 instructions, an
--          integer for ~200: bench/redis_cpu.sh.)
-- Any other reply (denials, adjusts, allowed checks that do not fit):
--          { rate_index (0-based), allowed (1/0), limit, remaining,
--          reset_us, retry_after_us (-1 = never) }
-- For an adjust it describes the key afterwards: allowed = whether a check
-- of cost 1 would pass now, retry_after = until it does (0 when allowed),
-- limit/remaining/reset = a peek's; the deciding rate is chosen as a check
-- of cost 1 chooses it.
--
-- Bounds of an adjust (so that every number stays exact, below 2^53): a
-- charge moves a bucket's tat at most MAX_AHEAD = 2^50 µs (35 years) past
-- now, and a window's count to at most MAX_COUNT = 2^50 units; a debt that
-- long is "never" in practice, and the largest refund (2^50 units, the
-- clamp of |delta|) makes any key fresh again. (src/store/redis/rates.rs states the same
-- bounds in Rust, for the test vectors.)
--
-- Two parts, split by the line "-- each call --": above it, definitions
-- only (constants and functions, no KEYS, ARGV or redis.call); below it,
-- what runs per call. As an EVAL script the whole file runs on every call.
-- As a Redis Function (Redis >= 7, script.rs `library`) the part above is
-- the library's body, run once at FUNCTION LOAD, and the part below becomes
-- the function, with KEYS and ARGV its parameters: no closure is made per
-- call. The library's body sees no global but `redis`, so the standard
-- functions are fetched at the top of each call.
--
-- Lua numbers are doubles: every integer below 2^53 is exact. The limiter
-- keeps counts and durations at most 2^50 (src/store/redis/rates.rs); the one
-- product that can exceed 2^53, previous × (period − elapsed) against
-- (limit − count) × period, is computed exactly with mul2/muldiv below.
-- math.fmod is exact on doubles; `%` is not, and is not used.

-- The standard functions used, as locals (cheaper than globals): set at the
-- top of each call (see above).
local fmod, floor, tonumber, format, match, byte, sub
local TWO26 = 67108864
local TWO52 = 4503599627370496
local TWO53 = 9007199254740992
local NEVER = 1 / 0

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

local MAX_AHEAD = 1125899906842624 -- 2^50
local MAX_COUNT = 1125899906842624 -- 2^50

-- Cost (Redis CPU per call, bench/redis_cpu.sh): no tables, closures or
-- iterators made per rate; a one-rate state is read with one `+ 0` (or
-- match) and written with one string.format('%d ...') (Lua 5.1 formats %d
-- through a C long: exact for every integer below 2^53); a state of several
-- rates is read and written with struct.unpack and struct.pack.

-- The time of this call (µs) and whether a test overrides it: set below,
-- on each call.
local now, overridden

-- Each algorithm decides one check of `cost` units at `now` on the state
-- s1, s2, s3: allowed, limit, remaining, reset, retry_after (NEVER =
-- never), and when allowed the time the new state is fresh from and the new
-- state's words.

-- Token bucket (GCRA): state {tat}.
local function gcra(burst, interval, tat, now, cost)
  local cap = burst * interval
  -- Time never runs backwards for a key: a tat more than a bucket ahead of
  -- now (a stale clock, or a debt) is decided at tat - cap: the bucket is
  -- empty, never "more than full", and a peek passes. Durations count from
  -- the caller's own now: `behind` is added to them.
  local key_now = now
  if key_now < tat - cap then key_now = tat - cap end
  local behind = key_now - now
  local base = tat
  if base < key_now then base = key_now end
  local ahead = base - key_now -- at most cap
  local left = cap - ahead
  if cost <= burst then
    local new_ahead = ahead + cost * interval
    if new_ahead <= cap then
      local n = key_now + new_ahead
      return true, burst, idiv(cap - new_ahead, interval), new_ahead + behind, 0, n, n
    end
    return false, burst, idiv(left, interval), ahead + behind, new_ahead - cap + behind
  end
  return false, burst, idiv(left, interval), ahead + behind, NEVER
end

-- Fixed window: state {start, count}. A clock behind the stored window runs
-- at its start: time never runs backwards for a key.
local function fixed(limit, period, s1, s2, now, cost)
  if s1 > now then now = s1 end
  local start = now - fmod(now, period)
  local used = 0
  if s1 == start then used = s2 end
  -- A count above the limit (a key kept from a configuration with a higher
  -- one, or a charge past the limit) counts as the limit.
  if used > limit then used = limit end
  local until_next = start + period - now
  if cost <= limit - used then
    used = used + cost
    local reset = until_next
    if used == 0 then reset = 0 end
    return true, limit, limit - used, reset, 0, start + period, start, used
  end
  local retry = until_next
  if cost > limit then retry = NEVER end
  return false, limit, limit - used, until_next, retry
end

-- Earliest elapsed time in a sliding window with count c0 and previous
-- count pv at which pv*(period-e) + (c0+cost)*period <= limit*period; nil
-- if never in this window.
local function earliest(limit, period, c0, pv, cost)
  local room = limit - c0 - cost
  if room < 0 then return nil end
  if pv == 0 or room >= pv then return 0 end
  local q = muldiv(room, period, pv)
  return period - q
end

-- Sliding window: state {start, current, previous}.
local function sliding(limit, period, s1, s2, s3, now, cost)
  if s1 > now then now = s1 end
  local start = now - fmod(now, period)
  local cur, prev = 0, 0
  if s1 == start then
    cur, prev = s2, s3
  elseif s1 + period == start then
    prev = s2
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
  -- A peek always passes, even when a clock behind the check that wrote the
  -- state finds more carried over than that check did.
  local x, allowed = cur, false
  if cost == 0 or (cost <= limit - cur and carried <= limit - cur - cost) then
    x, allowed = cur + cost, true
  end
  local free = limit - x - carried
  if free < 0 then free = 0 end
  local reset = 0
  if x > 0 then
    reset = start + 2 * period - now
  elseif prev > 0 then
    reset = start + period - now
  end
  if allowed then
    return true, limit, free, reset, 0, start + 2 * period, start, x, prev
  end
  local retry
  if cost > limit then
    retry = NEVER
  else
    local e = earliest(limit, period, cur, prev, cost)
    if e ~= nil and e < period then
      retry = start + e - now
    else
      retry = start + period + (earliest(limit, period, 0, cur, cost) or 0) - now
    end
  end
  return false, limit, free, reset, retry
end

-- Whether SET may keep a key's expiry (KEEPTTL: Redis >= 6.0; known from
-- Redis 7.0 on, which tells scripts its version).
local KEEPTTL = (redis.REDIS_VERSION_NUM or 0) >= 0x060000

-- Writes a state (its words) with the TTL until it is a fresh key's again;
-- s1, s2 are the words it replaces (0 for a missing key), r the rate's
-- longest reset (a token bucket's: the whole bucket, burst * interval).
-- A state already fresh (a refund all the way back) is deleted: dropping it
-- changes no decision. (Not under a test's time override, whose clock may go
-- back to before the state was fresh: there it is kept, as the Rust side
-- keeps it.)
local function store(key, code, fresh_at, n1, n2, n3, s1, s2, r)
  if fresh_at <= now and not overridden then
    redis.call('DEL', key)
    return
  end
  -- A token bucket's tat moves on every allowed check, so its expiry
  -- would be rewritten every time. Instead the key expires at the first
  -- line after its tat on a grid of g = min(bucket, 1 s) of server time,
  -- and the state is written "+tat" to say so ("+" is read as every
  -- version of this script reads a number: the same tat). A new tat on
  -- the same line as a "+" state's keeps the key's expiry (KEEPTTL,
  -- ~6,800 instructions fewer); any other (a tat crossing the line, or a
  -- state without the "+", whose expiry is only known to be at or after
  -- its own tat) gets a PX to its line. A key lives at most g longer than
  -- its state needs.
  if code == 't' and KEEPTTL and not overridden then
    local g = r
    if g > 1000000 then g = 1000000 end
    local line = n1 - fmod(n1, g) + g
    if s2 == 1 and s1 - fmod(s1, g) + g == line then
      redis.call('SET', key, format('+%d', n1), 'KEEPTTL')
    else
      redis.call('SET', key, format('+%d', n1), 'PX', format('%d', idiv(line - now + 999, 1000)))
    end
    return
  end
  -- A window's count written again in the window it was written in (same
  -- start, a count before and after) is fresh at the same time as before
  -- (start + period; a sliding window start + 2 * period), and every
  -- writer of a state gives it an expiry at or after that: the key's
  -- expiry stands, and SET ... KEEPTTL (~6,000 instructions) does without
  -- the PX (~6,800 more with formatting the TTL). Not under a time
  -- override, whose keys live a minute from each write.
  if code ~= 't' and s1 == n1 and s2 > 0 and n2 > 0 and KEEPTTL and not overridden then
    if code == 'f' then
      redis.call('SET', key, format('%d %d', n1, n2), 'KEEPTTL')
    else
      redis.call('SET', key, format('%d %d %d', n1, n2, n3), 'KEEPTTL')
    end
    return
  end
  -- Milliseconds until the state is a fresh key's, rounded up.
  local ttl = 1
  if fresh_at > now then ttl = idiv(fresh_at - now + 999, 1000) end
  if overridden and ttl < 60000 then ttl = 60000 end
  local text
  if code == 't' then
    text = format('%d', n1)
  elseif code == 'f' then
    text = format('%d %d', n1, n2)
  else
    text = format('%d %d %d', n1, n2, n3)
  end
  redis.call('SET', key, text, 'PX', format('%d', ttl))
end

-- The state of rate i's key: its words (0 when missing); a token bucket's
-- second word is 1 for a "+tat" (store: its expiry is on the grid).
local function load(key, code)
  local stored = redis.call('GET', key)
  if not stored then return 0, 0, 0 end
  if code == 't' then
    if byte(stored) == 43 then return stored + 0, 1, 0 end -- "+"
    return stored + 0, 0, 0
  end
  local a, b, c = match(stored, '^(%d+) (%d+) ?(%d*)')
  if code == 'f' then return a + 0, b + 0, 0 end
  return a + 0, b + 0, tonumber(c) or 0
end

-- The functions of several rates sharing one key (below the line, made on
-- the first call with several rates).
local pack, unpack, words, whole, fresh_of, store_all, append

-- One rate's check of `cost`: decide (code: "t", "f" or "s").
local function decide(code, limit, period, burst, interval, s1, s2, s3, cost)
  if code == 't' then return gcra(burst, interval, s1, now, cost) end
  if code == 'f' then return fixed(limit, period, s1, s2, now, cost) end
  return sliding(limit, period, s1, s2, s3, now, cost)
end

-- The reply of an allowed check as one integer (see the header), or nil
-- where it does not fit: rate i (1-based) of n, whose longest reset is r.
local function packed(i, n, remaining, reset, r)
  if reset > r then return nil end
  local v = (remaining * (r + 1) + reset) * n + (i - 1)
  -- Every partial result is at most v: all exact when v < 2^53, and v
  -- rounds to at least 2^53 when it is not.
  if v < TWO53 then return v end
  return nil
end

-- each call --
-- (Unset on every EVAL, and on the first call of a Function library.)
if tonumber == nil then
  fmod, floor, tonumber, format, match, byte, sub =
    math.fmod, math.floor, _G.tonumber, string.format, string.match, string.byte, string.sub
end
-- The number of rates (ARGV: the operation, three per rate, the time
-- override when given).
local nargs = #ARGV
local n = 1
if nargs > 5 then n = idiv(nargs - 1, 3) end
-- (A string becomes a number by arithmetic, `s + 0`, not by tonumber: both
-- are C's strtod, the same number, but Lua 5.1's tonumber runs it twice
-- (lua_isnumber, then lua_tonumber): a 16-digit `+ 0` costs ~1,300
-- instructions, tonumber ~1,000 more. The common cost of 1 is compared,
-- and each rate reads only the two numbers its algorithm uses.)
local op, amount = 'c', ARGV[1]
if amount == '1' then
  amount = 1
elseif byte(amount) == 97 then -- "a": an adjust
  op, amount = 'a', sub(amount, 2) + 0
else
  amount = amount + 0
end
local at = ARGV[2 + 3 * n]
overridden = at ~= nil
if overridden then
  now = at + 0
else
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end

-- The common case, one rate checked: decide, write if allowed, reply.
if n == 1 and op == 'c' then
  local code = ARGV[2]
  local s1, s2, s3 = load(KEYS[1], code)
  local x, y = ARGV[3] + 0, ARGV[4] + 0
  local allowed, lim, remaining, reset, retry, fresh_at, n1, n2, n3, r
  if code == 't' then
    allowed, lim, remaining, reset, retry, fresh_at, n1 = gcra(x, y, s1, now, amount)
    r = x * y
  elseif code == 'f' then
    allowed, lim, remaining, reset, retry, fresh_at, n1, n2 = fixed(x, y, s1, s2, now, amount)
    r = y
  else
    allowed, lim, remaining, reset, retry, fresh_at, n1, n2, n3 = sliding(x, y, s1, s2, s3, now, amount)
    r = 2 * y
  end
  if allowed then
    if amount > 0 then store(KEYS[1], code, fresh_at, n1, n2, n3, s1, s2, r) end
    local v = packed(1, 1, remaining, reset, r)
    if v then return v end
    return { 0, 1, lim, remaining, reset, 0 }
  end
  if retry == NEVER then retry = -1 end
  return { 0, 0, lim, remaining, reset, retry }
end

-- Several rates: the functions they use, made here once (FCALL: on the
-- first call with several rates after the library is loaded; EVAL, which
-- runs this file whole on every call: only on calls with several rates, so
-- that a one-rate check by EVALSHA does not make them).
if n > 1 and words == nil then
pack, unpack = struct.pack, struct.unpack

-- Several rates share one key: one GET and one SET per check, whatever
-- their number. Its state is a "+" (its expiry is on the grid: store_all)
-- or a "=" (it is not), then every rate's words in order, each an 8-byte
-- little-endian integer (struct.pack '<i8'), exact below 2^53: ~3,000
-- instructions fewer per rate than decimal words read with a match and
-- converted (bench/redis_cpu.sh). (A one-rate state stays decimal text,
-- as every build of this script has read and written it.)

-- Rate i's words in the state `stored`, from position pos: s1, s2, s3 (0
-- for a word its algorithm does not keep) and the position after them.
-- Each must be an integer 0 <= w < 2^53, as written; else the state is
-- damaged: an error, never a decision made from it.
words = function(stored, pos, code)
  local a, b, c, p = 0, 0, 0, nil
  if code == 't' then
    a, p = unpack('<i8', stored, pos)
  elseif code == 'f' then
    a, b, p = unpack('<i8i8', stored, pos)
  else
    a, b, c, p = unpack('<i8i8i8', stored, pos)
  end
  if a < 0 or a >= TWO53 or b < 0 or b >= TWO53 or c < 0 or c >= TWO53 then
    error('damaged rate-limit state')
  end
  return a, b, c, p
end

-- Whether the words read end at the end of the state, after a "+" or "=":
-- else it is damaged (as in words).
whole = function(stored, pos)
  local b = byte(stored)
  if pos ~= #stored + 1 or (b ~= 43 and b ~= 61) then error('damaged rate-limit state') end
end

-- The time from which a rate's words are a fresh key's (the fresh_at its
-- algorithm gives with them; 0: already fresh); y is the rate's period (a
-- window's). Read from the words alone, so that a later call knows the line
-- a "+" state's expiry is on without storing it.
fresh_of = function(code, y, s1, s2, s3)
  if code == 't' then return s1 end
  if s2 > 0 then
    if code == 'f' then return s1 + y end
    return s1 + 2 * y
  end
  if code == 's' and s3 > 0 then return s1 + y end
  return 0
end

-- Writes the state of several rates: `text` their words (led by "+" when
-- written on the grid), `fresh` the latest of their fresh times, `old_line`
-- the line the replaced state's expiry is on (nil: none known), g the grid
-- (min(longest reset of the rates, 1 s)). As a token bucket's (store), the
-- key expires at the first line of the grid after `fresh`, and keeps its
-- expiry while that line stays where it was (KEEPTTL): a busy key's expiry
-- is rewritten about once per g. A state that is already fresh (a refund
-- all the way back) is deleted. Without KEEPTTL, and under a test's time
-- override (keys live at least a minute), the expiry is `fresh` itself.
-- (Its SETs repeat store's: made shared functions above the line, they cost
-- every EVALSHA check 2,400-3,400 instructions more, to make them.)
store_all = function(key, text, fresh, old_line, g)
  if fresh <= now and not overridden then
    redis.call('DEL', key)
    return
  end
  if KEEPTTL and not overridden then
    local line = fresh - fmod(fresh, g) + g
    if line == old_line then
      redis.call('SET', key, text, 'KEEPTTL')
    else
      redis.call('SET', key, text, 'PX', format('%d', idiv(line - now + 999, 1000)))
    end
    return
  end
  local ttl = 1
  if fresh > now then ttl = idiv(fresh - now + 999, 1000) end
  if overridden and ttl < 60000 then ttl = 60000 end
  redis.call('SET', key, text, 'PX', format('%d', ttl))
end

-- A rate's words appended to the state `text` being written.
append = function(text, code, n1, n2, n3)
  if code == 't' then return text .. pack('<i8', n1) end
  if code == 'f' then return text .. pack('<i8i8', n1, n2) end
  return text .. pack('<i8i8i8', n1, n2, n3)
end

end -- of the functions of several rates

-- Several rates checked: decide each as the one-rate check does, from the
-- one key they share; write them all if all allowed, reply for the deciding
-- rate (algorithm::check_all: a denial decides before any allowance; among
-- allowances the least remaining, among denials the longest retry; ties go
-- to the first).
if op == 'c' then
  local key = KEYS[1]
  local stored = redis.call('GET', key)
  local marked = stored and byte(stored) == 43 -- "+"
  local pos = 2
  local text = '+'
  if overridden or not KEEPTTL then text = '=' end
  local best, best_allowed, best_limit, best_remaining, best_reset, best_retry, best_r
  local all_allowed = true
  -- The latest fresh time of the stored state (when "+") and of the one to
  -- write, and the longest of the rates' longest resets.
  local old_fresh, fresh, longest = 0, 0, 0
  for i = 1, n do
    local a = 3 * i - 1
    local code = ARGV[a]
    local s1, s2, s3 = 0, 0, 0
    if stored then s1, s2, s3, pos = words(stored, pos, code) end
    local x, y = ARGV[a + 1] + 0, ARGV[a + 2] + 0
    local allowed, lim, remaining, reset, retry, fresh_at, n1, n2, n3, r
    if code == 't' then
      allowed, lim, remaining, reset, retry, fresh_at, n1 = gcra(x, y, s1, now, amount)
      r = x * y
    elseif code == 'f' then
      allowed, lim, remaining, reset, retry, fresh_at, n1, n2 = fixed(x, y, s1, s2, now, amount)
      r = y
    else
      allowed, lim, remaining, reset, retry, fresh_at, n1, n2, n3 = sliding(x, y, s1, s2, s3, now, amount)
      r = 2 * y
    end
    if r > longest then longest = r end
    if marked then
      local f = s1 -- (fresh_of, for a token bucket)
      if code ~= 't' then f = fresh_of(code, y, s1, s2, s3) end
      if f > old_fresh then old_fresh = f end
    end
    if allowed then
      if all_allowed and amount > 0 then
        text = append(text, code, n1, n2, n3)
        -- (fresh_of the words written, the algorithm's fresh_at by another
        -- road: the line must be the one a later call reads from them.)
        local f = n1
        if code ~= 't' then f = fresh_of(code, y, n1, n2, n3) end
        if f > fresh then fresh = f end
      end
      if best == nil or (best_allowed and remaining < best_remaining) then
        best, best_allowed, best_limit, best_remaining, best_reset, best_retry, best_r =
          i, true, lim, remaining, reset, 0, r
      end
    else
      all_allowed = false
      if best == nil or best_allowed or retry > best_retry then
        best, best_allowed, best_limit, best_remaining, best_reset, best_retry =
          i, false, lim, remaining, reset, retry
      end
    end
  end
  if stored then whole(stored, pos) end
  if not all_allowed then
    if best_retry == NEVER then best_retry = -1 end
    return { best - 1, 0, best_limit, best_remaining, best_reset, best_retry }
  end
  if amount > 0 then
    local g = longest
    if g > 1000000 then g = 1000000 end
    local old_line
    if marked then old_line = old_fresh - fmod(old_fresh, g) + g end
    store_all(key, text, fresh, old_line, g)
  end
  local v = packed(best, n, best_remaining, best_reset, best_r)
  if v then return v end
  return { best - 1, 1, best_limit, best_remaining, best_reset, 0 }
end

-- Below: an adjust. The functions only an adjust uses are made here, so
-- only for an adjust: each function made below the line is a new closure
-- on every call. (Above it they would be made once by FCALL, but on every
-- call by EVALSHA, checks included.)
local moved, adjust_gcra, adjust_fixed, adjust_sliding
do

-- A count moved by delta: a charge up to MAX_COUNT (never below where it
-- was), a refund down to none.
moved = function(count, delta)
  if delta >= 0 then
    if delta >= MAX_COUNT - count then
      if count > MAX_COUNT then return count end
      return MAX_COUNT
    end
    return count + delta
  end
  if -delta >= count then return 0 end
  return count + delta
end

-- Adjusts (gcra.rs, fixed_window.rs, sliding_window.rs `adjust`): the time
-- from which the new state is a fresh key's (nil: the state is unchanged)
-- and the new state's words.
adjust_gcra = function(interval, tat, now, delta)
  if delta >= 0 then
    local base = tat
    if base < now then base = now end
    local ticks = delta * interval -- inexact above 2^53, but then above MAX_AHEAD too
    local new = now + MAX_AHEAD
    if ticks < new - base then new = base + ticks end
    if new <= tat then return nil end -- already as far as a debt goes
    return new, new
  end
  if tat <= now then return nil end -- already fresh
  local ticks = -delta * interval
  if ticks >= tat - now then return now, now end
  return tat - ticks, tat - ticks
end

adjust_fixed = function(period, s1, s2, now, delta)
  if s1 > now then now = s1 end
  local start = now - fmod(now, period)
  local used = 0
  if s1 == start then used = s2 end
  local n = moved(used, delta)
  if n == used then return nil end
  if n == 0 then return 0, start, 0 end
  return start + period, start, n
end

adjust_sliding = function(period, s1, s2, s3, now, delta)
  if s1 > now then now = s1 end
  local start = now - fmod(now, period)
  local cur, prev = 0, 0
  if s1 == start then
    cur, prev = s2, s3
  elseif s1 + period == start then
    prev = s2
  end
  local n = moved(cur, delta)
  if n == cur then return nil end
  local fresh = 0
  if n > 0 then
    fresh = start + 2 * period
  elseif prev > 0 then
    fresh = start + period
  end
  return fresh, start, n, prev
end

end -- of the adjust's functions

-- Every rate settles the delta; the reply is for the rate a check of cost 1
-- would be decided by, as chosen above. One rate is read and written as the
-- one-rate check does (load, store), several as theirs (words, store_all).
local key = KEYS[1]
local stored, pos, marked, text, changed
if n > 1 then
  stored = redis.call('GET', key)
  marked, pos = stored and byte(stored) == 43, 2 -- "+"
  text, changed = '+', false
  if overridden or not KEEPTTL then text = '=' end
end
local old_fresh, fresh, longest = 0, 0, 0
local best, best_allowed, best_limit, best_remaining, best_reset, best_retry
for i = 1, n do
  local a = 2 + 3 * (i - 1)
  local code = ARGV[a]
  local limit, period, burst, interval, r = 0, 0, 0, 0, 0
  if code == 't' then
    burst, interval = ARGV[a + 1] + 0, ARGV[a + 2] + 0
    r = burst * interval
  else
    limit, period = ARGV[a + 1] + 0, ARGV[a + 2] + 0
    r = period
    if code == 's' then r = 2 * period end
  end
  local s1, s2, s3 = 0, 0, 0
  if n == 1 then
    s1, s2, s3 = load(key, code)
  elseif stored then
    s1, s2, s3, pos = words(stored, pos, code)
  end
  if marked then
    local f = fresh_of(code, period, s1, s2, s3)
    if f > old_fresh then old_fresh = f end
  end
  if amount ~= 0 then
    local fresh_at, n1, n2, n3
    if code == 't' then
      fresh_at, n1 = adjust_gcra(interval, s1, now, amount)
    elseif code == 'f' then
      fresh_at, n1, n2 = adjust_fixed(period, s1, s2, now, amount)
    else
      fresh_at, n1, n2, n3 = adjust_sliding(period, s1, s2, s3, now, amount)
    end
    if fresh_at ~= nil then
      if n == 1 then store(key, code, fresh_at, n1, n2, n3, s1, s2, r) end
      s1, s2, s3 = n1, n2 or 0, n3 or 0
      changed = true
    end
  end
  if n > 1 then
    text = append(text, code, s1, s2, s3)
    local f = fresh_of(code, period, s1, s2, s3)
    if f > fresh then fresh = f end
    if r > longest then longest = r end
  end
  local _, lim, remaining, reset = decide(code, limit, period, burst, interval, s1, s2, s3, 0)
  local allowed, _, _, _, retry = decide(code, limit, period, burst, interval, s1, s2, s3, 1)
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
end
if stored then whole(stored, pos) end
if n > 1 and changed then
  local g = longest
  if g > 1000000 then g = 1000000 end
  local old_line
  if marked then old_line = old_fresh - fmod(old_fresh, g) + g end
  store_all(key, text, fresh, old_line, g)
end

if best_retry == NEVER then best_retry = -1 end
local allowed_flag = 0
if best_allowed then allowed_flag = 1 end
return { best - 1, allowed_flag, best_limit, best_remaining, best_reset, best_retry }
