#!/bin/sh
# CTest fixture: starts (start) or stops and removes (stop) the throwaway
# embedded PostgreSQL that the end-to-end tests share. The cluster lives in a
# new temporary directory; its connection string goes to BUILD/testdb.url.
set -eu
cmd=$1 loom=$2 build=$3
state="$build/testdb.dir"
case "$cmd" in
start)
    if [ -f "$state" ]; then   # a previous run died without cleaning up
        "$loom" db stop --data-dir "$(cat "$state")/data" >/dev/null 2>&1 || true
        rm -rf "$(cat "$state")"
    fi
    dir=$(mktemp -d /tmp/loom-test.XXXXXX)
    chmod 755 "$dir"   # the PostgreSQL account must traverse it when we are root
    echo "$dir" > "$state"
    mkdir -p "$build/test-logs"
    "$loom" db start --data-dir "$dir/data" > "$dir/start.out"
    cat "$dir/start.out"
    sed -n 's/^url: //p' "$dir/start.out" > "$build/testdb.url"
    ;;
stop)
    [ -f "$state" ] || exit 0
    dir=$(cat "$state")
    "$loom" db stop --data-dir "$dir/data"
    rm -rf "$dir" "$state" "$build/testdb.url"
    ;;
esac
