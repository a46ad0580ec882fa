/* test_seed.c - `loom app seed` with the 4S spec on a fresh database: the
 * counts the scale asks for, data that looks like 4S data (VINs with their
 * check digit, brands and models, plates, Chinese names, unique phones), references that
 * agree (a ticket's customer owns its vehicle), subform rows, autonumbers,
 * formulas, history as the system actor; --if-empty; the same seed gives
 * the same data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "model/bundle.h"

#ifndef SOURCE_DIR
#error SOURCE_DIR must name the repository
#endif

static long long count(const char *url, const char *sql)
{
    char *v = h_sql_value(url, sql);
    assert_non_null(v);
    long long n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

/* Seeds with the 4S spec; states: how many records of each form move through their flow (NULL: the default). */
static int seed_states(const char *url, const char *scale, const char *rng, const char *states, bool if_empty, char *out,
                       size_t n)
{
    const char *argv[] = {h_loom_bin(), "app", "seed", "fours", "--spec", SOURCE_DIR "/apps/4s-template/seed.json",
                          "--scale", scale, "--seed", rng, "--db", url, "--states", states ? states : "5000",
                          if_empty ? "--if-empty" : NULL, NULL};
    return h_run(argv, NULL, out, n);
}

static int seed(const char *url, const char *scale, const char *rng, bool if_empty, char *out, size_t n)
{
    return seed_states(url, scale, rng, NULL, if_empty, out, n);
}

static char *fresh(const char *name)
{
    char *url = h_fresh_db(name);
    char out[16384];
    const char *import[] = {h_loom_bin(), "app", "import", SOURCE_DIR "/apps/4s-template", "--publish", "--db", url, NULL};
    assert_int_equal(h_run(import, NULL, out, sizeof out), 0);
    return url;
}

/* Counts the VINs of src (a query of a column vin) whose check digit
 * (position 9) is wrong: the ISO 3779 sum, written here again in SQL. */
#define VIN_CHECK_WRONG(src)                                                                                            \
    "SELECT count(*) FROM (SELECT vin, (SELECT sum((ARRAY[8,7,6,5,4,3,2,10,0,9,8,7,6,5,4,3,2])[i] * CASE WHEN "         \
    "substr(vin, i, 1) ~ '[0-9]' THEN substr(vin, i, 1)::int ELSE substr('12345678123457923456789', "                  \
    "strpos('ABCDEFGHJKLMNPRSTUVWXYZ', substr(vin, i, 1)), 1)::int END) % 11 FROM generate_series(1, 17) i) AS s "     \
    "FROM (" src ") AS v) AS w WHERE substr(vin, 9, 1) <> CASE s WHEN 10 THEN 'X' ELSE s::text END"

static void test_seed_4s(void **state)
{
    (void)state;
    char *url = fresh("loomtest_seed");
    char out[16384];
    assert_int_equal(seed(url, "200", "7", true, out, sizeof out), 0);
    assert_null(strstr(out, "were refused"));   /* every generated row was valid */
    static const struct {
        const char *table;
        long long n;
    } want[] = {{"customer", 200}, {"contact", 120}, {"vehicle", 240}, {"lead", 160}, {"opportunity", 60},
                {"follow_up", 100}, {"product", 40}, {"quotation", 30}, {"sales_order", 50}, {"service_ticket", 120},
                {"complaint", 10}, {"survey", 60}};
    long long total = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM app_fours.%s", want[i].table);
        assert_int_equal(count(url, sql), want[i].n);
        total += want[i].n;
    }
    /* looks like 4S data */
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.vehicle WHERE vin !~ '^L[A-HJ-NPR-Z0-9]{7}[0-9X][A-HJ-NPR-Z0-9]{2}[0-9]{6}$'"), 0);
    assert_int_equal(count(url, VIN_CHECK_WRONG("SELECT '1M8GDM9AXKP042788' AS vin")), 0);   /* ISO 3779's example */
    assert_int_equal(count(url, VIN_CHECK_WRONG("SELECT '1M8GDM9A1KP042788' AS vin")), 1);
    assert_int_equal(count(url, VIN_CHECK_WRONG("SELECT vin FROM app_fours.vehicle")), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.vehicle WHERE brand !~ '^[一-龥]+$' OR model IS NULL "
                                "OR (brand = '特斯拉') <> (model LIKE 'Model %')"), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.vehicle WHERE plate_no !~ '^[京沪粤浙苏川鄂陕渝津湘豫鲁闽皖][A-Z]'"), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.customer WHERE name !~ '[一-龥]'"), 0);
    assert_int_equal(count(url, "SELECT count(DISTINCT phone) FROM app_fours.customer"), 200);
    assert_int_equal(count(url, "SELECT count(*) FROM (SELECT phone FROM app_fours.customer UNION ALL SELECT phone FROM "
                                "app_fours.contact UNION ALL SELECT phone FROM app_fours.lead) AS p "
                                "WHERE phone !~ '^1[35789][0-9]{9}$'"),
                     0);
    /* an opportunity's title names its own model ({"field": "model"}) */
    assert_true(count(url, "SELECT count(*) FROM app_fours.opportunity") > 0);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.opportunity WHERE title IS DISTINCT FROM model || ' 购车商机'"), 0);
    /* references agree; rows, autonumbers and formulas are there */
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.service_ticket t JOIN app_fours.vehicle v ON v.id = t.vehicle "
                                "WHERE v.customer <> t.customer"),
                     0);
    assert_true(count(url, "SELECT count(*) FROM app_fours.sales_order__lines") >= 50);
    /* rows written in bulk are in their records' history under the ids they are stored under */
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.sales_order__lines l WHERE NOT EXISTS (SELECT 1 FROM "
                                "loom.history h, jsonb_array_elements(h.changes::jsonb #> '{lines,1}') e WHERE h.form = "
                                "'sales_order' AND h.record = l._parent AND h.action = 'create' AND (e->>'id')::bigint = l.id "
                                "AND e->>'product' = l.product::text)"),
                     0);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.sales_order WHERE number !~ '^SO-[0-9]{6}-[0-9]{5}$'"), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.vehicle WHERE next_service_km <> mileage - mileage % 5000 + 5000"),
                     0);
    assert_true(count(url, "SELECT count(*) FROM app_fours.customer c JOIN loom.users u ON u.id = c.owner_sales "
                           "WHERE u.app_roles -> 'fours' ?| array['sales', 'sales_manager']") > 150);
    /* one history entry per record, by the system actor */
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM loom.history WHERE app = 'fours' AND action = 'create' AND actor IS NULL");
    assert_int_equal(count(url, sql), total);
    /* the records spread over their flows' states, moved there by transitions as the demo users take them */
    assert_int_equal(count(url, "SELECT count(DISTINCT _state) FROM app_fours.service_ticket"), 6);
    assert_int_equal(count(url, "SELECT count(DISTINCT _state) FROM app_fours.lead"), 5);
    assert_int_equal(count(url, "SELECT count(DISTINCT _state) FROM app_fours.opportunity"), 10);
    /* complaints: about one of their customer's tickets, handled and resolved by the people the flow names */
    assert_true(count(url, "SELECT count(DISTINCT _state) FROM app_fours.complaint") >= 3);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.complaint c JOIN app_fours.service_ticket t ON t.id = "
                                "c.service_ticket WHERE t.customer <> c.customer"), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.complaint WHERE _state IN ('resolved', 'closed') AND "
                                "(resolution IS NULL OR handler IS NULL)"), 0);
    assert_int_equal(count(url, "SELECT count(DISTINCT _state) FROM app_fours.sales_order"), 4);
    /* through approvals too: requested by the record's consultant, approved by a sales manager */
    assert_true(count(url, "SELECT count(*) FROM loom.approvals WHERE app = 'fours' AND status = 'approved'") > 40);
    assert_int_equal(count(url, "SELECT count(*) FROM loom.approvals WHERE app = 'fours' AND status <> 'approved'"), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM loom.approvals a JOIN app_fours.sales_order o ON o.id = a.record AND "
                                "a.form = 'sales_order' WHERE a.requested_by IS DISTINCT FROM o.sales OR NOT EXISTS (SELECT 1 "
                                "FROM jsonb_array_elements(a.decisions) d JOIN loom.users u ON u.id = (d->>'user')::bigint "
                                "WHERE u.app_roles -> 'fours' ? 'sales_manager')"),
                     0);
    assert_true(count(url, "SELECT count(*) FROM app_fours.service_ticket WHERE _state = 'closed'") > 30);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.service_ticket WHERE (_state = 'pending') <> (technician IS "
                                "NULL) OR (_state IN ('completed', 'follow_up', 'closed')) <> (completed_at IS NOT NULL AND "
                                "labor_hours > 0)"),
                     0);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.lead WHERE (_state = 'pool') <> (in_pool AND assigned_to IS NULL)"),
                     0);
    assert_int_equal(count(url, "SELECT count(*) FROM loom.history h JOIN loom.users u ON u.id = h.actor WHERE h.app = 'fours' "
                                "AND h.transition = 'dispatch' AND u.app_roles -> 'fours' ? 'service_advisor'"),
                     count(url, "SELECT count(*) FROM loom.history WHERE app = 'fours' AND transition = 'dispatch'"));
    assert_true(count(url, "SELECT count(*) FROM loom.history WHERE app = 'fours' AND transition = 'dispatch'") > 60);
    /* the SLA of 待受理 runs for the tickets still there, and no other's */
    assert_int_equal(count(url, "SELECT count(*) FROM loom.jobs WHERE form = 'service_ticket' AND kind = 'sla' AND "
                                "status = 'pending'"),
                     count(url, "SELECT count(*) FROM app_fours.service_ticket WHERE _state = 'pending'"));
    /* the demo users log in and see what their roles give them (apps/4s-template/app.json) */
    h_server srv;
    const char *args[] = {"--workers", "2", NULL};
    assert_true(h_server_start(&srv, url, args, NULL));
    char *sales = h_login(srv.port, "sales01", "loom-demo-user"), *tech = h_login(srv.port, "tech01", "loom-demo-user");
    assert_non_null(sales);
    assert_non_null(tech);
    h_resp r = h_req(srv.port, "GET", "/api/apps/fours/forms/customer/records?count=true&limit=1", sales, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "total")), 200);
    h_resp_free(&r);
    /* seeded records have owners: a consultant finds the follow-ups and quotations of his customers and may edit
     * those customers */
    const char *owned_forms[] = {"follow_up", "quotation"};
    for (size_t k = 0; k < 2; k++) {
        char route[96], q[200];
        snprintf(route, sizeof route, "/api/apps/fours/forms/%s/records?count=true&limit=1", owned_forms[k]);
        r = h_req(srv.port, "GET", route, sales, NULL);
        assert_int_equal(r.status, 200);
        snprintf(q, sizeof q, "SELECT count(*) FROM app_fours.%s f JOIN loom.users u ON u.id = f._owner WHERE u.username = 'sales01'",
                 owned_forms[k]);
        char *mine_fu = h_sql_value(url, q);
        assert_int_equal(json_integer_value(json_object_get(r.json, "total")), atoll(mine_fu));
        assert_true(atoll(mine_fu) > 0);
        free(mine_fu);
        h_resp_free(&r);
    }
    char *owned = h_sql_value(url, "SELECT min(c.id) FROM app_fours.customer c JOIN loom.users u ON u.id = c._owner "
                                   "WHERE u.username = 'sales01' AND c.owner_sales = c._owner");
    char owned_path[96];
    snprintf(owned_path, sizeof owned_path, "/api/apps/fours/forms/customer/records/%s", owned);
    r = h_req(srv.port, "PATCH", owned_path, sales, "{\"notes\": \"回访过\"}");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    free(owned);
    r = h_req(srv.port, "GET", "/api/apps/fours/forms/product/records?limit=5", sales, NULL);
    assert_int_equal(r.status, 200);
    assert_null(json_object_get(json_array_get(json_object_get(r.json, "items"), 0), "cost"));   /* hidden from sales */
    assert_non_null(json_object_get(json_array_get(json_object_get(r.json, "items"), 0), "price"));
    h_resp_free(&r);
    r = h_req(srv.port, "GET", "/api/apps/fours/forms/service_ticket/records?count=true&limit=1000", tech, NULL);
    assert_int_equal(r.status, 200);   /* only the tickets the technician is on */
    long long mine = json_integer_value(json_object_get(r.json, "total"));
    char *tickets = h_sql_value(url, "SELECT count(*) FROM app_fours.service_ticket t JOIN loom.users u ON u.id = t.technician "
                                  "WHERE u.username = 'tech01'");
    assert_int_equal(mine, strtoll(tickets, NULL, 10));
    assert_true(mine > 0 && mine < 120);
    free(tickets);
    h_resp_free(&r);
    /* on a ticket in repair the technician records the work, but not whose ticket or car it is, nor its priority;
     * a part's cost is hidden from him (as a product's cost is) and kept when he rewrites the rows */
    char *repair = h_sql_value(url, "SELECT min(t.id) FROM app_fours.service_ticket t JOIN loom.users u ON u.id = t.technician "
                                    "WHERE u.username = 'tech01' AND t._state = 'in_repair' AND "
                                    "EXISTS (SELECT FROM app_fours.service_ticket__parts p WHERE p._parent = t.id AND p.unit_cost IS NOT NULL)");
    char costs_sql[256];
    snprintf(costs_sql, sizeof costs_sql,
             "SELECT string_agg(unit_cost::text, ',' ORDER BY id) FROM app_fours.service_ticket__parts WHERE _parent = %s", repair);
    char *costs = h_sql_value(url, costs_sql);
    char path[128];
    snprintf(path, sizeof path, "/api/apps/fours/forms/service_ticket/records/%s", repair);
    char prio_sql[200], cust_sql[200];
    snprintf(prio_sql, sizeof prio_sql, "SELECT priority FROM app_fours.service_ticket WHERE id = %s", repair);
    snprintf(cust_sql, sizeof cust_sql, "SELECT min(id) FROM app_fours.customer WHERE id <> (SELECT customer FROM "
                                        "app_fours.service_ticket WHERE id = %s)", repair);
    char *prio = h_sql_value(url, prio_sql), *other = h_sql_value(url, cust_sql);
    char fixed[4][96];
    snprintf(fixed[0], sizeof fixed[0], "{\"priority\": \"%s\"}", strcmp(prio, "low") ? "low" : "high");
    snprintf(fixed[1], sizeof fixed[1], "{\"customer\": %s}", other);
    snprintf(fixed[2], sizeof fixed[2], "{\"technician\": null}");
    snprintf(fixed[3], sizeof fixed[3], "{\"completed_at\": \"2026-01-01T00:00:00Z\"}");
    for (size_t i = 0; i < 4; i++) {
        r = h_req(srv.port, "PATCH", path, tech, fixed[i]);
        assert_int_equal(r.status, 422);
        assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "code")),
                            "readonly");
        h_resp_free(&r);
    }
    /* sent back as it is, a field he only reads is no change */
    snprintf(fixed[0], sizeof fixed[0], "{\"priority\": \"%s\", \"notes\": \"看过\"}", prio);
    r = h_req(srv.port, "PATCH", path, tech, fixed[0]);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    free(prio);
    free(other);
    char expand[160];   /* whose car it is: the customer's name and phone, not the rest of the file */
    snprintf(expand, sizeof expand, "%s?expand=customer", path);
    r = h_req(srv.port, "GET", expand, tech, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(json_object_get(json_object_get(r.json, "customer"), "title"));
    h_resp_free(&r);
    r = h_req(srv.port, "GET", "/api/apps/fours/forms/customer/records?limit=1", tech, NULL);
    assert_int_equal(r.status, 200);
    json_t *c0 = json_array_get(json_object_get(r.json, "items"), 0);
    assert_non_null(json_object_get(c0, "phone"));
    assert_null(json_object_get(c0, "address"));
    assert_null(json_object_get(c0, "birthday"));
    h_resp_free(&r);
    r = h_req(srv.port, "GET", path, tech, NULL);
    assert_int_equal(r.status, 200);
    json_t *parts = json_deep_copy(json_object_get(r.json, "parts"));
    h_resp_free(&r);
    size_t i;
    json_t *row;
    json_array_foreach(parts, i, row)
    {
        assert_null(json_object_get(row, "unit_cost"));
        json_object_del(row, "amount");   /* computed */
    }
    json_t *body = json_pack("{s:s, s:o}", "notes", "换了刹车片", "parts", parts);
    char *text = json_dumps(body, 0);
    json_decref(body);
    r = h_req(srv.port, "PATCH", path, tech, text);
    free(text);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    char *kept = h_sql_value(url, costs_sql);
    assert_string_equal(kept, costs);
    free(kept);
    free(costs);
    free(repair);
    char *advisor = h_login(srv.port, "advisor01", "loom-demo-user");
    r = h_req(srv.port, "GET", path, advisor, NULL);
    assert_int_equal(r.status, 200);
    assert_true(json_array_size(json_object_get(r.json, "parts")) > 0);
    assert_null(json_object_get(json_array_get(json_object_get(r.json, "parts"), 0), "unit_cost"));
    h_resp_free(&r);
    free(advisor);
    /* a picker for a user field: the active users holding one of its roles, page by page, searchable */
    char *advisor_tok = h_login(srv.port, "advisor01", "loom-demo-user");
    char *techs = h_sql_value(url, "SELECT string_agg(id::text, ',' ORDER BY id) FROM loom.users WHERE active AND "
                                   "app_roles -> 'fours' ? 'technician'");
    buf got = {0};
    char route[160] = "/api/apps/fours/forms/service_ticket/fields/technician/choices?limit=1";
    for (int page = 0; page < 20; page++) {
        r = h_req(srv.port, "GET", route, advisor_tok, NULL);
        assert_int_equal(r.status, 200);
        json_t *item = json_array_get(json_object_get(r.json, "items"), 0);
        buf_printf(&got, "%s%lld", got.len ? "," : "", (long long)json_integer_value(json_object_get(item, "id")));
        const char *next = json_string_value(json_object_get(r.json, "next_cursor"));
        snprintf(route, sizeof route, "/api/apps/fours/forms/service_ticket/fields/technician/choices?limit=1&cursor=%s",
                 next ? next : "");
        h_resp_free(&r);
        if (!next)
            break;
    }
    assert_string_equal(got.data, techs);
    buf_free(&got);
    free(techs);
    r = h_req(srv.port, "GET", "/api/apps/fours/forms/service_ticket/fields/technician/choices?search=tech01", advisor_tok, NULL);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);   /* by username, or by name */
    h_resp_free(&r);
    const char *none[][2] = {{"customer", "advisor01"}, {"nope", "advisor01"}, {"_owner", "tech01"}};
    for (size_t k = 0; k < sizeof none / sizeof none[0]; k++) {   /* not a user field; _owner only for who sets it */
        char *who = h_login(srv.port, none[k][1], "loom-demo-user");
        snprintf(route, sizeof route, "/api/apps/fours/forms/service_ticket/fields/%s/choices", none[k][0]);
        r = h_req(srv.port, "GET", route, who, NULL);
        assert_int_equal(r.status, 404);
        h_resp_free(&r);
        free(who);
    }
    free(advisor_tok);
    /* the managers and customer care write what their work needs, refs included: each reads the forms its
     * refs point to */
    char *car = h_sql_value(url, "SELECT id || ',' || customer FROM app_fours.vehicle ORDER BY id LIMIT 1");
    char *order = h_sql_value(url, "SELECT id || ',' || customer FROM app_fours.sales_order ORDER BY id LIMIT 1");
    char ticket[256], quote[256], survey[256];
    snprintf(ticket, sizeof ticket, "{\"vehicle\": %.*s, \"customer\": %s, \"kind\": \"maintenance\", \"complaint\": \"异响\"}",
             (int)strcspn(car, ","), car, strchr(car, ',') + 1);
    snprintf(quote, sizeof quote, "{\"customer\": %s, \"lines\": [{\"product\": 1, \"qty\": 1, \"unit_price\": \"100\"}]}",
             strchr(car, ',') + 1);
    snprintf(survey, sizeof survey, "{\"sales_order\": %.*s, \"customer\": %s, \"csat\": 5}", (int)strcspn(order, ","), order,
             strchr(order, ',') + 1);
    const struct {
        const char *user, *form, *body;
    } writes[] = {{"svcmgr", "service_ticket", ticket}, {"salesmgr", "quotation", quote}, {"care01", "survey", survey}};
    for (size_t k = 0; k < sizeof writes / sizeof writes[0]; k++) {
        char *who = h_login(srv.port, writes[k].user, "loom-demo-user");
        char route[96];
        snprintf(route, sizeof route, "/api/apps/fours/forms/%s/records", writes[k].form);
        r = h_req(srv.port, "POST", route, who, writes[k].body);
        if (r.status != 201)
            fail_msg("%s creating %s: %d %s", writes[k].user, writes[k].form, r.status, r.body);
        h_resp_free(&r);
        free(who);
    }
    free(car);
    free(order);
    r = h_req(srv.port, "GET", "/api/apps/fours/forms/service_ticket/records", sales, NULL);
    assert_int_equal(r.status, 404);   /* no permission on the form */
    h_resp_free(&r);
    free(sales);
    free(tech);
    assert_int_equal(h_server_stop(&srv), 0);
    /* --if-empty leaves seeded data alone */
    assert_int_equal(seed(url, "200", "7", true, out, sizeof out), 0);
    assert_non_null(strstr(out, "nothing to do"));
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.customer"), 200);
    /* the same seed, the same data */
    char *again = fresh("loomtest_seed2");
    assert_int_equal(seed(again, "200", "7", false, out, sizeof out), 0);
    char *a = h_sql_value(url, "SELECT string_agg(name || phone, ',' ORDER BY id) FROM app_fours.customer");
    char *b = h_sql_value(again, "SELECT string_agg(name || phone, ',' ORDER BY id) FROM app_fours.customer");
    assert_string_equal(a, b);
    free(a);
    free(b);
    /* a state the spec's transitions cannot reach: a clear failure */
    char spec[] = "/tmp/loomtest_seed_spec_XXXXXX";
    int fd = mkstemp(spec);
    assert_true(fd >= 0);
    const char *bad = "{\"forms\": [{\"form\": \"sales_order\", \"count\": 1, \"values\": {}, \"states\": {\"approved\": 1}}]}";
    assert_int_equal(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    const char *unreachable[] = {h_loom_bin(), "app", "seed", "fours", "--spec", spec, "--db", url, NULL};
    assert_int_not_equal(h_run(unreachable, NULL, out, sizeof out), 0);
    assert_non_null(strstr(out, "sales_order state approved cannot be reached from draft"));
    unlink(spec);
    /* an app that is not published: a clear failure */
    const char *argv[] = {h_loom_bin(), "app", "seed", "nope", "--spec", SOURCE_DIR "/apps/4s-template/seed.json", "--db",
                          url, NULL};
    assert_int_not_equal(h_run(argv, NULL, out, sizeof out), 0);
    free(again);
    free(url);
}

/* POST one action; expects status. */
static void act4s(int port, const char *token, const char *form, long long id, const char *t, const char *body, int status)
{
    char path[256];
    snprintf(path, sizeof path, "/api/apps/fours/forms/%s/records/%lld/actions/%s", form, id, t);
    h_resp r = h_req(port, "POST", path, token, body);
    if (r.status != status)
        fprintf(stderr, "%s %s: %d %s\n", form, t, r.status, r.body ? r.body : "");
    assert_int_equal(r.status, status);
    h_resp_free(&r);
}

static void decide4s(int port, const char *token, const char *form, long long id)
{
    char path[256];
    snprintf(path, sizeof path, "/api/apps/fours/forms/%s/records/%lld/approval", form, id);
    h_resp r = h_req(port, "POST", path, token, "{\"decision\": \"approve\", \"comment\": \"同意\"}");
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "approval"), "status")), "approved");
    h_resp_free(&r);
}

/* The 4S flows (apps/4s-template/flows) on seeded data, by the demo users:
 * a service ticket from 待受理 to 已关闭 with its 2 h SLA and a discount the
 * service manager approves; an opportunity through its stages with the
 * contract approval; a lead returned to the pool and claimed; an order
 * approved; a complaint handled. */
static void test_4s_flows(void **state)
{
    (void)state;
    char *url = fresh("loomtest_flows4s");
    char out[16384];
    assert_int_equal(seed_states(url, "20", "3", "0", false, out, sizeof out), 0);
    /* with --states 0, seeded records stay in their flows' initial states, with their timers */
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.service_ticket WHERE _state <> 'pending'"), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM loom.jobs WHERE form = 'service_ticket' AND kind = 'sla' AND "
                                "status = 'pending' AND run_at > now() + interval '119 minutes'"),
                     count(url, "SELECT count(*) FROM app_fours.service_ticket"));
    h_server srv;
    const char *args[] = {"--workers", "2", NULL};
    assert_true(h_server_start(&srv, url, args, NULL));
    const char *names[] = {"advisor01", "tech01", "svcmgr", "care01", "sales01", "salesmgr"};
    char *tok[6];
    for (int i = 0; i < 6; i++)
        assert_non_null(tok[i] = h_login(srv.port, names[i], "loom-demo-user"));
    char *advisor = tok[0], *tech = tok[1], *svcmgr = tok[2], *care = tok[3], *sales = tok[4], *salesmgr = tok[5];
    long long tech_id = count(url, "SELECT id FROM loom.users WHERE username = 'tech01'");

    /* service ticket */
    char body[256];
    snprintf(body, sizeof body, "SELECT min(id) FROM app_fours.service_ticket WHERE technician IS DISTINCT FROM %lld", tech_id);
    long long t = count(url, body);   /* one the generator did not give him */
    snprintf(body, sizeof body, "{\"values\": {\"technician\": %lld}, \"comment\": \"派给孙强\"}", tech_id);
    act4s(srv.port, tech, "service_ticket", t, "dispatch", body, 404);   /* not yet his: he cannot even read it */
    act4s(srv.port, advisor, "service_ticket", t, "dispatch", body, 200);
    assert_int_equal(count(url, "SELECT count(*) FROM loom.jobs WHERE form = 'service_ticket' AND status = 'cancelled'"), 1);
    act4s(srv.port, tech, "service_ticket", t, "start", NULL, 200);
    act4s(srv.port, tech, "service_ticket", t, "complete", "{\"values\": {\"labor_hours\": 1.5}}", 200);
    act4s(srv.port, advisor, "service_ticket", t, "discount", "{\"values\": {\"discount\": 50}}", 202);
    decide4s(srv.port, svcmgr, "service_ticket", t);
    act4s(srv.port, advisor, "service_ticket", t, "hand_over", NULL, 200);
    act4s(srv.port, care, "service_ticket", t, "close", "{\"comment\": \"客户满意\"}", 200);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM app_fours.service_ticket WHERE id = %lld AND _state = 'closed' AND "
                              "discount = 50 AND dispatched_at IS NOT NULL AND completed_at IS NOT NULL", t);
    assert_int_equal(count(url, sql), 1);

    /* for people: the state and the kind by their labels, the customer by name */
    snprintf(body, sizeof body, "/api/apps/fours/forms/service_ticket/export?values=labels&fields=_state,kind,customer&"
                                "filter=%%7B%%22id%%22%%3A%lld%%7D", t);
    h_resp ex = h_req(srv.port, "GET", body, advisor, NULL);
    assert_int_equal(ex.status, 200);
    snprintf(sql, sizeof sql, "SELECT c.name FROM app_fours.service_ticket t JOIN app_fours.customer c ON c.id = t.customer "
                              "WHERE t.id = %lld", t);
    char *cname = h_sql_value(url, sql), want[256];
    snprintf(sql, sizeof sql, "SELECT kind FROM app_fours.service_ticket WHERE id = %lld", t);
    char *kind = h_sql_value(url, sql);
    const char *kinds[][2] = {{"maintenance", "保养"}, {"repair", "维修"}, {"warranty", "索赔"}, {"accident", "事故"}};
    const char *klabel = "?";
    for (size_t k = 0; k < 4; k++)
        if (!strcmp(kind, kinds[k][0]))
            klabel = kinds[k][1];
    snprintf(want, sizeof want, "%lld,已关闭,%s,%s\r\n", t, cname, klabel);
    assert_non_null(strstr(ex.body, "\r\n"));
    assert_string_equal(strstr(ex.body, "\r\n") + 2, want);
    free(cname);
    free(kind);
    h_resp_free(&ex);

    /* opportunity: pool -> ... -> won, the contract approved by the sales manager */
    long long o = count(url, "SELECT min(id) FROM app_fours.opportunity");
    act4s(srv.port, sales, "opportunity", o, "take", NULL, 200);
    act4s(srv.port, sales, "opportunity", o, "confirm_needs", "{\"values\": {\"model\": \"星越L\"}}", 200);
    act4s(srv.port, sales, "opportunity", o, "propose", "{\"values\": {\"amount\": 189000}}", 200);
    act4s(srv.port, sales, "opportunity", o, "negotiate", "{\"values\": {\"discount\": 5000}}", 200);
    act4s(srv.port, sales, "opportunity", o, "sign", NULL, 202);
    decide4s(srv.port, salesmgr, "opportunity", o);
    act4s(srv.port, sales, "opportunity", o, "deliver", NULL, 200);
    act4s(srv.port, sales, "opportunity", o, "receive_deposit", "{\"values\": {\"deposit_received\": 50000}}", 200);
    act4s(srv.port, sales, "opportunity", o, "receive_balance", "{\"values\": {\"balance_received\": 134000}}", 200);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM app_fours.opportunity WHERE id = %lld AND _state = 'won'", o);
    assert_int_equal(count(url, sql), 1);

    /* lead: back to the pool, claimed by a consultant */
    long long l = count(url, "SELECT min(id) FROM app_fours.lead");
    act4s(srv.port, salesmgr, "lead", l, "return_to_pool", NULL, 200);
    act4s(srv.port, sales, "lead", l, "claim", NULL, 200);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM app_fours.lead l JOIN loom.users u ON u.id = l.assigned_to WHERE "
                              "l.id = %lld AND l._state = 'new' AND NOT l.in_pool AND u.username = 'sales01'", l);
    assert_int_equal(count(url, sql), 1);

    /* a lead nobody contacted within 48 h goes back to the pool by itself (as if the hours had passed) */
    long long late = count(url, "SELECT max(id) FROM app_fours.lead WHERE _state = 'new'");
    snprintf(sql, sizeof sql, "UPDATE loom.jobs SET run_at = now() WHERE form = 'lead' AND record = %lld AND "
                              "status = 'pending'; NOTIFY loom_jobs", late);
    assert_true(h_sql(url, sql));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM app_fours.lead WHERE id = %lld AND _state = 'pool' AND in_pool AND "
                              "assigned_to IS NULL", late);
    double end = h_now() + 10;
    while (h_now() < end && count(url, sql) == 0)
        usleep(20000);
    assert_int_equal(count(url, sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM loom.history WHERE form = 'lead' AND record = %lld AND actor IS NULL "
                              "AND ((action = 'breach' AND from_state = 'new') OR (action = 'transition' AND "
                              "transition = 'return_to_pool'))", late);
    assert_int_equal(count(url, sql), 2);

    /* sales order approval: submitted by its consultant, approved by the manager */
    long long so = count(url, "SELECT min(id) FROM app_fours.sales_order");
    snprintf(sql, sizeof sql, "UPDATE app_fours.sales_order SET sales = (SELECT id FROM loom.users WHERE username = 'sales01') "
                              "WHERE id = %lld", so);   /* sales01's, whatever the generator drew */
    assert_true(h_sql(url, sql));
    act4s(srv.port, salesmgr, "sales_order", so, "submit", NULL, 403);   /* neither its owner nor its consultant */
    act4s(srv.port, sales, "sales_order", so, "submit", NULL, 202);
    h_resp r = h_req(srv.port, "GET", "/api/tasks?app=fours", salesmgr, NULL);
    assert_int_equal(r.status, 200);
    bool waiting = false;
    size_t i;
    json_t *task;
    json_array_foreach(json_object_get(r.json, "items"), i, task) waiting =
        waiting || (json_integer_value(json_object_get(task, "record")) == so &&
                    !strcmp(json_string_value(json_object_get(task, "kind")), "approval"));
    assert_true(waiting);
    h_resp_free(&r);
    decide4s(srv.port, salesmgr, "sales_order", so);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM app_fours.sales_order WHERE id = %lld AND _state = 'approved'", so);
    assert_int_equal(count(url, sql), 1);

    /* a ticket's vehicle is one of its customer's (the ref filter {"customer": {"$field": "customer"}}),
     * which the render schema gives a form to narrow its choices with */
    r = h_req(srv.port, "GET", "/api/apps/fours/forms/service_ticket", advisor, NULL);
    assert_int_equal(r.status, 200);
    json_t *vf = NULL, *fd;
    json_array_foreach(json_object_get(r.json, "fields"), i, fd) if (!strcmp(json_string_value(json_object_get(fd, "id")), "vehicle"))
        vf = fd;
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(vf, "filter"), "customer"), "$field")),
                        "customer");
    h_resp_free(&r);
    long long mine = count(url, "SELECT min(id) FROM app_fours.vehicle");
    long long owner = count(url, "SELECT customer FROM app_fours.vehicle WHERE id = (SELECT min(id) FROM app_fours.vehicle)");
    long long other = count(url, "SELECT min(customer) FROM app_fours.vehicle WHERE customer <> (SELECT customer FROM "
                                 "app_fours.vehicle WHERE id = (SELECT min(id) FROM app_fours.vehicle))");
    snprintf(body, sizeof body, "{\"customer\": %lld, \"vehicle\": %lld, \"kind\": \"repair\", \"complaint\": \"异响\"}",
             other, mine);
    r = h_req(srv.port, "POST", "/api/apps/fours/forms/service_ticket/records", advisor, body);
    assert_int_equal(r.status, 422);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "path")),
                        "/vehicle");
    h_resp_free(&r);
    snprintf(body, sizeof body, "{\"customer\": %lld, \"vehicle\": %lld, \"kind\": \"repair\", \"complaint\": \"异响\"}",
             owner, mine);
    r = h_req(srv.port, "POST", "/api/apps/fours/forms/service_ticket/records", advisor, body);
    assert_int_equal(r.status, 201);
    char path[128];
    snprintf(path, sizeof path, "/api/apps/fours/forms/service_ticket/records/%lld",
             (long long)json_integer_value(json_object_get(r.json, "id")));
    h_resp_free(&r);
    snprintf(body, sizeof body, "{\"customer\": %lld}", other);   /* the vehicle stays: it is no longer the customer's */
    r = h_req(srv.port, "PATCH", path, advisor, body);
    assert_int_equal(r.status, 422);
    h_resp_free(&r);
    /* the vehicle sold on to another customer: its old tickets stay editable (their links are not what changed) */
    snprintf(body, sizeof body, "/api/apps/fours/forms/vehicle/records/%lld", mine);
    char vb[64];
    snprintf(vb, sizeof vb, "{\"customer\": %lld}", other);
    r = h_req(srv.port, "PATCH", body, advisor, vb);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    r = h_req(srv.port, "PATCH", path, advisor, "{\"notes\": \"车辆已过户\"}");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);

    /* a vehicle list from a spreadsheet names its owners: a name two customers share is the row's problem */
    for (int k = 0; k < 3; k++) {
        snprintf(body, sizeof body, "{\"name\": \"%s\", \"type\": \"individual\", \"phone\": \"1390000000%d\"}",
                 k < 2 ? "重名客户" : "独一客户", k);
        r = h_req(srv.port, "POST", "/api/apps/fours/forms/customer/records", salesmgr, body);
        assert_int_equal(r.status, 201);
        h_resp_free(&r);
    }
    r = h_req_h(srv.port, "POST", "/api/apps/fours/forms/vehicle/import?partial=true", salesmgr,
                "vin,customer\nLSVAB4182E2123450,独一客户\nLSVAB4182E2123461,重名客户\n", "Content-Type: text/csv\r\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), 1);
    json_t *amb = json_array_get(json_object_get(r.json, "errors"), 0);
    assert_int_equal(json_integer_value(json_object_get(amb, "row")), 2);
    assert_string_equal(json_string_value(json_object_get(amb, "code")), "not_unique");
    h_resp_free(&r);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.vehicle v JOIN app_fours.customer c ON c.id = v.customer "
                                "WHERE v.vin = 'LSVAB4182E2123450' AND c.name = '独一客户'"),
                     1);
    /* an upsert keyed by the column's label, from a template that marks required columns with "*" */
    r = h_req_h(srv.port, "POST", "/api/apps/fours/forms/vehicle/import?mode=upsert&key=%E8%BD%A6%E6%9E%B6%E5%8F%B7", salesmgr,
                "*车架号,行驶里程(公里)\nLSVAB4182E2123450,12345\n", "Content-Type: text/csv\r\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 1);
    h_resp_free(&r);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.vehicle WHERE vin = 'LSVAB4182E2123450' AND mileage = 12345"), 1);

    /* a complaint: received, assigned to the service manager, resolved, closed */
    long long svcmgr_id = count(url, "SELECT id FROM loom.users WHERE username = 'svcmgr'");
    long long customer = count(url, "SELECT min(id) FROM app_fours.customer");
    snprintf(body, sizeof body, "{\"customer\": %lld, \"subject\": \"等待时间过长\", \"category\": \"waiting\", "
                                "\"severity\": \"high\", \"description\": \"等了三个小时\"}", customer);
    r = h_req(srv.port, "POST", "/api/apps/fours/forms/complaint/records", care, body);
    assert_int_equal(r.status, 201);
    assert_string_equal(json_string_value(json_object_get(r.json, "_state")), "received");
    long long c = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);
    snprintf(body, sizeof body, "{\"values\": {\"handler\": %lld}}", svcmgr_id);
    act4s(srv.port, care, "complaint", c, "assign", body, 200);
    act4s(srv.port, svcmgr, "complaint", c, "resolve", "{\"values\": {\"resolution\": \"增加快修工位\"}}", 200);
    act4s(srv.port, care, "complaint", c, "close", NULL, 200);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM loom.history WHERE form = 'complaint' AND record = %lld AND "
                              "action = 'transition'", c);
    assert_int_equal(count(url, sql), 3);
    free(tok[0]);
    for (int i = 1; i < 6; i++)
        free(tok[i]);
    assert_int_equal(h_server_stop(&srv), 0);
    free(url);
}

/* A bundle's own seed data loads on its first publish, all or nothing. */
static void test_bundle_data(void **state)
{
    (void)state;
    char *url = h_fresh_db("loomtest_bundle_data");
    char out[16384];
    const char *path = SOURCE_DIR "/tests/fixtures/model/valid_spec_examples/bundle.json";
    const char *import[] = {h_loom_bin(), "app", "import", path, "--publish", "--db", url, NULL};
    assert_int_equal(h_run(import, NULL, out, sizeof out), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.customer WHERE name = '张三'"), 1);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.vehicle v JOIN app_fours.customer c ON c.id = v.customer "
                                "WHERE c.name = '张三' AND v.vin = 'LSVAB4182E2123456'"),
                     1);   /* {"$key": "c1"} became the customer's id */
    assert_int_equal(count(url, "SELECT count(*) FROM loom.history WHERE app = 'fours' AND actor IS NULL"), 2);
    /* publishing again (nothing changed) loads nothing again; --data asks for it */
    assert_int_equal(h_run(import, NULL, out, sizeof out), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.customer"), 1);
    const char *again[] = {h_loom_bin(), "app", "import", path, "--publish", "--data", "--db", url, NULL};
    assert_int_equal(h_run(again, NULL, out, sizeof out), 0);   /* the app has records: seed data is not loaded */
    assert_null(strstr(out, "seed records loaded"));
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.customer"), 1);
    assert_true(h_sql(url, "TRUNCATE app_fours.customer CASCADE"));
    assert_int_equal(h_run(again, NULL, out, sizeof out), 0);
    assert_non_null(strstr(out, "2 seed records loaded"));
    assert_int_equal(count(url, "SELECT count(*) FROM app_fours.customer"), 1);
    /* seed data that fails its checks fails the first publish: no schema, no version */
    char err[256];
    json_t *b = bundle_load(path, err, sizeof err);
    assert_non_null(b);
    json_object_set_new(json_object_get(b, "app"), "id", json_string("badseed"));
    json_object_set_new(b, "data", json_pack("{s:[{s:s, s:s}, {}], s:[{s:{s:s}, s:s}, {s:{s:s}, s:s}]}", "customer", "$key",
                                             "k", "name", "ok", "vehicle", "customer", "$key", "nope", "vin",
                                             "LSVAB4182E2123456", "customer", "$key", "k", "vin", "bad vin"));
    char file[] = "/tmp/loom-badseed-XXXXXX.json";
    int fd = mkstemps(file, 5);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(json_dump_file(b, file, 0), 0);
    json_decref(b);
    const char *bad[] = {h_loom_bin(), "app", "import", file, "--publish", "--db", url, NULL};
    assert_int_not_equal(h_run(bad, NULL, out, sizeof out), 0);
    assert_non_null(strstr(out, "/data/customer/1/name"));    /* required */
    assert_non_null(strstr(out, "/data/vehicle/0/customer"));  /* an unknown $key */
    assert_non_null(strstr(out, "/data/vehicle/1/vin"));       /* the form's pattern */
    assert_int_equal(count(url, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'app_badseed'"), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM loom.apps WHERE id = 'badseed'"), 0);
    unlink(file);
    free(url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_4s),
        cmocka_unit_test(test_bundle_data),
        cmocka_unit_test(test_4s_flows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
