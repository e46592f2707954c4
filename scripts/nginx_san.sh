#!/usr/bin/env bash
# scripts/nginx_san.sh COMMAND... — runs COMMAND (tests/nginx/test_nginx.py
# with a module built with -fsanitize=address,undefined) so that the nginx
# processes it starts, and only they, load the sanitizers' runtimes
# (LD_PRELOAD: the distribution's nginx is not instrumented, the module is),
# with every report written to a file; fails if any report was written.
set -euo pipefail
reports=$(mktemp -d "${TMPDIR:-/tmp}/rl-nginx-san.XXXXXX")
trap 'rm -rf "$reports"' EXIT
chmod 777 "$reports"   # workers run as nobody
RL_NGINX_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# nginx frees its configuration's memory at exit only in part, by design:
# leaks are not looked for. Every other finding is a report, and fatal.
RL_NGINX_SAN_OPTIONS="detect_leaks=0:abort_on_error=0:log_path=$reports/asan"
RL_NGINX_UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
export RL_NGINX_PRELOAD RL_NGINX_SAN_OPTIONS RL_NGINX_UBSAN_OPTIONS
status=0
"$@" || status=$?
if compgen -G "$reports/*" >/dev/null; then
    echo "nginx_san: the sanitizers reported:" >&2
    cat "$reports"/* >&2
    exit 1
fi
exit "$status"
