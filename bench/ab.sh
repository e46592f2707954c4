#!/usr/bin/env bash
# bench/ab.sh BEFORE AFTER [REPS [CASE]] — one library build against another,
# interleaved: how a change to libratelimit was measured before it landed.
#
# BEFORE and AFTER are libratelimit.so files (e.g. a copy of
# target/release/libratelimit.so made before the change, and the one built
# after it). The bench driver (build/bench/bench_ratelimit, or BIN) runs
# REPS times (default 7) against each, alternating, so a burst of load on
# the machine hits both alike; prints, per case, each build's median and
# every run. CASE runs only the cases whose name contains it. ITERS (default
# 1000000) is the checks per thread per case.
#
# The driver links libratelimit.so.0 (the soname), so each build is copied
# under that name into a directory of its own and found through
# LD_LIBRARY_PATH, which is searched before the driver's RUNPATH; the script
# checks with ldd that each run really loads the build it names.
set -euo pipefail
cd "$(dirname "$0")/.."
(($# >= 2)) || { echo "usage: $0 BEFORE.so AFTER.so [REPS [CASE]]" >&2; exit 2; }
BIN=${BIN:-build/bench/bench_ratelimit}
REPS=${3:-7}
CASE=${4:-}
ITERS=${ITERS:-1000000}
[[ -x $BIN ]] || { echo "ab: $BIN missing: run 'make bench' (or scripts/bench.sh) once first" >&2; exit 2; }
dirs=$(mktemp -d)
trap 'rm -rf "$dirs"' EXIT
for side in before after; do
    lib=$1
    shift
    [[ -f $lib ]] || { echo "ab: no such library: $lib" >&2; exit 2; }
    mkdir "$dirs/$side"
    cp "$lib" "$dirs/$side/libratelimit.so.0"
    loaded=$(LD_LIBRARY_PATH="$dirs/$side" ldd "$BIN" | sed -n 's/.*libratelimit.so.0 => \([^ ]*\).*/\1/p')
    [[ $loaded == "$dirs/$side/libratelimit.so.0" ]] || { echo "ab: $BIN loads $loaded, not $lib" >&2; exit 1; }
done
for ((i = 0; i < REPS; i++)); do
    for side in before after; do
        LD_LIBRARY_PATH="$dirs/$side" "$BIN" "$ITERS" "$CASE" | sed "s/^/$side\t/"
    done
done | awk -F'\t' '
    { k = $3 "\t" $1; if (!(k in v)) order[++n] = k; v[k] = v[k] " " $4 }
    END {
        for (i = 1; i <= n; i++) {
            m = split(v[order[i]], a, " ")
            for (x = 2; x <= m; x++) { t = a[x]; for (y = x - 1; y >= 1 && a[y] + 0 > t + 0; y--) a[y + 1] = a[y]; a[y + 1] = t }
            med = m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
            printf "%s\tmedian %.1f\t(%s )\n", order[i], med, v[order[i]]
        }
    }' | sort -t$'\t' -k1,1 -s
