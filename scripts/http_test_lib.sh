# http_test_lib.sh — sourced by the scripts that drive the example servers
# with curl (test_examples.sh, test_prefork.sh), from the top of the tree,
# after `set -uo pipefail`. Sourcing it makes sure curl is there
# (need_package.sh), makes a temporary directory $tmp and sets an EXIT trap,
# http_test_cleanup, which kills the servers started here (and their workers)
# and removes $tmp; a script with more to clean up sets its own trap and calls
# http_test_cleanup from it.
#
# Settings (the sourcing script may change them after sourcing):
#   server_wait      seconds start_server/stop_server wait for a server (10)
#   request_timeout  curl's --max-time, in seconds (10)
#
# Counting:
#   check DESCRIPTION COMMAND...  runs COMMAND; counts a pass, or a failure
#                                 named on stderr ("FAIL: DESCRIPTION");
#                                 the totals are $passed and $failed
#   die MESSAGE                   prints "SCRIPT: MESSAGE" and exits 1
# Servers:
#   start_server NAME BINARY ARGS...  BINARY --port 0 ARGS in the background;
#                                 waits for its "listening on HOST:PORT" line;
#                                 sets PORT and PID ($tmp/NAME.out, .err)
#   start_server_listen NAME BINARY ARGS...  the same without --port 0, for
#                                 ARGS with --listen: waits for one listening
#                                 line per --listen; sets PORT (the first
#                                 127.0.0.1 line), PORT6 (the first [::1] line,
#                                 empty when none) and PID
#   stop_server PID SIGNAL        sends SIGNAL and waits; sets STOP_RC (124
#                                 when it did not exit in time: then killed)
#   stop_timed PID SIGNAL         sends SIGNAL to PID and waits until PID and
#                                 every child it had are gone; sets STOP_RC as
#                                 stop_server does, STOP_SECS (how long, e.g.
#                                 0.213) and STOP_LEFT (the children still
#                                 running when PID exited)
# Hostile clients (scripts/hostile_clients.py, Python 3):
#   hostile ARGS...               runs hostile_clients.py against 127.0.0.1:$PORT
#                                 with the timeouts in $header_timeout and
#                                 $keepalive_timeout and ARGS (--case NAME or
#                                 --suite, or --host ::1 --port P...); counts
#                                 each "ok:" line as a pass and each "FAIL:" as
#                                 a failure (shown on stderr), a crash as one
#   hold_start N                  hostile_clients.py --case hold --hold N in the
#                                 background: N silent, N slowloris, N idle
#                                 keep-alive and N not reading connections,
#                                 kept (and reopened) until hold_stop; waits
#                                 until they are open
#   hold_stop                     stops it
#   ipv6_loopback                 whether ::1 can be bound here
# Requests (to 127.0.0.1:$PORT):
#   get NAME PATH [CURL ARGS...]  one request; leaves $tmp/NAME.status,
#                                 $tmp/NAME.headers (CRs removed), $tmp/NAME.body
#   crowd KEY N                   N parallel requests to / with X-API-Key KEY;
#                                 sets OK and LIMITED (how many 200s and 429s)
#   raw_request TEXT              sends TEXT (printf %b) as is; prints the
#                                 status code of the answer
# Assertions on a get NAME:
#   status_is, body_is, body_matches, header, header_is, header_matches,
#   has_no_header (header names are case-insensitive)
# shellcheck shell=bash
# shellcheck disable=SC2034 # PORT, PID, STOP_RC, OK, LIMITED: for the sourcing script

# shellcheck source=scripts/need_package.sh
. scripts/need_package.sh
need_package curl curl
need_package python3 python3

server_wait=10
request_timeout=10
header_timeout=5     # what the servers are started with (--header-timeout) ...
keepalive_timeout=15 # ... and --keepalive-timeout, for hostile_clients.py
hostile_limit=120    # longest a hostile_clients.py run may take, in seconds

passed=0
failed=0
tmp=$(mktemp -d)
server_pids=()

http_test_cleanup() {
    local p
    [[ -n ${hold_pid:-} ]] && kill -KILL "$hold_pid" 2>/dev/null
    for p in "${server_pids[@]}"; do
        pkill -KILL -P "$p" 2>/dev/null || true
        kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap http_test_cleanup EXIT

die() { echo "$(basename "$0" .sh): $*" >&2; exit 1; }

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

# ---- servers ----------------------------------------------------------------

start_server() {
    local name=$1 bin=$2
    shift 2
    launch_server 1 "$name" "$bin" --port 0 "$@"
}

start_server_listen() {
    local arg lines=0
    for arg in "${@:3}"; do
        [[ $arg == --listen ]] && lines=$((lines + 1))
    done
    launch_server "$lines" "$@"
}

# launch_server LINES NAME BINARY ARGS...: starts BINARY ARGS and waits until
# it has printed LINES listening lines.
launch_server() {
    local lines=$1 name=$2 bin=$3
    shift 3
    : >"$tmp/$name.out" # exists before the background server opens it
    "$bin" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    PID=$!
    server_pids+=("$PID")
    for _ in $(seq $((server_wait * 10))); do
        if [[ $(grep -c '^listening on ' "$tmp/$name.out") -ge $lines ]]; then
            PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$tmp/$name.out" | head -n 1)
            PORT6=$(sed -n 's/^listening on \[::1\]:\([0-9][0-9]*\)$/\1/p' "$tmp/$name.out" | head -n 1)
            return 0
        fi
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$tmp/$name.err" >&2
    die "$name did not start ($bin $*)"
}

stop_server() {
    local pid=$1 sig=$2
    kill "-$sig" "$pid"
    for _ in $(seq $((server_wait * 10))); do
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

stop_timed() {
    local pid=$1 sig=$2 children start p
    children=$(pgrep -P "$pid")
    start=$EPOCHREALTIME
    kill "-$sig" "$pid"
    # poll often: the time is the assertion (the servers must stop within 1 s)
    for _ in $(seq $((server_wait * 50))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    if kill -0 "$pid" 2>/dev/null; then
        STOP_SECS=$(elapsed_since "$start")
        STOP_LEFT=$children
        for p in $children; do kill -KILL "$p" 2>/dev/null; done
        kill -KILL "$pid"
        wait "$pid" 2>/dev/null
        STOP_RC=124
        return
    fi
    # the master is gone: its children must be too (reparented, they would
    # not be waited for; a zombie waiting for init to reap it is gone)
    STOP_LEFT=
    for p in $children; do
        running "$p" && STOP_LEFT+="$p "
    done
    STOP_SECS=$(elapsed_since "$start")
    for p in $STOP_LEFT; do kill -KILL "$p" 2>/dev/null; done
    wait "$pid"
    STOP_RC=$?
}

# running PID: PID exists and is not a zombie
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) } # the state follows the command name in parentheses
    [[ ${stat%% *} != Z ]]
}

# elapsed_since EPOCHREALTIME: seconds since then, e.g. 0.213
elapsed_since() {
    local a=${1/./} b=${EPOCHREALTIME/./} # microseconds
    local us=$((10#$b - 10#$a))
    printf '%d.%06d' $((us / 1000000)) $((us % 1000000))
}

# less_than A B: A < B, both decimal numbers of seconds
less_than() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# ---- hostile clients ----------------------------------------------------------

hostile() {
    local out rc line fails=0
    out=$(timeout "$hostile_limit" python3 scripts/hostile_clients.py --port "$PORT" \
        --header-timeout "$header_timeout" --keepalive-timeout "$keepalive_timeout" \
        --time-limit "$((hostile_limit - 5))" "$@" 2>&1)
    rc=$?
    while IFS= read -r line; do
        case $line in
        ok:*) passed=$((passed + 1)) ;;
        FAIL:*)
            failed=$((failed + 1))
            fails=$((fails + 1))
            echo "$line" >&2
            ;;
        note:* | "== "*": "*) echo "$line" ;; # skips, and how long each case took
        esac
    done <<<"$out"
    if [[ $rc -ne 0 && $fails -eq 0 ]]; then
        failed=$((failed + 1))
        echo "FAIL: hostile_clients.py $* exited $rc without naming a failure:" >&2
        tail -n 5 <<<"$out" >&2
    fi
}

hold_pid=
hold_start() {
    : >"$tmp/hold.out"
    python3 scripts/hostile_clients.py --port "$PORT" --case hold --hold "$1" \
        --header-timeout "$header_timeout" --keepalive-timeout "$keepalive_timeout" \
        --hold-seconds "$hostile_limit" </dev/null >"$tmp/hold.out" 2>&1 &
    hold_pid=$!
    for _ in $(seq $((server_wait * 10))); do
        grep -q '^holding ' "$tmp/hold.out" && return 0
        kill -0 "$hold_pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$tmp/hold.out" >&2
    return 1
}

hold_stop() {
    [[ -n $hold_pid ]] || return 0
    kill -TERM "$hold_pid" 2>/dev/null
    wait "$hold_pid" 2>/dev/null
    hold_pid=
}

ipv6_loopback() {
    python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null
}

# ---- requests -----------------------------------------------------------------

get() {
    local name=$1 path=$2
    shift 2
    curl -s -o "$tmp/$name.body" -D "$tmp/$name.raw" -w '%{http_code}' \
        --max-time "$request_timeout" "$@" "http://127.0.0.1:$PORT$path" >"$tmp/$name.status" ||
        echo 000 >"$tmp/$name.status"
    tr -d '\r' <"$tmp/$name.raw" >"$tmp/$name.headers" 2>/dev/null || : >"$tmp/$name.headers"
}

crowd() {
    local key=$1 n=$2 i pids=()
    rm -f "$tmp"/crowd.*
    for i in $(seq "$n"); do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time "$request_timeout" \
            -H "X-API-Key: $key" "http://127.0.0.1:$PORT/" >"$tmp/crowd.$i" &
        pids+=($!)
    done
    wait "${pids[@]}"
    OK=$(cat "$tmp"/crowd.* | grep -c '^200$')
    LIMITED=$(cat "$tmp"/crowd.* | grep -c '^429$')
}

raw_request() {
    local text=$1
    (
        exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
        printf '%b' "$text" >&3
        head -n 1 <&3 | tr -d '\r' | cut -d' ' -f2
    )
}

status_is() { [[ $(cat "$tmp/$1.status") == "$2" ]]; }
body_is() { [[ $(cat "$tmp/$1.body") == "$2" ]]; }
body_matches() { [[ $(cat "$tmp/$1.body") =~ $2 ]]; }
# header NAME HEADER: its value, empty when absent
header() { sed -n "s/^$2: *//Ip" "$tmp/$1.headers" | head -n 1; }
header_is() { [[ $(header "$1" "$2") == "$3" ]]; }
header_matches() { [[ $(header "$1" "$2") =~ $3 ]]; }
has_no_header() { ! grep -qi "^$2:" "$tmp/$1.headers"; }
