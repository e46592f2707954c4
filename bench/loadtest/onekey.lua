-- onekey.lua — one key, every response counted: the legitimate user and the
-- abusive key of phase 2 of scripts/loadtest.sh.
--
--   wrk -t1 -c1 -d S -s bench/loadtest/onekey.lua URL -- KEY DELAY_MS
--
-- Every request carries "X-API-Key: KEY". DELAY_MS > 0 paces the client:
-- wrk waits DELAY_MS after each response before it sends the next request,
-- so one connection sends at most 1000/DELAY_MS requests per second (less
-- by the round trip). DELAY_MS 0 sends as fast as the server answers.
--
-- done() prints "RESULT key=KEY responses=N ok=N limited=N other=N
-- socket_errors=N timeouts=N duration_us=N p99_us=N max_us=N", the counts
-- summed over threads; the latencies are wrk's (from sending a request to
-- the end of its response; requests answered within wrk's --timeout only).

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   wrk.headers["X-API-Key"] = args[1]
   local ms = tonumber(args[2]) or 0
   if ms > 0 then
      -- defined only when pacing: wrk schedules every request through a
      -- timer once the script has a delay() at all
      delay = function()
         return ms
      end
   end
   ok, limited, other = 0, 0, 0
end

function response(status, headers, body)
   if status == 200 then
      ok = ok + 1
   elseif status == 429 then
      limited = limited + 1
   else
      other = other + 1
   end
end

function done(summary, latency, requests)
   local o, l, x = 0, 0, 0
   for _, t in ipairs(threads) do
      o, l, x = o + t:get("ok"), l + t:get("limited"), x + t:get("other")
   end
   local e = summary.errors
   io.write(string.format("RESULT key=%s responses=%d ok=%d limited=%d other=%d socket_errors=%d timeouts=%d duration_us=%d p99_us=%d max_us=%d\n",
      wrk.headers["X-API-Key"] or "?", o + l + x, o, l, x, e.connect + e.read + e.write, e.timeout, summary.duration,
      latency:percentile(99), latency.max))
end
