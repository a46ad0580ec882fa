/* record_routes.c - the runtime API's records: list and query (filter,
 * sort, keyset pages, projection, count) and one record, each through
 * engine/store/query inside the caller's permissions. Served from the
 * server's snapshot of the app's published version. */
#include <stdlib.h>
#include <string.h>

#include "core/secret.h"
#include "handlers.h"
#include "meta.h"
#include "model/bundle.h"
#include "perm/perm.h"
#include "store/query.h"
#include "store/write.h"
#include "records.h"

static void snapshot_release_cb(void *p)
{
    snapshot_release(p);
}

static void decref_cb(void *p)
{
    json_decref(p);
}

filter_ctx rec_caller(ctx *c, app_snapshot *snap, json_t *roles)
{
    const char *tz = json_string_value(json_object_get(json_object_get(snap->bundle, "app"), "timezone"));
    return (filter_ctx){.bundle = snap->bundle,
                        .schema = json_string_value(json_object_get(snap->catalog, "schema")),
                        .roles = roles,
                        .admin = c->user->admin,
                        .me = c->user->id,
                        .timezone = tz ? tz : "UTC"};
}

bool rec_begin(ctx *c, rec_req *r)
{
    const char *app = c->params[0];
    json_t *roles = app_caller_roles(c, app);
    r->snap = c->user->admin || json_array_size(roles) ? meta_get(server_meta(c->srv), app) : NULL;
    if (!r->snap) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such app", NULL);
        return false;
    }
    arena_defer(c->a, snapshot_release_cb, r->snap);
    r->fc = rec_caller(c, r->snap, roles);
    r->form = c->params[1];
    return true;
}

void rec_problem(ctx *c, const filter_err *e)
{
    ctx_problem(c, e->code, e->message,
                json_pack("[{s:s, s:s, s:s}]", "path", e->path, "code", loom_code_name(e->code), "message", e->message));
}

PGresult *rec_run(ctx *c, const buf *sql, json_t *args)
{
    loom_err e = {0};
    PGresult *r = query_exec(c->db, c->a, sql->data, args, &e);
    if (!r)
        ctx_db_fail(c, &e);
    return r;
}

/* The page's query: its base from the worker's cache when the same caller
 * asked the same of the same app version before (key: everything the base
 * depends on, the snapshot by its serial, so a publish or a re-created app
 * never meets an old base; filter_text is the filter as sent), else built
 * and kept. */
static bool page_query(ctx *c, rec_req *r, const query_spec *spec, const char *filter_text, query *q, filter_err *e)
{
    buf key = {0};
    buf_printf(&key, "%s\x1f%ld\x1f%s\x1f%d\x1f%lld\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%ld\x1f%d\x1f%s", r->snap->id,
               r->snap->serial, r->form, c->user->admin, c->user->id, PQgetvalue(c->user->row, 0, 7),
               filter_text ? filter_text : "", spec->sort ? spec->sort : "", spec->fields ? spec->fields : "\x1e",
               spec->expand ? spec->expand : "", spec->limit, spec->count, spec->search ? spec->search : "");
    const query *base = c->qc ? query_cache_get(c->qc, key.data) : NULL;
    bool ok = true;
    if (base) {
        query_copy(base, q);
    } else {
        ok = query_list_base(&r->fc, r->form, spec, q, e);
        if (ok && c->qc)
            query_cache_put(c->qc, key.data, q);
    }
    buf_free(&key);
    return ok && query_list_end(q, spec->cursor, e);
}

/* Responds {"items", "next_cursor", "total"?} from the page (and count). */
static void write_page(ctx *c, const query *q, PGresult *page, PGresult *count)
{
    char *next;
    buf *out = &c->res->body;   /* written as text: no JSON tree for a page */
    buf_reset(out);
    buf_puts(out, "{\"items\":");
    query_page_json(q, page, out, &next);
    if (next)
        buf_printf(out, ",\"next_cursor\":\"%s\"", next);   /* base64url */
    else
        buf_puts(out, ",\"next_cursor\":null");
    if (count)
        buf_printf(out, ",\"total\":%lld", strtoll(PQgetvalue(count, 0, 0), NULL, 10));
    buf_puts(out, "}");
    free(next);
    c->res->status = 200;
    c->res->content_type = "application/json; charset=utf-8";
}

static void query_free_cb(void *q)
{
    query_free(q);
}

/* The page of spec: its query in *rq (true), or false after responding: with
 * a problem, or with a page and its total, which take two queries in one
 * snapshot. */
static bool plan_page(ctx *c, rec_req *r, const query_spec *spec, const char *filter_text, route_query *rq)
{
    query *q = arena_alloc(c->a, sizeof *q);
    filter_err e;
    bool ok = page_query(c, r, spec, filter_text, q, &e);
    arena_defer(c->a, query_free_cb, q);
    if (!ok) {
        rec_problem(c, &e);
        return false;
    }
    if (spec->count) {
        loom_err be = {0};
        PGresult *page = NULL, *count = NULL;
        if (!db_begin_snapshot(c->db, c->a, &be))
            ctx_db_fail(c, &be);
        else if ((page = rec_run(c, &q->sql, q->args)) && (count = rec_run(c, &q->count_sql, q->count_args)))
            write_page(c, q, page, count);
        return false;
    }
    rq->sql = q->sql.data;
    rq->params = query_params(c->a, q->args, &rq->nparams);
    rq->state = q;
    return true;
}

void records_page_finish(ctx *c, route_query *rq)
{
    if (rq->result)
        write_page(c, rq->state, rq->result, NULL);
    else
        ctx_db_fail(c, &rq->err);
}

static bool bad(ctx *c, loom_code code, const char *path, const char *message)
{
    filter_err e = {.code = code};
    snprintf(e.path, sizeof e.path, "%s", path);
    snprintf(e.message, sizeof e.message, "%s", message);
    rec_problem(c, &e);
    return false;
}


bool rec_parse_limit(ctx *c, const char *s, long *out)
{
    char *end;
    long n = s ? strtol(s, &end, 10) : QUERY_DEFAULT_LIMIT;
    if (s && (!*s || *end || n < 1 || n > QUERY_MAX_LIMIT))
        return bad(c, LOOM_BAD_REQUEST, "/limit", "limit is a whole number from 1 to 1000");
    *out = n;
    return true;
}

void records_list(void *c)
{
    ctx_run_split(c, records_list_plan, records_page_finish);
}

bool records_list_plan(ctx *c, route_query *rq)
{
    rec_req r;
    if (!rec_begin(c, &r))
        return false;
    const char *query = c->req->query;
    const char *filter = query_param(c->a, query, "filter"), *count = query_param(c->a, query, "count");
    query_spec spec = {.sort = query_param(c->a, query, "sort"),
                       .fields = query_param(c->a, query, "fields"),
                       .cursor = query_param(c->a, query, "cursor"),
                       .expand = query_param(c->a, query, "expand"),
                       .search = query_param(c->a, query, "search")};
    if (!rec_parse_limit(c, query_param(c->a, query, "limit"), &spec.limit))
        return false;
    if (count && strcmp(count, "true") && strcmp(count, "false"))
        return bad(c, LOOM_BAD_REQUEST, "/count", "count is true or false");
    spec.count = count && !strcmp(count, "true");
    if (filter && *filter) {
        char err[200];
        spec.filter = bundle_parse(filter, strlen(filter), err, sizeof err);
        if (!spec.filter)
            return bad(c, LOOM_BAD_FILTER, "/filter", err);
        arena_defer(c->a, decref_cb, spec.filter);
    }
    return plan_page(c, &r, &spec, filter, rq);
}

/* A list of names in a body: "a,b" or ["a", "b"], as comma text. */
static bool names(ctx *c, json_t *body, const char *key, const char **out)
{
    json_t *v = json_object_get(body, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (json_is_string(v)) {
        *out = json_string_value(v);
        return true;
    }
    char path[32];
    snprintf(path, sizeof path, "/%s", key);
    if (!json_is_array(v))
        return bad(c, LOOM_BAD_REQUEST, path, "a list of field names");
    buf b = {0};
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
        if (!json_is_string(x) || strchr(json_string_value(x), ',')) {
            buf_free(&b);
            return bad(c, LOOM_BAD_REQUEST, path, "a list of field names");
        }
        buf_printf(&b, "%s%s", i ? "," : "", json_string_value(x));
    }
    *out = arena_strdup(c->a, b.data ? b.data : "");
    buf_free(&b);
    return true;
}

void records_query(void *c)
{
    ctx_run_split(c, records_query_plan, records_page_finish);
}

bool records_query_plan(ctx *c, route_query *rq)
{
    rec_req r;
    if (!rec_begin(c, &r))
        return false;
    json_t *body = ctx_body_object(c);
    if (!body)
        return false;
    static const char *const known[] = {"filter", "sort", "limit", "cursor", "fields", "count", "expand", "search"};
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok = ok || !strcmp(k, known[i]);
        if (!ok) {
            char path[160];
            snprintf(path, sizeof path, "/%.150s", k);
            return bad(c, LOOM_BAD_REQUEST, path, "not a query key");
        }
    }
    query_spec spec = {.filter = json_object_get(body, "filter")};
    json_t *limit = json_object_get(body, "limit"), *count = json_object_get(body, "count"),
           *cursor = json_object_get(body, "cursor"), *search = json_object_get(body, "search");
    if (search && !json_is_string(search) && !json_is_null(search))
        return bad(c, LOOM_BAD_REQUEST, "/search", "search is text");
    spec.search = json_string_value(search);
    if (limit && !(json_is_integer(limit) && json_integer_value(limit) >= 1 &&
                   json_integer_value(limit) <= QUERY_MAX_LIMIT))
        return bad(c, LOOM_BAD_REQUEST, "/limit", "limit is a whole number from 1 to 1000");
    if ((count && !json_is_boolean(count)) || (cursor && !json_is_string(cursor) && !json_is_null(cursor)))
        return bad(c, LOOM_BAD_REQUEST, count && !json_is_boolean(count) ? "/count" : "/cursor",
                   count && !json_is_boolean(count) ? "count is true or false" : "cursor is text");
    if (spec.filter && json_is_null(spec.filter))
        spec.filter = NULL;
    spec.limit = limit ? (long)json_integer_value(limit) : QUERY_DEFAULT_LIMIT;
    spec.count = json_is_true(count);
    spec.cursor = json_string_value(cursor);
    if (!names(c, body, "sort", &spec.sort) || !names(c, body, "fields", &spec.fields) ||
        !names(c, body, "expand", &spec.expand))
        return false;
    char *ftext = spec.filter ? json_dumps(spec.filter, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    bool planned = plan_page(c, &r, &spec, ftext, rq);
    free(ftext);
    return planned;
}

void records_get(void *cp)
{
    ctx *c = cp;
    rec_req r;
    if (!rec_begin(c, &r))
        return;
    if (!path_id(c->params[2])) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such record", NULL);
        return;
    }
    query q;
    filter_err e;
    if (!query_get(&r.fc, r.form, c->params[2], query_param(c->a, c->req->query, "expand"), &q, &e)) {
        rec_problem(c, &e);
        query_free(&q);
        return;
    }
    PGresult *res = rec_run(c, &q.sql, q.args);
    if (res && PQntuples(res) == 0) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such record", NULL);
    } else if (res) {
        json_t *items = query_items(&q, res, NULL);
        json_t *rec = json_incref(json_array_get(items, 0));
        json_decref(items);
        char etag[32];
        snprintf(etag, sizeof etag, "\"%lld\"", (long long)json_integer_value(json_object_get(rec, "_version")));
        http_response_header(c->res, "ETag", etag);
        ctx_json(c, 200, rec);
    }
    query_free(&q);
}

/* ---- writes ---- */

write_ctx rec_write_ctx(ctx *c, rec_req *r)
{
    json_t *app = json_object_get(r->snap->bundle, "app");
    return (write_ctx){.fc = &r->fc,
                       .catalog = r->snap->catalog,
                       .tables = r->snap->tables,
                       .db = c->db,
                       .a = c->a,
                       .sb = c->sb,
                       .app = r->snap->id,
                       .version = r->snap->version,
                       .locale = app_locale(c, json_object_get(app, "locales"))};
}

void rec_write_failed(ctx *c, write_result *w)
{
    if (w->from_db)
        ctx_db_fail(c, &w->db);
    else
        ctx_problem(c, w->code, w->message, json_incref(w->errors));
    write_result_free(w);
}

/* If-Match: "<version>" (or W/"<version>", or bare digits); -1 when absent,
 * -2 when malformed. */
static long long if_match(ctx *c)
{
    const char *h = http_request_header(c->req, "if-match");
    if (!h || !strcmp(h, "*"))   /* "*": whatever version the record is at (RFC 9110) */
        return -1;
    if (!strncmp(h, "W/", 2))
        h += 2;
    char digits[24];
    size_t n = strlen(h);
    if (n >= 2 && h[0] == '"' && h[n - 1] == '"') {
        h++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof digits || strspn(h, "0123456789") < n)
        return -2;
    memcpy(digits, h, n);
    digits[n] = '\0';
    return strtoll(digits, NULL, 10);
}

json_t *rec_read(ctx *c, rec_req *r, long long id, long long version)
{
    char ids[24];
    snprintf(ids, sizeof ids, "%lld", id);
    query q;
    filter_err e;
    json_t *rec = NULL;
    if (!query_get(&r->fc, r->form, ids, query_param(c->a, c->req->query, "expand"), &q, &e)) {
        rec_problem(c, &e);   /* a bad expand: the write rolls back with it */
    } else {
        PGresult *res = rec_run(c, &q.sql, q.args);
        if (res && PQntuples(res) == 1) {
            json_t *items = query_items(&q, res, NULL);
            rec = json_incref(json_array_get(items, 0));
            json_decref(items);
        }
    }
    query_free(&q);
    if (c->res->status >= 400) {
        json_decref(rec);
        return NULL;
    }
    if (!rec)
        rec = version >= 0 ? json_pack("{s:I, s:I}", "id", (json_int_t)id, "_version", (json_int_t)version)
                           : json_pack("{s:I}", "id", (json_int_t)id);
    return rec;
}

void rec_respond(ctx *c, rec_req *r, int status, long long id, long long version)
{
    json_t *rec = rec_read(c, r, id, version);
    if (!rec)
        return;
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", version);
    http_response_header(c->res, "ETag", etag);
    ctx_json(c, status, rec);
}

void rec_respond_written(ctx *c, rec_req *r, write_result *out, int status)
{
    if (out->record && !query_param(c->a, c->req->query, "expand")) {   /* known without reading it back */
        char etag[32];
        snprintf(etag, sizeof etag, "\"%lld\"", out->version);
        http_response_header(c->res, "ETag", etag);
        ctx_json(c, status, json_incref(out->record));
    } else {
        rec_respond(c, r, status, out->id, out->version);
    }
    write_result_free(out);
}

/* Idempotency-Key (api: scoped per user and route, kept 24 h). The key is
 * claimed inside the request's transaction: a concurrent request with the
 * same key waits on it, then replays the committed answer; a failed request
 * rolls its claim back, so only successes are remembered. */
static db_stmt idem_claim = {
    .sql = "INSERT INTO loom.idempotency (user_id, route, key, body_hash) VALUES ($1, $2, $3, $4) "
           "ON CONFLICT (user_id, route, key) DO UPDATE SET body_hash = EXCLUDED.body_hash, status = NULL, "
           "etag = NULL, response = NULL, created_at = now() "
           "WHERE loom.idempotency.created_at < now() - interval '24 hours' RETURNING 1"};
static db_stmt idem_get = {.sql = "SELECT body_hash, status, etag, response FROM loom.idempotency "
                                  "WHERE user_id = $1 AND route = $2 AND key = $3"};
static db_stmt idem_save = {.sql = "UPDATE loom.idempotency SET status = $4, etag = $5, response = $6 "
                                   "WHERE user_id = $1 AND route = $2 AND key = $3"};

#define IDEM_KEY_MAX 255

/* Returns true when the request should run (with *claimed set when a key
 * was claimed); false after responding (a replay, a mismatch, an error). */
static bool idempotency_begin(ctx *c, const char *key, const char *p[4], bool *claimed)
{
    *claimed = false;
    if (!key)
        return true;
    size_t n = strlen(key);
    if (n == 0 || n > IDEM_KEY_MAX) {
        ctx_problem(c, LOOM_BAD_REQUEST, "an Idempotency-Key is 1 to 255 characters", NULL);
        return false;
    }
    PGresult *r = ctx_query(c, &idem_claim, 4, p);
    if (!r)
        return false;
    if (PQntuples(r) == 1) {
        *claimed = true;
        return true;
    }
    r = ctx_query(c, &idem_get, 3, p);
    if (!r)
        return false;
    if (PQntuples(r) != 1 || PQgetisnull(r, 0, 1)) {   /* cannot happen: the claim was committed with its answer */
        ctx_problem(c, LOOM_CONFLICT, "a request with this Idempotency-Key is in progress", NULL);
        return false;
    }
    if (strcmp(PQgetvalue(r, 0, 0), p[3])) {
        ctx_problem(c, LOOM_IDEMPOTENCY_MISMATCH, "this Idempotency-Key was used with another body", NULL);
        return false;
    }
    c->res->status = atoi(PQgetvalue(r, 0, 1));
    c->res->content_type = "application/json; charset=utf-8";
    buf_reset(&c->res->body);
    buf_puts(&c->res->body, PQgetvalue(r, 0, 3));
    if (!PQgetisnull(r, 0, 2))
        http_response_header(c->res, "ETag", PQgetvalue(r, 0, 2));
    http_response_header(c->res, "Idempotent-Replayed", "true");
    return false;
}

static void idempotency_end(ctx *c, const char *p[4], const char *etag)
{
    char status[8];
    snprintf(status, sizeof status, "%d", c->res->status);
    const char *q[] = {p[0], p[1], p[2], status, etag, c->res->body.data ? c->res->body.data : ""};
    if (!ctx_query(c, &idem_save, 6, q))
        return;   /* responded 5xx: the transaction rolls back */
}

void records_create(void *c)
{
    ctx_run_split(c, records_create_plan, records_create_finish);
}

typedef struct create_state {
    rec_req r;
    write_pending *p;
} create_state;

bool records_create_plan(ctx *c, route_query *q)
{
    create_state *s = arena_alloc(c->a, sizeof *s);
    s->p = NULL;
    if (!rec_begin(c, &s->r))
        return false;
    json_t *body = ctx_body_object(c);
    if (!body)
        return false;
    loom_err e = {0};
    if (!db_begin(c->db, c->a, &e)) {   /* committed by the route when the answer is < 400 */
        ctx_db_fail(c, &e);
        return false;
    }
    const char *key = http_request_header(c->req, "idempotency-key");
    char user[24], hash[65];
    const char *p[4] = {NULL, NULL, NULL, NULL};
    if (key) {   /* scoped per user and route; the body by its hash */
        snprintf(user, sizeof user, "%lld", c->user->id);
        secret_sha256_hex(c->req->body, c->req->body_len, hash);
        p[0] = user;
        p[1] = arena_printf(c->a, "POST %s", c->req->path);
        p[2] = key;
        p[3] = hash;
    }
    bool claimed;
    if (!idempotency_begin(c, key, p, &claimed))
        return false;
    write_ctx w = rec_write_ctx(c, &s->r);
    write_result out;
    /* a key's answer and an expanded record are written and read in the create's transaction, after it: only
     * a plain create may be left pending, or commit with its statement */
    w.last = !key && !query_param(c->a, c->req->query, "expand");
    if (!write_create_plan(&w, s->r.form, body, w.last ? &s->p : NULL, &out)) {
        rec_write_failed(c, &out);
        return false;
    }
    if (s->p) {
        db_rollback(c->db);   /* nothing ran in it: the statement is a transaction of its own */
        q->sql = write_pending_sql(s->p, &q->nparams, &q->params);
        q->writes = true;
        q->state = s;
        return true;
    }
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", out.version);
    rec_respond_written(c, &s->r, &out, 201);
    if (claimed && c->res->status == 201)
        idempotency_end(c, p, etag);
    return false;
}

void records_create_finish(ctx *c, route_query *q)
{
    create_state *s = q->state;
    write_result out;
    if (write_create_done(s->p, q->result, &q->err, &out))
        rec_respond_written(c, &s->r, &out, 201);
    else
        rec_write_failed(c, &out);
}

/* The record a PATCH or DELETE names, and its If-Match (-1: none); false
 * after responding. */
bool rec_target(ctx *c, rec_req *r, long long *im)
{
    if (!rec_begin(c, r))
        return false;
    if (!path_id(c->params[2])) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such record", NULL);
        return false;
    }
    *im = if_match(c);
    if (*im == -2) {
        ctx_problem(c, LOOM_BAD_REQUEST, "If-Match is a record version, as its ETag gives it", NULL);
        return false;
    }
    return true;
}

void records_update(void *cp)
{
    ctx *c = cp;
    rec_req r;
    long long im;
    if (!rec_target(c, &r, &im))
        return;
    json_t *body = ctx_body_object(c);
    if (!body)
        return;
    write_ctx w = rec_write_ctx(c, &r);
    w.last = !query_param(c->a, c->req->query, "expand");   /* else the answer is read in the transaction */
    write_result out;
    if (!write_update(&w, r.form, c->params[2], body, im, &out)) {
        rec_write_failed(c, &out);
        return;
    }
    rec_respond_written(c, &r, &out, 200);
}

void records_delete(void *cp)
{
    ctx *c = cp;
    rec_req r;
    long long im;
    if (!rec_target(c, &r, &im))
        return;
    write_ctx w = rec_write_ctx(c, &r);
    write_result out;
    if (!write_delete(&w, r.form, c->params[2], im, &out)) {
        rec_write_failed(c, &out);
        return;
    }
    write_result_free(&out);
    c->res->status = 204;
}

/* ---- history ---- */

/* A change's rows without the subform fields the caller may not see. */
static void hide_row_fields(const perm_decision *d, const char *sub, json_t *rows)
{
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        const char *k;
        void *tmp;
        json_t *v;
        json_object_foreach_safe(row, tmp, k, v)
        {
            char name[160];
            snprintf(name, sizeof name, "%s.%s", sub, k);
            if (strcmp(k, "id") && perm_field(d, name) == FIELD_HIDDEN)
                json_object_del(row, k);
        }
    }
}

#define HISTORY_SELECT                                                                                            \
    "SELECT h.id, to_char(h.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), h.actor, "                         \
    "coalesce(u.display_name, u.username), h.action, h.changes, h.from_state, h.to_state, h.transition, h.comment "    \
    "FROM loom.history h LEFT JOIN loom.users u ON u.id = h.actor WHERE h.app = $1 AND h.form = $2 AND h.record = $3 "

void records_history(void *cp)
{
    static db_stmt oldest = {.sql = HISTORY_SELECT "AND h.id > $4 ORDER BY h.id LIMIT $5"},
                   newest = {.sql = HISTORY_SELECT "AND h.id < $4 ORDER BY h.id DESC LIMIT $5"};
    ctx *c = cp;
    rec_req r;
    if (!rec_begin(c, &r))
        return;
    long limit;
    const char *cursor = query_param(c->a, c->req->query, "cursor");
    if (!rec_parse_limit(c, query_param(c->a, c->req->query, "limit"), &limit))
        return;
    if (cursor && *cursor && !path_id(cursor)) {
        bad(c, LOOM_BAD_REQUEST, "/cursor", "not a cursor of this list");
        return;
    }
    const char *order = query_param(c->a, c->req->query, "order");   /* asc (oldest first, the default) or desc */
    bool desc = order && !strcmp(order, "desc");
    if (order && !desc && strcmp(order, "asc")) {
        bad(c, LOOM_BAD_REQUEST, "/order", "order is asc or desc");
        return;
    }
    if (!path_id(c->params[2])) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such record", NULL);
        return;
    }
    /* the record must be one the caller may read */
    query q;
    filter_err e;
    if (!query_get(&r.fc, r.form, c->params[2], NULL, &q, &e)) {
        rec_problem(c, &e);
        query_free(&q);
        return;
    }
    PGresult *res = rec_run(c, &q.sql, q.args);
    query_free(&q);
    if (!res)
        return;
    perm_decision d;
    perm_decide(r.snap->bundle, r.form, r.fc.roles, r.fc.admin, &d);
    /* a deleted record's history: to whoever may read every record of the form (it has none left to test) */
    bool gone_but_all = PQntuples(res) == 0 && perm_scope_all(d.read);
    char lim[24];
    snprintf(lim, sizeof lim, "%ld", limit + 1);
    const char *p[] = {r.snap->id, r.form, c->params[2], cursor && *cursor ? cursor : desc ? "9223372036854775807" : "0", lim};
    PGresult *h = PQntuples(res) || gone_but_all ? ctx_query(c, desc ? &newest : &oldest, 5, p) : NULL;
    if (!h || (gone_but_all && PQntuples(h) == 0 && !(cursor && *cursor))) {
        if (!c->res->status)
            ctx_problem(c, LOOM_NOT_FOUND, "no such record", NULL);
        perm_free(&d);
        return;
    }
    json_t *fields = json_object_get(bundle_item(json_object_get(r.snap->bundle, "forms"), r.form), "fields");
    json_t *items = json_array();
    int n = PQntuples(h) > limit ? (int)limit : PQntuples(h);
    for (int i = 0; i < n; i++) {
        json_t *ch = json_loads(PQgetvalue(h, i, 5), 0, NULL);
        size_t before = json_object_size(ch);
        const char *k;
        void *tmp;
        json_t *v;
        json_object_foreach_safe(ch, tmp, k, v)
        {
            json_t *f = bundle_item(fields, k);
            if (f && perm_field(&d, k) == FIELD_HIDDEN) {
                json_object_del(ch, k);
            } else if (f && !strcmp(jstr(json_object_get(f, "type")), "subform")) {
                hide_row_fields(&d, k, json_array_get(v, 0));
                hide_row_fields(&d, k, json_array_get(v, 1));
            }
        }
        if (before && !json_object_size(ch) && !strcmp(PQgetvalue(h, i, 4), "update") && PQgetisnull(h, i, 8) &&
            PQgetisnull(h, i, 9)) {   /* an update of hidden fields only: not even that it happened */
            json_decref(ch);
            continue;
        }
        json_t *user = PQgetisnull(h, i, 2) ? json_null()
                                            : json_pack("{s:I, s:s}", "id", (json_int_t)strtoll(PQgetvalue(h, i, 2), NULL, 10),
                                                        "name", PQgetvalue(h, i, 3));
        json_t *item = json_pack("{s:s, s:o, s:s, s:o}", "at", PQgetvalue(h, i, 1), "user", user, "action",
                                 PQgetvalue(h, i, 4), "changes", ch ? ch : json_object());
        static const char *const extra[] = {"from", "to", "transition", "comment"};
        for (int k2 = 0; k2 < 4; k2++)
            json_object_set_new(item, extra[k2], PQgetisnull(h, i, 6 + k2) ? json_null() : json_string(PQgetvalue(h, i, 6 + k2)));
        json_array_append_new(items, item);
    }
    perm_free(&d);
    json_t *body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
    if (PQntuples(h) > limit)
        json_object_set_new(body, "next_cursor", json_string(PQgetvalue(h, (int)limit - 1, 0)));
    ctx_json(c, 200, body);
}
