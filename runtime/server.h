/* server.h - `loom serve`: the process that ties the HTTP loop, the worker
 * pool, the database and the handlers together, and the request context the
 * handlers work with. */
#ifndef LOOM_SERVER_H
#define LOOM_SERVER_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

#include "core/arena.h"
#include "core/error.h"
#include "http.h"
#include "router.h"
#include "rule/sandbox.h"
#include "store/db.h"

typedef struct server_config {
    const char *listen;       /* host:port */
    const char *db_url;       /* NULL: the embedded database under data_dir */
    const char *data_dir;
    int workers;              /* 0: 2 x cores */
    size_t max_body;
    size_t max_bulk_body;     /* R_BULK routes (imports); 0: 1 GiB */
    int header_timeout_ms, idle_timeout_ms;
} server_config;

/* Route flags. */
enum {
    R_LOOP = 1,    /* answered on the loop thread: no database, no user */
    R_PUBLIC = 2,  /* a worker runs it without authentication */
    R_AUTH = 4,    /* any authenticated user */
    R_ADMIN = 8,   /* platform admins only */
    R_TX = 16,     /* one transaction: committed when the response is < 400 */
    R_BULK = 32,   /* bodies up to the bulk limit (imports), not max_body */
    R_NODB = 64,   /* with R_AUTH: needs no database once the caller is known (answered on the loop
                      when the token is cached) */
};

/* The authenticated caller; lives on the request arena. */
typedef struct auth_user {
    long long id;
    const char *username;
    bool admin, designer;
    bool api_key;            /* authenticated by an API key, not a session */
    const char *token_hash;  /* of the session or key used */
    PGresult *row;           /* the user's columns (auth_user_json reads them) */
    struct auth_cached *cached;   /* the token cache's entry it came from, or NULL */
} auth_user;

typedef struct server server;

typedef struct ctx {
    server *srv;
    http_exchange *ex;
    http_request *req;
    http_response *res;
    arena *a;
    db *db;                  /* NULL on the loop thread */
    sandbox *sb;             /* the worker's Lua sandbox; NULL on the loop thread */
    struct query_cache *qc;  /* the worker's cache of built record queries; NULL on the loop thread */
    const char *const *params;
    auth_user *user;
} ctx;

/* The one query of a handler in two halves: plan responds and returns
 * false (having run its own transaction, if it needed one), or fills sql,
 * params and state and returns true; the query runs outside any transaction
 * (so as its own when it writes), and finish responds from result (NULL:
 * the query failed with err). */
typedef struct route_query {
    const char *sql;
    int nparams;
    const char **params;
    bool writes;   /* the query writes: it commits before finish runs */
    void *state;
    PGresult *result;
    loom_err err;
} route_query;
typedef bool (*route_plan_fn)(ctx *c, route_query *q);
typedef void (*route_finish_fn)(ctx *c, route_query *q);
/* Runs a handler in two halves. A worker that takes several requests at
 * once plans those whose routes are listed in server.c's splits, and sends
 * their queries in one round trip. */
void ctx_run_split(ctx *c, route_plan_fn plan, route_finish_fn finish);

/* The route table (for the OpenAPI consistency test). */
const route *server_routes(int *out_n);

/* Serves until SIGINT or SIGTERM. Returns the process exit status. */
int server_run(const server_config *cfg);

/* Responds with body (stolen) as JSON. */
void ctx_json(ctx *c, int status, json_t *body);
/* Responds with problem+json; errors (stolen, may be NULL) is the list of
 * {path, code, message}; detail NULL uses the code's title. */
void ctx_problem(ctx *c, loom_code code, const char *detail, json_t *errors);
/* Responds to a failed database call: 503 when unreachable, 409 for a
 * unique clash, and a logged 500 for anything unexpected. */
void ctx_db_fail(ctx *c, const loom_err *e);
/* The body parsed as a JSON object, or NULL after responding 400. The result
 * is owned by the request arena. */
json_t *ctx_body_object(ctx *c);
/* 400 bad_json: the body (path "") is not JSON, or not the JSON expected (detail says why). */
void ctx_bad_json(ctx *c, const char *detail);
/* Runs a statement with ctx's db and arena; on failure responds and returns NULL. */
PGresult *ctx_query(ctx *c, db_stmt *st, int n, const char *const *params);
/* Seconds a new session lasts (LOOM_SESSION_TTL, default 12 h). */
int server_session_ttl(const server *s);
/* The published apps this server serves. */
struct meta *server_meta(server *s);

#endif
