/* ops.c - liveness and readiness (the metrics handler lives in server.c,
 * next to the state it reads). */
#include "handlers.h"

void ops_healthz(void *cp)
{
    ctx *c = cp;
    ctx_json(c, 200, json_pack("{s:s}", "status", "ok"));
}

static db_stmt ping = {.sql = "SELECT 1"};

void ops_readyz(void *cp)
{
    ctx *c = cp;
    loom_err e = {0};
    if (db_query(c->db, c->a, &ping, 0, NULL, &e))
        ctx_json(c, 200, json_pack("{s:s, s:s}", "status", "ready", "database", "up"));
    else
        ctx_problem(c, LOOM_UNAVAILABLE, "the database is unreachable", NULL);
}
