#!/usr/bin/env bash
# demo.sh — watch the example servers turn 200s into 429s (run by `make demo`).
#
# 1. build/http_server (threads, backend=memory) on a free port with
#    `rate=5/10s` (5 requests at once, then one more every 2 s): 8 requests
#    with one API key, each answer's status line, rate-limit headers and body;
#    then one request with another key (its own quota); then SIGTERM, exit 0.
# 2. build/prefork_server (3 pre-forked workers sharing a backend=shm region):
#    the same quota holds across workers; one worker is killed with SIGKILL,
#    the master starts another and the limit still holds; then SIGTERM.
#
# Environment: HTTP_SERVER (default build/http_server), PREFORK_SERVER
# (default build/prefork_server), CONFIG (default rate=5/10s), REQUESTS
# (default 8).
set -euo pipefail

cd "$(dirname "$0")/.."
server=${HTTP_SERVER:-build/http_server}
prefork=${PREFORK_SERVER:-build/prefork_server}
config=${CONFIG:-rate=5/10s}
requests=${REQUESTS:-8}

die() { echo "demo: $*" >&2; exit 1; }

# shellcheck source=scripts/need_package.sh
. scripts/need_package.sh
need_package curl curl
need_package pgrep procps
[[ -x $server ]] || die "$server is missing: run 'make examples' first"

tmp=$(mktemp -d)
pid=
cleanup() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# Starts "$@" in the background and sets pid and url once it says
# "listening on 127.0.0.1:PORT" (waiting up to 10 s).
start() {
    : >"$tmp/out" # exists before the server (started in the background) opens it
    "$@" --port 0 >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    local port=
    for _ in $(seq 100); do
        port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$tmp/out")
        [[ -n $port ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$tmp/err" >&2; die "$1 exited early"; }
        sleep 0.1
    done
    [[ -n $port ]] || die "$1 did not say where it listens"
    url="http://127.0.0.1:$port/"
}

# Stops the server with SIGTERM and checks that it exited 0.
stop() {
    kill -TERM "$pid"
    local rc=0
    wait "$pid" || rc=$?
    pid=
    sed 's/^/server: /' "$tmp/err"
    [[ $rc -eq 0 ]] || die "the server exited with status $rc after SIGTERM"
    echo "server stopped cleanly (exit 0)"
}

start "$server" --config "$config"
port=${url#http://127.0.0.1:}
port=${port%/}
echo "http_server --config \"$config\" is listening on 127.0.0.1:$port"
echo

# Prints a response's status line, its rate-limit headers and its body.
show() {
    local label=$1 key=$2 response status
    response=$(curl -s -i -H "X-API-Key: $key" "$url" | tr -d '\r') ||
        die "curl could not reach $url"
    status=$(head -n 1 <<<"$response")
    printf '%-22s %s\n' "$label" "$status"
    grep -iE '^(x-ratelimit-[a-z]+|retry-after|ratelimit(-policy)?):' <<<"$response" |
        sed 's/^/                       /' || true
    printf '%-22s %s\n' "" "body: $(sed '1,/^$/d' <<<"$response")"
}

for i in $(seq "$requests"); do
    show "request $i (key demo)" demo
done
echo
show "request (key other)" other
echo

stop
echo

# ---- the same, shared by pre-forked worker processes ------------------------
if [[ -x $prefork ]]; then
    region="/rl-demo-$$"
    echo "prefork_server --workers 3 --config \"$config backend=shm name=$region\""
    start "$prefork" --workers 3 --config "$config backend=shm name=$region"
    echo "is listening on ${url#http://}: 3 workers share one quota"
    echo
    for i in $(seq "$requests"); do
        show "request $i (key demo)" demo
    done
    echo
    victim=$(pgrep -P "$pid" | head -n 1)
    kill -KILL "$victim"
    echo "killed worker $victim with SIGKILL; the master starts another"
    for _ in $(seq 50); do
        [[ $(pgrep -P "$pid" | wc -l) -eq 3 ]] && pgrep -P "$pid" | grep -qvx "$victim" && break
        sleep 0.1
    done
    echo "workers now: $(pgrep -P "$pid" | tr '\n' ' ')"
    show "after the kill" demo
    echo
    stop
fi
