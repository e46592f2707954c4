#!/usr/bin/env bash
# test_rlctl.sh — build/rlctl driven as an operator would (run by `make
# test-shm`, against the ASan/UBSan builds): on the region of a live
# build/prefork_server under curl load (show, top with the hammered key
# first and its count bounding its real denials, peek of keys pasted from
# top — a backslash and a 0xff byte among them —, reset, metrics, --config
# on shm, memory and, when redis-server is installed, redis),
# on a region whose creator was SIGKILLed (still readable, then unlink), and
# its errors: a missing region, a file that is not a region, a name without
# a leading '/', bad usage. Prints "N passed, 0 failed" and exits 0, or
# names each failed assertion and exits 1. Removes every region and process
# it makes.
#
# Environment: PREFORK_SERVER (default build/prefork_server), RLCTL (default
# build/rlctl), e.g. sanitizer builds.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
PREFORK_SERVER=${PREFORK_SERVER:-build/prefork_server}
RLCTL=${RLCTL:-build/rlctl}

region=/rl-test-rlctl-$$
killed_region=/rl-test-rlctl-killed-$$
missing_region=/rl-test-rlctl-missing-$$
garbage=/rl-test-garbage-$$
newer_region=/rl-test-rlctl-newer-$$
four_region=/rl-test-rlctl-four-$$

# shellcheck source=scripts/http_test_lib.sh
. scripts/http_test_lib.sh
server_wait=20 # the workers of a sanitizer build start and stop slowly
request_timeout=30
load_pids=()
extra_pids=()
cleanup() {
    local p
    for p in "${load_pids[@]}" "${extra_pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    http_test_cleanup
    rm -f "/dev/shm$region" "/dev/shm$killed_region" "/dev/shm$missing_region" "/dev/shm$garbage" \
        "/dev/shm$newer_region" "/dev/shm$four_region"
}
trap cleanup EXIT
command -v pgrep >/dev/null 2>&1 || die "pgrep is needed: install the 'procps' package"
[[ -x $PREFORK_SERVER ]] || die "$PREFORK_SERVER is missing: run 'make examples' first"
[[ -x $RLCTL ]] || die "$RLCTL is missing: run 'make examples' first"

# rlctl NAME ARGS...: runs rlctl ARGS; $tmp/NAME.out and .err, RC its status
rlctl() {
    local name=$1
    shift
    "$RLCTL" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
    RC=$?
}
out_has() { grep -q -- "$2" "$tmp/$1.out"; }
err_has() { grep -q -- "$2" "$tmp/$1.err"; }
# value NAME FIELD: the value of "FIELD: value" in rlctl NAME's output
value() { sed -n "s/^$2: //p" "$tmp/$1.out"; }
# no sanitizer report or other surprise on stderr
err_empty() {
    [[ ! -s $tmp/$1.err ]] && return 0
    head -n 20 "$tmp/$1.err" >&2
    return 1
}

# load NAME KEY N: N requests (one curl, one connection) with X-API-Key KEY in
# the background; their status codes go to $tmp/load.NAME
load() {
    local name=$1 key=$2 n=$3 urls=()
    while ((n-- > 0)); do urls+=(-o /dev/null "http://127.0.0.1:$PORT/"); done
    : >"$tmp/load.$name" # exists before the background curl opens it
    curl -s --max-time 120 -w '%{http_code}\n' -H "X-API-Key: $key" "${urls[@]}" >"$tmp/load.$name" &
    load_pids+=($!)
}
count_of() { grep -c "^$2\$" "$tmp/load.$1"; }

# ---- a live prefork_server under load -----------------------------------------

# 10 an hour: a token every 6 minutes, so a spent key stays spent however
# slowly a loaded machine runs this script
start_server main "$PREFORK_SERVER" --workers 2 --config "rate=10/hour capacity=5000 backend=shm name=$region"
main_pid=$PID
hammer_key='hammer'
odd_key=$'odd\\key\xff'        # a backslash and a 0xff byte
odd_text='key:odd\\key\xff'   # how rlctl writes the server's key for it
load hammer "$hammer_key" 5000
hammer_pid=${load_pids[0]}
load alice alice 30
load bob bob 25
load carol carol 20
load odd "$odd_key" 25

# while the load runs (once it has begun)
for _ in $(seq 500); do
    [[ $(wc -l <"$tmp/load.hammer") -ge 20 ]] && break
    sleep 0.01
done
kill -0 "$hammer_pid" 2>/dev/null || echo "note: the load was over before the first rlctl show"
rlctl live_show show "$region"
check "show during the load exits 0 (got $RC)" test "$RC" -eq 0
check "show during the load: the configuration line first" \
    grep -q "^rate=10/[a-z]* .*capacity=5000 .*backend=shm name=$region" <(head -n 1 "$tmp/live_show.out")
rlctl live_top top "$region"
check "top during the load exits 0 (got $RC)" test "$RC" -eq 0
check "show and top during the load: nothing on stderr" err_empty live_show
check "top during the load: nothing on stderr" err_empty live_top

wait "${load_pids[@]}"
load_pids=()
hammer_denied=$(count_of hammer 429)
total_denied=0
total_ok=0
for k in hammer alice bob carol odd; do
    total_denied=$((total_denied + $(count_of "$k" 429)))
    total_ok=$((total_ok + $(count_of "$k" 200)))
done
check "the load got answers (200s $total_ok, 429s $total_denied, of 5100)" test $((total_ok + total_denied)) -eq 5100

# ---- show ------------------------------------------------------------------------

rlctl show show "$region"
check "show exits 0 (got $RC)" test "$RC" -eq 0
check "show: nothing on stderr" err_empty show
check "show: the configuration (rl_describe) first" \
    grep -qx "rate=10/[a-z]* algorithm=token_bucket burst=10 capacity=5000 .*backend=shm name=$region mode=0600.*" \
    <(head -n 1 "$tmp/show.out")
check "show: then exactly allowed limited errors keys capacity evictions" \
    test "$(tail -n +2 "$tmp/show.out" | sed 's/: [0-9]*$//' | tr '\n' ' ')" = \
    "allowed limited errors keys capacity evictions "
check "show: limited is the 429s the clients got ($(value show limited) vs $total_denied)" \
    test "$(value show limited)" = "$total_denied"
check "show: allowed is the 200s the clients got ($(value show allowed) vs $total_ok)" \
    test "$(value show allowed)" = "$total_ok"
check "show: 5 keys" test "$(value show keys)" = 5
check "show: capacity 5000 (the region's)" test "$(value show capacity)" = 5000
check "show: errors 0, evictions 0" test "$(value show errors) $(value show evictions)" = "0 0"

# ---- top ---------------------------------------------------------------------------

rlctl top top "$region"
check "top exits 0 (got $RC)" test "$RC" -eq 0
check "top: nothing on stderr" err_empty top
check "top: every line is COUNT<TAB>ERROR<TAB>KEY" \
    test "$(grep -cvP '^[0-9]+\t[0-9]+\t[ -~]*$' "$tmp/top.out")" -eq 0
top_key=$(head -n 1 "$tmp/top.out" | cut -f3)
top_count=$(head -n 1 "$tmp/top.out" | cut -f1)
top_error=$(head -n 1 "$tmp/top.out" | cut -f2)
check "top: the hammered key first (got \"$top_key\")" test "$top_key" = "key:$hammer_key"
check "top: COUNT $top_count >= its real denials $hammer_denied >= COUNT - ERROR $((top_count - top_error))" \
    test "$top_count" -ge "$hammer_denied" -a "$hammer_denied" -ge $((top_count - top_error))
check "top: the key with a backslash and 0xff written $odd_text" \
    test "$(cut -f3 "$tmp/top.out" | grep -cxF "$odd_text")" -eq 1
rlctl top1 top "$region" -n 1
check "top -n 1: one line, the hammered key" test "$(cut -f3 "$tmp/top1.out")" = "key:$hammer_key"
rlctl top_active top "$region" --active -n 5
check "top --active -n 5 exits 0 (got $RC)" test "$RC" -eq 0
check "top --active: at most 5 lines in the format" \
    test "$(wc -l <"$tmp/top_active.out")" -le 5 -a "$(grep -cvP '^[0-9]+\t[0-9]+\t' "$tmp/top_active.out")" -eq 0

# ---- peek and reset of keys pasted from top --------------------------------------------

pasted=$(cut -f3 "$tmp/top.out" | grep -xF "$odd_text")
rlctl peek_odd peek "$region" "$pasted"
check "peek of the pasted key exits 0 (got $RC)" test "$RC" -eq 0
check "peek: exactly allowed remaining limit reset_ms retry_after_ms" \
    test "$(sed 's/: [0-9]*$//' "$tmp/peek_odd.out" | tr '\n' ' ')" = "allowed remaining limit reset_ms retry_after_ms "
check "peek of the pasted key finds it spent: remaining 0 of 10 ($(tr '\n' ' ' <"$tmp/peek_odd.out"))" \
    test "$(value peek_odd remaining) $(value peek_odd limit)" = "0 10"
check "peek: reset_ms > 0" test "$(value peek_odd reset_ms)" -gt 0
get odd_after / -H "X-API-Key: $odd_key"
check "the server still limits that key" status_is odd_after 429
denied_now=$((total_denied + 1))
rlctl reset_odd reset "$region" "$pasted"
check "reset of the pasted key exits 0 (got $RC)" test "$RC" -eq 0
rlctl peek_fresh peek "$region" "$pasted"
check "after reset, peek shows it fresh: remaining 10, reset_ms 0 ($(tr '\n' ' ' <"$tmp/peek_fresh.out"))" \
    test "$(value peek_fresh remaining) $(value peek_fresh reset_ms)" = "10 0"
get odd_fresh / -H "X-API-Key: $odd_key"
check "and the server serves it again" status_is odd_fresh 200
rlctl peek_hammer peek "$region" "$top_key"
check "peek of the hammered key: remaining 0" test "$(value peek_hammer remaining)" = 0
rlctl peek_new peek "$region" 'key:never seen'
check "peek of an unknown key: remaining 10 of 10" \
    test "$(value peek_new remaining) $(value peek_new limit)" = "10 10"

# ---- metrics --------------------------------------------------------------------------

rlctl metrics metrics "$region"
check "metrics exits 0 (got $RC)" test "$RC" -eq 0
check "metrics: nothing on stderr" err_empty metrics
zone="zone=\"$region\""
check "metrics: the limited counter, labelled $zone" \
    grep -qx "ratelimit_checks_total{$zone,decision=\"limited\"} $denied_now" "$tmp/metrics.out"
check "metrics: the capacity" grep -qx "ratelimit_capacity{$zone} 5000" "$tmp/metrics.out"
check "metrics: the hammered key as a top_limited sample" \
    grep -q "^ratelimit_top_limited{$zone,key=\"key:hammer\"} [0-9][0-9]*\$" "$tmp/metrics.out"
check "metrics: the odd key escaped twice (\\\\\\\\ and \\\\xff)" \
    grep -qF "key=\"key:odd\\\\\\\\key\\\\xff\"}" "$tmp/metrics.out"
if [[ -x build/venv/bin/python ]]; then
    parsed=$(build/venv/bin/python -c '
import sys
from prometheus_client.parser import text_string_to_metric_families
keys = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        assert s.labels["zone"] == sys.argv[1], s
        if "key" in s.labels:
            keys.append(s.labels["key"])
print("\n".join(keys))
' "$region" <"$tmp/metrics.out" 2>&1)
    check "metrics: prometheus_client parses it; the label values are top's keys ($parsed)" \
        test "$(sort <<<"$parsed")" = "$(cut -f3 "$tmp/top.out" | sort)"
else
    echo "note: no build/venv (make test-metrics makes it); metrics not fed to prometheus_client"
fi

# ---- --config ----------------------------------------------------------------------------

rlctl cfg_show --config "backend=shm name=$region" show
check "--config (an attach) show exits 0 with the same counts" \
    test "$RC" -eq 0 -a "$(value cfg_show limited)" = "$denied_now"
rlctl cfg_peek --config "backend=shm name=$region" peek "$top_key"
check "--config peek of the hammered key: remaining 0" test "$RC $(value cfg_peek remaining)" = "0 0"
rlctl cfg_mem --config "rate=5/s" show
check "--config rate=5/s (memory) show: its configuration, capacity 100000" \
    test "$RC $(head -n 1 "$tmp/cfg_mem.out" | cut -d' ' -f1) $(value cfg_mem capacity)" = "0 rate=5/s 100000"
rlctl cfg_reset --config "rate=5/s" reset 'a\\b'
check "--config reset exits 0 (got $RC)" test "$RC" -eq 0
rlctl cfg_bad --config "rate=5/s burts=1" show
check "--config with a bad configuration: exit 1 naming the token (got $RC)" test "$RC" -eq 1
check "the message names burts" err_has cfg_bad burts

stop_server "$main_pid" TERM
check "the server stops with exit 0 (got $STOP_RC)" test "$STOP_RC" -eq 0

# --config on redis, when this machine has a redis-server (make test-redis
# installs it): a throwaway one on a free loopback port
if command -v redis-server >/dev/null 2>&1; then
    redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    extra_pids+=("$redis_pid")
    redis_config="rate=5/s backend=redis url=redis://127.0.0.1:$redis_port"
    for _ in $(seq 100); do
        rlctl redis_peek --config "$redis_config" peek 'key:r\\x\xff'
        [[ $RC -eq 0 ]] && break
        sleep 0.1
    done
    check "--config redis: peek exits 0 (got $RC), remaining 5 of 5" \
        test "$RC $(value redis_peek remaining) $(value redis_peek limit)" = "0 5 5"
    rlctl redis_reset --config "$redis_config" reset 'key:r\\x\xff'
    check "--config redis: reset exits 0 (got $RC)" test "$RC" -eq 0
    rlctl redis_show --config "$redis_config" show
    check "--config redis: show, the password-free configuration and capacity 0 (none)" \
        test "$RC $(head -n 1 "$tmp/redis_show.out" | grep -c "backend=redis url=redis://127.0.0.1:$redis_port") $(value redis_show capacity)" = "0 1 0"
    kill -TERM "$redis_pid"
    wait "$redis_pid"
    rlctl redis_down --config "$redis_config" peek k
    check "--config redis, the server gone: peek exits 1 (got $RC), naming the backend" \
        test "$RC" -eq 1 -a "$(grep -c 'redis' "$tmp/redis_down.err")" -ge 1
else
    echo "note: no redis-server here; rlctl --config on redis not tried"
fi

# ---- region-wide: four processes, each with its own offender -----------------------------
# Four servers of one worker each share one region; each is hammered with a
# key of its own. One rlctl top, from outside them all, lists all four.

four_pids=()
four_ports=()
for i in 1 2 3 4; do
    start_server "four$i" "$PREFORK_SERVER" --workers 1 --config "rate=3/hour backend=shm name=$four_region"
    four_pids+=("$PID")
    four_ports+=("$PORT")
done
for i in 1 2 3 4; do
    PORT=${four_ports[i - 1]} load "four$i" "offender$i" $((10 * i + 10))
done
wait "${load_pids[@]}"
load_pids=()
rlctl four_top top "$four_region" -n 4
check "top of a region shared by four processes lists their four offenders, most denied first" \
    test "$(cut -f 3 "$tmp/four_top.out" | tr '\n' ' ')" = "key:offender4 key:offender3 key:offender2 key:offender1 "
for i in 1 2 3 4; do
    denied=$(count_of "four$i" 429)
    line=$(grep -P "\tkey:offender$i\$" "$tmp/four_top.out")
    count=$(cut -f 1 <<<"$line")
    error=$(cut -f 2 <<<"$line")
    check "offender$i, denied $denied times by its own server: COUNT $count >= $denied >= COUNT - ERROR" \
        test "${count:-0}" -ge "$denied" -a "$denied" -ge $((${count:-0} - ${error:-0})) -a "$denied" -eq $((10 * i + 7))
done
for i in 4 3 2 1; do
    stop_server "${four_pids[i - 1]}" TERM
done
check "the four servers stopped, the creator last, and the region is gone" test ! -e "/dev/shm$four_region"

# ---- a region whose creator was SIGKILLed ---------------------------------------------------

start_server killed "$PREFORK_SERVER" --workers 1 --config "rate=3/hour backend=shm name=$killed_region"
killed_pid=$PID
load victim victim 8
wait "${load_pids[@]}"
load_pids=()
workers=$(pgrep -P "$killed_pid")
# shellcheck disable=SC2086 # one pid a word
kill -KILL "$killed_pid" $workers
wait "$killed_pid" 2>/dev/null
for w in $workers; do
    for _ in $(seq 100); do running "$w" || break; sleep 0.1; done
done
check "the SIGKILLed server left its region" test -e "/dev/shm$killed_region"
rlctl killed_show show "$killed_region"
check "show of the dead server's region exits 0 (got $RC)" test "$RC" -eq 0
check "and reads its counts: limited 5, allowed 3" \
    test "$(value killed_show limited) $(value killed_show allowed)" = "5 3"
check "show of the dead server's region: nothing on stderr" err_empty killed_show
rlctl killed_top top "$killed_region"
check "top of the dead server's region: key:victim, 5 denials" \
    test "$(head -n 1 "$tmp/killed_top.out")" = "$(printf '5\t0\tkey:victim')"
# A copy of it that says it is of a newer layout version: refused, clearly.
cp "/dev/shm$killed_region" "/dev/shm$newer_region"
python3 -c 'import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(8); f.write(struct.pack("=I", 999))' "/dev/shm$newer_region"
rlctl newer show "$newer_region"
check "show of a region of a newer layout version: exit 1 (got $RC)" test "$RC" -eq 1
check "says which layout version it has" err_has newer "layout version 999"
check "and leaves it alone" test -e "/dev/shm$newer_region"
rm -f "/dev/shm$newer_region"
rlctl unlink unlink "$killed_region"
check "unlink exits 0 (got $RC)" test "$RC" -eq 0
check "unlink removed the region" test ! -e "/dev/shm$killed_region"
rlctl unlink_again unlink "$killed_region"
check "unlink of a region no longer there: exit 1 (got $RC)" test "$RC" -eq 1
check "and says no such region" err_has unlink_again "no such region"
rlctl gone_show show "$killed_region"
check "show after unlink: exit 1 (got $RC), no such region" test "$RC" -eq 1 -a -s "$tmp/gone_show.err"

# ---- errors -------------------------------------------------------------------------------

rlctl missing show "$missing_region"
check "show of a missing region: exit 1 (got $RC)" test "$RC" -eq 1
check "says no such region, naming it" grep -q "^rlctl: $missing_region: no such region" "$tmp/missing.err"
check "and creates nothing" test ! -e "/dev/shm$missing_region"
for cmd in top peek reset metrics; do
    key=()
    [[ $cmd == peek || $cmd == reset ]] && key=(k)
    rlctl missing_cmd "$cmd" "$missing_region" "${key[@]}"
    check "$cmd of a missing region: exit 1 (got $RC), no such region" \
        test "$RC" -eq 1 -a "$(grep -c 'no such region' "$tmp/missing_cmd.err")" -eq 1
done

head -c 65536 /dev/zero | tr '\0' 'x' >"/dev/shm$garbage"
rlctl garbage show "$garbage"
check "show of a file that is not a region: exit 1 (got $RC)" test "$RC" -eq 1
check "says it is not a libratelimit region" err_has garbage "not a libratelimit region"
check "and leaves the file alone" test "$(wc -c <"/dev/shm$garbage")" -eq 65536
rlctl garbage_top top "$garbage"
check "top of it: exit 1 (got $RC)" test "$RC" -eq 1
rm -f "/dev/shm$garbage"

rlctl noslash show "${region#/}"
check "a name without a leading '/': exit 1 (got $RC)" test "$RC" -eq 1
check "says a region name starts with '/'" err_has noslash "starts with '/'"
rlctl noslash_unlink unlink "${region#/}"
check "unlink of a name without a leading '/': exit 1 (got $RC)" test "$RC" -eq 1
rlctl blank show "/a rate=5/s"
check "a name with a blank (which would smuggle in rate=): exit 1 (got $RC), nothing created" \
    test "$RC" -eq 1 -a ! -e "/dev/shm/a"

for args in "" "frobnicate /x" "show" "show /x extra" "peek /x" "reset /x" "top" "top /x -n" "top /x -n x" \
    "top /x --bogus" "unlink" "--config" "--config rate=5/s top /x" "--config rate=5/s peek"; do
    # shellcheck disable=SC2086 # word splitting wanted
    rlctl usage $args
    check "rlctl $args: exit 2 (got $RC)" test "$RC" -eq 2
    check "rlctl $args: the usage on stderr, nothing on stdout" \
        test ! -s "$tmp/usage.out" -a "$(grep -c '^usage: rlctl' "$tmp/usage.err")" -eq 1
done
# shellcheck disable=SC1003 # 'a\' is the text a, backslash
for bad in 'a\q' 'a\' '\x4a' '\xFF' '\x0' $'tab\there'; do
    rlctl badkey peek "$missing_region" "$bad"
    check "KEY $(printf %q "$bad") is not in the encoding: exit 2 (got $RC)" test "$RC" -eq 2
    check "KEY $(printf %q "$bad"): says so" err_has badkey "not in the key encoding"
done
rlctl help --help
check "--help: exit 0, the usage on stdout" test "$RC" -eq 0 -a "$(grep -c '^usage: rlctl' "$tmp/help.out")" -eq 1

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
