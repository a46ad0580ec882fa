/* record_routes.c - the runtime API's records: list and query (filter,
 * sort, keyset pages, projection, count) and one record, each through
 * engine/store/query inside the caller's permissions. Served from the
 * server's snapshot of the app's published version. */
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "meta.h"
#include "model/bundle.h"
#include "store/query.h"

/* What every record route needs: the app's snapshot and the caller as a
 * filter context. */
typedef struct rec_req {
    app_snapshot *snap;
    filter_ctx fc;
    const char *form;
} rec_req;

static void snapshot_release_cb(void *p)
{
    snapshot_release(p);
}

static void decref_cb(void *p)
{
    json_decref(p);
}

/* Resolves {app}/{form} for the caller; false after responding 404. */
static bool rec_begin(ctx *c, rec_req *r)
{
    const char *app = c->params[0];
    json_t *roles = app_caller_roles(c, app);
    r->snap = c->user->admin || json_array_size(roles) ? meta_get(server_meta(c->srv), app) : NULL;
    if (!r->snap) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such app", NULL);
        return false;
    }
    arena_defer(c->a, snapshot_release_cb, r->snap);
    const char *tz = json_string_value(json_object_get(json_object_get(r->snap->bundle, "app"), "timezone"));
    r->fc = (filter_ctx){.bundle = r->snap->bundle,
                         .schema = json_string_value(json_object_get(r->snap->catalog, "schema")),
                         .roles = roles,
                         .admin = c->user->admin,
                         .me = c->user->id,
                         .timezone = tz ? tz : "UTC"};
    r->form = c->params[1];
    return true;
}

static void problem_at(ctx *c, const filter_err *e)
{
    ctx_problem(c, e->code, e->message,
                json_pack("[{s:s, s:s, s:s}]", "path", e->path, "code", loom_code_name(e->code), "message", e->message));
}

static PGresult *run(ctx *c, const buf *sql, json_t *args)
{
    size_t n = json_array_size(args);
    const char **vals = arena_alloc(c->a, (n + 1) * sizeof *vals);
    for (size_t i = 0; i < n; i++)
        vals[i] = json_string_value(json_array_get(args, i));
    loom_err e = {0};
    PGresult *r = db_query_text(c->db, c->a, sql->data, (int)n, vals, &e);
    if (!r)
        ctx_db_fail(c, &e);
    return r;
}

/* Runs the page and responds {"items", "next_cursor", "total"?}. */
static void respond_page(ctx *c, rec_req *r, const query_spec *spec)
{
    query q;
    filter_err e;
    if (!query_list(&r->fc, r->form, spec, &q, &e)) {
        problem_at(c, &e);
        query_free(&q);
        return;
    }
    loom_err be = {0};
    if (spec->count && !db_begin_snapshot(c->db, c->a, &be)) {   /* the total and the page from one snapshot */
        ctx_db_fail(c, &be);
        query_free(&q);
        return;
    }
    PGresult *page = run(c, &q.sql, q.args);
    PGresult *count = page && spec->count ? run(c, &q.count_sql, q.count_args) : NULL;
    if (page && (!spec->count || count)) {
        char *next;
        json_t *items = query_items(&q, page, &next);
        json_t *body = json_pack("{s:o, s:s?}", "items", items, "next_cursor", next);
        if (!next)
            json_object_set_new(body, "next_cursor", json_null());
        if (count)
            json_object_set_new(body, "total", json_integer(strtoll(PQgetvalue(count, 0, 0), NULL, 10)));
        free(next);
        ctx_json(c, 200, body);
    }
    query_free(&q);
}

static bool bad(ctx *c, loom_code code, const char *path, const char *message)
{
    filter_err e = {.code = code};
    snprintf(e.path, sizeof e.path, "%s", path);
    snprintf(e.message, sizeof e.message, "%s", message);
    problem_at(c, &e);
    return false;
}

/* limit as text: digits only, 1 to 1000. */
static bool parse_limit(ctx *c, const char *s, long *out)
{
    char *end;
    long n = s ? strtol(s, &end, 10) : QUERY_DEFAULT_LIMIT;
    if (s && (!*s || *end || n < 1 || n > QUERY_MAX_LIMIT))
        return bad(c, LOOM_BAD_REQUEST, "/limit", "limit is a whole number from 1 to 1000");
    *out = n;
    return true;
}

void records_list(void *cp)
{
    ctx *c = cp;
    rec_req r;
    if (!rec_begin(c, &r))
        return;
    const char *query = c->req->query;
    const char *filter = query_param(c->a, query, "filter"), *count = query_param(c->a, query, "count");
    query_spec spec = {.sort = query_param(c->a, query, "sort"),
                       .fields = query_param(c->a, query, "fields"),
                       .cursor = query_param(c->a, query, "cursor")};
    if (!parse_limit(c, query_param(c->a, query, "limit"), &spec.limit))
        return;
    if (query_param(c->a, query, "expand")) {
        bad(c, LOOM_NOT_IMPLEMENTED, "/expand", "expand is not served yet");
        return;
    }
    if (count && strcmp(count, "true") && strcmp(count, "false")) {
        bad(c, LOOM_BAD_REQUEST, "/count", "count is true or false");
        return;
    }
    spec.count = count && !strcmp(count, "true");
    if (filter && *filter) {
        char err[200];
        spec.filter = bundle_parse(filter, strlen(filter), err, sizeof err);
        if (!spec.filter) {
            bad(c, LOOM_BAD_FILTER, "/filter", err);
            return;
        }
        arena_defer(c->a, decref_cb, spec.filter);
    }
    respond_page(c, &r, &spec);
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

void records_query(void *cp)
{
    ctx *c = cp;
    rec_req r;
    if (!rec_begin(c, &r))
        return;
    json_t *body = ctx_body_object(c);
    if (!body)
        return;
    if (json_object_get(body, "expand")) {
        bad(c, LOOM_NOT_IMPLEMENTED, "/expand", "expand is not served yet");
        return;
    }
    static const char *const known[] = {"filter", "sort", "limit", "cursor", "fields", "count"};
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
            bad(c, LOOM_BAD_REQUEST, path, "not a query key");
            return;
        }
    }
    query_spec spec = {.filter = json_object_get(body, "filter")};
    json_t *limit = json_object_get(body, "limit"), *count = json_object_get(body, "count"),
           *cursor = json_object_get(body, "cursor");
    if (limit && !(json_is_integer(limit) && json_integer_value(limit) >= 1 &&
                   json_integer_value(limit) <= QUERY_MAX_LIMIT)) {
        bad(c, LOOM_BAD_REQUEST, "/limit", "limit is a whole number from 1 to 1000");
        return;
    }
    if ((count && !json_is_boolean(count)) || (cursor && !json_is_string(cursor) && !json_is_null(cursor))) {
        bad(c, LOOM_BAD_REQUEST, count && !json_is_boolean(count) ? "/count" : "/cursor",
            count && !json_is_boolean(count) ? "count is true or false" : "cursor is text");
        return;
    }
    if (spec.filter && json_is_null(spec.filter))
        spec.filter = NULL;
    spec.limit = limit ? (long)json_integer_value(limit) : QUERY_DEFAULT_LIMIT;
    spec.count = json_is_true(count);
    spec.cursor = json_string_value(cursor);
    if (!names(c, body, "sort", &spec.sort) || !names(c, body, "fields", &spec.fields))
        return;
    respond_page(c, &r, &spec);
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
    if (!query_get(&r.fc, r.form, c->params[2], &q, &e)) {
        problem_at(c, &e);
        query_free(&q);
        return;
    }
    PGresult *res = run(c, &q.sql, q.args);
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
