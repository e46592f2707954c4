#!/usr/bin/env bash
# scripts/redis_tests.sh — the backend=redis test suite; run it under
# scripts/with_redis.sh (`make test-redis` does). Runs:
#   1. every C test program in build/tests with
#      RL_TEST_BACKEND_CONFIG='backend=redis url=$RL_TEST_REDIS_URL prefix=rl-test-{n}:'
#   2. scripts/metrics_parse.py (rl_metrics through a Prometheus parser) in
#      build/venv, the virtual environment `make test-redis` makes, likewise
#   3. the Rust integration tests tests/redis_*.rs (release build)
# and ends with one line "redis: N passed, N failed" summing every check.
set -uo pipefail
cd "$(dirname "$0")/.."

: "${RL_TEST_REDIS_URL:?run me under scripts/with_redis.sh}"
passed=0
failed=0
count() { # add up the "N passed, N failed" / "N passed; N failed" lines of a log
    local p f
    p=$(grep -Eo '[0-9]+ passed' "$1" | awk '{s += $1} END {print s + 0}')
    f=$(grep -Eo '[0-9]+ failed' "$1" | awk '{s += $1} END {print s + 0}')
    passed=$((passed + p))
    failed=$((failed + f))
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

export RL_TEST_BACKEND_CONFIG="backend=redis url=$RL_TEST_REDIS_URL prefix=rl-test-{n}:"
for src in tests/c/test_*.c; do
    t=build/tests/$(basename "$src" .c)
    [ -x "$t" ] || { echo "missing $t (make test-c builds it)"; failed=$((failed + 1)); continue; }
    echo "== $t (backend=redis)"
    if "$t" >"$log" 2>&1; then :; else
        echo "   exit status $? from $t"
        grep -q ' failed' "$log" || failed=$((failed + 1))
    fi
    cat "$log"
    count "$log"
done
echo "== scripts/metrics_parse.py (backend=redis)"
if [ -x build/venv/bin/python ]; then
    if build/venv/bin/python scripts/metrics_parse.py >"$log" 2>&1; then :; else
        grep -q ' failed' "$log" || failed=$((failed + 1))
    fi
    cat "$log"
    count "$log"
else
    echo "missing build/venv (make test-redis makes it)"
    failed=$((failed + 1))
fi
unset RL_TEST_BACKEND_CONFIG

# A debug build (overflow checks on), the one test-rust has built already.
echo "== cargo test --test 'redis_*'"
targets=()
for f in tests/redis_*.rs; do targets+=(--test "$(basename "$f" .rs)"); done
if cargo test --locked --features header "${targets[@]}" >"$log" 2>&1; then :; else
    grep -q ' failed' "$log" || failed=$((failed + 1))
fi
grep -E '^(test |running|     Running|SKIPPED|---- |thread |  left|  right|error)|test result' "$log" || true
count "$log"

echo "redis: $passed passed, $failed failed"
[ "$failed" = 0 ]
