# lib.sh - sourced by the benchmark scripts (after they set LOOM): a
# throwaway embedded PostgreSQL in a temporary directory. Sets PGBIN, dir, url
# and run_as (the account PostgreSQL tools run as); on exit stops $server (a
# pid the script may set), the database, and removes $dir.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/loom-bench.XXXXXX)
chmod 755 "$dir"
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    "$LOOM" db stop --data-dir "$dir/data" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
url=$("$LOOM" db start --data-dir "$dir/data" | sed -n 's/^url: //p')
run_as=""
[ "$(id -u)" = 0 ] && run_as="runuser -u postgres --"
