#!/usr/bin/env bash
# test_prefork.sh — end-to-end tests of build/prefork_server with curl (run by
# `make test-shm`): limits shared by all workers, a killed worker restarted
# with the limits intact, clean stop with the region removed. Prints
# "N passed, 0 failed" and exits 0, or names each failed assertion and exits 1.
#
# Environment: PREFORK_SERVER (default build/prefork_server, e.g. a sanitizer build).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
PREFORK_SERVER=${PREFORK_SERVER:-build/prefork_server}

passed=0
failed=0
tmp=$(mktemp -d)
server_pids=()
region=/rl-test-prefork-$$
other_region=/rl-test-prefork-other-$$

cleanup() {
    local p
    for p in "${server_pids[@]}"; do
        pkill -KILL -P "$p" 2>/dev/null || true
        kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$tmp"
    rm -f "/dev/shm$region" "/dev/shm$other_region"
}
trap cleanup EXIT

die() { echo "test_prefork: $*" >&2; exit 1; }

check() {
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $what" >&2
    fi
}

# shellcheck source=scripts/need_package.sh
. scripts/need_package.sh
need_package curl curl
command -v pgrep >/dev/null 2>&1 || die "pgrep is needed: install the 'procps' package"
[[ -x $PREFORK_SERVER ]] || die "$PREFORK_SERVER is missing: run 'make examples' first"

# start_server NAME ARGS...: starts prefork_server with --port 0, waits for its
# "listening on HOST:PORT" line; sets PORT and PID.
start_server() {
    local name=$1
    shift
    : >"$tmp/$name.out"
    "$PREFORK_SERVER" --port 0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    PID=$!
    server_pids+=("$PID")
    PORT=
    for _ in $(seq 200); do
        PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$tmp/$name.out")
        [[ -n $PORT ]] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$tmp/$name.err" >&2
    die "$name did not start ($PREFORK_SERVER $*)"
}

# stop_server PID SIGNAL: sends SIGNAL, waits at most 20 s; sets STOP_RC (124: too slow).
stop_server() {
    local pid=$1 sig=$2
    kill "-$sig" "$pid"
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        pkill -KILL -P "$pid" 2>/dev/null
        kill -KILL "$pid"
        wait "$pid" 2>/dev/null
        STOP_RC=124
    else
        wait "$pid"
        STOP_RC=$?
    fi
}

workers_of() { pgrep -P "$1" | sort; }
worker_count() { workers_of "$1" | wc -l; }

# wait_workers PID N: waits (at most 20 s) until PID has N workers.
wait_workers() {
    for _ in $(seq 200); do
        [[ $(worker_count "$1") -eq $2 ]] && return 0
        sleep 0.1
    done
    return 1
}

# crowd KEY N: N parallel requests with X-API-Key KEY; sets OK and LIMITED.
crowd() {
    local key=$1 n=$2 i pids=()
    rm -f "$tmp"/crowd.*
    for i in $(seq "$n"); do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time 30 -H "X-API-Key: $key" \
            "http://127.0.0.1:$PORT/" >"$tmp/crowd.$i" &
        pids+=($!)
    done
    wait "${pids[@]}"
    OK=$(cat "$tmp"/crowd.* | grep -c '^200$')
    LIMITED=$(cat "$tmp"/crowd.* | grep -c '^429$')
}

get() {
    local name=$1
    shift
    curl -s -o "$tmp/$name.body" -D "$tmp/$name.raw" -w '%{http_code}' --max-time 30 "$@" \
        "http://127.0.0.1:$PORT/" >"$tmp/$name.status" || echo 000 >"$tmp/$name.status"
    tr -d '\r' <"$tmp/$name.raw" >"$tmp/$name.headers" 2>/dev/null || : >"$tmp/$name.headers"
}
status_is() { [[ $(cat "$tmp/$1.status") == "$2" ]]; }
header_matches() { [[ $(sed -n "s/^$2: *//Ip" "$tmp/$1.headers" | head -n 1) =~ $3 ]]; }
body_matches() { [[ $(cat "$tmp/$1.body") =~ $2 ]]; }
no_region() { [[ ! -e /dev/shm$1 ]]; }
region_mode_is() { [[ $(stat -c %a "/dev/shm$1" 2>/dev/null) == "$2" ]]; }
# only_expected_stderr FILE: nothing but the stop summary and restart notes
only_expected_stderr() {
    ! grep -v -e '^prefork_server: stopped by signal' -e '^prefork_server: worker [0-9]* killed by signal 9; restarting it$' "$1" | grep -q .
}

# ---- limits shared by 4 workers ---------------------------------------------

config="rate=20/minute backend=shm name=$region"
start_server main --workers 4 --config "$config"
main_pid=$PID
check "the listening line names 127.0.0.1" grep -q "^listening on 127.0.0.1:$PORT\$" "$tmp/main.out"
check "4 workers are running" wait_workers "$main_pid" 4
check "the master created the region" test -e "/dev/shm$region"
check "the region has mode 0600" region_mode_is "$region" 600

crowd crowd 40
check "40 parallel requests over 4 workers: exactly 20 are 200 (got $OK)" test "$OK" -eq 20
check "40 parallel requests over 4 workers: exactly 20 are 429 (got $LIMITED)" test "$LIMITED" -eq 20

get limited -H 'X-API-Key: crowd'
check "the key is still limited" status_is limited 429
check "429 has Retry-After" header_matches limited Retry-After '^[1-9][0-9]*$'
check "429 has X-RateLimit-Limit: 20" header_matches limited X-RateLimit-Limit '^20$'
check "429 body is the JSON" body_matches limited '^\{"error":"rate_limited","retry_after_ms":[1-9][0-9]*\}$'
get byip
check "a request without X-API-Key (keyed by IP) is 200" status_is byip 200
check "and has X-RateLimit-Remaining: 19" header_matches byip X-RateLimit-Remaining '^19$'

# ---- a killed worker is restarted; the limits hold -----------------------------

victim=$(workers_of "$main_pid" | head -n 1)
kill -KILL "$victim"
restarted() { [[ $(worker_count "$main_pid") -eq 4 ]] && ! workers_of "$main_pid" | grep -qx "$victim"; }
for _ in $(seq 200); do restarted && break; sleep 0.1; done
check "a worker killed with SIGKILL is replaced (4 workers, $victim gone)" restarted
check "the master logged the restart" grep -q "worker $victim killed by signal 9; restarting it" "$tmp/main.err"
crowd crowd 8
check "after the restart the spent key is still limited (got $OK x 200)" test "$OK" -eq 0
crowd fresh 40
check "after the restart a new key gets exactly 20 of 40 (got $OK)" test "$OK" -eq 20

# all workers at once, while requests are coming in
busy_pids=()
for i in $(seq 10); do
    curl -s -o /dev/null --max-time 30 -H 'X-API-Key: busy' "http://127.0.0.1:$PORT/" &
    busy_pids+=($!)
done
for w in $(workers_of "$main_pid"); do kill -KILL "$w"; done
wait "${busy_pids[@]}"
check "all 4 killed workers are replaced" wait_workers "$main_pid" 4
crowd crowd 4
check "limits survive the loss of every worker (got $OK x 200)" test "$OK" -eq 0
crowd after 40
check "and still hold for new keys: 20 of 40 (got $OK)" test "$OK" -eq 20

# ---- a second master on the same region shares it and does not remove it -----

start_server second --workers 2 --config "$config"
second_pid=$PID
get second_crowd -H 'X-API-Key: crowd'
check "a second server on the same region sees the spent key" status_is second_crowd 429
stop_server "$second_pid" TERM
check "SIGTERM stops the second server with exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "the second server leaves the region it did not create" test -e "/dev/shm$region"
"$PREFORK_SERVER" --port 0 --workers 1 --config "rate=21/minute backend=shm name=$region" \
    >"$tmp/incompat.out" 2>"$tmp/incompat.err"
rc=$?
check "another rate on the same region exits 2 (got $rc)" test "$rc" -eq 2
check "and says why" grep -q "holds limits for" "$tmp/incompat.err"

# ---- clean stop ------------------------------------------------------------------

stop_server "$main_pid" TERM
check "SIGTERM stops the master with exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "no worker is left" test "$(pgrep -P "$main_pid" | wc -l)" -eq 0
check "the master removed the region it created" no_region "$region"
check "nothing unexpected on stderr" only_expected_stderr "$tmp/main.err"

start_server int --workers 2 --config "rate=5/s backend=shm name=$other_region mode=0640"
int_pid=$PID
check "mode=0640 is honoured" region_mode_is "$other_region" 640
get int1
check "a 2-worker server answers" status_is int1 200
stop_server "$int_pid" INT
check "SIGINT stops the master with exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "and removes its region" no_region "$other_region"

# ---- bad arguments ---------------------------------------------------------------

"$PREFORK_SERVER" --port 0 --workers 2 --config "rate=5/s" >"$tmp/bad.out" 2>"$tmp/bad.err"
rc=$?
check "a config without backend=shm exits 2 (got $rc)" test "$rc" -eq 2
"$PREFORK_SERVER" --port 0 --workers 2 --config "rate=5/s backend=shm name=/x burts=1" >/dev/null 2>"$tmp/bad.err"
rc=$?
check "a bad config exits 2 (got $rc)" test "$rc" -eq 2
check "a bad config names the token" grep -q burts "$tmp/bad.err"
"$PREFORK_SERVER" --port 0 --config "rate=5/s backend=shm name=/x" >/dev/null 2>&1
rc=$?
check "a missing --workers exits 2 (got $rc)" test "$rc" -eq 2
"$PREFORK_SERVER" --port 0 --workers 0 --config "rate=5/s backend=shm name=/x" >/dev/null 2>&1
rc=$?
check "--workers 0 exits 2 (got $rc)" test "$rc" -eq 2

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
