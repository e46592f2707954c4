"""make bench-python: what a rate-limit check costs a Python service.

1. Per check, from Python, no HTTP: libratelimit (memory, shm, redis), the
   `limits` package (MemoryStorage and RedisStorage, moving window and fixed
   window) and slowapi's path (its Limiter._check_request_limit, what its
   middleware calls for each request, with a Starlette Request and a view
   function; memory and Redis storage). Every limit allows every check
   (10^9 per hour); keys rotate over 10 000 client addresses.
2. Requests/s of one FastAPI route under `uvicorn --workers 4`: our
   RateLimitMiddleware (backend=shm), slowapi's SlowAPIMiddleware (Redis)
   and no limiter, each under the same wrk run.

The host is small and noisy: the cases of each part run interleaved, round
after round, and the table gives the median over rounds and the spread
(min-max); BENCHMARKS.md ("Python") holds a run and what it says. Run
under scripts/with_redis.sh (RL_TEST_REDIS_URL).
BENCH_ROUNDS (5), BENCH_HTTP_ROUNDS (3), BENCH_HTTP_SECONDS (8).
"""

import asyncio
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import libratelimit

HERE = os.path.dirname(os.path.abspath(__file__))
REDIS = os.environ["RL_TEST_REDIS_URL"]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
HTTP_ROUNDS = int(os.environ.get("BENCH_HTTP_ROUNDS", "3"))
HTTP_SECONDS = int(os.environ.get("BENCH_HTTP_SECONDS", "8"))
KEYS = [f"10.0.{i // 256}.{i % 256}" for i in range(10_000)]
BIG = 1_000_000_000
SHM_NAMES = [f"/rl-pybench-{os.getpid()}-{i}" for i in range(2)]


# ---- part 1: per check --------------------------------------------------------


def libratelimit_case(config):
    lim = libratelimit.Limiter(config)
    check = lim.check

    def run(n, keys=KEYS):
        for i in range(n):
            check(keys[i % 10_000])

    return run


def limits_case(strategy, storage_uri):
    from limits import RateLimitItemPerHour, storage, strategies

    options = {} if storage_uri.startswith("memory") else {"key_prefix": f"bench-{strategy}-{os.getpid()}"}
    st = storage.storage_from_string(storage_uri, **options)
    limiter = {"moving": strategies.MovingWindowRateLimiter, "fixed": strategies.FixedWindowRateLimiter}[strategy](st)
    item = RateLimitItemPerHour(BIG)
    hit = limiter.hit

    def run(n, keys=KEYS):
        for i in range(n):
            hit(item, keys[i % 10_000])

    return run


def slowapi_case(storage_uri):
    from slowapi import Limiter
    from slowapi.util import get_remote_address
    from starlette.requests import Request

    limiter = Limiter(key_func=get_remote_address, default_limits=[f"{BIG}/hour"], storage_uri=storage_uri)

    def view():  # the route's function, which names the limit's scope
        return None

    requests = [
        Request({"type": "http", "method": "GET", "path": "/", "headers": [], "client": (k, 1234),
                 "query_string": b"", "app": None})
        for k in KEYS
    ]
    check = limiter._check_request_limit

    def run(n):
        for i in range(n):
            check(requests[i % 10_000], view, True)

    return run


CASES = [
    ("libratelimit memory", lambda: libratelimit_case(f"rate={BIG}/hour capacity=400000")),
    ("libratelimit shm", lambda: libratelimit_case(f"rate={BIG}/hour capacity=400000 backend=shm name={SHM_NAMES[0]}")),
    ("libratelimit redis", lambda: libratelimit_case(f"rate={BIG}/hour backend=redis url={REDIS} prefix=bench:{os.getpid()}:")),
    ("limits memory, moving window", lambda: limits_case("moving", "memory://")),
    ("limits memory, fixed window", lambda: limits_case("fixed", "memory://")),
    ("limits redis, moving window", lambda: limits_case("moving", REDIS)),
    ("limits redis, fixed window", lambda: limits_case("fixed", REDIS)),
    ("slowapi check, memory", lambda: slowapi_case("memory://")),
    ("slowapi check, redis", lambda: slowapi_case(REDIS)),
]


def per_check():
    runs = {name: make() for name, make in CASES}
    for run in runs.values():  # warm up: connections, scripts, the 10 000 keys
        run(10_000)
    results = {name: [] for name in runs}
    for r in range(ROUNDS):
        for name, run in runs.items():
            n, elapsed = 1000, 0.0
            while True:  # at least 0.25 s of checks
                t0 = time.perf_counter()
                run(n)
                elapsed = time.perf_counter() - t0
                if elapsed >= 0.25:
                    break
                n = int(n * max(2.0, 0.3 / max(elapsed, 1e-6)))
            results[name].append(elapsed / n * 1e9)
        print(f"per-check round {r + 1}/{ROUNDS} done", file=sys.stderr, flush=True)
    return results


# ---- part 2: HTTP ---------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(app, port):
    log = tempfile.NamedTemporaryFile("w+", prefix=f"rl-pybench-{app}-", suffix=".log")
    env = dict(os.environ, BENCH_APP=app, BENCH_SHM_NAME=SHM_NAMES[1], BENCH_REDIS_URL=REDIS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"apps:{app}", "--workers", "4", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "info"],
        cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log.flush()
        if open(log.name).read().count("Application startup complete") >= 4:
            return proc, log
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    stop(proc, log)
    raise SystemExit(f"{app} did not start:\n{open(log.name).read()}")


def stop(proc, log):
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    log.close()


WRK = ["wrk", "-t2", "-c64", f"-d{HTTP_SECONDS}s", "--latency"]


def wrk(port):
    out = subprocess.run(WRK + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         timeout=HTTP_SECONDS + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return rps, p99_ms, int(bad.group(1)) if bad else 0, errors.group(0) if errors else ""


HTTP_APPS = [("libratelimit middleware, shm", "libratelimit_shm"), ("slowapi middleware, Redis", "slowapi_redis"),
             ("no limiter", "unlimited")]


def http():
    servers = {}
    try:
        for _, app in HTTP_APPS:
            port = free_port()
            servers[app] = (port,) + start(app, port)
        for _, app in HTTP_APPS:  # warm up
            subprocess.run(["wrk", "-t2", "-c64", "-d2s", f"http://127.0.0.1:{servers[app][0]}/"],
                           capture_output=True, timeout=60)
        results = {app: [] for _, app in HTTP_APPS}
        for r in range(HTTP_ROUNDS):
            for _, app in HTTP_APPS:
                rps, p99, bad, errors = wrk(servers[app][0])
                if bad:
                    raise SystemExit(f"{app}: {bad} non-2xx answers under wrk: the limit must allow all")
                results[app].append((rps, p99))
            print(f"HTTP round {r + 1}/{HTTP_ROUNDS} done", file=sys.stderr, flush=True)
        return results
    finally:
        for port, proc, log in servers.values():
            stop(proc, log)


# ---- report -----------------------------------------------------------------------


def spread(xs, fmt):
    return f"{fmt(min(xs))}–{fmt(max(xs))}"


def main():
    load_before = os.getloadavg()[0]
    try:
        checks = per_check()
        web = http()
    finally:
        for name in SHM_NAMES:
            try:
                libratelimit.shm_unlink(name)
            except libratelimit.SharedMemoryError:
                pass
    lines = ["| per check, from Python | median ns | spread (min–max) |", "| --- | ---: | ---: |"]
    for name, xs in checks.items():
        lines.append(f"| {name} | {statistics.median(xs):,.0f} | {spread(xs, lambda v: f'{v:,.0f}')} |")
    lines += ["", f"| FastAPI, uvicorn --workers 4, `{' '.join(WRK)}` | median req/s | spread | median p99 ms |",
              "| --- | ---: | ---: | ---: |"]
    for label, app in HTTP_APPS:
        rps = [x[0] for x in web[app]]
        p99 = [x[1] for x in web[app]]
        lines.append(f"| {label} | {statistics.median(rps):,.0f} | {spread(rps, lambda v: f'{v:,.0f}')} | "
                     f"{statistics.median(p99):.1f} |")
    table = "\n".join(lines)
    versions = []
    for pkg in ("limits", "slowapi", "fastapi", "uvicorn", "redis"):
        from importlib.metadata import version

        versions.append(f"{pkg} {version(pkg)}")
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    print(f"{time.strftime('%Y-%m-%d')}: {os.cpu_count()} vCPUs, {platform.platform()}, "
          f"Python {platform.python_version()}, libratelimit {libratelimit.version()}, "
          f"{', '.join(versions)}, {' '.join(redis_version[:3])}; load average "
          f"{load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after\n")
    print(table)


if __name__ == "__main__":
    main()
