#!/usr/bin/env bash
# bench/quotas.sh — what the AI-quota calls cost (run by `make bench` after
# scripts/bench.sh, or alone after `make lib`): ns per rl_adjust and per
# rl_acquire + rl_release pair, next to rl_check measured in the same runs,
# with backend=memory and backend=shm (bench/quotas.c); then, under
# scripts/with_redis.sh (a throwaway redis-server on a free loopback port),
# ns per call and the commands Redis ran per call (INFO commandstats before
# and after the timed calls) with backend=redis.
#
# Runs build/bench/bench_quotas memory and shm REPS times each, interleaved,
# prints the median of each (backend, case) cell as a markdown table (each
# rl_adjust and lease cell with its ratio to rl_check's in the same case and
# column), then the Redis table, and writes both into BENCHMARKS.md between
# the "bench:quotas" markers (the prose around them is kept).
#
# Environment: ITERS (calls per thread per case, default 1000000), REPS
# (default 5), REDIS_CALLS (calls per operation on redis, default 20000),
# REDIS (0: skip the Redis rows), CC, OUT (default BENCHMARKS.md; empty: do
# not write it).
# Internal: `bench/quotas.sh --redis` is the Redis part, run under
# scripts/with_redis.sh; it prints the runner's lines.
set -euo pipefail

cd "$(dirname "$0")/.."
ITERS=${ITERS:-1000000}
REPS=${REPS:-5}
REDIS_CALLS=${REDIS_CALLS:-20000}
CC=${CC:-cc}
OUT=${OUT-BENCHMARKS.md}
RUNNER=build/bench/bench_quotas

say() { echo "quotas.sh: $*" >&2; }

if [[ ${1:-} == --redis ]]; then
    : "${RL_TEST_REDIS_URL:?run me under scripts/with_redis.sh}"
    redis-server --version | cut -d' ' -f1-3 >&2
    exec "$RUNNER" redis "${RL_TEST_REDIS_URL##*:}" "$REDIS_CALLS"
fi

[[ -f target/release/libratelimit.so ]] || { say "run 'make lib' first (or use 'make bench')"; exit 1; }
mkdir -p build/bench
$CC -std=c99 -Wall -Wextra -Werror -pedantic -O2 -Iinclude -Ibench -o "$RUNNER" bench/quotas.c \
    -Ltarget/release -lratelimit -Wl,-rpath,"$PWD/target/release" -lpthread

# ---- memory and shm ---------------------------------------------------------
raw=$(mktemp)
trap 'rm -f "$raw" "$raw.err"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$SECONDS
for ((rep = 0; rep < REPS; rep++)); do
    if ((rep % 2)); then order=(shm memory); else order=(memory shm); fi
    for backend in "${order[@]}"; do
        "$RUNNER" "$backend" "$ITERS" >>"$raw" || { say "$RUNNER $backend failed"; exit 1; }
    done
    say "repetition $((rep + 1))/$REPS done"
done
elapsed=$((SECONDS - start))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

table=$(awk -F'\t' '
    function median(list,    a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function minmax(list,    a, n, i, lo, hi) {
        n = split(list, a, " "); lo = hi = a[1]
        for (i = 2; i <= n; i++) { if (a[i] + 0 < lo + 0) lo = a[i]; if (a[i] + 0 > hi + 0) hi = a[i] }
        return sprintf("%.0f–%.0f", lo, hi)
    }
    {
        if (!($1 in seen_l)) { seen_l[$1] = 1; lims[++nl] = $1 }
        if (!($2 in seen_c)) { seen_c[$2] = 1; cases[++nc] = $2 }
        v[$1 SUBSEP $2] = v[$1 SUBSEP $2] " " $3
    }
    END {
        hdr = "| ns per call (median) |"; sep = "| --- |"
        for (i = 1; i <= nl; i++) { hdr = hdr " " lims[i] " | spread |"; sep = sep " ---: | ---: |" }
        print hdr; print sep
        for (c = 1; c <= nc; c++) {
            row = "| " cases[c] " |"
            # The rl_check row of the same case: "rl_check, <case>".
            ref = cases[c]; sub(/^[^,]*, /, "rl_check, ", ref)
            for (i = 1; i <= nl; i++) {
                k = lims[i] SUBSEP cases[c]
                if (!(k in v)) { row = row " — | — |"; continue }
                m = median(v[k])
                cell = sprintf("%.1f", m)
                if (ref != cases[c] && (lims[i] SUBSEP ref) in v)
                    cell = cell sprintf(" (%.2fx rl_check)", m / median(v[lims[i] SUBSEP ref]))
                row = row " " cell " | " minmax(v[k]) " |"
            }
            print row
        }
    }' "$raw")

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
machine="$(nproc) CPUs, ${cpu:-unknown CPU}, $(uname -sr)"
library="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n $(git status --porcelain -- src Cargo.toml Cargo.lock build.rs 2>/dev/null) ]]; then
    library="$library, with uncommitted changes in src/"
fi

block=$(cat <<EOF
Command: \`bench/quotas.sh\` (ITERS=$ITERS REPS=$REPS; \`make bench\` runs it), $(date -u +%Y-%m-%d).
Machine: $machine. Library built from $library. Load average before/after: $load_before / $load_after; the runs took ${elapsed} s.

Median of $REPS interleaved runs of $ITERS calls per thread per case, and the
spread (min–max); in parentheses the ratio to rl_check in the same case and
column, measured in the same runs. rl_adjust: +1 and -1 in turn on each key
(\`rate=1/s burst=100000000\`, as rl_check: a unit back every second, so each
-1 refunds a charge still unpaid); rl_acquire+rl_release: ns per PAIR
(\`concurrency=4 lease=60s\`). 2 threads: wall time divided by the calls ONE
thread made.

$table
EOF
)

# ---- redis ------------------------------------------------------------------
redis_block="Redis: not run (REDIS=0)."
if [[ ${REDIS:-1} != 0 ]]; then
    if ! command -v redis-server >/dev/null && { [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; }; then
        redis_block="Redis: not run (redis-server not installed)."
        say "SKIPPED the Redis rows: redis-server not found"
    else
        say "Redis rows (scripts/with_redis.sh bench/quotas.sh --redis)"
        lines=$(scripts/with_redis.sh "$0" --redis 2>"$raw.err") || { cat "$raw.err" >&2; say "the Redis rows failed"; exit 1; }
        version=$(grep -m1 '^Redis server' "$raw.err" || echo "Redis")
        rm -f "$raw.err"
        rtable=$(awk -F'\t' '
            function sortkey(c) { return (c ~ /^(eval|fcall)/ ? "0" : "1") c }
            BEGIN {
                print "| backend=redis, 1 thread, 16 keys | ns per call | commands Redis ran per call (INFO commandstats) |"
                print "| --- | ---: | --- |"
            }
            {
                calls = $4; sub(/^calls=/, "", calls)
                cmds = $5; sub(/^cmds=/, "", cmds)
                n = split(cmds, c, ","); total = 0; parts = ""
                # The command clients send (fcall or evalsha) first, then those run inside it, by name.
                for (i = 2; i <= n; i++) {
                    t = c[i]
                    for (j = i - 1; j >= 1 && sortkey(c[j]) > sortkey(t); j--) c[j + 1] = c[j]
                    c[j + 1] = t
                }
                for (i = 1; i <= n; i++) { split(c[i], nc, ":"); total += nc[2]; parts = parts (parts == "" ? "" : ", ") nc[1] " " sprintf("%.4g", nc[2] / calls) }
                printf "| %s | %s | %s (%s) over %d calls |\n", $2, $3, sprintf("%.4g", total / calls), parts, calls
            }' <<<"$lines")
        redis_block=$(printf '%s on 127.0.0.1, same machine; %s timed calls per operation after a warm-up, one thread, one handle. A lease row counts the PAIR (rl_acquire + rl_release).\n\n%s' "$version" "$REDIS_CALLS" "$rtable")
    fi
fi

block=$(printf '%s\n\n%s' "$block" "$redis_block")
echo
echo "$block"

# BLOCK between the marker lines of $OUT (the prose around them kept);
# appended if the markers are missing (as scripts/bench.sh does).
begin='<!-- bench:quotas:begin (written by bench/quotas.sh) -->'
end='<!-- bench:quotas:end -->'
if [[ -n $OUT ]]; then
    if [[ -f $OUT ]] && grep -qF "$begin" "$OUT" && grep -qF "$end" "$OUT"; then
        tmp=$(mktemp)
        awk -v b="$begin" -v e="$end" -v blockfile=<(printf '%s\n' "$block") '
            $0 == b { print; while ((getline line < blockfile) > 0) print line; skip = 1; next }
            $0 == e { skip = 0 }
            !skip' "$OUT" >"$tmp"
        cat "$tmp" >"$OUT" && rm -f "$tmp"
    else
        printf '\n%s\n%s\n%s\n' "$begin" "$block" "$end" >>"$OUT"
    fi
    say "wrote $OUT (bench:quotas)"
fi
