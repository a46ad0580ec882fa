/* test_flow_model.c - engine/flow without a database: where transitions start,
 * what a state leaves editable, durations, and assignee matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "flow/flow.h"

static json_t *flow;

static int setup(void **state)
{
    (void)state;
    flow = json_loads("{\"initial\": \"open\", \"states\": ["
                      "{\"id\": \"open\"}, {\"id\": \"busy\", \"editable\": [\"notes\"]},"
                      "{\"id\": \"done\", \"final\": true}, {\"id\": \"archived\", \"final\": true, \"editable\": [\"tag\"]}],"
                      "\"transitions\": [{\"id\": \"go\", \"from\": [\"open\"], \"to\": \"busy\"},"
                      "{\"id\": \"drop\", \"from\": [\"*\"], \"to\": \"done\"},"
                      "{\"id\": \"reopen\", \"from\": [\"done\"], \"to\": \"open\"}]}",
                      0, NULL);
    return flow ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(flow);
    return 0;
}

static void test_starts_in(void **state)
{
    (void)state;
    json_t *go = flow_transition(flow, "go"), *drop = flow_transition(flow, "drop"), *reopen = flow_transition(flow, "reopen");
    assert_non_null(go);
    assert_null(flow_transition(flow, "fly"));
    assert_true(flow_starts_in(flow, go, "open"));
    assert_false(flow_starts_in(flow, go, "busy"));
    assert_true(flow_starts_in(flow, drop, "open"));
    assert_true(flow_starts_in(flow, drop, "busy"));
    assert_false(flow_starts_in(flow, drop, "done"));   /* "*" is every non-final state */
    assert_true(flow_starts_in(flow, reopen, "done"));   /* named, a final state is a start */
    assert_false(flow_starts_in(flow, drop, "nowhere"));
}

static void test_editable(void **state)
{
    (void)state;
    assert_true(flow_editable(flow, "open", "anything"));   /* non-final: all */
    assert_true(flow_editable(flow, "busy", "notes"));
    assert_false(flow_editable(flow, "busy", "title"));
    assert_false(flow_editable(flow, "done", "notes"));   /* final: none */
    assert_true(flow_editable(flow, "archived", "tag"));   /* unless listed */
}

static void test_seconds(void **state)
{
    (void)state;
    assert_int_equal(flow_seconds("90m"), 5400);
    assert_int_equal(flow_seconds("2h"), 7200);
    assert_int_equal(flow_seconds("3d"), 259200);
    assert_int_equal(flow_seconds("1w"), 604800);
    assert_int_equal(flow_seconds("2 h"), -1);
    assert_int_equal(flow_seconds("h"), -1);
    assert_int_equal(flow_seconds("2y"), -1);
    assert_int_equal(flow_seconds(NULL), -1);
}

static void test_assignee(void **state)
{
    (void)state;
    json_t *rec = json_loads("{\"tech\": 7, \"boss\": {\"id\": 9, \"title\": \"x\"}, \"_owner\": 3}", 0, NULL);
    json_t *roles = json_loads("[\"advisor\"]", 0, NULL);
    long long managed = 0;
    json_t *a = json_loads("{\"role\": \"advisor\"}", 0, NULL);
    assert_int_equal(flow_assignee_match(a, rec, 1, roles, &managed), FLOW_YES);
    json_decref(a);
    a = json_loads("{\"role\": \"manager\"}", 0, NULL);
    assert_int_equal(flow_assignee_match(a, rec, 1, roles, &managed), FLOW_NO);
    json_decref(a);
    a = json_loads("{\"field\": \"tech\"}", 0, NULL);
    assert_int_equal(flow_assignee_match(a, rec, 7, roles, &managed), FLOW_YES);
    assert_int_equal(flow_assignee_match(a, rec, 8, roles, &managed), FLOW_NO);
    json_decref(a);
    a = json_loads("{\"field\": \"boss\"}", 0, NULL);   /* expanded */
    assert_int_equal(flow_assignee_match(a, rec, 9, roles, &managed), FLOW_YES);
    json_decref(a);
    a = json_loads("{\"users\": [4, 5]}", 0, NULL);
    assert_int_equal(flow_assignee_match(a, rec, 5, roles, &managed), FLOW_YES);
    assert_int_equal(flow_assignee_match(a, rec, 6, roles, &managed), FLOW_NO);
    json_decref(a);
    a = json_loads("{\"manager_of\": \"_owner\"}", 0, NULL);
    assert_int_equal(flow_assignee_match(a, rec, 6, roles, &managed), FLOW_MANAGER);
    assert_int_equal(managed, 3);
    json_decref(a);
    a = json_loads("{\"manager_of\": \"nobody\"}", 0, NULL);
    assert_int_equal(flow_assignee_match(a, rec, 6, roles, &managed), FLOW_NO);
    json_decref(a);
    json_decref(rec);
    json_decref(roles);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_starts_in),
        cmocka_unit_test(test_editable),
        cmocka_unit_test(test_seconds),
        cmocka_unit_test(test_assignee),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
