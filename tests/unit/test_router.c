/* test_router.c - route matching, path parameters, percent-decoding and
 * query parameters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "router.h"

static void noop(void *c)
{
    (void)c;
}

static const route routes[] = {
    {"GET", "/healthz", noop, 0},
    {"GET", "/api/admin/users", noop, 0},
    {"GET", "/api/admin/users/{id}", noop, 0},
    {"PATCH", "/api/admin/users/{id}", noop, 0},
    {"GET", "/api/apps/{app}/forms/{form}/records/{id}", noop, 0},
};
#define N (int)(sizeof routes / sizeof routes[0])

static void test_literal_and_params(void **state)
{
    (void)state;
    arena *a = arena_new();
    route_match m;
    assert_true(router_match(routes, N, "GET", "/healthz", a, &m));
    assert_int_equal(m.index, 0);
    assert_int_equal(m.nparams, 0);

    assert_true(router_match(routes, N, "PATCH", "/api/admin/users/42", a, &m));
    assert_int_equal(m.index, 3);
    assert_string_equal(m.params[0], "42");

    assert_true(router_match(routes, N, "GET", "/api/apps/fours/forms/lead/records/7", a, &m));
    assert_int_equal(m.index, 4);
    assert_int_equal(m.nparams, 3);
    assert_string_equal(m.params[0], "fours");
    assert_string_equal(m.params[1], "lead");
    assert_string_equal(m.params[2], "7");
    arena_free(a);
}

static void test_no_match(void **state)
{
    (void)state;
    arena *a = arena_new();
    route_match m;
    const char *misses[] = {"/", "", "/healthz/", "/healthzz", "/api/admin/users/", "/api/admin/users//x",
                            "/api/admin/users/1/2", "//healthz"};
    for (size_t i = 0; i < sizeof misses / sizeof misses[0]; i++) {
        assert_false(router_match(routes, N, "GET", misses[i], a, &m));
        assert_int_equal(m.index, -1);
    }
    /* the path exists under another method */
    assert_false(router_match(routes, N, "DELETE", "/api/admin/users/9", a, &m));
    assert_true(m.wrong_method);
    assert_false(router_match(routes, N, "DELETE", "/nothing", a, &m));
    assert_false(m.wrong_method);
    arena_free(a);
}

static void test_decoding(void **state)
{
    (void)state;
    arena *a = arena_new();
    route_match m;
    assert_true(router_match(routes, N, "GET", "/api/admin/users/a%20b%2Fc", a, &m));
    assert_string_equal(m.params[0], "a b/c");
    /* bad escapes and NUL bytes do not match at all */
    assert_false(router_match(routes, N, "GET", "/api/admin/users/%zz", a, &m));
    assert_false(router_match(routes, N, "GET", "/api/admin/users/%00", a, &m));
    assert_false(router_match(routes, N, "GET", "/api/admin/users/%4", a, &m));
    assert_null(url_decode(a, "%", 1));
    assert_string_equal(url_decode(a, "%41+b", 5), "A b");
    arena_free(a);
}

static void test_query_params(void **state)
{
    (void)state;
    arena *a = arena_new();
    const char *q = "limit=10&cursor=&flag&name=J%C3%BCrgen&limit2=3";
    assert_string_equal(query_param(a, q, "limit"), "10");
    assert_string_equal(query_param(a, q, "cursor"), "");
    assert_string_equal(query_param(a, q, "flag"), "");
    assert_string_equal(query_param(a, q, "name"), "J\xc3\xbcrgen");
    assert_null(query_param(a, q, "lim"));
    assert_null(query_param(a, "", "limit"));
    arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_and_params),
        cmocka_unit_test(test_no_match),
        cmocka_unit_test(test_decoding),
        cmocka_unit_test(test_query_params),
    };
    return cmocka_run_group_tests_name("unit_router", tests, NULL, NULL);
}
