#!/bin/sh
# `make fuzz`: runs each cargo-fuzz target (fuzz/fuzz_targets) for
# FUZZ_SECONDS seconds (default 60), one after the other (FUZZ_JOBS below),
# starting from the corpora kept in fuzz/corpus/<target>; prints the
# executions of each target and fails if any target found a crash (the input
# is left in fuzz/artifacts/<target>/; replay it with
# `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`).
#
# New inputs the fuzzer finds go to a scratch directory, so the committed
# corpora do not grow by themselves. FUZZ_UPDATE_CORPUS=1 merges them into
# fuzz/corpus, keeping only the inputs that add coverage.
# FUZZ_TARGETS="api headers" runs only those.
#
# Installs what it needs, as `make test` does: the nightly toolchain's
# cargo-fuzz (`cargo install cargo-fuzz`) if missing.
set -eu
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"config redis_url headers region api quotas"}
# FUZZ_JOBS=2 runs two processes of each target at once (one per core);
# their executions are added up.
jobs=${FUZZ_JOBS:-1}
# FUZZ_SANITIZER=none builds without ASan: several times the executions per
# second, for long runs of the api target, whose unsafe code (the shm mapping)
# ASan cannot watch anyway; the default keeps ASan.
sanitizer=${FUZZ_SANITIZER:-address}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Regions the shm targets leave when a run is cut short (their names end in the pid).
remove_stale_regions() {
    for f in /dev/shm/rl-fuzz-*; do
        [ -e "$f" ] || continue
        kill -0 "${f##*-}" 2>/dev/null || rm -f "$f"
    done
}

cd fuzz
failed=""
summary=""
for t in $targets; do
    echo "== fuzz $t for ${seconds}s ($jobs process(es), sanitizer $sanitizer)"
    mkdir -p "corpus/$t"
    # Debug assertions with overflow checks are on (cargo fuzz's default).
    # Each process gets a scratch directory of its own for the new inputs it finds.
    pids=""
    for j in $(seq 1 "$jobs"); do
        mkdir -p "$scratch/$t.$j"
        cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "$scratch/$t.$j" "corpus/$t" -- \
            -max_total_time="$seconds" -print_final_stats=1 -timeout=30 -rss_limit_mb=4096 \
            >"$scratch/$t.$j.log" 2>&1 &
        pids="$pids $!"
    done
    rc=0
    for pid in $pids; do wait "$pid" || rc=$?; done
    remove_stale_regions
    cat "$scratch/$t".*.log >"$scratch/$t.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log" | awk '{s += $1} END {print s + 0}')
    if [ "$rc" -ne 0 ]; then
        # What broke (the harness's message, the sanitizer's report), without the
        # fuzzer's progress lines and stack frames.
        grep -v -e '^#[0-9]' -e '^ *#[0-9]' -e '^INFO:' -e 'Uses:' -e 'NEW_FUNC' "$scratch/$t.log" | head -n 60
        failed="$failed $t"
        summary="$summary$t: FAILED after ${execs:-?} executions (exit $rc; see fuzz/artifacts/$t/)\n"
    else
        summary="$summary$t: ${execs:-?} executions in ${seconds}s, no crash\n"
    fi
    if [ "${FUZZ_UPDATE_CORPUS:-0}" = 1 ] && [ "$rc" -eq 0 ]; then
        # The smallest set of inputs that keeps every feature of the old
        # corpus and the new inputs (libFuzzer's set-cover merge).
        rm -rf "$scratch/min"
        mkdir "$scratch/min"
        cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "$scratch/min" "corpus/$t" "$scratch/$t".[0-9]* -- -set_cover_merge=1 \
            >"$scratch/$t.merge.log" 2>&1
        remove_stale_regions
        rm -rf "corpus/$t"
        mv "$scratch/min" "corpus/$t"
        echo "corpus/$t: $(ls "corpus/$t" | wc -l) files after the merge"
    fi
done

echo "== fuzz summary"
printf "$summary"
[ -z "$failed" ] || { echo "crashes in:$failed"; exit 1; }
