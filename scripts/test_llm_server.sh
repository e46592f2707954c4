#!/usr/bin/env bash
# test_llm_server.sh — end-to-end tests of build/llm_server (an LLM-style
# endpoint limited by requests, tokens and requests in flight) with curl,
# and with Python clients where it takes raw sockets (slow, silent, hostile,
# keep-alive). Run by `make test-examples`, against the ASan/UBSan build.
# Prints "N passed, 0 failed" and exits 0, or names each failed assertion and
# exits 1.
#
# Limits are per hour, so that nothing refills noticeably during a test
# (requests: exact; tokens: 10000/hour refill 2.8 a second, so remaining
# tokens are checked within a margin of 60 s of refill).
#
# Environment: LLM_SERVER (default build/llm_server, e.g. a sanitizer build).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
LLM_SERVER=${LLM_SERVER:-build/llm_server}

# shellcheck source=scripts/http_test_lib.sh
. scripts/http_test_lib.sh
[[ -x $LLM_SERVER ]] || die "$LLM_SERVER is missing: run 'make build/llm_server' first"

SHM_NAME=/rl-test-llm-$$
cleanup() {
    http_test_cleanup
    rm -f "/dev/shm${SHM_NAME}"
}
trap cleanup EXIT

REQUESTS="rate=5/hour"
TOKENS="rate=10000/hour"
CONCURRENCY="concurrency=2 lease=30s"
dur_re='^([0-9]+h)?([0-9]+m)?[0-9]+(\.[0-9]+)?(ms|s)$'

# post NAME KEY BODY [CURL ARGS...]: POST /v1/completions with a bearer KEY
post() {
    local name=$1 key=$2 body=$3
    shift 3
    get "$name" /v1/completions -X POST -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        --data-binary "$body" "$@"
}

# the six x-ratelimit-* headers, well-formed
rl_headers() {
    local h
    for h in limit-requests remaining-requests limit-tokens remaining-tokens; do
        header_matches "$1" "x-ratelimit-$h" '^[0-9]+$' || return 1
    done
    for h in reset-requests reset-tokens; do
        header_matches "$1" "x-ratelimit-$h" "$dur_re" || return 1
    done
}
# check_status NAME STATUS: the status, and the six headers
check_status() {
    check "$1 is $2 (got $(cat "$tmp/$1.status"))" status_is "$1" "$2"
    check "$1 has the six x-ratelimit-* headers" rl_headers "$1"
}
# in_range A LO HI
in_range() { [[ -n $1 && $1 -ge $2 && $1 -le $3 ]]; }
rem_tokens() { header "$1" x-ratelimit-remaining-tokens; }
rem_requests() { header "$1" x-ratelimit-remaining-requests; }
# error_type NAME: the 429 body's error.type
error_type() { sed -n 's/.*"type":"\([a-z_]*\)".*/\1/p' "$tmp/$1.body"; }

start_server llm "$LLM_SERVER" --requests "$REQUESTS" --tokens "$TOKENS" --concurrency "$CONCURRENCY"
llm_pid=$PID
check "--port 0 picks a port" test "$PORT" -gt 0
check "the listening line names 127.0.0.1" grep -q "^listening on 127.0.0.1:$PORT\$" "$tmp/llm.out"

# ---- a completion: reserve, generate, settle ------------------------------------
# prompt "hello world!" = 12 bytes = 3 tokens; max_tokens 1000 reserved,
# 100 generated: 103 used, the other 900 given back in the same response.
post ok1 alice '{"prompt":"hello world!","max_tokens":1000}' -H 'X-Completion-Tokens: 100'
check_status ok1 200
check "200 body is the usage" body_is ok1 '{"usage":{"prompt_tokens":3,"completion_tokens":100,"total_tokens":103}}'
check "200 Content-Type is JSON" header_matches ok1 Content-Type '^application/json'
check "x-ratelimit-limit-requests: 5" header_is ok1 x-ratelimit-limit-requests 5
check "x-ratelimit-remaining-requests: 4" header_is ok1 x-ratelimit-remaining-requests 4
check "x-ratelimit-limit-tokens: 10000" header_is ok1 x-ratelimit-limit-tokens 10000
r=$(rem_tokens ok1)
check "remaining tokens after settlement is 10000 - 103 (+ refill), not 10000 - 1003 (got $r)" in_range "$r" 9897 9990
check "reset-requests is 12m0s (one request of 5/hour to refill; got $(header ok1 x-ratelimit-reset-requests))" \
    header_matches ok1 x-ratelimit-reset-requests '^(12m0s|11m59(\.[0-9]+)?s)$'
check "reset-tokens is a duration in seconds, under a minute" header_matches ok1 x-ratelimit-reset-tokens '^[0-9]+(\.[0-9]+)?s$'
check "a 200 has no Retry-After" has_no_header ok1 Retry-After

# no X-Completion-Tokens: max_tokens / 2; escapes decoded: "\u00e9\n" is 3 bytes = 1 token
post ok2 alice '{"prompt":"\u00e9\n","max_tokens":301,"temperature":0.2}'
check_status ok2 200
check "without X-Completion-Tokens, completion_tokens = max_tokens / 2" \
    body_is ok2 '{"usage":{"prompt_tokens":1,"completion_tokens":150,"total_tokens":151}}'
r=$(rem_tokens ok2)
check "remaining tokens count both requests (103 + 151 used; got $r)" in_range "$r" 9746 9840
check "remaining requests: 3" header_is ok2 x-ratelimit-remaining-requests 3
# X-Completion-Tokens is capped at max_tokens
post ok3 alice '{"prompt":"","max_tokens":10}' -H 'X-Completion-Tokens: 999999999999'
check_status ok3 200
check "X-Completion-Tokens over max_tokens is capped at it" \
    body_is ok3 '{"usage":{"prompt_tokens":0,"completion_tokens":10,"total_tokens":10}}'

# ---- the requests limit -------------------------------------------------------------
for i in 1 2 3 4 5; do post "req$i" rob '{"prompt":"abcd","max_tokens":4}' -H 'X-Completion-Tokens: 4'; done
check_status req5 200
check "5th request: remaining-requests 0" header_is req5 x-ratelimit-remaining-requests 0
tok_before=$(rem_tokens req5)
post req6 rob '{"prompt":"abcd","max_tokens":4}'
check_status req6 429
check "429 status text" grep -q '^HTTP/1.1 429 Too Many Requests$' "$tmp/req6.headers"
check "requests 429: error.type requests" test "$(error_type req6)" = requests
check "requests 429: the JSON error" \
    body_matches req6 '^\{"error":\{"type":"requests","code":"rate_limit_exceeded","message":"[^"]+"\}\}$'
check "requests 429: Retry-After, whole seconds >= 1" header_matches req6 Retry-After '^[1-9][0-9]*$'
check "requests 429: Retry-After about 12 minutes (got $(header req6 Retry-After))" \
    in_range "$(header req6 Retry-After)" 700 721
check "requests 429: reset-requests is a duration" header_matches req6 x-ratelimit-reset-requests "$dur_re"
r=$(rem_tokens req6)
check "requests 429: no tokens reserved ($tok_before before, $r after)" in_range "$r" "$tok_before" $((tok_before + 170))

# ---- the tokens limit ----------------------------------------------------------------
# tess uses 9001 tokens, then asks for 2001: denied for tokens, and that
# denial keeps no request slot (remaining-requests stays 4) and no lease
# (two slow requests in parallel are then both served: concurrency=2).
post tok1 tess '{"prompt":"x","max_tokens":9000}' -H 'X-Completion-Tokens: 9000'
check_status tok1 200
check "tess: remaining-requests 4" header_is tok1 x-ratelimit-remaining-requests 4
post tok2 tess '{"prompt":"x","max_tokens":2000}'
check_status tok2 429
check "tokens 429: error.type tokens" test "$(error_type tok2)" = tokens
check "tokens 429: Retry-After (got $(header tok2 Retry-After))" header_matches tok2 Retry-After '^[1-9][0-9]*$'
check "tokens 429: Retry-After is minutes away (2.8 tokens a second; got $(header tok2 Retry-After))" \
    in_range "$(header tok2 Retry-After)" 120 400
check "tokens 429: the denied request kept no request slot (remaining-requests 4)" \
    header_is tok2 x-ratelimit-remaining-requests 4
r=$(rem_tokens tok2)
check "tokens 429: remaining tokens what tess has left (got $r)" in_range "$r" 999 1200
post tok3a tess '{"prompt":"x","max_tokens":100}' -H 'X-Latency-Ms: 1500' -H 'X-Completion-Tokens: 0' &
t1_pid=$!
post tok3b tess '{"prompt":"x","max_tokens":100}' -H 'X-Latency-Ms: 1500' -H 'X-Completion-Tokens: 0' &
t2_pid=$!
wait "$t1_pid" "$t2_pid"
check_status tok3a 200
check_status tok3b 200
check "after the tokens 429, two slow requests in parallel: both 200, so it kept no lease" true
post tok4 tess '{"prompt":"x","max_tokens":0}'
check "and the request slots: 5 - 1 - 2 - 1 = 1 left" header_is tok4 x-ratelimit-remaining-requests 1

# a reservation over the limit itself can never pass: 400, nothing kept
post huge tina '{"prompt":"x","max_tokens":20000}'
check_status huge 400
check "a reservation over the tokens limit: 400 naming max_tokens" \
    body_matches huge '"code":"tokens_exceed_limit".*"param":"max_tokens"'
check "and it kept no request slot (remaining-requests 5)" header_is huge x-ratelimit-remaining-requests 5

# ---- concurrency ------------------------------------------------------------------------
# concurrency=2: two slow requests hold both slots; a third is denied for
# concurrency (and keeps neither its request nor its tokens); once they are
# done a fourth is served.
post c1 carl '{"prompt":"x","max_tokens":10}' -H 'X-Latency-Ms: 3000' &
c1_pid=$!
post c2 carl '{"prompt":"x","max_tokens":10}' -H 'X-Latency-Ms: 3000' &
c2_pid=$!
sleep 1
post c3 carl '{"prompt":"x","max_tokens":10}'
wait "$c1_pid" "$c2_pid"
check_status c1 200
check_status c2 200
check_status c3 429
check "the third parallel request: error.type concurrency" test "$(error_type c3)" = concurrency
check "concurrency 429: Retry-After (up to the 30 s lease; got $(header c3 Retry-After))" \
    in_range "$(header c3 Retry-After)" 1 30
check "concurrency 429: its request slot given back (remaining-requests 3)" header_is c3 x-ratelimit-remaining-requests 3
r=$(rem_tokens c3)
check "concurrency 429: its 11 tokens given back (10000 - 2 x 11 reserved; got $r)" in_range "$r" 9978 10000
post c4 carl '{"prompt":"x","max_tokens":10}'
check_status c4 200
check "after both finished, a fourth is served (remaining-requests 2)" header_is c4 x-ratelimit-remaining-requests 2

# ---- bad requests: nothing charged, no lease held ------------------------------------------
# All with bearer "bea"; then a peek (a 404 with that bearer) shows its
# quotas full, and two slow requests in parallel are both served.
big=$tmp/big.json
{ printf '{"prompt":"'; head -c 10000000 /dev/zero | tr '\0' a; printf '","max_tokens":1}'; } >"$big"
hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; } # peak resident KiB
hwm_before=$(hwm "$llm_pid")
post b413 bea "@$big"
check_status b413 413
check "a 10 MB prompt: 413" body_matches b413 '"code":"request_too_large"'
check "413 closes the connection" header_is b413 Connection close
# the same without waiting for 100 Continue: the body is sent anyway, not read
post b413b bea "@$big" -H 'Expect:'
check_status b413b 413
hwm_after=$(hwm "$llm_pid")
check "two 10 MB bodies refused without being read into memory (peak RSS grew $((hwm_after - hwm_before)) KiB)" \
    test $((hwm_after - hwm_before)) -lt 8192
post bjson bea '{"prompt":"x",'
check_status bjson 400
check "malformed JSON: 400 naming it" body_matches bjson '"code":"invalid_json","message":"the body is not valid JSON'
post bjson2 bea 'not json at all'
check_status bjson2 400
post bnoprompt bea '{"max_tokens":5}'
check_status bnoprompt 400
check "missing prompt: 400 naming prompt" body_matches bnoprompt '"message":"prompt is missing","param":"prompt"'
post bprompttype bea '{"prompt":5,"max_tokens":5}'
check_status bprompttype 400
post bneg bea '{"prompt":"x","max_tokens":-1}'
check_status bneg 400
check "negative max_tokens: 400 naming max_tokens" body_matches bneg '"message":"max_tokens must not be negative","param":"max_tokens"'
post bhuge bea '{"prompt":"x","max_tokens":1000001}'
check_status bhuge 400
check "huge max_tokens: 400" body_matches bhuge '"message":"max_tokens is too large'
post boverflow bea '{"prompt":"x","max_tokens":184467440737095516160}'
check_status boverflow 400
check "max_tokens past 64 bits: 400, not wrapped" body_matches boverflow 'too large'
post bfrac bea '{"prompt":"x","max_tokens":2.5}'
check_status bfrac 400
check "fractional max_tokens: 400" body_matches bfrac 'max_tokens must be an integer'
post bmissing bea '{"prompt":"x"}'
check_status bmissing 400
post bsurrogate bea '{"prompt":"\ud800","max_tokens":1}'
check_status bsurrogate 400
post bbadutf8 bea $'{"prompt":"\xff","max_tokens":1}'
check_status bbadutf8 400
post blatency bea '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: soon'
check_status blatency 400
check "a bad X-Latency-Ms: 400 naming it" body_matches blatency '"param":"X-Latency-Ms"'
post bcompl bea '{"prompt":"x","max_tokens":1}' -H 'X-Completion-Tokens: -5'
check_status bcompl 400
post bchunked bea '{"prompt":"x","max_tokens":1}' -H 'Transfer-Encoding: chunked'
check "a chunked body: 411 (got $(cat "$tmp/bchunked.status"))" status_is bchunked 411
check "a chunked body: the six headers" rl_headers bchunked
get bget /v1/completions -H 'Authorization: Bearer bea'
check_status bget 405
check "405 has Allow: POST" header_is bget Allow POST
get bpath /v1/chat -X POST -H 'Authorization: Bearer bea' --data-binary '{}'
check_status bpath 404
# the peek: a 404 with bea's bearer describes bea's key
get bpeek /nothing -H 'Authorization: Bearer bea'
check_status bpeek 404
check "after 20 bad requests, bea has all 5 requests" header_is bpeek x-ratelimit-remaining-requests 5
check "after 20 bad requests, bea has all 10000 tokens" header_is bpeek x-ratelimit-remaining-tokens 10000
check "a fresh key's resets are 0s" header_is bpeek x-ratelimit-reset-tokens 0s
post bslow1 bea '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: 2000' &
b1_pid=$!
post bslow2 bea '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: 2000' &
b2_pid=$!
sleep 0.7
post bslow3 bea '{"prompt":"x","max_tokens":1}'
wait "$b1_pid" "$b2_pid"
check_status bslow1 200
check_status bslow2 200
check "after the bad requests, both slots were free (2 x 200) and a third is denied for concurrency" \
    test "$(error_type bslow3)" = concurrency

# ---- 401 ---------------------------------------------------------------------------------
get n401 /v1/completions -X POST --data-binary '{"prompt":"x","max_tokens":1}'
check_status n401 401
check "401 asks for a bearer" header_is n401 WWW-Authenticate Bearer
check "401 headers: the configured limits, full (requests)" header_is n401 x-ratelimit-remaining-requests 5
check "401 headers: the configured limits, full (tokens)" header_is n401 x-ratelimit-remaining-tokens 10000
check "401 headers: limit-tokens 10000" header_is n401 x-ratelimit-limit-tokens 10000
check "401 headers: reset 0s" header_is n401 x-ratelimit-reset-requests 0s
n401=0
for auth in 'Authorization: Bearer' 'Authorization: Bearer    ' 'Authorization: Basic YWxhZGRpbjpvcGVu' \
    'Authorization: Bearerabc' 'Authorization:'; do
    name=a401_$((++n401))
    get "$name" /v1/completions -X POST -H "$auth" --data-binary '{"prompt":"x","max_tokens":1}'
    check_status "$name" 401
done
get two_auth /v1/completions -X POST -H 'Authorization: Bearer a' -H 'Authorization: Bearer b' \
    --data-binary '{"prompt":"x","max_tokens":1}'
check_status two_auth 401
get lower /v1/completions -X POST -H 'authorization: bearer lowkey' --data-binary '{"prompt":"x","max_tokens":1}'
check_status lower 200

# ---- hostile bearer tokens: any bytes are a key of their own --------------------------
long=$(head -c 7000 /dev/zero | tr '\0' k)
i=0
for key in 'a"b'"'"'c\d' "$long" $'\xff\xfe\x80' '{"x":1}' '%00<script>' 'k e y'; do
    i=$((i + 1))
    post "hk${i}a" "$key" '{"prompt":"x","max_tokens":1}'
    post "hk${i}b" "$key" '{"prompt":"x","max_tokens":1}'
    check_status "hk${i}a" 200
    check_status "hk${i}b" 200
    check "hostile key $i: a quota of its own (remaining 4 then 3)" \
        test "$(rem_requests "hk${i}a") $(rem_requests "hk${i}b")" = "4 3"
done
post hk_other $'\xff\xfe\x81' '{"prompt":"x","max_tokens":1}'
check "a key differing in one non-UTF-8 byte is another key" header_is hk_other x-ratelimit-remaining-requests 4
check "a head over 8 KiB (a 9000-byte bearer) is 431 with the six headers" \
    test "$(raw_request "POST /v1/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer $(head -c 9000 /dev/zero | tr '\0' k)\r\nContent-Length: 2\r\n\r\n{}")" = 431

# ---- raw clients: keep-alive, pipelining, 100-continue, slow and silent ones ------------
python3 - "$PORT" >"$tmp/raw.out" 2>&1 <<'PY'
import socket, sys, time, json
port = int(sys.argv[1])
def ok(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
def req(key, body, extra=b""):
    return (b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + key +
            b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body)
def read_responses(s, n, limit=10):
    s.settimeout(limit)
    data = b""
    out = []
    while len(out) < n:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return out
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, v = line.split(b":", 1)
            if k.lower() == b"content-length":
                length = int(v)
        while len(data) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        out.append((head, data[:length]))
        data = data[length:]
    return out
def status(r):
    return int(r[0].split(b" ")[1])

# keep-alive and pipelining: three requests in one write, three answers in order
s = socket.create_connection(("127.0.0.1", port))
body = b'{"prompt":"abcd","max_tokens":2}'
s.sendall(req(b"pipe", body) + req(b"pipe", b'{"prompt":') + req(b"pipe", body))
rs = read_responses(s, 3)
ok([status(r) for r in rs] == [200, 400, 200], "three pipelined requests: 200, 400, 200 (got %s)" % [status(r) for r in rs])
ok(all(b"x-ratelimit-remaining-tokens" in r[0] for r in rs), "each pipelined response has the headers")
s.sendall(req(b"pipe", body))
rs = read_responses(s, 1)
ok(len(rs) == 1 and status(rs[0]) == 200, "the connection is kept alive after a 400")
s.close()

# HTTP/1.0 with Connection: keep-alive is told so, and kept
s = socket.create_connection(("127.0.0.1", port))
r10 = req(b"old", body, b"Connection: keep-alive\r\n").replace(b"HTTP/1.1", b"HTTP/1.0")
s.sendall(r10)
rs = read_responses(s, 1)
ok(len(rs) == 1 and status(rs[0]) == 200 and b"\r\nConnection: keep-alive" in rs[0][0], "HTTP/1.0 keep-alive: 200 with Connection: keep-alive")
s.sendall(r10)
rs = read_responses(s, 1)
ok(len(rs) == 1 and status(rs[0]) == 200, "HTTP/1.0 keep-alive: a second request on the connection")
s.close()

# Expect: 100-continue: the interim response, then the answer
s = socket.create_connection(("127.0.0.1", port))
s.sendall(req(b"cont", b"", b"Expect: 100-continue\r\n").replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)))
s.settimeout(5)
first = s.recv(25)
ok(first.startswith(b"HTTP/1.1 100 Continue"), "Expect: 100-continue gets 100 Continue first")
while not first.endswith(b"\r\n\r\n"):
    first += s.recv(1)
s.sendall(body)
rs = read_responses(s, 1)
ok(len(rs) == 1 and status(rs[0]) == 200, "then the body is read and answered 200")
s.close()

# 10 MB sent at once without waiting: 413 read before the server closes
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer bigraw\r\nContent-Length: 10000000\r\n\r\n")
sent = 0
s.settimeout(5)
try:
    while sent < 10000000:
        sent += s.send(b"a" * 65536)
except OSError:
    pass
rs = read_responses(s, 1)
ok(len(rs) == 1 and status(rs[0]) == 413, "10 MB sent without waiting: 413")
s.close()

# silent and slowloris clients hold threads, not the server: a request
# meanwhile is answered at once
silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
drip = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
for d in drip:
    d.sendall(b"POST /v1/completions HTTP/1.1\r\n")
# a body that never comes
stuck = socket.create_connection(("127.0.0.1", port))
stuck.sendall(req(b"stuck", b"").replace(b"Content-Length: 0", b"Content-Length: 100"))
time.sleep(0.5)
for d in drip:
    d.sendall(b"H")
start = time.monotonic()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(req(b"probe", body, b"Connection: close\r\n"))
rs = read_responses(s, 1)
took = time.monotonic() - start
ok(len(rs) == 1 and status(rs[0]) == 200 and took < 2, "with 30 silent, 5 dripping and 1 stuck-body clients attached, a request is served at once (%.2f s)" % took)
s.close()
# the stuck body gets 408 after the header timeout (5 s)
stuck.settimeout(15)
rs = read_responses(stuck, 1, 15)
ok(len(rs) == 1 and status(rs[0]) == 408, "a body that never comes: 408")
ok(len(rs) == 1 and b"x-ratelimit-limit-requests" in rs[0][0], "408 has the headers")
for c in silent + drip + [stuck]:
    c.close()
PY
while IFS= read -r line; do
    case $line in
    ok:*) passed=$((passed + 1)) ;;
    FAIL:*) failed=$((failed + 1)); echo "$line" >&2 ;;
    *) echo "raw clients: $line" >&2; failed=$((failed + 1)) ;;
    esac
done <"$tmp/raw.out"

stop_server "$llm_pid" TERM
check "SIGTERM stops llm_server with exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "the stop summary is on stderr" grep -q '^llm_server: stopped by signal 15: ' "$tmp/llm.err"
check "llm_server wrote nothing unexpected to stderr" \
    test "$(grep -v -e '^llm_server: stopped by signal' "$tmp/llm.err" | grep -c .)" -eq 0

# ---- the connection cap: silent connections are evicted, not waited for --------------------
start_server cap "$LLM_SERVER" --requests "$REQUESTS" --tokens "$TOKENS" --concurrency "$CONCURRENCY" \
    --max-connections 4 --header-timeout 30
cap_pid=$PID
python3 - "$PORT" >"$tmp/cap.out" 2>&1 <<'PY'
import socket, sys, time
port = int(sys.argv[1])
silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
time.sleep(0.5)
start = time.monotonic()
s = socket.create_connection(("127.0.0.1", port))
body = b'{"prompt":"x","max_tokens":1}'
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer capkey\r\nConnection: close\r\n"
          b"Content-Length: %d\r\n\r\n" % len(body) + body)
s.settimeout(20)
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
took = time.monotonic() - start
good = data.startswith(b"HTTP/1.1 200") and took < 5
print(("ok: " if good else "FAIL: ") + "at a cap of 4 with 12 silent connections, a request is served in %.2f s (header timeout 30 s)" % took)
PY
while IFS= read -r line; do
    case $line in
    ok:*) passed=$((passed + 1)) ;;
    *) failed=$((failed + 1)); echo "$line" >&2 ;;
    esac
done <"$tmp/cap.out"
# a stop with a silent client and a half-sent body attached is not held up by them
exec 7<>"/dev/tcp/127.0.0.1/$PORT" 8<>"/dev/tcp/127.0.0.1/$PORT"
printf 'POST /v1/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s\r\nContent-Length: 100\r\n\r\n{' >&8
sleep 0.3
stop_timed "$cap_pid" INT
exec 7>&- 8>&-
check "SIGINT with a silent client and a half-sent body attached: out within 1 s (took $STOP_SECS s)" \
    less_than "$STOP_SECS" 1.0
check "SIGINT stops llm_server with exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "the capped server wrote nothing unexpected to stderr" \
    test "$(grep -v -e '^llm_server: stopped by signal' "$tmp/cap.err" | grep -c .)" -eq 0

# ---- rl_renew: a generation longer than the lease keeps its slot -----------------------
start_server renew "$LLM_SERVER" --requests "$REQUESTS" --tokens "$TOKENS" --concurrency "concurrency=1 lease=1s"
renew_pid=$PID
post rn1 rene '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: 3000' &
rn1_pid=$!
sleep 2
post rn2 rene '{"prompt":"x","max_tokens":1}'
wait "$rn1_pid"
check_status rn1 200
check "2 s into a 3 s generation under a 1 s lease, the slot is still held (renewed): 429 concurrency" \
    test "$(error_type rn2)" = concurrency
post rn3 rene '{"prompt":"x","max_tokens":1}'
check_status rn3 200
# a stop during a generation: 503 to its client, out within a second or so
post stop1 rene '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: 30000' &
stop1_pid=$!
sleep 0.7
stop_timed "$renew_pid" TERM
wait "$stop1_pid"
check "SIGTERM during a 30 s generation: out in under 2 s (took $STOP_SECS s)" less_than "$STOP_SECS" 2.0
check "SIGTERM during a generation: exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "the interrupted generation is answered 503" status_is stop1 503
check "the renew server wrote nothing unexpected to stderr" \
    test "$(grep -v -e '^llm_server: stopped by signal' "$tmp/renew.err" | grep -c .)" -eq 0

# ---- bursts: all or nothing across limiters under contention -------------------------------
# burst PREFIX N KEY BODY [CURL ARGS...]: N requests at once; sets OK, BY_TYPE
# (e.g. "concurrency=8 tokens=0 requests=0")
burst() {
    local prefix=$1 n=$2 key=$3 body=$4 i pids=() c r t
    shift 4
    for i in $(seq "$n"); do
        post "$prefix$i" "$key" "$body" "$@" &
        pids+=($!)
    done
    wait "${pids[@]}"
    OK=0 c=0 r=0 t=0
    for i in $(seq "$n"); do
        if status_is "$prefix$i" 200; then
            OK=$((OK + 1))
        else
            case $(error_type "$prefix$i") in
            concurrency) c=$((c + 1)) ;; requests) r=$((r + 1)) ;; tokens) t=$((t + 1)) ;;
            esac
        fi
    done
    BY_TYPE="concurrency=$c tokens=$t requests=$r"
}
start_server burst "$LLM_SERVER" --requests "rate=100/day" --tokens "rate=1000/day" --concurrency "concurrency=5 lease=30s"
burst_pid=$PID
# 10 at once, concurrency 5: exactly 5 served; the 5 denied give back their
# request and their 101 reserved tokens (1 + 100), so afterwards exactly 5
# requests and 5 x 11 tokens are spent
burst cb 10 bo '{"prompt":"x","max_tokens":100}' -H 'X-Latency-Ms: 1500' -H 'X-Completion-Tokens: 10'
check "10 at once under concurrency=5: 5 served (got $OK; $BY_TYPE)" test "$OK" -eq 5
check "and 5 denied for concurrency ($BY_TYPE)" test "$BY_TYPE" = "concurrency=5 tokens=0 requests=0"
get cbpeek /peek -H 'Authorization: Bearer bo'
check "afterwards exactly 95 requests left (got $(rem_requests cbpeek))" header_is cbpeek x-ratelimit-remaining-requests 95
r=$(rem_tokens cbpeek)
check "and 1000 - 5 x 11 tokens, + refill (got $r)" in_range "$r" 945 955
# 10 at once, each reserving 301 of 1000 tokens: 3 fit, 7 are denied for
# tokens (or concurrency, once 5 are in flight) and give back their request
burst tb 10 bea2 '{"prompt":"x","max_tokens":300}' -H 'X-Latency-Ms: 1500' -H 'X-Completion-Tokens: 50'
check "10 at once reserving 301 of 1000 tokens: 3 served (got $OK; $BY_TYPE)" test "$OK" -eq 3
get tbpeek /peek -H 'Authorization: Bearer bea2'
check "afterwards exactly 97 requests left (got $(rem_requests tbpeek))" header_is tbpeek x-ratelimit-remaining-requests 97
r=$(rem_tokens tbpeek)
check "and 1000 - 3 x 51 tokens, + refill (got $r)" in_range "$r" 847 857
stop_server "$burst_pid" TERM
check "burst server: exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "burst server wrote nothing unexpected to stderr" \
    test "$(grep -v -e '^llm_server: stopped by signal' "$tmp/burst.err" | grep -c .)" -eq 0

# ---- settling on windows: exact, no refill -----------------------------------------------
# tokens on a fixed and a sliding window (aligned to the hour): a reserve of
# 1003 settled at 103 leaves exactly 9897 (unless the hour turned in between:
# then the check is skipped)
for algo in fixed_window sliding_window; do
    start_server "win_$algo" "$LLM_SERVER" --requests "$REQUESTS" --tokens "$TOKENS algorithm=$algo" \
        --concurrency "$CONCURRENCY"
    win_pid=$PID
    hour=$(date +%H)
    post "w_$algo" wendy '{"prompt":"hello world!","max_tokens":1000}' -H 'X-Completion-Tokens: 100'
    check_status "w_$algo" 200
    if [[ $(date +%H) == "$hour" ]]; then
        check "$algo: reserve 1003, settle at 103: exactly 9897 left (got $(rem_tokens "w_$algo"))" \
            header_is "w_$algo" x-ratelimit-remaining-tokens 9897
    fi
    post "w2_$algo" wendy '{"prompt":"x","max_tokens":20000}'
    check "$algo: a reservation over the limit is still a 400" status_is "w2_$algo" 400
    stop_server "$win_pid" TERM
    check "$algo: exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
done

# ---- backend=shm: the leases shared by two server processes ---------------------------------
SHM_CONC="concurrency=2 lease=30s backend=shm name=$SHM_NAME"
start_server shm1 "$LLM_SERVER" --requests "$REQUESTS" --tokens "$TOKENS" --concurrency "$SHM_CONC"
shm1_pid=$PID shm1_port=$PORT
start_server shm2 "$LLM_SERVER" --requests "$REQUESTS" --tokens "$TOKENS" --concurrency "$SHM_CONC"
shm2_pid=$PID shm2_port=$PORT
check "the shm region exists" test -e "/dev/shm$SHM_NAME"
PORT=$shm1_port post s1 sam '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: 3000' &
s1_pid=$!
PORT=$shm2_port post s2 sam '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: 3000' &
s2_pid=$!
sleep 1
PORT=$shm1_port post s3 sam '{"prompt":"x","max_tokens":1}'
PORT=$shm2_port post s4 sam '{"prompt":"x","max_tokens":1}'
wait "$s1_pid" "$s2_pid"
check_status s1 200
check_status s2 200
check "shm: a third request on either server is denied for concurrency (server 1)" test "$(error_type s3)" = concurrency
check "shm: a third request on either server is denied for concurrency (server 2)" test "$(error_type s4)" = concurrency
PORT=$shm2_port post s5 sam '{"prompt":"x","max_tokens":1}'
check_status s5 200
# a server stopped during a generation releases its lease in the region
PORT=$shm1_port post s6 sam '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: 30000' &
s6_pid=$!
sleep 0.7
stop_server "$shm1_pid" TERM
wait "$s6_pid"
check "shm: SIGTERM during a generation: exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
PORT=$shm2_port post s7 sam '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: 1500' &
s7_pid=$!
PORT=$shm2_port post s8 sam '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: 1500' &
s8_pid=$!
wait "$s7_pid" "$s8_pid"
check "shm: the stopped server's lease was released: two slow requests both 200" \
    test "$(cat "$tmp/s7.status") $(cat "$tmp/s8.status")" = "200 200"
stop_server "$shm2_pid" TERM
check "shm: exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
for n in shm1 shm2; do
    check "shm: $n wrote nothing unexpected to stderr" \
        test "$(grep -v -e '^llm_server: stopped by signal' "$tmp/$n.err" | grep -c .)" -eq 0
done
rm -f "/dev/shm$SHM_NAME"

# ---- backend=redis: all three limiters shared by two servers ------------------------------
# when this machine has a redis-server (make test-redis installs it): a
# throwaway one on a free loopback port
if command -v redis-server >/dev/null 2>&1; then
    redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    server_pids+=("$redis_pid") # killed on exit, whatever happens
    for _ in $(seq 100); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $redis_port), 1)" 2>/dev/null && break
        sleep 0.1
    done
    R="backend=redis url=redis://127.0.0.1:$redis_port"
    start_server red1 "$LLM_SERVER" --requests "$REQUESTS $R prefix=rq:" --tokens "$TOKENS $R prefix=tk:" \
        --concurrency "$CONCURRENCY $R prefix=cc:"
    red1_pid=$PID red1_port=$PORT
    start_server red2 "$LLM_SERVER" --requests "$REQUESTS $R prefix=rq:" --tokens "$TOKENS $R prefix=tk:" \
        --concurrency "$CONCURRENCY $R prefix=cc:"
    red2_pid=$PID red2_port=$PORT
    PORT=$red1_port post r1 rita '{"prompt":"hello world!","max_tokens":1000}' -H 'X-Completion-Tokens: 100'
    check_status r1 200
    PORT=$red2_port post r2 rita '{"prompt":"hello world!","max_tokens":1000}' -H 'X-Completion-Tokens: 100'
    check_status r2 200
    check "redis: the second server sees the first's request (remaining-requests 3)" \
        header_is r2 x-ratelimit-remaining-requests 3
    r=$(rem_tokens r2)
    check "redis: and its settled tokens (10000 - 2 x 103, + refill; got $r)" in_range "$r" 9794 9890
    PORT=$red1_port post r3 rita '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: 3000' &
    r3_pid=$!
    PORT=$red2_port post r4 rita '{"prompt":"x","max_tokens":1}' -H 'X-Latency-Ms: 3000' &
    r4_pid=$!
    sleep 1
    PORT=$red1_port post r5 rita '{"prompt":"x","max_tokens":1}'
    wait "$r3_pid" "$r4_pid"
    check_status r3 200
    check_status r4 200
    check "redis: a third request in flight across the two servers is denied for concurrency" \
        test "$(error_type r5)" = concurrency
    check "redis: and gives back its request (remaining-requests 1 after 4 served)" \
        header_is r5 x-ratelimit-remaining-requests 1
    PORT=$red2_port post r6 rita '{"prompt":"x","max_tokens":1}'
    check_status r6 200
    stop_server "$red1_pid" TERM
    check "redis: server 1 exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
    stop_server "$red2_pid" TERM
    check "redis: server 2 exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
    for n in red1 red2; do
        check "redis: $n wrote nothing unexpected to stderr" \
            test "$(grep -v -e '^llm_server: stopped by signal' "$tmp/$n.err" | grep -c .)" -eq 0
    done
    kill -TERM "$redis_pid"
    wait "$redis_pid" 2>/dev/null
else
    echo "note: no redis-server here; llm_server on backend=redis not tried"
fi

# ---- a backend that is down: the decision it fills is obeyed, the error logged ----------
# (Redis at a port nobody listens on. Skipped while the library cannot
# settle on backend=redis: llm_server then refuses the config at start.)
DOWN="backend=redis url=redis://127.0.0.1:1 timeout_ms=100"
probe=$(timeout 3 "$LLM_SERVER" --port 0 --requests "rate=5/hour $DOWN" --tokens "$TOKENS" \
    --concurrency "$CONCURRENCY" 2>&1 >/dev/null)
if [[ $probe == *"not yet available"* ]]; then
    echo "note: rl_adjust is not yet available with backend=redis; skipping the backend-down cases"
else
start_server down "$LLM_SERVER" --requests "rate=5/hour $DOWN on_error=allow" --tokens "$TOKENS" \
    --concurrency "$CONCURRENCY"
down_pid=$PID
post d1 dora '{"prompt":"x","max_tokens":1}'
check_status d1 200
stop_server "$down_pid" TERM
check "redis down, on_error=allow: served, exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "redis down: rl_last_error() logged on stderr" grep -q '^llm_server: rl_check(requests): ' "$tmp/down.err"
start_server down2 "$LLM_SERVER" --requests "$REQUESTS" --tokens "rate=10000/hour $DOWN on_error=deny" \
    --concurrency "$CONCURRENCY"
down2_pid=$PID
post d2 dora '{"prompt":"x","max_tokens":1}'
check_status d2 429
check "redis down, on_error=deny: 429 for tokens" test "$(error_type d2)" = tokens
check "and the request slot was given back" header_is d2 x-ratelimit-remaining-requests 5
stop_server "$down2_pid" TERM
check "redis down, on_error=deny: exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
fi

# ---- bad arguments ---------------------------------------------------------------------------
bad_args() {
    "$LLM_SERVER" --port 0 "$@" >"$tmp/bad.out" 2>"$tmp/bad.err"
}
bad_args --requests "rate=5/s burts=5" --tokens "$TOKENS" --concurrency "$CONCURRENCY"
rc=$?
check "a bad --requests config exits 2 (got $rc)" test "$rc" -eq 2
check "a bad config names the token on stderr" grep -q burts "$tmp/bad.err"
check "a bad config prints no listening line" test ! -s "$tmp/bad.out"
bad_args --requests "$REQUESTS" --tokens "$TOKENS" --concurrency "rate=5/s"
rc=$?
check "--concurrency with a rate limiter exits 2 (got $rc)" test "$rc" -eq 2
bad_args --requests "$REQUESTS" --tokens "concurrency=2" --concurrency "$CONCURRENCY"
rc=$?
check "--tokens with a concurrency limiter exits 2 (got $rc)" test "$rc" -eq 2
bad_args --requests "$REQUESTS" --tokens "$TOKENS" --concurrency "$CONCURRENCY" --bind localhost
rc=$?
check "--bind localhost (not an address) exits 2 (got $rc)" test "$rc" -eq 2
bad_args --requests "$REQUESTS" --tokens "$TOKENS"
rc=$?
check "a missing --concurrency exits 2 (got $rc)" test "$rc" -eq 2
"$LLM_SERVER" --requests "$REQUESTS" --tokens "$TOKENS" --concurrency "$CONCURRENCY" >/dev/null 2>&1
rc=$?
check "a missing --port exits 2 (got $rc)" test "$rc" -eq 2

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
