#!/usr/bin/env python3
"""The nginx module in a real nginx: tests/nginx/test_nginx.py MODULE.so

Starts the distribution's nginx (master and workers, on loopback ports from
the kernel) with the module loaded, drives it over HTTP, and stops it, for
each case below. Needs Redis for the cases marked so: RL_TEST_REDIS_URL
(scripts/with_redis.sh); without it they fail, they are not skipped.
Standard library only. Every wait is bounded; the whole run takes about a
minute. Prints one line per case; exits 1 if any failed.

    python3 tests/nginx/test_nginx.py build/nginx/ngx_http_ratelimit_module.so [CASE...]
"""

import concurrent.futures
import contextlib
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MODULE = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else None
ONLY = sys.argv[2:]
# Region names of this run (removed at the end, whatever happens).
RUN = "ngxt%d" % os.getpid()


def Nginx(http_body, workers=4, extra_main=""):
    return harness.Nginx(MODULE, http_body, workers, extra_main)


def shm_zone(tag, rate):
    return f'"rate={rate} backend=shm name=/{RUN}-{tag}"'


def location(zone_line, extra=""):
    return f"""
    server {{
        listen 127.0.0.1:{{port}};
        add_header X-Pid $pid always;
        location / {{
            {zone_line}
            {extra}
            root {{html}};
        }}
        location /free {{
            alias {{html}}/;
        }}
    }}"""


CASES = []


def case(f):
    CASES.append(f)
    return f


def run(ngx, body):
    """Runs `body(ngx)` on a started nginx, stopping it whatever happens."""
    try:
        ngx.start()
        body(ngx)
    finally:
        ngx.stop()


@case
def exact_quota_across_four_workers():
    ngx = Nginx(f"ratelimit_zone api {shm_zone('exact', '20/hour')};"
                + location("ratelimit zone=api key=$http_x_api_key;"))

    def body(ngx):
        pids = set()
        lock = threading.Lock()

        def one(_):
            s, h, _, _ = ngx.get("/", {"X-Api-Key": "k"})
            with lock:
                pids.add(h.get("X-Pid"))
            return s
        with concurrent.futures.ThreadPoolExecutor(48) as ex:
            statuses = list(ex.map(one, range(60)))
        assert statuses.count(200) == 20, statuses
        assert statuses.count(429) == 40, statuses
        assert len(pids) >= 2, f"all 60 requests went to one worker: {pids}"
    run(ngx, body)


@case
def a_killed_worker_loses_nothing():
    ngx = Nginx(f"ratelimit_zone api {shm_zone('kill', '400/hour')};"
                + location("ratelimit zone=api key=$http_x_api_key;"))

    def body(ngx):
        victim = ngx.worker_pids()[0]
        statuses = []

        ended = []

        def load():
            statuses.extend(ngx.many(600, 16, "/", {"X-Api-Key": "k"}))
            ended.append(time.monotonic())
        t = threading.Thread(target=load)
        t.start()
        time.sleep(0.1)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        t.join(60)
        assert not t.is_alive()
        assert ended[0] > killed_at + 0.05, "the load was over before the kill"
        failed = statuses.count(None)
        ok = statuses.count(200)
        # The master replaced the worker; the zone still answers, exactly:
        # every unit taken was answered, but those of requests the dead
        # worker had checked and not yet answered.
        deadline = time.monotonic() + 10
        while len(ngx.worker_pids()) != 4 or victim in ngx.worker_pids():
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.05)
        more = ngx.many(400, 16, "/", {"X-Api-Key": "k"})
        assert None not in more, more
        total = ok + more.count(200)
        assert 400 - failed <= total <= 400, (ok, failed, more.count(200))
        print(f"      (killed worker {victim} during the load: {ok} served, {failed} cut off, "
              f"then {more.count(200)} served)", flush=True)
        s, h, _, took = ngx.get("/", {"X-Api-Key": "other"})
        assert s == 200 and took < 1, (s, took)
    run(ngx, body)


@case
def reload_keeps_an_unchanged_zone_and_applies_a_changed_one():
    zone = lambda rate: f"ratelimit_zone api {shm_zone('reload', rate)};"
    loc = location("ratelimit zone=api key=$http_x_api_key;")
    ngx = Nginx(zone("5/hour") + loc)

    def body(ngx):
        assert ngx.many(5, 1, "/", {"X-Api-Key": "k"}) == [200] * 5
        ngx.reload()
        s, h, _, _ = ngx.get("/", {"X-Api-Key": "k"})
        assert s == 429, "an unchanged zone lost its state on reload"
        ngx.write(zone("8/hour") + loc)
        ngx.reload()
        statuses = ngx.many(9, 1, "/", {"X-Api-Key": "k"})
        assert statuses == [200] * 8 + [429], statuses
        s, h, _, _ = ngx.get("/", {"X-Api-Key": "k2"})
        assert h.get("X-RateLimit-Limit") == "8", h
        assert "emerg" not in ngx.log(), ngx.log()
    run(ngx, body)


@case
def empty_keys_are_not_accounted():
    ngx = Nginx(f"ratelimit_zone api {shm_zone('empty', '1/hour')};"
                + location("ratelimit zone=api key=$http_x_api_key;"))

    def body(ngx):
        for _ in range(5):
            s, h, _, _ = ngx.get("/")
            assert s == 200 and "X-RateLimit-Limit" not in h, (s, h)
        assert ngx.many(2, 1, "/", {"X-Api-Key": "k"}) == [200, 429]
    run(ngx, body)


@case
def costs_are_whole_numbers():
    ngx = Nginx(f"ratelimit_zone api {shm_zone('cost', '5/hour')};"
                + location("ratelimit zone=api key=$http_x_api_key cost=$http_x_cost;"))

    def body(ngx):
        for bad in ["abc", "-1", "2.5", "1e3", "", "1 1", "99999999999999999999"]:
            s, _, _, _ = ngx.get("/", {"X-Api-Key": "k", "X-Cost": bad})
            assert s == 500, (bad, s)
        assert ngx.log().count("is not a whole number") == 7, ngx.log()
        s, h, _, _ = ngx.get("/", {"X-Api-Key": "k", "X-Cost": "3"})
        assert s == 200 and h["X-RateLimit-Remaining"] == "2", h
        s, h, body, _ = ngx.get("/", {"X-Api-Key": "k", "X-Cost": "3"})
        assert s == 429 and h["X-RateLimit-Remaining"] == "2", h
        assert h["Content-Type"] == "application/json"
        assert re.fullmatch(rb'\{"error":"rate_limited","retry_after_ms":\d+\}', body), body
        assert int(h["Retry-After"]) >= 1
        s, h, _, _ = ngx.get("/", {"X-Api-Key": "k", "X-Cost": "0"})
        assert s == 200, s
        s, h, body, _ = ngx.get("/", {"X-Api-Key": "k", "X-Cost": "6"})
        assert s == 429 and "Retry-After" not in h, h  # above the quota: never
    run(ngx, body)


def nginx_t(conf):
    """`nginx -t` of a configuration: (exit code, output)."""
    ngx = Nginx(conf)
    try:
        return ngx.test_config()
    finally:
        ngx.stop()


@case
def a_bad_config_fails_nginx_t_with_the_librarys_message():
    rc, out = nginx_t('ratelimit_zone api "rate=5/fortnight backend=shm name=/x";'
                      + location("ratelimit zone=api key=$http_x_api_key;"))
    assert rc != 0, out
    assert 'ratelimit zone "api"' in out and "fortnight" in out, out
    rc, out = nginx_t(f"ratelimit_zone api {shm_zone('t', '5/hour')};"
                      + location("ratelimit zone=nope key=$http_x_api_key;"))
    assert rc != 0 and 'unknown ratelimit zone "nope"' in out, out
    # Two zones cannot share one region with two configurations.
    ngx = Nginx(f"ratelimit_zone a {shm_zone('same', '5/hour')};\n"
                f"ratelimit_zone b {shm_zone('same', '6/hour')};\n"
                + location("ratelimit zone=a key=$http_x_api_key;"))
    try:
        ngx.start()
        raise AssertionError("nginx started with two configurations for one region")
    except AssertionError as e:
        assert 'zone "a" uses the region name=/' in str(e), e
    finally:
        ngx.stop()
    # A good one passes, and leaves no region behind.
    rc, out = nginx_t(f"ratelimit_zone api {shm_zone('t', '5/hour')};"
                      + location("ratelimit zone=api key=$http_x_api_key;"))
    assert rc == 0, out
    assert not os.path.exists(f"/dev/shm/{RUN}-t"), "nginx -t left its region"


@case
def dry_run_status_headers_and_log_level():
    ngx = Nginx(
        f"ratelimit_zone api {shm_zone('dry', '2/hour')};\n"
        f"ratelimit_zone b {shm_zone('b', '1/hour')};\n"
        """
    server {
        listen 127.0.0.1:{port};
        location /dry {
            ratelimit zone=api key=$http_x_api_key;
            ratelimit_dry_run on;
            alias {html}/;
        }
        location /ietf {
            ratelimit zone=b key=$http_x_api_key;
            ratelimit_headers ietf;
            ratelimit_status 503;
            ratelimit_log_level warn;
            alias {html}/;
        }
        location /off {
            ratelimit zone=b key=$http_x_api_key;
            ratelimit_headers off;
            alias {html}/;
        }
    }""", workers=1)

    def body(ngx):
        statuses = ngx.many(4, 1, "/dry/", {"X-Api-Key": "k"})
        assert statuses == [200] * 4, statuses
        s, h, _, _ = ngx.get("/dry/", {"X-Api-Key": "k"})
        assert h["X-RateLimit-Remaining"] == "0" and "Retry-After" not in h, h
        assert ngx.log().count("limiting requests, dry run, by zone \"api\"") == 3, ngx.log()
        s, h, _, _ = ngx.get("/ietf/", {"X-Api-Key": "k"})
        assert s == 200 and "RateLimit-Policy" in h and "X-RateLimit-Limit" not in h, h
        s, h, _, _ = ngx.get("/ietf/", {"X-Api-Key": "k"})
        assert s == 503 and "Retry-After" in h, (s, h)
        assert re.search(r'\[warn\].*limiting requests by zone "b", key "k"', ngx.log()), ngx.log()
        s, h, _, _ = ngx.get("/off/", {"X-Api-Key": "k"})
        assert s == 429 and not any(k.lower().startswith(("x-ratelimit", "ratelimit", "retry"))
                                    for k in h), h
        # A hostile key is logged escaped, never raw.
        s, _, _, _ = ngx.get("/off/", {"X-Api-Key": 'a"b\\c\x01'})
        s, _, _, _ = ngx.get("/off/", {"X-Api-Key": 'a"b\\c\x01'})
        assert s == 429
        assert 'key "a\\"b\\\\c\\x01"' in ngx.log(), ngx.log()
    run(ngx, body)


@case
def several_zones_are_all_or_nothing():
    ngx = Nginx(
        f"ratelimit_zone a {shm_zone('a', '10/hour')};\n"
        f"ratelimit_zone b {shm_zone('b2', '2/hour')};\n"
        """
    server {
        listen 127.0.0.1:{port};
        location /both {
            ratelimit zone=a key=$http_x_api_key;
            ratelimit zone=b key=$http_x_api_key;
            alias {html}/;
        }
        location /a {
            ratelimit zone=a key=$http_x_api_key;
            alias {html}/;
        }
    }""", workers=2)

    def body(ngx):
        assert ngx.many(4, 1, "/both/", {"X-Api-Key": "k"}) == [200, 200, 429, 429]
        s, h, _, _ = ngx.get("/a/", {"X-Api-Key": "k"})
        # Two requests served took 2 of a's 10; the denied ones took nothing.
        assert s == 200 and h["X-RateLimit-Remaining"] == "7", h
    run(ngx, body)


@case
def a_memory_zone_counts_per_worker_and_says_so():
    ngx = Nginx('ratelimit_zone m "rate=5/hour";'
                + location("ratelimit zone=m key=$http_x_api_key;"), workers=2)

    def body(ngx):
        assert re.search(r'\[notice\].*ratelimit zone "m" is backend=memory: each of the 2 workers',
                         ngx.log()), ngx.log()
    run(ngx, body)


@case
def an_internal_redirect_is_checked_once():
    ngx = Nginx(
        f"ratelimit_zone api {shm_zone('redirect', '3/hour')};\n"
        """
    server {
        listen 127.0.0.1:{port};
        ratelimit zone=api key=$http_x_api_key;
        location / {
            root {html};
            try_files $uri /fallback/;
        }
        location /fallback/ {
            alias {html}/;
        }
    }""", workers=1)

    def body(ngx):
        statuses = ngx.many(4, 1, "/missing", {"X-Api-Key": "k"})
        assert statuses == [200, 200, 200, 429], statuses
    run(ngx, body)


@case
def the_readme_configuration_works():
    readme = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                               "README.md")).read()
    section = readme[readme.index("## Using it from nginx"):]
    conf = section[section.index("```nginx\n") + 9:]
    conf = conf[:conf.index("```")]
    for old, new in [("/ABS/PATH/build/nginx/ngx_http_ratelimit_module.so", MODULE),
                     ("listen 8080;", "listen 127.0.0.1:{port};"),
                     ("redis://127.0.0.1:6379", redis_url()),
                     ("name=/ngx-api", f"name=/{RUN}-readme")]:
        assert old in conf, old
        conf = conf.replace(old, new)
    ngx = Nginx(conf)

    def body(ngx):
        assert ngx.test_config()[0] == 0, ngx.log()
        statuses = ngx.many(7, 1, "/", {"X-Api-Key": "alice"})
        assert statuses == [200] * 5 + [429] * 2, statuses
        s, h, _, _ = ngx.get("/", {"X-Api-Key": "bob"})
        assert s == 200 and h["X-RateLimit-Remaining"] == "4", h
        assert [ngx.get("/health")[0] for _ in range(8)] == [200] * 8
    run(ngx, body)


def redis_url():
    url = os.environ.get("RL_TEST_REDIS_URL")
    assert url, "RL_TEST_REDIS_URL is not set: run under scripts/with_redis.sh"
    return url


@case
def two_nginx_share_a_redis_zone_exactly():
    zone = (f'ratelimit_zone fleet "rate=30/hour backend=redis url={redis_url()} '
            f'prefix={RUN}:fleet:";')
    a = Nginx(zone + location("ratelimit zone=fleet key=$http_x_api_key;"), workers=2)
    b = Nginx(zone + location("ratelimit zone=fleet key=$http_x_api_key;"), workers=2)
    try:
        a.start()
        b.start()

        def one(i):
            return (a if i % 2 else b).get("/", {"X-Api-Key": "k"})[0]
        with concurrent.futures.ThreadPoolExecutor(40) as ex:
            statuses = list(ex.map(one, range(50)))
        assert statuses.count(200) == 30 and statuses.count(429) == 20, statuses
    finally:
        a.stop()
        b.stop()


@contextlib.contextmanager
def blackhole():
    """A port whose server accepts connections and never answers."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    held = []
    stop = threading.Event()

    def accept():
        hole.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(hole.accept()[0])
            except OSError:
                pass
    threading.Thread(target=accept, daemon=True).start()
    try:
        yield hole.getsockname()[1]
    finally:
        stop.set()
        hole.close()
        for c in held:
            c.close()


@contextlib.contextmanager
def refusing_redis():
    """A port whose server speaks just enough RESP: a check (FCALL or
    EVALSHA with a cost) is allowed, an adjust ("a<delta>") is refused with
    an error, anything else is +OK. Yields the port and the commands seen."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    seen = []
    stop = threading.Event()

    def commands(conn):
        buf = b""
        while not stop.is_set():
            while True:
                # One array of bulk strings, if whole: *N, then N of $len + data.
                parts, at = [], 0
                if not buf.startswith(b"*") or b"\r\n" not in buf:
                    break
                end = buf.index(b"\r\n")
                n, at = int(buf[1:end]), end + 2
                for _ in range(n):
                    if b"\r\n" not in buf[at:]:
                        break
                    end = buf.index(b"\r\n", at)
                    size = int(buf[at + 1:end])
                    if len(buf) < end + 2 + size + 2:
                        break
                    parts.append(buf[end + 2:end + 2 + size])
                    at = end + 2 + size + 2
                if len(parts) < n:
                    break
                buf = buf[at:]
                yield parts
            data = conn.recv(65536)
            if not data:
                return
            buf += data

    def serve(conn):
        conn.settimeout(None)
        with conn:
            for parts in commands(conn):
                seen.append(parts)
                if parts[0].upper() in (b"FCALL", b"EVALSHA"):
                    adjust = any(p.startswith(b"a") and p[1:].lstrip(b"-").isdigit() for p in parts[2:])
                    conn.sendall(b"-ERR refused by the test\r\n" if adjust else b":0\r\n")
                else:
                    conn.sendall(b"+OK\r\n")

    def accept():
        while not stop.is_set():
            try:
                conn = server.accept()[0]
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1], seen
    finally:
        stop.set()
        server.close()


@case
def a_refund_that_fails_is_logged():
    with refusing_redis() as (port, seen):
        ngx = Nginx(
            f'ratelimit_zone first "rate=100/hour backend=redis url=redis://127.0.0.1:{port}";\n'
            'ratelimit_zone second "rate=1/hour";\n'
            + location("ratelimit zone=first key=$http_x_api_key;\n"
                       "            ratelimit zone=second key=$http_x_api_key;"), workers=1)

        def body(ngx):
            assert ngx.many(2, 1, "/", {"X-Api-Key": "k"}) == [200, 429]
            adjusts = [p for p in seen if any(a == b"a-1" for a in p)]
            assert len(adjusts) == 1, seen
            log = ngx.log()
            assert ('ratelimit zone "first", key "k": giving back cost 1 after another zone\'s '
                    "denial failed") in log, log
            assert "refused by the test" in log, log
        run(ngx, body)


def concurrently(ngx, paths):
    """GETs of `paths`, all at once: {path: [(status, headers, body, seconds)]}."""
    results = {}

    def one(path):
        results.setdefault(path, []).append(ngx.get(path, {"X-Api-Key": "k"}, timeout=20))
    threads = [threading.Thread(target=one, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    return threads, results


@case
def a_blackholed_redis_never_stalls_the_event_loop():
    with blackhole() as port:
        ngx = Nginx(
            f'ratelimit_zone deny "rate=5/hour backend=redis url=redis://127.0.0.1:{port} '
            f'timeout_ms=1500 on_error=deny";\n'
            f'ratelimit_zone allow "rate=5/hour backend=redis url=redis://127.0.0.1:{port} '
            f'timeout_ms=1500 on_error=allow";\n'
            """
    server {
        listen 127.0.0.1:{port};
        location /deny { ratelimit zone=deny key=$http_x_api_key; alias {html}/; }
        location /allow { ratelimit zone=allow key=$http_x_api_key; alias {html}/; }
        location /free { alias {html}/; }
    }""", workers=1)

        def body(ngx):
            waiting, results = concurrently(ngx, ["/deny/", "/allow/"] * 4)
            time.sleep(0.3)
            # The one worker's event loop answers other locations at once.
            for _ in range(5):
                s, _, _, took = ngx.get("/free/")
                assert s == 200 and took < 0.5, (s, took)
            for w in waiting:
                w.join(30)
            for s, h, _, took in results["/deny/"]:
                assert s == 429 and took < 1.5 + 3, (s, took)
            for s, h, _, took in results["/allow/"]:
                assert s == 200 and took < 1.5 + 3, (s, took)
                # on_error made the decision up: no quota is claimed.
                assert "X-RateLimit-Remaining" not in h, h
            log = ngx.log()
            assert 'ratelimit zone "deny", key "k"' in log and "denied by its on_error setting" in log, log
            assert 'ratelimit zone "allow", key "k"' in log and "allowed by its on_error setting" in log, log
        run(ngx, body)


@case
def a_full_thread_pool_queue_is_decided_by_on_error_at_once():
    with blackhole() as port:
        ngx = Nginx(
            f'ratelimit_zone deny "rate=5/hour backend=redis url=redis://127.0.0.1:{port} '
            f'timeout_ms=2000 on_error=deny";\n'
            """
    server {
        listen 127.0.0.1:{port};
        location / { ratelimit zone=deny key=$http_x_api_key; alias {html}/; }
    }""", workers=1, extra_main="thread_pool default threads=1 max_queue=1;")

        def body(ngx):
            # One check waits on the thread, one in the queue; the rest find
            # the queue full.
            waiting, results = concurrently(ngx, ["/"] * 6)
            for w in waiting:
                w.join(30)
            answers = sorted(results["/"], key=lambda r: r[3])
            assert all(s == 429 for s, _, _, _ in answers), answers
            assert sum(took < 1 for _, _, _, took in answers) >= 3, [a[3] for a in answers]
            assert answers[-1][3] >= 2 - 0.2, [a[3] for a in answers]
            assert "thread pool queue is full" in ngx.log(), ngx.log()
        run(ngx, body)


def main():
    assert MODULE and os.path.exists(MODULE), "usage: test_nginx.py MODULE.so [CASE...]"
    failed = 0
    for f in CASES:
        if ONLY and not any(o in f.__name__ for o in ONLY):
            continue
        t = time.monotonic()
        try:
            f()
            print(f"ok    {f.__name__} ({time.monotonic() - t:.1f} s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL  {f.__name__}", flush=True)
            traceback.print_exc()
    for name in os.listdir("/dev/shm"):
        if name.startswith(RUN):
            os.unlink(os.path.join("/dev/shm", name))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
