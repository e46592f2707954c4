#!/usr/bin/env bash
# loadtest.sh — the example servers under load, driven by wrk (run by `make
# loadtest`; `make test-loadtest` runs the short mode). Everything runs on
# this machine, on loopback, against servers started fresh on free ports:
#
#   1. burst    200 keys at once, each at 50/hour (nothing refills during the
#               run), each sent 100 requests over 4 connections: every key
#               gets EXACTLY 50 200s, counted by the client per key
#               (bench/loadtest/burst.lua) and by the server's own
#               ratelimit_checks_total{decision="allowed"} (GET /metrics).
#               prefork_server (backend=shm, 4 workers) and http_server
#               (backend=memory, 4 threads).
#   2. abuse    everyone at 10/s; a legitimate key paced at 5/s
#               (bench/loadtest/onekey.lua, wrk's delay()) amid a flood of
#               20,000 other keys (bench/loadtest/keys.lua) and one abusive
#               key hammering on 4 connections: the legitimate key sees ZERO
#               429s, the abusive key gets no more than 10 + 10/s of 200s.
#   3. throughput (not in the short mode)  req/s and p99 latency of
#               prefork_server and http_server with a limit that denies a good
#               share (1000/s per key over 16 keys) and with one that never
#               denies (10^9/s), and of a stock nginx (bench/loadtest/
#               nginx.conf.in: limit_req keyed by X-API-Key, the same rates,
#               the same worker count) with the same wrk settings: the median
#               of LOADTEST_ROUNDS interleaved rounds (order rotated).
#   4. slowloris  300 idle connections and 20 that drip a request head one
#               byte every 0.5 s (bench/loadtest/slowloris.py), for 10 s:
#               a probe (curl --max-time 1) every 0.5 s must be answered 200
#               within 1 s, every time.
#
# It prints a table at the end, then "N passed, M failed"; it exits 1 when an
# assertion of phases 1, 2 or 4 fails (the throughput targets of phase 3 are
# reported, not asserted: they depend on the machine). The full mode also
# writes the table into BENCHMARKS.md between the "loadtest:results" markers.
#
# Environment:
#   LOADTEST_SHORT=1     phases 1, 2 and 4 only, a few seconds each, no nginx
#                        (what `make test` runs; under a minute)
#   LOADTEST_SECONDS     seconds per wrk run of phases 2 and 3 (5; short: 3)
#   LOADTEST_ROUNDS      rounds of phase 3 (5)
#   LOADTEST_WORKERS     phase 3: prefork_server's and nginx's worker
#                        processes, http_server's threads (the CPU count);
#                        phases 1, 2 and 4 always run 4
#   LOADTEST_PHASES      the phases to run ("1 2 3 4"; short: "1 2 4")
#   HTTP_SERVER, PREFORK_SERVER   the binaries (build/http_server, build/prefork_server)
#   OUT                  the file the full mode writes (BENCHMARKS.md; empty: none)
#
# Needs wrk, curl, python3, and for phase 3 nginx (Debian: wrk, curl,
# python3, nginx-light), installed with apt-get when run as root.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
PATH=$PATH:/usr/sbin # nginx, for users whose PATH lacks it

SHORT=${LOADTEST_SHORT:-0}
if [[ $SHORT == 1 ]]; then
    RUN_SECONDS=${LOADTEST_SECONDS:-3}
    SLOW_SECONDS=6
    PHASES=${LOADTEST_PHASES:-1 2 4}
    [[ " $PHASES " != *" 3 "* ]] || { echo "loadtest: the short mode has no phase 3" >&2; exit 1; }
else
    RUN_SECONDS=${LOADTEST_SECONDS:-5}
    SLOW_SECONDS=10
    PHASES=${LOADTEST_PHASES:-1 2 3 4}
fi
# phase N: whether phase N runs
phase() { [[ " $PHASES " == *" $1 "* ]]; }
ROUNDS=${LOADTEST_ROUNDS:-5}
WORKERS=${LOADTEST_WORKERS:-$(nproc)}
HTTP_SERVER=${HTTP_SERVER:-build/http_server}
PREFORK_SERVER=${PREFORK_SERVER:-build/prefork_server}
OUT=${OUT-BENCHMARKS.md}

die() { echo "loadtest: $*" >&2; exit 1; }
say() { echo "loadtest: $*" >&2; }
for v in RUN_SECONDS ROUNDS WORKERS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a whole number >= 1 (got '${!v}')"
done
[[ -x $HTTP_SERVER && -x $PREFORK_SERVER ]] || die "$HTTP_SERVER or $PREFORK_SERVER is missing: run 'make examples' first"

# shellcheck source=scripts/need_package.sh
. scripts/need_package.sh
need_package wrk wrk
need_package curl curl
need_package python3 python3
need_package pkill procps
! phase 3 || need_package nginx nginx-light

# ---- processes ----------------------------------------------------------------

tmp=$(mktemp -d)
started=() # every process started here: servers, nginx, wrk, the flood
regions=() # shm names given to prefork_server
# ours PID: PID is still a child of this script (bash reaps a child that
# exits on its own at once, and pid_max may be small: the number alone may
# belong to another process by the time we signal it)
ours() { [[ $(ps -o ppid= -p "$1" 2>/dev/null | tr -d ' ') == "$$" ]]; }
cleanup() {
    local p live=()
    for p in "${started[@]}"; do ours "$p" && live+=("$p"); done
    for p in "${live[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 20); do
        for p in "${live[@]}"; do kill -0 "$p" 2>/dev/null && break; p=; done
        [[ -z ${p:-} ]] && break
        sleep 0.1
    done
    for p in "${live[@]}"; do
        if ours "$p"; then
            pkill -KILL -P "$p" 2>/dev/null
            kill -KILL "$p" 2>/dev/null
        fi
    done
    wait 2>/dev/null
    for p in "${regions[@]}"; do rm -f "/dev/shm$p"; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# forget PID...: PID was waited for: the trap has nothing more to do with it
forget() {
    local p q keep=()
    for p in "${started[@]}"; do
        for q in "$@"; do [[ $p == "$q" ]] && continue 2; done
        keep+=("$p")
    done
    started=("${keep[@]}")
}

passed=0
failed=0
failures=()
warnings=()
# check DESCRIPTION COMMAND...: counts a pass, or a failure named on stderr
check() {
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$what")
        echo "FAIL: $what" >&2
    fi
}
warn() {
    warnings+=("$*")
    echo "loadtest: WARNING: $*" >&2
}

# start_server NAME BINARY ARGS...: BINARY --port 0 ARGS in the background;
# waits for its "listening on 127.0.0.1:PORT" line; sets PORT and PID.
start_server() {
    local name=$1 bin=$2
    shift 2
    : >"$tmp/$name.out"
    "$bin" --port 0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    PID=$!
    started+=("$PID")
    PORT=
    for _ in $(seq 100); do
        PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$tmp/$name.out")
        [[ -n $PORT ]] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$tmp/$name.err" >&2
    die "$name did not start ($bin --port 0 $*)"
}

# stop_server NAME PID: SIGTERM, then at most 5 s; the spec says it exits 0
# within 1 s whatever clients do, so anything else is a warning. Also warns
# about anything on its stderr but the one-line stop summary.
stop_server() {
    local name=$1 pid=$2 t0 ms rc
    t0=$(date +%s%N)
    ours "$pid" || warn "$name (pid $pid) had exited before it was stopped"
    ours "$pid" && kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null && ours "$pid"; then
        warn "$name (pid $pid) was still running 5 s after SIGTERM: killed"
        pkill -KILL -P "$pid" 2>/dev/null
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        forget "$pid"
        return
    fi
    wait "$pid"
    rc=$?
    forget "$pid"
    ms=$((($(date +%s%N) - t0) / 1000000))
    [[ $rc == 0 ]] || warn "$name exited with status $rc after SIGTERM"
    ((ms <= 1500)) || warn "$name took $ms ms to stop after SIGTERM"
    if grep -v -e '^[a-z_]*: stopped by signal' -e '^[a-z_]*: limited: "' "$tmp/$name.err" | grep -q .; then
        warn "$name wrote to stderr: $(grep -v -e '^[a-z_]*: stopped by signal' -e '^[a-z_]*: limited: "' "$tmp/$name.err" | head -n 3 | tr '\n' ' ')"
    fi
}

next_region=0
# fresh_region: a new shm name in $REGION
fresh_region() {
    next_region=$((next_region + 1))
    REGION=/rl-loadtest-$$-$next_region
    regions+=("$REGION")
}

# metrics PORT: reads GET /metrics into M_ALLOWED, M_LIMITED, M_ERRORS and
# M_EVICTIONS ("?" each when the server has no /metrics).
metrics() {
    local text
    M_ALLOWED='?' M_LIMITED='?' M_ERRORS='?' M_EVICTIONS='?'
    text=$(curl -s --max-time 5 "http://127.0.0.1:$1/metrics") || return 1
    grep -q '^ratelimit_checks_total' <<<"$text" || return 1
    M_ALLOWED=$(sed -n 's/^ratelimit_checks_total{decision="allowed"} \([0-9]*\)$/\1/p' <<<"$text")
    M_LIMITED=$(sed -n 's/^ratelimit_checks_total{decision="limited"} \([0-9]*\)$/\1/p' <<<"$text")
    M_ERRORS=$(sed -n 's/^ratelimit_errors_total \([0-9]*\)$/\1/p' <<<"$text")
    M_EVICTIONS=$(sed -n 's/^ratelimit_evictions_total \([0-9]*\)$/\1/p' <<<"$text")
}

# field FILE NAME: NAME's value on the RESULT line of FILE (empty if none)
field() { sed -n "s/^RESULT.* $2=\([^ ]*\).*/\1/p" "$1" | tail -n 1; }

# bg_wrk OUTFILE ARGS...: wrk ARGS in the background, its pid in WRK_PID
bg_wrk() {
    local out=$1
    shift
    wrk "$@" >"$out" 2>&1 &
    WRK_PID=$!
    started+=("$WRK_PID")
}

# finish_wrk PID DIR N CAP: waits until the N threads of wrk PID have each
# written DIR/done-*, or CAP seconds; then interrupts wrk (which otherwise
# runs its whole -d) and waits for it to print its results.
finish_wrk() {
    local pid=$1 dir=$2 n=$3 cap=$4 i
    for ((i = 0; i < cap * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        (($(find "$dir" -name 'done-*' | wc -l) >= n)) && break
        sleep 0.05
    done
    # wrk installs its SIGINT handler just after starting its threads:
    # repeat until it is gone
    for ((i = 0; i < 100; i++)); do
        ours "$pid" || break
        kill -INT "$pid" 2>/dev/null
        sleep 0.1
    done
    wait "$pid" 2>/dev/null
    forget "$pid"
}

# ms MICROSECONDS: in milliseconds, 2 decimals ("?" as is)
ms() { [[ $1 =~ ^[0-9.]+$ ]] && awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }' || printf '?'; }
# le A B: A and B are numbers and A <= B
le() { [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]] && (($1 <= $2)); }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# commas N: N rounded, with thousands separators (anything not a number as is)
commas() {
    [[ $1 =~ ^[0-9.]+$ ]] || { printf '%s' "$1"; return; }
    awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); r = ""; while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) } printf "%s", s r }'
}
minmax() { tr ' ' '\n' | grep . | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo, hi }'; }

start_all=$SECONDS
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- phase 1: burst of many keys, exact counts ---------------------------------

P1_KEYS=200
P1_QUOTA=50
P1_CONNS=4
P1_PER_KEY=$((2 * P1_QUOTA))       # requests each key gets, over all connections
P1_ROUNDS=$((P1_PER_KEY / P1_CONNS)) # times each connection walks all the keys
P1_CAP=60                          # seconds wrk may take at most
p1_rows=()

phase1() {
    local label=$1 name=$2 bin=$3
    shift 3
    local dir="$tmp/$name.done" out="$tmp/$name.wrk" exact ok limited other serr unfinished nkeys result=PASS
    say "phase 1 (burst): $label"
    start_server "$name" "$bin" "$@"
    rm -rf "$dir" && mkdir -p "$dir"
    bg_wrk "$out" -t"$P1_CONNS" -c"$P1_CONNS" -d"${P1_CAP}s" --timeout 10s -s bench/loadtest/burst.lua \
        "http://127.0.0.1:$PORT/" -- p1- "$P1_KEYS" "$P1_ROUNDS" "$P1_CONNS" "$dir"
    finish_wrk "$WRK_PID" "$dir" "$P1_CONNS" "$P1_CAP"
    metrics "$PORT" || warn "$label: no /metrics"
    stop_server "$name" "$PID"

    nkeys=$(grep -c '^KEY ' "$out")
    exact=$(awk -v q="$P1_QUOTA" '$1 == "KEY" && $3 == "ok=" q' "$out" | wc -l)
    ok=$(field "$out" ok) limited=$(field "$out" limited) other=$(field "$out" other)
    serr=$(field "$out" socket_errors) unfinished=$(field "$out" unfinished)
    if [[ -z $ok ]]; then
        cat "$out" >&2
        ok=0 limited=0 other=0 serr='?' unfinished='?'
    fi
    awk -v q="$P1_QUOTA" '$1 == "KEY" && $3 != "ok=" q { print "  " $0 }' "$out" | head -n 5 >&2
    local before=$failed
    check "$label: every one of the $P1_KEYS keys got exactly $P1_QUOTA 200s, counted by the client ($exact of $nkeys keys did)" \
        test "$exact" -eq "$P1_KEYS" -a "$nkeys" -eq "$P1_KEYS"
    check "$label: every request was answered ($((ok + limited + other)) of $((P1_KEYS * P1_PER_KEY)); socket errors $serr, unfinished connections $unfinished, other statuses $other)" \
        test "$((ok + limited + other))" -eq "$((P1_KEYS * P1_PER_KEY))" -a "$other" -eq 0
    check "$label: the server counted exactly $((P1_KEYS * P1_QUOTA)) allowed (/metrics: $M_ALLOWED)" \
        test "$M_ALLOWED" = "$((P1_KEYS * P1_QUOTA))"
    check "$label: the server counted as many denials as the client got 429s ($M_LIMITED, $limited)" \
        test "$M_LIMITED" = "$limited"
    check "$label: no limiter errors (/metrics: $M_ERRORS)" test "$M_ERRORS" = 0
    ((failed == before)) || result=FAIL
    p1_rows+=("| $label | $exact of $P1_KEYS | $(commas "$ok") | $(commas "$M_ALLOWED") | $(commas "$limited") / $(commas "$M_LIMITED") | $serr | **$result** |")
}

if phase 1; then
fresh_region
phase1 "prefork_server, shm, 4 workers" p1-prefork "$PREFORK_SERVER" --workers 4 \
    --config "rate=$P1_QUOTA/hour backend=shm name=$REGION"
phase1 "http_server, memory, 4 threads" p1-http "$HTTP_SERVER" --threads 4 --config "rate=$P1_QUOTA/hour"
fi

# ---- phase 2: a legitimate user amid a flood and an abuser ----------------------

P2_RATE=10         # per second, for everyone
P2_DELAY_MS=200    # the legitimate key: 5/s at most
P2_FLOOD_KEYS=20000
P2_FLOOD_CONNS=16
P2_ABUSE_CONNS=4
p2_rows=()

phase2() {
    local label=$1 name=$2 bin=$3
    shift 3
    local lo="$tmp/$name.legit" ao="$tmp/$name.abuser" fo="$tmp/$name.flood" fpid apid lpid
    local l_ok l_lim l_other l_p99 l_max a_ok a_lim a_dur bound f_req f_non2xx result=PASS
    say "phase 2 (legit user amid a flood and an abuser): $label"
    start_server "$name" "$bin" "$@"
    local url="http://127.0.0.1:$PORT/"
    bg_wrk "$fo" -t1 -c"$P2_FLOOD_CONNS" -d"${RUN_SECONDS}s" -s bench/loadtest/keys.lua "$url" -- p2-flood- "$P2_FLOOD_KEYS"
    fpid=$WRK_PID
    bg_wrk "$ao" -t1 -c"$P2_ABUSE_CONNS" -d"${RUN_SECONDS}s" -s bench/loadtest/onekey.lua "$url" -- p2-abuser 0
    apid=$WRK_PID
    bg_wrk "$lo" -t1 -c1 -d"${RUN_SECONDS}s" -s bench/loadtest/onekey.lua "$url" -- p2-legit "$P2_DELAY_MS"
    lpid=$WRK_PID
    wait "$fpid" "$apid" "$lpid"
    forget "$fpid" "$apid" "$lpid"
    metrics "$PORT" || warn "$label: no /metrics"
    stop_server "$name" "$PID"

    l_ok=$(field "$lo" ok) l_lim=$(field "$lo" limited) l_other=$(field "$lo" other)
    l_p99=$(field "$lo" p99_us) l_max=$(field "$lo" max_us)
    a_ok=$(field "$ao" ok) a_lim=$(field "$ao" limited) a_dur=$(field "$ao" duration_us)
    f_req=$(field "$fo" requests) f_non2xx=$(field "$fo" non2xx)
    [[ -n $l_ok ]] || { cat "$lo" >&2; l_ok=0 l_lim='?' l_other='?'; }
    [[ -n $a_ok ]] || { cat "$ao" >&2; a_ok='?' a_lim='?' a_dur=0; }
    [[ -n $f_req ]] || { cat "$fo" >&2; f_req='?' f_non2xx='?'; }
    # a fresh key's burst (= the rate's limit) plus one per 1/rate s of the
    # abuser's run (which spans every check it made), plus one for rounding
    bound=$((P2_RATE + (a_dur * P2_RATE + 999999) / 1000000 + 1))
    local before=$failed
    check "$label: the legitimate key (5/s of 10/s) got ZERO 429s ($l_lim 429s, $l_ok 200s, $l_other other)" \
        test "$l_lim" = 0 -a "$l_other" = 0
    check "$label: the legitimate key was served at all ($l_ok 200s)" test "$l_ok" -gt 0
    check "$label: the abusive key got at most $bound 200s in $((a_dur / 1000)) ms (got $a_ok)" \
        le "$a_ok" "$bound"
    check "$label: no limiter errors (/metrics: $M_ERRORS)" test "$M_ERRORS" = 0
    ((failed == before)) || result=FAIL
    p2_rows+=("| $label | $l_ok / $l_lim | $(ms "$l_p99") / $(ms "$l_max") | $a_ok (≤ $bound) / $(commas "$a_lim") | $(commas "$f_req") ($(commas "$f_non2xx") non-2xx) | $M_EVICTIONS | **$result** |")
}

if phase 2; then
fresh_region
phase2 "prefork_server, shm, 4 workers" p2-prefork "$PREFORK_SERVER" --workers 4 \
    --config "rate=$P2_RATE/s backend=shm name=$REGION"
phase2 "http_server, memory, 4 threads" p2-http "$HTTP_SERVER" --threads 4 --config "rate=$P2_RATE/s"
fi

# ---- phase 3: throughput, limiting on and off, next to nginx ---------------------

P3_THREADS=2
P3_CONNS=64
P3_KEYS=16
P3_RATE_ON=1000       # per second per key: denies a good share at these speeds
P3_RATE_OFF=1000000000 # never denies
P3_NGINX_BURST_OFF=1000000 # nginx counts in milliseconds: a burst so that no
                           # millisecond's requests are ever denied
declare -A p3_rps p3_p99 p3_denied p3_errors p3_med p3_cpu p3_cpu_med
declare -A p3_at # "CONFIG|ROUND|rps" and "CONFIG|ROUND|cpu": one run's figures
p3_configs=("prefork_server on" "prefork_server off" "http_server on" "http_server off" "nginx on" "nginx off")
p3_rows=()

# start_nginx RATE BURST: nginx in the foreground on a free loopback port,
# with a temporary prefix; sets PORT and PID
nginx_prefix=
start_nginx() {
    local rate=$1 burst=$2 attempt
    nginx_prefix=$(mktemp -d "$tmp/nginx.XXXXXX")
    chmod 755 "$tmp" "$nginx_prefix" # the workers run as nobody when we are root
    mkdir -p "$nginx_prefix/html" "$nginx_prefix/temp"
    printf ok >"$nginx_prefix/html/ok.txt"
    chmod 644 "$nginx_prefix/html/ok.txt"
    for attempt in 1 2 3 4 5; do
        PORT=$(free_port)
        sed -e "s|@PREFIX@|$nginx_prefix|g" -e "s|@PORT@|$PORT|g" -e "s|@WORKERS@|$WORKERS|g" \
            -e "s|@RATE@|$rate|g" -e "s|@BURST@|$burst|g" bench/loadtest/nginx.conf.in >"$nginx_prefix/nginx.conf"
        nginx -p "$nginx_prefix" -c "$nginx_prefix/nginx.conf" -e "$nginx_prefix/error.log" \
            >"$nginx_prefix/stdout" 2>&1 &
        PID=$!
        started+=("$PID")
        for _ in $(seq 100); do
            [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$PORT/none") == 404 ]] && return 0
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
        forget "$PID"
        grep -q 'Address already in use' "$nginx_prefix/error.log" "$nginx_prefix/stdout" 2>/dev/null || break
        say "port $PORT was taken, trying another (attempt $attempt)"
    done
    cat "$nginx_prefix/error.log" "$nginx_prefix/stdout" >&2
    die "nginx did not start (see above)"
}

# free_port: a loopback port nothing listens on (outside the ephemeral range)
free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

stop_nginx() {
    local pid=$1
    ours "$pid" || warn "nginx (pid $pid) had exited before it was stopped"
    ours "$pid" && kill -QUIT "$pid" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null && ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        sleep 0.5
        pkill -KILL -P "$pid" 2>/dev/null
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    forget "$pid"
    if grep -q '\[\(emerg\|alert\|crit\|error\)\]' "$nginx_prefix/error.log" 2>/dev/null; then
        warn "nginx logged errors: $(grep '\[\(emerg\|alert\|crit\|error\)\]' "$nginx_prefix/error.log" | head -n 3 | tr '\n' ' ')"
    fi
}

p3_run() {
    local cfg=$1 round=$2 server rate stopper
    local out="$tmp/p3.$round.${cfg// /_}.wrk"
    server=${cfg% *}
    if [[ $cfg == *on ]]; then rate=$P3_RATE_ON; else rate=$P3_RATE_OFF; fi
    case $server in
    prefork_server)
        fresh_region
        start_server p3 "$PREFORK_SERVER" --workers "$WORKERS" --config "rate=$rate/s backend=shm name=$REGION"
        stopper=server
        ;;
    http_server)
        start_server p3 "$HTTP_SERVER" --threads "$WORKERS" --config "rate=$rate/s"
        stopper=server
        ;;
    nginx)
        if [[ $cfg == *on ]]; then start_nginx "$rate" "$rate"; else start_nginx "$rate" "$P3_NGINX_BURST_OFF"; fi
        stopper=nginx
        ;;
    esac
    local cpu0 cpu1
    cpu0=$(cpu_ticks "$PID")
    wrk -t"$P3_THREADS" -c"$P3_CONNS" -d"${RUN_SECONDS}s" -s bench/loadtest/keys.lua \
        "http://127.0.0.1:$PORT/" -- p3-key- "$P3_KEYS" >"$out" 2>&1
    cpu1=$(cpu_ticks "$PID")
    if [[ $stopper == nginx ]]; then stop_nginx "$PID"; else stop_server p3 "$PID"; fi
    local rps p99 req non2xx serr tmo cpu
    rps=$(field "$out" rps) p99=$(field "$out" p99_us) req=$(field "$out" requests)
    non2xx=$(field "$out" non2xx) serr=$(field "$out" socket_errors) tmo=$(field "$out" timeouts)
    if [[ -z $rps ]]; then
        cat "$out" >&2
        warn "$cfg, round $round: wrk printed no result"
        return
    fi
    p3_rps[$cfg]+=" $rps"
    p3_p99[$cfg]+=" $p99"
    p3_denied[$cfg]+=" $(awk -v d="$non2xx" -v r="$req" 'BEGIN { printf "%.1f", r ? 100 * d / r : 0 }')"
    p3_errors[$cfg]=$((${p3_errors[$cfg]:-0} + serr + tmo))
    cpu=$(awk -v t="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" -v r="$req" 'BEGIN { printf "%.2f", r ? t * 1e6 / hz / r : 0 }')
    p3_cpu[$cfg]+=" $cpu"
    p3_at[$cfg|$round|rps]=$rps
    p3_at[$cfg|$round|cpu]=$cpu
    say "phase 3, round $round: $cfg: $rps req/s, p99 $p99 µs, $non2xx of $req non-2xx, $serr socket errors, $tmo over wrk's timeout; server CPU $cpu µs per request"
}

# cpu_ticks PID: user + system CPU time of PID and its children (workers),
# in clock ticks, all their threads included
cpu_ticks() {
    local p sum=0 f
    for p in "$1" $(pgrep -P "$1"); do
        # the fields after "pid (comm) ": utime and stime are the 12th and 13th
        f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        sum=$((sum + ${f:-0}))
    done
    echo "$sum"
}

# ratio A B WHAT: the median over the rounds of A's WHAT (rps, cpu) divided
# by B's in the same round (both ran within a minute of each other, so a
# change of load on the machine between rounds cancels out)
ratio() {
    local a=$1 b=$2 what=$3 r list=
    for ((r = 1; r <= ROUNDS; r++)); do
        [[ -n ${p3_at[$a|$r|$what]:-} && -n ${p3_at[$b|$r|$what]:-} ]] || continue
        list+=" $(awk -v x="${p3_at[$a|$r|$what]}" -v y="${p3_at[$b|$r|$what]}" 'BEGIN { if (y > 0) printf "%.4f", x / y }')"
    done
    median <<<"$list"
}

phase3() {
    local n=${#p3_configs[@]} round i
    for ((round = 1; round <= ROUNDS; round++)); do
        for ((i = 0; i < n; i++)); do
            p3_run "${p3_configs[$(((i + round - 1) % n))]}" "$round"
        done
    done
    local cfg med p99 label vs_off vs_nginx server cpu cpu_vs_off
    for cfg in "${p3_configs[@]}"; do
        p3_med[$cfg]=$(median <<<"${p3_rps[$cfg]:-}")
        p3_cpu_med[$cfg]=$(median <<<"${p3_cpu[$cfg]:-}")
    done
    for cfg in "${p3_configs[@]}"; do
        server=${cfg% *}
        med=${p3_med[$cfg]}
        [[ -n $med ]] || { p3_rows+=("| $cfg | — | — | — | — | — | — | — | — | — |"); continue; }
        p99=$(median <<<"${p3_p99[$cfg]}")
        cpu=$(awk -v c="${p3_cpu_med[$cfg]}" 'BEGIN { printf "%.2f", c }')
        if [[ $cfg == *on ]]; then
            label="$server, limit on ($P3_RATE_ON/s per key)"
            vs_off=$(awk -v r="$(ratio "$cfg" "$server off" rps)" 'BEGIN { if (r != "") printf "%.2fx", r; else print "—" }')
            cpu_vs_off=$(awk -v r="$(ratio "$cfg" "$server off" cpu)" 'BEGIN { if (r != "") printf "%+.1f%%", 100 * (r - 1); else print "—" }')
        else
            label="$server, limit off (never denies)"
            vs_off="1" cpu_vs_off="0"
        fi
        if [[ $server == nginx ]]; then
            vs_nginx=1
        else
            vs_nginx=$(awk -v r="$(ratio "$cfg" "nginx ${cfg##* }" rps)" 'BEGIN { if (r != "") printf "%.2fx", r; else print "—" }')
        fi
        p3_rows+=("| $label | **$(commas "$med")** | $(read -r lo hi < <(minmax <<<"${p3_rps[$cfg]}"); echo "$(commas "$lo")–$(commas "$hi")") | $(ms "$p99") | $(awk -v d="$(median <<<"${p3_denied[$cfg]}")" 'BEGIN { printf "%.1f", d }')% | $cpu | $vs_off | $cpu_vs_off | $vs_nginx | ${p3_errors[$cfg]:-0} |")
    done
}

if phase 3; then
    say "phase 3 (throughput): $ROUNDS rounds of ${#p3_configs[@]} configurations, ${RUN_SECONDS}s each"
    phase3
fi

# ---- phase 4: slowloris and idle flood --------------------------------------------

P4_IDLE=300
P4_DRIPPERS=20
p4_rows=()

phase4() {
    local label=$1 name=$2 bin=$3
    shift 3
    local fo="$tmp/$name.flood" probes="$tmp/$name.probes" fpid n bad slowest result=PASS
    say "phase 4 (slowloris, $P4_IDLE idle + $P4_DRIPPERS drippers, ${SLOW_SECONDS}s): $label"
    start_server "$name" "$bin" "$@"
    python3 bench/loadtest/slowloris.py "$PORT" "$P4_IDLE" "$P4_DRIPPERS" "$SLOW_SECONDS" >"$fo" 2>&1 &
    fpid=$!
    started+=("$fpid")
    : >"$probes"
    sleep 1 # the flood is in place
    while kill -0 "$fpid" 2>/dev/null; do
        # curl prints the write-out on failure too: 000 and the time it took
        curl -s -o /dev/null --max-time 1 -w '%{http_code} %{time_total}\n' -H 'X-API-Key: p4-probe' \
            "http://127.0.0.1:$PORT/" >>"$probes"
        sleep 0.5
    done
    wait "$fpid"
    forget "$fpid"
    metrics "$PORT" || warn "$label: no /metrics"
    stop_server "$name" "$PID"
    n=$(wc -l <"$probes")
    bad=$(awk '$1 != 200 || $2 > 1.0' "$probes" | wc -l)
    slowest=$(awk '$2 > m { m = $2 } END { printf "%.3f", m }' "$probes")
    local before=$failed
    check "$label: every probe was answered 200 within 1 s ($((n - bad)) of $n; slowest $slowest s)" \
        test "$bad" -eq 0 -a "$n" -gt 0
    check "$label: the flood ran ($(tr '\n' ' ' <"$fo"))" grep -q '^RESULT ' "$fo"
    ((failed == before)) || result=FAIL
    local idle_o idle_c drip_c s408
    idle_o=$(field "$fo" idle_opened) idle_c=$(field "$fo" idle_closed)
    drip_c=$(field "$fo" drippers_cut) s408=$(field "$fo" status_408)
    # the spec: a connection that sent nothing is closed at the header
    # timeout (5 s), a head begun and not finished gets a 408 then
    if ((SLOW_SECONDS > 6)); then
        [[ ${idle_c:-0} -gt 0 ]] || warn "$label: no idle connection was closed in $SLOW_SECONDS s (header timeout 5 s)"
        [[ ${s408:-0} -gt 0 ]] || warn "$label: no dripping connection got a 408 in $SLOW_SECONDS s (header timeout 5 s)"
    fi
    p4_rows+=("| $label | $((n - bad)) of $n | $slowest s | ${idle_o:-?} opened, ${idle_c:-?} closed by the server | ${drip_c:-?} cut, ${s408:-?} with a 408 | **$result** |")
}

if phase 4; then
fresh_region
phase4 "prefork_server, 4 workers" p4-prefork "$PREFORK_SERVER" --workers 4 \
    --config "rate=100/s backend=shm name=$REGION"
phase4 "http_server, 4 threads" p4-http "$HTTP_SERVER" --threads 4 --config "rate=100/s"
fi

# ---- report ---------------------------------------------------------------------

elapsed=$((SECONDS - start_all))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
library="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -z $(git status --porcelain -- src c-examples 2>/dev/null) ]] || library="$library, with uncommitted changes"
if [[ $SHORT == 1 ]]; then
    command="LOADTEST_SHORT=1 scripts/loadtest.sh (make test-loadtest)"
else
    command="make loadtest  (LOADTEST_SECONDS=$RUN_SECONDS LOADTEST_ROUNDS=$ROUNDS LOADTEST_WORKERS=$WORKERS)"
fi
[[ -z ${LOADTEST_PHASES:-} ]] || command="LOADTEST_PHASES='$PHASES' $command"

report=$(
    cat <<EOF
Command: \`$command\`, $(date -u '+%Y-%m-%d %H:%M UTC').
Machine: $(nproc) CPUs, ${cpu:-unknown CPU}, $(uname -sr); wrk and the servers$(phase 3 && echo " (and nginx)")
share these CPUs. $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2)$(phase 3 && echo ", $(nginx -v 2>&1 | sed 's/^nginx version: //')").
Examples built from $library. Load average before/after: $load_before / $load_after; the run took ${elapsed} s.
EOF
    phase 1 && cat <<EOF

**1. Burst** — $P1_KEYS keys at once, each \`rate=$P1_QUOTA/hour\` (nothing refills
during the run), each sent $P1_PER_KEY requests over $P1_CONNS keep-alive connections
(\`wrk -t$P1_CONNS -c$P1_CONNS\`, every connection walking all the keys):
every key must get exactly $P1_QUOTA 200s.

| server | keys with exactly $P1_QUOTA 200s (client) | 200s (client) | allowed (server, /metrics) | 429s client / server | socket errors | result |
| --- | ---: | ---: | ---: | ---: | ---: | --- |
$(printf '%s\n' "${p1_rows[@]}")
EOF
    phase 2 && cat <<EOF

**2. Abuse** — everyone \`rate=$P2_RATE/s\`; for ${RUN_SECONDS} s at once: a legitimate key
paced at 5/s (one connection, 200 ms between a response and the next
request), one abusive key on $P2_ABUSE_CONNS connections as fast as it is
answered, and $P2_FLOOD_CONNS connections rotating over $(commas $P2_FLOOD_KEYS) other keys.
The abusive key's bound: its burst ($P2_RATE) plus $P2_RATE per second of its run, plus 1.

| server | legitimate key 200 / 429 | its p99 / max latency, ms | abusive key 200 (bound) / 429 | flood requests | evictions | result |
| --- | ---: | ---: | ---: | ---: | ---: | --- |
$(printf '%s\n' "${p2_rows[@]}")
EOF
    phase 3 && cat <<EOF

**3. Throughput** — \`wrk -t$P3_THREADS -c$P3_CONNS -d${RUN_SECONDS}s\` (keep-alive), $P3_KEYS keys in rotation
(\`X-API-Key\`); each server started fresh for each run with
$WORKERS workers (prefork_server: processes, backend=shm; http_server:
threads, backend=memory; nginx: \`worker_processes $WORKERS\`, \`limit_req\` on a zone
keyed by \`\$http_x_api_key\`, burst = rate, nodelay, serving a 2-byte
static file). "on": $P3_RATE_ON/s per key, burst $P3_RATE_ON; "off": 10^9/s
(nginx: burst 10^6, so no millisecond is ever denied). Median of $ROUNDS
interleaved rounds (order rotated each round); the ratios are medians of the
ratios within each round; "denied": the share of 429s;
"server CPU": user + system time of the server's processes and threads
during the run, per request answered (disturbed far less than req/s by
whatever else runs on the machine).

| server, limit | req/s (median) | min–max | p99 ms (median) | denied | server CPU µs per request (median) | req/s vs. limit off | CPU per request vs. limit off | req/s vs. nginx (same limit) | socket errors + timeouts |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$(printf '%s\n' "${p3_rows[@]}")
EOF
    phase 4 && cat <<EOF

**4. Slowloris** — $P4_IDLE connections that send nothing and $P4_DRIPPERS that send a
request head one byte every 0.5 s, each reopened when the server closes it,
for ${SLOW_SECONDS} s; servers at their default timeouts (\`--header-timeout 5\`), 4
workers/threads. Meanwhile a probe (\`curl --max-time 1\`, a new connection)
every 0.5 s must be answered 200 within 1 s.

| server | probes answered 200 in ≤ 1 s | slowest probe | idle connections | drippers | result |
| --- | ---: | ---: | --- | --- | --- |
$(printf '%s\n' "${p4_rows[@]}")
EOF
)

targets=
if phase 3; then
    targets=$(
        for server in prefork_server http_server; do
            r=$(ratio "$server on" "$server off" rps) c=$(ratio "$server on" "$server off" cpu)
            [[ -n $r ]] || continue
            awk -v s="$server" -v r="$r" -v c="$c" 'BEGIN {
                printf "- %s, limiting on: %.2fx the req/s of limiting off (target: limiting costs under 5%%, i.e. at least 0.95x): %s", s, r, (r >= 0.95 ? "**met**" : "**not met**")
                if (c != "") printf "; server CPU per request %+.1f%% (%s)", 100 * (c - 1), (c <= 1.05 ? "at most 5% more" : "more than 5% more")
                printf "\n" }'
        done
        for l in on off; do
            r=$(ratio "prefork_server $l" "nginx $l" rps)
            [[ -n $r ]] || continue
            awk -v l="$l" -v r="$r" 'BEGIN {
                printf "- prefork_server, limiting %s: %.2fx nginx'"'"'s req/s (target: at least 0.7x): %s\n", l, r, (r >= 0.7 ? "**met**" : "**not met**") }'
        done
    )
fi

echo
echo "$report"
if [[ -n $targets ]]; then
    echo
    echo "Targets:"
    echo "$targets"
fi
if ((${#warnings[@]})); then
    echo
    echo "Warnings:"
    printf -- '- %s\n' "${warnings[@]}"
fi
if ((${#failures[@]})); then
    echo
    echo "Failed:"
    printf -- '- %s\n' "${failures[@]}"
fi

# Only a full run of every phase rewrites the table in $OUT.
if [[ $SHORT != 1 && -n $OUT && $PHASES == "1 2 3 4" ]]; then
    begin='<!-- loadtest:results:begin (written by scripts/loadtest.sh) -->'
    end='<!-- loadtest:results:end -->'
    block=$report
    [[ -z $targets ]] || block=$(printf '%s\n\nTargets (issue 9):\n\n%s' "$block" "$targets")
    ((${#failures[@]} == 0)) || block=$(printf '%s\n\n**Failed assertions:**\n\n%s' "$block" "$(printf -- '- %s\n' "${failures[@]}")")
    if [[ -f $OUT ]] && grep -qF "$begin" "$OUT" && grep -qF "$end" "$OUT"; then
        awk -v b="$begin" -v e="$end" -v blockfile=<(printf '%s\n' "$block") '
            $0 == b { print; while ((getline line < blockfile) > 0) print line; skip = 1; next }
            $0 == e { skip = 0 }
            !skip' "$OUT" >"$tmp/out" && cat "$tmp/out" >"$OUT"
    else
        printf '\n## Load test\n\n%s\n%s\n%s\n' "$begin" "$block" "$end" >>"$OUT"
    fi
    say "wrote $OUT"
fi

echo
echo "loadtest: $passed passed, $failed failed"
((failed == 0))
