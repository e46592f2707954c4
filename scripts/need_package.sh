# need_package.sh — sourced by the scripts that need a program from Debian.
#
#   need_package COMMAND PACKAGE
#
# Returns at once when COMMAND is on the PATH. Otherwise, as root with
# apt-get, installs PACKAGE (updating the package lists if the first try
# fails); anyone else gets a message naming the package, and the script exits.
need_package() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing the Debian package $pkg (for $cmd)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "$pkg" >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$pkg" >/dev/null 2>&1; } ||
            { echo "could not install the Debian package $pkg" >&2; exit 1; }
        command -v "$cmd" >/dev/null 2>&1 && return 0
    fi
    echo "$cmd is needed: install the Debian package $pkg (apt-get install $pkg)" >&2
    exit 1
}
