#!/usr/bin/env bash
# top.sh — what rl_top's tracking costs a check (after `make lib`): runs
# bench/top.c REPS times, interleaved, against
#   before   BEFORE_LIB (a libratelimit.so built before rl_top existed), if given
#   top=0    this library, tracking off
#   top=32   this library, the default
# and prints the best (lowest) ns per check of each (backend, case) side by side,
# with the ratios the budget is stated in: top=32 / top=0 (allowed: at most
# 1.10), top=0 / before (at most 1.00, within noise), and denied / allowed
# with top=32 (at most 2.00).
#
# Environment: ITERS (checks per case, default 500000), REPS (default 15),
# CC, BEFORE_LIB (a directory holding the older libratelimit.so).
set -euo pipefail

cd "$(dirname "$0")/.."
ITERS=${ITERS:-500000}
REPS=${REPS:-15}
CC=${CC:-cc}
[[ -f target/release/libratelimit.so ]] || { echo "top.sh: run 'make lib' first" >&2; exit 1; }
mkdir -p build/bench
$CC -std=c99 -Wall -Wextra -Werror -pedantic -O2 -Iinclude -Ibench -o build/bench/bench_top bench/top.c \
    -Ltarget/release -lratelimit -Wl,-rpath,"$PWD/target/release"

raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
run() { # label, then the command
    local label=$1
    shift
    "$@" | sed "s/^/$label\t/" >>"$raw"
}
for ((rep = 0; rep < REPS; rep++)); do
    if [[ -n ${BEFORE_LIB:-} ]]; then
        run before env LD_LIBRARY_PATH="$BEFORE_LIB" build/bench/bench_top "$ITERS" ""
    fi
    run top=0 build/bench/bench_top "$ITERS" "top=0"
    run top=32 build/bench/bench_top "$ITERS" "top=32"
    echo "top.sh: repetition $((rep + 1))/$REPS done" >&2
done

awk -F'\t' '
    # The best of the repetitions: on a shared machine every slower run is
    # a run that lost its CPU for a while, whatever the library did.
    function median(list,    a, n, i, lo) {
        n = split(list, a, " "); lo = a[1]
        for (i = 2; i <= n; i++) if (a[i] + 0 < lo + 0) lo = a[i]
        return lo
    }
    {
        row = $2 ", " $3
        if (!(row in seen)) { seen[row] = 1; rows[++nr] = row }
        v[$1 SUBSEP row] = v[$1 SUBSEP row] " " $4
    }
    END {
        print "| ns per check (best of " reps ") | before rl_top | top=0 | top=32 | top=32 / top=0 | top=0 / before | denied / allowed (top=32) |"
        print "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        for (r = 1; r <= nr; r++) {
            row = rows[r]
            b = (("before" SUBSEP row) in v) ? median(v["before" SUBSEP row]) : ""
            z = median(v["top=0" SUBSEP row]); t = median(v["top=32" SUBSEP row])
            split(row, parts, ", "); allowed_row = parts[1] ", allowed, " parts[3]
            da = (row ~ /denied/) ? sprintf("%.2f", t / median(v["top=32" SUBSEP allowed_row])) : ""
            printf "| %s | %s | %.1f | %.1f | %.2f | %s | %s |\n", row, (b == "" ? "—" : sprintf("%.1f", b)), z, t, t / z,
                (b == "" ? "—" : sprintf("%.2f", z / b)), da
        }
    }' reps="$REPS" "$raw"
