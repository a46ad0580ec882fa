#!/bin/sh
# Part of `make bench` (issue 4): creating a 12-field record with one formula,
# one check and its history entry through Loom (wrk, POST .../records) against
# a pgbench script of the equivalent hand-written statements (the INSERT and
# the history INSERT in one transaction), in the same run, same client count;
# and beside it the two INSERTs as one statement, one round trip.
# Usage: tests/bench/create.sh BUILD_DIR   (env: CLIENTS=16, DURATION=10)
set -eu
BUILD=$(realpath "$1")
LOOM=$BUILD/loom
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-10}
PORT=${PORT:-18183}

. "$(dirname "$0")/lib.sh"

"$LOOM" app import "$ROOT/tests/bench/write-app.json" --publish --db "$url" >/dev/null
LOOM_ADMIN_PASSWORD=bench-admin-pw "$LOOM" serve --db "$url" --listen 127.0.0.1:$PORT 2>/dev/null &
server=$!
wait_healthy $PORT
token=$(admin_token $PORT)
body='{"name":"订单 A-1","code":"C-1","level":"vip","qty":3,"price":"12.50","active":true,"due":"2026-12-01","seen":"2026-11-22T10:00:00Z","note":"bench","email":"a@example.cn","city":"bj"}'
cat > "$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
wrk.body = '$body'
LUA
cat > "$dir/create.sql" <<'SQL'
BEGIN;
INSERT INTO app_wbench."order" (_owner, _created_by, _updated_by, name, code, level, qty, price, amount, active, due, seen, note, email, city)
  VALUES (1, 1, 1, '订单 A-1', 'C-1', 'vip', 3, 12.50, 37.50, true, '2026-12-01', '2026-11-22T10:00:00Z', 'bench', 'a@example.cn', 'bj')
  RETURNING id \gset
INSERT INTO loom.history (app, form, record, actor, action, changes)
  VALUES ('wbench', 'order', :id, 1, 'create', '{"name":[null,"订单 A-1"],"code":[null,"C-1"],"level":[null,"vip"],"qty":[null,3],"price":[null,"12.50"],"amount":[null,"37.50"],"active":[null,true],"due":[null,"2026-12-01"],"seen":[null,"2026-11-22T10:00:00Z"],"note":[null,"bench"],"email":[null,"a@example.cn"],"city":[null,"bj"]}');
COMMIT;
SQL
# the same two rows in one statement, one round trip (as Loom sends a create)
cat > "$dir/create1.sql" <<'SQL'
WITH r AS (INSERT INTO app_wbench."order" (_owner, _created_by, _updated_by, name, code, level, qty, price, amount, active, due, seen, note, email, city)
  VALUES (1, 1, 1, '订单 A-1', 'C-1', 'vip', 3, 12.50, 37.50, true, '2026-12-01', '2026-11-22T10:00:00Z', 'bench', 'a@example.cn', 'bj')
  RETURNING id)
INSERT INTO loom.history (app, form, record, actor, action, changes)
  SELECT 'wbench', 'order', r.id, 1, 'create', '{"name":[null,"订单 A-1"],"code":[null,"C-1"],"level":[null,"vip"],"qty":[null,3],"price":[null,"12.50"],"amount":[null,"37.50"],"active":[null,true],"due":[null,"2026-12-01"],"seen":[null,"2026-11-22T10:00:00Z"],"note":[null,"bench"],"email":[null,"a@example.cn"],"city":[null,"bj"]}' FROM r;
SQL
chmod 644 "$dir"/*.sql
check=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $token" -d "$body" \
    http://127.0.0.1:$PORT/api/apps/wbench/forms/order/records)
[ "$check" = 201 ] || { echo "create answered $check"; exit 1; }

echo "create a 12-field record (1 formula, 1 check, history), $CLIENTS clients, ${DURATION}s each"
echo "pgbench -M prepared (tps) | loom POST .../records (req/s) | ratio | loom p99 | pgbench, one statement (tps) | ratio"
echo "---|---|---|---|---|---"
pgb() {
    $run_as "$PGBIN/pgbench" -n -M prepared -f "$1" -c "$CLIENTS" -j 2 -T "$DURATION" "$url" 2>&1 \
        | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1
}
pg=$(pgb "$dir/create.sql")
out=$(wrk -t2 -c"$CLIENTS" -d"${DURATION}s" --latency -s "$dir/post.lua" http://127.0.0.1:$PORT/api/apps/wbench/forms/order/records)
rps=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
bad=$(echo "$out" | sed -n 's/^ *Non-2xx or 3xx responses: *//p')
[ -n "$bad" ] && echo "warning: $bad non-2xx answers"
pg1=$(pgb "$dir/create1.sql")
echo "$pg | $rps | $(echo "$rps $pg" | awk '{printf "%.0f%%", 100 * $1 / $2}') | $p99 | $pg1 | $(echo "$rps $pg1" | awk '{printf "%.0f%%", 100 * $1 / $2}')"
