/* ops.c - liveness, readiness and the OpenAPI document (the metrics handler
 * lives in server.c, next to the state it reads). */
#include "handlers.h"

extern const char loom_openapi_json[];   /* openapi_doc.c, made from openapi.json */

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

void ops_openapi(void *cp)
{
    ctx *c = cp;
    c->res->status = 200;
    c->res->content_type = "application/json; charset=utf-8";
    buf_puts(&c->res->body, loom_openapi_json);
}
