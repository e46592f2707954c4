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
#   stop_server PID SIGNAL        sends SIGNAL and waits; sets STOP_RC (124
#                                 when it did not exit in time: then killed)
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

server_wait=10
request_timeout=10

passed=0
failed=0
tmp=$(mktemp -d)
server_pids=()

http_test_cleanup() {
    local p
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
    : >"$tmp/$name.out" # exists before the background server opens it
    "$bin" --port 0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    PID=$!
    server_pids+=("$PID")
    PORT=
    for _ in $(seq $((server_wait * 10))); do
        PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$tmp/$name.out")
        [[ -n $PORT ]] && return 0
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
