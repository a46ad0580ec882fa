/* test_snapshot.c - two servers on one database: a publish through one is
 * served by the other at once, without a restart (NOTIFY loom_meta and the
 * snapshot swap), and so is a delete. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "harness.h"

static h_server a, b;
static char *url, *admin;

static int setup(void **state)
{
    (void)state;
    url = h_fresh_db("loomtest_snapshot");
    const char *args[] = {"--workers", "2", NULL};
    if (!h_server_start(&a, url, args, NULL) || !h_server_start(&b, url, args, NULL))
        return -1;
    admin = h_login(a.port, "admin", H_ADMIN_PASSWORD);
    return admin ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int st = h_server_stop(&a) | h_server_stop(&b);
    free(admin);
    free(url);
    return st == 0 ? 0 : -1;
}

/* GET path on port with an Accept-Language header. */
static h_resp get_lang(int port, const char *path, const char *token, const char *lang)
{
    h_conn c;
    h_resp r = {0};
    if (!h_conn_open(&c, port))
        return r;
    char req[1024];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s%s%s\r\n", path, token,
             lang ? "Accept-Language: " : "", lang ? lang : "", lang ? "\r\n" : "");
    h_conn_sends(&c, req);
    h_conn_read(&c, &r, 10000);
    h_conn_close(&c);
    return r;
}

/* Waits until GET /api/apps/shop on port answers want_status (and version,
 * when 200); returns the seconds it took, or -1. */
static double wait_for(int port, int want_status, int want_version)
{
    double t0 = h_now();
    while (h_now() - t0 < 5) {
        h_resp r = h_req(port, "GET", "/api/apps/shop", admin, NULL);
        bool ok = r.status == want_status &&
                  (want_status != 200 || json_integer_value(json_object_get(r.json, "version")) == want_version);
        h_resp_free(&r);
        if (ok)
            return h_now() - t0;
        usleep(20000);
    }
    return -1;
}

static void test_publish_reaches_the_other_server(void **state)
{
    (void)state;
    pid_t b_pid = b.pid;
    h_resp r = h_req(a.port, "POST", "/api/admin/users", admin,
                     "{\"username\": \"clara\", \"password\": \"clara-password\", \"roles\": {\"shop\": [\"clerk\"]}}");
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    char *clara = h_login(b.port, "clara", "clara-password");
    assert_non_null(clara);
    r = h_req(b.port, "GET", "/api/apps/shop", clara, NULL);
    assert_int_equal(r.status, 404);   /* not published yet */
    h_resp_free(&r);

    const char *shop =
        "{\"format\": \"loom.app/1\", \"app\": {\"id\": \"shop\", \"label\": {\"zh-CN\": \"商店\", \"en\": \"Shop\"}, "
        "\"locales\": [\"zh-CN\", \"en\"], \"roles\": [{\"id\": \"clerk\"}]}, "
        "\"forms\": [{\"id\": \"item\", \"label\": {\"zh-CN\": \"商品\", \"en\": \"Item\"}, \"fields\": [{\"id\": \"name\", \"type\": \"text\"}]}, "
        "{\"id\": \"secret\", \"fields\": [{\"id\": \"x\", \"type\": \"text\"}]}], "
        "\"permissions\": {\"item\": {\"clerk\": {\"read\": \"all\"}}}}";
    r = h_req(a.port, "POST", "/api/design/import?publish=true", admin, shop);
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    double took = wait_for(b.port, 200, 1);
    assert_true(took >= 0);
    printf("  server B served version 1 after %.3f s\n", took);

    /* what clara sees on B: her app, in her language, with the forms she may use */
    r = get_lang(b.port, "/api/apps", clara, NULL);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "items"), 0), "label")), "商店");
    h_resp_free(&r);
    r = get_lang(b.port, "/api/apps/shop", clara, "en-GB;q=0.9, en;q=0.8");
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "label")), "Shop");
    json_t *forms = json_object_get(r.json, "forms");
    assert_int_equal(json_array_size(forms), 1);   /* not "secret": no permission on it */
    assert_string_equal(json_string_value(json_object_get(json_array_get(forms, 0), "label")), "Item");
    h_resp_free(&r);

    /* a new version through A reaches B */
    r = h_req(a.port, "PUT", "/api/design/apps/shop/settings", admin,
              "{\"id\": \"shop\", \"label\": {\"zh-CN\": \"新商店\", \"en\": \"New shop\"}, \"locales\": [\"zh-CN\", \"en\"], "
              "\"roles\": [{\"id\": \"clerk\"}]}");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = h_req(a.port, "POST", "/api/design/apps/shop/publish", admin, NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    took = wait_for(b.port, 200, 2);
    assert_true(took >= 0);
    printf("  server B served version 2 after %.3f s\n", took);
    r = get_lang(b.port, "/api/apps/shop", clara, "zh-CN");
    assert_string_equal(json_string_value(json_object_get(r.json, "label")), "新商店");
    h_resp_free(&r);

    /* and a delete */
    r = h_req(a.port, "DELETE", "/api/design/apps/shop?confirm=shop", admin, NULL);
    assert_int_equal(r.status, 204);
    h_resp_free(&r);
    assert_true(wait_for(b.port, 404, 0) >= 0);
    assert_int_equal(b.pid, b_pid);   /* the same process all along */
    assert_int_equal(kill(b.pid, 0), 0);
    free(clara);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_reaches_the_other_server),
    };
    return cmocka_run_group_tests_name("e2e_snapshot", tests, setup, teardown);
}
