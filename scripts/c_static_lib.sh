#!/usr/bin/env bash
# c_static_lib.sh IN OUT — the static library C programs link (`make lib`
# builds build/lib/libratelimit.a with it; `make install` installs that).
#
# Cargo's libratelimit.a (IN) holds the library and all of Rust's standard
# library and compiler-rt as global symbols: thousands of them, among them
# rust_eh_personality, which clash with any other Rust static library in the
# same program. OUT holds one object, the partial link of what the rl_*
# functions need, in which only the rl_* functions stay global:
#   1. ld -r -u rl_... : one relocatable object with the members rl_* need
#      (what a final link would take from IN);
#   2. objcopy: every symbol but rl_* made local; the COMDAT group of Rust's
#      personality pointer renamed, so a linker cannot fold it into another
#      Rust library's group of the same name; LLVM's embedded bitcode dropped
#      (unused by C linkers, and it trips binutils' LTO plugin in nm/ar).
set -euo pipefail
in=$1 out=$2
LD=${LD:-ld} OBJCOPY=${OBJCOPY:-objcopy} AR=${AR:-ar} READELF=${READELF:-readelf}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The exported functions: rl_* defined globally in IN.
mapfile -t syms < <($READELF -sW "$in" 2>/dev/null |
    awk '$5 == "GLOBAL" && $7 != "UND" && $8 ~ /^rl_/ { print $8 }' | sort -u)
[ "${#syms[@]}" -gt 0 ] || { echo "c_static_lib.sh: no rl_* function in $in" >&2; exit 1; }

undef=()
for s in "${syms[@]}"; do undef+=(-u "$s"); done
$LD -r "${undef[@]}" "$in" -o "$tmp/ratelimit.o"

# COMDAT groups are matched by name across objects, whatever the binding of
# their symbol: give ours a name of our own.
renames=()
while read -r sig; do
    [ -n "$sig" ] && renames+=(--redefine-sym "$sig=rl.private.$sig")
done < <($READELF -gW "$tmp/ratelimit.o" |
    sed -n "s/^COMDAT group section \[ *[0-9]*\] \`[^']*' \[\(.*\)\] contains.*/\1/p" | sort -u)

$OBJCOPY --wildcard --keep-global-symbol='rl_*' "${renames[@]}" \
    --remove-section=.llvmbc --remove-section=.llvmcmd \
    "$tmp/ratelimit.o" "$tmp/ratelimit-local.o"

# Nothing but rl_* may remain global.
leaked=$($READELF -sW "$tmp/ratelimit-local.o" |
    awk '($5 == "GLOBAL" || $5 == "WEAK") && $7 != "UND" && $8 !~ /^rl_/ { print $8 }')
if [ -n "$leaked" ]; then
    echo "c_static_lib.sh: still global after objcopy:" $leaked >&2
    exit 1
fi

mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
$AR rcs "$out.tmp" "$tmp/ratelimit-local.o"
mv -f "$out.tmp" "$out"
