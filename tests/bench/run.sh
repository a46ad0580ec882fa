#!/bin/sh
# make bench: authenticated GET /api/me through Loom (wrk) against PostgreSQL's
# own select-only benchmark (pgbench -S -M prepared) in the same run, with the
# same client count, on loopback; then Loom at half of its measured rate for
# latency; and Loom's resident memory idle and under load.
# Usage: tests/bench/run.sh path/to/loom   (env: CLIENTS, DURATION, WORKERS)
set -eu
LOOM=$(realpath "$1")
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-20}
WORKERS=${WORKERS:-}
PORT=${PORT:-18181}
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
pgurl_base=$(echo "$url" | sed 's/dbname=loom/dbname=postgres/')
psql_() { $run_as "$PGBIN/psql" -q -X "$@"; }
psql_ "$pgurl_base" -c "CREATE DATABASE bench" >/dev/null
bench_url=$(echo "$url" | sed 's/dbname=loom/dbname=bench/')

echo "== pgbench -i -s 10"
$run_as "$PGBIN/pgbench" -q -i -s 10 "$bench_url" >/dev/null 2>&1

rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$1/status"; }

echo "== loom serve"
LOOM_ADMIN_PASSWORD=bench-admin-pw "$LOOM" serve --db "$url" --listen 127.0.0.1:$PORT \
    ${WORKERS:+--workers $WORKERS} 2>/dev/null &
server=$!
for i in $(seq 1 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
token=$(curl -sf -X POST http://127.0.0.1:$PORT/api/auth/login \
    -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
# warm every worker's prepared statements
wrk -t2 -c"$CLIENTS" -d2s -H "Authorization: Bearer $token" http://127.0.0.1:$PORT/api/me >/dev/null
sleep 2
idle_rss=$(rss "$server")

echo "== pgbench -S -M prepared -c $CLIENTS -j 2 -T $DURATION"
pg_out=$($run_as "$PGBIN/pgbench" -n -S -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" "$bench_url" 2>&1)
pg_tps=$(echo "$pg_out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
pg_lat=$(echo "$pg_out" | sed -n 's/^latency average = \(.*\)/\1/p')
echo "pgbench: $pg_tps tps, latency average $pg_lat"

echo "== wrk -t2 -c$CLIENTS -d${DURATION}s GET /api/me"
peak=0
( while kill -0 "$server" 2>/dev/null; do rss "$server"; sleep 0.5; done ) > "$dir/rss" &
sampler=$!
wrk_out=$(wrk -t2 -c"$CLIENTS" -d"${DURATION}s" --latency -H "Authorization: Bearer $token" \
    http://127.0.0.1:$PORT/api/me)
kill "$sampler" 2>/dev/null || true
peak=$(sort -n "$dir/rss" | tail -1)
loom_rps=$(echo "$wrk_out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
loom_p99=$(echo "$wrk_out" | awk '$1 == "99%" {print $2}')
errors=$(echo "$wrk_out" | grep -E 'Non-2xx|Socket errors' || true)
echo "$wrk_out" | grep -E 'Latency|Req/Sec|Requests/sec|99%' 
[ -n "$errors" ] && echo "wrk: $errors"

# Half load: each connection waits between requests so that the offered rate
# is about half of the rate measured above (wrk does not count the wait).
half=$(awk -v r="$loom_rps" 'BEGIN {printf "%d", r / 2}')
delay_ms=$(awk -v c="$CLIENTS" -v r="$loom_rps" 'BEGIN {d = c * 1000 / (r / 2) - c * 1000 / r; if (d < 0) d = 0; printf "%.3f", d}')
cat > "$dir/delay.lua" <<LUA
function delay() return $delay_ms end
LUA
echo "== wrk at about half load ($half req/s: ${delay_ms} ms between requests per connection)"
half_out=$(wrk -t2 -c"$CLIENTS" -d"${DURATION}s" --latency -s "$dir/delay.lua" \
    -H "Authorization: Bearer $token" http://127.0.0.1:$PORT/api/me)
half_rps=$(echo "$half_out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
half_p99=$(echo "$half_out" | awk '$1 == "99%" {print $2}')
echo "$half_out" | grep -E 'Requests/sec|50%|99%'

ratio=$(awk -v a="$loom_rps" -v b="$pg_tps" 'BEGIN {printf "%.0f", 100 * a / b}')
echo
echo "== summary (clients $CLIENTS, ${DURATION}s each, $(nproc) cores)"
echo "pgbench -S -M prepared : $pg_tps tps"
echo "loom GET /api/me       : $loom_rps req/s = $ratio% of pgbench (target >= 60%), p99 $loom_p99"
echo "loom at half load      : $half_rps req/s, p99 $half_p99 (target < 5 ms)"
echo "loom resident memory   : idle ${idle_rss} MB (target < 30), peak under load ${peak} MB (target < 80)"
