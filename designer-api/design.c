/* design.c - drafts, publishing, versions (see design.h). */
#include "design.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "form/ddl.h"
#include "model/validate.h"
#include "rule/sandbox.h"
#include "store/seed.h"

static bool fail(loom_err *e, loom_code code, const char *message, const char *path)
{
    e->code = code;
    e->message = message;
    e->path = path;
    return false;
}

/* The physical schema name of an app. */
static void schema_of(const char *app, char out[DDL_NAME_MAX + 1])
{
    char tmp[128];
    snprintf(tmp, sizeof tmp, "app_%s", app);
    ddl_physical_name(tmp, out);
}

static db_stmt lock_app = {.sql = "SELECT published_version, draft FROM loom.apps WHERE id = $1 FOR UPDATE"};
static db_stmt insert_app = {.sql = "INSERT INTO loom.apps (id, schema_name, draft) VALUES ($1, $2, $3)"};
static db_stmt update_draft = {.sql = "UPDATE loom.apps SET draft = $2, updated_at = now() WHERE id = $1"};

bool design_save_draft(db *d, arena *a, json_t *bundle, bool create_only, bool *out_created, loom_err *e)
{
    const char *app = json_string_value(json_object_get(json_object_get(bundle, "app"), "id"));
    if (!app || !model_is_id(app))   /* it names a schema: vetted before anything else */
        return fail(e, LOOM_VALIDATION_FAILED, "app.id must match ^[a-z][a-z0-9_]{0,47}$", "/app/id");
    char *text = json_dumps(bundle, JSON_COMPACT);
    const char *t = arena_strdup(a, text);
    free(text);
    const char *p1[] = {app};
    PGresult *r = db_query(d, a, &lock_app, 1, p1, e);
    if (!r)
        return false;
    *out_created = PQntuples(r) == 0;
    if (!*out_created && create_only)
        return fail(e, LOOM_CONFLICT, "an app with this id exists", "/app/id");
    char schema[DDL_NAME_MAX + 1];
    schema_of(app, schema);
    const char *p3[] = {app, schema, t};
    if (*out_created)
        return db_query(d, a, &insert_app, 3, p3, e) != NULL;
    const char *p2[] = {app, t};
    return db_query(d, a, &update_draft, 2, p2, e) != NULL;
}

static db_stmt get_draft = {.sql = "SELECT draft FROM loom.apps WHERE id = $1"};

const char *design_draft(db *d, arena *a, const char *app, loom_err *e)
{
    const char *p[] = {app};
    PGresult *r = db_query(d, a, &get_draft, 1, p, e);
    if (!r)
        return NULL;
    if (PQntuples(r) == 0) {
        fail(e, LOOM_NOT_FOUND, "no such app", NULL);
        return NULL;
    }
    return PQgetvalue(r, 0, 0);
}

static db_stmt version_text = {.sql =
    "SELECT version, bundle FROM loom.app_versions WHERE app = $1 AND ($2::int IS NULL OR version = $2::int) "
    "ORDER BY version DESC LIMIT 1"};

const char *design_version_text(db *d, arena *a, const char *app, const char *version, int *out_version,
                                loom_err *e)
{
    const char *p[] = {app, version};
    PGresult *r = db_query(d, a, &version_text, 2, p, e);
    if (!r)
        return NULL;
    if (PQntuples(r) == 0) {
        fail(e, LOOM_NOT_FOUND, version ? "no such version" : "the app has no published version", NULL);
        return NULL;
    }
    *out_version = atoi(PQgetvalue(r, 0, 0));
    return PQgetvalue(r, 0, 1);
}

static db_stmt insert_version = {.sql =
    "INSERT INTO loom.app_versions (app, version, bundle, catalog, steps, note) "
    "VALUES ($1, $2::int, $3, $4::jsonb, $5::jsonb, $6)"};
static db_stmt set_published = {.sql = "UPDATE loom.apps SET published_version = $2::int WHERE id = $1"};
static db_stmt notify_meta = {.sql = "SELECT pg_notify('loom_meta', $1)"};
static db_stmt version_full = {.sql =
    "SELECT bundle, catalog FROM loom.app_versions WHERE app = $1 AND version = $2::int"};

/* What publishing works from: the locked app, its draft (valid) and, when
 * published, that version's bundle and catalog. */
typedef struct pubstate {
    const char *published;     /* version number text, or NULL */
    const char *draft_text;
    json_t *draft, *pub, *catalog;
} pubstate;

static void pubstate_free(pubstate *s)
{
    json_decref(s->draft);
    json_decref(s->pub);
    json_decref(s->catalog);
}

static bool pubstate_load(db *d, arena *a, const char *app, pubstate *s, json_t **out_errors, loom_err *e)
{
    memset(s, 0, sizeof *s);
    *out_errors = NULL;
    /* a publish waits this long for a lock, then fails and changes nothing */
    const char *lock_ms = getenv("LOOM_LOCK_TIMEOUT_MS");
    char lock_sql[64];
    snprintf(lock_sql, sizeof lock_sql, "SET LOCAL lock_timeout = %d",
             lock_ms && atoi(lock_ms) > 0 ? atoi(lock_ms) : 5000);
    if (!db_exec(d, a, lock_sql, e))
        return false;
    const char *p1[] = {app};
    PGresult *r = db_query(d, a, &lock_app, 1, p1, e);
    if (!r)
        return false;
    if (PQntuples(r) == 0)
        return fail(e, LOOM_NOT_FOUND, "no such app", NULL);
    s->published = PQgetisnull(r, 0, 0) ? NULL : PQgetvalue(r, 0, 0);
    s->draft_text = PQgetvalue(r, 0, 1);
    s->draft = json_loads(s->draft_text, JSON_REJECT_DUPLICATES, NULL);
    if (!s->draft)
        return fail(e, LOOM_INTERNAL, "the stored draft is not JSON", NULL);
    json_t *problems = model_validate(s->draft);
    if (json_array_size(problems)) {
        *out_errors = problems;
        return fail(e, LOOM_INVALID_DEFINITION, "the draft is not valid", NULL);
    }
    json_decref(problems);
    if (s->published) {
        const char *p2[] = {app, s->published};
        PGresult *v = db_query(d, a, &version_full, 2, p2, e);
        if (!v || PQntuples(v) == 0)
            return v ? fail(e, LOOM_INTERNAL, "the published version is missing", NULL) : false;
        s->pub = json_loads(PQgetvalue(v, 0, 0), 0, NULL);
        s->catalog = json_loads(PQgetvalue(v, 0, 1), 0, NULL);
    }
    return true;
}

static json_t *plan_of(pubstate *s, bool allow_destructive)
{
    return s->published ? ddl_plan_change(s->pub, s->catalog, s->draft, atoi(s->published) + 1, allow_destructive)
                        : ddl_plan_create(s->draft);
}

/* Runs the plan's checks; fills "rows" and drops "sql". Returns how many
 * checks found rows, or -1 on a database error. */
static int run_checks(db *d, arena *a, json_t *plan, loom_err *e)
{
    if (!db_exec(d, a, DDL_CAST_HELPER, e))   /* checks and steps of lossy conversions use it */
        return -1;
    int failing = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(plan, "checks"), i, c)
    {
        PGresult *r = db_exec(d, a, json_string_value(json_object_get(c, "sql")), e);
        if (!r)
            return -1;
        long long rows = atoll(PQgetvalue(r, 0, 0));
        json_object_set_new(c, "rows", json_integer(rows));
        json_object_del(c, "sql");
        failing += rows > 0;
    }
    return failing;
}

json_t *design_plan(db *d, arena *a, const char *app, bool allow_destructive, json_t **out_errors, loom_err *e)
{
    pubstate s;
    json_t *result = NULL;
    if (pubstate_load(d, a, app, &s, out_errors, e)) {
        json_t *plan = plan_of(&s, allow_destructive);
        if (run_checks(d, a, plan, e) >= 0)
            result = json_pack("{s:O, s:O, s:O, s:O}", "steps", json_object_get(plan, "steps"), "destructive",
                               json_object_get(plan, "destructive"), "checks", json_object_get(plan, "checks"),
                               "unsupported", json_object_get(plan, "unsupported"));
        json_decref(plan);
    }
    pubstate_free(&s);
    return result;
}

/* Problems of a plan that cannot be published, as {path, code, message,
 * rows?}, and the answer's code: changes not supported yet
 * (LOOM_NOT_IMPLEMENTED); rows a new constraint rejects
 * (LOOM_VALIDATION_FAILED; allow_destructive does not help); rows a
 * destructive change would alter (LOOM_DESTRUCTIVE_CHANGE, unless
 * allow_destructive). Empty when the plan can go ahead. */
static json_t *plan_problems(json_t *plan, bool allow_destructive, loom_code *out_code)
{
    json_t *errors = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(plan, "unsupported"), i, x)
        json_array_append_new(errors, json_pack("{s:s, s:s, s:s+++}", "path", "", "code", "not_implemented", "message",
                                                json_string_value(json_object_get(x, "form")), ".",
                                                json_string_value(json_object_get(x, "field")), ": not yet supported"));
    *out_code = LOOM_NOT_IMPLEMENTED;
    for (int pass = 0; pass < 2 && !json_array_size(errors); pass++) {
        *out_code = pass == 0 ? LOOM_VALIDATION_FAILED : LOOM_DESTRUCTIVE_CHANGE;
        json_array_foreach(json_object_get(plan, "checks"), i, x)
        {
            long long rows = json_integer_value(json_object_get(x, "rows"));
            const char *problem = json_string_value(json_object_get(x, "problem"));
            bool destructive = !strcmp(problem, "destructive");
            if (rows == 0 || destructive != (pass == 1) || (destructive && allow_destructive))
                continue;
            const char *field = json_string_value(json_object_get(x, "field"));
            char msg[256];
            snprintf(msg, sizeof msg, "%s.%s: %lld existing row%s %s (%s)", json_string_value(json_object_get(x, "form")),
                     field ? field : "", rows, rows == 1 ? "" : "s", destructive ? "would change" : "would fail",
                     problem);
            json_array_append_new(errors, json_pack("{s:s, s:s, s:s, s:I}", "path", "", "code", problem, "message",
                                                    msg, "rows", (json_int_t)rows));
        }
    }
    return errors;
}

long design_load_data(db *d, arena *a, const char *app, int version, json_t *bundle, json_t *catalog,
                      json_t **out_errors, loom_err *e)
{
    json_t *data = json_object_get(bundle, "data");
    if (!json_object_size(data))
        return 0;
    /* seed data loads only into an app with no records */
    buf sql = {0};
    buf_puts(&sql, "SELECT ");
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(bundle, "forms"), i, f)
    {
        buf_puts(&sql, i ? " OR EXISTS (SELECT 1 FROM " : "EXISTS (SELECT 1 FROM ");
        ddl_quote(&sql, json_string_value(json_object_get(catalog, "schema")));
        buf_puts(&sql, ".");
        ddl_quote(&sql, json_string_value(json_object_get(f, "id")));
        buf_puts(&sql, ")");
    }
    PGresult *any = i ? db_exec(d, a, sql.data, e) : NULL;
    buf_free(&sql);
    if (i && !any)
        return -1;
    if (any && *PQgetvalue(any, 0, 0) == 't')
        return 0;
    const char *tz = json_string_value(json_object_get(json_object_get(bundle, "app"), "timezone"));
    filter_ctx fc = {.bundle = bundle, .schema = json_string_value(json_object_get(catalog, "schema")), .admin = true,
                     .system = true, .me = 0, .timezone = tz ? tz : "UTC"};
    sandbox *sb = sandbox_new(NULL);
    write_ctx w = {.fc = &fc, .catalog = catalog, .db = d, .a = a, .sb = sb, .app = app, .version = version,
                   .locale = json_string_value(json_array_get(json_object_get(json_object_get(bundle, "app"), "locales"), 0))};
    json_t *errors = json_array();
    write_result dbf;
    long n = seed_load(&w, data, errors, &dbf);
    sandbox_free(sb);
    if (n >= 0) {
        json_decref(errors);
        return n;
    }
    if (dbf.from_db) {
        *e = dbf.db;
        json_decref(errors);
    } else {
        *out_errors = errors;
        fail(e, LOOM_VALIDATION_FAILED, "the seed data is not valid", NULL);
    }
    return -1;
}

long design_load_published_data(db *d, arena *a, const char *app, json_t **out_errors, loom_err *e)
{
    static db_stmt latest = {.sql = "SELECT v.version, v.bundle, v.catalog::text FROM loom.apps a JOIN loom.app_versions v "
                                    "ON v.app = a.id AND v.version = a.published_version WHERE a.id = $1"};
    const char *p[] = {app};
    PGresult *r = db_query(d, a, &latest, 1, p, e);
    if (!r)
        return -1;
    if (PQntuples(r) == 0) {
        fail(e, LOOM_NOT_FOUND, "the app has no published version", NULL);
        return -1;
    }
    json_t *bundle = json_loads(PQgetvalue(r, 0, 1), 0, NULL), *catalog = json_loads(PQgetvalue(r, 0, 2), 0, NULL);
    long n = design_load_data(d, a, app, atoi(PQgetvalue(r, 0, 0)), bundle, catalog, out_errors, e);
    json_decref(bundle);
    json_decref(catalog);
    return n;
}

json_t *design_publish(db *d, arena *a, const char *app, const char *note, bool allow_destructive,
                       design_progress_fn progress, void *udata, json_t **out_errors, loom_err *e)
{
    pubstate s;
    json_t *result = NULL, *plan = NULL;
    if (!db_no_timeout(d, a, e) || !pubstate_load(d, a, app, &s, out_errors, e))   /* DDL on big tables takes long */
        goto out;
    plan = plan_of(&s, allow_destructive);
    if (s.pub && json_equal(s.pub, s.draft) && !json_array_size(json_object_get(plan, "steps"))) {
        /* the same definition, and nothing this engine would make that the database lacks */
        result = json_pack("{s:i, s:[], s:[], s:b}", "version", atoi(s.published), "steps", "destructive", "unchanged", true);
        goto out;
    }
    if (run_checks(d, a, plan, e) < 0)
        goto out;
    loom_code code;
    json_t *problems = plan_problems(plan, allow_destructive, &code);
    if (json_array_size(problems)) {
        *out_errors = problems;
        fail(e, code,
             code == LOOM_NOT_IMPLEMENTED      ? "the draft changes something publishing cannot change yet"
             : code == LOOM_DESTRUCTIVE_CHANGE ? "the change would alter existing values: publish with allow_destructive"
                                               : "existing records would fail the new definition",
             NULL);
        goto out;
    }
    json_decref(problems);
    json_t *steps = json_object_get(plan, "steps");
    size_t n = json_array_size(steps), i;
    json_t *step;
    json_array_foreach(steps, i, step)
    {
        if (progress)
            progress(udata, i + 1, n, step);
        if (!db_exec(d, a, json_string_value(json_object_get(step, "sql")), e))
            goto out;
    }
    int version = s.published ? atoi(s.published) + 1 : 1;
    char *catalog = json_dumps(json_object_get(plan, "catalog"), JSON_COMPACT);
    char *steps_text = json_dumps(steps, JSON_COMPACT);
    const char *vtext = arena_printf(a, "%d", version);
    const char *pv[] = {app, vtext, s.draft_text, catalog, steps_text, note};
    const char *pn[] = {arena_printf(a, "%s:%d", app, version)};
    bool ok = db_query(d, a, &insert_version, 6, pv, e) && db_query(d, a, &set_published, 2, pv, e) &&
              db_query(d, a, &notify_meta, 1, pn, e);
    free(catalog);
    free(steps_text);
    /* seed data loads on the first publish, in its transaction */
    long seeded = ok && version == 1
                      ? design_load_data(d, a, app, version, s.draft, json_object_get(plan, "catalog"), out_errors, e)
                      : 0;
    if (ok && seeded >= 0) {
        result = json_pack("{s:i, s:O, s:O}", "version", version, "steps", steps, "destructive",
                           json_object_get(plan, "destructive"));
        if (version == 1)   /* "seeded" only when this publish loaded the seed data */
            json_object_set_new(result, "seeded", json_integer(seeded));
    }
out:
    json_decref(plan);
    pubstate_free(&s);
    return result;
}

json_t *design_rollback(db *d, arena *a, const char *app, int version, bool allow_destructive, json_t **out_errors,
                        loom_err *e)
{
    *out_errors = NULL;
    int v;
    const char *text = design_version_text(d, a, app, arena_printf(a, "%d", version), &v, e);
    if (!text)
        return NULL;
    const char *p[] = {app, text};
    if (!db_query(d, a, &update_draft, 2, p, e))
        return NULL;
    return design_publish(d, a, app, arena_printf(a, "rollback to version %d", version), allow_destructive, NULL,
                          NULL, out_errors, e);
}

static db_stmt versions = {.sql =
    "SELECT version, to_char(published_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), note, "
    "jsonb_array_length(steps) FROM loom.app_versions WHERE app = $1 ORDER BY version DESC"};
static db_stmt app_exists = {.sql = "SELECT 1 FROM loom.apps WHERE id = $1"};

json_t *design_versions(db *d, arena *a, const char *app, loom_err *e)
{
    const char *p[] = {app};
    PGresult *x = db_query(d, a, &app_exists, 1, p, e);
    if (!x)
        return NULL;
    if (PQntuples(x) == 0) {
        fail(e, LOOM_NOT_FOUND, "no such app", NULL);
        return NULL;
    }
    PGresult *r = db_query(d, a, &versions, 1, p, e);
    if (!r)
        return NULL;
    json_t *items = json_array();
    for (int i = 0; i < PQntuples(r); i++)
        json_array_append_new(items, json_pack("{s:i, s:s, s:o, s:i}", "version", atoi(PQgetvalue(r, i, 0)),
                                               "published_at", PQgetvalue(r, i, 1), "note",
                                               PQgetisnull(r, i, 2) ? json_null() : json_string(PQgetvalue(r, i, 2)),
                                               "steps", atoi(PQgetvalue(r, i, 3))));
    return items;
}

static db_stmt list = {.sql =
    "SELECT id, draft, published_version, "
    "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM loom.apps ORDER BY id"};

json_t *design_list(db *d, arena *a, json_t *only, loom_err *e)
{
    PGresult *r = db_query(d, a, &list, 0, NULL, e);
    if (!r)
        return NULL;
    json_t *items = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        const char *id = PQgetvalue(r, i, 0);
        if (only && !json_object_get(only, id))
            continue;
        json_t *draft = json_loads(PQgetvalue(r, i, 1), 0, NULL);
        json_t *label = json_object_get(json_object_get(draft, "app"), "label");
        json_array_append_new(items, json_pack("{s:s, s:O, s:o, s:s}", "id", id, "label", label ? label : json_null(),
                                               "published_version",
                                               PQgetisnull(r, i, 2) ? json_null() : json_integer(atoi(PQgetvalue(r, i, 2))),
                                               "updated_at", PQgetvalue(r, i, 3)));
        json_decref(draft);
    }
    return items;
}

static db_stmt delete_app = {.sql = "WITH h AS (DELETE FROM loom.history WHERE app = $1) "
                                   "DELETE FROM loom.apps WHERE id = $1 RETURNING schema_name"};

bool design_delete(db *d, arena *a, const char *app, loom_err *e)
{
    const char *p[] = {app};
    PGresult *r = db_query(d, a, &delete_app, 1, p, e);
    if (!r)
        return false;
    if (PQntuples(r) == 0)
        return fail(e, LOOM_NOT_FOUND, "no such app", NULL);
    buf sql = {0};
    buf_puts(&sql, "DROP SCHEMA IF EXISTS ");
    ddl_quote(&sql, PQgetvalue(r, 0, 0));
    buf_puts(&sql, " CASCADE");
    bool ok = db_exec(d, a, sql.data, e) != NULL;
    buf_free(&sql);
    /* every server lets go of the app (version 0: none) */
    const char *pn[] = {arena_printf(a, "%s:0", app)};
    return ok && db_query(d, a, &notify_meta, 1, pn, e) != NULL;
}
