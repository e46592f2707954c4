-- keys.lua — many keys in rotation, as lightly as wrk allows: the flood of
-- phase 2 and the throughput runs of phase 3 of scripts/loadtest.sh.
--
--   wrk -t T -c C -d S -s bench/loadtest/keys.lua URL -- PREFIX KEYS
--
-- Each thread sends "X-API-Key: PREFIX<n>" for n = 1..KEYS in turn (each
-- thread from its own starting point), the requests formatted once in
-- init(). There is no response() callback, so wrk does not hand each
-- response to Lua: the client costs what plain wrk costs, and the share of
-- denials comes from wrk's own count of non-2xx/3xx responses.
--
-- done() prints "RESULT requests=N duration_us=N rps=N p50_us=N p99_us=N
-- non2xx=N socket_errors=N timeouts=N".

local nthreads = 0

function setup(thread)
   thread:set("id", nthreads)
   nthreads = nthreads + 1
end

function init(args)
   local prefix = args[1]
   nkeys = tonumber(args[2])
   requests = {}
   for k = 1, nkeys do
      requests[k] = wrk.format("GET", "/", { ["X-API-Key"] = prefix .. k })
   end
   n = (id * 7919) % nkeys
end

function request()
   n = n % nkeys + 1
   return requests[n]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format("RESULT requests=%d duration_us=%d rps=%.0f p50_us=%d p99_us=%d non2xx=%d socket_errors=%d timeouts=%d\n",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(99), e.status,
      e.connect + e.read + e.write, e.timeout))
end
