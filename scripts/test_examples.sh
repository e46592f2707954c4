#!/usr/bin/env bash
# test_examples.sh — end-to-end tests of build/http_server with curl, then
# with hostile clients (scripts/hostile_clients.py: slowloris, idle floods,
# malformed heads, pipelining, unread responses, the connection cap, IPv6, a
# stop within 1 s with all of them attached). Run by `make test-examples`,
# against the ASan/UBSan build. Prints "N passed, 0 failed" and exits 0, or
# names each failed assertion and exits 1.
#
# Environment: HTTP_SERVER (default build/http_server, e.g. a sanitizer
# build). build/prefork_server has its own script, scripts/test_prefork.sh.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
HTTP_SERVER=${HTTP_SERVER:-build/http_server}

# shellcheck source=scripts/http_test_lib.sh
. scripts/http_test_lib.sh
[[ -x $HTTP_SERVER ]] || die "$HTTP_SERVER is missing: run 'make examples' first"

# ---- http_server: one key, then another, then by IP -------------------------

start_server http "$HTTP_SERVER" --config "rate=5/minute"
http_pid=$PID
check "--port 0 picks a port" test "$PORT" -gt 0
check "the listening line names 127.0.0.1" grep -q "^listening on 127.0.0.1:$PORT\$" "$tmp/http.out"

for i in 1 2 3 4 5; do
    get "alice$i" / -H 'X-API-Key: alice'
    check "alice request $i is 200" status_is "alice$i" 200
    check "alice request $i body is ok" body_is "alice$i" ok
    check "alice request $i X-RateLimit-Limit: 5" header_is "alice$i" X-RateLimit-Limit 5
    check "alice request $i X-RateLimit-Remaining: $((5 - i))" \
        header_is "alice$i" X-RateLimit-Remaining "$((5 - i))"
    check "alice request $i X-RateLimit-Reset present" header_matches "alice$i" X-RateLimit-Reset '^[0-9]+$'
    check "alice request $i has no Retry-After" has_no_header "alice$i" Retry-After
    check "alice request $i keeps the connection open" has_no_header "alice$i" Connection
done

get alice6 / -H 'X-API-Key: alice'
check "alice request 6 is 429" status_is alice6 429
check "429 status text" grep -q '^HTTP/1.1 429 Too Many Requests$' "$tmp/alice6.headers"
check "429 has Retry-After >= 1" header_matches alice6 Retry-After '^[1-9][0-9]*$'
check "429 has X-RateLimit-Limit: 5" header_is alice6 X-RateLimit-Limit 5
check "429 has X-RateLimit-Remaining: 0" header_is alice6 X-RateLimit-Remaining 0
check "429 has X-RateLimit-Reset" header_matches alice6 X-RateLimit-Reset '^[1-9][0-9]*$'
check "429 body is the JSON with retry_after_ms > 0" \
    body_matches alice6 '^\{"error":"rate_limited","retry_after_ms":[1-9][0-9]*\}$'
check "429 Content-Type is JSON" header_matches alice6 Content-Type '^application/json'
check "429 keeps the connection open" has_no_header alice6 Connection
# one unit every 12 s: Retry-After is 12 s at most, and agrees with the body
retry_ms=$(sed -n 's/.*"retry_after_ms":\([0-9]*\).*/\1/p' "$tmp/alice6.body")
check "retry_after_ms <= 12000" test "${retry_ms:-0}" -le 12000
check "Retry-After is retry_after_ms rounded up" \
    test "$(header alice6 Retry-After)" -eq $(((${retry_ms:-0} + 999) / 1000))

get bob / -H 'X-API-Key: bob'
check "another key is 200" status_is bob 200
check "another key has its own quota" header_is bob X-RateLimit-Remaining 4

# the header name is case-insensitive
get carol1 / -H 'x-api-key: carol'
get carol2 / -H 'X-API-KEY: carol'
get carol3 / -H 'X-Api-Key:    carol'
check "x-api-key (lower case) is the same key" header_is carol2 X-RateLimit-Remaining 3
check "X-Api-Key with blanks is the same key" header_is carol3 X-RateLimit-Remaining 2

# no X-API-Key: keyed by the client IP (all of these come from 127.0.0.1)
for i in 1 2 3 4 5; do
    get "ip$i" /
    check "no-key request $i is 200" status_is "ip$i" 200
    check "no-key request $i remaining $((5 - i))" header_is "ip$i" X-RateLimit-Remaining "$((5 - i))"
done
get ip6 /
check "no-key request 6 (same IP) is 429" status_is ip6 429
get ipkey / -H 'X-API-Key: dave'
check "an API key from that IP is still 200" status_is ipkey 200
get ipempty / -H 'X-API-Key;' # curl's way to send an empty header
check "an empty X-API-Key counts as none (keyed by IP)" status_is ipempty 429
# another loopback address is another IP (Linux routes all of 127/8 locally)
get ip2 / --interface 127.0.0.2
if status_is ip2 000; then
    echo "note: cannot send from 127.0.0.2 here; skipping the second-IP check" >&2
else
    check "another client IP is 200" status_is ip2 200
    check "another client IP has its own quota" header_is ip2 X-RateLimit-Remaining 4
fi

# other paths, methods and malformed requests
get notfound /other -H 'X-API-Key: erin'
check "GET /other is 404" status_is notfound 404
check "404 keeps the connection open" has_no_header notfound Connection
get query '/?a=b' -H 'X-API-Key: erin'
check "GET /?query is /" status_is query 200
get post / -X POST -H 'X-API-Key: erin'
check "POST / is 405" status_is post 405
check "405 has Allow: GET, HEAD" header_is post Allow 'GET, HEAD'
# (with a Host header: an HTTP/1.1 request without one is a 400 of its own)
check "garbage is 400" test "$(raw_request 'garbage\r\n\r\n')" = 400
check "a request line without version is 400" test "$(raw_request 'GET /\r\nHost: t\r\n\r\n')" = 400
check "a relative path is 400" test "$(raw_request 'GET x HTTP/1.1\r\nHost: t\r\n\r\n')" = 400
check "two spaces in the request line is 400" test "$(raw_request 'GET  / HTTP/1.1\r\nHost: t\r\n\r\n')" = 400
check "HTTP/1.1 without Host is 400" test "$(raw_request 'GET / HTTP/1.1\r\nX-API-Key: frank\r\n\r\n')" = 400
check "HTTP/2.0 in the request line is 505" test "$(raw_request 'GET / HTTP/2.0\r\nHost: t\r\n\r\n')" = 505
big=$(head -c 9000 /dev/zero | tr '\0' a)
check "a request head over 8 KiB is 431" \
    test "$(raw_request "GET / HTTP/1.1\r\nHost: t\r\nX-Big: $big\r\n\r\n")" = 431
check "HTTP/1.0 is served" test "$(raw_request 'GET / HTTP/1.0\r\nX-API-Key: frank\r\n\r\n')" = 200
# a client that connects and leaves must not disturb the server
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
get after / -H 'X-API-Key: gina'
check "still serving after a silent client" status_is after 200

# A key that becomes limited is logged once, however many denials follow:
# 50 denials on one keep-alive connection (so on one event loop).
curl -s --max-time "$request_timeout" $(printf ' http://127.0.0.1:%s/' "$PORT"{,,,,,}{,,,,,,,,}) \
    -H 'X-API-Key: hank' -H 'Host: t' >/dev/null
# and a key with a backslash and non-ASCII bytes is logged in the label encoding
get odd / -H $'X-API-Key: o\\d\xffd'
for i in 1 2 3 4 5; do get "odd$i" / -H $'X-API-Key: o\\d\xffd'; done

stop_server "$http_pid" TERM
check "SIGTERM stops http_server with exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "http_server wrote nothing unexpected to stderr" \
    test "$(grep -v -e '^http_server: stopped by signal' -e '^http_server: limited: "' "$tmp/http.err" | grep -c .)" -eq 0
check "the log has one line for alice, limited once" \
    test "$(grep -c '^http_server: limited: "key:alice" (rate 0: 5 per 60000 ms; retry after [0-9]* ms)$' "$tmp/http.err")" -eq 1
check "the log has one line for hank, denied 49 times on one connection" \
    test "$(grep -c '^http_server: limited: "key:hank" ' "$tmp/http.err")" -eq 1
check "the log writes a key's backslash and non-ASCII bytes in the label encoding" \
    grep -q '^http_server: limited: "key:o\\\\d\\xffd" ' "$tmp/http.err"
check "the log names no key that was never limited" \
    test "$(grep -c -e 'limited: "key:bob"' -e 'limited: "key:gina"' "$tmp/http.err")" -eq 0

# ---- http_server: the limited log's bounds ------------------------------------
# One loop (--threads 1), everyone at 1/s. A key denied three times in a row
# ("spell") is logged once; then 30 keys each denied once, all in one
# pipelined batch: at most 10 lines a second (20 if the batch straddles a
# second), the rest dropped. After a whole window (1 s) without a denial,
# spell's next denial starts a new spell: logged again, with the count of
# the lines dropped meanwhile.
start_server lim "$HTTP_SERVER" --threads 1 --config "rate=1/s"
lim_pid=$PID
python3 - "$PORT" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
def send(keys):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"".join(b"GET / HTTP/1.1\r\nHost: t\r\nX-API-Key: %s\r\n\r\n" % k.encode() for k in keys))
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    s.close()
send(["spell", "spell", "spell"] + [f"burst{i}" for i in range(30) for _ in range(2)])
time.sleep(2.2)  # past spell's window, and into another second of the log
send(["spell", "spell"])
PY
stop_server "$lim_pid" TERM
first=$(grep -c -v -e 'more lines dropped)$' -e '^http_server: stopped' "$tmp/lim.err")
check "31 keys becoming limited at once: at most 10 lines a second (got $first)" test "$first" -ge 10 -a "$first" -le 20
check "a spell is logged once, and a denial after a quiet window starts another (2 lines)" \
    test "$(grep -c '^http_server: limited: "key:spell"' "$tmp/lim.err")" -eq 2
check "that line counts the $((31 - first)) lines dropped" \
    grep -q "^http_server: limited: \"key:spell\" .*; $((31 - first)) more lines dropped)\$" "$tmp/lim.err"

# ---- http_server: concurrency -------------------------------------------------

start_server conc "$HTTP_SERVER" --config "rate=20/minute"
conc_pid=$PID
crowd crowd 40
check "40 parallel requests: exactly 20 are 200 (got $OK)" test "$OK" -eq 20
check "40 parallel requests: exactly 20 are 429 (got $LIMITED)" test "$LIMITED" -eq 20
stop_server "$conc_pid" INT
check "SIGINT stops http_server with exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0

# ---- http_server: bad arguments -----------------------------------------------

"$HTTP_SERVER" --port 0 --config "rate=5/s burts=5" >"$tmp/bad.out" 2>"$tmp/bad.err"
rc=$?
check "a bad config exits 2 (got $rc)" test "$rc" -eq 2
check "a bad config names the token on stderr" grep -q burts "$tmp/bad.err"
check "a bad config prints no listening line" test ! -s "$tmp/bad.out"
"$HTTP_SERVER" --port 0 --config "concurrency=2" >"$tmp/bad.out" 2>"$tmp/bad.err"
rc=$?
check "a concurrency limiter, which cannot answer rl_check, exits 2 (got $rc)" test "$rc" -eq 2
check "... saying why" grep -q "does not answer rl_check" "$tmp/bad.err"
"$HTTP_SERVER" --config "rate=5/s" >/dev/null 2>&1
rc=$?
check "a missing --port exits 2 (got $rc)" test "$rc" -eq 2
"$HTTP_SERVER" --port 0 >/dev/null 2>&1
rc=$?
check "a missing --config exits 2 (got $rc)" test "$rc" -eq 2
"$HTTP_SERVER" --port 70000 --config "rate=5/s" >/dev/null 2>&1
rc=$?
check "a bad --port exits 2 (got $rc)" test "$rc" -eq 2
for bad in "--header-timeout 0" "--keepalive-timeout 0" "--header-timeout 1.5" "--max-connections 0" \
    "--listen 127.0.0.1" "--listen localhost:0" "--bind localhost"; do
    # shellcheck disable=SC2086 # $bad is an option and its value
    "$HTTP_SERVER" --port 0 --config "rate=5/s" $bad >"$tmp/bad.out" 2>/dev/null
    rc=$?
    check "$bad exits 2 (got $rc)" test "$rc" -eq 2
    check "$bad prints no listening line" test ! -s "$tmp/bad.out"
done

# ---- http_server: hostile clients -----------------------------------------------
# scripts/hostile_clients.py against a server with short timeouts, so that
# the cases waiting for them stay quick: its 4 threads against slowloris
# drippers, 500 idle connections, clients dripping after a response or never
# reading, malformed heads, keep-alive and pipelining (see its docstring).

hostile_started=$SECONDS
header_timeout=2
keepalive_timeout=2
start_server hostile "$HTTP_SERVER" --config "rate=10/minute" --threads 4 \
    --header-timeout "$header_timeout" --keepalive-timeout "$keepalive_timeout"
hostile_pid=$PID
hostile --suite
"$HTTP_SERVER" --port "$PORT" --config "rate=5/s" >/dev/null 2>&1
rc=$?
check "a port already in use exits 1 (got $rc)" test "$rc" -eq 1

# SIGTERM with silent, slowloris, idle keep-alive and not reading clients
# attached: out within 1 s, exit 0, the summary line and nothing else on
# stderr (a sanitizer's report would be there)
check "the holding client opened its connections" hold_start 10
stop_timed "$hostile_pid" TERM
hold_stop
echo "http_server (4 threads) stopped in $STOP_SECS s with hostile clients attached"
check "SIGTERM with hostile clients attached: http_server exits within 1 s (took $STOP_SECS s)" \
    less_than "$STOP_SECS" 1.0
check "SIGTERM with hostile clients attached: exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "the stop summary is on stderr" grep -q '^http_server: stopped by signal 15: ' "$tmp/hostile.err"
check "hostile clients: nothing unexpected on stderr" \
    test "$(grep -v -e '^http_server: stopped by signal' -e '^http_server: limited: "' "$tmp/hostile.err" | grep -c .)" -eq 0

# The connection cap: one thread with room for 20 connections, 40 idle ones
# (the header timeout long enough that evictions are told apart from it);
# and, when this machine has ::1, a second listening socket there.
listen=(--listen 127.0.0.1:0)
ipv6_loopback && listen+=(--listen '[::1]:0')
header_timeout=5
start_server_listen cap "$HTTP_SERVER" --config "rate=10/minute" "${listen[@]}" --threads 1 \
    --max-connections 20 --header-timeout "$header_timeout"
cap_pid=$PID
hostile --case cap --cap 20
if [[ ${#listen[@]} -eq 4 ]]; then
    check "--listen 127.0.0.1:0 --listen [::1]:0: two listening lines, in that order" \
        test "$(sed -n '1s/:[0-9]*$//p;2s/:[0-9]*$//p' "$tmp/cap.out" | tr '\n' ' ')" = \
        "listening on 127.0.0.1 listening on [::1] "
    hostile --host ::1 --port "$PORT6" --case ipv6
else
    echo "note: ::1 cannot be bound here; skipping the IPv6 case"
fi
stop_timed "$cap_pid" INT
check "SIGINT stops http_server within 1 s (took $STOP_SECS s)" less_than "$STOP_SECS" 1.0
check "SIGINT: exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "the capped server wrote nothing unexpected to stderr" \
    test "$(grep -v -e '^http_server: stopped by signal' -e '^http_server: limited: "' "$tmp/cap.err" | grep -c .)" -eq 0

# IPv6 sockets are IPv6-only, so an IPv6 wildcard and an IPv4 address bind
# the same port (a dual-stack [::] would take 127.0.0.1's port too). The
# port is the one the capped server just gave back.
if ipv6_loopback; then
    both_port=$PORT
    start_server_listen both "$HTTP_SERVER" --config "rate=10/minute" \
        --listen "127.0.0.1:$both_port" --listen "[::]:$both_port"
    both_pid=$PID
    get both4 / -H 'X-API-Key: both'
    check "127.0.0.1:$both_port and [::]:$both_port both bound: IPv4 served" status_is both4 200
    check "and IPv6 served on the same port" \
        test "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://[::1]:$both_port/")" = 200
    stop_server "$both_pid" TERM
fi

# RLIMIT_NOFILE: a soft limit under the hard one is raised to it; under a
# hard limit of 64 the connection cap is lowered to fit, so a flood of 200
# idle connections evicts the oldest and probes are still answered.
header_timeout=2
launch_server 1 lowsoft bash -c 'ulimit -Sn 64 && exec "$@"' lowsoft "$HTTP_SERVER" --port 0 \
    --config "rate=10/minute" --header-timeout "$header_timeout"
soft_raised() { awk '/^Max open files/ { exit !($4 == $5) }' "/proc/$1/limits"; }
check "a soft RLIMIT_NOFILE of 64 is raised to the hard limit" soft_raised "$PID"
stop_server "$PID" TERM
launch_server 1 lowhard bash -c 'ulimit -n 64 && exec "$@"' lowhard "$HTTP_SERVER" --port 0 \
    --config "rate=10/minute" --header-timeout "$header_timeout"
lowhard_pid=$PID
hostile --case idle --idle 200 --evictions
stop_server "$lowhard_pid" TERM
check "under a hard RLIMIT_NOFILE of 64: exit 0 after SIGTERM (got $STOP_RC)" test "$STOP_RC" -eq 0
check "under a hard RLIMIT_NOFILE of 64: nothing unexpected on stderr" \
    test "$(grep -v -e '^http_server: stopped by signal' -e '^http_server: limited: "' "$tmp/lowhard.err" | grep -c .)" -eq 0

echo "hostile clients: $((SECONDS - hostile_started)) s"

# ---- prefork_server -----------------------------------------------------------
# The pre-forked server shares a backend=shm region: scripts/test_prefork.sh
# drives it (run by `make test-shm`, against a sanitizer build).

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
