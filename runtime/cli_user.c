/* cli_user.c - `loom user add NAME --password-stdin [--admin] [--designer]
 * [--role APP:ROLE]...`: the same checks and insert as POST /api/admin/users. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "handlers.h"
#include "store/migrate.h"

static int usage(void)
{
    fprintf(stderr, "usage: loom user add NAME --password-stdin [--admin] [--designer] [--role APP:ROLE]...\n"
                    "                [--db URL] [--data-dir DIR]\n");
    return 2;
}

int cli_user(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[0], "add") != 0)
        return usage();
    json_t *body = json_pack("{s:s, s:[], s:{}}", "username", argv[1], "platform_roles", "roles");
    bool pw_stdin = false;
    cli_db_opts o = {0};
    for (int i = 2; i < argc; i++) {
        if (cli_db_option(argc, argv, &i, &o))
            continue;
        if (strcmp(argv[i], "--password-stdin") == 0) {
            pw_stdin = true;
        } else if (strcmp(argv[i], "--admin") == 0 || strcmp(argv[i], "--designer") == 0) {
            json_array_append_new(json_object_get(body, "platform_roles"), json_string(argv[i] + 2));
        } else if (strcmp(argv[i], "--role") == 0 && i + 1 < argc) {
            const char *spec = argv[++i];
            const char *colon = strchr(spec, ':');
            if (!colon || colon == spec || !colon[1]) {
                fprintf(stderr, "loom: --role takes APP:ROLE, not %s\n", spec);
                json_decref(body);
                return 2;
            }
            char app[128];
            snprintf(app, sizeof app, "%.*s", (int)(colon - spec), spec);
            json_t *roles = json_object_get(body, "roles");
            if (!json_object_get(roles, app))
                json_object_set_new(roles, app, json_array());
            json_array_append_new(json_object_get(roles, app), json_string(colon + 1));
        } else {
            json_decref(body);
            return usage();
        }
    }
    if (!pw_stdin) {
        fprintf(stderr, "loom: the password is read from standard input: pass --password-stdin\n");
        json_decref(body);
        return 2;
    }
    char pw[1100];
    if (!fgets(pw, sizeof pw, stdin))
        pw[0] = '\0';
    pw[strcspn(pw, "\r\n")] = '\0';
    json_object_set_new(body, "password", json_string(pw));

    int status = 1;
    json_t *errors = admin_user_check(body, true);
    if (json_array_size(errors)) {
        size_t i;
        json_t *e;
        json_array_foreach(errors, i, e)
        {
            fprintf(stderr, "%s: %s: %s\n", json_string_value(json_object_get(e, "path")),
                    json_string_value(json_object_get(e, "code")), json_string_value(json_object_get(e, "message")));
        }
        json_decref(errors);
        json_decref(body);
        return 1;
    }
    json_decref(errors);

    char conninfo[8192], err[1024];
    if (!cli_db_connect_info(&o, conninfo, sizeof conninfo)) {
        json_decref(body);
        return 1;
    }
    PGconn *c = db_connect_once(conninfo, err, sizeof err);
    if (!c || store_migrate(c, err, sizeof err) < 0) {
        fprintf(stderr, "loom: %s\n", err);
        if (c)
            PQfinish(c);
        json_decref(body);
        return 1;
    }
    PQfinish(c);

    db *d = db_new(conninfo);
    arena *a = arena_new();
    loom_err e = {0};
    json_t *user = NULL;
    if (db_ready(d) && db_begin(d, a, &e) && (user = admin_user_insert(d, a, body, &e)) && db_commit(d, a, &e)) {
        printf("created user %s (id %lld)\n", argv[1], (long long)json_integer_value(json_object_get(user, "id")));
        status = 0;
    } else if (e.code == LOOM_NOT_UNIQUE) {
        fprintf(stderr, "/username: not_unique: the username is taken\n");
    } else {
        fprintf(stderr, "loom: could not create the user: %s\n", e.message ? e.message : "database unreachable");
    }
    db_rollback(d);
    json_decref(user);
    arena_free(a);
    db_free(d);
    json_decref(body);
    return status;
}
