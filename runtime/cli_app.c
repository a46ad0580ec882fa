/* cli_app.c - `loom app ...`:
 *   check PATH                 validate a bundle offline; "path: code: message" per problem, exit 1 if any
 *   import PATH [--publish]    store the bundle as the app's draft; with --publish, create the app's
 *                              schema and record version 1, all in one transaction
 *   export APP [-o FILE|DIR] [--version N]
 *                              a published version (the latest by default) as JSON on standard
 *                              output, as one file (-o x.json) or in the directory layout (-o DIR)
 *   list                       the apps and their published versions */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "form/ddl.h"
#include "model/bundle.h"
#include "model/validate.h"
#include "store/db.h"
#include "store/migrate.h"

static int usage(void)
{
    fprintf(stderr, "usage: loom app check PATH\n"
                    "       loom app import PATH [--publish] [--db URL] [--data-dir DIR]\n"
                    "       loom app export APP [-o FILE|DIR] [--version N] [--db URL] [--data-dir DIR]\n"
                    "       loom app list [--db URL] [--data-dir DIR]\n");
    return 2;
}

/* Prints the problems of a bundle; returns how many there are. */
static size_t print_problems(json_t *problems)
{
    size_t i;
    json_t *p;
    json_array_foreach(problems, i, p)
    {
        printf("%s: %s: %s\n", json_string_value(json_object_get(p, "path")),
               json_string_value(json_object_get(p, "code")), json_string_value(json_object_get(p, "message")));
    }
    return json_array_size(problems);
}

static int app_check(const char *path)
{
    char err[1024];
    json_t *bundle = bundle_load(path, err, sizeof err);
    if (!bundle) {
        /* the file itself is unreadable or not JSON: its name is the path */
        const char *sep = strstr(err, ": ");
        printf("%.*s: bad_json: %s\n", sep ? (int)(sep - err) : 0, err, sep ? sep + 2 : err);
        return 1;
    }
    json_t *problems = model_validate(bundle);
    int status = print_problems(problems) ? 1 : 0;
    if (!status) {
        json_t *app = json_object_get(bundle, "app");
        printf("ok: app %s, %zu forms, %zu flows, %zu rules, %zu reports, %zu dashboards\n",
               json_string_value(json_object_get(app, "id")), json_array_size(json_object_get(bundle, "forms")),
               json_array_size(json_object_get(bundle, "flows")), json_array_size(json_object_get(bundle, "rules")),
               json_array_size(json_object_get(bundle, "reports")),
               json_array_size(json_object_get(bundle, "dashboards")));
    } else {
        fprintf(stderr, "%zu problem%s\n", json_array_size(problems), json_array_size(problems) == 1 ? "" : "s");
    }
    json_decref(problems);
    json_decref(bundle);
    return status;
}

/* Opens the database for an app command: migrated, in a transaction. */
static db *open_db(const cli_db_opts *o, arena *a)
{
    char conninfo[8192], err[1024];
    if (!cli_db_connect_info(o, conninfo, sizeof conninfo))
        return NULL;
    PGconn *c = db_connect_once(conninfo, err, sizeof err);
    if (!c || store_migrate(c, err, sizeof err) < 0) {
        fprintf(stderr, "loom: %s\n", err);
        if (c)
            PQfinish(c);
        return NULL;
    }
    PQfinish(c);
    db *d = db_new(conninfo);
    loom_err e = {0};
    if (!db_ready(d) || !db_begin(d, a, &e)) {
        fprintf(stderr, "loom: could not reach the database\n");
        db_free(d);
        return NULL;
    }
    return d;
}

static db_stmt lock_app = {.sql = "SELECT published_version FROM loom.apps WHERE id = $1 FOR UPDATE"};
static db_stmt insert_app = {.sql = "INSERT INTO loom.apps (id, schema_name, draft) VALUES ($1, $2, $3)"};
static db_stmt update_draft = {.sql = "UPDATE loom.apps SET draft = $2, updated_at = now() WHERE id = $1"};
static db_stmt published_bundle = {.sql = "SELECT bundle FROM loom.app_versions WHERE app = $1 AND version = $2::int"};
static db_stmt insert_version = {.sql =
    "INSERT INTO loom.app_versions (app, version, bundle, catalog, steps, note) VALUES ($1, 1, $2, $3, $4, $5)"};
static db_stmt set_published = {.sql = "UPDATE loom.apps SET published_version = 1 WHERE id = $1"};
static db_stmt notify_meta = {.sql = "SELECT pg_notify('loom_meta', $1)"};

/* Creates the schema of a new app and records version 1. */
static bool publish_new(db *d, arena *a, json_t *bundle, const char *app, const char *text, loom_err *e)
{
    json_t *plan = ddl_plan_create(bundle);
    json_t *steps = json_object_get(plan, "steps");
    size_t n = json_array_size(steps), i;
    json_t *step;
    bool ok = true;
    json_array_foreach(steps, i, step)
    {
        const char *field = json_string_value(json_object_get(step, "field"));
        printf("[%zu/%zu] %s %s%s%s\n", i + 1, n, json_string_value(json_object_get(step, "op")),
               json_string_value(json_object_get(step, "form")), field ? "." : "", field ? field : "");
        fflush(stdout);
        if (!db_exec(d, a, json_string_value(json_object_get(step, "sql")), e)) {
            ok = false;
            break;
        }
    }
    if (ok) {
        char *catalog = json_dumps(json_object_get(plan, "catalog"), JSON_COMPACT);
        char *steps_text = json_dumps(steps, JSON_COMPACT);
        const char *p[] = {app, text, catalog, steps_text, "imported"};
        ok = db_query(d, a, &insert_version, 5, p, e) && db_query(d, a, &set_published, 1, p, e);
        const char *note[] = {arena_printf(a, "%s:1", app)};
        ok = ok && db_query(d, a, &notify_meta, 1, note, e);
        free(catalog);
        free(steps_text);
    }
    json_decref(plan);
    return ok;
}

static int app_import(int argc, char **argv)
{
    const char *path = NULL;
    bool publish = false;
    cli_db_opts o = {0};
    for (int i = 0; i < argc; i++) {
        if (cli_db_option(argc, argv, &i, &o))
            continue;
        if (!strcmp(argv[i], "--publish"))
            publish = true;
        else if (!strcmp(argv[i], "--data")) {
            fprintf(stderr, "loom: --data is not available yet: seed data loads with the records engine\n");
            return 2;
        } else if (!path && argv[i][0] != '-')
            path = argv[i];
        else
            return usage();
    }
    if (!path)
        return usage();
    char err[1024];
    json_t *bundle = bundle_load(path, err, sizeof err);
    if (!bundle) {
        fprintf(stderr, "loom: %s\n", err);
        return 1;
    }
    json_t *problems = model_validate(bundle);
    size_t nproblems = print_problems(problems);
    json_decref(problems);
    if (nproblems) {
        fprintf(stderr, "loom: the bundle has %zu problem%s; nothing was imported\n", nproblems, nproblems == 1 ? "" : "s");
        json_decref(bundle);
        return 1;
    }
    const char *app = json_string_value(json_object_get(json_object_get(bundle, "app"), "id"));
    char *text = json_dumps(bundle, JSON_COMPACT);   /* key order as given */
    arena *a = arena_new();
    int status = 1;
    db *d = open_db(&o, a);
    if (!d)
        goto out;
    loom_err e = {0};
    const char *lock_ms = getenv("LOOM_LOCK_TIMEOUT_MS");
    char lock_sql[96];
    snprintf(lock_sql, sizeof lock_sql, "SET LOCAL lock_timeout = %d", lock_ms && atoi(lock_ms) > 0 ? atoi(lock_ms) : 5000);
    char schema[DDL_NAME_MAX + 1], tmp[128];
    snprintf(tmp, sizeof tmp, "app_%s", app);
    ddl_physical_name(tmp, schema);
    const char *p1[] = {app};
    PGresult *r;
    bool ok = db_exec(d, a, lock_sql, &e) && (r = db_query(d, a, &lock_app, 1, p1, &e));
    const char *published = ok && PQntuples(r) && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : NULL;
    if (ok && PQntuples(r) == 0) {
        const char *p[] = {app, schema, text};
        ok = db_query(d, a, &insert_app, 3, p, &e);
    } else if (ok) {
        const char *p[] = {app, text};
        ok = db_query(d, a, &update_draft, 2, p, &e);
    }
    if (ok && publish && published) {
        const char *p[] = {app, published};
        PGresult *pb = db_query(d, a, &published_bundle, 2, p, &e);
        json_t *was = pb && PQntuples(pb) ? json_loads(PQgetvalue(pb, 0, 0), 0, NULL) : NULL;
        ok = pb != NULL;
        if (ok && was && json_equal(was, bundle)) {
            printf("app %s: version %s is already published with this definition; nothing to do\n", app, published);
        } else if (ok) {
            fprintf(stderr, "loom: app %s is published (version %s); publishing changes to it is not available yet\n",
                    app, published);
            ok = false;
            e.code = LOOM_OK;
        }
        json_decref(was);
    } else if (ok && publish) {
        ok = publish_new(d, a, bundle, app, text, &e);
        if (ok)
            printf("app %s: published version 1 (schema %s)\n", app, schema);
    } else if (ok) {
        printf("app %s: draft saved%s\n", app, published ? "" : " (not published)");
    }
    if (ok && db_commit(d, a, &e)) {
        status = 0;
    } else {
        if (e.code != LOOM_OK)
            fprintf(stderr, "loom: import failed, nothing was changed: %s\n", e.message ? e.message : "database error");
        db_rollback(d);
    }
    db_free(d);
out:
    arena_free(a);
    free(text);
    json_decref(bundle);
    return status;
}

static db_stmt version_bundle = {.sql =
    "SELECT version, bundle FROM loom.app_versions WHERE app = $1 AND ($2::int IS NULL OR version = $2::int) "
    "ORDER BY version DESC LIMIT 1"};

static int app_export(int argc, char **argv)
{
    const char *app = NULL, *out = NULL, *version = NULL;
    cli_db_opts o = {0};
    for (int i = 0; i < argc; i++) {
        if (cli_db_option(argc, argv, &i, &o))
            continue;
        if (!strcmp(argv[i], "-o") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--version") && i + 1 < argc && atoi(argv[i + 1]) > 0)
            version = argv[++i];
        else if (!app && argv[i][0] != '-')
            app = argv[i];
        else
            return usage();
    }
    if (!app)
        return usage();
    arena *a = arena_new();
    db *d = open_db(&o, a);
    int status = 1;
    if (!d) {
        arena_free(a);
        return 1;
    }
    loom_err e = {0};
    const char *p[] = {app, version};
    PGresult *r = db_query(d, a, &version_bundle, 2, p, &e);
    if (!r) {
        fprintf(stderr, "loom: %s\n", e.message ? e.message : "database error");
    } else if (PQntuples(r) == 0) {
        fprintf(stderr, "loom: app %s has no published version%s%s\n", app, version ? " " : "", version ? version : "");
    } else {
        const char *text = PQgetvalue(r, 0, 1);
        size_t len = strlen(text);
        char err[1024];
        if (!out) {
            json_t *b = bundle_parse(text, len, err, sizeof err);
            char *pretty = b ? json_dumps(b, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
            if (pretty) {
                puts(pretty);
                status = 0;
            }
            free(pretty);
            json_decref(b);
        } else if (strlen(out) > 5 && !strcmp(out + strlen(out) - 5, ".json")) {
            json_t *b = bundle_parse(text, len, err, sizeof err);
            status = b && json_dump_file(b, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0 ? 0 : 1;
            if (status)
                fprintf(stderr, "loom: cannot write %s\n", out);
            json_decref(b);
        } else {
            json_t *b = bundle_parse(text, len, err, sizeof err);
            if (b && bundle_write_dir(b, out, err, sizeof err))
                status = 0;
            else
                fprintf(stderr, "loom: %s\n", err);
            json_decref(b);
        }
        if (!status && out)
            fprintf(stderr, "exported app %s version %s to %s\n", app, PQgetvalue(r, 0, 0), out);
    }
    db_rollback(d);
    db_free(d);
    arena_free(a);
    return status;
}

static db_stmt list_apps = {.sql =
    "SELECT id, coalesce(published_version::text, '-'), schema_name, "
    "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM loom.apps ORDER BY id"};

static int app_list(int argc, char **argv)
{
    cli_db_opts o = {0};
    for (int i = 0; i < argc; i++)
        if (!cli_db_option(argc, argv, &i, &o))
            return usage();
    arena *a = arena_new();
    db *d = open_db(&o, a);
    int status = 1;
    if (d) {
        loom_err e = {0};
        PGresult *r = db_query(d, a, &list_apps, 0, NULL, &e);
        if (r) {
            printf("%-24s %-10s %-28s %s\n", "APP", "PUBLISHED", "SCHEMA", "UPDATED (UTC)");
            for (int i = 0; i < PQntuples(r); i++)
                printf("%-24s %-10s %-28s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                       PQgetvalue(r, i, 3));
            status = 0;
        }
        db_rollback(d);
        db_free(d);
    }
    arena_free(a);
    return status;
}

int cli_app(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[0], "check") == 0)
        return app_check(argv[1]);
    if (argc >= 1 && strcmp(argv[0], "import") == 0)
        return app_import(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "export") == 0)
        return app_export(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "list") == 0)
        return app_list(argc - 1, argv + 1);
    return usage();
}
