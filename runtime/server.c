/* server.c - `loom serve`: start-up, the route table, dispatch and shutdown.
 *
 * The loop thread parses requests and matches routes; R_LOOP routes are
 * answered there, everything else is handed to the worker pool at the end of
 * the loop iteration, all together. A worker takes a batch, looks up the
 * batch's bearer tokens in one pipelined round trip, then runs each request:
 * checks its connection, authenticates, opens the transaction of R_TX routes,
 * runs the handler and commits (checking that COMMIT committed) or rolls back;
 * it then writes the responses itself (see http.h). */
#include "server.h"

#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "handlers.h"
#include "meta.h"
#include "metrics.h"
#include "pgembed.h"
#include "pool.h"
#include "scheduler.h"
#include "store/migrate.h"
#include "store/query.h"

static const route routes[] = {
    {"GET", "/healthz", ops_healthz, R_LOOP},
    {"GET", "/metrics", ops_metrics, R_LOOP},
    {"GET", "/openapi.json", ops_openapi, R_LOOP},
    {"GET", "/readyz", ops_readyz, R_PUBLIC},
    {"POST", "/api/auth/login", auth_login, R_PUBLIC | R_TX},
    {"POST", "/api/auth/logout", auth_logout, R_AUTH | R_TX},
    {"GET", "/api/me", auth_me, R_AUTH | R_NODB},
    {"POST", "/api/admin/users", admin_users_create, R_ADMIN | R_TX},
    {"GET", "/api/admin/users", admin_users_list, R_ADMIN},
    {"GET", "/api/admin/users/{id}", admin_users_get, R_ADMIN},
    {"PATCH", "/api/admin/users/{id}", admin_users_update, R_ADMIN | R_TX},
    {"POST", "/api/admin/api-keys", admin_keys_create, R_ADMIN | R_TX},
    {"GET", "/api/admin/api-keys", admin_keys_list, R_ADMIN},
    {"DELETE", "/api/admin/api-keys/{id}", admin_keys_delete, R_ADMIN | R_TX},
    {"GET", "/api/apps", apps_list, R_AUTH},
    {"GET", "/api/apps/{app}", apps_get, R_AUTH},
    {"GET", "/api/apps/{app}/forms/{form}", apps_form, R_AUTH},
    {"GET", "/api/apps/{app}/forms/{form}/fields/{field}/choices", apps_field_choices, R_AUTH},
    {"GET", "/api/apps/{app}/forms/{form}/records", records_list, R_AUTH},
    {"POST", "/api/apps/{app}/forms/{form}/records/query", records_query, R_AUTH},
    {"GET", "/api/apps/{app}/forms/{form}/records/{id}", records_get, R_AUTH},
    {"POST", "/api/apps/{app}/forms/{form}/records", records_create, R_AUTH},
    {"PATCH", "/api/apps/{app}/forms/{form}/records/{id}", records_update, R_AUTH | R_TX},
    {"DELETE", "/api/apps/{app}/forms/{form}/records/{id}", records_delete, R_AUTH | R_TX},
    {"GET", "/api/apps/{app}/forms/{form}/records/{id}/history", records_history, R_AUTH},
    {"GET", "/api/apps/{app}/forms/{form}/records/{id}/actions", records_actions, R_AUTH},
    {"POST", "/api/apps/{app}/forms/{form}/records/{id}/actions/{transition}", records_transition, R_AUTH | R_TX},
    {"POST", "/api/apps/{app}/forms/{form}/records/{id}/approval", records_approval, R_AUTH | R_TX},
    {"POST", "/api/apps/{app}/forms/{form}/import", records_import, R_AUTH | R_TX | R_BULK},
    {"GET", "/api/apps/{app}/forms/{form}/export", records_export, R_AUTH},
    {"GET", "/api/tasks", tasks_list, R_AUTH},
    {"GET", "/api/notifications", notifications_list, R_AUTH},
    {"POST", "/api/notifications/{id}/read", notifications_read, R_AUTH | R_TX},
    {"POST", "/api/files", files_upload, R_AUTH | R_TX},
    {"GET", "/api/files/{id}", files_download, R_AUTH},
    /* designer API: specific patterns before the generic {section} and {kind}/{id} */
    {"GET", "/api/design/apps", design_apps_list, R_AUTH},
    {"POST", "/api/design/apps", design_apps_create, R_AUTH | R_TX},
    {"POST", "/api/design/import", design_import, R_AUTH | R_TX},
    {"GET", "/api/design/apps/{app}", design_app_get, R_AUTH},
    {"PUT", "/api/design/apps/{app}", design_app_put, R_AUTH | R_TX},
    {"DELETE", "/api/design/apps/{app}", design_app_delete, R_AUTH | R_TX},
    {"POST", "/api/design/apps/{app}/validate", design_app_validate, R_AUTH},
    {"POST", "/api/design/apps/{app}/publish", design_app_publish, R_AUTH | R_TX},
    {"GET", "/api/design/apps/{app}/plan", design_app_plan, R_AUTH},
    {"POST", "/api/design/apps/{app}/rollback", design_app_rollback, R_AUTH | R_TX},
    {"GET", "/api/design/apps/{app}/versions", design_app_versions, R_AUTH},
    {"GET", "/api/design/apps/{app}/export", design_app_export, R_AUTH},
    {"GET", "/api/design/apps/{app}/versions/{n}", design_app_version, R_AUTH},
    {"GET", "/api/design/apps/{app}/{section}", design_section_get, R_AUTH},
    {"PUT", "/api/design/apps/{app}/{section}", design_section_put, R_AUTH | R_TX},
    {"GET", "/api/design/apps/{app}/{kind}/{id}", design_item_get, R_AUTH},
    {"PUT", "/api/design/apps/{app}/{kind}/{id}", design_item_put, R_AUTH | R_TX},
    {"DELETE", "/api/design/apps/{app}/{kind}/{id}", design_item_delete, R_AUTH | R_TX},
};
#define NROUTES (int)(sizeof routes / sizeof routes[0])

/* The handlers in two halves (ctx_run_split), which a worker may plan
 * together and send the queries of in one round trip. */
static const struct {
    void (*fn)(void *c);
    route_plan_fn plan;
    route_finish_fn finish;
} splits[] = {
    {records_list, records_list_plan, records_page_finish},
    {records_query, records_query_plan, records_page_finish},
    {records_create, records_create_plan, records_create_finish},
};

const route *server_routes(int *out_n)
{
    *out_n = NROUTES;
    return routes;
}

struct server {
    server_config cfg;
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    bool signals;
    uv_check_t check;      /* end of each loop iteration: hand jobs over, write logs */
    buf logbuf;
    void **pending;        /* jobs dispatched during this loop iteration */
    int npending, cap_pending;
    http_server *http;
    pool *pool;
    metrics *metrics;
    const char *route_names[NROUTES];
    char conninfo[1024];
    atomic_int db_up;
    atomic_ullong batched_lookups, batched_queries;
    meta *meta;                /* the published apps, as snapshots */
    scheduler *sched;          /* runs the jobs that fall due */
    PGconn *listen;            /* LISTEN loom_meta and loom_auth (loop thread, non-blocking) */
    uv_poll_t *listen_poll;    /* on its socket; NULL while there is none */
    int listen_fd;
    bool listen_connecting;    /* a PQconnectPoll is under way */
    bool listen_acked;         /* the LISTENs are in force: the token cache may be used */
    uv_timer_t listen_retry;
    int session_ttl;
    long statement_timeout_ms; /* a request's statements, at most (0: no limit) */
};

typedef struct worker {
    server *srv;
    db *db;
    sandbox *sb;
    query_cache *qc;
    bool up;
} worker;

enum { JOB_HTTP, JOB_RELOAD };

typedef struct job {
    int kind;
    char app[64];        /* JOB_RELOAD: the app to reload, "*" for all */
    http_exchange *ex;
    route_match m;
    bool prefetched;     /* lookup holds the authentication lookup */
    auth_lookup lookup;
    auth_cached *cached; /* the token's cached lookup (the exchange's arena holds the reference), or NULL */
    int split;           /* its index in splits, or -1 */
    bool planning;       /* plan_batch took it: answered, or planned */
    bool planned;        /* its query ran with the batch's: finish it */
    ctx c;               /* the request, from plan_batch to finish */
    route_query q;
} job;

#define BATCH_MAX 8

/* ---- responses ---- */

void ctx_json(ctx *c, int status, json_t *body)
{
    c->res->status = status;
    c->res->content_type = "application/json; charset=utf-8";
    buf_reset(&c->res->body);
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (s) {
        buf_puts(&c->res->body, s);
        free(s);
    }
}

static void problem_write(http_exchange *ex, loom_code code, const char *detail, json_t *errors)
{
    int status = loom_code_status(code);
    json_t *p = json_pack("{s:s+, s:s, s:i, s:s, s:s}", "type", "urn:loom:", loom_code_name(code), "code",
                          loom_code_name(code), "status", status, "title", loom_code_title(code), "detail",
                          detail ? detail : loom_code_title(code));
    if (errors)
        json_object_set_new(p, "errors", errors);
    if (ex->req.request_id)
        json_object_set_new(p, "request_id", json_string(ex->req.request_id));
    http_response *res = &ex->res;
    res->status = status;
    res->content_type = "application/problem+json";
    buf_reset(&res->body);
    char *s = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    buf_puts(&res->body, s);
    free(s);
}

void ctx_problem(ctx *c, loom_code code, const char *detail, json_t *errors)
{
    problem_write(c->ex, code, detail, errors);
}

void ctx_db_fail(ctx *c, const loom_err *e)
{
    switch (e->code) {
    case LOOM_UNAVAILABLE:
        ctx_problem(c, LOOM_UNAVAILABLE,
                    e->message && !strcmp(e->message, DB_TIMED_OUT) ? DB_TIMED_OUT : "the database is unreachable", NULL);
        break;
    case LOOM_NOT_UNIQUE:
    case LOOM_CONFLICT:
        ctx_problem(c, e->code, NULL, NULL);
        break;
    default:
        log_json(LOG_ERROR, "database error",
                 json_pack("{s:s, s:s}", "request_id", c->req->request_id, "error", e->message ? e->message : ""));
        ctx_problem(c, LOOM_INTERNAL, NULL, NULL);
    }
}

static void json_decref_cb(void *p)
{
    json_decref(p);
}

void ctx_bad_json(ctx *c, const char *detail)
{
    ctx_problem(c, LOOM_BAD_JSON, detail, json_pack("[{s:s, s:s, s:s}]", "path", "", "code", "bad_json", "message", detail));
}

json_t *ctx_body_object(ctx *c)
{
    json_error_t jerr;
    json_t *v = json_loadb(c->req->body, c->req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v) {
        ctx_bad_json(c, arena_printf(c->a, "%s at line %d, column %d", jerr.text, jerr.line, jerr.column));
        return NULL;
    }
    arena_defer(c->a, json_decref_cb, v);
    if (!json_is_object(v)) {
        ctx_bad_json(c, "the body must be a JSON object");
        return NULL;
    }
    return v;
}

PGresult *ctx_query(ctx *c, db_stmt *st, int n, const char *const *params)
{
    loom_err e = {0};
    PGresult *r = db_query(c->db, c->a, st, n, params, &e);
    if (!r)
        ctx_db_fail(c, &e);
    return r;
}

int server_session_ttl(const server *s)
{
    return s->session_ttl;
}

meta *server_meta(server *s)
{
    return s->meta;
}

/* ---- published apps ---- */

static db_stmt published_one = {.sql =
    "SELECT a.id, v.version, v.bundle, v.catalog FROM loom.apps a "
    "JOIN loom.app_versions v ON v.app = a.id AND v.version = a.published_version WHERE a.id = $1"};
static db_stmt published_all = {.sql =
    "SELECT a.id, v.version, v.bundle, v.catalog FROM loom.apps a "
    "JOIN loom.app_versions v ON v.app = a.id AND v.version = a.published_version"};

/* Loads the published version of app ("*": of every app) into the snapshots.
 * Runs on a worker, or at start before serving. */
static bool reload_apps(server *s, db *d, const char *app)
{
    arena *a = arena_new();
    loom_err e = {0};
    bool all = !strcmp(app, "*");
    const char *p[] = {app};
    PGresult *r = all ? db_query(d, a, &published_all, 0, NULL, &e) : db_query(d, a, &published_one, 1, p, &e);
    if (r) {
        json_t *seen = json_object();
        for (int i = 0; i < PQntuples(r); i++) {
            json_t *bundle = json_loads(PQgetvalue(r, i, 2), 0, NULL);
            json_t *catalog = json_loads(PQgetvalue(r, i, 3), 0, NULL);
            meta_put(s->meta, PQgetvalue(r, i, 0), atoi(PQgetvalue(r, i, 1)), bundle, catalog);
            json_object_set_new(seen, PQgetvalue(r, i, 0), json_true());
        }
        /* gone or unpublished apps leave the server too */
        json_t *ids = all ? meta_ids(s->meta) : json_pack("[s]", app);
        size_t i;
        json_t *id;
        json_array_foreach(ids, i, id) if (!json_object_get(seen, json_string_value(id))) meta_remove(s->meta, json_string_value(id));
        json_decref(ids);
        json_decref(seen);
        log_json(LOG_INFO, "apps reloaded", json_pack("{s:s}", "app", app));
    }
    arena_free(a);
    return r != NULL;
}

static void submit_reload(server *s, const char *app)
{
    job *j = calloc(1, sizeof *j);
    if (!j)
        abort();
    j->kind = JOB_RELOAD;
    snprintf(j->app, sizeof j->app, "%s", app);
    void *jp = j;
    pool_submit(s->pool, &jp, 1);
}

/* The listener of NOTIFY loom_meta, on the loop thread. The first connect,
 * before serving, is synchronous; after a loss, a non-blocking connect
 * (PQconnectPoll) runs on the loop, so the loop never waits on the database.
 * After a reconnect every app is reloaded: notifications may have been
 * missed meanwhile. */
static void listen_retry_cb(uv_timer_t *t);
static void listen_poll_cb(uv_poll_t *h, int status, int events);

static void poll_closed_cb(uv_handle_t *h)
{
    free(h);
}

static void listen_unwatch(server *s)
{
    if (s->listen_poll) {
        uv_poll_stop(s->listen_poll);
        uv_close((uv_handle_t *)s->listen_poll, poll_closed_cb);
        s->listen_poll = NULL;
    }
}

/* Waits for events on the listener's socket (which may change while connecting). */
static void listen_watch(server *s, int events)
{
    int fd = PQsocket(s->listen);
    if (s->listen_poll && fd != s->listen_fd)
        listen_unwatch(s);
    if (!s->listen_poll) {
        s->listen_poll = malloc(sizeof *s->listen_poll);
        if (!s->listen_poll)
            abort();
        uv_poll_init_socket(&s->loop, s->listen_poll, fd);
        s->listen_poll->data = s;
        s->listen_fd = fd;
    }
    uv_poll_start(s->listen_poll, events, listen_poll_cb);
}

/* The token cache only while the listener is up: loom_auth keeps it true. */
static bool auth_cache_wanted(void)
{
    const char *v = getenv("LOOM_AUTH_CACHE");
    return !v || strcmp(v, "0") != 0;
}

static void listen_lost(server *s)
{
    s->listen_acked = false;
    auth_cache_enable(false);
    listen_unwatch(s);
    if (s->listen) {
        PQfinish(s->listen);
        s->listen = NULL;
    }
    s->listen_connecting = false;
    uv_timer_start(&s->listen_retry, listen_retry_cb, 1000, 0);
}

static void listen_read(server *s)
{
    if (!PQconsumeInput(s->listen)) {
        log_json(LOG_WARN, "lost the loom_meta listener; reconnecting", NULL);
        listen_lost(s);
        return;
    }
    PGresult *r;
    while (!PQisBusy(s->listen) && (r = PQgetResult(s->listen))) {
        if (PQresultStatus(r) == PGRES_COMMAND_OK && !s->listen_acked) {   /* the LISTENs after a reconnect */
            s->listen_acked = true;
            auth_cache_enable(auth_cache_wanted());
        }
        PQclear(r);
    }
    PGnotify *n;
    while ((n = PQnotifies(s->listen))) {
        if (!strcmp(n->relname, "loom_auth")) {   /* payload "u:<user id>" */
            if (!strncmp(n->extra, "u:", 2))
                auth_cache_drop_user(atoll(n->extra + 2));
            PQfreemem(n);
            continue;
        }
        char app[64];   /* payload "<app>:<version>" */
        snprintf(app, sizeof app, "%s", n->extra);
        char *colon = strchr(app, ':');
        if (colon)
            *colon = '\0';
        submit_reload(s, app);
        PQfreemem(n);
    }
}

static void listen_poll_cb(uv_poll_t *h, int status, int events)
{
    (void)events;
    server *s = h->data;
    if (status < 0) {
        listen_lost(s);
        return;
    }
    if (!s->listen_connecting) {
        listen_read(s);
        return;
    }
    switch (PQconnectPoll(s->listen)) {
    case PGRES_POLLING_READING:
        listen_watch(s, UV_READABLE);
        return;
    case PGRES_POLLING_WRITING:
        listen_watch(s, UV_WRITABLE);
        return;
    case PGRES_POLLING_OK:
        if (!PQsendQuery(s->listen, "LISTEN loom_meta; LISTEN loom_auth")) {
            listen_lost(s);
            return;
        }
        s->listen_connecting = false;
        listen_watch(s, UV_READABLE);
        log_json(LOG_INFO, "loom_meta listener reconnected", NULL);
        submit_reload(s, "*");
        return;
    default:
        listen_lost(s);
    }
}

static void listen_retry_cb(uv_timer_t *t)
{
    server *s = t->data;
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {s->conninfo, "5", "loom-listen", NULL};
    s->listen = PQconnectStartParams(keys, vals, 1);
    if (!s->listen || PQstatus(s->listen) == CONNECTION_BAD || PQsetnonblocking(s->listen, 1) != 0) {
        listen_lost(s);
        return;
    }
    s->listen_connecting = true;
    listen_watch(s, UV_WRITABLE);
}

/* The first connect, before serving (synchronous). */
static bool listen_start(server *s)
{
    s->listen = db_connect_once(s->conninfo, NULL, 0);
    PGresult *r = s->listen ? PQexec(s->listen, "LISTEN loom_meta; LISTEN loom_auth") : NULL;
    bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK && PQsetnonblocking(s->listen, 1) == 0;
    PQclear(r);
    if (!ok) {
        listen_lost(s);
        return false;
    }
    s->listen_acked = true;
    auth_cache_enable(auth_cache_wanted());
    listen_watch(s, UV_READABLE);
    return true;
}

/* ---- dispatch ---- */

/* Everything before a worker's handler: the connection, the caller, the
 * transaction of R_TX routes. False when that answered the request. */
static bool route_enter(worker *w, job *j, ctx *c)
{
    const route *rt = &routes[j->m.index];
    *c = (ctx){.srv = w->srv, .ex = j->ex, .req = &j->ex->req, .res = &j->ex->res, .a = j->ex->arena,
               .db = w->db, .sb = w->sb, .qc = w->qc, .params = j->m.params};
    if (!db_ready(w->db)) {
        ctx_problem(c, LOOM_UNAVAILABLE, "the database is unreachable", NULL);
        return false;
    }
    if ((rt->flags & (R_AUTH | R_ADMIN)) && !auth_authenticate(c, j->prefetched ? &j->lookup : NULL, j->cached))
        return false;
    if ((rt->flags & R_ADMIN) && !c->user->admin) {
        ctx_problem(c, LOOM_FORBIDDEN, "this needs the platform role admin", NULL);
        return false;
    }
    loom_err e = {0};
    if ((rt->flags & R_TX) && !db_begin(w->db, c->a, &e)) {
        ctx_db_fail(c, &e);
        return false;
    }
    return true;
}

/* After the handler: commits what it did, or rolls back when it failed. */
static void route_leave(worker *w, ctx *c)
{
    loom_err e = {0};
    if (!db_in_tx(w->db))
        return;
    if (c->res->status >= 400 || c->res->status == 0)
        db_rollback(w->db);
    else if (!db_commit(w->db, c->a, &e))
        ctx_db_fail(c, &e);
}

static void run_route(worker *w, job *j)
{
    ctx c;
    if (!route_enter(w, j, &c))
        return;
    routes[j->m.index].fn(&c);
    route_leave(w, &c);
}

void ctx_run_split(ctx *c, route_plan_fn plan, route_finish_fn finish)
{
    route_query q = {0};
    if (!plan(c, &q))
        return;
    q.result = db_query_text(c->db, c->a, q.sql, q.nparams, q.params, &q.err);
    finish(c, &q);
}

/* The jobs of a batch whose routes are in two halves: each planned, then
 * their queries sent together in one round trip; worker_batch_cb finishes
 * them. */
static void plan_batch(worker *w, job **jobs, int n)
{
    arena *arenas[BATCH_MAX];
    const char *sqls[BATCH_MAX];
    int nparams[BATCH_MAX];
    const char *const *params[BATCH_MAX];
    PGresult *out[BATCH_MAX];
    loom_err errs[BATCH_MAX];
    job *planned[BATCH_MAX];
    int m = 0;
    bool writes = false;
    for (int i = 0; i < n; i++) {
        job *j = jobs[i];
        j->split = -1;
        for (int k = 0; j->kind == JOB_HTTP && k < (int)(sizeof splits / sizeof splits[0]); k++)
            if (splits[k].fn == routes[j->m.index].fn && !(routes[j->m.index].flags & R_TX))
                j->split = k;
        if (j->split < 0)
            continue;
        j->planning = true;
        if (!route_enter(w, j, &j->c))
            continue;   /* answered */
        if (!splits[j->split].plan(&j->c, &j->q)) {
            route_leave(w, &j->c);   /* answered by plan, which may have run its own transaction */
            db_rollback(w->db);
            continue;
        }
        j->planned = true;
        arenas[m] = j->c.a;
        sqls[m] = j->q.sql;
        nparams[m] = j->q.nparams;
        params[m] = j->q.params;
        writes = writes || j->q.writes;
        planned[m++] = j;
    }
    if (!m)
        return;
    memset(errs, 0, sizeof errs);
    db_query_text_many(w->db, arenas, m, sqls, nparams, params, writes, out, errs);
    if (m > 1)
        atomic_fetch_add(&w->srv->batched_queries, (unsigned long long)m);
    for (int i = 0; i < m; i++) {
        planned[i]->q.result = out[i];
        planned[i]->q.err = errs[i];
    }
}

/* Looks up the tokens of every job in the batch that needs a user, in one
 * round trip per kind of token (sessions, API keys). A lookup is then a little
 * older than the job's own start, but never older than its arrival: requests
 * in one batch were all in flight together, so no client can have seen the
 * answer of one (a logout, say) before sending another of the batch. */
static void prefetch_auth(worker *w, job **jobs, int n)
{
    for (int kind = 0; kind < 2; kind++) {
        job *sel[BATCH_MAX];
        arena *arenas[BATCH_MAX];
        const char *hashes[BATCH_MAX];
        const char *const *params[BATCH_MAX];
        PGresult *out[BATCH_MAX];
        loom_err errs[BATCH_MAX];
        int m = 0;
        for (int i = 0; i < n; i++) {
            job *j = jobs[i];
            char hash[65];
            bool is_key;
            if (j->kind != JOB_HTTP || j->cached || !(routes[j->m.index].flags & (R_AUTH | R_ADMIN)) ||
                !auth_bearer_hash(&j->ex->req, hash, &is_key) || is_key != (kind == 1))
                continue;
            sel[m] = j;
            arenas[m] = j->ex->arena;
            hashes[m] = arena_strdup(j->ex->arena, hash);
            params[m] = &hashes[m];
            m++;
        }
        if (m < 2)
            continue;   /* nothing to gain: the handler path looks it up */
        memset(errs, 0, sizeof errs);
        db_query_many(w->db, arenas, auth_lookup_stmt(kind == 1), 1, m, params, out, errs);
        atomic_fetch_add(&w->srv->batched_lookups, (unsigned long long)m);
        for (int i = 0; i < m; i++) {
            sel[i]->prefetched = true;
            sel[i]->lookup.row = out[i];
            sel[i]->lookup.err = errs[i];
        }
    }
}

static void worker_batch_cb(void *wp, void **jp, int n)
{
    worker *w = wp;
    job **jobs = (job **)jp;
    http_exchange *done[BATCH_MAX];
    int ndone = 0;
    double since = http_now();
    if (n > 1 && db_ready(w->db)) {
        prefetch_auth(w, jobs, n);
        plan_batch(w, jobs, n);
    }
    for (int i = 0; i < n; i++) {
        job *j = jobs[i];
        if (j->kind == JOB_RELOAD) {
            if (db_ready(w->db))
                reload_apps(w->srv, w->db, j->app);
            free(j);
            continue;
        }
        if (j->planned) {
            splits[j->split].finish(&j->c, &j->q);
            route_leave(w, &j->c);
        } else if (!j->planning) {
            run_route(w, j);
        }
        db_rollback(w->db);   /* a handler never leaves a transaction open */
        if (j->ex->res.status == 0)   /* a handler that answered nothing */
            problem_write(j->ex, LOOM_INTERNAL, NULL, NULL);
        done[ndone++] = j->ex;
        /* answers go back together, unless a slow job would hold them up */
        double now = http_now();
        if (now - since > 0.001) {
            http_exchange_done_many(done, ndone);
            ndone = 0;
        }
        since = now;
    }
    http_exchange_done_many(done, ndone);
    bool up = db_up(w->db);
    if (up != w->up) {
        atomic_fetch_add(&w->srv->db_up, up ? 1 : -1);
        w->up = up;
    }
}

static void *worker_init_cb(int index, void *arg)
{
    (void)index;
    server *s = arg;
    worker *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    w->srv = s;
    w->db = db_new(s->conninfo);
    if (s->statement_timeout_ms > 0) {   /* no request holds a worker (and a backend) for ever */
        char set[64];
        snprintf(set, sizeof set, "SET statement_timeout = %ld", s->statement_timeout_ms);
        db_set_session(w->db, set);
    }
    w->sb = sandbox_new(NULL);
    w->qc = query_cache_new(64);
    w->up = db_ready(w->db);
    if (w->up)
        atomic_fetch_add(&s->db_up, 1);
    return w;
}

static void worker_fini_cb(void *wp)
{
    worker *w = wp;
    db_free(w->db);
    sandbox_free(w->sb);
    query_cache_free(w->qc);
    free(w);
}

/* Imports (R_BULK routes) take bodies up to the bulk limit. */
static size_t body_limit_cb(void *ud, const char *method, const char *path)
{
    server *s = ud;
    size_t n = strlen(path);
    if (!strcmp(method, "POST") && n > 7 && !strcmp(path + n - 7, "/import")) {
        arena *a = arena_new();
        route_match m;
        bool bulk = router_match(routes, NROUTES, method, path, a, &m) && (routes[m.index].flags & R_BULK);
        arena_free(a);
        if (bulk)
            return s->cfg.max_bulk_body ? s->cfg.max_bulk_body : (size_t)1 << 30;
    }
    return s->cfg.max_body ? s->cfg.max_body : (size_t)8 << 20;
}

static void dispatch_cb(void *ud, http_exchange *ex)
{
    server *s = ud;
    job *j = arena_calloc(ex->arena, sizeof *j);
    j->ex = ex;
    router_match(routes, NROUTES, ex->req.method, ex->req.path, ex->arena, &j->m);
    ex->route = j->m.index;
    if (j->m.index < 0) {
        if (j->m.wrong_method)
            problem_write(ex, LOOM_METHOD_NOT_ALLOWED, "this path does not take that method", NULL);
        else
            problem_write(ex, LOOM_NOT_FOUND, "no such route", NULL);
        http_exchange_done(ex);
        return;
    }
    ex->route_name = s->route_names[j->m.index];
    if (routes[j->m.index].flags & R_LOOP) {
        ctx c = {.srv = s, .ex = ex, .req = &ex->req, .res = &ex->res, .a = ex->arena, .params = j->m.params};
        routes[j->m.index].fn(&c);
        http_exchange_done(ex);
    } else {
        if (s->npending == s->cap_pending) {
            s->cap_pending = s->cap_pending ? 2 * s->cap_pending : 64;
            s->pending = realloc(s->pending, sizeof(void *) * (size_t)s->cap_pending);
            if (!s->pending)
                abort();
        }
        s->pending[s->npending++] = j;   /* submitted together in check_cb */
    }
}

/* The request log: one line per response, batched and written once per loop
 * iteration (log_check_cb) or when the batch grows large. */
static void written_cb(void *ud, const http_exchange *ex, double secs)
{
    server *s = ud;
    metrics_observe(s->metrics, ex->route, ex->res.status, secs);
    if (!log_enabled(LOG_INFO))
        return;
    buf *b = &s->logbuf;
    char now[64];
    log_time_now(now);
    buf_printf(b, "{\"time\":\"%s\",\"level\":\"info\",\"msg\":\"request\",\"request_id\":", now);
    log_append_json_string(b, ex->req.request_id ? ex->req.request_id : "");
    buf_puts(b, ",\"method\":");
    log_append_json_string(b, ex->req.method ? ex->req.method : "");
    buf_puts(b, ",\"path\":");
    log_append_json_string(b, ex->req.path ? ex->req.path : "");
    buf_puts(b, ",\"route\":");
    log_append_json_string(b, ex->route_name ? ex->route_name : "unmatched");
    buf_printf(b, ",\"status\":%d,\"duration_ms\":%.3f,\"client\":", ex->res.status, secs * 1000.0);
    log_append_json_string(b, ex->req.client_ip ? ex->req.client_ip : "");
    buf_puts(b, "}\n");
    if (b->len > 64 * 1024)
        log_flush(b);
}

/* After the I/O callbacks of each loop iteration: the requests read in it go
 * to the workers in one hand-over (one wake-up rather than one each), and the
 * request log lines written in it go out in one write. */
static void release_cached_cb(void *p)
{
    auth_cache_release(p);
}

#define LOOP_RUNS_MAX 4

/* An R_NODB route whose caller the token cache knows: answered here, on the
 * loop, without a thread crossing; it touches no database. */
static void run_on_loop(server *s, job *j)
{
    http_exchange *ex = j->ex;
    const route *rt = &routes[j->m.index];
    ctx c = {.srv = s, .ex = ex, .req = &ex->req, .res = &ex->res, .a = ex->arena, .params = j->m.params};
    if (auth_authenticate(&c, NULL, j->cached) && (!(rt->flags & R_ADMIN) || c.user->admin))
        rt->fn(&c);
    else if (c.user)
        ctx_problem(&c, LOOM_FORBIDDEN, "this needs the platform role admin", NULL);
    http_exchange_done(ex);
}

static void check_cb(uv_check_t *h)
{
    server *s = h->data;
    if (s->npending && s->listen && !s->listen_connecting) {
        /* changes notified so far (and a lost listener) count before these requests: then their tokens
         * may come from the cache */
        listen_read(s);
        int kept = 0, on_loop = 0;
        for (int i = 0; i < s->npending; i++) {
            job *j = s->pending[i];
            char hash[65];
            bool is_key;
            if (j->kind == JOB_HTTP && (routes[j->m.index].flags & (R_AUTH | R_ADMIN)) &&
                auth_bearer_hash(&j->ex->req, hash, &is_key) && (j->cached = auth_cache_get(hash, is_key)))
                arena_defer(j->ex->arena, release_cached_cb, j->cached);
            /* nothing left for a worker to do: answered here, a few per iteration so that a busy loop
             * still shares the work with the workers */
            if (j->cached && (routes[j->m.index].flags & R_NODB) && on_loop < LOOP_RUNS_MAX) {
                run_on_loop(s, j);
                on_loop++;
                continue;
            }
            s->pending[kept++] = j;
        }
        s->npending = kept;
    }
    if (s->npending) {
        pool_submit(s->pool, s->pending, s->npending);
        s->npending = 0;
    }
    if (s->logbuf.len)
        log_flush(&s->logbuf);
}

/* ---- metrics handler needs the server ---- */

void ops_metrics(void *cp)
{
    ctx *c = cp;
    server *s = c->srv;
    metrics_gauges g = {.workers = pool_size(s->pool), .workers_busy = pool_busy(s->pool),
                        .queued = pool_queued(s->pool), .connections = http_server_connections(s->http),
                        .db_connections_up = atomic_load(&s->db_up),
                        .batched_lookups = atomic_load(&s->batched_lookups),
                        .batched_queries = atomic_load(&s->batched_queries)};
    scheduler_counts(s->sched, &g.jobs_done, &g.jobs_failed);
    c->res->status = 200;
    c->res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    metrics_render(s->metrics, &g, &c->res->body);
}

/* ---- start-up and shutdown ---- */

static void signal_cb(uv_signal_t *h, int signum)
{
    server *s = h->data;
    /* the handlers stay installed until the end: a second signal must not
     * kill the process before it has stopped the embedded database */
    log_json(LOG_INFO, "stopping", json_pack("{s:i}", "signal", signum));
    http_server_stop(s->http);
    uv_stop(&s->loop);
}

static bool split_listen(const char *listen, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen)
        return false;
    size_t n = (size_t)(colon - listen);
    if (listen[0] == '[' && n >= 2 && listen[n - 1] == ']') {
        listen++;
        n -= 2;
    }
    if (n >= hostlen)
        return false;
    memcpy(host, listen, n);
    host[n] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535)
        return false;
    *port = (int)p;
    return true;
}

/* Prepares the database: migrations and the first admin. */
static bool prepare_database(const char *conninfo)
{
    char err[1024];
    PGconn *c = db_connect_once(conninfo, err, sizeof err);
    if (!c) {
        log_json(LOG_ERROR, "could not connect to the database", json_pack("{s:s}", "error", err));
        return false;
    }
    int applied = store_migrate(c, err, sizeof err);
    bool ok = applied >= 0;
    if (!ok)
        log_json(LOG_ERROR, "could not migrate the platform schema", json_pack("{s:s}", "error", err));
    else
        log_json(LOG_INFO, "platform schema ready",
                 json_pack("{s:i, s:i}", "version", store_schema_version(), "applied", applied));
    if (ok && !(ok = auth_bootstrap_admin(c, err, sizeof err)))
        log_json(LOG_ERROR, "could not create the first admin", json_pack("{s:s}", "error", err));
    PQfinish(c);
    return ok;
}

int server_run(const server_config *cfg)
{
    log_init();
    signal(SIGPIPE, SIG_IGN);
    /* a fixed threshold keeps argon2's 19 MiB blocks out of the heap arenas,
     * so memory goes back to the system after each login */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);

    server *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->cfg = *cfg;
    const char *ttl = getenv("LOOM_SESSION_TTL");
    s->session_ttl = ttl && atoi(ttl) > 0 ? atoi(ttl) : 12 * 3600;
    const char *st = getenv("LOOM_STATEMENT_TIMEOUT_MS");
    s->statement_timeout_ms = st && *st ? atol(st) : 30000;
    int status = 1;
    pgembed pg;
    bool own_pg = false;
    int lockfd = -1;

    if (cfg->db_url) {
        snprintf(s->conninfo, sizeof s->conninfo, "%s", cfg->db_url);
    } else {
        char err[1024];
        if (!pgembed_init(&pg, cfg->data_dir, err, sizeof err)) {
            log_json(LOG_ERROR, "embedded database", json_pack("{s:s}", "error", err));
            goto out;
        }
        lockfd = pgembed_lock(&pg, err, sizeof err);
        if (lockfd < 0) {
            log_json(LOG_ERROR, "embedded database", json_pack("{s:s}", "error", err));
            goto out;
        }
        int started = pgembed_start(&pg, err, sizeof err);
        if (started < 0) {
            log_json(LOG_ERROR, "could not start the embedded database", json_pack("{s:s}", "error", err));
            goto out;
        }
        own_pg = started == 1;
        pgembed_conninfo(&pg, s->conninfo, sizeof s->conninfo);
        log_json(LOG_INFO, own_pg ? "embedded database started" : "embedded database already running",
                 json_pack("{s:s}", "cluster", pg.cluster));
    }

    if (!prepare_database(s->conninfo))
        goto stop_pg;

    char host[256];
    int port;
    if (!split_listen(cfg->listen, host, sizeof host, &port)) {
        log_json(LOG_ERROR, "invalid --listen (want host:port)", json_pack("{s:s}", "listen", cfg->listen));
        goto stop_pg;
    }
    s->meta = meta_new();
    uv_loop_init(&s->loop);
    uv_timer_init(&s->loop, &s->listen_retry);
    s->listen_retry.data = s;
    uv_unref((uv_handle_t *)&s->listen_retry);
    listen_start(s);   /* LISTEN first, then load: nothing published in between is missed */
    {
        db *d = db_new(s->conninfo);
        bool loaded = db_ready(d) && reload_apps(s, d, "*");
        db_free(d);
        if (!loaded) {
            log_json(LOG_ERROR, "could not load the published apps", NULL);
            goto free_loop;
        }
    }
    for (int i = 0; i < NROUTES; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s %s", routes[i].method, routes[i].pattern);
        s->route_names[i] = strdup(name);
    }
    s->metrics = metrics_new(NROUTES, s->route_names);
    http_config hc = {.host = host, .port = port, .max_body = cfg->max_body,
                      .header_timeout_ms = cfg->header_timeout_ms, .idle_timeout_ms = cfg->idle_timeout_ms,
                      .body_limit = body_limit_cb, .dispatch = dispatch_cb, .written = written_cb, .udata = s};
    char err[256];
    s->http = http_server_start(&s->loop, &hc, err, sizeof err);
    if (!s->http) {
        log_json(LOG_ERROR, err, NULL);
        goto free_loop;
    }
    int nworkers = cfg->workers > 0 ? cfg->workers : 2 * (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nworkers < 1)
        nworkers = 2;
    s->pool = pool_start(nworkers, BATCH_MAX, worker_init_cb, worker_fini_cb, worker_batch_cb, s);
    if (!s->pool) {
        log_json(LOG_ERROR, "could not start the worker threads", NULL);
        goto free_loop;
    }
    uv_signal_init(&s->loop, &s->sigint);
    uv_signal_init(&s->loop, &s->sigterm);
    s->sigint.data = s->sigterm.data = s;
    uv_signal_start(&s->sigint, signal_cb, SIGINT);
    uv_signal_start(&s->sigterm, signal_cb, SIGTERM);
    uv_check_init(&s->loop, &s->check);
    s->check.data = s;
    uv_check_start(&s->check, check_cb);
    uv_unref((uv_handle_t *)&s->check);
    uv_unref((uv_handle_t *)&s->sigint);   /* they must not keep the loop alive */
    uv_unref((uv_handle_t *)&s->sigterm);
    s->signals = true;
    const char *sched = getenv("LOOM_SCHEDULER");
    if (!(sched && !strcmp(sched, "0")) && !(s->sched = scheduler_start(s->conninfo, s->meta))) {
        log_json(LOG_ERROR, "could not start the scheduler thread", NULL);
        pool_stop(s->pool);
        s->pool = NULL;
        goto free_loop;
    }
    log_json(LOG_INFO, "listening",
             json_pack("{s:s, s:i, s:i}", "host", host, "port", http_server_port(s->http), "workers", nworkers));

    uv_run(&s->loop, UV_RUN_DEFAULT);

    scheduler_stop(s->sched);
    s->sched = NULL;
    pool_stop(s->pool);
    s->pool = NULL;
    status = 0;
free_loop:
    /* the listener first: the loop below runs until no handle is active */
    listen_unwatch(s);
    uv_timer_stop(&s->listen_retry);
    uv_close((uv_handle_t *)&s->listen_retry, NULL);
    if (s->http)
        http_server_free(s->http);
    if (s->listen)
        PQfinish(s->listen);
    if (s->signals) {
        uv_close((uv_handle_t *)&s->sigint, NULL);
        uv_close((uv_handle_t *)&s->sigterm, NULL);
        uv_close((uv_handle_t *)&s->check, NULL);
    }
    log_flush(&s->logbuf);
    buf_free(&s->logbuf);
    free(s->pending);
    uv_run(&s->loop, UV_RUN_NOWAIT);
    uv_loop_close(&s->loop);
    metrics_free(s->metrics);
    meta_free(s->meta);
    for (int i = 0; i < NROUTES; i++)
        free((char *)s->route_names[i]);
stop_pg:
    if (own_pg) {
        char perr[512];
        if (pgembed_stop(&pg, perr, sizeof perr))
            log_json(LOG_INFO, "embedded database stopped", NULL);
        else
            log_json(LOG_ERROR, "could not stop the embedded database", json_pack("{s:s}", "error", perr));
    }
out:
    if (lockfd >= 0)
        close(lockfd);
    free(s);
    return status;
}
