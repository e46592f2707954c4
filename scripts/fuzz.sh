#!/bin/sh
# `make fuzz`: runs each cargo-fuzz target (fuzz/fuzz_targets) for
# FUZZ_SECONDS seconds (default 60), one after the other, one process each,
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
targets=${FUZZ_TARGETS:-"config redis_url headers region api"}

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
    echo "== fuzz $t for ${seconds}s"
    mkdir -p "corpus/$t" "$scratch/$t"
    rc=0
    # ASan is on (cargo fuzz's default), and debug assertions with overflow checks.
    cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=30 -rss_limit_mb=4096 \
        >"$scratch/$t.log" 2>&1 || rc=$?
    remove_stale_regions
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log" | tail -n 1)
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
        cargo +nightly fuzz run "$t" "$scratch/min" "corpus/$t" "$scratch/$t" -- -set_cover_merge=1 \
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
