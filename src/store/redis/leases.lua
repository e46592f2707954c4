-- libratelimit: one operation on one key of a concurrency limiter
-- (`concurrency=N lease=DURATION`), in one round trip, on the server's TIME.
-- src/algorithm/leases.rs is the same idea for memory and shm.
--
-- KEYS[1]  the key's leases: a sorted set, member = lease id (a nonzero
--          decimal u64, made by the client, unique per handle), score = the
--          lease's expiry in µs since the epoch (server time). A lease is
--          held while its expiry lies ahead of now. The set is PEXPIRE'd to
--          its latest expiry: it never outlives its leases.
-- ARGV[1]  the operation: "a" acquire, "r" renew, "x" release
-- ARGV[2]  the lease length in µs (at most 2^50)
-- ARGV[3]  acquire: N, the most leases held at once
-- ARGV[4]  acquire: the new lease's id; renew, release: the lease's id
--
-- Replies:
--   acquire  { allowed (1/0), limit N, remaining (free places after),
--              reset_us (until every lease has expired; 0 if none is held),
--              retry_after_us (denied: until the earliest expires; else 0) }
--            or { -1 } if the id is already a member (two handles drew the
--            same 64-bit id: the caller takes another and asks again)
--   renew    1 if the lease was held (it now expires lease µs from now),
--            0 if it had expired, was released or never existed (an expired
--            one is removed)
--   release  1 if the lease was held, 0 otherwise (an expired one is
--            removed all the same)

local op = ARGV[1]
local lease = tonumber(ARGV[2])
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- Keeps the set until its latest lease expires (ms, rounded up).
local function expire_at_latest()
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    local ms = math.floor((tonumber(last[2]) - now + 999) / 1000)
    if ms < 1 then ms = 1 end
    redis.call('PEXPIRE', key, string.format('%.0f', ms))
  end
end

if op == 'a' then
  local slots = tonumber(ARGV[3])
  -- Expired leases free their places (score <= now: not held).
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now))
  local held = redis.call('ZCARD', key)
  local allowed = 0
  if held < slots then
    if redis.call('ZADD', key, 'NX', string.format('%.0f', now + lease), ARGV[4]) == 0 then
      return { -1 }
    end
    held = held + 1
    allowed = 1
    expire_at_latest()
  end
  local reset, retry = 0, 0
  if held > 0 then
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    reset = tonumber(last[2]) - now
    if allowed == 0 then
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      retry = tonumber(first[2]) - now
    end
  end
  return { allowed, slots, slots - held, reset, retry }
end

local score = redis.call('ZSCORE', key, ARGV[4])
if not score then return 0 end
local was_held = tonumber(score) > now
if op == 'r' and was_held then
  redis.call('ZADD', key, 'XX', string.format('%.0f', now + lease), ARGV[4])
  expire_at_latest()
  return 1
end
redis.call('ZREM', key, ARGV[4])
if was_held then return 1 end
return 0
