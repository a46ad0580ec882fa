#!/bin/sh
# Part of `make bench` (issue 4): CSV import of ROWS rows of a 12-field form
# (one formula, one check, history per record) through POST .../import, all
# or nothing, in one request; rows per second. PostgreSQL's own COPY of the
# same rows into a bare table with the same columns is the floor shown beside it.
# Then an upsert by id of UPSERT_ROWS of those records (two cells changed each:
# every row checked as a PATCH, a new version and a history entry each).
# Usage: tests/bench/import.sh BUILD_DIR   (env: ROWS=1000000 UPSERT_ROWS=100000)
set -eu
BUILD=$(realpath "$1")
LOOM=$BUILD/loom
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROWS=${ROWS:-1000000}
UPSERT_ROWS=${UPSERT_ROWS:-100000}
PORT=${PORT:-18184}

. "$(dirname "$0")/lib.sh"
psql() { $run_as "$PGBIN/psql" -q -X -v ON_ERROR_STOP=1 "$url" "$@"; }
# post_import FILE QUERY WANT: POSTs FILE to the form's import with QUERY, timed into $t0 $t1; fails unless the
# answer holds WANT
post_import() {
    t0=$(date +%s.%N)
    answer=$(curl -s -X POST -H "Authorization: Bearer $token" -H "Content-Type: text/csv" --data-binary "@$1" \
        "http://127.0.0.1:$PORT/api/apps/wbench/forms/order/import$2")
    t1=$(date +%s.%N)
    echo "$answer" | grep -q "$3" || { echo "import$2 answered: $(echo "$answer" | head -c 300)"; exit 1; }
}

"$LOOM" app import "$ROOT/tests/bench/write-app.json" --publish --db "$url" >/dev/null
LOOM_ADMIN_PASSWORD=bench-admin-pw "$LOOM" serve --db "$url" --listen 127.0.0.1:$PORT 2>/dev/null &
server=$!
wait_healthy $PORT
token=$(admin_token $PORT)
awk -v n="$ROWS" 'BEGIN {
    print "name,code,level,qty,price,active,due,seen,note,email,city"
    split("vip gold normal new", lv, " "); split("bj sh gz", ct, " ")
    for (i = 1; i <= n; i++)
        printf "客户 %d,C-%d,%s,%d,%d.%02d,%s,2026-%02d-%02d,2026-11-22T10:%02d:%02dZ,\"note, %d\",u%d@example.cn,%s\n",
            i, i, lv[i % 4 + 1], i % 1000, i % 10000, i % 100, (i % 2 ? "true" : "false"), i % 12 + 1, i % 28 + 1,
            i % 60, i % 60, i, i, ct[i % 3 + 1]
}' > "$dir/rows.csv"
size=$(du -m "$dir/rows.csv" | cut -f1)
post_import "$dir/rows.csv" "" "\"inserted\":$ROWS"
start=$t0 end=$t1
count=$(psql -t -A -c "SELECT count(*) FROM app_wbench.\"order\"")
hist=$(psql -t -A -c "SELECT count(*) FROM loom.history WHERE form = 'order'")
# the floor: PostgreSQL's COPY of the same CSV into a bare table with the same columns
psql -c "CREATE TABLE bare (name text, code text, level text, qty bigint, price numeric(18,2), active boolean, due date,
         seen timestamptz, note text, email text, city text)"
chmod 644 "$dir/rows.csv"
cstart=$(date +%s.%N)
psql -c "\\copy bare FROM '$dir/rows.csv' WITH (FORMAT csv, HEADER true)"
cend=$(date +%s.%N)
echo "CSV import of $ROWS rows (${size} MB, 12 fields, 1 formula, 1 check, history)"
echo "loom POST .../import (s) | rows/s | records, history rows | bare COPY, no checks or history (s) | rows/s"
echo "---|---|---|---|---"
echo "$start $end $cstart $cend $ROWS $count $hist" | awk '{printf "%.1f | %.0f | %d, %d | %.1f | %.0f\n", $2 - $1, $5 / ($2 - $1), $6, $7, $4 - $3, $5 / ($4 - $3)}'
# an upsert of records that exist: by id, two cells changed in each
first=$(psql -t -A -c "SELECT min(id) FROM app_wbench.\"order\"")
awk -v n="$UPSERT_ROWS" -v first="$first" 'BEGIN {
    print "id,qty,note"
    for (i = 0; i < n; i++) printf "%d,%d,edited %d\n", first + i, i % 1000 + 1, i
}' > "$dir/upsert.csv"
post_import "$dir/upsert.csv" "?mode=upsert&key=id" "\"updated\":$UPSERT_ROWS"
changed=$(psql -t -A -c "SELECT count(*) FROM app_wbench.\"order\" WHERE _version = 2 AND note LIKE 'edited %'")
uhist=$(psql -t -A -c "SELECT count(*) FROM loom.history WHERE form = 'order' AND action = 'update'")
echo
echo "upsert by id of $UPSERT_ROWS of those records (2 cells changed each) (s) | rows/s | new versions, history entries"
echo "---|---|---"
echo "$t0 $t1 $UPSERT_ROWS $changed $uhist" | awk '{printf "%.1f | %.0f | %d, %d\n", $2 - $1, $3 / ($2 - $1), $4, $5}'
