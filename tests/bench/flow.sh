#!/bin/sh
# Part of `make bench` (issue 5). Two measurements on tests/bench/flow-app.json:
# 1. transitions per second: POST .../records/{id}/actions/touch on random
#    records of 10,000 (wrk) against a pgbench script of the equivalent UPDATE
#    and history INSERT in one transaction, same run, same client count;
# 2. TIMERS records (default 10,000) whose SLA timers fall due at once, with
#    two servers running: seconds until every one has fired, and how many
#    fired more than once (must be 0).
# Usage: tests/bench/flow.sh BUILD_DIR   (env: CLIENTS=16, DURATION=10, TIMERS=10000)
set -eu
BUILD=$(realpath "$1")
LOOM=$BUILD/loom
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-10}
TIMERS=${TIMERS:-10000}
PORT=${PORT:-18185}
PORT2=$((PORT + 1))
RECORDS=10000

. "$(dirname "$0")/lib.sh"
psql() { $run_as "$PGBIN/psql" -q -X -v ON_ERROR_STOP=1 "$url" "$@"; }
server2=""
trap 'kill $server2 2>/dev/null; wait $server2 2>/dev/null; cleanup' EXIT INT TERM

"$LOOM" app import "$ROOT/tests/bench/flow-app.json" --publish --db "$url" >/dev/null
LOOM_ADMIN_PASSWORD=bench-admin-pw "$LOOM" serve --db "$url" --listen 127.0.0.1:$PORT 2>/dev/null &
server=$!
wait_healthy $PORT
token=$(admin_token $PORT)
import() {   # form rows
    awk -v n="$2" 'BEGIN { print "title"; for (i = 1; i <= n; i++) printf "任务 %d\n", i }' > "$dir/$1.csv"
    curl -sf -X POST -H "Authorization: Bearer $token" -H "Content-Type: text/csv" --data-binary "@$dir/$1.csv" \
        "http://127.0.0.1:$PORT/api/apps/fbench/forms/$1/import" | grep -q "\"inserted\":$2" \
        || { echo "import of $1 failed"; exit 1; }
}
import job $RECORDS

# 1. transitions
cat > "$dir/touch.lua" <<LUA
math.randomseed(os.time())
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer $token"}
request = function()
  return wrk.format("POST", "/api/apps/fbench/forms/job/records/" .. math.random(1, $RECORDS) .. "/actions/touch",
                    headers, '{"values": {"note": "x"}}')
end
LUA
cat > "$dir/touch.sql" <<SQL
\set id random(1, $RECORDS)
BEGIN;
UPDATE app_fbench.job SET _state = 'open', _state_at = now(), _visit = _visit + 1, _version = _version + 1,
  _updated_at = now(), _updated_by = 1, note = 'x' WHERE id = :id;
INSERT INTO loom.history (app, form, record, actor, action, changes, from_state, to_state, transition)
  VALUES ('fbench', 'job', :id, 1, 'transition', '{"note": ["x", "x"]}', 'open', 'open', 'touch');
COMMIT;
SQL
chmod 644 "$dir"/*.sql
check=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $token" -d '{"values": {"note": "x"}}' \
    http://127.0.0.1:$PORT/api/apps/fbench/forms/job/records/1/actions/touch)
[ "$check" = 200 ] || { echo "touch answered $check"; exit 1; }
echo "transitions on random records of $RECORDS, $CLIENTS clients, ${DURATION}s each"
echo "pgbench -M prepared: UPDATE + history INSERT (tps) | loom POST .../actions/touch (req/s) | ratio | loom p99"
echo "---|---|---|---"
pg=$($run_as "$PGBIN/pgbench" -n -M prepared -f "$dir/touch.sql" -c "$CLIENTS" -j 2 -T "$DURATION" "$url" 2>&1 \
     | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
out=$(wrk -t2 -c"$CLIENTS" -d"${DURATION}s" --latency -s "$dir/touch.lua" http://127.0.0.1:$PORT)
rps=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
bad=$(echo "$out" | sed -n 's/^ *Non-2xx or 3xx responses: *//p')
[ -n "$bad" ] && echo "warning: $bad non-2xx answers"
echo "$pg | $rps | $(echo "$rps $pg" | awk '{printf "%.0f%%", 100 * $1 / $2}') | $p99"

# 2. timers falling due at once, two servers
import ticket "$TIMERS"
LOOM_ADMIN_PASSWORD=bench-admin-pw "$LOOM" serve --db "$url" --listen 127.0.0.1:$PORT2 2>/dev/null &
server2=$!
wait_healthy $PORT2
pending=$(psql -t -A -c "SELECT count(*) FROM loom.jobs WHERE form = 'ticket' AND status = 'pending'")
start=$(date +%s.%N)
psql -c "UPDATE loom.jobs SET run_at = now() WHERE form = 'ticket' AND status = 'pending'; NOTIFY loom_jobs"
while [ "$(psql -t -A -c "SELECT count(*) FROM loom.jobs WHERE form = 'ticket' AND status IN ('pending', 'running')")" != 0 ]; do
    sleep 0.05
done
end=$(date +%s.%N)
fired=$(psql -t -A -c "SELECT count(DISTINCT record) FROM loom.history WHERE form = 'ticket' AND action = 'breach'")
twice=$(psql -t -A -c "SELECT count(*) FROM (SELECT record FROM loom.history WHERE form = 'ticket' AND action = 'breach'
                       GROUP BY record HAVING count(*) > 1) x")
overdue=$(psql -t -A -c "SELECT count(*) FROM app_fbench.ticket WHERE overdue")
by=$(psql -t -A -c "SELECT string_agg(n::text, ' + ') FROM (SELECT count(*) AS n FROM loom.jobs WHERE form = 'ticket'
                    GROUP BY leased_by ORDER BY 1 DESC) x")
echo
echo "timers falling due at once: $pending (SLA: breach in history + set overdue), 2 servers"
echo "seconds until all fired | fired | fired twice | records set overdue | jobs per server"
echo "---|---|---|---|---"
echo "$start $end" | awk -v f="$fired" -v t="$twice" -v o="$overdue" -v b="$by" '{printf "%.2f | %d | %d | %d | %s\n", $2 - $1, f, t, o, b}'
