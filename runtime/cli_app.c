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
#include "design.h"
#include "handlers.h"
#include "model/bundle.h"
#include "model/validate.h"
#include "perm/perm.h"
#include "store/db.h"
#include "store/migrate.h"

static int usage(void)
{
    fprintf(stderr, "usage: loom app check PATH\n"
                    "       loom app import PATH [--publish [--data]] [--db URL] [--data-dir DIR]\n"
                    "       loom app export APP [-o FILE|DIR] [--version N] [--db URL] [--data-dir DIR]\n"
                    "       loom app list [--db URL] [--data-dir DIR]\n"
                    "       loom app seed APP --spec FILE [--scale N] [--seed N] [--if-empty] [--db URL] [--data-dir DIR]\n");
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
        json_t *warnings = perm_warnings(bundle), *w;
        size_t i;
        json_array_foreach(warnings, i, w)
        printf("%s: warning: %s: %s\n", json_string_value(json_object_get(w, "path")),
               json_string_value(json_object_get(w, "code")), json_string_value(json_object_get(w, "message")));
        json_decref(warnings);
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
    /* the first admin too, as `loom serve` would: a command may be the database's first start */
    if (!c || store_migrate(c, err, sizeof err) < 0 || !auth_bootstrap_admin(c, err, sizeof err)) {
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

static void progress_cb(void *udata, size_t step, size_t total, json_t *s)
{
    (void)udata;
    const char *field = json_string_value(json_object_get(s, "field"));
    printf("[%zu/%zu] %s %s%s%s\n", step, total, json_string_value(json_object_get(s, "op")),
           json_string_value(json_object_get(s, "form")), field ? "." : "", field ? field : "");
    fflush(stdout);
}

static int app_import(int argc, char **argv)
{
    const char *path = NULL;
    bool publish = false, data = false;
    cli_db_opts o = {0};
    for (int i = 0; i < argc; i++) {
        if (cli_db_option(argc, argv, &i, &o))
            continue;
        if (!strcmp(argv[i], "--publish"))
            publish = true;
        else if (!strcmp(argv[i], "--data"))
            data = true;
        else if (!path && argv[i][0] != '-')
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
    arena *a = arena_new();
    int status = 1;
    db *d = open_db(&o, a);
    if (!d)
        goto out;
    loom_err e = {0};
    bool created;
    bool ok = design_save_draft(d, a, bundle, false, &created, &e);
    if (ok && publish) {
        json_t *errors = NULL;
        json_t *res = design_publish(d, a, app, "imported", false, progress_cb, NULL, &errors, &e);
        ok = res != NULL;
        print_problems(errors);
        long seeded = res ? (long)json_integer_value(json_object_get(res, "seeded")) : 0;
        if (ok && data && !json_object_get(res, "seeded")) {   /* not a first publish: load it now, as asked */
            json_decref(errors);
            errors = NULL;
            seeded = design_load_published_data(d, a, app, &errors, &e);
            ok = seeded >= 0;
            print_problems(errors);
        }
        if (ok && seeded > 0)
            printf("app %s: %ld seed records loaded\n", app, seeded);
        long long version = res ? (long long)json_integer_value(json_object_get(res, "version")) : 0;
        if (json_is_true(json_object_get(res, "unchanged")))
            printf("app %s: version %lld is already published with this definition; nothing to do\n", app, version);
        else if (res)
            printf("app %s: published version %lld%s\n", app, version,
                   json_array_size(json_object_get(res, "steps")) ? "" : " (no table changes)");
        json_decref(res);
        json_decref(errors);
    } else if (ok) {
        printf("app %s: draft saved%s\n", app, data ? " (--data loads with --publish)" : "");
    }
    if (ok && db_commit(d, a, &e)) {
        status = 0;
    } else {
        fprintf(stderr, "loom: import failed, nothing was changed: %s\n", e.message ? e.message : "database error");
        db_rollback(d);
    }
    db_free(d);
out:
    arena_free(a);
    json_decref(bundle);
    return status;
}

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
    int v = 0;
    const char *text = design_version_text(d, a, app, version, &v, &e);
    char err[1024];
    json_t *b = text ? bundle_parse(text, strlen(text), err, sizeof err) : NULL;
    if (!text) {
        fprintf(stderr, "loom: app %s: %s\n", app, e.message ? e.message : "database error");
    } else if (!b) {
        fprintf(stderr, "loom: the stored bundle is not JSON: %s\n", err);
    } else if (!out) {
        char *pretty = json_dumps(b, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        puts(pretty);
        free(pretty);
        status = 0;
    } else if (strlen(out) > 5 && !strcmp(out + strlen(out) - 5, ".json")) {
        status = json_dump_file(b, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0 ? 0 : 1;
        if (status)
            fprintf(stderr, "loom: cannot write %s\n", out);
    } else if (bundle_write_dir(b, out, err, sizeof err)) {
        status = 0;
    } else {
        fprintf(stderr, "loom: %s\n", err);
    }
    if (!status && out)
        fprintf(stderr, "exported app %s version %d to %s\n", app, v, out);
    json_decref(b);
    db_rollback(d);
    db_free(d);
    arena_free(a);
    return status;
}

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
        json_t *apps = design_list(d, a, NULL, &e);
        if (apps) {
            printf("%-24s %-10s %s\n", "APP", "PUBLISHED", "UPDATED (UTC)");
            size_t i;
            json_t *x;
            json_array_foreach(apps, i, x)
            {
                json_t *pv = json_object_get(x, "published_version");
                printf("%-24s %-10s %s\n", json_string_value(json_object_get(x, "id")),
                       json_is_integer(pv) ? arena_printf(a, "%lld", (long long)json_integer_value(pv)) : "-",
                       json_string_value(json_object_get(x, "updated_at")));
            }
            json_decref(apps);
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
    if (argc >= 1 && strcmp(argv[0], "seed") == 0)
        return cli_seed(argc - 1, argv + 1);
    return usage();
}
