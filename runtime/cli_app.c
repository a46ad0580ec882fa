/* cli_app.c - `loom app ...`. For now `loom app check PATH`: validates a
 * bundle file or directory offline (no database) and prints one
 * "path: code: message" line per problem, exiting 1 when there is any. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "model/bundle.h"
#include "model/validate.h"

static int usage(void)
{
    fprintf(stderr, "usage: loom app check PATH\n");
    return 2;
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
    size_t i;
    json_t *p;
    json_array_foreach(problems, i, p)
    {
        printf("%s: %s: %s\n", json_string_value(json_object_get(p, "path")),
               json_string_value(json_object_get(p, "code")), json_string_value(json_object_get(p, "message")));
    }
    int status = json_array_size(problems) ? 1 : 0;
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

int cli_app(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[0], "check") == 0)
        return app_check(argv[1]);
    return usage();
}
