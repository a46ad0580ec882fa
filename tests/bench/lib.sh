# lib.sh - sourced by the benchmark scripts (after they set LOOM): a
# throwaway embedded PostgreSQL in a temporary directory. Sets PGBIN, dir, url
# and run_as (the account PostgreSQL tools run as); wait_healthy and
# admin_token serve the server a script starts. On exit stops $server and
# $helper (pids the script may set), the database, and removes $dir.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/loom-bench.XXXXXX)
chmod 755 "$dir"
server="" helper=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    [ -n "$helper" ] && kill "$helper" 2>/dev/null && wait "$helper" 2>/dev/null
    "$LOOM" db stop --data-dir "$dir/data" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
url=$("$LOOM" db start --data-dir "$dir/data" | sed -n 's/^url: //p')
run_as=""
[ "$(id -u)" = 0 ] && run_as="runuser -u postgres --"
# Waits until the server on port $1 answers /healthz (10 s at most).
wait_healthy() {
    for i in $(seq 1 100); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.1; done
    return 1
}
# The bearer token of the bench admin (LOOM_ADMIN_PASSWORD=bench-admin-pw) on port $1.
admin_token() {
    curl -sf -X POST "http://127.0.0.1:$1/api/auth/login" -d '{"username":"admin","password":"bench-admin-pw"}' \
        | sed 's/.*"token":"\([^"]*\)".*/\1/'
}
