#!/bin/sh
# Part of `make bench` (issue 4): a filtered, sorted page of 50 records from a
# 1,000,000-row form through Loom (wrk) against the equivalent hand-written
# SELECT in pgbench (-M prepared), in the same run, same client count; first
# page and 1000th page (keyset cursor) side by side. A third column is the
# same page from list_plain (tests/bench/list_plain.c), a plain hand-written
# server (thread per connection, blocking libpq, no auth or permissions): a
# reference for what a dedicated server reaches on the same machine.
# Usage: tests/bench/list.sh BUILD_DIR   (env: ROWS=1000000, CLIENTS=16, DURATION=10, REPS=3)
set -eu
BUILD=$(realpath "$1")
LOOM=$BUILD/loom
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROWS=${ROWS:-1000000}
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-10}
REPS=${REPS:-3}
PORT=${PORT:-18182}

. "$(dirname "$0")/lib.sh"
psql() { $run_as "$PGBIN/psql" -q -X -v ON_ERROR_STOP=1 "$url" "$@"; }

"$LOOM" app import "$ROOT/tests/bench/list-app.json" --publish --db "$url" >/dev/null
psql -c "INSERT INTO app_bench.item (name, code, level, qty, price, weight, active, due, seen, note, email, city)
  SELECT 'name ' || i, 'C' || i, (ARRAY['vip','gold','normal','new'])[i % 4 + 1], i % 1000, (i % 100000) / 100.0,
         (i % 5000) / 10.0, i % 2 = 0, date '2026-01-01' + i % 365, now() - i * interval '1 second', 'note ' || i,
         'u' || i || '@example.cn', (ARRAY['bj','sh','gz'])[i % 3 + 1]
  FROM generate_series(1, $ROWS) i; ANALYZE app_bench.item;"

LOOM_ADMIN_PASSWORD=bench-admin-pw "$LOOM" serve --db "$url" --listen 127.0.0.1:$PORT 2>/dev/null &
server=$!
wait_healthy $PORT
token=$(admin_token $PORT)
auth="Authorization: Bearer $token"
base="http://127.0.0.1:$PORT/api/apps/bench/forms/item/records?filter=%7B%22level%22%3A%22vip%22%7D&sort=-price&limit=50"

# the cursor of page 1000, by walking there
cursor=""
i=1
while [ $i -lt 1000 ]; do
    cursor=$(curl -sf -H "$auth" "$base${cursor:+&cursor=$cursor}" | sed 's/.*"next_cursor":"\([^"]*\)".*/\1/')
    i=$((i + 1))
done
last=$(echo "$cursor" | tr '_-' '/+' | awk '{n = length($0) % 4; s = $0; while (n > 0 && n < 4) {s = s "="; n++}; print s}' | base64 -d)
price=$(echo "$last" | sed 's/.*"k":\["\([^"]*\)".*/\1/')
id=$(echo "$last" | sed 's/.*,\([0-9]*\)\]}.*/\1/')

cols="id, _version, _owner, _created_at, _created_by, _updated_at, _updated_by, name, code, level, qty, price, weight, active, due, seen, note, email, city"
echo "SELECT $cols FROM app_bench.item WHERE level = 'vip' ORDER BY price DESC NULLS FIRST, id DESC LIMIT 51" > "$dir/first.sql"
echo "SELECT $cols FROM app_bench.item WHERE level = 'vip' AND (price, id) < ($price, $id) ORDER BY price DESC NULLS FIRST, id DESC LIMIT 51" > "$dir/page1000.sql"
chmod 644 "$dir"/*.sql

# REPS runs of each, pgbench and wrk alternating; the medians are compared (this
# 2-core machine's rates move by 10-20% from one 10 s run to the next)
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
echo "$ROWS rows, filter level = vip, sort -price, page of 50, $CLIENTS clients, ${DURATION}s each, median of $REPS"
echo "page | pgbench -M prepared (tps) | loom GET .../records (req/s) | ratio | loom p99 | list_plain (req/s, ratio) | every run (pgbench / loom / list_plain)"
echo "---|---|---|---|---|---|---"
for page in first page1000; do
    target=$base
    [ "$page" = page1000 ] && target="$base&cursor=$cursor"
    "$BUILD/list_plain" "$url" $((PORT + 1)) "$dir/$page.sql" &
    helper=$!
    sleep 0.2
    pgs="" rpss="" p99s="" floors="" runs=""
    for rep in $(seq 1 "$REPS"); do
        pg=$($run_as "$PGBIN/pgbench" -n -M prepared -f "$dir/$page.sql" -c "$CLIENTS" -j 2 -T "$DURATION" "$url" 2>&1 \
             | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
        out=$(wrk -t2 -c"$CLIENTS" -d"${DURATION}s" --latency -H "$auth" "$target")
        rps=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
        p99=$(echo "$out" | awk '$1 == "99%" {v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0; else v = v * 1000; print v}')
        bad=$(echo "$out" | sed -n 's/^ *Non-2xx or 3xx responses: *//p')
        [ -n "$bad" ] && echo "warning: $bad non-2xx answers"
        fl=$(wrk -t2 -c"$CLIENTS" -d"${DURATION}s" -H "$auth" "http://127.0.0.1:$((PORT + 1))/" \
             | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
        pgs="$pgs $pg" rpss="$rpss $rps" p99s="$p99s $p99" floors="$floors $fl"
        runs="$runs$(printf '%s%.0f / %.0f / %.0f' "${runs:+, }" "$pg" "$rps" "$fl")"
    done
    kill $helper
    wait $helper 2>/dev/null || true
    helper=""
    pg=$(echo "$pgs" | median) rps=$(echo "$rpss" | median) p99=$(echo "$p99s" | median) fl=$(echo "$floors" | median)
    echo "$page | $pg | $rps | $(echo "$rps $pg" | awk '{printf "%.0f%%", 100 * $1 / $2}') | ${p99}ms |" \
         "$fl, $(echo "$fl $pg" | awk '{printf "%.0f%%", 100 * $1 / $2}') | $runs"
done
