/* jobs.c - see jobs.h. */
#include "store/jobs.h"

#include <stdio.h>
#include <stdlib.h>

PGresult *jobs_claim(db *d, arena *a, const char *runner, int n, loom_err *e)
{
    static db_stmt st = {
        .sql = "WITH c AS (SELECT id FROM loom.jobs WHERE (status = 'pending' AND run_at <= now()) OR "
               "(status = 'running' AND leased_until < now()) ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
               "UPDATE loom.jobs j SET status = 'running', leased_by = $1, leased_until = now() + $3::int * interval "
               "'1 second', attempts = j.attempts + 1 FROM c WHERE j.id = c.id "
               "RETURNING j.id, j.kind, j.app, j.form, j.record, j.state, j.visit, j.attempts"};
    char lim[16], lease[16];
    snprintf(lim, sizeof lim, "%d", n);
    snprintf(lease, sizeof lease, "%d", JOBS_LEASE_S);
    const char *p[] = {runner, lim, lease};
    return db_query(d, a, &st, 3, p, e);
}

bool jobs_lock(db *d, arena *a, const char *id, const char *runner, bool *held, loom_err *e)
{
    static db_stmt st = {.sql = "SELECT 1 FROM loom.jobs WHERE id = $1::bigint AND status = 'running' AND leased_by = $2 "
                                "FOR UPDATE"};
    const char *p[] = {id, runner};
    PGresult *r = db_query(d, a, &st, 2, p, e);
    *held = r && PQntuples(r) == 1;
    return r != NULL;
}

bool jobs_done(db *d, arena *a, const char *id, loom_err *e)
{
    static db_stmt st = {.sql = "UPDATE loom.jobs SET status = 'done', done_at = now(), leased_until = NULL "
                                "WHERE id = $1::bigint"};
    const char *p[] = {id};
    return db_query(d, a, &st, 1, p, e) != NULL;
}

bool jobs_retry(db *d, arena *a, const char *id, const char *runner, const char *error, loom_err *e)
{
    static db_stmt st = {
        .sql = "UPDATE loom.jobs SET status = CASE WHEN attempts >= $3::int THEN 'failed' ELSE 'pending' END, "
               "run_at = now() + least(power(2, attempts), 3600) * interval '1 second', last_error = $4, "
               "leased_by = NULL, leased_until = NULL, done_at = CASE WHEN attempts >= $3::int THEN now() END "
               "WHERE id = $1::bigint AND leased_by = $2 AND status = 'running'"};
    char max[16];
    snprintf(max, sizeof max, "%d", JOBS_MAX_ATTEMPTS);
    const char *p[] = {id, runner, max, error};
    return db_query(d, a, &st, 4, p, e) != NULL;
}

bool jobs_release(db *d, arena *a, const char *ids, const char *runner, loom_err *e)
{
    static db_stmt st = {.sql = "UPDATE loom.jobs SET status = 'pending', attempts = attempts - 1, leased_by = NULL, "
                                "leased_until = NULL WHERE id = ANY($1::bigint[]) AND leased_by = $2 AND status = 'running'"};
    const char *p[] = {ids, runner};
    return db_query(d, a, &st, 2, p, e) != NULL;
}

long jobs_wait_ms(db *d, arena *a, long cap_ms, loom_err *e)
{
    static db_stmt st = {
        .sql = "SELECT ceil(extract(epoch FROM least((SELECT min(run_at) FROM loom.jobs WHERE status = 'pending'), "
               "(SELECT min(leased_until) FROM loom.jobs WHERE status = 'running')) - now()) * 1000)"};
    PGresult *r = db_query(d, a, &st, 0, NULL, e);
    if (!r)
        return -1;
    if (PQgetisnull(r, 0, 0))
        return cap_ms;
    long ms = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    return ms < 0 ? 0 : ms > cap_ms ? cap_ms : ms;
}
