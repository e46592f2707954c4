#!/usr/bin/env bash
# bench.sh — ns per check, side by side, for libratelimit and the limiters a
# C server author would otherwise use (run by `make bench`, after `make lib`).
#
# Every runner is a program that prints one line per case,
#     <limiter> TAB <case> TAB <ns per check>
# and this script runs them all REPS times, interleaved (so a burst of load on
# the machine hits every column alike), then prints the median of each
# (limiter, case) cell as a markdown table, each cell with its ratio to the
# hand-rolled C limiter, and writes it into BENCHMARKS.md between the
# "bench:results" markers (the prose around them is kept).
#
# Runners today (see bench/):
#   build/bench/bench_ratelimit   libratelimit via the C API   (bench/driver.c + lim_ratelimit.h)
#   build/bench/bench_shm         the same, backend=shm        (bench/driver.c + lim_shm.h),
#                                 plus the 2-process cases (fork after rl_create)
#   build/bench/bench_tight       a tight hand-rolled C limiter (bench/driver.c + lim_tight.h + tight.c):
#                                 the tutorial's fixed window in one open-addressing table, keys inline
#   build/bench/bench_handrolled  the tutorial C limiter       (bench/driver.c + handrolled.c)
#   governor bench binary         governor's keyed limiter     (bench/governor.rs)
#   floor bench binary            the physical floor: clock + keyed hash + one atomic per check,
#                                 nothing else; and the minimal limiter: the same semantics as
#                                 ours, sharded, with none of our other features (bench/floor.rs)
# (bench/cases.rs holds the cases of the two Rust runners; bench/driver.c the C ones'.)
# To add a column or rows (a backend, a new case), add a runner to RUNNERS
# that prints lines in the same format: the table is pivoted from whatever
# (limiter, case) pairs appear, in order of first appearance. A cell the
# hand-rolled limiter has no figure for ("2 processes, ...": it is in-process
# only) gets its ratio to the hand-rolled "2 threads, ..." row, marked *.
#
# Then the Redis rows (bench/redis.sh, under scripts/with_redis.sh: a
# throwaway redis-server on a free loopback port, stopped afterwards):
# checks/s of backend=redis with 8 threads next to redis-benchmark at the same
# concurrency, and the Redis commands per check; written between the
# "bench:redis" markers. Skipped, with a message, when redis-server is not
# installed and cannot be (with_redis.sh installs Debian's when root).
#
# Environment: ITERS (checks per thread per case, default 2000000), REPS
# (default 9), CC, OUT (default BENCHMARKS.md; empty: do not write it),
# REDIS (0: skip the Redis rows), REDIS_REPS, REDIS_ITERS, REDIS_DENIED_ITERS,
# REDIS_N (see bench/redis.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
ITERS=${ITERS:-2000000}
REPS=${REPS:-9}
CC=${CC:-cc}
OUT=${OUT-BENCHMARKS.md}
BASELINE="hand-rolled C"
CFLAGS_BENCH="-std=c99 -Wall -Wextra -Werror -pedantic -O2"

die() { echo "bench: $*" >&2; exit 1; }
[[ -f target/release/libratelimit.so ]] || die "run 'make lib' first (or use 'make bench')"

# ---- build --------------------------------------------------------------
mkdir -p build/bench
echo "bench: building the C benchmarks ($CC $CFLAGS_BENCH)" >&2
$CC $CFLAGS_BENCH -Iinclude -Ibench -DLIMITER_HEADER='"lim_ratelimit.h"' \
    -o build/bench/bench_ratelimit bench/driver.c \
    -Ltarget/release -lratelimit -Wl,-rpath,"$PWD/target/release" -lpthread
$CC $CFLAGS_BENCH -Iinclude -Ibench -DLIMITER_HEADER='"lim_shm.h"' \
    -o build/bench/bench_shm bench/driver.c \
    -Ltarget/release -lratelimit -Wl,-rpath,"$PWD/target/release" -lpthread
$CC $CFLAGS_BENCH -Ibench -DLIMITER_HEADER='"lim_tight.h"' \
    -o build/bench/bench_tight bench/driver.c bench/tight.c -lpthread
$CC $CFLAGS_BENCH -Ibench -DLIMITER_HEADER='"lim_handrolled.h"' \
    -o build/bench/bench_handrolled bench/driver.c bench/handrolled.c -lpthread
$CC $CFLAGS_BENCH -o build/bench/redis_blocking bench/redis_blocking.c -lpthread
$CC $CFLAGS_BENCH -Iinclude -Ibench -o build/bench/bench_redis bench/redis_driver.c \
    -Ltarget/release -lratelimit -Wl,-rpath,"$PWD/target/release" -lpthread

echo "bench: building the governor benchmark (cargo bench --no-run)" >&2
governor_bin=$(cargo bench --locked --features governor --bench governor --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[[ -n $governor_bin && -x $governor_bin ]] || die "could not build bench/governor.rs (try: cargo bench --features governor --bench governor --no-run)"

echo "bench: building the physical floor (cargo bench --no-run)" >&2
# (The floor needs no governor; the same features as the build above reuse its
# library instead of building it again, with LTO, for another feature set.)
floor_bin=$(cargo bench --locked --features governor --bench floor --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[[ -n $floor_bin && -x $floor_bin ]] || die "could not build bench/floor.rs (try: cargo bench --bench floor --no-run)"

RUNNERS=(build/bench/bench_ratelimit build/bench/bench_shm "$governor_bin" build/bench/bench_tight build/bench/bench_handrolled "$floor_bin")

# ---- run ----------------------------------------------------------------
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$SECONDS
for ((rep = 0; rep < REPS; rep++)); do
    # Rotate the order each repetition so no runner always goes first.
    n=${#RUNNERS[@]}
    for ((i = 0; i < n; i++)); do
        runner=${RUNNERS[$(((i + rep) % n))]}
        "$runner" "$ITERS" >>"$raw" || die "$runner failed"
    done
    echo "bench: repetition $((rep + 1))/$REPS done" >&2
done
elapsed=$((SECONDS - start))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report -------------------------------------------------------------
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
machine="$(nproc) CPUs, ${cpu:-unknown CPU}, $(uname -sr)"
command="make bench  (ITERS=$ITERS REPS=$REPS)"
library="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n $(git status --porcelain -- src Cargo.toml Cargo.lock build.rs 2>/dev/null) ]]; then
    library="$library, with uncommitted changes in src/"
fi

# Median per (limiter, case); rows are cases, columns limiters.
table=$(awk -F'\t' -v base="$BASELINE" '
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
        refs[1] = "tight hand-rolled C"; refs[2] = "governor (Rust)"; refs[3] = "physical floor"
        refs[4] = "minimal limiter"; nr = 4
        # Baseline last, ours first (runner order), whatever order runs came in.
        hdr = "| ns per check (median) |"; sep = "| --- |"
        for (i = 1; i <= nl; i++) { hdr = hdr " " lims[i] " |"; sep = sep " ---: |" }
        print hdr; print sep
        for (c = 1; c <= nc; c++) {
            row = "| " cases[c] " |"
            b = (base SUBSEP cases[c]) in v ? median(v[base SUBSEP cases[c]]) : ""
            mark = ""
            # The hand-rolled limiter is in-process only: compare the
            # 2-process rows with its 2-thread rows, marked *.
            alt = cases[c]; sub(/^2 processes,/, "2 threads,", alt)
            if (b == "" && alt != cases[c] && (base SUBSEP alt) in v) { b = median(v[base SUBSEP alt]); mark = "*" }
            for (i = 1; i <= nl; i++) {
                k = lims[i] SUBSEP cases[c]
                if (!(k in v)) { row = row " — |"; continue }
                m = median(v[k])
                cell = sprintf("%.1f", m)
                if (b != "" && lims[i] != base) cell = cell sprintf(" (%.2fx%s)", m / b, mark)
                row = row " " cell " |"
            }
            print row
        }
        print ""
        hdr = "| spread (min–max ns) |"; sep = "| --- |"
        for (i = 1; i <= nl; i++) { hdr = hdr " " lims[i] " |"; sep = sep " ---: |" }
        print hdr; print sep
        for (c = 1; c <= nc; c++) {
            row = "| " cases[c] " |"
            for (i = 1; i <= nl; i++) {
                k = lims[i] SUBSEP cases[c]
                row = row " " ((k in v) ? minmax(v[k]) : "—") " |"
            }
            print row
        }
        # The issue targets, side by side: each of our columns against the
        # tight hand-rolled limiter, governor, the physical floor and the
        # minimal limiter, row by row (2-process rows against their 2-thread
        # figures, marked *).
        print ""
        hdr = "| ratio (median / median) |"; sep = "| --- |"
        for (i = 1; i <= nl; i++) {
            if (lims[i] !~ /^libratelimit/) continue
            for (r = 1; r <= nr; r++) { hdr = hdr " " lims[i] " / " refs[r] " |"; sep = sep " ---: |" }
        }
        print hdr; print sep
        for (c = 1; c <= nc; c++) {
            row = "| " cases[c] " |"
            alt = cases[c]; sub(/^2 processes,/, "2 threads,", alt)
            for (i = 1; i <= nl; i++) {
                if (lims[i] !~ /^libratelimit/) continue
                k = lims[i] SUBSEP cases[c]
                for (r = 1; r <= nr; r++) {
                    kr = refs[r] SUBSEP cases[c]; mark = ""
                    if (!(kr in v) && (refs[r] SUBSEP alt) in v) { kr = refs[r] SUBSEP alt; mark = "*" }
                    row = row " " (((k in v) && (kr in v)) ? sprintf("%.2fx%s", median(v[k]) / median(v[kr]), mark) : "—") " |"
                }
            }
            print row
        }
    }' "$raw")

block=$(cat <<EOF
Command: \`$command\`, $(date -u +%Y-%m-%d).
Machine: $machine. Library built from $library. Load average before/after: $load_before / $load_after; the runs took ${elapsed} s.

Median of $REPS interleaved runs of $ITERS checks per thread per case; in
parentheses the ratio to the hand-rolled C limiter (below 1 is faster). Threaded
cases: wall time divided by the checks ONE thread made (the time a caller waits
per check; perfect scaling would equal the one-thread figure); the same for the
2-process cases (shm only: fork after rl_create, both processes on the
inherited handle). \* The hand-rolled limiter is in-process only, so it has no
2-process figures: those ratios are to its 2-thread row with the same keys.
"denied:" rows: a key over its limit (one check per hour, spent in the
untimed warm-up), hammered; every timed check is a denial. The physical
floor (bench/floor.rs) is a clock reading, a keyed hash and one atomic per
check (a load for a denial), nothing else; the minimal limiter (same file)
is the least a limiter with our semantics does: that clock and hash, a
sharded table behind locks, GCRA to the nanosecond and the answer's
fields, without our other features (bounded table, over-limit cache,
counters, rl_top, C API). The last table sets our columns against the
tight hand-rolled limiter, governor, the floor and the minimal limiter.

$table
EOF
)

echo
echo "$block"

# write_block BEGIN END BLOCK: BLOCK between the marker lines BEGIN and END
# of $OUT (the prose around them is kept); appended if the markers are missing.
write_block() {
    local begin=$1 end=$2 block=$3 tmp
    [[ -n $OUT ]] || return 0
    if [[ -f $OUT ]] && grep -qF "$begin" "$OUT" && grep -qF "$end" "$OUT"; then
        tmp=$(mktemp)
        awk -v b="$begin" -v e="$end" -v blockfile=<(printf '%s\n' "$block") '
            $0 == b { print; while ((getline line < blockfile) > 0) print line; skip = 1; next }
            $0 == e { skip = 0 }
            !skip' "$OUT" >"$tmp"
        cat "$tmp" >"$OUT" && rm -f "$tmp"
    elif [[ -f $OUT ]]; then
        printf '\n%s\n%s\n%s\n' "$begin" "$block" "$end" >>"$OUT"
    else
        printf '# Benchmarks\n\n%s\n%s\n%s\n' "$begin" "$block" "$end" >"$OUT"
    fi
    echo "bench: wrote $OUT ($begin)" >&2
}

write_block '<!-- bench:results:begin (written by scripts/bench.sh) -->' '<!-- bench:results:end -->' "$block"

# ---- Redis ----------------------------------------------------------------
if [[ ${REDIS:-1} == 0 ]]; then
    echo "bench: REDIS=0: Redis rows skipped" >&2
    exit 0
fi
if ! command -v redis-server >/dev/null && { [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; }; then
    echo "bench: SKIPPED the Redis rows: redis-server not found and cannot install it here (Debian: apt-get install redis-server); $OUT keeps its old Redis block" >&2
    exit 0
fi
echo "bench: Redis rows (scripts/with_redis.sh bench/redis.sh)" >&2
if ! redis_block=$(scripts/with_redis.sh bench/redis.sh); then
    if ! command -v redis-server >/dev/null; then
        echo "bench: SKIPPED the Redis rows: redis-server could not be installed (see above); $OUT keeps its old Redis block" >&2
        exit 0
    fi
    die "the Redis rows failed (scripts/with_redis.sh bench/redis.sh, see above); $OUT keeps its old Redis block"
fi
echo
echo "$redis_block"
write_block '<!-- bench:redis:begin (written by scripts/bench.sh) -->' '<!-- bench:redis:end -->' "$redis_block"
