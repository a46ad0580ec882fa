#!/bin/sh
# Installs the Debian 12 packages Loom needs to build, test, run and benchmark,
# and only those that are missing. Run as root; without root it only reports.
set -eu

PACKAGES="build-essential cmake pkg-config git ca-certificates \
postgresql-15 postgresql-client-15 libpq-dev \
libjansson-dev liblua5.4-dev libuv1-dev libcmocka-dev libhttp-parser-dev \
libargon2-dev libssl-dev libpcre2-dev libcurl4-openssl-dev libxlsxwriter-dev libzip-dev libexpat1-dev \
libjemalloc-dev zlib1g-dev \
wrk curl procps"

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages:$missing" >&2
    echo "install-deps: run 'sudo $0' (or install them) and try again" >&2
    exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
