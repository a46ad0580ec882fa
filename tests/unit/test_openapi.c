/* test_openapi.c - /openapi.json describes exactly the routes the server has:
 * every route is documented with its method, and every documented operation
 * is routed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <strings.h>
#include <string.h>

#include "server.h"

extern const char loom_openapi_json[];

static void test_document_is_openapi_31(void **state)
{
    (void)state;
    json_error_t err;
    json_t *doc = json_loads(loom_openapi_json, JSON_REJECT_DUPLICATES, &err);
    if (!doc)
        fail_msg("openapi.json: %s at line %d", err.text, err.line);
    assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
    assert_true(json_is_object(json_object_get(doc, "paths")));
    json_decref(doc);
}

static void test_routes_and_paths_agree(void **state)
{
    (void)state;
    json_t *doc = json_loads(loom_openapi_json, 0, NULL);
    json_t *paths = json_object_get(doc, "paths");
    int n;
    const route *routes = server_routes(&n);
    for (int i = 0; i < n; i++) {
        char method[16];
        size_t k = 0;
        for (; routes[i].method[k] && k < sizeof method - 1; k++)
            method[k] = (char)tolower((unsigned char)routes[i].method[k]);
        method[k] = '\0';
        if (!json_object_get(json_object_get(paths, routes[i].pattern), method))
            fail_msg("route %s %s is not in openapi.json", routes[i].method, routes[i].pattern);
    }
    const char *path;
    json_t *item;
    int documented = 0;
    json_object_foreach(paths, path, item)
    {
        const char *key;
        json_t *op;
        json_object_foreach(item, key, op)
        {
            if (strcmp(key, "parameters") == 0)
                continue;
            documented++;
            bool found = false;
            for (int i = 0; i < n && !found; i++)
                found = strcmp(routes[i].pattern, path) == 0 && strcasecmp(routes[i].method, key) == 0;
            if (!found)
                fail_msg("openapi.json documents %s %s, which is not routed", key, path);
        }
    }
    assert_int_equal(documented, n);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_document_is_openapi_31),
        cmocka_unit_test(test_routes_and_paths_agree),
    };
    return cmocka_run_group_tests_name("unit_openapi", tests, NULL, NULL);
}
