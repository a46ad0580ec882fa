#!/bin/sh
# make bench: authenticated GET /api/me through Loom (wrk) against PostgreSQL's
# own select-only benchmark (pgbench -S -M prepared), in the same run, with the
# same client counts, on loopback; then Loom's latency at a fixed rate of half
# its measured throughput (loadgen, open loop); and Loom's resident memory idle
# and under load.
# Usage: tests/bench/run.sh BUILD_DIR   (env: CLIENTS="4 16 64", DURATION=15, WORKERS, RATES="10000 15000"
#        for more open-loop points)
set -eu
BUILD=$(realpath "$1")
LOOM=$BUILD/loom
LOADGEN=$BUILD/loadgen
CLIENTS=${CLIENTS:-"4 16 64"}
DURATION=${DURATION:-15}
WORKERS=${WORKERS:-}
PORT=${PORT:-18181}

. "$(dirname "$0")/lib.sh"
$run_as "$PGBIN/psql" -q -X "$(echo "$url" | sed 's/dbname=loom/dbname=postgres/')" -c "CREATE DATABASE bench" >/dev/null
bench_url=$(echo "$url" | sed 's/dbname=loom/dbname=bench/')
$run_as "$PGBIN/pgbench" -q -i -s 10 "$bench_url" >/dev/null 2>&1

rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$1/status"; }

LOOM_ADMIN_PASSWORD=bench-admin-pw "$LOOM" serve --db "$url" --listen 127.0.0.1:$PORT \
    ${WORKERS:+--workers $WORKERS} 2>/dev/null &
server=$!
wait_healthy $PORT
token=$(admin_token $PORT)
auth="Authorization: Bearer $token"
wrk -t2 -c16 -d2s -H "$auth" http://127.0.0.1:$PORT/api/me >/dev/null   # warm-up
sleep 1
idle_rss=$(rss "$server")
( while kill -0 "$server" 2>/dev/null; do rss "$server"; sleep 0.5; done ) > "$dir/rss" &
sampler=$!

echo "clients | pgbench -S -M prepared (tps) | loom GET /api/me (req/s) | ratio | loom p99 (closed loop)"
echo "---|---|---|---|---"
rate16=""
for c in $CLIENTS; do
    pg=$($run_as "$PGBIN/pgbench" -n -S -M prepared -c "$c" -j 2 -T "$DURATION" "$bench_url" 2>&1 \
         | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    out=$(wrk -t2 -c"$c" -d"${DURATION}s" --latency -H "$auth" http://127.0.0.1:$PORT/api/me)
    rps=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    bad=$(echo "$out" | sed -n 's/^ *Non-2xx or 3xx responses: *//p')
    [ -n "$bad" ] && echo "warning: $bad non-2xx answers at $c clients"
    printf '%s | %.0f | %.0f | %.0f%% | %s\n' "$c" "$pg" "$rps" "$(echo "$rps $pg" | awk '{print 100*$1/$2}')" "$p99"
    [ "$c" = 16 ] && rate16=$rps
done
kill "$sampler" 2>/dev/null || true
peak=$(sort -n "$dir/rss" | tail -1)

half=$(echo "${rate16:-$rps}" | awk '{printf "%d", $1 / 2}')
echo
echo "open-loop latency at half of Loom's 16-client rate ($half req/s over 16 connections, ${DURATION}s),"
echo "measured from each request's scheduled time:"
printf 'loom GET /api/me     : '
"$LOADGEN" -p $PORT -c 16 -r "$half" -d "$DURATION" -H "$auth" /api/me | tail -1
# the same schedule for PostgreSQL alone: pgbench's rate limiter, latency + schedule lag
mkdir -p "$dir/pglog"
[ -n "$run_as" ] && chown postgres "$dir/pglog"
( cd "$dir/pglog" && $run_as "$PGBIN/pgbench" -n -S -M prepared -c 16 -j 2 -R "$half" -T "$DURATION" -l \
    --log-prefix="$dir/pglog/tx" "$bench_url" >/dev/null 2>&1 )
printf 'pgbench -S -R %s : ' "$half"
cat "$dir"/pglog/tx* | awk '{print ($3 + $7) / 1000}' | sort -n | awk '{a[NR] = $1} END {
    printf "latency ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
        a[int(NR * 0.5)], a[int(NR * 0.9)], a[int(NR * 0.99)], a[int(NR * 0.999)], a[NR]}'
for rate in ${RATES:-}; do   # more points of the open-loop curve, when asked
    printf 'loom GET /api/me at %s req/s: ' "$rate"
    "$LOADGEN" -p $PORT -c 16 -r "$rate" -d "$DURATION" -H "$auth" /api/me | tail -1
done
echo
echo "resident memory: idle ${idle_rss} MB, peak under load ${peak} MB"
echo "machine: $(nproc) cores; loom workers: ${WORKERS:-default (2 x cores)}"
