#!/usr/bin/env bash
# demo.sh — watch build/http_server turn 200s into 429s (run by `make demo`).
#
# Starts the example server on a free port with `rate=5/10s` (5 requests at
# once, then one more every 2 s), sends 8 requests with one API key and shows
# each answer's status line, rate-limit headers and body; then one request with
# another key (its own quota); then stops the server with SIGTERM and checks
# that it exited 0.
#
# Environment: HTTP_SERVER (default build/http_server), CONFIG (default
# rate=5/10s), REQUESTS (default 8).
set -euo pipefail

cd "$(dirname "$0")/.."
server=${HTTP_SERVER:-build/http_server}
config=${CONFIG:-rate=5/10s}
requests=${REQUESTS:-8}

die() { echo "demo: $*" >&2; exit 1; }

# shellcheck source=scripts/need_package.sh
. scripts/need_package.sh
need_package curl curl
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

: >"$tmp/out" # exists before the server (started in the background) opens it
"$server" --port 0 --config "$config" >"$tmp/out" 2>"$tmp/err" &
pid=$!

# Wait (up to 10 s) for "listening on 127.0.0.1:PORT".
port=
for _ in $(seq 100); do
    port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$tmp/out")
    [[ -n $port ]] && break
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/err" >&2; die "the server exited early"; }
    sleep 0.1
done
[[ -n $port ]] || die "the server did not say where it listens"
url="http://127.0.0.1:$port/"

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

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
sed 's/^/server: /' "$tmp/err"
[[ $rc -eq 0 ]] || die "the server exited with status $rc after SIGTERM"
echo "server stopped cleanly (exit 0)"
