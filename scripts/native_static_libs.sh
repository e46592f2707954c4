#!/usr/bin/env bash
# native_static_libs.sh [TARGET_DIR] — prints the system libraries a C program
# must link with libratelimit.a, as rustc reports them (`make lib` writes
# build/lib/native-static-libs.txt with it; `make install` puts the list in the
# pkg-config files).
#
# rustc prints the list only while it builds a static library. Instead of
# building ours a second time (LTO: minutes), this builds, in a second or two,
# a static library of one line over the rlib cargo has just built
# (TARGET_DIR, default target/release): rustc gathers the same list from the
# same crates.
#
# -lgcc_s is left out: the C compiler adds the unwinder itself (libgcc_s when
# linking dynamically, libgcc_eh with -static), and naming libgcc_s makes
# `cc -static` fail, as there is no libgcc_s.a.
set -euo pipefail
dir=${1:-target/release}
RUSTC=${RUSTC:-rustc}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo 'pub use ratelimit::*;' > "$tmp/stub.rs"
out=$($RUSTC --edition 2021 --crate-type staticlib --crate-name rl_native_libs \
        -L "dependency=$dir/deps" --extern "ratelimit=$dir/libratelimit.rlib" \
        --print native-static-libs -o "$tmp/stub.a" "$tmp/stub.rs" 2>&1) ||
    { printf '%s\n' "$out" >&2; exit 1; }
libs=$(printf '%s\n' "$out" | sed -n 's/.*native-static-libs: //p' | tail -n 1)
[ -n "$libs" ] || { printf 'native_static_libs.sh: rustc printed no list:\n%s\n' "$out" >&2; exit 1; }
printf '%s\n' "$libs" | tr ' ' '\n' | grep -vx -e '-lgcc_s' -e '' | paste -sd ' '
