#!/usr/bin/env bash
# test_install.sh — what a user of the installed library gets (run by
# `make test-install`, after `make lib`). Prints "N passed, 0 failed" and exits
# 0, or names each failed check and exits 1.
#
#   - `make install PREFIX=<temporary>` only copies (no cargo), installs
#     exactly its files, stripped; `make uninstall` removes them all (and
#     likewise with DESTDIR);
#   - both libraries export the header's rl_* functions and nothing else;
#   - README.md's example (the ```c block of "Using it from C"), built with
#     README's own commands (the `cc` lines of the ```sh block after it), runs:
#     shared with its rpath, static without NEEDED libratelimit.so, fully
#     static; and without the rpath it needs LD_LIBRARY_PATH, as README says;
#   - a C test linked with the static library runs;
#   - the static library links next to another Rust static library (built
#     here with rustc; nightly when present, so that its standard library
#     differs from ours), in either order, and fully static.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
MAKE=${MAKE:-make}
# The install below goes where this script says, whatever PREFIX, LIBDIR,
# INCDIR or DESTDIR the calling make was given.
unset MAKEFLAGS MFLAGS MAKELEVEL DESTDIR PREFIX LIBDIR INCDIR

# shellcheck source=scripts/need_package.sh
. scripts/need_package.sh
need_package pkg-config pkg-config
need_package readelf binutils

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
check() {
    local what=$1; shift
    if "$@" >"$tmp/check.out" 2>&1; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $what" >&2
        sed 's/^/    /' "$tmp/check.out" | head -n 20 >&2
    fi
}
die() { echo "test_install.sh: $*" >&2; exit 1; }

# The files `make install` puts under PREFIX, as `find -printf '%P\n' | sort` lists them.
expected_files() {
    printf '%s\n' include/ratelimit.h lib/libratelimit.a lib/libratelimit.so lib/libratelimit.so.0 \
        lib/libratelimit.so.0.1.0 lib/pkgconfig/ratelimit-static.pc lib/pkgconfig/ratelimit.pc
}
files_under() { (cd "$1" && find . ! -type d -printf '%P\n' | sort); }
same_files() { diff <(expected_files) <(files_under "$1"); }
nothing_under() { local left; left=$(find "$1" ! -type d); [ -z "$left" ] || { echo "left: $left"; return 1; }; }
# (Output captured first: with pipefail, `readelf | grep -q` fails when grep
# stops reading early.)
no_debug_info() { local s; s=$(readelf -SW "$1") && ! grep -q '\.debug_' <<<"$s"; }
# The functions the header declares, and the globals a library defines.
header_functions() { grep -oE '\brl_[a-z0-9_]+\(' include/ratelimit.h | tr -d '(' | sort -u; }
exports_are_the_header() { local s; s=$("$@") && diff <(header_functions) <(awk 'NF == 3 { print $3 }' <<<"$s" | sort -u); }
not() { ! "$@"; }
needs() { local s; s=$(readelf -d "$1") && grep -q "NEEDED.*\[$2" <<<"$s"; }
fully_static() { local s; s=$(readelf -lW "$1") && ! grep -q 'INTERP' <<<"$s" && ! grep -q 'DYNAMIC' <<<"$s"; }
runs() { env -u LD_LIBRARY_PATH "$@"; }
# A fully static glibc program gets glibc's warnings about getaddrinfo and
# getpwuid_r (README mentions them), and nothing else.
links_with_glibc_warnings_only() {
    "$@" >"$tmp/link.out" 2>&1 || { cat "$tmp/link.out"; return 1; }
    ! grep -v -e 'statically linked applications requires at runtime' -e 'in function' "$tmp/link.out"
}
fails_to_load() { ! env -u LD_LIBRARY_PATH "$1" 2>"$tmp/load.err" && grep -q 'libratelimit.so.0: cannot open shared object file' "$tmp/load.err"; }

# ---- install into a prefix: only copies, exactly these files, stripped ------
prefix=$tmp/usr
$MAKE --no-print-directory install PREFIX="$prefix" LIBDIR="$prefix/lib" INCDIR="$prefix/include" >"$tmp/install.out" 2>&1 ||
    { cat "$tmp/install.out" >&2; die "make install failed"; }
check "make install runs no cargo (make lib has built everything)" not grep -q 'cargo' "$tmp/install.out"
check "make install puts exactly its files" same_files "$prefix"
check "the installed libratelimit.so has no debug info" no_debug_info "$prefix/lib/libratelimit.so.0.1.0"
check "the installed libratelimit.a has no debug info" no_debug_info "$prefix/lib/libratelimit.a"
check "libratelimit.so.0 -> libratelimit.so.0.1.0" test "$(readlink "$prefix/lib/libratelimit.so.0")" = libratelimit.so.0.1.0
check "libratelimit.so -> libratelimit.so.0" test "$(readlink "$prefix/lib/libratelimit.so")" = libratelimit.so.0
check "the soname is libratelimit.so.0" \
    sh -c "readelf -d '$prefix/lib/libratelimit.so.0.1.0' | grep -q 'SONAME.*\[libratelimit.so.0\]'"

# ---- exports: the header's functions, nothing else ------------------------
check "libratelimit.so exports exactly the header's functions" \
    exports_are_the_header nm -D --defined-only "$prefix/lib/libratelimit.so.0.1.0"
check "libratelimit.a exports exactly the header's functions" \
    exports_are_the_header nm -g --defined-only "$prefix/lib/libratelimit.a"
check "build/lib/libratelimit.a exports exactly the header's functions" \
    exports_are_the_header nm -g --defined-only build/lib/libratelimit.a

# ---- README's example, built with README's commands -----------------------
work=$tmp/work
mkdir -p "$work/target"
ln -s "$root/include" "$work/include"
ln -s "$root/target/release" "$work/target/release"
mkdir -p "$work/build"
ln -s "$root/build/lib" "$work/build/lib"
# The section "## Using it from C": its first ```c block, and the `cc` lines of
# the first ```sh block after it.
awk '/^## /{ sec = ($0 == "## Using it from C") } sec && /^```c$/ && !done { on = 1; next }
     on && /^```$/ { on = 0; done = 1 } on' README.md >"$work/app.c"
mapfile -t commands < <(awk '/^## /{ sec = ($0 == "## Using it from C") } sec && /^```sh$/ && !done { on = 1; next }
     on && /^```$/ { on = 0; done = 1 } on && /^cc /' README.md)
grep -q 'rl_create' "$work/app.c" || die "no C example found in README.md's \"Using it from C\""
[ "${#commands[@]}" -eq 5 ] || die "expected 5 cc commands in README.md's \"Using it from C\", found ${#commands[@]}"

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
for i in "${!commands[@]}"; do
    cmd=${commands[$i]}
    rm -f "$work/app"
    if ! (cd "$work" && bash -c "$cmd") >"$tmp/cc.out" 2>&1; then
        check "README: $cmd" sh -c "cat '$tmp/cc.out'; false"
        continue
    fi
    # A fully static glibc program: only glibc's warnings about getaddrinfo and
    # getpwuid_r (README mentions them).
    check "README: $cmd: no other compiler or linker message" \
        sh -c "! grep -v -e 'statically linked applications requires at runtime' -e 'in function' '$tmp/cc.out'"
    case $cmd in
    *-static\ *)
        check "README: $cmd: fully static" fully_static "$work/app" ;;
    *ratelimit-static* | *libratelimit.a*)
        check "README: $cmd: no NEEDED libratelimit.so" not needs "$work/app" libratelimit
        check "README: $cmd: dynamic libc still" needs "$work/app" libc.so ;;
    *)
        check "README: $cmd: NEEDED libratelimit.so.0" needs "$work/app" libratelimit.so.0 ;;
    esac
    check "README: $cmd: the program runs" runs "$work/app"
done

# README: without the rpath the loader does not find the library; LD_LIBRARY_PATH helps.
(cd "$work" && cc app.c $(pkg-config --cflags --libs ratelimit) -o app-norpath) >"$tmp/cc.out" 2>&1 ||
    check "cc app.c \$(pkg-config --cflags --libs ratelimit)" sh -c "cat '$tmp/cc.out'; false"
check "without rpath: libratelimit.so.0: cannot open shared object file" fails_to_load "$work/app-norpath"
check "without rpath, with LD_LIBRARY_PATH: the program runs" \
    env LD_LIBRARY_PATH="$prefix/lib" "$work/app-norpath"

# ---- a C test, linked with the static library -----------------------------
read -r native_libs <build/lib/native-static-libs.txt
cflags="-std=c99 -Wall -Wextra -Werror -pedantic -O1"
for t in test_check test_headers; do
    # shellcheck disable=SC2086 # word splitting wanted
    check "tests/c/$t.c linked with build/lib/libratelimit.a builds" \
        cc $cflags -Iinclude -Itests/c -o "$tmp/$t" "tests/c/$t.c" build/lib/libratelimit.a $native_libs
    check "tests/c/$t.c linked statically: no NEEDED libratelimit.so" not needs "$tmp/$t" libratelimit
    check "tests/c/$t.c linked statically passes" runs "$tmp/$t"
done

# ---- next to another Rust static library ----------------------------------
cat >"$tmp/other.rs" <<'RS'
/// Another Rust static library in the same program, with its own standard library.
#[no_mangle]
pub extern "C" fn other(n: i32) -> i32 {
    std::panic::set_hook(Box::new(|_| {}));
    match std::panic::catch_unwind(|| if n < 0 { panic!("negative") } else { format!("{n}").len() as i32 }) {
        Ok(v) => v,
        Err(_) => -1,
    }
}
RS
cat >"$tmp/two.c" <<'C'
#include <ratelimit.h>
#include <stdio.h>

int other(int n);

int main(void) {
    rl_limiter *lim;
    rl_decision d;
    int allowed = 0;
    if (rl_create("rate=2/minute", &lim) != RL_OK) {
        fprintf(stderr, "rl_create: %s\n", rl_last_error());
        return 1;
    }
    for (int i = 0; i < 3; i++) {
        rl_check(lim, "k", 1, 1, &d);
        allowed += d.allowed;
    }
    rl_destroy(lim);
    printf("allowed %d of 3, other(123) = %d, other(-1) = %d\n", allowed, other(123), other(-1));
    return !(allowed == 2 && other(123) == 3 && other(-1) == -1);
}
C
rustc_other=(rustc)
rustup run nightly rustc --version >/dev/null 2>&1 && rustc_other=(rustup run nightly rustc)
if "${rustc_other[@]}" --edition 2021 --crate-type staticlib -O -o "$tmp/libother.a" "$tmp/other.rs" >"$tmp/rustc.out" 2>&1; then
    for order in "$prefix/lib/libratelimit.a $tmp/libother.a" "$tmp/libother.a $prefix/lib/libratelimit.a"; do
        # shellcheck disable=SC2086 # word splitting wanted
        check "libratelimit.a links with another Rust static library ($("${rustc_other[@]}" --version | cut -d' ' -f1-2)), order: ${order//$tmp\//}" \
            cc $cflags -Iinclude -o "$tmp/two" "$tmp/two.c" $order $native_libs
        check "libratelimit.a next to another Rust static library runs" runs "$tmp/two"
    done
    # Fully static: the unwinder is libgcc_eh's (the panic caught in other()).
    # shellcheck disable=SC2086 # word splitting wanted
    check "libratelimit.a and another Rust static library link fully static" \
        links_with_glibc_warnings_only cc -static $cflags -Iinclude -o "$tmp/two" "$tmp/two.c" \
        "$prefix/lib/libratelimit.a" "$tmp/libother.a" $native_libs
    check "... and runs" runs "$tmp/two"
else
    check "rustc builds the other static library" sh -c "cat '$tmp/rustc.out'; false"
fi

# ---- uninstall, and DESTDIR ------------------------------------------------
$MAKE --no-print-directory uninstall PREFIX="$prefix" LIBDIR="$prefix/lib" INCDIR="$prefix/include" >"$tmp/uninstall.out" 2>&1
check "make uninstall leaves no file" nothing_under "$prefix"

stage=$tmp/stage
$MAKE --no-print-directory install DESTDIR="$stage" PREFIX=/usr/local >"$tmp/install.out" 2>&1 ||
    { cat "$tmp/install.out" >&2; die "make install DESTDIR=... failed"; }
check "make install DESTDIR=... puts exactly its files under DESTDIR/PREFIX" same_files "$stage/usr/local"
check "ratelimit.pc names PREFIX, not DESTDIR" grep -qx 'prefix=/usr/local' "$stage/usr/local/lib/pkgconfig/ratelimit.pc"
$MAKE --no-print-directory uninstall DESTDIR="$stage" PREFIX=/usr/local >"$tmp/uninstall.out" 2>&1
check "make uninstall DESTDIR=... leaves no file" nothing_under "$stage"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
