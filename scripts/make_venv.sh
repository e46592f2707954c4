#!/usr/bin/env bash
# scripts/make_venv.sh DIR STAMP REQUIREMENT... — a Python virtual environment
# for the tests (never the system Python's packages): makes DIR with
# `python3 -m venv`, pip-installs the pinned REQUIREMENTs into it and, once
# all went well, creates DIR/STAMP, which the Makefile's rule waits for. A
# DIR without its STAMP (an interrupted run, another pin) is made afresh.
# python3 and its venv module come from Debian's python3 and python3-venv,
# installed here when run as root, named in the error otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/need_package.sh
. scripts/need_package.sh

dir=$1 stamp=$2
shift 2
need_package python3 python3
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing the Debian package python3-venv (for python3 -m venv)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq python3-venv >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq python3-venv >/dev/null 2>&1; } ||
            { echo "could not install the Debian package python3-venv" >&2; exit 1; }
    fi
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 ||
        { echo "python3 -m venv is needed: install the Debian package python3-venv (apt-get install python3-venv)" >&2; exit 1; }
fi
rm -rf "$dir"
python3 -m venv "$dir"
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
touch "$dir/$stamp"
