#!/usr/bin/env python3
"""nginx with our module against nginx's own limit_req, side by side:
bench/nginx.py MODULE.so (run by `make bench-nginx`, under
scripts/with_redis.sh for the redis row).

Four nginx instances run at once, each with 2 workers, serving one small
static file: no limiter, limit_req, a ratelimit shm zone and a ratelimit
redis zone, with rates no request reaches (every request is allowed and
counted). wrk (Debian's package, installed as root when missing) loads
each in turn, interleaved, REPS times per case, 2 threads and 32
connections for SECONDS each; the table gives the median requests/s and
the median p99 latency. Cases: every request on one key ("hot key"), and
round-robin over 100,000 keys ("100k keys"). Env: REPS (5), SECONDS (4).
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "nginx"))
import harness  # noqa: E402

MODULE = os.path.abspath(sys.argv[1])
REPS = int(os.environ.get("REPS", "5"))
SECONDS = int(os.environ.get("SECONDS_EACH", os.environ.get("SECONDS", "4")))
REDIS = os.environ.get("RL_TEST_REDIS_URL")
RUN = "rlbench%d" % os.getpid()

SERVER = """
    server {{
        listen 127.0.0.1:{{port}};
        location / {{
            {limit}
            root {{html}};
        }}
    }}"""

LIMITERS = [
    ("no limiter", "", ""),
    ("limit_req", "limit_req_zone $http_x_api_key zone=lr:64m rate=1000000r/s;",
     "limit_req zone=lr burst=1000 nodelay;"),
    ("ratelimit shm", f'ratelimit_zone rl "rate=1000000000/minute backend=shm '
     f'name=/{RUN}-shm capacity=200000";', "ratelimit zone=rl key=$http_x_api_key;"),
]
if REDIS:
    LIMITERS.append(("ratelimit redis", f'ratelimit_zone rl "rate=50000000/minute '
                     f'backend=redis url={REDIS} prefix={RUN}:";',
                     "ratelimit zone=rl key=$http_x_api_key;"))

SCRIPTS = {
    "hot key": 'wrk.headers["X-Api-Key"] = "api-key-00000000"\n',
    "100k keys": """counter = 0
request = function()
    counter = counter + 1
    return wrk.format(nil, nil, {["X-Api-Key"] = string.format("api-key-%08d", counter % 100000)})
end
""",
}


def wrk(port, script):
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{SECONDS}s", "--latency", "-s", script,
         f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=SECONDS + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert non2xx is None, f"denied or failed requests in a bench run: {out}"
    return rps, ms


def main():
    if subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode != 0:
        subprocess.run(["sh", "-c", ". scripts/need_package.sh; need_package wrk wrk"], check=True)
    tmp = tempfile.mkdtemp()
    scripts = {}
    for case, text in SCRIPTS.items():
        path = os.path.join(tmp, case.replace(" ", "_") + ".lua")
        with open(path, "w") as f:
            f.write(text)
        scripts[case] = path
    servers = {}
    try:
        for name, zone, limit in LIMITERS:
            servers[name] = harness.Nginx(MODULE, zone + SERVER.format(limit=limit), workers=2).start()
        results = {(n, c): [] for n in servers for c in scripts}
        for rep in range(REPS):
            for case, script in scripts.items():
                for name, ngx in servers.items():
                    results[(name, case)].append(wrk(ngx.port, script))
            print(f"nginx bench: repetition {rep + 1} of {REPS} done", file=sys.stderr)
        print(f"\n{subprocess.run(['nginx', '-v'], capture_output=True, text=True).stderr.strip()}"
              f", 2 workers each; wrk -t2 -c32 -d{SECONDS}s; median of {REPS} interleaved runs\n")
        print("| limiter | case | requests/s | vs limit_req | p99 (ms) | runs (req/s) |")
        print("| --- | --- | ---: | ---: | ---: | --- |")
        for case in scripts:
            base = statistics.median(r for r, _ in results[("limit_req", case)])
            for name in servers:
                runs = results[(name, case)]
                rps = statistics.median(r for r, _ in runs)
                p99 = statistics.median(p for _, p in runs)
                spread = ", ".join(f"{r:.0f}" for r, _ in runs)
                print(f"| {name} | {case} | {rps:.0f} | {rps / base:.2f}x | {p99:.2f} | {spread} |")
    finally:
        for ngx in servers.values():
            ngx.stop()
        for name in os.listdir("/dev/shm"):
            if name.startswith(RUN):
                os.unlink(os.path.join("/dev/shm", name))


if __name__ == "__main__":
    main()
