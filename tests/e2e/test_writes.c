/* test_writes.c - writing records over HTTP against a running server and a
 * real PostgreSQL (tests/fixtures/writes: an app "shop" with customers,
 * orders with line items, formulas, checks, conditional fields, refs with
 * each on_delete, and roles clerk / viewer / manager):
 * create with defaults, formulas, autonumbers and every problem at once;
 * field modes and mass assignment; refs and users checked; updates with
 * If-Match and subform rows; the update scope before and after; deletes and
 * on_delete; history without hidden fields; Idempotency-Key, sequential and
 * concurrent; parallel autonumbers and parallel PATCHes of one version. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "harness.h"

#ifndef SOURCE_DIR
#error SOURCE_DIR must name the repository
#endif

static h_server srv;
static char *url, *admin, *clerk, *clerk2, *viewer, *manager;
static long long clerk_id, clerk2_id, viewer_id, manager_id;

static char *make_user(const char *name, const char *roles, long long *id)
{
    return h_user(srv.port, admin, name, json_pack("{s:{s:o}}", "roles", "shop", json_loads(roles, 0, NULL)), id);
}

static int setup(void **state)
{
    (void)state;
    url = h_fresh_db("loomtest_writes");
    char out[16384];
    const char *import[] = {h_loom_bin(), "app", "import", SOURCE_DIR "/tests/fixtures/writes/bundle.json",
                            "--publish", "--db", url, NULL};
    if (h_run(import, NULL, out, sizeof out) != 0)
        return -1;
    const char *args[] = {"--workers", "4", NULL};
    if (!h_server_start(&srv, url, args, NULL))
        return -1;
    admin = h_login(srv.port, "admin", H_ADMIN_PASSWORD);
    clerk = make_user("clerk", "[\"clerk\"]", &clerk_id);
    clerk2 = make_user("clerk2", "[\"clerk\"]", &clerk2_id);
    viewer = make_user("viewer", "[\"viewer\"]", &viewer_id);
    manager = make_user("manager", "[\"manager\"]", &manager_id);
    return admin && clerk && clerk2 && viewer && manager ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int st = h_server_stop(&srv);
    free(admin);
    free(clerk);
    free(clerk2);
    free(viewer);
    free(manager);
    free(url);
    return st == 0 ? 0 : -1;
}

static h_resp req(const char *method, const char *token, const char *headers, const char *body, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static h_resp req(const char *method, const char *token, const char *headers, const char *body, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    return h_req_h(srv.port, method, path, token, body, headers);
}

static h_resp create(const char *token, const char *form, const char *body)
{
    return req("POST", token, NULL, body, "/api/apps/shop/forms/%s/records", form);
}

static long long create_id(const char *token, const char *form, const char *body)
{
    h_resp r = create(token, form, body);
    if (r.status != 201)
        fprintf(stderr, "create %s: %d %s\n", form, r.status, r.body ? r.body : "");
    assert_int_equal(r.status, 201);
    long long id = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);
    return id;
}

static const char *str(const h_resp *r, const char *key)
{
    return json_string_value(json_object_get(r->json, key));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The error list of a problem as "path code" lines, sorted, one string. */
static char *errors_of(const h_resp *r)
{
    json_t *errs = json_object_get(r->json, "errors");
    size_t n = json_array_size(errs);
    char **lines = calloc(n + 1, sizeof *lines);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(errs, i);
        buf b = {0};
        buf_printf(&b, "%s %s", json_string_value(json_object_get(e, "path")), json_string_value(json_object_get(e, "code")));
        lines[i] = strdup(b.data);
        buf_free(&b);
    }
    qsort(lines, n, sizeof *lines, cmp_str);
    buf all = {0};
    buf_puts(&all, "");
    for (size_t i = 0; i < n; i++) {
        buf_printf(&all, "%s%s", i ? "; " : "", lines[i]);
        free(lines[i]);
    }
    free(lines);
    return all.data;
}

static void expect_errors(h_resp *r, int status, const char *code, const char *errors)
{
    if (r->status != status)
        fprintf(stderr, "got %d %s\n", r->status, r->body ? r->body : "");
    assert_int_equal(r->status, status);
    assert_string_equal(h_code(r), code);
    if (errors) {
        char *got = errors_of(r);
        /* sort the expectation the same way */
        char *copy = strdup(errors), *parts[64];
        int n = 0;
        for (char *t = copy; t && n < 64;) {
            parts[n++] = t;
            t = strstr(t, "; ");
            if (t) {
                *t = '\0';
                t += 2;
            }
        }
        qsort(parts, (size_t)n, sizeof *parts, cmp_str);
        buf want = {0};
        buf_puts(&want, "");
        for (int i = 0; i < n; i++)
            buf_printf(&want, "%s%s", i ? "; " : "", parts[i]);
        assert_string_equal(got, want.data);
        free(got);
        free(copy);
        buf_free(&want);
    }
    h_resp_free(r);
}

static long long sql_int(const char *sql)
{
    char *v = h_sql_value(url, sql);
    assert_non_null(v);
    long long n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

/* ---- create ---- */

static void test_create_defaults_formulas_autonumber(void **state)
{
    (void)state;
    h_resp r = create(clerk, "customer", "{\"name\": \"Defaults Ltd\", \"tags\": [\"fleet\", \"o'hara \\\"q\\\"\"]}");
    assert_int_equal(r.status, 201);
    char etag[32];
    assert_true(h_resp_header(&r, "ETag", etag, sizeof etag));
    assert_string_equal(etag, "\"1\"");
    assert_string_equal(str(&r, "level"), "normal");              /* literal default */
    assert_string_equal(str(&r, "code"), "C");                    /* a readonly field's default */
    char *today = h_sql_value(url, "SELECT to_char(now() AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD')");
    assert_string_equal(str(&r, "since"), today);                 /* today in the app's time zone */
    assert_int_equal(json_integer_value(json_object_get(r.json, "_owner")), clerk_id);
    assert_int_equal(json_integer_value(json_object_get(r.json, "_created_by")), clerk_id);
    assert_int_equal(json_integer_value(json_object_get(r.json, "_version")), 1);
    assert_null(json_object_get(r.json, "owner_note"));            /* hidden from a clerk */
    assert_string_equal(json_string_value(json_array_get(json_object_get(r.json, "tags"), 1)), "o'hara \"q\"");
    long long cust = json_integer_value(json_object_get(r.json, "id"));
    /* the answer is the record exactly as a read gives it */
    h_resp g = req("GET", clerk, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld", cust);
    assert_int_equal(g.status, 200);
    assert_true(json_equal(g.json, r.json));
    h_resp_free(&g);
    h_resp_free(&r);

    char body[512];
    snprintf(body, sizeof body,
             "{\"customer\": %lld, \"discount\": 10, \"lines\": [{\"product\": \"A\", \"qty\": 2, \"price\": \"10.00\"},"
             " {\"product\": \"B\"}]}",
             cust);
    r = create(manager, "order", body);
    assert_int_equal(r.status, 201);
    char want[32];
    snprintf(want, sizeof want, "SO-%.4s-", today);
    assert_memory_equal(str(&r, "number"), want, strlen(want));     /* SO-<year>-NNNN */
    assert_int_equal(strlen(str(&r, "number")), strlen(want) + 4);
    assert_int_equal(json_integer_value(json_object_get(r.json, "taker")), manager_id);   /* default "me" */
    assert_non_null(str(&r, "placed_at"));                          /* default "now" */
    json_t *lines = json_object_get(r.json, "lines");
    assert_int_equal(json_array_size(lines), 2);
    json_t *l0 = json_array_get(lines, 0), *l1 = json_array_get(lines, 1);
    assert_string_equal(json_string_value(json_object_get(l0, "amount")), "18.00");   /* 2 x 10 x 0.9 */
    assert_int_equal(json_integer_value(json_object_get(l1, "qty")), 1);             /* a row's default */
    assert_string_equal(json_string_value(json_object_get(l1, "amount")), "0.00");
    assert_true(json_integer_value(json_object_get(l0, "id")) > 0);
    assert_string_equal(str(&r, "total"), "18.00");                 /* sum_rows over the computed rows */
    assert_string_equal(str(&r, "discount"), "10.0");               /* the field's scale */
    h_resp_free(&r);
    /* "me" only for whom the field may hold: the platform admin, in no role here, leaves it empty */
    r = create(admin, "order", body);
    assert_int_equal(r.status, 201);
    assert_true(json_is_null(json_object_get(r.json, "taker")));
    h_resp_free(&r);

    /* an order without lines: [] and a total of zero */
    snprintf(body, sizeof body, "{\"customer\": %lld}", cust);
    r = create(manager, "order", body);
    assert_int_equal(r.status, 201);
    assert_int_equal(json_array_size(json_object_get(r.json, "lines")), 0);
    assert_string_equal(str(&r, "total"), "0.00");
    h_resp_free(&r);
    free(today);
}

static void test_create_reports_every_problem(void **state)
{
    (void)state;
    /* coercion, range, options, rows, unknown, required, conditional required, ref: all at once */
    h_resp r = create(manager, "order",
                      "{\"customer\": 999999, \"discount\": 200, \"urgent\": true, \"zzz\": 1,"
                      " \"lines\": [{\"qty\": 0, \"price\": \"1.234\"}, 7]}");
    expect_errors(&r, 422, "validation_failed",
                  "/customer not_found; /discount too_large; /lines/0/price type; /lines/0/product required; "
                  "/lines/0/qty too_small; /lines/1 type; /note required; /reason required; /zzz unknown_field");
    /* visible_when false: note is hidden, so not required */
    long long cust = create_id(manager, "customer", "{\"name\": \"Problems Inc\"}");
    char body[256];
    snprintf(body, sizeof body, "{\"customer\": %lld, \"urgent\": false}", cust);
    r = create(manager, "order", body);
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    /* a check */
    snprintf(body, sizeof body, "{\"customer\": %lld, \"lines\": [{\"product\": \"gold\", \"qty\": 1000, \"price\": \"1000\"}]}",
             cust);
    r = create(manager, "order", body);
    expect_errors(&r, 422, "validation_failed", " check_failed");   /* path "": the record */
    r = create(manager, "order", "{}");
    expect_errors(&r, 422, "validation_failed", "/customer required");
    /* a formula that fails at run time */
    snprintf(body, sizeof body, "{\"customer\": %lld, \"urgent\": true, \"reason\": \"r\", \"note\": \"explode\"}", cust);
    r = create(manager, "order", body);
    assert_int_equal(r.status, 422);
    assert_string_equal(h_code(&r), "formula_error");
    assert_non_null(strstr(r.body, "kaboom"));
    expect_errors(&r, 422, "formula_error", "/boom formula_error");
    /* an empty or blank string is no value: a required field wants one, the others are null */
    r = create(manager, "customer", "{\"name\": \"\"}");
    expect_errors(&r, 422, "validation_failed", "/name required");
    r = create(manager, "customer", "{\"name\": \" \\u3000\\t\", \"level\": \"\", \"email\": \"\", \"since\": \" \"}");
    expect_errors(&r, 422, "validation_failed", "/name required");
    r = create(manager, "customer", "{\"name\": \"Blank Ltd\", \"level\": \"\", \"email\": \" \", \"since\": \"\", \"owner_note\": \"\\u00a0\"}");
    assert_int_equal(r.status, 201);
    const char *nulls[] = {"level", "email", "since", "owner_note"};
    for (size_t k = 0; k < sizeof nulls / sizeof nulls[0]; k++)
        assert_true(json_is_null(json_object_get(r.json, nulls[k])));
    long long blank = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);
    r = req("PATCH", manager, NULL, "{\"name\": \"  \"}", "/api/apps/shop/forms/customer/records/%lld", blank);
    expect_errors(&r, 422, "validation_failed", "/name required");
    /* not an object */
    r = create(manager, "order", "[1]");
    assert_int_equal(r.status, 400);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.\"order\" WHERE customer = (SELECT id FROM app_shop.customer "
                             "WHERE name = 'Problems Inc')"),
                     1);
}

static void test_modes_and_mass_assignment(void **state)
{
    (void)state;
    /* system fields: 400, listed */
    h_resp r = create(clerk, "customer", "{\"name\": \"Mass\", \"id\": 5, \"_version\": 9, \"_created_by\": 1}");
    expect_errors(&r, 400, "bad_request", "/_created_by readonly; /_version readonly; /id readonly");
    /* a hidden field is exactly an unknown one; a read-only one is readonly */
    r = create(clerk, "customer", "{\"name\": \"Mass\", \"owner_note\": \"x\"}");
    h_resp r2 = create(clerk, "customer", "{\"name\": \"Mass\", \"no_such\": \"x\"}");
    assert_int_equal(r.status, 422);
    json_t *e1 = json_array_get(json_object_get(r.json, "errors"), 0), *e2 = json_array_get(json_object_get(r2.json, "errors"), 0);
    assert_string_equal(json_string_value(json_object_get(e1, "code")), json_string_value(json_object_get(e2, "code")));
    assert_string_equal(json_string_value(json_object_get(e1, "message")), json_string_value(json_object_get(e2, "message")));
    h_resp_free(&r);
    h_resp_free(&r2);
    r = create(clerk, "customer", "{\"name\": \"Mass\", \"credit\": 5, \"code\": \"X\"}");
    expect_errors(&r, 422, "validation_failed", "/code readonly; /credit readonly");
    /* a read-only field sent back unchanged is no change, however written (100 for the money "100.00") */
    long long mine = create_id(clerk, "customer", "{\"name\": \"Mass Credit\"}");
    r = req("PATCH", manager, NULL, "{\"credit\": \"100.00\"}", "/api/apps/shop/forms/customer/records/%lld", mine);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    const char *same[] = {"{\"credit\": 100}", "{\"credit\": \"100\", \"email\": \"m@c.cn\"}", "{\"credit\": 100.0}"};
    for (size_t k = 0; k < 3; k++) {
        r = req("PATCH", clerk, NULL, same[k], "/api/apps/shop/forms/customer/records/%lld", mine);
        assert_int_equal(r.status, 200);
        assert_string_equal(json_string_value(json_object_get(r.json, "credit")), "100.00");
        h_resp_free(&r);
    }
    r = req("PATCH", clerk, NULL, "{\"credit\": 100.5}", "/api/apps/shop/forms/customer/records/%lld", mine);
    expect_errors(&r, 422, "validation_failed", "/credit readonly");
    /* _owner: only with update scope all */
    char body[128];
    snprintf(body, sizeof body, "{\"name\": \"Mass\", \"_owner\": %lld}", clerk2_id);
    r = create(clerk, "customer", body);
    expect_errors(&r, 422, "validation_failed", "/_owner readonly");
    r = create(manager, "customer", body);
    assert_int_equal(r.status, 201);
    assert_int_equal(json_integer_value(json_object_get(r.json, "_owner")), clerk2_id);
    long long owned = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);
    /* null is no owner: on a create, and on an update (the clerk may not) */
    r = create(manager, "customer", "{\"name\": \"Mass Unowned\", \"_owner\": null}");
    assert_int_equal(r.status, 201);
    assert_true(json_is_null(json_object_get(r.json, "_owner")));
    h_resp_free(&r);
    r = req("PATCH", clerk, NULL, "{\"_owner\": null}", "/api/apps/shop/forms/customer/records/%lld", owned);
    assert_int_equal(r.status, 403);   /* not the clerk's record to give away */
    h_resp_free(&r);
    r = req("PATCH", manager, NULL, "{\"_owner\": null}", "/api/apps/shop/forms/customer/records/%lld", owned);
    assert_int_equal(r.status, 200);
    assert_true(json_is_null(json_object_get(r.json, "_owner")));
    h_resp_free(&r);
    r = req("PATCH", manager, NULL, "{\"_owner\": \"x\"}", "/api/apps/shop/forms/customer/records/%lld", owned);
    expect_errors(&r, 422, "validation_failed", "/_owner type");
    /* no create permission: 403; no permission on the form at all: 404 */
    r = create(clerk, "vehicle", "{\"vin\": \"V\"}");
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    r = create(viewer, "customer", "{\"name\": \"V\"}");
    expect_errors(&r, 403, "forbidden", NULL);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name IN ('Mass', 'V')"), 1);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name = 'Mass Unowned' AND _owner IS NULL"), 1);
}

static void test_refs_and_users(void **state)
{
    (void)state;
    long long vip = create_id(manager, "customer", "{\"name\": \"Vip Co\", \"level\": \"vip\"}");
    long long plain = create_id(manager, "customer", "{\"name\": \"Plain Co\"}");
    char body[256];
    /* the viewer reads vip customers only: a ref to another is not_found, like one that does not exist */
    snprintf(body, sizeof body, "{\"customer\": %lld}", plain);
    h_resp r = create(viewer, "order", body);
    expect_errors(&r, 422, "validation_failed", "/customer not_found");
    snprintf(body, sizeof body, "{\"customer\": %lld}", vip);
    r = create(viewer, "order", body);
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    /* a user field with roles: only users holding one; inactive users never */
    snprintf(body, sizeof body, "{\"name\": \"Rep A\", \"rep\": %lld}", viewer_id);
    r = create(manager, "customer", body);
    expect_errors(&r, 422, "validation_failed", "/rep not_found");
    snprintf(body, sizeof body, "{\"name\": \"Rep A\", \"rep\": %lld}", clerk2_id);
    r = create(manager, "customer", body);
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    long long temp_id;
    char *temp = make_user("temp_clerk", "[\"clerk\"]", &temp_id);
    free(temp);
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE loom.users SET active = false WHERE id = %lld", temp_id);
    assert_true(h_sql(url, sql));
    snprintf(body, sizeof body, "{\"name\": \"Rep B\", \"rep\": %lld}", temp_id);
    r = create(manager, "customer", body);
    expect_errors(&r, 422, "validation_failed", "/rep not_found");
    /* ref filters: a static one, and one that reads the record ({"$field": "customer"}) */
    long long v1 = create_id(manager, "vehicle", "{\"vin\": \"RF1\", \"customer\": 1}");
    snprintf(body, sizeof body, "{\"customer\": %lld, \"vehicle\": %lld, \"referrer\": %lld}", plain, v1, plain);
    r = create(manager, "visit", body);
    expect_errors(&r, 422, "validation_failed", "/referrer not_found; /vehicle not_found");
    snprintf(body, sizeof body, "{\"customer\": 1, \"vehicle\": %lld, \"referrer\": %lld}", v1, vip);
    r = create(manager, "visit", body);
    assert_int_equal(r.status, 201);
    long long visit = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);
    /* the clerk may create visits but reads no vehicle: the filter is the app's and compiles for him too, and
     * the vehicle is not found */
    r = create(clerk, "visit", body);
    expect_errors(&r, 422, "validation_failed", "/vehicle not_found");
    snprintf(body, sizeof body, "{\"customer\": 1, \"referrer\": %lld}", vip);
    r = create(clerk, "visit", body);
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    snprintf(body, sizeof body, "{\"customer\": %lld}", plain);   /* the vehicle no longer fits: checked again */
    r = req("PATCH", manager, NULL, body, "/api/apps/shop/forms/visit/records/%lld", visit);
    expect_errors(&r, 422, "validation_failed", "/vehicle not_found");
    snprintf(body, sizeof body, "{\"customer\": %lld, \"vehicle\": null}", plain);
    r = req("PATCH", manager, NULL, body, "/api/apps/shop/forms/visit/records/%lld", visit);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    /* a unique clash: 409 not_unique at the field */
    r = create(manager, "customer", "{\"name\": \"Vip Co\"}");
    expect_errors(&r, 409, "not_unique", "/name not_unique");
}

/* ---- update ---- */

static void test_update_if_match_and_rows(void **state)
{
    (void)state;
    long long cust = create_id(manager, "customer", "{\"name\": \"Rows Ltd\"}");
    char body[512];
    snprintf(body, sizeof body,
             "{\"customer\": %lld, \"lines\": [{\"product\": \"A\", \"price\": \"1.00\"}, {\"product\": \"B\", \"price\": \"2.00\"},"
             " {\"product\": \"C\", \"price\": \"3.00\"}]}",
             cust);
    h_resp r = create(manager, "order", body);
    assert_int_equal(r.status, 201);
    long long id = json_integer_value(json_object_get(r.json, "id"));
    json_t *lines = json_object_get(r.json, "lines");
    long long a = json_integer_value(json_object_get(json_array_get(lines, 0), "id"));
    long long c = json_integer_value(json_object_get(json_array_get(lines, 2), "id"));
    /* the answer is a read's, byte for byte, rows written with it included (built from what was written) */
    h_resp g = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/records/%lld", id);
    assert_string_equal(r.body, g.body);
    h_resp_free(&g);
    h_resp_free(&r);

    /* C first and changed, A kept, B deleted, D inserted */
    snprintf(body, sizeof body, "{\"lines\": [{\"id\": %lld, \"qty\": 3}, {\"id\": %lld}, {\"product\": \"D\", \"price\": \"4.00\"}]}",
             c, a);
    r = req("PATCH", manager, "If-Match: \"1\"\r\n", body, "/api/apps/shop/forms/order/records/%lld", id);
    assert_int_equal(r.status, 200);
    char etag[32];
    assert_true(h_resp_header(&r, "ETag", etag, sizeof etag));
    assert_string_equal(etag, "\"2\"");
    lines = json_object_get(r.json, "lines");
    assert_int_equal(json_array_size(lines), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(lines, 0), "id")), c);
    assert_string_equal(json_string_value(json_object_get(json_array_get(lines, 0), "product")), "C");
    assert_string_equal(json_string_value(json_object_get(json_array_get(lines, 0), "amount")), "9.00");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(lines, 1), "id")), a);
    assert_string_equal(json_string_value(json_object_get(json_array_get(lines, 2), "product")), "D");
    assert_string_equal(str(&r, "total"), "14.00");
    g = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/records/%lld", id);
    assert_string_equal(r.body, g.body);
    h_resp_free(&g);
    h_resp_free(&r);
    snprintf(body, sizeof body, "SELECT count(*) FROM app_shop.order__lines WHERE _parent = %lld", id);
    assert_int_equal(sql_int(body), 3);
    /* the history names rows by the ids they are stored under, every field of them (null when empty) */
    char q[1024];
    snprintf(q, sizeof q, "SELECT count(*) FROM loom.history WHERE form = 'order' AND record = %lld AND action = "
             "'create' AND (changes::jsonb #>> '{lines,1,0,id}')::bigint = %lld AND (changes::jsonb #>> '{lines,1,2,id}')"
             "::bigint = %lld AND (SELECT count(*) FROM jsonb_object_keys(changes::jsonb #> '{lines,1,0}')) = 7", id, a, c);
    assert_int_equal(sql_int(q), 1);
    snprintf(q, sizeof q, "SELECT count(*) FROM loom.history h JOIN app_shop.order__lines l ON l._parent = h.record "
             "AND l.product = 'D' WHERE h.form = 'order' AND h.record = %lld AND h.action = 'update' AND "
             "(h.changes::jsonb #>> '{lines,1,2,id}')::bigint = l.id AND h.changes::jsonb #> '{lines,1,2,supplier}' = "
             "'null'::jsonb AND h.changes::jsonb #> '{lines,1,0}' = jsonb_build_object('id', %lld, 'product', 'C', "
             "'qty', 3, 'price', '3.00', 'amount', '9.00', 'photos', NULL, 'supplier', NULL)", id, c);
    assert_int_equal(sql_int(q), 1);

    /* stale If-Match: 412, nothing changes */
    r = req("PATCH", manager, "If-Match: \"1\"\r\n", "{\"discount\": 5}", "/api/apps/shop/forms/order/records/%lld", id);
    expect_errors(&r, 412, "version_mismatch", NULL);
    r = req("PATCH", manager, "If-Match: soon\r\n", "{\"discount\": 5}", "/api/apps/shop/forms/order/records/%lld", id);
    expect_errors(&r, 400, "bad_request", NULL);
    r = req("PATCH", manager, "If-Match: *\r\n", "{}", "/api/apps/shop/forms/order/records/%lld", id);
    assert_int_equal(r.status, 200);   /* "*": any version (no change here: the version stays) */
    h_resp_free(&r);
    r = req("PATCH", manager, "If-Match: *\r\n", "{\"discount\": 0}", "/api/apps/shop/forms/order/records/999999999");
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    /* a change that changes nothing keeps the version */
    r = req("PATCH", manager, "If-Match: \"2\"\r\n", "{\"lines\": null}", "/api/apps/shop/forms/order/records/%lld", id);
    assert_int_equal(r.status, 200);   /* null rows: no rows */
    assert_int_equal(json_integer_value(json_object_get(r.json, "_version")), 3);
    assert_int_equal(json_array_size(json_object_get(r.json, "lines")), 0);
    h_resp_free(&r);
    r = req("PATCH", manager, NULL, "{\"discount\": null}", "/api/apps/shop/forms/order/records/%lld", id);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "_version")), 3);
    h_resp_free(&r);
    /* a row id of another record */
    long long other = create_id(manager, "order", "{\"customer\": 1, \"lines\": [{\"product\": \"Z\"}]}");
    snprintf(body, sizeof body, "SELECT id FROM app_shop.order__lines WHERE _parent = %lld", other);
    long long zrow = sql_int(body);
    snprintf(body, sizeof body, "{\"lines\": [{\"id\": %lld, \"product\": \"stolen\"}]}", zrow);
    r = req("PATCH", manager, NULL, body, "/api/apps/shop/forms/order/records/%lld", id);
    expect_errors(&r, 422, "validation_failed", "/lines/0/id not_found");
    /* one row given twice: which of its values would be stored? */
    snprintf(body, sizeof body, "{\"lines\": [{\"id\": %lld, \"product\": \"Z1\"}, {\"id\": %lld, \"product\": \"Z2\"}]}", zrow,
             zrow);
    r = req("PATCH", manager, NULL, body, "/api/apps/shop/forms/order/records/%lld", other);
    expect_errors(&r, 422, "validation_failed", "/lines/1/id type");
    /* an update that leaves the rows alone answers them as a read shows them (from what it read, no second read) */
    r = req("PATCH", manager, NULL, "{\"reason\": \"rows untouched\"}", "/api/apps/shop/forms/order/records/%lld", other);
    assert_int_equal(r.status, 200);
    g = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/records/%lld", other);
    assert_string_equal(r.body, g.body);
    assert_int_equal(json_array_size(json_object_get(g.json, "lines")), 1);
    h_resp_free(&g);
    h_resp_free(&r);
    /* a record that does not exist, an id that is not one */
    r = req("PATCH", manager, NULL, "{}", "/api/apps/shop/forms/order/records/999999");
    expect_errors(&r, 404, "not_found", NULL);
    r = req("PATCH", manager, NULL, "{}", "/api/apps/shop/forms/order/records/1x");
    expect_errors(&r, 404, "not_found", NULL);
}

static void test_update_modes_and_scope(void **state)
{
    (void)state;
    long long cust = create_id(manager, "customer", "{\"name\": \"Scope Ltd\"}");
    char body[512];
    snprintf(body, sizeof body, "{\"customer\": %lld, \"lines\": [{\"product\": \"A\"}]}", cust);
    h_resp r = create(clerk, "order", body);
    assert_int_equal(r.status, 201);
    long long id = json_integer_value(json_object_get(r.json, "id"));
    json_t *row = json_array_get(json_object_get(r.json, "lines"), 0);
    long long rid = json_integer_value(json_object_get(row, "id"));
    h_resp_free(&r);
    /* rows are sent whole: unchanged values of fields the clerk cannot write are accepted */
    snprintf(body, sizeof body,
             "{\"lines\": [{\"id\": %lld, \"product\": \"A2\", \"qty\": 1, \"price\": null, \"amount\": \"0.00\"}]}", rid);
    r = req("PATCH", clerk, NULL, body, "/api/apps/shop/forms/order/records/%lld", id);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    snprintf(body, sizeof body, "{\"lines\": [{\"id\": %lld, \"price\": \"5.00\"}, {\"product\": \"B\", \"price\": \"1.00\"}]}", rid);
    r = req("PATCH", clerk, NULL, body, "/api/apps/shop/forms/order/records/%lld", id);
    expect_errors(&r, 422, "validation_failed", "/lines/0/price readonly; /lines/1/price readonly");
    /* another clerk cannot see it: 404 */
    r = req("PATCH", clerk2, NULL, "{\"discount\": 1}", "/api/apps/shop/forms/order/records/%lld", id);
    expect_errors(&r, 404, "not_found", NULL);
    /* the clerk's update scope is non-urgent orders: a change that leaves it is refused, and not written */
    r = req("PATCH", clerk, NULL, "{\"urgent\": true, \"reason\": \"rush\", \"note\": \"n\"}",
            "/api/apps/shop/forms/order/records/%lld", id);
    expect_errors(&r, 403, "forbidden", NULL);
    snprintf(body, sizeof body, "SELECT count(*) FROM app_shop.\"order\" WHERE id = %lld AND urgent IS NULL AND _version = 2", id);
    assert_int_equal(sql_int(body), 1);
    /* ... and a record outside it cannot be updated though it can be read: 403 */
    r = req("PATCH", manager, NULL, "{\"urgent\": true, \"reason\": \"rush\", \"note\": \"n\"}",
            "/api/apps/shop/forms/order/records/%lld", id);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = req("PATCH", clerk, NULL, "{\"discount\": 1}", "/api/apps/shop/forms/order/records/%lld", id);
    expect_errors(&r, 403, "forbidden", NULL);
    r = req("GET", clerk, NULL, NULL, "/api/apps/shop/forms/order/records/%lld", id);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
}

/* ---- delete ---- */

static void test_delete_and_on_delete(void **state)
{
    (void)state;
    long long cust = create_id(manager, "customer", "{\"name\": \"Gone Soon\"}");
    char body[1024];
    snprintf(body, sizeof body, "{\"vin\": \"V1\", \"customer\": %lld}", cust);
    long long veh = create_id(manager, "vehicle", body);
    snprintf(body, sizeof body, "{\"customer\": %lld, \"at\": \"2026-01-02\"}", cust);
    long long visit = create_id(manager, "visit", body);
    snprintf(body, sizeof body, "{\"customer\": %lld}", cust);
    long long order = create_id(manager, "order", body);
    /* restrict: the order blocks it, and the cascade it had begun is undone with it */
    h_resp r = req("DELETE", manager, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld", cust);
    assert_int_equal(r.status, 409);   /* saying which records stand in the way */
    assert_string_equal(json_string_value(json_object_get(r.json, "detail")),
                        "order records refer to this one (their customer): delete them or change it first");
    expect_errors(&r, 409, "conflict", NULL);
    snprintf(body, sizeof body, "SELECT count(*) FROM app_shop.vehicle WHERE id = %lld", veh);
    assert_int_equal(sql_int(body), 1);
    snprintf(body, sizeof body, "SELECT count(*) FROM loom.history WHERE form = 'vehicle' AND record = %lld AND action = 'delete'",
             veh);
    assert_int_equal(sql_int(body), 0);
    /* a clerk may delete no customer; an order of someone else is not there */
    r = req("DELETE", clerk, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld", cust);
    expect_errors(&r, 403, "forbidden", NULL);
    r = req("DELETE", clerk, NULL, NULL, "/api/apps/shop/forms/order/records/%lld", order);
    expect_errors(&r, 404, "not_found", NULL);
    r = req("DELETE", manager, "If-Match: \"7\"\r\n", NULL, "/api/apps/shop/forms/order/records/%lld", order);
    expect_errors(&r, 412, "version_mismatch", NULL);
    r = req("DELETE", manager, "If-Match: \"1\"\r\n", NULL, "/api/apps/shop/forms/order/records/%lld", order);
    assert_int_equal(r.status, 204);
    h_resp_free(&r);
    r = req("DELETE", manager, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld", cust);
    assert_int_equal(r.status, 204);
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld", cust);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    /* a ref in subform rows (order lines' supplier, set_null): the order is updated, with version and history */
    long long sup = create_id(manager, "customer", "{\"name\": \"Supplier Gone\"}");
    snprintf(body, sizeof body, "{\"customer\": 1, \"lines\": [{\"product\": \"S1\", \"supplier\": %lld}, {\"product\": \"S2\"}]}",
             sup);
    long long sorder = create_id(manager, "order", body);
    r = req("DELETE", manager, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld", sup);
    assert_int_equal(r.status, 204);
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/records/%lld", sorder);
    assert_int_equal(json_integer_value(json_object_get(r.json, "_version")), 2);
    json_t *srows = json_object_get(r.json, "lines");
    assert_int_equal(json_array_size(srows), 2);
    assert_true(json_is_null(json_object_get(json_array_get(srows, 0), "supplier")));
    h_resp_free(&r);
    snprintf(body, sizeof body,
             "SELECT count(*) FROM loom.history WHERE form = 'order' AND record = %lld AND action = 'update' "
             "AND changes::jsonb->'lines'->0->0->>'supplier' = '%lld' AND changes::jsonb->'lines'->1->0->'supplier' = 'null'",
             sorder, sup);
    assert_int_equal(sql_int(body), 1);
    /* its history outlives it, for whoever may read every customer: the manager, not the viewer */
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld/history", cust);
    assert_int_equal(r.status, 200);
    json_t *hist = json_object_get(r.json, "items");
    assert_string_equal(json_string_value(json_object_get(json_array_get(hist, json_array_size(hist) - 1), "action")),
                        "delete");
    h_resp_free(&r);
    r = req("GET", viewer, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld/history", cust);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records/987654/history");
    assert_int_equal(r.status, 404);   /* never existed */
    h_resp_free(&r);
    snprintf(body, sizeof body, "SELECT count(*) FROM app_shop.vehicle WHERE id = %lld", veh);
    assert_int_equal(sql_int(body), 0);   /* cascade */
    snprintf(body, sizeof body, "SELECT count(*) FROM app_shop.visit WHERE id = %lld AND customer IS NULL AND _version = 2",
             visit);
    assert_int_equal(sql_int(body), 1);   /* set_null, as an update */
    /* both in the history, by the one who deleted the customer */
    snprintf(body, sizeof body,
             "SELECT count(*) FROM loom.history h JOIN loom.users u ON u.id = h.actor AND u.username = 'manager' "
             "WHERE (h.form = 'vehicle' AND h.record = %lld AND h.action = 'delete' AND h.changes::jsonb->'vin' = '[\"V1\", null]') "
             "OR (h.form = 'visit' AND h.record = %lld AND h.action = 'update' AND h.changes::jsonb = '{\"customer\": [%lld, null]}')",
             veh, visit, cust);
    assert_int_equal(sql_int(body), 2);
    snprintf(body, sizeof body,
             "SELECT count(*) FROM loom.history WHERE form = 'customer' AND record = %lld AND action = 'delete' "
             "AND changes::jsonb->'name' = '[\"Gone Soon\", null]'",
             cust);
    assert_int_equal(sql_int(body), 1);
}

/* ---- history ---- */

static void test_history_hides_fields(void **state)
{
    (void)state;
    long long id = create_id(manager, "customer", "{\"name\": \"History Co\", \"owner_note\": \"secret\"}");
    char body[128];
    h_resp r = req("PATCH", manager, NULL, "{\"owner_note\": \"more secret\", \"email\": \"a@b.cn\"}",
                   "/api/apps/shop/forms/customer/records/%lld", id);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld/history", id);
    assert_int_equal(r.status, 200);
    json_t *items = json_object_get(r.json, "items");
    assert_int_equal(json_array_size(items), 2);
    json_t *up = json_array_get(items, 1);
    assert_string_equal(json_string_value(json_object_get(up, "action")), "update");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(up, "user"), "id")), manager_id);
    json_t *ch = json_object_get(up, "changes");
    assert_string_equal(json_string_value(json_array_get(json_object_get(ch, "owner_note"), 0)), "secret");
    assert_string_equal(json_string_value(json_array_get(json_object_get(ch, "owner_note"), 1)), "more secret");
    assert_true(json_is_null(json_array_get(json_object_get(ch, "email"), 0)));
    assert_null(json_object_get(ch, "name"));   /* unchanged */
    h_resp_free(&r);
    /* the clerk sees the same entries without the hidden field */
    r = req("GET", clerk, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld/history", id);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "secret"));
    assert_non_null(json_object_get(json_object_get(json_array_get(json_object_get(r.json, "items"), 1), "changes"), "email"));
    h_resp_free(&r);
    /* pages */
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld/history?limit=1", id);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);
    snprintf(body, sizeof body, "/api/apps/shop/forms/customer/records/%lld/history?limit=1&cursor=%s", id,
             str(&r, "next_cursor"));
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL, "%s", body);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "items"), 0), "action")),
                        "update");
    assert_true(json_is_null(json_object_get(r.json, "next_cursor")));
    h_resp_free(&r);
    /* an update of the hidden field alone is not in the clerk's history at all: not even when it happened */
    r = req("PATCH", manager, NULL, "{\"owner_note\": \"most secret\"}", "/api/apps/shop/forms/customer/records/%lld", id);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = req("GET", clerk, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld/history", id);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 2);
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld/history", id);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 3);
    h_resp_free(&r);
    /* newest first, page by page: the last update, then the one before it, then the create */
    const char *want[] = {"most secret", "more secret", NULL};
    char cursor[32] = "";
    for (int k = 0; k < 3; k++) {
        r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld/history?order=desc&limit=1%s%s", id,
                *cursor ? "&cursor=" : "", cursor);
        assert_int_equal(r.status, 200);
        json_t *it = json_array_get(json_object_get(r.json, "items"), 0);
        assert_string_equal(json_string_value(json_object_get(it, "action")), want[k] ? "update" : "create");
        if (want[k])
            assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(it, "changes"), "owner_note"), 1)),
                                want[k]);
        json_t *next = json_object_get(r.json, "next_cursor");
        assert_true(k < 2 ? json_is_string(next) : json_is_null(next));
        snprintf(cursor, sizeof cursor, "%s", k < 2 ? json_string_value(next) : "");
        h_resp_free(&r);
    }
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld/history?order=newest", id);
    expect_errors(&r, 400, "bad_request", "/order bad_request");
    /* not readable: 404 (the viewer reads vip customers only) */
    r = req("GET", viewer, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld/history", id);
    expect_errors(&r, 404, "not_found", NULL);
}

/* ---- expand ---- */

static void test_expand(void **state)
{
    (void)state;
    long long vip = create_id(manager, "customer", "{\"name\": \"Expand Vip\", \"level\": \"vip\"}");
    long long plain = create_id(manager, "customer", "{\"name\": \"Expand Plain\"}");
    char body[256];
    snprintf(body, sizeof body, "{\"customer\": %lld, \"_owner\": %lld}", plain, viewer_id);
    long long o1 = create_id(manager, "order", body);
    snprintf(body, sizeof body, "{\"customer\": %lld, \"_owner\": %lld}", vip, viewer_id);
    long long o2 = create_id(manager, "order", body);
    h_resp r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/records/%lld?expand=customer,taker,_owner", o1);
    assert_int_equal(r.status, 200);
    json_t *cust = json_object_get(r.json, "customer"), *taker = json_object_get(r.json, "taker");
    assert_int_equal(json_integer_value(json_object_get(cust, "id")), plain);
    assert_string_equal(json_string_value(json_object_get(cust, "title")), "Expand Plain");
    assert_int_equal(json_integer_value(json_object_get(taker, "id")), manager_id);
    assert_string_equal(json_string_value(json_object_get(taker, "title")), "manager");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "_owner"), "title")), "viewer");
    h_resp_free(&r);
    /* the viewer may read only vip customers: the other title stays out */
    r = req("GET", viewer, NULL, NULL, "/api/apps/shop/forms/order/records?expand=customer&sort=id");
    assert_int_equal(r.status, 200);
    json_t *items = json_object_get(r.json, "items");
    size_t n = json_array_size(items);
    assert_true(n >= 2);
    bool seen1 = false, seen2 = false;
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(items, i), *c = json_object_get(it, "customer");
        long long id = json_integer_value(json_object_get(it, "id"));
        if (id == o1) {
            seen1 = true;
            assert_int_equal(json_integer_value(json_object_get(c, "id")), plain);
            assert_null(json_object_get(c, "title"));
        } else if (id == o2) {
            seen2 = true;
            assert_string_equal(json_string_value(json_object_get(c, "title")), "Expand Vip");
        }
    }
    assert_true(seen1 && seen2);
    h_resp_free(&r);
    r = req("POST", viewer, NULL, "{\"expand\": [\"customer\"], \"limit\": 1}", "/api/apps/shop/forms/order/records/query");
    assert_int_equal(r.status, 200);
    assert_true(json_is_object(json_object_get(json_array_get(json_object_get(r.json, "items"), 0), "customer")));
    h_resp_free(&r);
    /* refs in subform rows: "lines.supplier" */
    snprintf(body, sizeof body, "{\"customer\": %lld, \"_owner\": %lld, \"lines\": [{\"product\": \"P\", \"supplier\": %lld}, "
             "{\"product\": \"Q\", \"supplier\": %lld}, {\"product\": \"R\"}]}", vip, viewer_id, vip, plain);
    long long o3 = create_id(manager, "order", body);
    r = req("GET", viewer, NULL, NULL, "/api/apps/shop/forms/order/records/%lld?expand=lines.supplier,customer", o3);
    assert_int_equal(r.status, 200);
    json_t *lines = json_object_get(r.json, "lines");
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_array_get(lines, 0), "supplier"), "title")),
                        "Expand Vip");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_array_get(lines, 1), "supplier"), "id")), plain);
    assert_null(json_object_get(json_object_get(json_array_get(lines, 1), "supplier"), "title"));   /* not readable */
    assert_true(json_is_null(json_object_get(json_array_get(lines, 2), "supplier")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(lines, 2), "product")), "R");
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/records/%lld?expand=lines.qty", o3);
    expect_errors(&r, 400, "bad_request", "/expand bad_request");
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/records/%lld?expand=nope.supplier", o3);
    expect_errors(&r, 400, "unknown_field", "/expand unknown_field");
    /* not a ref; a hidden field; nothing written when a create's expand is bad */
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/records/%lld?expand=discount", o1);
    expect_errors(&r, 400, "bad_request", "/expand bad_request");
    r = req("GET", clerk, NULL, NULL, "/api/apps/shop/forms/customer/records?expand=owner_note");
    expect_errors(&r, 400, "unknown_field", "/expand unknown_field");
    r = req("POST", manager, NULL, "{\"name\": \"Expand Never\"}", "/api/apps/shop/forms/customer/records?expand=nope");
    expect_errors(&r, 400, "unknown_field", NULL);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name = 'Expand Never'"), 0);
    r = req("POST", manager, NULL, "{\"name\": \"Expand Rep\"}", "/api/apps/shop/forms/customer/records?expand=_created_by");
    assert_int_equal(r.status, 201);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "_created_by"), "title")), "manager");
    h_resp_free(&r);
}

/* ---- files ---- */

/* POST /api/files?name=<name> with a binary body. */
/* POSTs n bytes of data (binary: a file, a workbook) of Content-Type type to path. */
static h_resp post_bytes(const char *token, const char *path, const char *type, const void *data, size_t n)
{
    h_resp r = {0};
    h_conn c;
    if (!h_conn_open(&c, srv.port))
        return r;
    buf req = {0};
    buf_printf(&req, "POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
               path, token, type, n);
    buf_append(&req, data, n);
    if (h_conn_send(&c, req.data, req.len))
        h_conn_read(&c, &r, 30000);
    buf_free(&req);
    h_conn_close(&c);
    return r;
}

static h_resp upload(const char *token, const char *name, const char *type, const void *data, size_t n)
{
    char path[300];
    snprintf(path, sizeof path, "/api/files?name=%s", name);
    return post_bytes(token, path, type, data, n);
}

static char *upload_id(const char *token, const char *name, const char *type, size_t n)
{
    unsigned char data[4096];
    for (size_t i = 0; i < n && i < sizeof data; i++)
        data[i] = (unsigned char)(i * 7);
    h_resp r = upload(token, name, type, data, n);
    assert_int_equal(r.status, 201);
    assert_int_equal(json_integer_value(json_object_get(r.json, "size")), (json_int_t)n);
    char *id = strdup(str(&r, "id"));
    h_resp_free(&r);
    return id;
}

static void test_files(void **state)
{
    (void)state;
    unsigned char data[300];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 7);   /* NULs and high bytes included */
    h_resp r = upload(clerk, "%E5%90%88%E5%90%8C.pdf", "application/PDF; x=1", data, sizeof data);
    assert_int_equal(r.status, 201);
    assert_string_equal(str(&r, "name"), "合同.pdf");
    assert_string_equal(str(&r, "content_type"), "application/pdf");
    h_resp r2 = upload(clerk, "scan.JPG", "application/x-www-form-urlencoded", data, 10);   /* curl's default */
    assert_string_equal(str(&r2, "content_type"), "image/jpeg");
    h_resp_free(&r2);
    const char *vague[] = {"application/octet-stream", "application/x-www-form-urlencoded", "multipart/form-data"};
    for (size_t k = 0; k < sizeof vague / sizeof vague[0]; k++) {   /* nothing known of the bytes: just bytes */
        r2 = upload(clerk, "notes.unknownext", vague[k], data, 10);
        assert_string_equal(str(&r2, "content_type"), "application/octet-stream");
        h_resp_free(&r2);
    }
    r2 = upload(clerk, "photo.png", "image/webp", data, 10);   /* what the client says, when it says something */
    assert_string_equal(str(&r2, "content_type"), "image/webp");
    h_resp_free(&r2);
    char fid[64];
    snprintf(fid, sizeof fid, "%s", str(&r, "id"));
    assert_true(strlen(fid) >= 22);   /* 128 random bits and more */
    h_resp_free(&r);
    /* the record keeps the stored facts, whatever the client claims */
    char body[512];
    snprintf(body, sizeof body, "{\"name\": \"Files Co\", \"level\": \"vip\", \"contract\": {\"id\": \"%s\", \"size\": 1, \"name\": \"x.exe\"}}",
             fid);
    r = create(clerk, "customer", body);
    assert_int_equal(r.status, 201);
    json_t *contract = json_object_get(r.json, "contract");
    assert_int_equal(json_integer_value(json_object_get(contract, "size")), 300);
    assert_string_equal(json_string_value(json_object_get(contract, "name")), "合同.pdf");
    long long cust = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);
    /* downloads: the uploader, a reader of the record; not one the field is hidden from, nor a stranger */
    const char *who[] = {clerk, clerk2, manager, viewer};
    int want[] = {200, 200, 200, 404};
    for (int i = 0; i < 4; i++) {
        r = req("GET", who[i], NULL, NULL, "/api/files/%s", fid);
        assert_int_equal(r.status, want[i]);
        if (want[i] == 200) {
            assert_int_equal(r.body_len, sizeof data);
            assert_memory_equal(r.body, data, sizeof data);
            char h[256];
            assert_true(h_resp_header(&r, "X-Content-Type-Options", h, sizeof h));
            assert_string_equal(h, "nosniff");
            assert_true(h_resp_header(&r, "Content-Disposition", h, sizeof h));
            assert_non_null(strstr(h, "attachment"));
            assert_non_null(strstr(h, "filename*=UTF-8''%E5%90%88%E5%90%8C.pdf"));
        }
        h_resp_free(&r);
    }
    r = req("GET", clerk, NULL, NULL, "/api/files/nope");
    expect_errors(&r, 404, "not_found", NULL);
    /* someone else's upload cannot be attached; nor a file that does not exist */
    snprintf(body, sizeof body, "{\"name\": \"Files Two\", \"contract\": {\"id\": \"%s\"}}", fid);
    r = create(manager, "customer", body);
    expect_errors(&r, 422, "validation_failed", "/contract not_found");
    r = create(manager, "customer", "{\"name\": \"Files Two\", \"contract\": {\"id\": \"missing\"}}");
    expect_errors(&r, 422, "validation_failed", "/contract not_found");
    /* limits: content types and size */
    char *txt = upload_id(manager, "a.txt", "text/plain", 10), *big = upload_id(manager, "b.pdf", "application/pdf", 2000),
         *png = upload_id(manager, "c.png", "image/png", 10);
    snprintf(body, sizeof body, "{\"name\": \"Files Two\", \"contract\": {\"id\": \"%s\"}}", txt);
    r = create(manager, "customer", body);
    expect_errors(&r, 422, "validation_failed", "/contract type");
    snprintf(body, sizeof body, "{\"name\": \"Files Two\", \"contract\": {\"id\": \"%s\"}}", big);
    r = create(manager, "customer", body);
    expect_errors(&r, 422, "validation_failed", "/contract too_large");
    snprintf(body, sizeof body, "{\"name\": \"Files Two\", \"contract\": {\"id\": \"%s\"}}", png);
    r = create(manager, "customer", body);
    assert_int_equal(r.status, 201);   /* image/<any> */
    h_resp_free(&r);
    /* an update that keeps the file needs no ownership of it */
    r = req("PATCH", manager, NULL, "{\"email\": \"f@files.cn\"}", "/api/apps/shop/forms/customer/records/%lld", cust);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    /* multiple files in a subform row */
    char *p1 = upload_id(clerk, "p1.jpg", "image/jpeg", 5), *p2 = upload_id(clerk, "p2.jpg", "image/jpeg", 6);
    snprintf(body, sizeof body, "{\"customer\": %lld, \"lines\": [{\"product\": \"F\", \"photos\": [{\"id\": \"%s\"}, {\"id\": \"%s\"}]}]}",
             cust, p1, p2);
    r = create(clerk, "order", body);
    assert_int_equal(r.status, 201);
    json_t *photos = json_object_get(json_array_get(json_object_get(r.json, "lines"), 0), "photos");
    assert_int_equal(json_array_size(photos), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(photos, 1), "size")), 6);
    long long order = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);
    /* the manager reads the order: may download; clerk2 cannot read it: 404 */
    r = req("GET", manager, NULL, NULL, "/api/files/%s", p2);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = req("GET", clerk2, NULL, NULL, "/api/files/%s", p2);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    /* deleting the order drops the link: only the uploader may still get it */
    r = req("DELETE", manager, NULL, NULL, "/api/apps/shop/forms/order/records/%lld", order);
    assert_int_equal(r.status, 204);
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL, "/api/files/%s", p2);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    r = req("GET", clerk, NULL, NULL, "/api/files/%s", p2);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = upload(clerk, "", "text/plain", "x", 1);
    assert_int_equal(r.status, 400);
    h_resp_free(&r);
    free(txt);
    free(big);
    free(png);
    free(p1);
    free(p2);
}

/* ---- import and export ---- */

static h_resp post_csv(const char *token, const char *query, const char *csv)
{
    return req("POST", token, "Content-Type: text/csv\r\n", csv, "/api/apps/shop/forms/%s", query);
}

static void test_import(void **state)
{
    (void)state;
    long long before = sql_int("SELECT count(*) FROM app_shop.customer");
    /* all or nothing: one bad row, nothing written; every problem with its row */
    h_resp r = post_csv(clerk, "customer/import",
                        "\xEF\xBB\xBFname,级别,tags\r\nImp A,vip,fleet\r\nImp B,gold,\r\n,normal,retail; nope\r\n");
    expect_errors(&r, 422, "validation_failed", NULL);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer"), before);
    r = post_csv(clerk, "customer/import",
                 "name,级别,tags\r\nImp A,vip,fleet\r\nImp B,gold,\r\n,normal,retail; nope\r\n");
    char *got = errors_of(&r);   /* "row" and "field" instead of paths: check the raw list */
    free(got);
    json_t *errs = json_object_get(r.json, "errors");
    assert_int_equal(json_array_size(errs), 3);
    json_t *e0 = json_array_get(errs, 0);
    assert_int_equal(json_integer_value(json_object_get(e0, "row")), 2);
    assert_string_equal(json_string_value(json_object_get(e0, "field")), "level");
    assert_string_equal(json_string_value(json_object_get(e0, "code")), "not_an_option");
    h_resp_free(&r);
    /* partial: the good rows go in */
    r = post_csv(clerk, "customer/import?partial=true",
                 "name,级别,tags\r\nImp A,vip,fleet\r\nImp B,gold,\r\n,normal,retail; nope\r\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 1);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 3);
    h_resp_free(&r);
    /* quoting, lists, a neutralised formula read back, defaults for empty cells, history */
    r = post_csv(clerk, "customer/import",
                 "name,email,tags,level\n\"Imp, \"\"Quoted\"\"\nCo\",q@imp.cn,retail ; fleet,\n'=1+2,,,vip\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 2);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name = E'Imp, \"Quoted\"\\nCo' "
                             "AND tags = '{retail,fleet}' AND level = 'normal' AND _owner IS NOT NULL"),
                     1);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name = '=1+2'"), 1);
    /* the history of an imported record is what a create writes, escapes and all */
    r = post_csv(clerk, "customer/import", "name,tags\n\"Imp \\ back \"\"q\"\"\ttab\nline 引号\",retail;fleet\n");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history h JOIN app_shop.customer c ON c.id = h.record AND "
                             "h.form = 'customer' WHERE c.name = E'Imp \\\\ back \"q\"\\ttab\\nline 引号' AND "
                             "h.changes::jsonb -> 'name' = jsonb_build_array(NULL, c.name) AND "
                             "h.changes::jsonb -> 'tags' = '[null, [\"retail\", \"fleet\"]]' AND h.action = 'create'"),
                     1);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history h JOIN app_shop.customer c ON c.id = h.record "
                             "AND h.form = 'customer' WHERE c.name = '=1+2' AND h.action = 'create'"),
                     1);
    /* a clash inside the file: the row that clashes */
    r = post_csv(clerk, "customer/import", "name\nImp Twin\nImp Twin\n");
    assert_int_equal(r.status, 422);
    e0 = json_array_get(json_object_get(r.json, "errors"), 0);
    assert_int_equal(json_integer_value(json_object_get(e0, "row")), 2);
    assert_string_equal(json_string_value(json_object_get(e0, "code")), "not_unique");
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name = 'Imp Twin'"), 0);
    /* a clash only the database sees (an index made by hand): COPY fails, the rows one by one find the row */
    assert_true(h_sql(url, "CREATE UNIQUE INDEX hand_made ON app_shop.customer (email)"));
    const char *dup = "name,email\nImp E1,dup@imp.cn\nImp E2,e2@imp.cn\nImp E3,dup@imp.cn\n";
    r = post_csv(clerk, "customer/import", dup);
    assert_int_equal(r.status, 422);
    e0 = json_array_get(json_object_get(r.json, "errors"), 0);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 1);
    assert_int_equal(json_integer_value(json_object_get(e0, "row")), 3);
    assert_string_equal(json_string_value(json_object_get(e0, "code")), "not_unique");
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name LIKE 'Imp E_'"), 0);
    r = post_csv(clerk, "customer/import?partial=true", dup);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 2);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer c JOIN loom.history h ON h.record = c.id AND "
                             "h.form = 'customer' WHERE c.name IN ('Imp E1', 'Imp E2')"), 2);
    assert_true(h_sql(url, "DROP INDEX app_shop.hand_made"));
    /* a file Excel saved on a Chinese Windows (GB18030) is read as such; bytes that are no text are refused */
    r = post_csv(clerk, "customer/import", "name,\xBC\xB6\xB1\xF0\nImp \xD5\xC5\xC8\xFD,vip\n");   /* 级别; 张三 */
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 1);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name = 'Imp 张三' AND level = 'vip'"), 1);
    r = post_csv(clerk, "customer/import", "name\nImp \xFF\xFF\n");
    expect_errors(&r, 400, "bad_request", NULL);
    h_conn raw;   /* a NUL in the file: not text */
    assert_true(h_conn_open(&raw, srv.port));
    char head[512];
    static const char nul_csv[] = "name\nImp \0x\n";
    int hn = snprintf(head, sizeof head, "POST /api/apps/shop/forms/customer/import HTTP/1.1\r\nHost: x\r\n"
                      "Authorization: Bearer %s\r\nContent-Type: text/csv\r\nContent-Length: %zu\r\n\r\n",
                      clerk, sizeof nul_csv - 1);
    assert_true(h_conn_send(&raw, head, (size_t)hn) && h_conn_send(&raw, nul_csv, sizeof nul_csv - 1));
    assert_true(h_conn_read(&raw, &r, 5000));
    expect_errors(&r, 400, "bad_request", NULL);
    h_conn_close(&raw);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name LIKE 'Imp %x'"), 0);
    /* a user by username (as people write them) or by id; a name no one has fails its row */
    char csv_rep[256];
    long long wang_id;
    char *wang = h_user(srv.port, admin, "wanglei", json_pack("{s:s, s:{s:[s]}}", "display_name", "王磊", "roles", "shop", "clerk"),
                        &wang_id);
    assert_non_null(wang);
    free(wang);
    snprintf(csv_rep, sizeof csv_rep, "name,rep\nImp Rep A,manager\nImp Rep B,%lld\nImp Rep C,nobody-here\nImp Rep D,王磊\n",
             clerk_id);
    r = post_csv(manager, "customer/import?partial=true", csv_rep);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 3);
    e0 = json_array_get(json_object_get(r.json, "errors"), 0);
    assert_int_equal(json_integer_value(json_object_get(e0, "row")), 3);
    assert_string_equal(json_string_value(json_object_get(e0, "field")), "rep");
    h_resp_free(&r);
    snprintf(csv_rep, sizeof csv_rep, "SELECT count(*) FROM app_shop.customer WHERE (name = 'Imp Rep A' AND rep = %lld) "
             "OR (name = 'Imp Rep B' AND rep = %lld) OR (name = 'Imp Rep D' AND rep = %lld)", manager_id, clerk_id, wang_id);
    assert_int_equal(sql_int(csv_rep), 3);
    /* the owner too, by name */
    r = post_csv(manager, "customer/import", "name,_owner\nImp Owned,王磊\n");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    snprintf(csv_rep, sizeof csv_rep, "SELECT count(*) FROM app_shop.customer WHERE name = 'Imp Owned' AND _owner = %lld", wang_id);
    assert_int_equal(sql_int(csv_rep), 1);
    /* a hidden column is an unknown one (at the header, row 0); one the caller may only read, a computed
     * one and the read-only system columns are left out and named */
    r = post_csv(clerk, "customer/import", "name,owner_note\nImp C,x\n");
    assert_int_equal(r.status, 422);
    json_t *h0 = json_array_get(json_object_get(r.json, "errors"), 0);
    assert_int_equal(json_integer_value(json_object_get(h0, "row")), 0);
    assert_string_equal(json_string_value(json_object_get(h0, "code")), "unknown_field");
    h_resp_free(&r);
    snprintf(csv_rep, sizeof csv_rep, "name,credit,code,_version,_created_at,_owner\nImp C,5,X,9,2020-01-01T00:00:00Z,%lld\n",
             manager_id);   /* the owner too: the clerk's update scope is not all */
    r = post_csv(clerk, "customer/import", csv_rep);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 1);
    json_t *ign = json_object_get(r.json, "ignored");
    assert_int_equal(json_array_size(ign), 5);
    assert_string_equal(json_string_value(json_array_get(ign, 0)), "credit");
    assert_string_equal(json_string_value(json_array_get(ign, 3)), "_created_at");
    assert_string_equal(json_string_value(json_array_get(ign, 4)), "_owner");
    h_resp_free(&r);
    snprintf(csv_rep, sizeof csv_rep, "SELECT count(*) FROM app_shop.customer WHERE name = 'Imp C' AND credit IS NULL AND "
                                      "code = 'C' AND _version = 1 AND _created_at > now() - interval '1 hour' AND _owner = %lld",
             clerk_id);
    assert_int_equal(sql_int(csv_rep), 1);
    /* a dry run checks and writes everything, answers what it would do, and undoes it */
    long long before_dry = sql_int("SELECT count(*) FROM app_shop.customer");
    r = post_csv(manager, "customer/import?dry_run=true", "name,email\nDry One,d1@imp.cn\nDry Two,d2@imp.cn\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 2);
    assert_true(json_is_true(json_object_get(r.json, "dry_run")));
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer"), before_dry);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE form = 'customer' AND changes::text LIKE '%Dry One%'"), 0);
    r = post_csv(manager, "customer/import?dry_run=true", "name\nImp A\n");   /* a clash a dry run finds too */
    assert_int_equal(r.status, 422);
    h_resp_free(&r);
    /* upsert by an autonumber: it finds its record and is never written; one no record has is not_found */
    long long cust = create_id(manager, "customer", "{\"name\": \"Imp Auto\"}");
    char ob[96];
    snprintf(ob, sizeof ob, "{\"customer\": %lld, \"urgent\": true, \"reason\": \"r\", \"note\": \"n\"}", cust);
    h_resp o = create(manager, "order", ob);
    assert_int_equal(o.status, 201);
    char csv_num[160];
    snprintf(csv_num, sizeof csv_num, "number,reason\n%s,changed by number\nSO-1999-0001,x\n", str(&o, "number"));
    h_resp_free(&o);
    r = post_csv(manager, "order/import?mode=upsert&key=number&partial=true", csv_num);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 1);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 0);
    json_t *nf = json_array_get(json_object_get(r.json, "errors"), 0);
    assert_int_equal(json_integer_value(json_object_get(nf, "row")), 2);
    assert_string_equal(json_string_value(json_object_get(nf, "code")), "not_found");
    h_resp_free(&r);
    snprintf(csv_num, sizeof csv_num, "SELECT count(*) FROM app_shop.\"order\" WHERE customer = %lld AND reason = "
                                      "'changed by number' AND _version = 2", cust);
    assert_int_equal(sql_int(csv_num), 1);
    /* a time written without an offset, as spreadsheets write them, is the app's (Asia/Shanghai) */
    r = post_csv(manager, "order/import?partial=true",
                 "customer,placed_at,urgent,reason,note\nImp Auto,2026/1/5 9:30,true,r,local\n"
                 "Imp Auto,2026-01-05 23:30:15,true,r,local\nImp Auto,2026-01-05T09:30:00Z,true,r,local\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 3);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.\"order\" WHERE note = 'local' AND placed_at IN "
                             "('2026-01-05T01:30:00Z', '2026-01-05T15:30:15Z', '2026-01-05T09:30:00Z')"),
                     3);
    /* a column whose first time has its offset is read as written: a later one without is the row's problem */
    r = post_csv(manager, "order/import?partial=true",
                 "customer,placed_at,urgent,reason,note\nImp Auto,2026-01-05T09:30:00Z,true,r,first\n"
                 "Imp Auto,2026/1/5 9:30,true,r,second\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "field")),
                        "placed_at");
    h_resp_free(&r);
    /* a ref cell may name its record by title, among those the caller may read */
    create_id(manager, "customer", "{\"name\": \"Imp Vip\", \"level\": \"vip\"}");
    r = post_csv(viewer, "order/import?partial=true",
                 "customer,urgent,reason,note\nImp Vip,true,r,by title\nImp Auto,true,r,by title\nNobody Co,true,r,by title\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 1);
    json_t *te = json_object_get(r.json, "errors");
    assert_int_equal(json_array_size(te), 2);
    for (size_t k = 0; k < 2; k++) {   /* Imp Auto is not vip: the viewer cannot see it, as if it were not there */
        assert_int_equal(json_integer_value(json_object_get(json_array_get(te, k), "row")), (json_int_t)k + 2);
        assert_string_equal(json_string_value(json_object_get(json_array_get(te, k), "field")), "customer");
        assert_string_equal(json_string_value(json_object_get(json_array_get(te, k), "code")), "not_found");
    }
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.\"order\" o JOIN app_shop.customer c ON c.id = o.customer "
                             "WHERE o.note = 'by title' AND c.name = 'Imp Vip'"),
                     1);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.\"order\" WHERE note = 'by title'"), 1);
    /* upsert by a unique key */
    r = post_csv(manager, "customer/import?mode=upsert&key=name", "name,email\nImp A,upd@imp.cn\nImp D,d@imp.cn\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 1);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 1);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name = 'Imp A' AND email = 'upd@imp.cn' "
                             "AND _version = 2"),
                     1);
    r = post_csv(manager, "customer/import?mode=upsert&key=email", "name\nX\n");
    expect_errors(&r, 400, "bad_request", NULL);
    /* ids are Loom's: upserting by another key (or inserting), an id column is left out, as an export's other
     * system columns are, so a file exported here imports into another app or keyed otherwise */
    r = post_csv(manager, "customer/import?mode=upsert&key=name", "id,name\n5,Imp With Id\n");
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r.json, "ignored"), 0)), "id");
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 1);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name = 'Imp With Id' AND id <> 5"), 1);
    /* upsert by id: a known id updates, a row without one is new, an id nobody has is that row's not_found */
    long long imp_a = sql_int("SELECT id FROM app_shop.customer WHERE name = 'Imp A'");
    char csv_id[160];
    snprintf(csv_id, sizeof csv_id, "id,name,email\n%lld,Imp A,id@imp.cn\n,Imp New,\n987654321,Imp Ghost,\n", imp_a);
    r = post_csv(manager, "customer/import?mode=upsert&key=id&partial=true", csv_id);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 1);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 1);
    e0 = json_array_get(json_object_get(r.json, "errors"), 0);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 1);
    assert_int_equal(json_integer_value(json_object_get(e0, "row")), 3);
    assert_string_equal(json_string_value(json_object_get(e0, "field")), "id");
    assert_string_equal(json_string_value(json_object_get(e0, "code")), "not_found");
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE (name = 'Imp A' AND email = 'id@imp.cn') "
                             "OR name = 'Imp New'"), 2);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name = 'Imp Ghost' OR id = 987654321"), 0);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history h JOIN app_shop.customer c ON c.id = h.record AND "
                             "h.form = 'customer' WHERE c.name = 'Imp New' AND h.action = 'create'"), 1);
    /* new rows go in bulk, updates one by one; all or nothing: one bad row and none of it is written */
    snprintf(csv_id, sizeof csv_id, "name,email\nImp A,aon@imp.cn\nImp Bulk 1,\nImp Bulk 2,bad-email\n");
    r = post_csv(manager, "customer/import?mode=upsert&key=name", csv_id);
    assert_int_equal(r.status, 422);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name LIKE 'Imp Bulk%' OR email = 'aon@imp.cn'"), 0);
    snprintf(csv_id, sizeof csv_id, "name,email\nImp A,aon@imp.cn\nImp Bulk 1,\nImp Bulk 2,b2@imp.cn\nImp Bulk 1,\n");
    r = post_csv(manager, "customer/import?mode=upsert&key=name&partial=true", csv_id);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 1);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 2);
    e0 = json_array_get(json_object_get(r.json, "errors"), 0);   /* a key twice in the file: the second is a clash */
    assert_int_equal(json_integer_value(json_object_get(e0, "row")), 4);
    assert_string_equal(json_string_value(json_object_get(e0, "code")), "not_unique");
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name LIKE 'Imp Bulk%' OR email = 'aon@imp.cn'"), 3);
    /* orders: refs checked for the whole file at once, autonumbers in a row, formulas computed */
    long long maxid = sql_int("SELECT coalesce(max(id), 0) FROM app_shop.\"order\"");
    r = post_csv(manager, "order/import", "customer,discount\n1,5\n1,7\n999999,1\n");
    expect_errors(&r, 422, "validation_failed", NULL);
    buf csv = {0};
    buf_puts(&csv, "customer,discount,urgent\n");
    for (int i = 0; i < 120; i++)
        buf_printf(&csv, "1,%d,%s\n", i % 50, i % 2 ? "no" : "否");
    r = post_csv(manager, "order/import", csv.data);
    buf_free(&csv);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 120);
    h_resp_free(&r);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(DISTINCT number) FILTER (WHERE urgent = false AND total = 0 AND boom = 2) "
             "+ 1000 * (max(right(number, 4)::int) - min(right(number, 4)::int) + 1) FROM app_shop.\"order\" WHERE id > %lld",
             maxid);
    assert_int_equal(sql_int(sql), 120 + 1000 * 120);
}

/* More rows than a batch (5,000): batch N+1 is read and checked on another
 * thread while batch N is written. Problems found while reading (row
 * 12000), checking (7000: a formula error, on the other thread's sandbox)
 * and writing (3: a ref nobody has) come in row order, and nothing is
 * written; with partial=true the other rows are, with their formulas,
 * numbers and history. */
static void test_import_batches(void **state)
{
    (void)state;
    long long maxid = sql_int("SELECT coalesce(max(id), 0) FROM app_shop.\"order\"");
    long long hist = sql_int("SELECT count(*) FROM loom.history WHERE form = 'order'");
    buf csv = {0};
    buf_puts(&csv, "customer,discount,urgent,note\n");
    for (int i = 1; i <= 12001; i++) {
        if (i == 3)
            buf_puts(&csv, "999999,1,no,\n");
        else if (i == 7000)
            buf_puts(&csv, "1,1,no,explode\n");
        else if (i == 12000)
            buf_puts(&csv, "1,1,no,,extra\n");
        else
            buf_printf(&csv, "1,%d,%s,row %d\n", i % 50, i % 2 ? "no" : "否", i);
    }
    h_resp r = post_csv(manager, "order/import", csv.data);
    assert_int_equal(r.status, 422);
    json_t *errs = json_object_get(r.json, "errors");
    assert_int_equal(json_array_size(errs), 3);
    static const struct { long row; const char *field, *code; } want[] = {
        {3, "customer", "not_found"}, {7000, "boom", "formula_error"}, {12000, "", "bad_request"}};
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(errs, i);
        assert_int_equal(json_integer_value(json_object_get(e, "row")), want[i].row);
        assert_string_equal(json_string_value(json_object_get(e, "field")), want[i].field);
        assert_string_equal(json_string_value(json_object_get(e, "code")), want[i].code);
    }
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT coalesce(max(id), 0) FROM app_shop.\"order\""), maxid);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE form = 'order'"), hist);
    r = post_csv(manager, "order/import?partial=true", csv.data);
    buf_free(&csv);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 11998);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 3);
    h_resp_free(&r);
    char sql[400];
    /* the formula everywhere, a number each, one clock (the transaction's) for the default "now" */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FILTER (WHERE boom = 2) + 100000 * count(DISTINCT number) + "
             "10000000000 * count(DISTINCT placed_at) FROM app_shop.\"order\" WHERE id > %lld",
             maxid);
    assert_int_equal(sql_int(sql), 11998 + 100000LL * 11998 + 10000000000LL);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE form = 'order'"), hist + 11998);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM app_shop.\"order\" WHERE id > %lld AND note = 'row 12001' "
                              "AND urgent = false AND discount = 1.00",
             maxid);
    assert_int_equal(sql_int(sql), 1);
    /* gone again: the tests after this one walk every order */
    snprintf(sql, sizeof sql, "WITH d AS (DELETE FROM app_shop.\"order\" WHERE id > %lld RETURNING 1) SELECT count(*) FROM d",
             maxid);
    assert_int_equal(sql_int(sql), 11998);
}

/* The error of row of an import's answer, as "field code", or "" when the row has none. */
static const char *row_error(const h_resp *r, long row, char *out, size_t n)
{
    size_t i;
    json_t *e;
    *out = '\0';
    json_array_foreach(json_object_get(r->json, "errors"), i, e) if (json_integer_value(json_object_get(e, "row")) == row)
        snprintf(out, n, "%s %s", json_string_value(json_object_get(e, "field")), json_string_value(json_object_get(e, "code")));
    return out;
}

static void test_upsert_in_bulk(void **state)
{
    (void)state;
    char e[128], sql[400];
    buf csv = {0};
    buf_puts(&csv, "name,weight\n");
    for (int i = 1; i <= 40; i++)
        buf_printf(&csv, "Bulk %d,%d\n", i, i);
    h_resp r = post_csv(manager, "tag/import", csv.data);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 40);
    h_resp_free(&r);
    long long hist = sql_int("SELECT count(*) FROM loom.history WHERE form = 'tag' AND action = 'update'");
    /* every row checked as an update: one too small (the last checked), one the second to name its record, one
     * unchanged */
    csv.len = 0;
    buf_puts(&csv, "name,weight\n");
    for (int i = 1; i <= 40; i++)
        buf_printf(&csv, "Bulk %d,%d\n", i, i == 5 ? 5 : i == 40 ? -1 : i + 100);
    buf_puts(&csv, "Bulk 9,1\n");
    r = post_csv(manager, "tag/import?mode=upsert&key=name", csv.data);
    assert_int_equal(r.status, 422);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 2);
    assert_string_equal(row_error(&r, 40, e, sizeof e), "weight too_small");
    assert_string_equal(row_error(&r, 41, e, sizeof e), "name not_unique");
    /* in row order, though the second key was seen before any row was checked */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "row")), 40);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.tag WHERE name LIKE 'Bulk %' AND _version = 1"), 40);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE form = 'tag' AND action = 'update'"), hist);
    r = post_csv(manager, "tag/import?mode=upsert&key=name&partial=true", csv.data);
    buf_free(&csv);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 38);
    assert_int_equal(json_integer_value(json_object_get(r.json, "unchanged")), 1);   /* Bulk 5, as it was */
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 0);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 2);
    h_resp_free(&r);
    /* the changed ones: a new version, the formula computed again, a history entry by the caller with both changes */
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.tag WHERE name LIKE 'Bulk %' AND _version = 2 AND "
                             "weight = substr(name, 6)::int + 100 AND double = 2 * weight AND _updated_by = _created_by"),
                     38);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.tag WHERE _version = 1 AND name IN ('Bulk 5', 'Bulk 40') AND "
                             "weight = substr(name, 6)::int"),
                     2);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM loom.history h JOIN app_shop.tag t ON t.id = h.record WHERE h.form = 'tag' AND "
             "h.action = 'update' AND h.actor = %lld AND h.changes::jsonb = jsonb_build_object('weight', jsonb_build_array("
             "t.weight - 100, t.weight), 'double', jsonb_build_array(2 * (t.weight - 100), t.double))",
             manager_id);
    assert_int_equal(sql_int(sql), 38);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE form = 'tag' AND action = 'update'"), hist + 38);
    /* a unique clash: the rows one by one find it, the others are written */
    long long b1 = sql_int("SELECT id FROM app_shop.tag WHERE name = 'Bulk 1'"),
              b3 = sql_int("SELECT id FROM app_shop.tag WHERE name = 'Bulk 3'");
    char clash[160];
    snprintf(clash, sizeof clash, "id,name\n%lld,Bulk 2\n%lld,Bulk 3b\n", b1, b3);
    r = post_csv(manager, "tag/import?mode=upsert&key=id&partial=true", clash);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 1);
    assert_string_equal(row_error(&r, 1, e, sizeof e), "name not_unique");
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.tag WHERE name IN ('Bulk 1', 'Bulk 3b')"), 2);
    /* without the right to update, each row says so */
    r = post_csv(clerk, "tag/import?mode=upsert&key=id&partial=true", clash);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 0);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 2);
    h_resp_free(&r);

    /* the update scope before and after (the clerk's orders that are not urgent), links in one query */
    long long cust = create_id(manager, "customer", "{\"name\": \"Bulk Buyer\"}");
    char body[128];
    snprintf(body, sizeof body, "{\"customer\": %lld}", cust);
    long long o[3];
    char num[3][32];
    for (int i = 0; i < 3; i++) {
        r = create(clerk, "order", body);
        assert_int_equal(r.status, 201);
        o[i] = json_integer_value(json_object_get(r.json, "id"));
        snprintf(num[i], sizeof num[i], "%s", str(&r, "number"));
        h_resp_free(&r);
    }
    char orders[400];
    snprintf(orders, sizeof orders, "number,discount,urgent,reason,note,customer\n%s,3,,,,%lld\n%s,4,true,late,rush,%lld\n"
             "%s,5,,,,999999\n", num[0], cust, num[1], cust, num[2]);
    r = post_csv(clerk, "order/import?mode=upsert&key=number&partial=true", orders);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 1);
    assert_string_equal(row_error(&r, 2, e, sizeof e), " forbidden");
    assert_string_equal(row_error(&r, 3, e, sizeof e), "customer not_found");
    h_resp_free(&r);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM app_shop.\"order\" WHERE (id = %lld AND discount = 3 AND _version = 2) "
             "OR (id IN (%lld, %lld) AND discount IS NULL AND urgent IS NULL AND _version = 1)", o[0], o[1], o[2]);
    assert_int_equal(sql_int(sql), 3);
    /* gone again: the tests after this one count every tag and walk every order */
    snprintf(sql, sizeof sql, "WITH o AS (DELETE FROM app_shop.\"order\" WHERE customer = %lld RETURNING 1), "
             "t AS (DELETE FROM app_shop.tag WHERE name LIKE 'Bulk %%' RETURNING 1), h AS (DELETE FROM loom.history "
             "WHERE form = 'tag' RETURNING 1) SELECT (SELECT count(*) FROM o) + 1000 * (SELECT count(*) FROM t)", cust);
    assert_int_equal(sql_int(sql), 3 + 1000 * 40);
}

/* The lines of s that end in CRLF. */
static int crlf_lines(const char *s)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, "\r\n")); p += 2)
        n++;
    return n;
}

/* Opens c and sends GET path as the manager, in HTTP/version. */
static void raw_get(h_conn *c, const char *version, const char *path)
{
    assert_true(h_conn_open(c, srv.port));
    char get[512];
    snprintf(get, sizeof get, "GET %s HTTP/%s\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", path, version, manager);
    assert_true(h_conn_sends(c, get));
}

/* The text of the file called name inside the zip (n bytes) an XLSX is, or
 * NULL: found by its local header, its data inflated (or stored). */
static char *zip_entry(const char *zip, size_t n, const char *name)
{
    size_t ln = strlen(name);
    for (size_t i = 0; i + 30 + ln <= n; i++) {
        const unsigned char *h = (const unsigned char *)zip + i;
        if (memcmp(h, "PK\x03\x04", 4) || (size_t)(h[26] | h[27] << 8) != ln || memcmp(h + 30, name, ln))
            continue;
        size_t at = i + 30 + ln + (size_t)(h[28] | h[29] << 8);
        z_stream z = {.next_in = (unsigned char *)zip + at, .avail_in = (unsigned)(n - at)};
        if ((h[8] | h[9] << 8) != 8 || inflateInit2(&z, -MAX_WBITS) != Z_OK)   /* raw deflate */
            return NULL;
        buf out = {0};
        int rc;
        do {
            buf_reserve(&out, 65536);
            z.next_out = (unsigned char *)out.data + out.len;
            z.avail_out = 65536;
            rc = inflate(&z, Z_NO_FLUSH);
            out.len += 65536 - z.avail_out;
        } while (rc == Z_OK);
        inflateEnd(&z);
        out.data[out.len] = '\0';
        if (rc == Z_STREAM_END)
            return out.data;
        buf_free(&out);
        return NULL;
    }
    return NULL;
}

static void test_export(void **state)
{
    (void)state;
    create_id(manager, "customer", "{\"name\": \"=HYPERLINK(\\\"http://x\\\")\", \"owner_note\": \"hush\", \"credit\": 7}");
    h_resp r = req("GET", clerk, NULL, NULL, "/api/apps/shop/forms/customer/export?filter=%%7B%%22name%%22%%3A%%7B%%22%%24contains%%22%%3A%%22HYPER%%22%%7D%%7D");
    if (r.status != 200)
        fprintf(stderr, "%s\n", r.body);
    assert_int_equal(r.status, 200);
    char h[256];
    assert_true(h_resp_header(&r, "Content-Type", h, sizeof h));
    assert_string_equal(h, "text/csv; charset=utf-8");
    assert_memory_equal(r.body, "\xEF\xBB\xBF", 3);
    assert_non_null(strstr(r.body, ",Level,"));              /* labels in the header */
    assert_null(strstr(r.body, "owner_note"));               /* hidden from the clerk */
    assert_null(strstr(r.body, "hush"));
    assert_non_null(strstr(r.body, "\"'=HYPERLINK(\"\"http://x\"\")\""));   /* neutralised and quoted */
    assert_non_null(strstr(r.body, ",7.00,"));
    assert_int_equal(crlf_lines(r.body), 2);   /* the header and the one match */
    h_resp_free(&r);
    /* every record, across pages, as the manager sees them */
    long long n = sql_int("SELECT count(*) FROM app_shop.customer");
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/export?header=id&fields=name,owner_note");
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body + 3, "id,name,owner_note\r\n", 20);
    assert_true(crlf_lines(r.body) >= n + 1);   /* a quoted cell may hold a line break of its own */
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/export?format=xlsx");
    assert_int_equal(r.status, 200);
    assert_true(r.body_len > 1000);
    assert_memory_equal(r.body, "PK", 2);   /* a zip: the OOXML package */
    h_resp_free(&r);
    /* a big export is streamed in chunks, whole, and an XLSX too (small ones keep Content-Length) */
    buf many = {0};
    buf_puts(&many, "name,email\n");
    for (int i = 0; i < 3000; i++)
        buf_printf(&many, "Exp %04d,exp%d@example.cn\n", i, i);
    r = post_csv(manager, "customer/import", many.data);
    buf_free(&many);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    const char *big = "/api/apps/shop/forms/customer/export?filter=%7B%22name%22%3A%7B%22%24startswith%22%3A%22Exp%20%22%7D%7D";
    for (int x = 0; x < 2; x++) {
        r = req("GET", manager, NULL, NULL, x ? "%s&format=xlsx" : "%s", big);
        assert_int_equal(r.status, 200);
        assert_true(h_resp_header(&r, "Transfer-Encoding", h, sizeof h));
        assert_string_equal(h, "chunked");
        assert_false(h_resp_header(&r, "Content-Length", h, sizeof h));
        assert_true(h_resp_header(&r, "Content-Disposition", h, sizeof h));
        if (x) {   /* a whole zip: it ends with its end-of-central-directory record */
            assert_memory_equal(r.body, "PK", 2);
            assert_memory_equal(r.body + r.body_len - 22, "PK\x05\x06", 4);
            /* numbers as numbers, dates as date cells (a number and a date style), text as text */
            char *sheet = zip_entry(r.body, r.body_len, "xl/worksheets/sheet1.xml");
            assert_non_null(sheet);
            assert_non_null(strstr(sheet, "<t>Exp 2999</t>"));
            assert_null(strstr(sheet, "<t>20"));   /* no date or datetime written as text */
            assert_non_null(strstr(sheet, "<c r=\"D2\" s=\""));   /* _created_at: a styled number */
            assert_non_null(strstr(sheet, "<c r=\"A2\"><v>"));    /* the id: a plain number */
            free(sheet);
        } else {
            assert_int_equal(crlf_lines(r.body), 3000 + 1);
            assert_non_null(strstr(r.body, ",Exp 2999,"));
            assert_memory_equal(r.body + r.body_len - 2, "\r\n", 2);
        }
        h_resp_free(&r);
    }
    /* an HTTP/1.0 client gets no chunks: the body ends when the connection does */
    h_conn old;
    raw_get(&old, "1.0", big);
    assert_true(h_conn_closed(&old, 10000));
    const char *body10 = strstr(old.in.data, "\r\n\r\n");
    assert_non_null(body10);
    assert_null(strcasestr(old.in.data, "Transfer-Encoding"));
    assert_memory_equal(old.in.data, "HTTP/1.1 200", 12);
    assert_int_equal(crlf_lines(body10 + 4), 3000 + 1);
    h_conn_close(&old);
    /* a client that leaves half way: the server carries on */
    h_conn gone;
    raw_get(&gone, "1.1", big);
    h_conn_close(&gone);
    r = req("GET", manager, NULL, NULL, "%s&format=xlsx", big);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = req("GET", clerk, NULL, NULL, "/api/apps/shop/forms/customer/export?fields=owner_note");
    expect_errors(&r, 400, "unknown_field", NULL);
    r = req("GET", clerk, NULL, NULL, "/api/apps/shop/forms/customer/export?format=pdf");
    expect_errors(&r, 400, "bad_request", NULL);
    r = req("GET", clerk, NULL, NULL, "/api/apps/shop/forms/customer/export?values=nice");
    expect_errors(&r, 400, "bad_request", "/values bad_request");

    /* an export imports back as it is (by id): nothing changed, nothing written; a cell edited, one update */
    long long rt = create_id(manager, "customer", "{\"name\": \"Round Trip\", \"credit\": 12, \"tags\": [\"fleet\", \"retail\"]}");
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/export?filter=%%7B%%22id%%22%%3A%lld%%7D", rt);
    assert_int_equal(r.status, 200);
    char *file = strdup(r.body + 3);   /* the byte order mark aside */
    h_resp_free(&r);
    r = post_csv(manager, "customer/import?mode=upsert&key=id", file);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 0);
    assert_int_equal(json_integer_value(json_object_get(r.json, "unchanged")), 1);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r.json, "ignored"), 0)), "_version");
    h_resp_free(&r);
    char q[256];
    snprintf(q, sizeof q, "SELECT _version FROM app_shop.customer WHERE id = %lld", rt);
    assert_int_equal(sql_int(q), 1);
    char *edit = strstr(file, "Round Trip");
    memcpy(edit, "Round Trap", 10);
    r = post_csv(manager, "customer/import?mode=upsert&key=id", file);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    snprintf(q, sizeof q, "SELECT count(*) FROM app_shop.customer WHERE id = %lld AND name = 'Round Trap' AND _version = 2 "
                          "AND credit = 12 AND tags = '{fleet,retail}'", rt);
    assert_int_equal(sql_int(q), 1);
    free(file);

    /* system columns headed in the caller's language (unless a field has the label), and read back so */
    long long hdr = create_id(manager, "tag", "{\"name\": \"Hdr\", \"weight\": 2}");
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/tag/export");
    assert_int_equal(r.status, 200);
    const char *en = "id,Version,Owner,Created at,Created by,Updated at,Updated by,name,weight,double\r\n";
    assert_memory_equal(r.body + 3, en, strlen(en));
    h_resp_free(&r);
    r = req("GET", manager, "Accept-Language: zh-CN\r\n", NULL, "/api/apps/shop/forms/tag/export");
    assert_int_equal(r.status, 200);
    const char *zh = "id,版本,负责人,创建时间,创建人,更新时间,更新人,name,weight,double\r\n";
    assert_memory_equal(r.body + 3, zh, strlen(zh));
    file = strdup(r.body + 3);
    h_resp_free(&r);
    r = post_csv(manager, "tag/import?mode=upsert&key=id", file);
    free(file);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "unchanged")), 1);
    char *ign = json_dumps(json_object_get(r.json, "ignored"), JSON_COMPACT);
    assert_string_equal(ign, "[\"_version\",\"_created_at\",\"_created_by\",\"_updated_at\",\"_updated_by\",\"double\"]");
    free(ign);
    h_resp_free(&r);
    snprintf(q, sizeof q, "WITH t AS (DELETE FROM app_shop.tag WHERE id = %lld AND _version = 1 RETURNING 1), "
             "h AS (DELETE FROM loom.history WHERE form = 'tag' RETURNING 1) SELECT count(*) FROM t", hdr);
    assert_int_equal(sql_int(q), 1);   /* (the tests after this one count every tag) */
    r = req("GET", admin, NULL, NULL, "/api/apps/shop/forms/secret/export");
    assert_int_equal(r.status, 200);
    const char *own = "id,Version,Owner,Created at,_created_by,Updated at,Updated by,x,Created by\r\n";
    assert_memory_equal(r.body + 3, own, strlen(own));
    h_resp_free(&r);
    /* a label only a hidden field has is no field's for that caller: the clerk's customers are headed "Owner" for
     * their owner (owner_note, labelled so, is hidden from it), the manager's keep "_owner" beside that field */
    r = req("GET", clerk, NULL, NULL, "/api/apps/shop/forms/customer/export");
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body + 3, "id,Version,Owner,", 17);
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/export");
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body + 3, "id,Version,_owner,", 18);
    h_resp_free(&r);
    r = post_csv(clerk, "customer/import?dry_run=true", "name,Owner\nHidden Label,\n");
    assert_int_equal(r.status, 200);   /* "Owner": the system column, ignored (the clerk may not set owners) */
    assert_string_equal(json_string_value(json_array_get(json_object_get(r.json, "ignored"), 0)), "_owner");
    h_resp_free(&r);
    r = post_csv(admin, "secret/import", "x,Created by\nv,w\n");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.secret WHERE x = 'v' AND maker = 'w'"), 1);

    /* values=labels: refs and users by title, options and states by label, for people to read */
    char body[128];
    snprintf(body, sizeof body, "{\"customer\": %lld}", rt);
    long long ord = create_id(manager, "order", body);
    r = req("GET", manager, NULL, NULL,
            "/api/apps/shop/forms/order/export?values=labels&fields=customer,taker,_owner&filter=%%7B%%22id%%22%%3A%lld%%7D", ord);
    assert_int_equal(r.status, 200);
    char want[160];   /* the owner, the customer by its title and the taker by name, where raw values are ids */
    snprintf(want, sizeof want, "%lld,manager,Round Trap,manager\r\n", ord);
    assert_non_null(strstr(r.body, "\r\n"));
    assert_string_equal(strstr(r.body, "\r\n") + 2, want);
    h_resp_free(&r);
    /* ... and times in the app's timezone (Asia/Shanghai), as people there read them */
    r = req("GET", manager, NULL, NULL,
            "/api/apps/shop/forms/order/export?values=labels&fields=placed_at&filter=%%7B%%22id%%22%%3A%lld%%7D", ord);
    assert_int_equal(r.status, 200);
    char lq[200];
    snprintf(lq, sizeof lq, "SELECT to_char(placed_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD HH24:MI:SS') FROM "
                            "app_shop.\"order\" WHERE id = %lld", ord);
    char *lt = h_sql_value(url, lq);
    snprintf(want, sizeof want, "%lld,%s\r\n", ord, lt);
    assert_string_equal(strstr(r.body, "\r\n") + 2, want);
    free(lt);
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL,
            "/api/apps/shop/forms/order/export?format=xlsx&values=labels&fields=customer&filter=%%7B%%22id%%22%%3A%lld%%7D", ord);
    assert_int_equal(r.status, 200);
    char *xsheet = zip_entry(r.body, r.body_len, "xl/worksheets/sheet1.xml");
    assert_non_null(xsheet);
    assert_non_null(strstr(xsheet, "<t>Round Trap</t>"));   /* the ref as its title, in a spreadsheet too */
    free(xsheet);
    h_resp_free(&r);
    /* booleans as words, in the caller's language (which the import reads back as booleans) */
    snprintf(body, sizeof body, "{\"customer\": %lld, \"urgent\": true, \"reason\": \"r\", \"note\": \"n\"}", rt);
    long long urgent = create_id(manager, "order", body);
    const char *langs[][2] = {{NULL, "Yes"}, {"Accept-Language: zh-CN\r\n", "是"}};
    for (int k = 0; k < 2; k++) {
        r = req("GET", manager, langs[k][0], NULL,
                "/api/apps/shop/forms/order/export?values=labels&fields=urgent&filter=%%7B%%22id%%22%%3A%lld%%7D", urgent);
        snprintf(want, sizeof want, "%lld,%s\r\n", urgent, langs[k][1]);
        assert_string_equal(strstr(r.body, "\r\n") + 2, want);
        h_resp_free(&r);
    }
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/export?fields=urgent&filter=%%7B%%22id%%22%%3A%lld%%7D", urgent);
    snprintf(want, sizeof want, "%lld,true\r\n", urgent);   /* raw */
    assert_string_equal(strstr(r.body, "\r\n") + 2, want);
    h_resp_free(&r);
    /* an .xlsx imports as its first sheet: Loom's own export, dates, datetimes (UTC), money, booleans and
     * Chinese text, comes back unchanged */
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/export?format=xlsx&fields=customer,placed_at,discount,urgent,note");
    assert_int_equal(r.status, 200);
    long long orders = sql_int("SELECT count(*) FROM app_shop.\"order\"");
    h_resp back = post_bytes(manager, "/api/apps/shop/forms/order/import?mode=upsert&key=id",
                             "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", r.body, r.body_len);
    h_resp_free(&r);
    if (back.status != 200 || json_integer_value(json_object_get(back.json, "unchanged")) != orders)
        fail_msg("xlsx re-import of %lld orders: %d %s", orders, back.status, back.body);
    assert_int_equal(json_integer_value(json_object_get(back.json, "updated")), 0);
    h_resp_free(&back);
    r = req("POST", manager, "Content-Type: application/octet-stream\r\n", "PK\x03\x04 not really a zip", "/api/apps/shop/forms/order/import");
    expect_errors(&r, 400, "bad_request", " bad_request");
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/export?fields=customer&filter=%%7B%%22id%%22%%3A%lld%%7D", ord);
    snprintf(want, sizeof want, "%lld,%lld\r\n", ord, rt);   /* raw by default: what imports back */
    assert_string_equal(strstr(r.body, "\r\n") + 2, want);
    h_resp_free(&r);
}

/* ---- hostile input and the permission matrix ---- */

static void test_hostile_bodies(void **state)
{
    (void)state;
    static const char *const keys[] = {
        "name\\\"; DROP TABLE app_shop.customer; --", "name' OR '1'='1", "\\\"name\\\"", "name--", "NAME", " name",
        "customer.name", "lines.product", "$where", "id)", "_owner; DELETE", "x\\u00e9", "\\u540d\\u5b57",
    };
    int server_errors = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"name\": \"Hostile %zu\", \"%s\": \"x\"}", i, keys[i]);
        h_resp r = create(manager, "customer", body);
        server_errors += r.status >= 500;
        if (r.status != 422 && r.status != 400)
            fprintf(stderr, "%s -> %d %s\n", keys[i], r.status, r.body);
        assert_true(r.status == 422 || r.status == 400);
        h_resp_free(&r);
    }
    /* hostile values are values: stored and read back as they were */
    static const char *const values[] = {"'); DROP TABLE app_shop.customer; --", "\\\\'\\\"$1", "%_%", "O'Brien; --"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"name\": \"%s %zu\", \"email\": null}", values[i], i);
        h_resp r = create(manager, "customer", body);
        assert_int_equal(r.status, 201);
        json_t *sent = json_loads(body, 0, NULL);
        assert_non_null(sent);
        assert_string_equal(str(&r, "name"), json_string_value(json_object_get(sent, "name")));
        json_decref(sent);
        h_resp_free(&r);
    }
    /* hostile import headers and expand names */
    h_resp r = post_csv(manager, "customer/import", "\"name\"\"; DROP TABLE x; --\"\nA\n");
    server_errors += r.status >= 500;
    assert_int_equal(r.status, 422);
    h_resp_free(&r);
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records?expand=rep%%22%%3B%%20DROP");
    server_errors += r.status >= 500;
    assert_int_equal(r.status, 400);
    h_resp_free(&r);
    r = req("POST", manager, "Idempotency-Key: '; DROP TABLE loom.idempotency; --\r\n", "{\"name\": \"Hostile key\"}",
            "/api/apps/shop/forms/customer/records");
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    assert_int_equal(server_errors, 0);
    assert_true(sql_int("SELECT count(*) FROM app_shop.customer") > 0);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.idempotency WHERE key = '''; DROP TABLE loom.idempotency; --'"), 1);
}

/* Every role x every operation on customers (and what each sees of the fields). */
static void test_permission_matrix(void **state)
{
    (void)state;
    long long outsider_id;
    char *outsider = make_user("outsider", "[]", &outsider_id);
    assert_non_null(outsider);
    /* a record of the clerk's (normal level) and a vip one of the manager's */
    long long own = create_id(clerk, "customer", "{\"name\": \"Matrix own\"}");
    long long vip = create_id(manager, "customer", "{\"name\": \"Matrix vip\", \"level\": \"vip\", \"owner_note\": \"n\"}");
    struct {
        const char *who;
        char *token;
        int want[8];   /* list, get own, get vip, create, patch own, patch vip, history of vip, export */
        bool sees_note, writes_credit;
    } m[] = {
        {"clerk", clerk, {200, 200, 200, 201, 200, 403, 200, 200}, false, false},
        {"viewer", viewer, {200, 404, 200, 403, 404, 403, 200, 200}, true, false},   /* hides only contract */
        {"manager", manager, {200, 200, 200, 201, 200, 200, 200, 200}, true, true},
        {"outsider", outsider, {404, 404, 404, 404, 404, 404, 404, 404}, false, false},
        {"admin", admin, {200, 200, 200, 201, 200, 200, 200, 200}, true, true},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        const char *t = m[i].token;
        int got[8];
        h_resp r = req("GET", t, NULL, NULL, "/api/apps/shop/forms/customer/records?limit=1000");
        got[0] = r.status;
        if (r.status == 200)   /* the list holds no field the role may not see */
            assert_true((strstr(r.body, "\"owner_note\"") != NULL) == m[i].sees_note);
        h_resp_free(&r);
        r = req("GET", t, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld", own);
        got[1] = r.status;
        h_resp_free(&r);
        r = req("GET", t, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld", vip);
        got[2] = r.status;
        if (r.status == 200)
            assert_true((json_object_get(r.json, "owner_note") != NULL) == m[i].sees_note);
        h_resp_free(&r);
        char body[128];
        snprintf(body, sizeof body, "{\"name\": \"Matrix new %s\"}", m[i].who);
        r = create(t, "customer", body);
        got[3] = r.status;
        h_resp_free(&r);
        snprintf(body, sizeof body, "{\"email\": \"%s@matrix.cn\"}", m[i].who);
        r = req("PATCH", t, NULL, body, "/api/apps/shop/forms/customer/records/%lld", own);
        got[4] = r.status;
        h_resp_free(&r);
        r = req("PATCH", t, NULL, body, "/api/apps/shop/forms/customer/records/%lld", vip);
        got[5] = r.status;
        h_resp_free(&r);
        r = req("GET", t, NULL, NULL, "/api/apps/shop/forms/customer/records/%lld/history", vip);
        got[6] = r.status;
        if (r.status == 200)
            assert_true((strstr(r.body, "owner_note") != NULL) == m[i].sees_note);
        h_resp_free(&r);
        r = req("GET", t, NULL, NULL, "/api/apps/shop/forms/customer/export?header=id");
        got[7] = r.status;
        if (r.status == 200)
            assert_true((strstr(r.body, "owner_note") != NULL) == m[i].sees_note);
        h_resp_free(&r);
        for (int k = 0; k < 8; k++)
            if (got[k] != m[i].want[k])
                fail_msg("%s: operation %d answered %d, not %d", m[i].who, k, got[k], m[i].want[k]);
        /* a field it may only read, or not see: refused on write */
        r = req("PATCH", t, NULL, "{\"credit\": 1}", "/api/apps/shop/forms/customer/records/%lld", own);
        if (m[i].writes_credit)
            assert_int_equal(r.status, 200);
        else
            assert_true(r.status == 422 || r.status == 404);
        h_resp_free(&r);
    }
    /* deletes last: only the manager (and admins) may */
    const char *who[] = {clerk, viewer, outsider, manager};
    int want[] = {403, 403, 404, 204};
    for (int i = 0; i < 4; i++) {
        h_resp r = req("DELETE", who[i], NULL, NULL, "/api/apps/shop/forms/customer/records/%lld", vip);
        assert_int_equal(r.status, want[i]);
        h_resp_free(&r);
    }
    free(outsider);
}

/* ---- idempotency and concurrency ---- */

typedef struct shot {
    const char *method, *token, *headers, *body;
    char path[160];
    h_resp r;
} shot;

static void *fire(void *p)
{
    shot *s = p;
    s->r = h_req_h(srv.port, s->method, s->path, s->token, s->body, s->headers);
    return NULL;
}

/* Sends n requests at once, each on its own connection. */
static void volley(shot *s, int n)
{
    pthread_t t[64];
    for (int i = 0; i < n; i++)
        assert_int_equal(pthread_create(&t[i], NULL, fire, &s[i]), 0);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

static void test_idempotency_key(void **state)
{
    (void)state;
    const char *path = "/api/apps/shop/forms/customer/records";
    h_resp a = h_req_h(srv.port, "POST", path, clerk, "{\"name\": \"Idem One\"}", "Idempotency-Key: k-1\r\n");
    h_resp b = h_req_h(srv.port, "POST", path, clerk, "{\"name\": \"Idem One\"}", "Idempotency-Key: k-1\r\n");
    assert_int_equal(a.status, 201);
    assert_int_equal(b.status, 201);
    assert_string_equal(a.body, b.body);
    char etag[32];
    assert_true(h_resp_header(&b, "ETag", etag, sizeof etag));
    h_resp_free(&a);
    h_resp_free(&b);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name = 'Idem One'"), 1);
    /* same key, other body */
    a = h_req_h(srv.port, "POST", path, clerk, "{\"name\": \"Idem Two\"}", "Idempotency-Key: k-1\r\n");
    expect_errors(&a, 422, "idempotency_mismatch", NULL);
    /* scoped per user: another user's same key is its own */
    a = h_req_h(srv.port, "POST", path, clerk2, "{\"name\": \"Idem Three\"}", "Idempotency-Key: k-1\r\n");
    assert_int_equal(a.status, 201);
    h_resp_free(&a);
    /* a failure is not remembered: the corrected retry with the same body runs */
    a = h_req_h(srv.port, "POST", path, clerk, "{\"name\": \"Idem One\"}", "Idempotency-Key: k-2\r\n");
    expect_errors(&a, 409, "not_unique", NULL);
    assert_true(h_sql(url, "UPDATE app_shop.customer SET name = 'Idem One (old)' WHERE name = 'Idem One'"));
    a = h_req_h(srv.port, "POST", path, clerk, "{\"name\": \"Idem One\"}", "Idempotency-Key: k-2\r\n");
    assert_int_equal(a.status, 201);
    h_resp_free(&a);
    /* concurrent requests with one key: one record, one answer */
    shot s[12];
    for (int i = 0; i < 12; i++) {
        s[i] = (shot){.method = "POST", .token = clerk, .headers = "Idempotency-Key: k-par\r\n", .body = "{\"name\": \"Idem Par\"}"};
        snprintf(s[i].path, sizeof s[i].path, "%s", path);
    }
    volley(s, 12);
    for (int i = 0; i < 12; i++) {
        assert_int_equal(s[i].r.status, 201);
        assert_string_equal(s[i].r.body, s[0].r.body);
    }
    for (int i = 0; i < 12; i++)
        h_resp_free(&s[i].r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.customer WHERE name = 'Idem Par'"), 1);
}

/* A server deletes what has expired when it starts (and every 10 minutes):
 * idempotency keys past their 24 hours, sessions a week past their end;
 * what is still current stays. */
static void test_purge(void **state)
{
    (void)state;
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO loom.idempotency (user_id, route, key, body_hash, created_at) VALUES "
             "(%lld, 'purge', 'old', 'x', now() - interval '25 hours'), (%lld, 'purge', 'new', 'x', now() - interval '23 hours'); "
             "INSERT INTO loom.sessions (token_hash, user_id, expires_at) VALUES "
             "('purge-old', %lld, now() - interval '8 days'), ('purge-new', %lld, now() - interval '6 days')",
             clerk_id, clerk_id, clerk_id, clerk_id);
    assert_true(h_sql(url, sql));
    h_server other;
    const char *args[] = {"--workers", "1", NULL};
    assert_true(h_server_start(&other, url, args, NULL));
    double end = h_now() + 10;
    while (h_now() < end && sql_int("SELECT count(*) FROM loom.idempotency WHERE route = 'purge'") > 1)
        usleep(20000);
    while (h_now() < end && sql_int("SELECT count(*) FROM loom.sessions WHERE token_hash LIKE 'purge-%'") > 1)
        usleep(20000);
    assert_int_equal(h_server_stop(&other), 0);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.idempotency WHERE route = 'purge' AND key = 'new'"), 1);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.idempotency WHERE route = 'purge'"), 1);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.sessions WHERE token_hash = 'purge-new'"), 1);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.sessions WHERE token_hash LIKE 'purge-%'"), 1);
}

static void test_parallel_autonumbers(void **state)
{
    (void)state;
    long long before = sql_int("SELECT coalesce(max(id), 0) FROM app_shop.\"order\"");
    enum { N = 40 };
    shot s[N];
    for (int i = 0; i < N; i++) {
        s[i] = (shot){.method = "POST", .token = manager, .body = "{\"customer\": 1, \"lines\": [{\"product\": \"p\"}]}"};
        snprintf(s[i].path, sizeof s[i].path, "/api/apps/shop/forms/order/records");
    }
    volley(s, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(s[i].r.status, 201);
        h_resp_free(&s[i].r);
    }
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT number) FROM app_shop.\"order\" WHERE id > %lld", before);
    assert_int_equal(sql_int(sql), N);
    /* and no gaps: N numbers in a row */
    snprintf(sql, sizeof sql,
             "SELECT max(right(number, 4)::int) - min(right(number, 4)::int) + 1 FROM app_shop.\"order\" WHERE id > %lld",
             before);
    assert_int_equal(sql_int(sql), N);
}

/* Of n PATCHes sent with one If-Match, exactly one was 200 and the others
 * 412: the winner's index (its answer kept, the others freed). */
static int one_wins(shot *s, int n)
{
    int won = -1, stale = 0;
    for (int i = 0; i < n; i++) {
        if (s[i].r.status == 200) {
            assert_int_equal(won, -1);
            won = i;
            continue;
        }
        stale += s[i].r.status == 412;
        h_resp_free(&s[i].r);
    }
    assert_int_not_equal(won, -1);
    assert_int_equal(stale, n - 1);
    return won;
}

static long long batched_queries(void)
{
    h_resp m = req("GET", NULL, NULL, NULL, "/metrics");
    const char *line = strstr(m.body, "\nloom_batched_queries_total ");
    assert_non_null(line);
    long long n = atoll(line + strlen("\nloom_batched_queries_total "));
    h_resp_free(&m);
    return n;
}

/* Creates that are one statement each (form tag: nothing to read first, no
 * rows, no flow) go to the database in one round trip per worker's batch. A
 * unique clash in a batch rolls back the others' too: they run again alone,
 * so every create is answered once, as if it had run alone. */
static void test_parallel_creates(void **state)
{
    (void)state;
    enum { N = 48, NAMED = 30, CLASH = 10, BAD = 4 };
    shot s[N];
    char bodies[N][96];
    for (int i = 0; i < N; i++) {
        const char *token = manager;
        if (i < NAMED + CLASH)   /* the last CLASH reuse the first names */
            snprintf(bodies[i], sizeof bodies[i], "{\"name\": \"t%d\", \"weight\": %d}", i % NAMED, i);
        else if (i < NAMED + CLASH + BAD)
            snprintf(bodies[i], sizeof bodies[i], "{\"name\": \"bad%d\", \"weight\": -1}", i);
        else   /* clerk reads only its own: the whole create in a transaction, as before */
            snprintf(bodies[i], sizeof bodies[i], "{\"name\": \"c%d\", \"weight\": 1}", i), token = clerk;
        s[i] = (shot){.method = "POST", .token = token, .body = bodies[i]};
        snprintf(s[i].path, sizeof s[i].path, "/api/apps/shop/forms/tag/records");
    }
    long long batched = batched_queries();
    volley(s, N);
    int created = 0, clashed = 0, invalid = 0;
    for (int i = 0; i < N; i++) {
        h_resp *r = &s[i].r;
        if (r->status == 201) {
            created++;
            long long id = json_integer_value(json_object_get(r->json, "id"));
            long long weight = json_integer_value(json_object_get(r->json, "weight"));
            assert_int_equal(json_integer_value(json_object_get(r->json, "double")), 2 * weight);
            assert_int_equal(json_integer_value(json_object_get(r->json, "_version")), 1);
            char etag[32], sql[256];
            assert_true(h_resp_header(r, "ETag", etag, sizeof etag));
            assert_string_equal(etag, "\"1\"");
            /* the answer is the row stored, with one history entry */
            snprintf(sql, sizeof sql,
                     "SELECT count(*) FROM app_shop.tag t JOIN loom.history h ON h.form = 'tag' AND h.record = t.id "
                     "WHERE t.id = %lld AND t.name = '%s' AND t.weight = %lld AND t.double = %lld AND h.action = 'create'",
                     id, json_string_value(json_object_get(r->json, "name")), weight, 2 * weight);
            assert_int_equal(sql_int(sql), 1);
        } else if (r->status == 409) {
            clashed++;
            expect_errors(r, 409, "not_unique", "/name not_unique");
            continue;
        } else {
            invalid++;
            expect_errors(r, 422, "validation_failed", "/weight too_small");
            continue;
        }
        h_resp_free(r);
    }
    assert_int_equal(created, N - CLASH - BAD);
    assert_int_equal(clashed, CLASH);
    assert_int_equal(invalid, BAD);
    assert_int_equal(sql_int("SELECT count(*) FROM app_shop.tag"), N - CLASH - BAD);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE form = 'tag'"), N - CLASH - BAD);
    assert_true(batched_queries() > batched);
}

/* An update whose row statement is all it writes commits with it, in one
 * round trip: of parallel PATCHes with one If-Match exactly one wins, a
 * unique clash is 409 with nothing written, and the worker's connection
 * goes on (its transaction rolled back). */
static void test_update_commits_with_its_row(void **state)
{
    (void)state;
    long long id = create_id(manager, "tag", "{\"name\": \"u-1\", \"weight\": 1}");
    create_id(manager, "tag", "{\"name\": \"u-2\"}");
    enum { N = 12 };
    shot s[N];
    char bodies[N][64];
    for (int i = 0; i < N; i++) {
        snprintf(bodies[i], sizeof bodies[i], "{\"weight\": %d}", 10 + i);
        s[i] = (shot){.method = "PATCH", .token = manager, .headers = "If-Match: \"1\"\r\n", .body = bodies[i]};
        snprintf(s[i].path, sizeof s[i].path, "/api/apps/shop/forms/tag/records/%lld", id);
    }
    volley(s, N);
    h_resp *r = &s[one_wins(s, N)].r;
    long long won = json_integer_value(json_object_get(r->json, "weight"));
    assert_int_equal(json_integer_value(json_object_get(r->json, "double")), 2 * won);
    assert_int_equal(json_integer_value(json_object_get(r->json, "_version")), 2);
    h_resp_free(r);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT weight * 1000 + _version FROM app_shop.tag WHERE id = %lld", id);
    assert_int_equal(sql_int(sql), won * 1000 + 2);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM loom.history WHERE form = 'tag' AND record = %lld", id);
    assert_int_equal(sql_int(sql), 2);
    /* a clash, as many times as there are workers: each rolls back and serves the next request */
    for (int i = 0; i < 8; i++) {
        h_resp r = req("PATCH", manager, NULL, "{\"name\": \"u-2\", \"weight\": 5}", "/api/apps/shop/forms/tag/records/%lld", id);
        expect_errors(&r, 409, "not_unique", "/name not_unique");
        r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/tag/records/%lld", id);
        assert_int_equal(r.status, 200);
        assert_string_equal(str(&r, "name"), "u-1");
        assert_int_equal(json_integer_value(json_object_get(r.json, "weight")), won);
        h_resp_free(&r);
    }
    h_resp last = req("PATCH", manager, NULL, "{\"name\": \"u-3\"}", "/api/apps/shop/forms/tag/records/%lld", id);
    assert_int_equal(last.status, 200);
    assert_int_equal(json_integer_value(json_object_get(last.json, "_version")), 3);
    h_resp_free(&last);
    assert_int_equal(sql_int(sql), 3);
}

static void test_parallel_patch_same_version(void **state)
{
    (void)state;
    long long id = create_id(manager, "customer", "{\"name\": \"Race Ltd\"}");
    enum { N = 10 };
    shot s[N];
    char bodies[N][64];
    for (int i = 0; i < N; i++) {
        snprintf(bodies[i], sizeof bodies[i], "{\"email\": \"r%d@race.cn\"}", i);
        s[i] = (shot){.method = "PATCH", .token = manager, .headers = "If-Match: \"1\"\r\n", .body = bodies[i]};
        snprintf(s[i].path, sizeof s[i].path, "/api/apps/shop/forms/customer/records/%lld", id);
    }
    volley(s, N);
    h_resp_free(&s[one_wins(s, N)].r);
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT _version FROM app_shop.customer WHERE id = %lld", id);
    assert_int_equal(sql_int(sql), 2);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM loom.history WHERE form = 'customer' AND record = %lld", id);
    assert_int_equal(sql_int(sql), 2);
}

/* Sorting through a ref: pages walked equal the one-page list, the order follows the target's field,
 * and what the caller may not see of the target is null (or unknown_field when hidden). */
static json_t *walk_orders(const char *token, const char *sort, int limit)
{
    json_t *all = json_array();
    char cursor[2048] = "";
    for (int guard = 0; guard < 500; guard++) {
        h_resp r = req("GET", token, NULL, NULL, "/api/apps/shop/forms/order/records?sort=%s&limit=%d&fields=customer%s%s",
                       sort, limit, *cursor ? "&cursor=" : "", cursor);
        assert_int_equal(r.status, 200);
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(r.json, "items"), i, it) json_array_append(all, json_object_get(it, "id"));
        const char *next = json_string_value(json_object_get(r.json, "next_cursor"));
        snprintf(cursor, sizeof cursor, "%s", next ? next : "");
        h_resp_free(&r);
        if (!next)
            break;
    }
    return all;
}

static void test_sort_through_refs(void **state)
{
    (void)state;
    const char *sorts[] = {"customer.name", "-customer.name", "customer.level,-id", "-customer.since,customer.name"};
    for (size_t i = 0; i < sizeof sorts / sizeof sorts[0]; i++) {
        json_t *whole = walk_orders(manager, sorts[i], 1000), *paged = walk_orders(manager, sorts[i], 7);
        assert_true(json_array_size(whole) > 50);
        if (!json_equal(whole, paged))
            fail_msg("sort %s: the pages differ from one list", sorts[i]);
        json_decref(whole);
        json_decref(paged);
    }
    /* the order is the customers' names' */
    char *want = h_sql_value(url, "SELECT string_agg(o.id::text, ',' ORDER BY c.name, o.id) FROM app_shop.\"order\" o "
                                  "JOIN app_shop.customer c ON c.id = o.customer");
    json_t *got = walk_orders(manager, "customer.name", 1000);
    buf b = {0};
    size_t i;
    json_t *id;
    json_array_foreach(got, i, id) buf_printf(&b, "%s%lld", i ? "," : "", (long long)json_integer_value(id));
    assert_string_equal(b.data, want);
    buf_free(&b);
    free(want);
    json_decref(got);
    /* a select sorts in its options' order (vip before normal, unlike their text), ascending and descending */
    const struct {
        const char *sort, *order_by;
    } ranked[] = {{"customer.level,-id", "array_position(ARRAY['vip','normal'], c.level) NULLS LAST, o.id DESC"},
                  {"-customer.level", "array_position(ARRAY['vip','normal'], c.level) DESC NULLS FIRST, o.id DESC"}};
    for (size_t k = 0; k < sizeof ranked / sizeof ranked[0]; k++) {
        char sql[512];
        snprintf(sql, sizeof sql,
                 "SELECT string_agg(o.id::text, ',' ORDER BY %s) FROM app_shop.\"order\" o LEFT JOIN app_shop.customer c "
                 "ON c.id = o.customer",
                 ranked[k].order_by);
        want = h_sql_value(url, sql);
        got = walk_orders(manager, ranked[k].sort, 7);
        buf_reset(&b);
        json_array_foreach(got, i, id) buf_printf(&b, "%s%lld", i ? "," : "", (long long)json_integer_value(id));
        assert_string_equal(b.data, want);
        buf_free(&b);
        free(want);
        json_decref(got);
    }
    char *levels = h_sql_value(url, "SELECT count(DISTINCT level) FROM app_shop.customer c JOIN app_shop.\"order\" o ON o.customer = c.id");
    assert_string_equal(levels, "2");   /* both options are there to order */
    free(levels);
    /* the viewer reads only vip customers: the others' names are null to it, so sort last */
    h_resp r = req("GET", viewer, NULL, NULL, "/api/apps/shop/forms/order/records?sort=customer.name&limit=1000&expand=customer");
    assert_int_equal(r.status, 200);
    json_t *items = json_object_get(r.json, "items");
    bool seen_untitled = false;
    json_array_foreach(items, i, id)
    {
        bool titled = json_object_get(json_object_get(id, "customer"), "title") != NULL;
        assert_false(seen_untitled && titled);   /* every readable one before every unreadable one */
        seen_untitled = seen_untitled || !titled;
    }
    h_resp_free(&r);
    /* search finds an order by its customer's name, only where the caller reads that customer */
    long long zeta = create_id(manager, "customer", "{\"name\": \"Searchable Zeta\"}"),
              zeta_vip = create_id(manager, "customer", "{\"name\": \"Zeta Vip\", \"level\": \"vip\"}");
    char zbody[96];
    const struct {
        long long customer, owner;
    } zorders[] = {{zeta, manager_id}, {zeta, manager_id}, {zeta, viewer_id}, {zeta_vip, viewer_id}};
    for (size_t k = 0; k < sizeof zorders / sizeof zorders[0]; k++) {   /* the viewer owns two */
        snprintf(zbody, sizeof zbody, "{\"customer\": %lld, \"_owner\": %lld}", zorders[k].customer, zorders[k].owner);
        r = create(manager, "order", zbody);
        assert_int_equal(r.status, 201);
        h_resp_free(&r);
    }
    const struct {
        char **token;
        long total;
    } zfound[] = {{&manager, 4}, {&viewer, 1}};   /* the viewer reads Zeta Vip, not Searchable Zeta */
    for (size_t k = 0; k < sizeof zfound / sizeof zfound[0]; k++) {
        r = req("GET", *zfound[k].token, NULL, NULL, "/api/apps/shop/forms/order/records?search=ZETA&count=true");
        assert_int_equal(r.status, 200);
        assert_int_equal(json_integer_value(json_object_get(r.json, "total")), zfound[k].total);
        h_resp_free(&r);
    }
    /* the viewer's customer scope puts parameters in the sort and the expand, which the count does not have:
     * the total is the number of records the same list shows whole */
    const char *counted[] = {"sort=customer.name", "sort=-customer.name&expand=customer", "expand=customer"};
    for (size_t k = 0; k < sizeof counted / sizeof counted[0]; k++) {
        const char *filter = "filter=%7B%22id%22%3A%7B%22%24gt%22%3A1%7D%7D";
        r = req("GET", viewer, NULL, NULL, "/api/apps/shop/forms/order/records?%s&limit=1000&%s", counted[k], filter);
        assert_int_equal(r.status, 200);
        size_t whole = json_array_size(json_object_get(r.json, "items"));
        assert_true(whole > 2);
        h_resp_free(&r);
        r = req("GET", viewer, NULL, NULL, "/api/apps/shop/forms/order/records?%s&count=true&limit=2&%s", counted[k], filter);
        assert_int_equal(r.status, 200);
        assert_int_equal(json_integer_value(json_object_get(r.json, "total")), whole);
        assert_int_equal(json_array_size(json_object_get(r.json, "items")), 2);
        h_resp_free(&r);
    }
    r = req("GET", clerk, NULL, NULL, "/api/apps/shop/forms/order/records?sort=customer.owner_note");
    expect_errors(&r, 400, "unknown_field", "/sort unknown_field");
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/records?sort=number.x");
    expect_errors(&r, 400, "unknown_field", "/sort unknown_field");
    r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/order/records?sort=customer.tags");
    expect_errors(&r, 400, "bad_request", "/sort bad_request");
}

/* A publish that changes a form is seen by the next list at once (built queries are cached per worker,
 * keyed by the snapshot). */
static void test_lists_follow_a_publish(void **state)
{
    (void)state;
    for (int i = 0; i < 8; i++) {   /* every worker builds and keeps the query */
        h_resp r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records?limit=3&sort=id");
        assert_int_equal(r.status, 200);
        assert_null(json_object_get(json_array_get(json_object_get(r.json, "items"), 0), "nickname"));
        h_resp_free(&r);
    }
    h_resp r = req("GET", admin, NULL, NULL, "/api/design/apps/shop");
    assert_int_equal(r.status, 200);
    json_t *draft = json_incref(r.json);
    h_resp_free(&r);
    json_t *fields = json_object_get(json_array_get(json_object_get(draft, "forms"), 0), "fields");
    json_array_append_new(fields, json_pack("{s:s, s:s}", "id", "nickname", "type", "text"));
    char *text = json_dumps(draft, 0);
    json_decref(draft);
    r = req("PUT", admin, NULL, text, "/api/design/apps/shop");
    free(text);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = req("POST", admin, NULL, NULL, "/api/design/apps/shop/publish");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    /* the server swaps snapshots when the publish's NOTIFY arrives: wait for it, then every worker agrees */
    bool seen = false;
    for (int i = 0; i < 100 && !seen; i++) {
        r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records?limit=3&sort=id");
        seen = json_object_get(json_array_get(json_object_get(r.json, "items"), 0), "nickname") != NULL;
        h_resp_free(&r);
        if (!seen)
            usleep(20000);
    }
    assert_true(seen);
    for (int i = 0; i < 8; i++) {
        r = req("GET", manager, NULL, NULL, "/api/apps/shop/forms/customer/records?limit=3&sort=id");
        assert_int_equal(r.status, 200);
        assert_non_null(json_object_get(json_array_get(json_object_get(r.json, "items"), 0), "nickname"));
        h_resp_free(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_defaults_formulas_autonumber),
        cmocka_unit_test(test_create_reports_every_problem),
        cmocka_unit_test(test_modes_and_mass_assignment),
        cmocka_unit_test(test_refs_and_users),
        cmocka_unit_test(test_update_if_match_and_rows),
        cmocka_unit_test(test_update_modes_and_scope),
        cmocka_unit_test(test_delete_and_on_delete),
        cmocka_unit_test(test_history_hides_fields),
        cmocka_unit_test(test_expand),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_import),
        cmocka_unit_test(test_import_batches),
        cmocka_unit_test(test_upsert_in_bulk),
        cmocka_unit_test(test_export),
        cmocka_unit_test(test_hostile_bodies),
        cmocka_unit_test(test_permission_matrix),
        cmocka_unit_test(test_idempotency_key),
        cmocka_unit_test(test_purge),
        cmocka_unit_test(test_parallel_autonumbers),
        cmocka_unit_test(test_parallel_creates),
        cmocka_unit_test(test_update_commits_with_its_row),
        cmocka_unit_test(test_parallel_patch_same_version),
        cmocka_unit_test(test_sort_through_refs),
        cmocka_unit_test(test_lists_follow_a_publish),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
