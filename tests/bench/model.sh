#!/bin/sh
# Part of `make bench`: how long validating the 4S bundle and importing +
# publishing it into a fresh database take (issue 3).
# Usage: tests/bench/model.sh BUILD_DIR   (env: RUNS=50)
set -eu
BUILD=$(realpath "$1")
LOOM=$BUILD/loom
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${RUNS:-50}

. "$(dirname "$0")/lib.sh"
admin=$(echo "$url" | sed 's/dbname=loom/dbname=postgres/')

now() { date +%s.%N; }
t0=$(now)
i=0
while [ $i -lt "$RUNS" ]; do "$LOOM" app check "$ROOT/apps/4s-template" >/dev/null; i=$((i + 1)); done
t1=$(now)
echo "loom app check apps/4s-template: $(echo "$t0 $t1 $RUNS" | awk '{printf "%.1f ms", ($2 - $1) * 1000 / $3}') per run (mean of $RUNS, whole process)"

total=0
i=0
n=$((RUNS / 5))
while [ $i -lt "$n" ]; do
    $run_as "$PGBIN/psql" -q -X "$admin" -c "DROP DATABASE IF EXISTS benchimp" -c "CREATE DATABASE benchimp" >/dev/null 2>&1
    db=$(echo "$url" | sed 's/dbname=loom/dbname=benchimp/')
    "$LOOM" app list --db "$db" >/dev/null   # platform schema first, so only the import is timed
    a=$(now)
    "$LOOM" app import "$ROOT/apps/4s-template" --publish --db "$db" >/dev/null
    b=$(now)
    total=$(echo "$total $a $b" | awk '{print $1 + $3 - $2}')
    i=$((i + 1))
done
echo "loom app import apps/4s-template --publish (fresh database, 110 DDL steps): $(echo "$total $n" | awk '{printf "%.0f ms", $1 * 1000 / $2}') per run (mean of $n)"
