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
    return h_user(srv.port, admin, name, role ? json_pack("{s:[s]}", "platform_roles", role) : NULL, NULL);
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
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "path")), "");
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
    assert_true(json_is_true(json_object_get(r.json, "unchanged")));
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 1);
    h_resp_free(&r);
}

static int rows_of(const char *sql)
{
    char *v = h_sql_value(url, sql);
    int n = v ? atoi(v) : -1;
    free(v);
    return n;
}

static h_resp publish(const char *body)
{
    return send("POST", "/api/design/apps/shop/publish", dana, body);
}

static void test_change_plans(void **state)
{
    (void)state;
    /* data in version 1 */
    assert_true(h_sql(url, "INSERT INTO app_shop.item (name, price) VALUES ('a', 1), ('a', 2), (NULL, 3)"));
    assert_true(h_sql(url, "INSERT INTO app_shop.\"order\" (item, qty) VALUES ((SELECT min(id) FROM app_shop.item), 5)"));

    /* removing a form: a soft drop, listed by the plan, data kept hidden */
    h_resp r = send("DELETE", "/api/design/apps/shop/forms/order", dana, NULL);
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/shop/plan", dana, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "destructive"), 0), "op")),
                        "soft_drop_table");
    h_resp_free(&r);
    r = publish("{\"note\": \"drop order\"}");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 2);
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT count(*) FROM app_shop._dropped_v2_order"), 1);
    assert_int_equal(rows_of("SELECT count(*) FROM pg_tables WHERE schemaname = 'app_shop' AND tablename = 'order'"), 0);

    /* re-adding it starts empty: old data is never revived */
    r = send("PUT", "/api/design/apps/shop/forms/order", dana,
             "{\"id\": \"order\", \"fields\": [{\"id\": \"item\", \"type\": \"ref\", \"form\": \"item\"}]}");
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 3);
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT count(*) FROM app_shop.\"order\""), 0);
    assert_int_equal(rows_of("SELECT count(*) FROM app_shop._dropped_v2_order"), 1);

    /* a new unique field on a table with rows: fine (all null) */
    const char *item_v4 = "{\"id\": \"item\", \"fields\": [{\"id\": \"name\", \"type\": \"text\"}, "
                          "{\"id\": \"price\", \"type\": \"money\"}, {\"id\": \"sku\", \"type\": \"text\", \"unique\": true}]}";
    r = send("PUT", "/api/design/apps/shop/forms/item", dana, item_v4);
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_false(h_sql(url, "INSERT INTO app_shop.item (sku) VALUES ('s1'), ('s1')"));

    /* a unique name where two rows share one: 422 with the count, nothing changed */
    r = send("PUT", "/api/design/apps/shop/forms/item", dana,
             "{\"id\": \"item\", \"fields\": [{\"id\": \"name\", \"type\": \"text\", \"unique\": true}, "
             "{\"id\": \"price\", \"type\": \"money\"}, {\"id\": \"sku\", \"type\": \"text\", \"unique\": true}]}");
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/shop/plan", dana, NULL);
    json_t *c0 = json_array_get(json_object_get(r.json, "checks"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "problem")), "not_unique");
    assert_int_equal(json_integer_value(json_object_get(c0, "rows")), 2);
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 422);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "rows")), 2);
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT published_version FROM loom.apps WHERE id = 'shop'"), 4);

    /* required where a row is empty: 422 */
    r = send("PUT", "/api/design/apps/shop/forms/item", dana,
             "{\"id\": \"item\", \"fields\": [{\"id\": \"name\", \"type\": \"text\", \"required\": true}, "
             "{\"id\": \"price\", \"type\": \"money\"}, {\"id\": \"sku\", \"type\": \"text\", \"unique\": true}]}");
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 422);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "code")), "required");
    h_resp_free(&r);

    /* narrowing money to integer would change 2.5: 409 with the count, nothing changed */
    assert_true(h_sql(url, "UPDATE app_shop.item SET price = 2.5 WHERE price = 2"));
    const char *as_integer = "{\"id\": \"item\", \"fields\": [{\"id\": \"name\", \"type\": \"text\"}, "
                             "{\"id\": \"price\", \"type\": \"integer\"}, {\"id\": \"sku\", \"type\": \"text\", \"unique\": true}]}";
    r = send("PUT", "/api/design/apps/shop/forms/item", dana, as_integer);
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 409);
    assert_string_equal(h_code(&r), "destructive_change");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "rows")), 1);
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT published_version FROM loom.apps WHERE id = 'shop'"), 4);
    /* ... and with allow_destructive it rounds */
    r = publish("{\"allow_destructive\": true}");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 5);
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT sum(price) FROM app_shop.item"), 7);   /* 1 + 3 + 3 */

    /* a type that holds every value: no question asked */
    r = send("PUT", "/api/design/apps/shop/forms/item", dana,
             "{\"id\": \"item\", \"fields\": [{\"id\": \"name\", \"type\": \"text\"}, "
             "{\"id\": \"price\", \"type\": \"decimal\", \"precision\": 20, \"scale\": 4}, "
             "{\"id\": \"sku\", \"type\": \"text\", \"unique\": true}]}");
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT numeric_precision * 100 + numeric_scale FROM information_schema.columns "
                             "WHERE table_schema = 'app_shop' AND table_name = 'item' AND column_name = 'price'"),
                     2004);
    assert_int_equal(rows_of("SELECT sum(price)::int FROM app_shop.item"), 7);

    /* a removed field with allow_destructive is really dropped */
    r = send("PUT", "/api/design/apps/shop/forms/item", dana,
             "{\"id\": \"item\", \"fields\": [{\"id\": \"name\", \"type\": \"text\"}, "
             "{\"id\": \"price\", \"type\": \"decimal\", \"precision\": 20, \"scale\": 4}]}");
    h_resp_free(&r);
    r = publish("{\"allow_destructive\": true}");
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "destructive"), 0), "op")),
                        "drop_column");
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'app_shop' "
                             "AND table_name = 'item' AND column_name LIKE '%sku%'"),
                     0);
    r = send("GET", "/api/design/apps/shop/versions", dana, NULL);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 7);
    h_resp_free(&r);

    /* rollback to version 1: its name is required and a row has none: 422, like any publish */
    r = send("POST", "/api/design/apps/shop/rollback", dana, "{\"version\": 1}");
    assert_int_equal(r.status, 422);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "code")), "required");
    h_resp_free(&r);
    /* with the data fixed: a new version 8 with version 1's definition; money
     * again (no stored value changes), and "order" gets its qty back, empty */
    assert_true(h_sql(url, "UPDATE app_shop.item SET name = 'c' WHERE name IS NULL"));
    r = send("POST", "/api/design/apps/shop/rollback", dana, "{\"version\": 1}");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 8);
    h_resp_free(&r);
    h_resp v1 = send("GET", "/api/design/apps/shop/versions/1", dana, NULL);
    h_resp v8 = send("GET", "/api/design/apps/shop/versions/8", dana, NULL);
    assert_string_equal(v1.body, v8.body);
    h_resp_free(&v1);
    h_resp_free(&v8);
    assert_int_equal(rows_of("SELECT numeric_precision * 100 + numeric_scale FROM information_schema.columns "
                             "WHERE table_schema = 'app_shop' AND table_name = 'item' AND column_name = 'price'"),
                     1802);
    assert_int_equal(rows_of("SELECT count(*) FROM app_shop.\"order\" WHERE qty IS NOT NULL"), 0);
    /* a shorter text length that existing values exceed: 409, nothing changed */
    assert_true(h_sql(url, "INSERT INTO app_shop.item (name) VALUES ('a rather long name')"));
    r = send("PUT", "/api/design/apps/shop/forms/item", dana,
             "{\"id\": \"item\", \"fields\": [{\"id\": \"name\", \"type\": \"text\", \"max_length\": 5}, "
             "{\"id\": \"price\", \"type\": \"money\"}]}");
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 409);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "rows")), 1);
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT published_version FROM loom.apps WHERE id = 'shop'"), 8);
    r = send("POST", "/api/design/apps/shop/rollback", dana, "{\"version\": 99}");
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
}

static void test_conversions_and_retargeted_refs(void **state)
{
    (void)state;
    /* the draft still holds the refused shorter name: put item back as published */
    h_resp r = send("PUT", "/api/design/apps/shop/forms/item", dana,
                    "{\"id\": \"item\", \"fields\": [{\"id\": \"name\", \"type\": \"text\", \"required\": true}, "
                    "{\"id\": \"price\", \"type\": \"money\"}]}");
    h_resp_free(&r);
    r = send("PUT", "/api/design/apps/shop/forms/gauge", dana,
                    "{\"id\": \"gauge\", \"fields\": [{\"id\": \"reading\", \"type\": \"text\"}, "
                    "{\"id\": \"at\", \"type\": \"datetime\"}]}");
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_true(h_sql(url, "INSERT INTO app_shop.gauge (reading, at) VALUES ('42', '2026-11-22 00:00:00+00'), "
                           "('x', '2026-11-22 09:30:00+00'), (NULL, NULL)"));

    /* text -> integer: 'x' does not convert: 409 with 1 row; then with allow_destructive it empties */
    r = send("PUT", "/api/design/apps/shop/forms/gauge", dana,
             "{\"id\": \"gauge\", \"fields\": [{\"id\": \"reading\", \"type\": \"integer\"}, "
             "{\"id\": \"at\", \"type\": \"datetime\"}]}");
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/shop/plan", dana, NULL);
    json_t *c0 = json_array_get(json_object_get(r.json, "checks"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "problem")), "destructive");
    assert_int_equal(json_integer_value(json_object_get(c0, "rows")), 1);
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 409);
    h_resp_free(&r);
    r = publish("{\"allow_destructive\": true}");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT sum(reading) FROM app_shop.gauge"), 42);
    assert_int_equal(rows_of("SELECT count(*) FROM app_shop.gauge WHERE reading IS NULL"), 2);

    /* datetime -> date: 09:30 would be lost: 409 with 1 row (midnight loses nothing) */
    r = send("PUT", "/api/design/apps/shop/forms/gauge", dana,
             "{\"id\": \"gauge\", \"fields\": [{\"id\": \"reading\", \"type\": \"integer\"}, "
             "{\"id\": \"at\", \"type\": \"date\"}]}");
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 409);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "rows")), 1);
    h_resp_free(&r);

    /* a ref pointed at another form: values that do not exist there are counted: 422 */
    r = send("PUT", "/api/design/apps/shop/forms/gauge", dana,
             "{\"id\": \"gauge\", \"fields\": [{\"id\": \"reading\", \"type\": \"integer\"}, "
             "{\"id\": \"at\", \"type\": \"datetime\"}]}");
    h_resp_free(&r);
    assert_true(h_sql(url, "INSERT INTO app_shop.item (id, name) VALUES (1000, 'far')"));
    assert_true(h_sql(url, "INSERT INTO app_shop.\"order\" (item) VALUES (1000)"));
    r = send("GET", "/api/design/apps/shop/forms/order", dana, NULL);
    char *order = json_dumps(r.json, 0);
    json_t *field = json_array_get(json_object_get(r.json, "fields"), 0);
    assert_string_equal(json_string_value(json_object_get(field, "id")), "item");
    json_object_set_new(field, "form", json_string("gauge"));
    char *retarget = json_dumps(r.json, 0);
    h_resp_free(&r);
    r = send("PUT", "/api/design/apps/shop/forms/order", dana, retarget);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 422);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "code")),
                        "not_found");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "rows")), 1);
    h_resp_free(&r);
    /* put back as it was: publishable again */
    r = send("PUT", "/api/design/apps/shop/forms/order", dana, order);
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    free(order);
    free(retarget);
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
    /* a valid draft may still be warned about: the clerk could create orders but never fill their item */
    const char *perms[] = {"{\"order\": {\"clerk\": {\"create\": true}}}",
                           "{\"item\": {\"clerk\": {\"read\": \"all\"}}, \"order\": {\"clerk\": {\"create\": true}}}"};
    for (int k = 0; k < 2; k++) {
        r = send("PUT", "/api/design/apps/shop/permissions", dana, perms[k]);
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
        r = send("POST", "/api/design/apps/shop/validate", dana, NULL);
        assert_true(json_is_true(json_object_get(r.json, "valid")));
        json_t *w = json_object_get(r.json, "warnings");
        assert_int_equal(json_array_size(w), k ? 0 : 1);
        if (!k) {
            assert_string_equal(json_string_value(json_object_get(json_array_get(w, 0), "path")), "/permissions/order/clerk");
            assert_string_equal(json_string_value(json_object_get(json_array_get(w, 0), "code")), "unreadable_ref");
        }
        h_resp_free(&r);
    }
    /* a role that reads orders by owner: the plan indexes them by owner */
    r = send("PUT", "/api/design/apps/shop/permissions", dana,
             "{\"item\": {\"clerk\": {\"read\": \"all\"}}, \"order\": {\"clerk\": {\"read\": \"own\"}}}");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/shop/plan", dana, NULL);
    assert_int_equal(r.status, 200);
    const char *sql = NULL;
    size_t i;
    json_t *step;
    json_array_foreach(json_object_get(r.json, "steps"), i, step) if (!strcmp(json_string_value(json_object_get(step, "op")), "create_index"))
        sql = json_string_value(json_object_get(step, "sql"));
    assert_non_null(sql);
    assert_non_null(strstr(sql, "\"order\" (\"_owner\", \"id\")"));
    h_resp_free(&r);
    r = send("PUT", "/api/design/apps/shop/permissions", dana, "{\"item\": {\"clerk\": {\"read\": \"all\"}}}");
    assert_int_equal(r.status, 200);
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

/* Lists and files: a select becomes a multiselect and back (lists of several counted), a multiselect
 * becomes text, a file becomes many and back; a file to another type is still refused (501). */
static void test_list_and_file_conversions(void **state)
{
    (void)state;
    h_resp r = send("PUT", "/api/design/apps/shop/forms/tagged", dana,
                    "{\"id\": \"tagged\", \"fields\": [{\"id\": \"kind\", \"type\": \"select\", \"options\": "
                    "[{\"value\": \"a\"}, {\"value\": \"b\"}]}, {\"id\": \"labels\", \"type\": \"multiselect\", \"options\": "
                    "[{\"value\": \"x\"}, {\"value\": \"y\"}]}, {\"id\": \"doc\", \"type\": \"file\"}]}");
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_true(h_sql(url, "INSERT INTO app_shop.tagged (kind, labels, doc) VALUES "
                           "('a', '{x,y}', '{\"id\": \"f1\", \"name\": \"a.pdf\"}'), ('b', '{y}', NULL), (NULL, NULL, NULL)"));
    /* select -> multiselect (a list of one), multiselect -> text (joined), one file -> many (a list of one) */
    r = send("PUT", "/api/design/apps/shop/forms/tagged", dana,
             "{\"id\": \"tagged\", \"fields\": [{\"id\": \"kind\", \"type\": \"multiselect\", \"options\": "
             "[{\"value\": \"a\"}, {\"value\": \"b\"}]}, {\"id\": \"labels\", \"type\": \"text\"}, "
             "{\"id\": \"doc\", \"type\": \"file\", \"multiple\": true}]}");
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT count(*) FROM app_shop.tagged WHERE kind = '{a}' OR kind = '{b}'"), 2);
    assert_int_equal(rows_of("SELECT count(*) FROM app_shop.tagged WHERE labels = 'x, y'"), 1);
    assert_int_equal(rows_of("SELECT count(*) FROM app_shop.tagged WHERE jsonb_typeof(doc) = 'array' "
                             "AND doc->0->>'name' = 'a.pdf'"),
                     1);
    assert_true(h_sql(url, "UPDATE app_shop.tagged SET kind = '{a,b}', doc = '[{\"id\": \"f1\"}, {\"id\": \"f2\"}]' "
                           "WHERE labels = 'x, y'"));
    /* and back: a list of several is counted (409), kept to its first with allow_destructive */
    r = send("PUT", "/api/design/apps/shop/forms/tagged", dana,
             "{\"id\": \"tagged\", \"fields\": [{\"id\": \"kind\", \"type\": \"select\", \"options\": "
             "[{\"value\": \"a\"}, {\"value\": \"b\"}]}, {\"id\": \"labels\", \"type\": \"text\"}, "
             "{\"id\": \"doc\", \"type\": \"file\"}]}");
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 409);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 2);   /* kind and doc, 1 row each */
    h_resp_free(&r);
    r = publish("{\"allow_destructive\": true}");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT count(*) FROM app_shop.tagged WHERE kind = 'a' AND doc->>'id' = 'f1'"), 1);
    assert_int_equal(rows_of("SELECT count(*) FROM app_shop.tagged WHERE kind = 'b' AND doc IS NULL"), 1);
    /* a file to text: refused, nothing changed */
    r = send("PUT", "/api/design/apps/shop/forms/tagged", dana,
             "{\"id\": \"tagged\", \"fields\": [{\"id\": \"kind\", \"type\": \"select\", \"options\": "
             "[{\"value\": \"a\"}, {\"value\": \"b\"}]}, {\"id\": \"labels\", \"type\": \"text\"}, "
             "{\"id\": \"doc\", \"type\": \"text\"}]}");
    h_resp_free(&r);
    r = publish(NULL);
    assert_int_equal(r.status, 501);
    h_resp_free(&r);
    assert_int_equal(rows_of("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'app_shop' "
                             "AND table_name = 'tagged' AND column_name = 'doc' AND data_type = 'jsonb'"),
                     1);
    r = send("PUT", "/api/design/apps/shop/forms/tagged", dana,
             "{\"id\": \"tagged\", \"fields\": [{\"id\": \"kind\", \"type\": \"select\", \"options\": "
             "[{\"value\": \"a\"}, {\"value\": \"b\"}]}, {\"id\": \"labels\", \"type\": \"text\"}, "
             "{\"id\": \"doc\", \"type\": \"file\"}]}");
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
    /* seed data: loaded on the first publish; data=true loads it again; data needs publish */
    const char *seeded = "{\"format\": \"loom.app/1\", \"app\": {\"id\": \"seeded\", \"label\": \"S\"}, "
                         "\"forms\": [{\"id\": \"account\", \"fields\": [{\"id\": \"name\", \"type\": \"text\"}]}], "
                         "\"data\": {\"account\": [{\"name\": \"one\"}, {\"name\": \"two\"}]}}";
    r = send("POST", "/api/design/import?publish=true", admin, seeded);
    assert_int_equal(r.status, 201);
    assert_int_equal(json_integer_value(json_object_get(r.json, "seeded")), 2);
    h_resp_free(&r);
    r = send("POST", "/api/design/import?publish=true&data=true", admin, seeded);   /* the app has records */
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "seeded")), 0);
    h_resp_free(&r);
    assert_true(h_sql(url, "DELETE FROM app_seeded.account"));
    r = send("POST", "/api/design/import?publish=true&data=true", admin, seeded);   /* now it has none */
    assert_int_equal(json_integer_value(json_object_get(r.json, "seeded")), 2);
    h_resp_free(&r);
    r = send("POST", "/api/design/import?data=true", admin, seeded);
    assert_int_equal(r.status, 400);
    h_resp_free(&r);
    char *c2 = h_sql_value(url, "SELECT count(*) FROM app_seeded.account");
    assert_string_equal(c2, "2");
    free(c2);
    /* export: the seed data with the bundle, or without it */
    r = send("GET", "/api/design/apps/seeded/export?data=false", admin, NULL);
    assert_int_equal(r.status, 200);
    assert_null(json_object_get(r.json, "data"));
    assert_non_null(json_object_get(r.json, "forms"));
    h_resp_free(&r);
    r = send("GET", "/api/design/apps/seeded/export", admin, NULL);
    assert_int_equal(json_array_size(json_object_get(json_object_get(r.json, "data"), "account")), 2);
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
        cmocka_unit_test(test_change_plans),
        cmocka_unit_test(test_conversions_and_retargeted_refs),
        cmocka_unit_test(test_list_and_file_conversions),
        cmocka_unit_test(test_parts_of_a_draft),
        cmocka_unit_test(test_import_and_delete),
    };
    return cmocka_run_group_tests_name("e2e_design", tests, setup, teardown);
}
