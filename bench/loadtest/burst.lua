-- burst.lua — phase 1 of scripts/loadtest.sh: many keys at once, each sent
-- a known number of requests, and every response counted per key.
--
--   wrk -t T -c T -d CAP -s bench/loadtest/burst.lua URL -- PREFIX KEYS ROUNDS T DONEDIR
--
-- Each of the T threads has ONE connection (-c equal to -t), so its responses
-- come back in the order of its requests: the key of the request in flight
-- (keys[next]) is the key of the response that arrives, and only then does
-- the thread move on to the next key. Thread i walks keys PREFIX0001..KEYS
-- ROUNDS times, starting at key i*KEYS/T, so every key is hit by every thread
-- (every connection, so every worker of a pre-forked server) at once.
-- After KEYS*ROUNDS responses a thread stops and writes DONEDIR/done-i, for
-- the script to end wrk early (wrk otherwise runs the whole -d).
--
-- done() prints one line per key, "KEY name ok=N limited=N other=N", summed
-- over the threads, then "RESULT responses=N ok=N limited=N other=N
-- socket_errors=N unfinished=N" (unfinished: threads that did not get all
-- their responses before wrk stopped).
--
-- A response is counted when it arrives: a request whose connection broke
-- before its answer is sent again (wrk reconnects) and not counted twice.
--
-- The counts are plain numbers in globals (ok_N, limited_N, other_N for key
-- N), because that is all wrk 4.1's thread:get() copies safely: it pops one
-- value too many after copying a table, and crashes on nested ones.

local threads = {}
local nthreads = 0

function setup(thread)
   thread:set("id", nthreads)
   nthreads = nthreads + 1
   table.insert(threads, thread)
end

function init(args)
   prefix = args[1]
   nkeys = tonumber(args[2])
   rounds = tonumber(args[3])
   local total_threads = tonumber(args[4])
   donedir = args[5]
   requests, ok_name, limited_name, other_name = {}, {}, {}, {}
   for k = 1, nkeys do
      requests[k] = wrk.format("GET", "/", { ["X-API-Key"] = key_name(k) })
      ok_name[k], limited_name[k], other_name[k] = "ok_" .. k, "limited_" .. k, "other_" .. k
      _G[ok_name[k]], _G[limited_name[k]], _G[other_name[k]] = 0, 0, 0
   end
   start = math.floor(id * nkeys / total_threads)
   planned = nkeys * rounds
   got = 0          -- responses so far
   finished = 0     -- 1 once all planned responses came
end

function key_name(k)
   return string.format("%s%04d", prefix, k)
end

local function current()
   return (start + got) % nkeys + 1
end

-- Called for every request this thread sends (and once more on thread 0
-- before the run, by wrk itself, to see whether the script pipelines: which
-- is why the position moves on in response(), not here).
function request()
   return requests[current()]
end

function response(status, headers, body)
   if finished == 1 then
      return
   end
   local k = current()
   local name
   if status == 200 then
      name = ok_name[k]
   elseif status == 429 then
      name = limited_name[k]
   else
      name = other_name[k]
   end
   _G[name] = _G[name] + 1
   got = got + 1
   if got >= planned then
      finished = 1
      local f = io.open(donedir .. "/done-" .. id, "w")
      if f then
         f:close()
      end
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   -- done() runs in wrk's main Lua state, where init() never ran
   nkeys, prefix = threads[1]:get("nkeys"), threads[1]:get("prefix")
   local unfinished = 0
   local ok, limited, other = 0, 0, 0
   local o, l, x = {}, {}, {}
   for k = 1, nkeys do
      o[k], l[k], x[k] = 0, 0, 0
   end
   for _, t in ipairs(threads) do
      for k = 1, nkeys do
         o[k] = o[k] + t:get("ok_" .. k)
         l[k] = l[k] + t:get("limited_" .. k)
         x[k] = x[k] + t:get("other_" .. k)
      end
      if t:get("finished") ~= 1 then
         unfinished = unfinished + 1
      end
   end
   for k = 1, nkeys do
      io.write(string.format("KEY %s ok=%d limited=%d other=%d\n", key_name(k), o[k], l[k], x[k]))
      ok, limited, other = ok + o[k], limited + l[k], other + x[k]
   end
   local e = summary.errors
   io.write(string.format("RESULT responses=%d ok=%d limited=%d other=%d socket_errors=%d unfinished=%d\n",
      ok + limited + other, ok, limited, other, e.connect + e.read + e.write + e.timeout, unfinished))
end
