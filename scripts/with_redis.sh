#!/usr/bin/env bash
# scripts/with_redis.sh COMMAND [ARGS...]
#
# Runs COMMAND with throwaway Redis servers on free loopback ports (never
# 6379), stopped again when it exits, whatever happens:
#
#   RL_TEST_REDIS_URL          redis://127.0.0.1:P      a plain server
#   RL_TEST_REDIS_AUTH_URL     redis://:PASSWORD@127.0.0.1:P  (--requirepass)
#   RL_TEST_REDIS_AUTH_PASSWORD  that password
#   RL_TEST_REDIS_CLUSTER_URL  redis+cluster://127.0.0.1:P1,...,P3  a 3-node
#                              Redis Cluster (3 primaries, no replicas)
#   RL_TEST_REDIS_SERVER       the redis-server binary, for tests that start
#                              (and kill) servers of their own
#
# Every server runs with --save '' --appendonly no in a temporary directory.
# redis-server comes from Debian's package redis-server: if it is missing and
# we are root, it is installed (apt-get); otherwise we stop and say so.
set -euo pipefail

# shellcheck source=scripts/need_package.sh
. "$(dirname "${BASH_SOURCE[0]}")/need_package.sh"
need_package redis-server redis-server
need_package redis-cli redis-server   # (the package also starts a service on 6379; we never use it)
REDIS_SERVER=$(command -v redis-server)
REDIS_CLI=$(command -v redis-cli)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rl-redis.XXXXXX")
# The servers' pids, one a line: start_server runs in a $(...) subshell, so
# a shell variable could not carry them back.
PIDS="$WORK/pids"
: >"$PIDS"
cleanup() {
    local pid
    while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done <"$PIDS"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A free port P (and P+10000, the cluster bus port), away from 6379.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 30000))
        [ "$p" = 6379 ] && continue
        if ! port_in_use "$p" && ! port_in_use $((p + 10000)); then
            echo "$p"
            return
        fi
    done
    echo "with_redis: no free port found" >&2
    exit 1
}

# start_server NAME EXTRA-ARGS...: starts a server on a free port; prints the port.
start_server() {
    local name=$1; shift
    local port dir pid i
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        dir="$WORK/$name-$port"
        mkdir -p "$dir"
        "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$dir" --logfile "$dir/log" --daemonize no "$@" >/dev/null 2>&1 &
        pid=$!
        echo "$pid" >>"$PIDS"
        for i in $(seq 1 100); do
            if grep -q "Ready to accept connections" "$dir/log" 2>/dev/null; then
                echo "$port"
                return
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    echo "with_redis: could not start redis-server ($name); last log:" >&2
    cat "$dir/log" >&2 || true
    exit 1
}

PLAIN=$(start_server plain)
PASSWORD="rl-test-$RANDOM$RANDOM"
AUTH=$(start_server auth --requirepass "$PASSWORD")

C1=$(start_server cluster --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 3000)
C2=$(start_server cluster --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 3000)
C3=$(start_server cluster --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 3000)
"$REDIS_CLI" --cluster create "127.0.0.1:$C1" "127.0.0.1:$C2" "127.0.0.1:$C3" \
    --cluster-replicas 0 --cluster-yes >"$WORK/cluster-create.log" 2>&1 || {
    echo "with_redis: redis-cli --cluster create failed:" >&2
    cat "$WORK/cluster-create.log" >&2
    exit 1
}
for _ in $(seq 1 200); do
    ok=0
    for p in "$C1" "$C2" "$C3"; do
        "$REDIS_CLI" -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && ok=$((ok + 1))
    done
    [ "$ok" = 3 ] && break
    sleep 0.1
done
if [ "$ok" != 3 ]; then
    echo "with_redis: the cluster did not reach cluster_state:ok" >&2
    exit 1
fi

export RL_TEST_REDIS_URL="redis://127.0.0.1:$PLAIN"
export RL_TEST_REDIS_AUTH_URL="redis://:$PASSWORD@127.0.0.1:$AUTH"
export RL_TEST_REDIS_AUTH_PASSWORD="$PASSWORD"
export RL_TEST_REDIS_CLUSTER_URL="redis+cluster://127.0.0.1:$C1,127.0.0.1:$C2,127.0.0.1:$C3"
export RL_TEST_REDIS_SERVER="$REDIS_SERVER"
echo "with_redis: plain :$PLAIN, auth :$AUTH, cluster :$C1 :$C2 :$C3" >&2

status=0
"$@" || status=$?
exit "$status"
