#!/usr/bin/env bash
# test_prefork.sh — end-to-end tests of build/prefork_server with curl (run by
# `make test-shm`): limits shared by all workers, a killed worker restarted
# with the limits intact, clean stop with the region removed; then hostile
# clients (scripts/hostile_clients.py: slowloris, idle floods, malformed
# heads, pipelining, unread responses, the connection cap, IPv6, master and
# workers out within 1 s of SIGTERM with all of them attached). Prints
# "N passed, 0 failed" and exits 0, or names each failed assertion and exits 1.
#
# Environment: PREFORK_SERVER (default build/prefork_server, e.g. a sanitizer build).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
PREFORK_SERVER=${PREFORK_SERVER:-build/prefork_server}

region=/rl-test-prefork-$$
other_region=/rl-test-prefork-other-$$
hostile_region=/rl-test-prefork-hostile-$$
cap_region=/rl-test-prefork-cap-$$

# shellcheck source=scripts/http_test_lib.sh
. scripts/http_test_lib.sh
server_wait=20 # the workers of a sanitizer build start and stop slowly
request_timeout=30
cleanup() {
    http_test_cleanup
    rm -f "/dev/shm$region" "/dev/shm$other_region" "/dev/shm$hostile_region" "/dev/shm$cap_region"
}
trap cleanup EXIT
command -v pgrep >/dev/null 2>&1 || die "pgrep is needed: install the 'procps' package"
[[ -x $PREFORK_SERVER ]] || die "$PREFORK_SERVER is missing: run 'make examples' first"

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

no_region() { [[ ! -e /dev/shm$1 ]]; }
region_mode_is() { [[ $(stat -c %a "/dev/shm$1" 2>/dev/null) == "$2" ]]; }
# only_expected_stderr FILE: nothing but the stop summary and restart notes
# (what else there is goes to stderr, e.g. a sanitizer's report)
only_expected_stderr() {
    local other
    other=$(grep -v -e '^prefork_server: stopped by signal' -e '^prefork_server: limited: "' \
        -e '^prefork_server: worker [0-9]* killed by signal 9; restarting it$' "$1")
    [[ -z $other ]] && return 0
    head -n 20 <<<"$other" >&2
    return 1
}

# ---- limits shared by 4 workers ---------------------------------------------

# A token comes back every 3 minutes: the spent keys stay spent however
# slowly a loaded machine kills and restarts the workers below.
config="rate=20/hour backend=shm name=$region"
start_server main "$PREFORK_SERVER" --workers 4 --config "$config"
main_pid=$PID
check "the listening line names 127.0.0.1" grep -q "^listening on 127.0.0.1:$PORT\$" "$tmp/main.out"
check "4 workers are running" wait_workers "$main_pid" 4
check "the master created the region" test -e "/dev/shm$region"
check "the region has mode 0600" region_mode_is "$region" 600

crowd crowd 40
check "40 parallel requests over 4 workers: exactly 20 are 200 (got $OK)" test "$OK" -eq 20
check "40 parallel requests over 4 workers: exactly 20 are 429 (got $LIMITED)" test "$LIMITED" -eq 20

get limited / -H 'X-API-Key: crowd'
check "the key is still limited" status_is limited 429
check "429 has Retry-After" header_matches limited Retry-After '^[1-9][0-9]*$'
check "429 has X-RateLimit-Limit: 20" header_matches limited X-RateLimit-Limit '^20$'
check "429 body is the JSON" body_matches limited '^\{"error":"rate_limited","retry_after_ms":[1-9][0-9]*\}$'
get byip /
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

start_server second "$PREFORK_SERVER" --workers 2 --config "$config"
second_pid=$PID
get second_crowd / -H 'X-API-Key: crowd'
check "a second server on the same region sees the spent key" status_is second_crowd 429
stop_server "$second_pid" TERM
check "SIGTERM stops the second server with exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "the second server leaves the region it did not create" test -e "/dev/shm$region"
"$PREFORK_SERVER" --port 0 --workers 1 --config "rate=21/hour backend=shm name=$region" \
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

start_server int "$PREFORK_SERVER" --workers 2 --config "rate=5/s backend=shm name=$other_region mode=0640"
int_pid=$PID
check "mode=0640 is honoured" region_mode_is "$other_region" 640
get int1 /
check "a 2-worker server answers" status_is int1 200
stop_server "$int_pid" INT
check "SIGINT stops the master with exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "and removes its region" no_region "$other_region"

# ---- hostile clients --------------------------------------------------------------
# scripts/hostile_clients.py against 4 workers with short timeouts, so that
# the cases waiting for them stay quick (see its docstring). /metrics counts
# are region-wide: the suite's counting checks run with nothing else going on.

hostile_started=$SECONDS
header_timeout=2
keepalive_timeout=2
start_server hostile "$PREFORK_SERVER" --workers 4 --config "rate=10/minute backend=shm name=$hostile_region" \
    --header-timeout "$header_timeout" --keepalive-timeout "$keepalive_timeout"
hostile_pid=$PID
check "4 workers are running for the hostile clients" wait_workers "$hostile_pid" 4
hostile --suite

# SIGTERM with silent, slowloris, idle keep-alive and not reading clients
# attached: the master and every worker out within 1 s, exit 0, the region
# removed
check "the holding client opened its connections" hold_start 10
stop_timed "$hostile_pid" TERM
hold_stop
echo "prefork_server (4 workers) stopped in $STOP_SECS s with hostile clients attached"
check "SIGTERM with hostile clients attached: the master and its workers exit within 1 s (took $STOP_SECS s)" \
    less_than "$STOP_SECS" 1.0
check "SIGTERM with hostile clients attached: no worker left when the master exits (left: ${STOP_LEFT:-none})" \
    test -z "$STOP_LEFT"
check "SIGTERM with hostile clients attached: exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "the master removed its region" no_region "$hostile_region"
check "hostile clients: nothing unexpected on stderr" only_expected_stderr "$tmp/hostile.err"

# The connection cap: one worker with room for 20 connections, 40 idle ones
# (the header timeout long enough that evictions are told apart from it);
# and, when this machine has ::1, a second listening socket there.
listen=(--listen 127.0.0.1:0)
ipv6_loopback && listen+=(--listen '[::1]:0')
header_timeout=5
start_server_listen cap "$PREFORK_SERVER" --workers 1 --config "rate=10/minute backend=shm name=$cap_region" \
    "${listen[@]}" --max-connections 20 --header-timeout "$header_timeout"
cap_pid=$PID
check "1 worker is running for the cap" wait_workers "$cap_pid" 1
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
check "SIGINT stops the master and its worker within 1 s (took $STOP_SECS s)" less_than "$STOP_SECS" 1.0
check "SIGINT: no worker left (left: ${STOP_LEFT:-none})" test -z "$STOP_LEFT"
check "SIGINT: exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0
check "the capped server wrote nothing unexpected to stderr" only_expected_stderr "$tmp/cap.err"

echo "hostile clients: $((SECONDS - hostile_started)) s"

# ---- bad arguments ---------------------------------------------------------------

"$PREFORK_SERVER" --port 0 --workers 2 --config "rate=5/s" >"$tmp/bad.out" 2>"$tmp/bad.err"
rc=$?
check "a config without backend=shm exits 2 (got $rc)" test "$rc" -eq 2
"$PREFORK_SERVER" --port 0 --workers 2 --config "rate=5/s backend=shm name=/x burts=1" >/dev/null 2>"$tmp/bad.err"
rc=$?
check "a bad config exits 2 (got $rc)" test "$rc" -eq 2
check "a bad config names the token" grep -q burts "$tmp/bad.err"
conc_name=/rl-test-prefork-conc-$$
"$PREFORK_SERVER" --port 0 --workers 1 --config "concurrency=2 backend=shm name=$conc_name" >/dev/null 2>"$tmp/bad.err"
rc=$?
check "a concurrency limiter exits 2 (got $rc)" test "$rc" -eq 2
check "... saying why" grep -q "does not answer rl_check" "$tmp/bad.err"
check "... and removes the region it created" test ! -e "/dev/shm/${conc_name#/}"
"$PREFORK_SERVER" --port 0 --config "rate=5/s backend=shm name=/x" >/dev/null 2>&1
rc=$?
check "a missing --workers exits 2 (got $rc)" test "$rc" -eq 2
"$PREFORK_SERVER" --port 0 --workers 0 --config "rate=5/s backend=shm name=/x" >/dev/null 2>&1
rc=$?
check "--workers 0 exits 2 (got $rc)" test "$rc" -eq 2
for bad in "--header-timeout 0" "--keepalive-timeout x" "--listen localhost:0"; do
    # shellcheck disable=SC2086 # $bad is an option and its value
    "$PREFORK_SERVER" --port 0 --workers 1 --config "rate=5/s backend=shm name=$other_region" $bad \
        >"$tmp/bad.out" 2>/dev/null
    rc=$?
    check "$bad exits 2 (got $rc)" test "$rc" -eq 2
    check "$bad prints no listening line, leaves no region" test ! -s "$tmp/bad.out" -a ! -e "/dev/shm$other_region"
done

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
