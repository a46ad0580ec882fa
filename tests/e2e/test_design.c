/* test_design.c - the designer API over HTTP against a running server: who
 * may design what, the draft -> validate -> publish cycle, versions and
 * export, parts of a draft, import with publish, deleting an app. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static h_server srv;
static char *url, *admin, *dana, *eve;   /* dana: platform designer; eve: no roles */

static h_resp send(const char *method, const char *path, const char *token, const char *body)
{
    return h_req(srv.port, method, path, token, body);
}

static char *make_user(const char *name, const char *role)
{
    char body[256];
    snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"%s-password\"%s}", name, name,
             role ? ",\"platform_roles\":[\"designer\"]" : "");
    h_resp r = send("POST", "/api/admin/users", admin, body);
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    char pw[64];
    snprintf(pw, sizeof pw, "%s-password", name);
    return h_login(srv.port, name, pw);
}

static int setup(void **state)
{
    (void)state;
    url = h_fresh_db("loomtest_design");
    const char *args[] = {"--workers", "2", NULL};
    if (!h_server_start(&srv, url, args, NULL))
        return -1;
    admin = h_login(srv.port, "admin", H_ADMIN_PASSWORD);
    dana = make_user("dana", "designer");
    eve = make_user("eve", NULL);
    return admin && dana && eve ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int st = h_server_stop(&srv);
    free(admin);
    free(dana);
    free(eve);
    free(url);
    return st == 0 ? 0 : -1;
}

static const char *shop =
    "{\"format\": \"loom.app/1\", \"app\": {\"id\": \"shop\", \"label\": {\"zh-CN\": \"商店\", \"en\": \"Shop\"}, "
    "\"roles\": [{\"id\": \"clerk\"}]}, "
    "\"forms\": [{\"id\": \"item\", \"fields\": [{\"id\": \"name\", \"type\": \"text\", \"required\": true}, "
    "{\"id\": \"price\", \"type\": \"money\"}]}]}";

static void test_who_may_design(void **state)
{
    (void)state;
    h_resp r = send("POST", "/api/design/apps", eve, shop);
    assert_int_equal(r.status, 403);
    h_resp_free(&r);
    r = send("POST", "/api/design/apps", dana, shop);
    assert_int_equal(r.status, 201);
    assert_true(json_is_true(json_object_get(r.json, "created")));
    assert_true(json_is_true(json_object_get(r.json, "valid")));
    h_resp_free(&r);
    /* the creator became the app's designer */
    r = send("GET", "/api/me", dana, NULL);
    json_t *roles = json_object_get(json_object_get(r.json, "roles"), "shop");
    assert_string_equal(json_string_value(json_array_get(roles, 0)), "designer");
    h_resp_free(&r);
    /* visible to its designer and to admins only */
    r = send("GET", "/api/design/apps", dana, NULL);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);
    h_resp_free(&r);
    r = send("GET", "/api/design/apps", eve, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 0);
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/shop", eve, NULL);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/shop", admin, NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    /* the same id again */
    r = send("POST", "/api/design/apps", dana, shop);
    assert_int_equal(r.status, 409);
    h_resp_free(&r);
    /* hostile bodies */
    r = send("POST", "/api/design/apps", dana, "{\"app\": {\"id\": \"x\"}, \"app\": {}}");
    assert_int_equal(r.status, 400);
    assert_string_equal(h_code(&r), "bad_json");
    h_resp_free(&r);
    r = send("POST", "/api/design/apps", dana, "{\"format\": \"loom.app/1\", \"app\": {\"id\": \"x\\\"; DROP SCHEMA loom --\"}}");
    assert_int_equal(r.status, 422);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "path")), "/app/id");
    h_resp_free(&r);
}

static void test_draft_validate_publish(void **state)
{
    (void)state;
    /* the draft keeps its key order */
    h_resp r = send("GET", "/api/design/apps/shop", dana, NULL);
    assert_int_equal(r.status, 200);
    assert_true(strstr(r.body, "\"format\"") < strstr(r.body, "\"app\""));
    h_resp_free(&r);
    /* a broken form: saved (a work in progress), reported, not publishable */
    const char *broken = "{\"id\": \"order\", \"fields\": [{\"id\": \"item\", \"type\": \"ref\", \"form\": \"ghost\"}]}";
    r = send("PUT", "/api/design/apps/shop/forms/order", dana, broken);
    assert_int_equal(r.status, 201);
    assert_false(json_is_true(json_object_get(r.json, "valid")));
    h_resp_free(&r);
    r = send("POST", "/api/design/apps/shop/validate", dana, NULL);
    assert_int_equal(r.status, 200);
    assert_false(json_is_true(json_object_get(r.json, "valid")));
    json_t *e0 = json_array_get(json_object_get(r.json, "errors"), 0);
    assert_string_equal(json_string_value(json_object_get(e0, "path")), "/forms/1/fields/0/form");
    assert_string_equal(json_string_value(json_object_get(e0, "code")), "unknown_form");
    h_resp_free(&r);
    r = send("POST", "/api/design/apps/shop/publish", dana, "{\"note\": \"first\"}");
    assert_int_equal(r.status, 422);
    assert_string_equal(h_code(&r), "invalid_definition");
    assert_true(json_array_size(json_object_get(r.json, "errors")) >= 1);
    h_resp_free(&r);
    char *n = h_sql_value(url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'app_shop'");
    assert_string_equal(n, "0");
    free(n);
    /* fixed: publish creates the tables */
    r = send("PUT", "/api/design/apps/shop/forms/order", dana,
             "{\"id\": \"order\", \"fields\": [{\"id\": \"item\", \"type\": \"ref\", \"form\": \"item\"}, "
             "{\"id\": \"qty\", \"type\": \"integer\", \"min\": 1}]}");
    assert_int_equal(r.status, 200);
    assert_true(json_is_true(json_object_get(r.json, "valid")));
    h_resp_free(&r);
    r = send("POST", "/api/design/apps/shop/publish", dana, "{\"note\": \"first\"}");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 1);
    assert_true(json_array_size(json_object_get(r.json, "steps")) > 3);
    h_resp_free(&r);
    n = h_sql_value(url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'app_shop'");
    assert_string_equal(n, "2");
    free(n);
    /* versions and export */
    r = send("GET", "/api/design/apps/shop/versions", dana, NULL);
    json_t *v0 = json_array_get(json_object_get(r.json, "items"), 0);
    assert_int_equal(json_integer_value(json_object_get(v0, "version")), 1);
    assert_string_equal(json_string_value(json_object_get(v0, "note")), "first");
    h_resp_free(&r);
    h_resp a = send("GET", "/api/design/apps/shop/versions/1", dana, NULL);
    h_resp b = send("GET", "/api/design/apps/shop/export", dana, NULL);
    h_resp d = send("GET", "/api/design/apps/shop", dana, NULL);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, b.body);
    assert_string_equal(a.body, d.body);   /* the published bundle is the draft, text for text */
    h_resp_free(&a);
    h_resp_free(&b);
    h_resp_free(&d);
    r = send("GET", "/api/design/apps/shop/versions/2", dana, NULL);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    /* publishing the same again: nothing to do */
    r = send("POST", "/api/design/apps/shop/publish", dana, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "steps")), 0);
    h_resp_free(&r);
    /* a change to a published app: not yet, and nothing changes */
    r = send("DELETE", "/api/design/apps/shop/forms/order", dana, NULL);
    assert_int_equal(r.status, 204);
    h_resp_free(&r);
    r = send("POST", "/api/design/apps/shop/publish", dana, NULL);
    assert_int_equal(r.status, 501);
    assert_string_equal(h_code(&r), "not_implemented");
    h_resp_free(&r);
    n = h_sql_value(url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'app_shop'");
    assert_string_equal(n, "2");
    free(n);
}

static void test_parts_of_a_draft(void **state)
{
    (void)state;
    h_resp r = send("GET", "/api/design/apps/shop/forms/item", dana, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "id")), "item");
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/shop/forms/nope", dana, NULL);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/shop/widgets/x", dana, NULL);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    r = send("PUT", "/api/design/apps/shop/forms/item", dana, "{\"id\": \"other\", \"fields\": []}");
    assert_int_equal(r.status, 422);
    h_resp_free(&r);
    r = send("PUT", "/api/design/apps/shop/permissions", dana, "{\"item\": {\"ghost\": {\"read\": \"all\"}}}");
    assert_int_equal(r.status, 200);
    assert_false(json_is_true(json_object_get(r.json, "valid")));
    h_resp_free(&r);
    r = send("PUT", "/api/design/apps/shop/permissions", dana, "{\"item\": {\"clerk\": {\"read\": \"all\"}}}");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/shop/permissions", dana, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(r.json, "item"), "clerk"), "read")), "all");
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/shop/settings", dana, NULL);
    assert_string_equal(json_string_value(json_object_get(r.json, "id")), "shop");
    h_resp_free(&r);
    r = send("PUT", "/api/design/apps/shop/settings", dana, "{\"id\": \"renamed\", \"label\": \"X\"}");
    assert_int_equal(r.status, 422);
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/shop/webhooks", eve, NULL);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
}

static void test_import_and_delete(void **state)
{
    (void)state;
    const char *crm = "{\"format\": \"loom.app/1\", \"app\": {\"id\": \"crm\", \"label\": \"CRM\"}, "
                      "\"forms\": [{\"id\": \"account\", \"fields\": [{\"id\": \"name\", \"type\": \"text\", \"unique\": true}]}]}";
    h_resp r = send("POST", "/api/design/import?publish=true", admin, crm);
    assert_int_equal(r.status, 201);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 1);
    h_resp_free(&r);
    /* an invalid bundle with publish: nothing stored */
    r = send("POST", "/api/design/import?publish=true", admin,
             "{\"format\": \"loom.app/1\", \"app\": {\"id\": \"bad\", \"label\": \"B\"}, \"forms\": [{\"id\": \"f\"}]}");
    assert_int_equal(r.status, 422);
    h_resp_free(&r);
    char *n = h_sql_value(url, "SELECT count(*) FROM loom.apps WHERE id = 'bad'");
    assert_string_equal(n, "0");
    free(n);
    /* delete needs its confirmation */
    r = send("DELETE", "/api/design/apps/crm", admin, NULL);
    assert_int_equal(r.status, 400);
    h_resp_free(&r);
    r = send("DELETE", "/api/design/apps/crm?confirm=crm", dana, NULL);
    assert_int_equal(r.status, 404);   /* dana does not design crm */
    h_resp_free(&r);
    r = send("DELETE", "/api/design/apps/crm?confirm=crm", admin, NULL);
    assert_int_equal(r.status, 204);
    h_resp_free(&r);
    n = h_sql_value(url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'app_crm'");
    assert_string_equal(n, "0");
    free(n);
    r = send("GET", "/api/design/apps/crm", admin, NULL);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_who_may_design),
        cmocka_unit_test(test_draft_validate_publish),
        cmocka_unit_test(test_parts_of_a_draft),
        cmocka_unit_test(test_import_and_delete),
    };
    return cmocka_run_group_tests_name("e2e_design", tests, setup, teardown);
}
