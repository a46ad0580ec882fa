/* test_filter.c - engine/store/filter against real tables: the spec's example
 * app is published, rows are inserted, and filters run as the SQL they
 * compile to. Counts for every operator and path kind; hidden fields and
 * unreadable forms are unknown_field; an injection corpus yields only clean
 * errors or valid queries, never a PostgreSQL syntax error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/bundle.h"
#include "perm/perm.h"
#include "store/db.h"
#include "store/filter.h"
#include "store/query.h"

#ifndef SOURCE_DIR
#error SOURCE_DIR must name the repository
#endif

static char *url;
static PGconn *pg;
static json_t *bundle;

static int setup(void **state)
{
    (void)state;
    url = h_fresh_db("loomtest_filter");
    char out[16384], err[256];
    const char *path = SOURCE_DIR "/tests/fixtures/model/valid_spec_examples/bundle.json";
    const char *argv[] = {h_loom_bin(), "app", "import", path, "--publish", "--db", url, NULL};
    if (h_run(argv, NULL, out, sizeof out) != 0)
        return -1;
    bundle = bundle_load(path, err, sizeof err);
    pg = db_connect_once(url, NULL, 0);   /* a session as the server's: UTC, ISO dates */
    const char *rows =
        "TRUNCATE app_fours.customer CASCADE;"   /* the bundle's seed data: this test brings its own rows */
        "INSERT INTO loom.users (id, username) VALUES (100, 'ana'), (101, 'bo') ON CONFLICT DO NOTHING;"
        "INSERT INTO app_fours.customer (id, name, level, tags) VALUES"
        " (1, '张三', 'vip', '{fleet}'), (2, 'Li 50%_off', 'gold', '{retail,fleet}'), (3, 'Wang', 'normal', '{}'),"
        " (4, 'O''Brien', NULL, NULL);"
        "INSERT INTO app_fours.lead (id, name, source, budget, internal_note, _owner) VALUES"
        " (1, 'a', 'campaign', 100, 'x', 100), (2, 'b', 'walk_in', 200, 'y', 101), (3, 'c', 'campaign', NULL, NULL, 100);"
        "INSERT INTO app_fours.service_ticket (id, _state, customer, labor_hours, total, overdue, reopened, _created_at) VALUES"
        " (1, 'pending', 1, 1.5, 100, true, false, now() - interval '1 hour'),"
        " (2, 'closed', 2, 0, 50, false, true, now() - interval '40 days'),"
        " (3, 'in_repair', NULL, NULL, NULL, false, false, now());"
        "INSERT INTO app_fours.service_ticket__parts (_parent, part, unit_cost, amount) VALUES"
        " (1, 'filter', 10, 20), (1, 'oil', 5, 5), (2, 'tyre', 80, 320);";
    PGresult *r = PQexec(pg, rows);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "%s", PQerrorMessage(pg));
    PQclear(r);
    return ok && bundle ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(pg);
    json_decref(bundle);
    free(url);
    return 0;
}

/* Runs the condition as a count over form; -1 with sqlstate on a database error. */
static long run_count(const char *form, buf *cond, json_t *args, char *sqlstate)
{
    buf sql = {0};
    buf_printf(&sql, "SELECT count(*) FROM app_fours.\"%s\" AS t WHERE %s", form, cond->data);
    size_t na = json_array_size(args);
    const char *vals[na + 1];
    for (size_t i = 0; i < na; i++)
        vals[i] = json_string_value(json_array_get(args, i));
    PGresult *r = PQexecParams(pg, sql.data, (int)na, NULL, vals, NULL, NULL, 0);
    long n = -1;
    sqlstate[0] = '\0';
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        n = atol(PQgetvalue(r, 0, 0));
    else
        snprintf(sqlstate, 8, "%s", PQresultErrorField(r, PG_DIAG_SQLSTATE));
    PQclear(r);
    buf_free(&sql);
    return n;
}

/* Runs filter on form as ctx; returns the count, or -1 with e (a refused
 * filter, e->code set) or sqlstate (a database error) set. */
static long count(const filter_ctx *ctx, const char *form, const char *filter_json, filter_err *e, char *sqlstate)
{
    json_t *flt = json_loads(filter_json, 0, NULL);
    if (!flt)
        fail_msg("not JSON: %s", filter_json);
    buf cond = {0};
    json_t *args = json_array();
    long n = -1;
    *e = (filter_err){0};
    sqlstate[0] = '\0';
    if (filter_sql(ctx, form, "t", flt, &cond, args, e))
        n = run_count(form, &cond, args, sqlstate);
    buf_free(&cond);
    json_decref(args);
    json_decref(flt);
    return n;
}

/* The rows of form a caller with roles may read, by filter_scope_sql. */
static long scope_count(const char *form, const char *roles_json, long long me)
{
    json_t *roles = json_loads(roles_json, 0, NULL);
    filter_ctx c = {.bundle = bundle, .schema = "app_fours", .roles = roles, .me = me, .timezone = "UTC"};
    perm_decision d;
    perm_decide(bundle, form, roles, false, &d);
    buf cond = {0};
    json_t *args = json_array();
    filter_err e;
    char st[8];
    long n = -2;
    if (filter_scope_sql(&c, form, "t", d.read, &cond, args, &e))
        n = run_count(form, &cond, args, st);
    buf_free(&cond);
    json_decref(args);
    perm_free(&d);
    json_decref(roles);
    return n;
}

static filter_ctx system_ctx(void)
{
    return (filter_ctx){.bundle = bundle, .schema = "app_fours", .system = true, .me = 100, .timezone = "Asia/Shanghai"};
}

static void test_operators_and_paths(void **state)
{
    (void)state;
    filter_ctx c = system_ctx();
    struct {
        const char *form, *filter;
        long want;
    } cases[] = {
        {"customer", "{}", 4},
        {"customer", "{\"level\": \"vip\"}", 1},
        {"customer", "{\"level\": {\"$ne\": \"vip\"}}", 3},                 /* $ne matches null too */
        {"customer", "{\"level\": {\"$in\": [\"vip\", \"gold\"]}}", 2},
        {"customer", "{\"level\": {\"$in\": []}}", 0},
        {"customer", "{\"level\": {\"$nin\": [\"vip\"]}}", 3},
        {"customer", "{\"level\": null}", 1},
        {"customer", "{\"level\": {\"$null\": false}}", 3},
        {"customer", "{\"name\": {\"$contains\": \"张\"}}", 1},
        {"customer", "{\"name\": {\"$contains\": \"50%_\"}}", 1},         /* % and _ literally */
        {"customer", "{\"name\": {\"$contains\": \"%\"}}", 1},
        {"customer", "{\"name\": {\"$startswith\": \"o'b\"}}", 1},        /* case and quotes */
        {"customer", "{\"tags\": {\"$has\": \"fleet\"}}", 2},
        {"customer", "{\"tags\": {\"$hasany\": [\"retail\", \"fleet\"]}}", 2},
        {"customer", "{\"tags\": {\"$null\": true}}", 1},
        {"customer", "{\"$or\": [{\"level\": \"vip\"}, {\"name\": \"Wang\"}]}", 2},
        {"customer", "{\"$not\": {\"level\": \"vip\"}}", 3},               /* the complement: no level is not vip */
        {"customer", "{\"id\": {\"$between\": [2, 3]}}", 2},
        {"service_ticket", "{\"labor_hours\": {\"$gt\": 0}}", 1},
        {"service_ticket", "{\"labor_hours\": {\"$gte\": \"0\"}}", 2},
        {"service_ticket", "{\"total\": {\"$lt\": 60.5}}", 1},
        {"service_ticket", "{\"overdue\": true, \"reopened\": false}", 1},
        {"service_ticket", "{\"_state\": {\"$in\": [\"pending\", \"in_repair\"]}}", 2},
        {"service_ticket", "{\"customer.level\": \"gold\"}", 1},           /* through a ref */
        {"service_ticket", "{\"customer.tags\": {\"$has\": \"fleet\"}}", 2},
        {"service_ticket", "{\"parts.part\": \"oil\"}", 1},                /* through a subform */
        {"service_ticket", "{\"parts.amount\": {\"$gte\": 100}}", 1},
        {"service_ticket", "{\"parts.unit_cost\": {\"$lt\": 20}, \"customer.level\": \"vip\"}", 1},
        {"service_ticket", "{\"_created_at\": {\"$gte\": {\"$now\": \"-2h\"}}}", 2},
        {"service_ticket", "{\"_created_at\": {\"$lt\": {\"$today\": \"-30d\"}}}", 1},
        {"lead", "{\"_owner\": {\"$me\": true}}", 2},
        {"lead", "{\"budget\": {\"$between\": [\"50\", 150]}}", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        filter_err e;
        char st[8];
        long n = count(&c, cases[i].form, cases[i].filter, &e, st);
        if (n != cases[i].want)
            fail_msg("case %zu %s %s: %ld rows, want %ld (%s at %s, sqlstate %s)", i, cases[i].form,
                     cases[i].filter, n, cases[i].want, e.message, e.path, st);
    }
}

/* A day compared with a datetime is that whole day in the app's time zone: 23:59:59 and 00:00 in Shanghai
 * are two days, one day in UTC. */
static void test_days_of_datetimes(void **state)
{
    (void)state;
    PGresult *r = PQexec(pg, "INSERT INTO app_fours.service_ticket (id, _state, _created_at) VALUES"
                             " (900, 'closed', '2026-03-09 15:59:59+00'), (901, 'closed', '2026-03-09 16:00:00+00')");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    filter_ctx shanghai = system_ctx(), utc = system_ctx();
    utc.timezone = "UTC";
    struct {
        filter_ctx *c;
        const char *cond;
        long want;
    } cases[] = {
        {&shanghai, "\"2026-03-10\"", 1},
        {&shanghai, "\"2026-03-09\"", 1},
        {&utc, "\"2026-03-09\"", 2},
        {&utc, "\"2026-03-10\"", 0},
        {&shanghai, "{\"$ne\": \"2026-03-10\"}", 1},
        {&shanghai, "{\"$gt\": \"2026-03-09\"}", 1},
        {&shanghai, "{\"$gte\": \"2026-03-09\"}", 2},
        {&shanghai, "{\"$lte\": \"2026-03-09\"}", 1},
        {&shanghai, "{\"$lt\": \"2026-03-10\"}", 1},
        {&utc, "{\"$lte\": \"2026-03-09\"}", 2},
        {&shanghai, "{\"$between\": [\"2026-03-09\", \"2026-03-09\"]}", 1},
        {&shanghai, "{\"$between\": [\"2026-03-09\", \"2026-03-10\"]}", 2},
        {&shanghai, "{\"$between\": [\"2026-03-10\", \"2026-03-09T16:00:00Z\"]}", 1},   /* a day, then an instant */
        {&shanghai, "{\"$gte\": \"2026-03-09T16:00:00Z\"}", 1},
        {&shanghai, "{\"$in\": [\"2026-03-10\"]}", 1},
        {&shanghai, "{\"$in\": [\"2026-03-08\", \"2026-03-09\"]}", 1},
        {&shanghai, "{\"$in\": [\"2026-03-08\", \"2026-03-09T15:59:59Z\"]}", 1},   /* a day or an instant */
        {&shanghai, "{\"$nin\": [\"2026-03-10\"]}", 1},
        {&utc, "{\"$nin\": [\"2026-03-09\"]}", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char flt[256];
        snprintf(flt, sizeof flt, "{\"id\": {\"$gte\": 900}, \"_created_at\": %s}", cases[i].cond);
        filter_err e;
        char st[8];
        long n = count(cases[i].c, "service_ticket", flt, &e, st);
        if (n != cases[i].want)
            fail_msg("case %zu %s: %ld rows, want %ld (%s at %s, sqlstate %s)", i, flt, n, cases[i].want, e.message, e.path, st);
    }
    filter_err e;
    char st[8];
    assert_int_equal(count(&shanghai, "service_ticket", "{\"_created_at\": {\"$lt\": \"2026-02-30\"}}", &e, st), -1);
    assert_int_equal(e.code, LOOM_BAD_FILTER);
    assert_string_equal(e.path, "/_created_at/$lt");
    r = PQexec(pg, "DELETE FROM app_fours.service_ticket WHERE id >= 900");
    PQclear(r);
}

static void test_errors_and_visibility(void **state)
{
    (void)state;
    filter_ctx c = system_ctx();
    struct {
        const char *form, *filter;
        loom_code code;
        const char *path;
    } cases[] = {
        {"customer", "{\"colour\": 1}", LOOM_UNKNOWN_FIELD, "/colour"},
        {"customer", "{\"level\": {\"$like\": \"v%\"}}", LOOM_BAD_FILTER, "/level/$like"},
        {"customer", "{\"$xor\": []}", LOOM_BAD_FILTER, "/$xor"},
        {"customer", "{\"level\": \"platinum\"}", LOOM_BAD_FILTER, "/level"},   /* not an option */
        {"customer", "{\"name.first\": \"x\"}", LOOM_UNKNOWN_FIELD, "/name.first"},
        {"service_ticket", "{\"labor_hours\": {\"$gt\": \"lots\"}}", LOOM_BAD_FILTER, "/labor_hours/$gt"},
        {"service_ticket", "{\"parts\": 1}", LOOM_BAD_FILTER, "/parts"},
        {"service_ticket", "{\"_created_at\": {\"$gt\": {\"$now\": \"yesterday\"}}}", LOOM_BAD_FILTER,
         "/_created_at/$gt/$now"},
        {"lead", "{\"$or\": [{\"a/b~c\": 1}]}", LOOM_UNKNOWN_FIELD, "/$or/0/a~1b~0c"},
        {"customer", "{\"_state\": \"open\"}", LOOM_UNKNOWN_FIELD, "/_state"},
        {"customer", "{\"tags\": \"fleet\"}", LOOM_BAD_FILTER, "/tags"},   /* a set: $has */
        {"customer", "{\"name\": {\"$me\": true}}", LOOM_BAD_FILTER, "/name/$me"},
        {"customer", "{\"name\": {\"$gt\": {\"$now\": \"-1h\"}}}", LOOM_BAD_FILTER, "/name/$gt/$now"},
        {"customer", "{\"id\": {\"$in\": [{\"$today\": \"\"}]}}", LOOM_BAD_FILTER, "/id/$in/0/$today"},
        {"customer", "{\"tags\": {\"$gt\": \"a\"}}", LOOM_BAD_FILTER, "/tags/$gt"},   /* no flow, no _state */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        filter_err e;
        char st[8];
        long n = count(&c, cases[i].form, cases[i].filter, &e, st);
        if (n != -1 || e.code != cases[i].code || strcmp(e.path, cases[i].path) != 0 || !e.message[0])
            fail_msg("case %zu %s: n %ld code %d path %s (want %d %s)", i, cases[i].filter, n, (int)e.code, e.path,
                     (int)cases[i].code, cases[i].path);
    }
    /* as a sales user: internal_note is hidden, the same answer as no field at all */
    json_t *sales = json_pack("[s]", "sales");
    filter_ctx s = {.bundle = bundle, .schema = "app_fours", .roles = sales, .me = 100, .timezone = "UTC"};
    filter_err e, none;
    char st[8];
    assert_int_equal(count(&s, "lead", "{\"internal_note\": \"x\"}", &e, st), -1);
    assert_int_equal(count(&s, "lead", "{\"internal_notf\": \"x\"}", &none, st), -1);
    assert_int_equal(e.code, LOOM_UNKNOWN_FIELD);
    assert_int_equal(none.code, LOOM_UNKNOWN_FIELD);
    assert_non_null(strstr(e.message, "internal_note"));   /* the messages differ only by the name */
    assert_non_null(strstr(none.message, "internal_notf"));
    assert_int_equal(strlen(e.message), strlen(none.message));
    assert_int_equal(count(&s, "lead", "{\"budget\": {\"$gt\": 150}}", &e, st), 1);   /* read-only is readable */
    /* a form the role may not read at all */
    assert_int_equal(count(&s, "service_ticket", "{}", &e, st), -1);
    assert_int_equal(e.code, LOOM_NOT_FOUND);
    json_decref(sales);

    /* a technician reads tickets but not customers: no path into customer;
     * and parts.unit_cost is hidden from it */
    json_t *tech = json_pack("[s]", "technician");
    filter_ctx t = {.bundle = bundle, .schema = "app_fours", .roles = tech, .me = 100, .timezone = "UTC"};
    assert_int_equal(count(&t, "service_ticket", "{\"customer.level\": \"vip\"}", &e, st), -1);
    assert_int_equal(e.code, LOOM_UNKNOWN_FIELD);
    assert_int_equal(count(&t, "service_ticket", "{\"parts.unit_cost\": {\"$lt\": 20}}", &e, st), -1);
    assert_int_equal(e.code, LOOM_UNKNOWN_FIELD);
    assert_string_equal(e.path, "/parts.unit_cost");
    assert_int_equal(count(&t, "service_ticket", "{\"parts.part\": \"oil\"}", &e, st), 1);
    json_decref(tech);
}

/* Read scopes as SQL, and paths through refs only see the rows the caller may read. */
static void test_scopes(void **state)
{
    (void)state;
    assert_int_equal(scope_count("lead", "[\"sales\"]", 100), 2);               /* own */
    assert_int_equal(scope_count("lead", "[\"sales\"]", 101), 1);
    assert_int_equal(scope_count("lead", "[\"marketing\"]", 101), 2);           /* {"filter": source campaign} */
    assert_int_equal(scope_count("lead", "[\"sales\", \"marketing\"]", 101), 3);  /* the union */
    assert_int_equal(scope_count("lead", "[\"sales_manager\"]", 101), 3);
    assert_int_equal(scope_count("lead", "[\"auditor\"]", 101), 3);            /* "*" */
    assert_int_equal(scope_count("lead", "[\"technician\"]", 101), 0);

    /* "team": the records of my team, and mine without a team */
    json_t *perms = json_object_get(bundle, "permissions");
    json_t *saved = json_deep_copy(perms);
    json_object_set_new(json_object_get(perms, "lead"), "team_lead", json_pack("{s:s}", "read", "team"));
    assert_int_equal(scope_count("lead", "[\"team_lead\"]", 100), 2);
    char *r = h_sql_value(url, "UPDATE loom.users SET team = 'north' WHERE id IN (100, 101) RETURNING 1");
    free(r);
    assert_int_equal(scope_count("lead", "[\"team_lead\"]", 100), 3);
    r = h_sql_value(url, "UPDATE loom.users SET team = 'south' WHERE id = 101 RETURNING 1");
    free(r);
    assert_int_equal(scope_count("lead", "[\"team_lead\"]", 101), 1);

    /* a role that reads every ticket but only vip customers: a filter through
     * customer cannot find tickets by a customer it may not read */
    json_object_set_new(perms, "service_ticket", json_pack("{s:{s:s}}", "desk", "read", "all"));
    json_object_set_new(perms, "customer", json_pack("{s:{s:{s:{s:s}}}}", "desk", "read", "filter", "level", "vip"));
    json_t *desk = json_pack("[s]", "desk");
    filter_ctx d = {.bundle = bundle, .schema = "app_fours", .roles = desk, .me = 100, .timezone = "UTC"};
    filter_err e;
    char st[8];
    assert_int_equal(count(&d, "service_ticket", "{\"customer.name\": {\"$contains\": \"li\"}}", &e, st), 0);
    assert_int_equal(count(&d, "service_ticket", "{\"customer.name\": {\"$contains\": \"张\"}}", &e, st), 1);
    assert_int_equal(count(&d, "service_ticket", "{\"customer.level\": {\"$ne\": \"normal\"}}", &e, st), 1);
    json_decref(desk);
    json_object_update(perms, saved);
    json_object_del(perms, "customer");
    json_decref(saved);
}


/* ---- record queries ---- */

/* Runs q's page (or record) query: the items, and the next cursor in next. */
static json_t *run_query(query *q, char **next)
{
    size_t na = json_array_size(q->args);
    const char *vals[na + 1];
    for (size_t i = 0; i < na; i++)
        vals[i] = json_string_value(json_array_get(q->args, i));
    PGresult *r = PQexecParams(pg, q->sql.data, (int)na, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s\n%s", PQresultErrorMessage(r), q->sql.data);
    json_t *items = query_items(q, r, next);
    PQclear(r);
    return items;
}

/* Every page of a query, walked with limit, joined; and the page count. */
static json_t *walk(const filter_ctx *c, const char *form, const char *sort, json_t *filter, long limit, int *pages)
{
    json_t *all = json_array();
    char *cursor = NULL;
    *pages = 0;
    do {
        query_spec spec = {.filter = filter, .sort = sort, .limit = limit, .cursor = cursor};
        query q;
        filter_err e;
        if (!query_list(c, form, &spec, &q, &e))
            fail_msg("%s %s: %s at %s", form, sort, e.message, e.path);
        free(cursor);
        json_t *items = run_query(&q, &cursor);
        json_array_extend(all, items);
        json_decref(items);
        query_free(&q);
        if (++*pages > 100)
            fail_msg("the pages never end");
    } while (cursor);
    return all;
}

static void test_pages_walk_every_sort(void **state)
{
    (void)state;
    filter_ctx c = system_ctx();
    /* more rows with ties and nulls */
    char *r = h_sql_value(url, "INSERT INTO app_fours.customer (id, name, level, _created_at) SELECT i + 4, 'c' || (i % 7), "
                               "(ARRAY['vip','gold',NULL])[i % 3 + 1], now() - (i % 5) * interval '1.5 second' "
                               "FROM generate_series(1, 40) i RETURNING 1");
    free(r);
    const char *sorts[] = {NULL, "name", "-name", "level", "-level", "level,-name", "-level,name,-id",
                           "_created_at", "-_created_at,level", "id"};
    for (size_t i = 0; i < sizeof sorts / sizeof sorts[0]; i++) {
        int pages, one;
        json_t *whole = walk(&c, "customer", sorts[i], NULL, 1000, &one);
        assert_int_equal(one, 1);
        assert_int_equal(json_array_size(whole), 44);
        for (long limit = 1; limit <= 7; limit += 3) {
            json_t *paged = walk(&c, "customer", sorts[i], NULL, limit, &pages);
            if (!json_equal(paged, whole))
                fail_msg("sort %s, limit %ld: the pages differ from one list", sorts[i] ? sorts[i] : "(default)", limit);
            assert_int_equal(pages, (44 + limit - 1) / limit);   /* no empty last page */
            json_decref(paged);
        }
        json_decref(whole);
    }
    /* the default is newest first, and a filter pages too */
    int pages;
    json_t *only_vip = json_pack("{s:s}", "level", "vip");
    json_t *vip = walk(&c, "customer", NULL, only_vip, 4, &pages);
    json_decref(only_vip);
    char *n = h_sql_value(url, "SELECT count(*) FROM app_fours.customer WHERE level = 'vip'");
    assert_int_equal(json_array_size(vip), atoi(n));
    free(n);
    assert_true(json_integer_value(json_object_get(json_array_get(vip, 0), "id")) >
                json_integer_value(json_object_get(json_array_get(vip, 1), "id")));
    json_decref(vip);
    r = h_sql_value(url, "DELETE FROM app_fours.customer WHERE id > 4 RETURNING 1");
    free(r);
}

static void test_record_json(void **state)
{
    (void)state;
    filter_ctx c = system_ctx();
    query q;
    filter_err e;
    assert_true(query_get(&c, "service_ticket", "1", NULL, &q, &e));
    json_t *items = run_query(&q, NULL);
    query_free(&q);
    assert_int_equal(json_array_size(items), 1);
    json_t *t = json_array_get(items, 0);
    assert_string_equal(json_string_value(json_object_get(t, "labor_hours")), "1.5");   /* the field's scale */
    assert_string_equal(json_string_value(json_object_get(t, "total")), "100.00");
    assert_true(json_is_null(json_object_get(t, "discount")));
    assert_int_equal(json_integer_value(json_object_get(t, "customer")), 1);
    assert_true(json_is_true(json_object_get(t, "overdue")));
    assert_string_equal(json_string_value(json_object_get(t, "_state")), "pending");
    const char *at = json_string_value(json_object_get(t, "_created_at"));
    assert_non_null(at);
    assert_int_equal(strlen(at), 20);
    assert_int_equal(at[10], 'T');
    assert_int_equal(at[19], 'Z');
    json_t *parts = json_object_get(t, "parts");
    assert_int_equal(json_array_size(parts), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 0), "part")), "filter");
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 0), "unit_cost")), "10.00");
    assert_true(json_is_integer(json_object_get(json_array_get(parts, 0), "id")));
    json_decref(items);
    /* an empty subform is [], a null multiselect [] */
    assert_true(query_get(&c, "service_ticket", "3", NULL, &q, &e));
    items = run_query(&q, NULL);
    query_free(&q);
    assert_int_equal(json_array_size(json_object_get(json_array_get(items, 0), "parts")), 0);
    assert_true(json_is_array(json_object_get(json_array_get(items, 0), "parts")));
    json_decref(items);
    assert_true(query_get(&c, "customer", "4", NULL, &q, &e));
    items = run_query(&q, NULL);
    query_free(&q);
    assert_true(json_is_array(json_object_get(json_array_get(items, 0), "tags")));
    assert_null(json_object_get(json_array_get(items, 0), "_state"));   /* no flow */
    json_decref(items);
    /* no such record */
    assert_true(query_get(&c, "customer", "999", NULL, &q, &e));
    items = run_query(&q, NULL);
    query_free(&q);
    assert_int_equal(json_array_size(items), 0);
    json_decref(items);
}

static void test_query_permissions(void **state)
{
    (void)state;
    json_t *sales = json_pack("[s]", "sales");
    filter_ctx s = {.bundle = bundle, .schema = "app_fours", .roles = sales, .me = 100, .timezone = "UTC"};
    int pages;
    json_t *mine = walk(&s, "lead", NULL, NULL, 1, &pages);
    assert_int_equal(json_array_size(mine), 2);   /* read: own */
    assert_int_equal(pages, 2);
    size_t i;
    json_t *x;
    json_array_foreach(mine, i, x)
    {
        assert_null(json_object_get(x, "internal_note"));   /* hidden: not there at all */
        assert_non_null(json_object_get(x, "budget"));
        assert_int_equal(json_integer_value(json_object_get(x, "_owner")), 100);
    }
    json_decref(mine);
    query q;
    filter_err e;
    /* outside the scope is the same as missing */
    assert_true(query_get(&s, "lead", "2", NULL, &q, &e));
    json_t *items = run_query(&q, NULL);
    query_free(&q);
    assert_int_equal(json_array_size(items), 0);
    json_decref(items);
    /* a hidden field in sort and fields is unknown_field, as in a filter */
    query_spec spec = {.sort = "internal_note"};
    assert_false(query_list(&s, "lead", &spec, &q, &e));
    query_free(&q);
    assert_int_equal(e.code, LOOM_UNKNOWN_FIELD);
    assert_string_equal(e.path, "/sort");
    spec = (query_spec){.fields = "name,internal_note"};
    assert_false(query_list(&s, "lead", &spec, &q, &e));
    query_free(&q);
    assert_int_equal(e.code, LOOM_UNKNOWN_FIELD);
    assert_string_equal(e.path, "/fields");
    /* projection: id and the fields asked for */
    spec = (query_spec){.fields = "name", .count = true};
    assert_true(query_list(&s, "lead", &spec, &q, &e));
    items = run_query(&q, NULL);
    assert_int_equal(json_object_size(json_array_get(items, 0)), 2);
    assert_non_null(json_object_get(json_array_get(items, 0), "id"));
    json_decref(items);
    /* the count sees the same rows */
    size_t na = json_array_size(q.count_args);
    const char *vals[na + 1];
    for (size_t k = 0; k < na; k++)
        vals[k] = json_string_value(json_array_get(q.count_args, k));
    PGresult *r = PQexecParams(pg, q.count_sql.data, (int)na, NULL, vals, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "2");
    PQclear(r);
    query_free(&q);
    json_decref(sales);
    /* a technician's subform rows lack the hidden unit_cost */
    json_t *tech = json_pack("[s]", "technician");
    filter_ctx t = {.bundle = bundle, .schema = "app_fours", .roles = tech, .me = 100, .timezone = "UTC"};
    char *u = h_sql_value(url, "UPDATE app_fours.service_ticket SET _owner = 100 WHERE id = 1 RETURNING 1");
    free(u);
    assert_true(query_get(&t, "service_ticket", "1", NULL, &q, &e));
    items = run_query(&q, NULL);
    query_free(&q);
    json_t *row = json_array_get(json_object_get(json_array_get(items, 0), "parts"), 0);
    assert_non_null(json_object_get(row, "part"));
    assert_null(json_object_get(row, "unit_cost"));
    json_decref(items);
    json_decref(tech);
}

static void test_bad_queries(void **state)
{
    (void)state;
    filter_ctx c = system_ctx();
    struct {
        query_spec spec;
        loom_code code;
        const char *path;
    } cases[] = {
        {{.sort = "tags"}, LOOM_BAD_REQUEST, "/sort"},
        {{.sort = "name,name"}, LOOM_BAD_REQUEST, "/sort"},
        {{.sort = "name,"}, LOOM_OK, NULL},
        {{.sort = ",name"}, LOOM_UNKNOWN_FIELD, "/sort"},
        {{.sort = "nom"}, LOOM_UNKNOWN_FIELD, "/sort"},
        {{.sort = "name\"; DROP TABLE x; --"}, LOOM_UNKNOWN_FIELD, "/sort"},
        {{.limit = 1001}, LOOM_BAD_REQUEST, "/limit"},
        {{.limit = -1}, LOOM_BAD_REQUEST, "/limit"},
        {{.fields = "name,"}, LOOM_OK, NULL},
        {{.fields = "name,,level"}, LOOM_UNKNOWN_FIELD, "/fields"},
        {{.cursor = "!!!"}, LOOM_BAD_REQUEST, "/cursor"},
        {{.cursor = "e30"}, LOOM_BAD_REQUEST, "/cursor"},   /* {} */
        {{.filter = NULL, .sort = "name", .cursor = "eyJzIjoibmFtZSxpZCIsImsiOlsxLDJdfQ"}, LOOM_BAD_REQUEST, "/cursor"},
        {{.sort = "name", .cursor = "eyJzIjoiLWlkIiwiayI6WzJdfQ"}, LOOM_BAD_REQUEST, "/cursor"},   /* -id's cursor */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        query q;
        filter_err e = {0};
        bool ok = query_list(&c, "customer", &cases[i].spec, &q, &e);
        if (ok != (cases[i].code == LOOM_OK) || (!ok && (e.code != cases[i].code || strcmp(e.path, cases[i].path))))
            fail_msg("case %zu: ok %d code %d path %s", i, ok, (int)e.code, e.path);
        if (ok) {
            json_t *items = run_query(&q, NULL);
            json_decref(items);
        }
        query_free(&q);
    }
    /* a cursor with a forged value of the right shape runs as a plain value */
    query_spec spec = {.sort = "name", .cursor = "eyJzIjoibmFtZSxpZCIsImsiOlsiJzsgRFJPUCIsMl19"};
    query q;
    filter_err e;
    assert_true(query_list(&c, "customer", &spec, &q, &e));
    json_t *items = run_query(&q, NULL);
    json_decref(items);
    query_free(&q);
}

/* Every field of every form (subform fields through their path) under every
 * operator with every kind of value: a clean refusal or a query that runs,
 * never a database error. */
static void test_type_matrix(void **state)
{
    (void)state;
    filter_ctx c = system_ctx();
    const char *ops[] = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$between",
                         "$contains", "$startswith", "$null", "$has", "$hasany"};
    const char *values[] = {"\"x\"", "\"12\"", "12", "1.5", "true", "null", "[]", "[\"vip\", 1]", "[1, 2]",
                            "{\"$me\": true}", "{\"$now\": \"-1h\"}", "{\"$today\": \"+1d\"}",
                            "\"2026-11-22\"", "\"2026-11-22T10:00:00Z\"", "[\"2026-01-01\", \"2026-12-31\"]",
                            "\"vip\"", "[\"fleet\"]"};
    const char *system[] = {"id", "_version", "_state", "_owner", "_created_at", "_updated_by"};
    int ran = 0, refused = 0;
    size_t i, k;
    json_t *form, *field;
    json_array_foreach(json_object_get(bundle, "forms"), i, form)
    {
        const char *fid = json_string_value(json_object_get(form, "id"));
        json_t *paths = json_array();
        for (size_t s = 0; s < sizeof system / sizeof system[0]; s++)
            json_array_append_new(paths, json_string(system[s]));
        json_array_foreach(json_object_get(form, "fields"), k, field)
        {
            const char *name = json_string_value(json_object_get(field, "id"));
            json_array_append_new(paths, json_string(name));
            size_t j;
            json_t *sub;
            json_array_foreach(json_object_get(field, "fields"), j, sub)
                json_array_append_new(paths, json_sprintf("%s.%s", name, json_string_value(json_object_get(sub, "id"))));
            if (!strcmp(json_string_value(json_object_get(field, "type")), "ref"))
                json_array_append_new(paths, json_sprintf("%s.id", name));
        }
        json_t *path;
        json_array_foreach(paths, k, path)
        {
            for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
                for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
                    char flt[512];
                    snprintf(flt, sizeof flt, "{\"%s\": {\"%s\": %s}}", json_string_value(path), ops[o], values[v]);
                    filter_err e;
                    char st[8];
                    long n = count(&c, fid, flt, &e, st);
                    if (n < 0 && e.code == LOOM_OK)
                        fail_msg("%s %s: database error %s", fid, flt, st);
                    ran += n >= 0;
                    refused += n < 0;
                }
            }
        }
        json_decref(paths);
    }
    printf("  type matrix: %d filters ran, %d refused cleanly, 0 database errors\n", ran, refused);
    assert_true(ran > 100);
}

static void test_injection_corpus(void **state)
{
    (void)state;
    filter_ctx c = system_ctx();
    const char *hostile[] = {
        "{\"name\": \"'; DROP TABLE app_fours.customer; --\"}",
        "{\"name\": {\"$contains\": \"\\\\'; SELECT pg_sleep(10); --\"}}",
        "{\"name\\\"; DROP TABLE x; --\": 1}",
        "{\"name) OR (1=1\": 1}",
        "{\"level\": {\"$in\": [\"vip'\", \"x\\\" OR 1=1 --\"]}}",
        "{\"id\": \"1 OR 1=1\"}",
        "{\"id\": {\"$gt\": \"0); DELETE FROM app_fours.customer; --\"}}",
        "{\"tags\": {\"$has\": \"fleet'}\"}}",
        "{\"customer.name\\\"--\": 1}",
        "{\"$or\": [{\"name\": \"a\"}, {\"$and\": [{\"name\": {\"$ne\": \"b\"}}, {\"name\": {\"$startswith\": \"\\\\%\"}}]}]}",
        "{\"_created_at\": {\"$gte\": \"2026-11-22T00:00:00Z' OR '1'='1\"}}",
        "{\"_created_at\": {\"$gte\": {\"$now\": \"-1h; DROP TABLE x\"}}}",
        "{\"name\": {\"$contains\": \"\\u0000\"}}",
        "{\"name\": [\"a\", \"b\"]}",
        "{\"name\": {\"$eq\": {\"$param\": \"x'\"}}}",
        "{\"$not\": {\"$not\": {\"$not\": {\"$not\": {\"$not\": {\"$not\": {\"$not\": {\"$not\": {\"$not\": {\"name\": 1}}}}}}}}}}",
        "{\"name\": {\"$between\": [\"a\", \"z\", \"zz\"]}}",
        "{\"level\": {\"$in\": \"vip\"}}",
        "{\"id\": 99999999999999999}",
        "{\"name\": {\"$contains\": \"\\\\\\\\\"}}",
    };
    int syntax = 0, errors = 0, ran = 0;
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        json_t *check = json_loads(hostile[i], 0, NULL);
        if (!check) {   /* not JSON at all: the API answers bad_json before any of this */
            errors++;
            continue;
        }
        json_decref(check);
        filter_err e;
        char st[8];
        long n = count(&c, "customer", hostile[i], &e, st);
        if (n >= 0)
            ran++;
        else if (e.code != LOOM_OK)
            errors++;
        else {
            fprintf(stderr, "  corpus %zu: database error %s\n", i, st);
            syntax += !strncmp(st, "42", 2);
            fail_msg("corpus %zu %s: a database error %s", i, hostile[i], st);
        }
    }
    printf("  injection corpus: %d ran as plain values, %d refused as bad filters, %d syntax errors\n", ran, errors, syntax);
    assert_int_equal(syntax, 0);
    /* the table is still there and whole */
    char *n = h_sql_value(url, "SELECT count(*) FROM app_fours.customer");
    assert_string_equal(n, "4");
    free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_operators_and_paths),
        cmocka_unit_test(test_days_of_datetimes),
        cmocka_unit_test(test_errors_and_visibility),
        cmocka_unit_test(test_scopes),
        cmocka_unit_test(test_pages_walk_every_sort),
        cmocka_unit_test(test_record_json),
        cmocka_unit_test(test_query_permissions),
        cmocka_unit_test(test_bad_queries),
        cmocka_unit_test(test_type_matrix),
        cmocka_unit_test(test_injection_corpus),
    };
    return cmocka_run_group_tests_name("integration_filter", tests, setup, teardown);
}
