#!/usr/bin/env bash
# scripts/nginx_module.sh OUT.so [EXTRA_CFLAGS] — builds the nginx module
# (nginx/) against the source tree of Debian's nginx-dev package, configured
# exactly as the distribution's nginx binary was (the package's conf_flags),
# so that the binary loads it; links build/lib/libratelimit.a statically.
# Installs nginx-light, nginx-dev (which brings the headers it needs) when run
# as root and missing; otherwise names the packages. EXTRA_CFLAGS (e.g.
# "-fsanitize=address") are added to the module's compilation and link.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/need_package.sh
. scripts/need_package.sh
out=$1
extra=${2:-}
need_package nginx nginx-light
src=/usr/share/nginx/src
if [[ ! -f $src/conf_flags ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing the Debian package nginx-dev (nginx's source tree, for building modules)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq nginx-dev >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nginx-dev >/dev/null 2>&1; } ||
            { echo "could not install the Debian package nginx-dev" >&2; exit 1; }
    fi
    [[ -f $src/conf_flags ]] ||
        { echo "nginx's source tree is needed: install the Debian package nginx-dev (apt-get install nginx-dev)" >&2; exit 1; }
fi
# The tree must match the binary: a module of another version is refused at load.
binary=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
tree=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' $src/src/core/nginx.h)
[[ $binary == "$tree" ]] ||
    { echo "nginx is $binary but nginx-dev's tree is $tree: install matching versions" >&2; exit 1; }

work=$(dirname "$out")/tree
rm -rf "$work"
mkdir -p "$work" "$(dirname "$out")"
cp -r "$src"/. "$work"
# shellcheck disable=SC1091
. "$work/conf_flags"
export RL_STATIC_LIB="$PWD/build/lib/libratelimit.a"
RL_NATIVE_LIBS=$(cat build/lib/native-static-libs.txt)
export RL_NATIVE_LIBS
(
    cd "$work"
    ./configure "${NGX_CONF_FLAGS[@]}" --add-dynamic-module="$OLDPWD/nginx" \
        --with-cc-opt="-fPIC -std=c99 -pedantic -Wall -Wextra -Werror -Wno-unused-parameter $extra" \
        --with-ld-opt="-fPIC $extra" >configure.log 2>&1 ||
        { tail -20 configure.log >&2; echo "nginx's configure failed (full log: $work/configure.log)" >&2; exit 1; }
    make -f objs/Makefile modules >make.log 2>&1 ||
        { grep -E 'error|warning' make.log | head -30 >&2; echo "building the module failed (full log: $work/make.log)" >&2; exit 1; }
)
cp "$work/objs/ngx_http_ratelimit_module.so" "$out"
echo "built $out" >&2
