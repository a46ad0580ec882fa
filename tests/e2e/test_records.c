/* test_records.c - reading records over HTTP against a running server: the
 * read scope and hidden fields per role, filters, sorts and projections in
 * the query string and in POST .../records/query, keyset pages and counts,
 * one record with its ETag, and hostile query parameters (never a 5xx). */
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
#include "store/db.h"

#ifndef SOURCE_DIR
#error SOURCE_DIR must name the repository
#endif

static h_server srv;
static char *url, *admin, *ana, *bo, *boss, *nobody;
static long long ana_id, bo_id;

static h_resp send(const char *method, const char *path, const char *token, const char *body)
{
    return h_req(srv.port, method, path, token, body);
}

/* A user with roles in app fours (or none); its token. */
static char *make_user(const char *name, const char *roles, long long *id)
{
    return h_user(srv.port, admin, name, roles ? json_pack("{s:{s:o}}", "roles", "fours", json_loads(roles, 0, NULL)) : NULL,
                  id);
}

static int setup(void **state)
{
    (void)state;
    url = h_fresh_db("loomtest_records");
    char out[16384];
    const char *import[] = {h_loom_bin(), "app", "import",
                            SOURCE_DIR "/tests/fixtures/model/valid_spec_examples/bundle.json", "--publish", "--db",
                            url, NULL};
    if (h_run(import, NULL, out, sizeof out) != 0)
        return -1;
    const char *args[] = {"--workers", "2", NULL};
    const char *env[] = {"LOOM_STATEMENT_TIMEOUT_MS=2000", NULL};   /* short, for test_statement_timeout */
    if (!h_server_start(&srv, url, args, env))
        return -1;
    admin = h_login(srv.port, "admin", H_ADMIN_PASSWORD);
    ana = make_user("ana", "[\"sales\"]", &ana_id);
    bo = make_user("bo", "[\"sales\"]", &bo_id);
    boss = make_user("boss", "[\"sales_manager\"]", NULL);
    nobody = make_user("nobody", NULL, NULL);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO app_fours.lead (name, source, budget, internal_note, _owner) VALUES"
             " ('a1', 'campaign', 100, 'secret a1', %lld), ('a2', 'walk_in', 250.5, NULL, %lld),"
             " ('b1', 'campaign', 300, 'secret b1', %lld)",
             ana_id, ana_id, bo_id);
    return admin && ana && bo && boss && nobody && h_sql(url, sql) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int st = h_server_stop(&srv);
    free(admin);
    free(ana);
    free(bo);
    free(boss);
    free(nobody);
    free(url);
    return st == 0 ? 0 : -1;
}

/* GET .../forms/lead/records?<query> where query's values are percent-encoded here. */
static h_resp list(const char *token, const char *form, const char *const *kv)
{
    buf path = {0};
    buf_printf(&path, "/api/apps/fours/forms/%s/records", form);
    for (int i = 0; kv && kv[i]; i += 2) {
        buf_printf(&path, "%c%s=", i ? '&' : '?', kv[i]);
        for (const unsigned char *p = (const unsigned char *)kv[i + 1]; *p; p++) {
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-_.", *p))
                buf_printf(&path, "%c", *p);
            else
                buf_printf(&path, "%%%02X", *p);
        }
    }
    h_resp r = send("GET", path.data, token, NULL);
    buf_free(&path);
    return r;
}

static const char *item_str(const h_resp *r, size_t i, const char *key)
{
    return json_string_value(json_object_get(json_array_get(json_object_get(r->json, "items"), i), key));
}

/* search: the fields the caller sees contain the text (selects by an option's value or label), inside its
 * read scope, with the filter; never a hidden field. */
static void test_search(void **state)
{
    (void)state;
    struct {
        char **token;
        const char *search, *filter;
        long total;
    } cases[] = {
        {&boss, "secret", NULL, 2},     /* a1 and b1 by their internal note */
        {&ana, "secret", NULL, 0},      /* hidden from sales: a1 is hers, its note does not count */
        {&ana, "walk", NULL, 1},        /* a2 by its source's option */
        {&boss, " B1 ", NULL, 1},       /* case and spaces around ignored */
        {&boss, "a", "{\"source\": \"walk_in\"}", 1},
        {&boss, "%", NULL, 0},          /* literally */
        {&boss, "", NULL, 3},           /* no search */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        h_resp r = cases[i].filter ? list(*cases[i].token, "lead",
                                          (const char *[]){"search", cases[i].search, "count", "true", "filter", cases[i].filter, NULL})
                                   : list(*cases[i].token, "lead", (const char *[]){"search", cases[i].search, "count", "true", NULL});
        assert_int_equal(r.status, 200);
        if (json_integer_value(json_object_get(r.json, "total")) != cases[i].total ||
            json_array_size(json_object_get(r.json, "items")) != (size_t)cases[i].total)
            fail_msg("case %zu (%s): %s", i, cases[i].search, r.body);
        h_resp_free(&r);
    }
    const char *hostile[] = {"'; DROP TABLE app_fours.lead; --", "\\", "%_%", "a1' OR '1'='1", "$1", "\")) OR TRUE --"};
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {   /* plain text, found nowhere */
        h_resp r = list(boss, "lead", (const char *[]){"search", hostile[i], "count", "true", NULL});
        assert_int_equal(r.status, 200);
        assert_int_equal(json_integer_value(json_object_get(r.json, "total")), 0);
        h_resp_free(&r);
    }
    char *leads = h_sql_value(url, "SELECT count(*) FROM app_fours.lead");
    assert_string_equal(leads, "3");
    free(leads);
    h_resp r = send("POST", "/api/apps/fours/forms/lead/records/query", boss, "{\"search\": \"secret\", \"count\": true}");
    assert_int_equal(json_integer_value(json_object_get(r.json, "total")), 2);
    h_resp_free(&r);
    r = send("POST", "/api/apps/fours/forms/lead/records/query", boss, "{\"search\": 7}");
    assert_int_equal(r.status, 400);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "path")), "/search");
    h_resp_free(&r);
    r = send("GET", "/api/apps/fours/forms/lead/export?search=secret&fields=name", boss, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, ",a1\r\n"));
    assert_non_null(strstr(r.body, ",b1\r\n"));
    assert_null(strstr(r.body, ",a2\r\n"));
    h_resp_free(&r);
}

/* A statement that runs past the statement timeout (here: waiting for a lock another session holds) is
 * cancelled: 503 unavailable with a clear message, and the worker serves the next request. */
static void test_statement_timeout(void **state)
{
    (void)state;
    PGconn *holder = db_connect_once(url, NULL, 0);
    assert_non_null(holder);
    PGresult *r0 = PQexec(holder, "BEGIN; LOCK TABLE app_fours.lead IN ACCESS EXCLUSIVE MODE");
    assert_int_equal(PQresultStatus(r0), PGRES_COMMAND_OK);
    PQclear(r0);
    h_resp r = list(boss, "lead", NULL);
    assert_int_equal(r.status, 503);
    assert_string_equal(h_code(&r), "unavailable");
    assert_non_null(strstr(r.body, "statement timeout"));
    h_resp_free(&r);
    PQclear(PQexec(holder, "ROLLBACK"));
    PQfinish(holder);
    r = list(boss, "lead", NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
}

static void test_scope_and_hidden_fields(void **state)
{
    (void)state;
    h_resp r = list(ana, "lead", (const char *[]){"sort", "name", NULL});
    assert_int_equal(r.status, 200);
    json_t *items = json_object_get(r.json, "items");
    assert_int_equal(json_array_size(items), 2);   /* read: own */
    assert_string_equal(item_str(&r, 0, "name"), "a1");
    assert_string_equal(item_str(&r, 1, "budget"), "250.50");
    assert_null(json_object_get(json_array_get(items, 0), "internal_note"));
    assert_true(json_is_null(json_object_get(r.json, "next_cursor")));
    h_resp_free(&r);
    r = list(boss, "lead", (const char *[]){"sort", "name", NULL});
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 3);
    assert_string_equal(item_str(&r, 2, "internal_note"), "secret b1");
    h_resp_free(&r);
    r = list(nobody, "lead", NULL);   /* no role in the app: not there */
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    r = list(ana, "service_ticket", NULL);   /* no permission on the form */
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    r = list(admin, "lead", (const char *[]){"count", "true", NULL});
    assert_int_equal(json_integer_value(json_object_get(r.json, "total")), 3);
    h_resp_free(&r);
}

static void test_hidden_is_unknown(void **state)
{
    (void)state;
    /* filter, sort and fields: a hidden field and a missing one answer alike */
    const char *keys[][2] = {{"filter", "{\"internal_note\": \"secret a1\"}"}, {"sort", "internal_note"},
                             {"fields", "internal_note"}};
    const char *missing[][2] = {{"filter", "{\"internal_notx\": \"secret a1\"}"}, {"sort", "internal_notx"},
                                {"fields", "internal_notx"}};
    const char *paths[] = {"/filter/internal_note", "/sort", "/fields"};
    for (int i = 0; i < 3; i++) {
        h_resp h = list(ana, "lead", (const char *[]){keys[i][0], keys[i][1], NULL});
        h_resp m = list(ana, "lead", (const char *[]){missing[i][0], missing[i][1], NULL});
        assert_int_equal(h.status, 400);
        assert_int_equal(m.status, 400);
        assert_string_equal(h_code(&h), "unknown_field");
        assert_string_equal(h_code(&m), "unknown_field");
        json_t *e = json_array_get(json_object_get(h.json, "errors"), 0);
        assert_string_equal(json_string_value(json_object_get(e, "path")), paths[i]);
        assert_int_equal(h.body_len, m.body_len);   /* the same answer but the name */
        h_resp_free(&h);
        h_resp_free(&m);
    }
    /* the manager may use it */
    h_resp r = list(boss, "lead", (const char *[]){"filter", "{\"internal_note\": {\"$contains\": \"B1\"}}", NULL});
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);
    h_resp_free(&r);
}

static void test_pages_and_query_body(void **state)
{
    (void)state;
    /* limit 1 under "-budget": three pages, in order, the last without a cursor */
    const char *want[] = {"b1", "a2", "a1"};
    char cursor[512] = "";
    for (int page = 0; page < 3; page++) {
        h_resp r = page ? list(boss, "lead", (const char *[]){"sort", "-budget", "limit", "1", "cursor", cursor, NULL})
                        : list(boss, "lead", (const char *[]){"sort", "-budget", "limit", "1", NULL});
        assert_int_equal(r.status, 200);
        assert_string_equal(item_str(&r, 0, "name"), want[page]);
        json_t *next = json_object_get(r.json, "next_cursor");
        assert_true(page < 2 ? json_is_string(next) : json_is_null(next));
        snprintf(cursor, sizeof cursor, "%s", json_string_value(next) ? json_string_value(next) : "");
        h_resp_free(&r);
    }
    /* the same in a body, with a filter and a projection */
    h_resp r = send("POST", "/api/apps/fours/forms/lead/records/query", boss,
                    "{\"filter\": {\"source\": \"campaign\"}, \"sort\": [\"-name\"], \"fields\": [\"name\"], "
                    "\"count\": true, \"limit\": 1}");
    assert_int_equal(r.status, 200);
    assert_string_equal(item_str(&r, 0, "name"), "b1");
    assert_int_equal(json_object_size(json_array_get(json_object_get(r.json, "items"), 0)), 2);
    assert_int_equal(json_integer_value(json_object_get(r.json, "total")), 2);
    h_resp_free(&r);
    /* lists typed by hand: spaces around names, and a "+" left unencoded (a space) */
    r = send("GET", "/api/apps/fours/forms/lead/records?sort=+name,%20-budget&fields=name,%20budget%20&limit=1", boss, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(item_str(&r, 0, "name"), "a1");
    assert_int_equal(json_object_size(json_array_get(json_object_get(r.json, "items"), 0)), 3);
    h_resp_free(&r);
    struct {
        const char *body, *code, *path;
    } bad[] = {
        {"{\"colour\": 1}", "bad_request", "/colour"},
        {"{\"limit\": 0}", "bad_request", "/limit"},
        {"{\"limit\": \"5\"}", "bad_request", "/limit"},
        {"{\"count\": \"yes\"}", "bad_request", "/count"},
        {"{\"sort\": [\"name,budget\"]}", "bad_request", "/sort"},
        {"{\"filter\": {\"budget\": {\"$gt\": \"much\"}}}", "bad_filter", "/filter/budget/$gt"},
        {"{\"cursor\": \"xyz\"}", "bad_request", "/cursor"},
        {"{\"expand\": [\"budget\"]}", "bad_request", "/expand"},
        {"{\"expand\": [\"nope\"]}", "unknown_field", "/expand"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = send("POST", "/api/apps/fours/forms/lead/records/query", boss, bad[i].body);
        const char *path = json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "path"));
        if (strcmp(h_code(&r), bad[i].code) || !path || strcmp(path, bad[i].path))
            fail_msg("%s: %d %s at %s", bad[i].body, r.status, h_code(&r), path ? path : "(none)");
        h_resp_free(&r);
    }
    r = list(boss, "lead", (const char *[]){"limit", "1001", NULL});
    assert_int_equal(r.status, 400);
    h_resp_free(&r);
    r = list(boss, "lead", (const char *[]){"filter", "{\"name\": ", NULL});
    assert_int_equal(r.status, 400);
    assert_string_equal(h_code(&r), "bad_filter");
    h_resp_free(&r);
}

/* Many callers at once: a worker that takes several sends their page queries in one round trip (libpq
 * pipeline mode); each answer is still the one the request gets alone, problems and totals included. */
static void test_batched_pages(void **state)
{
    (void)state;
    h_resp first = list(boss, "lead", (const char *[]){"sort", "-budget", "limit", "1", NULL});
    char cursor[512];
    snprintf(cursor, sizeof cursor, "%s", json_string_value(json_object_get(first.json, "next_cursor")));
    h_resp_free(&first);
    struct {
        const char *token, *method, *path, *body;
    } reqs[] = {
        {ana, "GET", "/api/apps/fours/forms/lead/records?sort=name", NULL},
        {bo, "GET", "/api/apps/fours/forms/lead/records?sort=name", NULL},
        {boss, "GET", "/api/apps/fours/forms/lead/records?sort=-budget&limit=1", NULL},
        {boss, "GET", NULL, NULL},   /* the second page, by its cursor */
        {nobody, "GET", "/api/apps/fours/forms/lead/records", NULL},
        {ana, "GET", "/api/apps/fours/forms/lead/records?filter=%7B%22budget%22%3A%7B%22%24gt%22%3A%22x%22%7D%7D", NULL},
        {admin, "GET", "/api/apps/fours/forms/lead/records?count=true&fields=name", NULL},
        {boss, "POST", "/api/apps/fours/forms/lead/records/query", "{\"filter\": {\"source\": \"campaign\"}, \"sort\": \"-name\"}"},
        {ana, "GET", "/api/apps/fours/forms/lead/records?filter=%7B%22internal_note%22%3A%22x%22%7D", NULL},
    };
    enum { NREQ = sizeof reqs / sizeof reqs[0], CONNS = 24, ROUNDS = 8 };
    char page2[700];
    snprintf(page2, sizeof page2, "/api/apps/fours/forms/lead/records?sort=-budget&limit=1&cursor=%s", cursor);
    reqs[3].path = page2;
    /* each alone first: the answers to expect */
    h_resp want[NREQ];
    for (int k = 0; k < NREQ; k++) {
        want[k] = send(reqs[k].method, reqs[k].path, reqs[k].token, reqs[k].body);
        assert_true(want[k].status == 200 || want[k].status == 400 || want[k].status == 404);
    }
    assert_int_equal(want[0].status, 200);
    assert_int_equal(want[4].status, 404);
    assert_int_equal(want[5].status, 400);
    h_conn c[CONNS];
    for (int i = 0; i < CONNS; i++)
        assert_true(h_conn_open(&c[i], srv.port));
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < CONNS; i++) {
            int k = (i + round) % NREQ;
            char req[2048];
            snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %zu\r\n\r\n%s",
                     reqs[k].method, reqs[k].path, reqs[k].token, reqs[k].body ? strlen(reqs[k].body) : 0,
                     reqs[k].body ? reqs[k].body : "");
            assert_true(h_conn_sends(&c[i], req));
        }
        for (int i = 0; i < CONNS; i++) {
            int k = (i + round) % NREQ;
            h_resp r;
            assert_true(h_conn_read(&c[i], &r, 10000));
            assert_int_equal(r.status, want[k].status);
            if (r.status == 200)
                assert_string_equal(r.body, want[k].body);   /* byte for byte */
            else
                assert_string_equal(h_code(&r), h_code(&want[k]));
            h_resp_free(&r);
        }
    }
    for (int i = 0; i < CONNS; i++)
        h_conn_close(&c[i]);
    for (int k = 0; k < NREQ; k++)
        h_resp_free(&want[k]);
    /* the batched path did run */
    h_resp m = send("GET", "/metrics", NULL, NULL);
    const char *line = strstr(m.body, "\nloom_batched_queries_total ");
    assert_non_null(line);
    assert_true(atoll(line + strlen("\nloom_batched_queries_total ")) > 0);
    h_resp_free(&m);
}

static void test_one_record(void **state)
{
    (void)state;
    char *a1 = h_sql_value(url, "SELECT id FROM app_fours.lead WHERE name = 'a1'");
    char *b1 = h_sql_value(url, "SELECT id FROM app_fours.lead WHERE name = 'b1'");
    char path[128], etag[32];
    snprintf(path, sizeof path, "/api/apps/fours/forms/lead/records/%s", a1);
    h_resp r = send("GET", path, ana, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "name")), "a1");
    assert_int_equal(json_integer_value(json_object_get(r.json, "_version")), 1);
    assert_true(h_resp_header(&r, "etag", etag, sizeof etag));
    assert_string_equal(etag, "\"1\"");
    assert_null(json_object_get(r.json, "internal_note"));
    h_resp_free(&r);
    /* bo's lead is outside ana's scope: the same 404 as a record that does not exist */
    snprintf(path, sizeof path, "/api/apps/fours/forms/lead/records/%s", b1);
    h_resp out = send("GET", path, ana, NULL);
    h_resp none = send("GET", "/api/apps/fours/forms/lead/records/999999", ana, NULL);
    assert_int_equal(out.status, 404);
    assert_int_equal(none.status, 404);
    assert_int_equal(out.body_len, none.body_len);
    h_resp_free(&out);
    h_resp_free(&none);
    r = send("GET", "/api/apps/fours/forms/lead/records/1x", ana, NULL);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    free(a1);
    free(b1);
}

/* Hostile field names, sort keys, filters and cursors: clean 4xx or 200, never a 5xx. */
static void test_hostile_parameters(void **state)
{
    (void)state;
    const char *hostile[][2] = {
        {"sort", "name;DROP TABLE app_fours.lead"}, {"sort", "\"name\""}, {"sort", "-"}, {"sort", "name desc"},
        {"sort", "(select 1)"}, {"sort", "-id,-id"}, {"sort", "a,b,c,d,e,f,g,h,i"},
        {"fields", "name\" FROM app_fours.lead; --"}, {"fields", "*"}, {"fields", ""},
        {"filter", "{\"name'\": 1}"}, {"filter", "[1]"}, {"filter", "\"x\""}, {"filter", "{\"$or\": {}}"},
        {"filter", "{\"name\": {\"$in\": [\"a', 'b\"]}}"}, {"filter", "{\"budget\": {\"$gt\": \"1e400\"}}"},
        {"filter", "{\"_owner\": {\"$me\": \"x\"}}"}, {"filter", "{\"name\": {\"$contains\": \"%' OR 1=1 --\"}}"},
        {"cursor", "eyJzIjoiLWlkIiwiayI6WyIxOyBEUk9QIl19"}, {"cursor", "eyJzIjoiLWlkIiwiayI6WzEuNV19"},
        {"cursor", "eyJzIjoiLWlkIiwiayI6W251bGxdfQ"}, {"limit", "1e3"}, {"limit", "-5"}, {"count", "1"},
    };
    int ok = 0, refused = 0;
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        h_resp r = list(boss, "lead", (const char *[]){hostile[i][0], hostile[i][1], NULL});
        if (r.status >= 500 || r.status == 0)
            fail_msg("%s=%s: %d %s", hostile[i][0], hostile[i][1], r.status, r.body ? r.body : "");
        ok += r.status == 200;
        refused += r.status == 400;
        h_resp_free(&r);
    }
    printf("  hostile parameters: %d answered, %d refused with 400, 0 server errors\n", ok, refused);
    char *n = h_sql_value(url, "SELECT count(*) FROM app_fours.lead");
    assert_string_equal(n, "3");
    free(n);
}

/* The render schema and the JSON Schema per caller: hidden fields absent,
 * read-only ones marked, the flow's states, localized labels. */
/* Whether JSON Schema s (as Loom writes one) admits null. */
static bool takes_null(json_t *s)
{
    json_t *type = json_object_get(s, "type"), *x;
    size_t i;
    if (json_is_string(type))
        return !strcmp(json_string_value(type), "null");
    json_array_foreach(type, i, x) if (!strcmp(json_string_value(x), "null")) return true;
    json_array_foreach(json_object_get(s, "enum"), i, x) if (json_is_null(x)) return true;
    json_array_foreach(json_object_get(s, "oneOf"), i, x) if (takes_null(x)) return true;
    return false;
}

static void test_form_schemas(void **state)
{
    (void)state;
    /* the app's menu holds the forms the caller may use, with their labels */
    h_resp m = send("GET", "/api/apps/fours", ana, NULL);
    assert_int_equal(m.status, 200);
    json_t *menu = json_object_get(m.json, "menu");
    assert_int_equal(json_array_size(menu), 2);
    json_t *first = json_array_get(json_object_get(json_array_get(menu, 0), "items"), 0);
    assert_string_equal(json_string_value(json_object_get(first, "form")), "lead");
    assert_non_null(json_string_value(json_object_get(first, "label")));
    json_t *service = json_object_get(json_array_get(menu, 1), "items");
    size_t k;
    json_t *it;
    json_array_foreach(service, k, it) assert_null(json_object_get(it, "form"));   /* no tickets for sales */
    /* ... and what the caller may do on each: scopes by kind, never a filter's conditions */
    json_t *lead = NULL;
    json_array_foreach(json_object_get(m.json, "forms"), k, it) if (!strcmp(json_string_value(json_object_get(it, "id")), "lead"))
        lead = json_object_get(it, "permissions");
    char *text = json_dumps(lead, JSON_COMPACT);
    assert_string_equal(text, "{\"create\":true,\"read\":[\"own\"],\"update\":[\"own\"],\"delete\":false}");
    free(text);
    h_resp_free(&m);
    m = send("GET", "/api/apps/fours", boss, NULL);
    json_array_foreach(json_object_get(m.json, "forms"), k, it) if (!strcmp(json_string_value(json_object_get(it, "id")), "lead"))
        lead = json_object_get(it, "permissions");
    text = json_dumps(lead, JSON_COMPACT);
    assert_string_equal(text, "{\"create\":true,\"read\":\"all\",\"update\":\"all\",\"delete\":\"all\"}");
    free(text);
    h_resp_free(&m);
    h_resp r = send("GET", "/api/apps/fours/forms/lead", ana, NULL);
    assert_int_equal(r.status, 200);
    json_t *fields = json_object_get(r.json, "fields");
    const char *modes[][2] = {{"name", "write"}, {"owner_hint", "write"}, {"source", "write"}, {"budget", "read"}};
    assert_int_equal(json_array_size(fields), 4);   /* internal_note is hidden from sales */
    for (size_t i = 0; i < 4; i++) {
        json_t *f = json_array_get(fields, i);
        assert_string_equal(json_string_value(json_object_get(f, "id")), modes[i][0]);
        assert_string_equal(json_string_value(json_object_get(f, "mode")), modes[i][1]);
    }
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(json_array_get(fields, 2), "options"), 0), "label")),
                        "campaign");   /* an option without a label shows its value */
    assert_true(json_is_true(json_object_get(r.json, "create")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(r.json, "permissions"), "update"), 0)), "own");
    assert_null(json_object_get(r.json, "flow"));
    h_resp_free(&r);
    r = send("GET", "/api/apps/fours/forms/lead", boss, NULL);
    assert_int_equal(json_array_size(json_object_get(r.json, "fields")), 5);
    h_resp_free(&r);
    r = send("GET", "/api/apps/fours/forms/lead?format=jsonschema", ana, NULL);
    assert_int_equal(r.status, 200);
    json_t *props = json_object_get(r.json, "properties");
    assert_non_null(json_object_get(props, "name"));
    assert_null(json_object_get(props, "budget"));          /* read-only for sales */
    assert_null(json_object_get(props, "internal_note"));   /* hidden */
    assert_null(json_object_get(props, "_owner"));          /* update scope is only own */
    assert_true(json_is_false(json_object_get(r.json, "additionalProperties")));
    assert_string_equal(json_string_value(json_object_get(r.json, "$schema")), "https://json-schema.org/draft/2020-12/schema");
    json_t *src = json_object_get(props, "source");
    assert_int_equal(json_array_size(json_object_get(src, "enum")), 3);   /* its 2 options and null */
    assert_true(json_is_null(json_array_get(json_object_get(src, "enum"), 2)));
    h_resp_free(&r);
    /* a required text must hold more than spaces, as a write requires: its own pattern, and that */
    r = send("GET", "/api/apps/fours/forms/customer?format=jsonschema", admin, NULL);
    json_t *name = json_object_get(json_object_get(r.json, "properties"), "name");
    assert_string_equal(json_string_value(json_object_get(name, "pattern")), "\\S");
    h_resp_free(&r);
    r = send("GET", "/api/apps/fours/forms/vehicle?format=jsonschema", admin, NULL);
    json_t *vin = json_object_get(json_object_get(r.json, "properties"), "vin");
    assert_string_equal(json_string_value(json_object_get(vin, "pattern")), "^[A-HJ-NPR-Z0-9]{17}$");
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(vin, "allOf"), 0), "pattern")), "\\S");
    h_resp_free(&r);
    r = send("GET", "/api/apps/fours/forms/lead?format=xml", ana, NULL);
    assert_int_equal(r.status, 400);
    h_resp_free(&r);
    r = send("GET", "/api/apps/fours/forms/service_ticket", ana, NULL);   /* no permission on it */
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    r = send("GET", "/api/apps/fours/forms/nope", admin, NULL);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    /* a form with a flow and a subform, for the admin */
    r = send("GET", "/api/apps/fours/forms/service_ticket", admin, NULL);
    assert_int_equal(r.status, 200);
    json_t *flow = json_object_get(r.json, "flow");
    assert_string_equal(json_string_value(json_object_get(flow, "initial")), "pending");
    assert_true(json_array_size(json_object_get(flow, "states")) >= 2);
    size_t i;
    json_t *f, *parts = NULL;
    json_array_foreach(json_object_get(r.json, "fields"), i, f) if (!strcmp(json_string_value(json_object_get(f, "id")), "parts"))
        parts = f;
    assert_non_null(parts);
    assert_int_equal(json_array_size(json_object_get(parts, "fields")), 3);
    json_array_foreach(json_object_get(r.json, "fields"), i, f) if (!strcmp(json_string_value(json_object_get(f, "id")), "number"))
        assert_string_equal(json_string_value(json_object_get(f, "mode")), "read");   /* an autonumber */
    h_resp_free(&r);
    r = send("GET", "/api/apps/fours/forms/service_ticket?format=jsonschema", admin, NULL);
    props = json_object_get(r.json, "properties");
    assert_null(json_object_get(props, "number"));
    /* null is allowed exactly where a write takes it: every field not always required, lists aside */
    h_resp form = send("GET", "/api/apps/fours/forms/service_ticket", admin, NULL);
    int nullable = 0;
    json_array_foreach(json_object_get(form.json, "fields"), i, f)
    {
        json_t *p = json_object_get(props, json_string_value(json_object_get(f, "id")));
        const char *type = json_string_value(json_object_get(f, "type"));
        if (!p || !strcmp(type, "subform") || !strcmp(type, "multiselect"))
            continue;
        bool must = json_is_true(json_object_get(f, "required"));
        assert_int_equal(takes_null(p), !must);
        nullable += !must;
        /* the length limit in force, the same in both schemas (the type's default when the field sets none) */
        json_t *max = json_object_get(f, "max_length");
        if (max)
            assert_int_equal(json_integer_value(json_object_get(p, "maxLength")), json_integer_value(max));
        if (!strcmp(type, "longtext") && !strcmp(json_string_value(json_object_get(f, "id")), "complaint"))
            assert_int_equal(json_integer_value(max), 100000);
        if (!strcmp(type, "text") || !strcmp(type, "longtext"))
            assert_non_null(max);
    }
    assert_true(nullable >= 4);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(props, "parts"), "maxItems")), 1000);
    h_resp_free(&form);
    json_t *rows = json_object_get(json_object_get(props, "parts"), "items");
    assert_non_null(json_object_get(json_object_get(rows, "properties"), "unit_cost"));
    assert_non_null(json_object_get(props, "_owner"));   /* update scope all */
    h_resp_free(&r);
}

/* Subform rows come in the form's order of fields and as compact JSON, in a
 * list and in one record: for a row of 48 fields (one json_build_object)
 * and of 60 (built as jsonb in parts, past PostgreSQL's 100 arguments). */
static void test_subform_rows_json(void **state)
{
    (void)state;
    const int widths[] = {48, 60};
    for (int w = 0; w < 2; w++) {
        char app[16];
        snprintf(app, sizeof app, "wide%d", widths[w]);
        json_t *cols = json_array(), *row = json_object();
        for (int i = widths[w]; i > 0; i--) {   /* ids in descending order: not jsonb's order */
            char id[16];
            snprintf(id, sizeof id, "f%02d", i);
            json_array_append_new(cols, json_pack("{s:s, s:s}", "id", id, "type", i % 2 ? "integer" : "text"));
            json_object_set_new(row, id, i % 2 ? json_integer(i) : json_sprintf("v %d", i));
        }
        json_t *bundle = json_pack("{s:s, s:{s:s, s:s, s:s, s:[s], s:[]}, s:[{s:s, s:[{s:s, s:s}, {s:s, s:s, s:o}]}]}",
                                   "format", "loom.app/1", "app", "id", app, "label", app, "version", "1", "locales", "en",
                                   "roles", "forms", "id", "doc", "fields", "id", "name", "type", "text", "id", "rows",
                                   "type", "subform", "fields", cols);
        char *text = json_dumps(bundle, JSON_COMPACT);
        h_resp r = send("POST", "/api/design/import?publish=true", admin, text);
        assert_int_equal(r.status, 201);
        h_resp_free(&r);
        free(text);
        char path[128], *body = NULL;
        snprintf(path, sizeof path, "/api/apps/%s", app);
        for (double end = h_now() + 5; h_now() < end; usleep(20000)) {   /* the publish reaches the server's snapshot */
            r = send("GET", path, admin, NULL);
            bool there = r.status == 200;
            h_resp_free(&r);
            if (there)
                break;
        }
        json_t *rec = json_pack("{s:s, s:[O]}", "name", "wide", "rows", row);
        body = json_dumps(rec, JSON_COMPACT);
        snprintf(path, sizeof path, "/api/apps/%s/forms/doc/records", app);
        r = send("POST", path, admin, body);
        assert_int_equal(r.status, 201);
        h_resp_free(&r);
        free(body);
        for (int k = 0; k < 2; k++) {   /* the list, then the record */
            snprintf(path, sizeof path, k ? "/api/apps/%s/forms/doc/records/1" : "/api/apps/%s/forms/doc/records?fields=rows",
                     app);
            r = send("GET", path, admin, NULL);
            assert_int_equal(r.status, 200);
            assert_null(strstr(r.body, "\": "));   /* compact */
            assert_null(strstr(r.body, ", "));
            json_t *got = json_array_get(json_object_get(k ? r.json : json_array_get(json_object_get(r.json, "items"), 0),
                                                         "rows"), 0);
            assert_int_equal(json_object_size(got), (size_t)widths[w] + 1);
            json_object_del(got, "id");
            assert_true(json_equal(got, row));
            if (widths[w] < 49) {   /* in the form's order */
                const char *keys[3], *key;
                json_t *v;
                int n = 0;
                json_object_foreach(got, key, v) if (n < 3) keys[n++] = key;
                assert_string_equal(keys[0], "f48");
                assert_string_equal(keys[1], "f47");
            }
            h_resp_free(&r);
        }
        json_decref(rec);
        json_decref(row);
        json_decref(bundle);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scope_and_hidden_fields),
        cmocka_unit_test(test_search),
        cmocka_unit_test(test_statement_timeout),
        cmocka_unit_test(test_hidden_is_unknown),
        cmocka_unit_test(test_pages_and_query_body),
        cmocka_unit_test(test_batched_pages),
        cmocka_unit_test(test_one_record),
        cmocka_unit_test(test_hostile_parameters),
        cmocka_unit_test(test_form_schemas),
        cmocka_unit_test(test_subform_rows_json),
    };
    return cmocka_run_group_tests_name("e2e_records", tests, setup, teardown);
}
