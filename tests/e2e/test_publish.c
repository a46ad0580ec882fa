/* test_publish.c - `loom app import --publish` of a new app against a real
 * PostgreSQL: the 4S template's schema (tables, child tables, types, foreign
 * keys, unique constraints), metadata and a JSON-equal stored bundle; a repeat
 * is a no-op; an invalid bundle changes nothing; a failure in the middle of
 * the DDL leaves schema and metadata unchanged; long and colliding names. */
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

#include "harness.h"
#include "model/bundle.h"

#ifndef SOURCE_DIR
#error SOURCE_DIR must name the repository
#endif

static int import(const char *url, const char *path, char *out, size_t n)
{
    const char *argv[] = {h_loom_bin(), "app", "import", path, "--publish", "--db", url, NULL};
    return h_run(argv, NULL, out, n);
}

static int count(const char *url, const char *sql)
{
    char *v = h_sql_value(url, sql);
    int n = v ? atoi(v) : -1;
    free(v);
    return n;
}

static void test_4s_template(void **state)
{
    (void)state;
    char *url = h_fresh_db("loomtest_publish");
    char out[65536];
    assert_int_equal(import(url, SOURCE_DIR "/apps/4s-template", out, sizeof out), 0);
    assert_non_null(strstr(out, "published version 1"));

    /* 15 form tables and 4 child tables */
    assert_int_equal(count(url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'app_fours'"), 19);
    assert_int_equal(count(url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'app_fours' "
                                "AND table_name IN ('quotation__lines', 'sales_order__lines', 'service_ticket__parts', "
                                "'service_ticket__labor')"),
                     4);
    /* typed columns */
    const char *types[][3] = {{"vehicle", "mileage", "bigint"},      {"vehicle", "insurance_expiry", "date"},
                              {"customer", "tags", "ARRAY"},         {"complaint", "attachments", "jsonb"},
                              {"product", "price", "numeric"},       {"follow_up", "followed_at", "timestamp with time zone"},
                              {"vehicle", "_created_at", "timestamp with time zone"}, {"lead", "in_pool", "boolean"}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char sql[512];
        snprintf(sql, sizeof sql,
                 "SELECT data_type FROM information_schema.columns WHERE table_schema = 'app_fours' "
                 "AND table_name = '%s' AND column_name = '%s'", types[i][0], types[i][1]);
        char *t = h_sql_value(url, sql);
        if (!t || strcmp(t, types[i][2]) != 0)
            fail_msg("%s.%s is %s, want %s", types[i][0], types[i][1], t ? t : "missing", types[i][2]);
        free(t);
    }
    assert_int_equal(count(url, "SELECT numeric_precision * 100 + numeric_scale FROM information_schema.columns "
                                "WHERE table_schema = 'app_fours' AND table_name = 'service_ticket' AND column_name = 'labor_hours'"),
                     601);
    /* real foreign keys, with on_delete honoured */
    assert_int_equal(count(url, "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                                "WHERE n.nspname = 'app_fours' AND c.contype = 'f' AND c.conname = 'vehicle_customer_fkey' "
                                "AND c.confdeltype = 'r'"),
                     1);
    assert_int_equal(count(url, "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                                "WHERE n.nspname = 'app_fours' AND c.contype = 'f' AND c.conname = 'contact_customer_fkey' "
                                "AND c.confdeltype = 'c'"),
                     1);
    /* unique constraints: field, group, autonumber */
    assert_int_equal(count(url, "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                                "WHERE n.nspname = 'app_fours' AND c.contype = 'u' AND c.conname IN "
                                "('vehicle_vin_key', 'vehicle_plate_no_key', 'service_ticket_number_key', 'product_sku_key')"),
                     4);
    /* the database enforces them */
    assert_true(h_sql(url, "INSERT INTO app_fours.customer (name) VALUES ('a')"));
    assert_false(h_sql(url, "INSERT INTO app_fours.vehicle (vin, customer) VALUES ('X', 999999)"));

    /* metadata and the stored bundle, JSON-equal to the one given */
    assert_int_equal(count(url, "SELECT published_version FROM loom.apps WHERE id = 'fours'"), 1);
    char *stored = h_sql_value(url, "SELECT bundle FROM loom.app_versions WHERE app = 'fours' AND version = 1");
    char err[256];
    json_t *given = bundle_load(SOURCE_DIR "/apps/4s-template", err, sizeof err);
    json_t *back = json_loads(stored, 0, NULL);
    assert_non_null(given);
    assert_true(json_equal(given, back));
    json_decref(given);
    json_decref(back);
    free(stored);
    assert_int_equal(count(url, "SELECT jsonb_array_length(steps) FROM loom.app_versions WHERE app = 'fours'"), 110);
    /* the forms some role reads or changes by owner ("own": customer, follow_up, quotation) are indexed by it */
    assert_int_equal(count(url, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'app_fours' AND "
                                "indexdef LIKE '%(_owner, id)'"),
                     3);
    /* the five flows' queues ("my tasks") are indexed by state and visit start */
    assert_int_equal(count(url, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'app_fours' AND "
                                "indexdef LIKE '%(_state, _state_at)'"),
                     5);

    /* the same again: nothing to do, no new version */
    assert_int_equal(import(url, SOURCE_DIR "/apps/4s-template", out, sizeof out), 0);
    assert_non_null(strstr(out, "nothing to do"));
    assert_int_equal(count(url, "SELECT count(*) FROM loom.app_versions"), 1);
    /* as published by an engine that made no owner indexes yet: the same definition imported again adds them */
    assert_true(h_sql(url, "DROP INDEX app_fours.customer__owner_id_idx, app_fours.follow_up__owner_id_idx, "
                           "app_fours.quotation__owner_id_idx; UPDATE loom.app_versions SET catalog = jsonb_set(catalog, "
                           "'{objects}', (SELECT jsonb_object_agg(k, v) FROM jsonb_each(catalog->'objects') AS e(k, v) "
                           "WHERE k NOT LIKE '%|_owner,id'))"));
    assert_int_equal(import(url, SOURCE_DIR "/apps/4s-template", out, sizeof out), 0);
    if (!strstr(out, "[3/3] create_index quotation") || !strstr(out, "published version 2\n"))
        fail_msg("import said: %s", out);
    assert_int_equal(count(url, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'app_fours' AND "
                                "indexdef LIKE '%(_owner, id)'"),
                     3);
    assert_int_equal(import(url, SOURCE_DIR "/apps/4s-template", out, sizeof out), 0);
    assert_non_null(strstr(out, "nothing to do"));
    free(url);
}

/* A change that alters no table (a permission) is still a new version, and the import says so; only the
 * same definition again is "nothing to do". */
static void test_change_without_steps(void **state)
{
    (void)state;
    char *url = h_fresh_db("loomtest_publish_perm");
    char path[] = "/tmp/loomtest_perm_XXXXXX", out[16384];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    const char *roles[] = {"\"clerk\": {\"read\": \"all\"}", "\"clerk\": {\"read\": \"all\", \"create\": true}",
                           "\"clerk\": {\"read\": \"all\", \"create\": true}"};
    const char *want[] = {"published version 1\n", "published version 2 (no table changes)", "version 2 is already published"};
    for (int k = 0; k < 3; k++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "{\"format\": \"loom.app/1\", \"app\": {\"id\": \"perm\", \"label\": \"P\", \"roles\": [{\"id\": \"clerk\"}]},"
                   " \"forms\": [{\"id\": \"note\", \"fields\": [{\"id\": \"text\", \"type\": \"text\"}]}],"
                   " \"permissions\": {\"note\": {%s}}}", roles[k]);
        fclose(f);
        assert_int_equal(import(url, path, out, sizeof out), 0);
        if (!strstr(out, want[k]))
            fail_msg("import %d said: %s", k, out);
    }
    assert_int_equal(count(url, "SELECT count(*) FROM loom.app_versions WHERE app = 'perm'"), 2);
    unlink(path);
    free(url);
}

static void test_invalid_changes_nothing(void **state)
{
    (void)state;
    char *url = h_fresh_db("loomtest_publish_bad");
    char out[16384];
    assert_int_equal(import(url, SOURCE_DIR "/tests/fixtures/model/flows/bundle.json", out, sizeof out), 1);
    assert_non_null(strstr(out, "/flows/0/states/2: unreachable_state"));
    assert_non_null(strstr(out, "nothing was imported"));
    assert_int_equal(count(url, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'apps'"), 0);
    free(url);
}

typedef struct locker {
    const char *url;
    volatile int phase;   /* 1 locked, 2 release */
} locker;

static void *hold_users_lock(void *arg)
{
    locker *l = arg;
    PGconn *c = PQconnectdb(l->url);
    PQclear(PQexec(c, "BEGIN; LOCK TABLE loom.users IN ACCESS EXCLUSIVE MODE"));
    l->phase = 1;
    while (l->phase != 2)
        usleep(10000);
    PQclear(PQexec(c, "ROLLBACK"));
    PQfinish(c);
    return NULL;
}

static void test_failure_midway_changes_nothing(void **state)
{
    (void)state;
    char *url = h_fresh_db("loomtest_publish_fail");
    char out[65536];
    const char *list[] = {h_loom_bin(), "app", "list", "--db", url, NULL};
    assert_int_equal(h_run(list, NULL, out, sizeof out), 0);   /* migrates */
    /* CREATE SCHEMA succeeds; the first table references loom.users, which
     * another session holds: the lock timeout fails the publish there */
    locker l = {.url = url};
    pthread_t t;
    pthread_create(&t, NULL, hold_users_lock, &l);
    while (l.phase != 1)
        usleep(10000);
    setenv("LOOM_LOCK_TIMEOUT_MS", "300", 1);
    int rc = import(url, SOURCE_DIR "/apps/4s-template", out, sizeof out);
    unsetenv("LOOM_LOCK_TIMEOUT_MS");
    l.phase = 2;
    pthread_join(t, NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "[1/110] create_schema"));
    assert_non_null(strstr(out, "[2/110] create_table"));
    assert_non_null(strstr(out, "nothing was changed"));
    assert_int_equal(count(url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'app_fours'"), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM loom.apps"), 0);
    assert_int_equal(count(url, "SELECT count(*) FROM loom.app_versions"), 0);
    /* and it goes through once the lock is gone */
    assert_int_equal(import(url, SOURCE_DIR "/apps/4s-template", out, sizeof out), 0);
    free(url);
}

static void test_long_and_colliding_names(void **state)
{
    (void)state;
    char *url = h_fresh_db("loomtest_publish_names");
    const char *longform = "a_form_with_a_rather_long_identifier_of_48_chars";   /* 48 */
    const char *longsub = "and_a_subform_with_an_equally_long_name_48_chars";   /* 48 */
    assert_int_equal(strlen(longform), 48);
    assert_int_equal(strlen(longsub), 48);
    char path[] = "/tmp/loom-names.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "{\"format\": \"loom.app/1\", \"app\": {\"id\": \"names\", \"label\": \"N\"}, \"forms\": ["
            "{\"id\": \"%s\", \"fields\": [{\"id\": \"x\", \"type\": \"text\", \"unique\": true},"
            " {\"id\": \"%s\", \"type\": \"subform\", \"fields\": [{\"id\": \"y\", \"type\": \"text\", \"unique\": true}]}]},"
            "{\"id\": \"a_b\", \"fields\": [{\"id\": \"c\", \"type\": \"text\", \"unique\": true}]},"
            "{\"id\": \"a\", \"fields\": [{\"id\": \"b_c\", \"type\": \"text\", \"unique\": true}]}]}",
            longform, longsub);
    fclose(f);
    char out[16384];
    assert_int_equal(import(url, path, out, sizeof out), 0);
    unlink(path);
    /* the child table name was over 63 bytes: cut, with a hash, and in the catalog */
    char *child = h_sql_value(url, "SELECT catalog #>> '{forms," "a_form_with_a_rather_long_identifier_of_48_chars"
                                   ",subforms,and_a_subform_with_an_equally_long_name_48_chars,table}' FROM loom.app_versions");
    assert_non_null(child);
    assert_int_equal(strlen(child), 63);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'app_names' AND table_name = '%s'", child);
    assert_int_equal(count(url, sql), 1);
    free(child);
    /* "a_b"+"c" and "a"+"b_c" both got their unique constraint */
    assert_int_equal(count(url, "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                                "WHERE n.nspname = 'app_names' AND c.contype = 'u'"),
                     4);
    free(url);
}

static int export_to(const char *url, const char *app, const char *out)
{
    const char *argv[] = {h_loom_bin(), "app", "export", app, "-o", out, "--db", url, NULL};
    char buf[4096];
    return h_run(argv, NULL, buf, sizeof buf);
}

static json_t *load(const char *path)
{
    char err[512];
    json_t *b = bundle_load(path, err, sizeof err);
    if (!b)
        fail_msg("%s", err);
    return b;
}

static void test_round_trip_4s(void **state)
{
    (void)state;
    char *url = h_fresh_db("loomtest_roundtrip");
    char out[65536], dir[] = "/tmp/loom-export.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char edir[128], efile[128], edir2[128];
    snprintf(edir, sizeof edir, "%s/dir", dir);
    snprintf(efile, sizeof efile, "%s/fours.json", dir);
    snprintf(edir2, sizeof edir2, "%s/dir2", dir);
    assert_int_equal(import(url, SOURCE_DIR "/apps/4s-template", out, sizeof out), 0);
    assert_int_equal(export_to(url, "fours", edir), 0);
    assert_int_equal(export_to(url, "fours", efile), 0);
    json_t *orig = load(SOURCE_DIR "/apps/4s-template");
    json_t *as_dir = load(edir), *as_file = load(efile);
    assert_true(json_equal(orig, as_dir));
    assert_true(json_equal(orig, as_file));
    /* the export imports into a fresh database and exports the same again */
    char *url2 = h_fresh_db("loomtest_roundtrip2");
    assert_int_equal(import(url2, edir, out, sizeof out), 0);
    assert_int_equal(export_to(url2, "fours", edir2), 0);
    json_t *again = load(edir2);
    assert_true(json_equal(as_dir, again));
    char *t1 = h_sql_value(url, "SELECT bundle FROM loom.app_versions");
    char *t2 = h_sql_value(url2, "SELECT bundle FROM loom.app_versions");
    assert_string_equal(t1, t2);   /* byte for byte, key order included */
    free(t1);
    free(t2);
    json_decref(orig);
    json_decref(as_dir);
    json_decref(as_file);
    json_decref(again);
    /* an app with no published version */
    assert_int_equal(export_to(url, "nope", edir2), 1);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(url);
    free(url2);
}

static void test_round_trip_scripts_data_order(void **state)
{
    (void)state;
    char *url = h_fresh_db("loomtest_roundtrip3");
    char dir[] = "/tmp/loom-rt.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[256], out[16384];
    const char *subs[] = {"forms", "rules", "data"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/src/%s", dir, subs[i]);
        char cmd[300];
        snprintf(cmd, sizeof cmd, "mkdir -p '%s'", p);
        assert_int_equal(system(cmd), 0);
    }
    struct { const char *name, *text; } files[] = {
        {"app.json", "{\"format\": \"loom.app/1\", \"app\": {\"id\": \"rt\", \"label\": {\"en\": \"RT\", \"zh-CN\": \"往返\"}}, \"x_note\": [1, 2]}"},
        {"forms/zeta.json", "{\"id\": \"zeta\", \"fields\": [{\"id\": \"name\", \"type\": \"text\"}]}"},
        {"forms/alpha.json", "{\"id\": \"alpha\", \"fields\": [{\"id\": \"z\", \"type\": \"ref\", \"form\": \"zeta\"}]}"},
        {"rules/greet.json", "{\"id\": \"greet\", \"form\": \"zeta\", \"on\": \"create\", \"script_file\": \"greet.lua\"}"},
        {"rules/greet.lua", "-- 你好\nrecord.name = record.name or 'x'\n"},
        {"data/zeta.csv", "name\nAlice\n\"Bob, Jr\"\n"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/src/%s", dir, files[i].name);
        FILE *f = fopen(p, "w");
        fputs(files[i].text, f);
        fclose(f);
    }
    snprintf(p, sizeof p, "%s/src", dir);
    assert_int_equal(import(url, p, out, sizeof out), 0);
    char edir[256];
    snprintf(edir, sizeof edir, "%s/out", dir);
    assert_int_equal(export_to(url, "rt", edir), 0);
    json_t *a = load(p), *b = load(edir);
    assert_true(json_equal(a, b));
    /* the script went back to its own file, and the CSV to a .csv */
    snprintf(p, sizeof p, "%s/out/rules/greet.lua", dir);
    assert_int_equal(access(p, F_OK), 0);
    snprintf(p, sizeof p, "%s/out/data/zeta.csv", dir);
    assert_int_equal(access(p, F_OK), 0);
    json_decref(a);
    json_decref(b);

    /* a single-file bundle whose forms are not in id order keeps its order */
    snprintf(p, sizeof p, "%s/unsorted.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"format\": \"loom.app/1\", \"app\": {\"id\": \"uns\", \"label\": \"U\"}, \"forms\": ["
          "{\"id\": \"zeta\", \"fields\": []}, {\"id\": \"alpha\", \"fields\": []}]}", f);
    fclose(f);
    assert_int_equal(import(url, p, out, sizeof out), 0);
    snprintf(edir, sizeof edir, "%s/out2", dir);
    assert_int_equal(export_to(url, "uns", edir), 0);
    json_t *c = load(p), *d = load(edir);
    assert_true(json_equal(c, d));
    json_decref(c);
    json_decref(d);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_4s_template),
        cmocka_unit_test(test_change_without_steps),
        cmocka_unit_test(test_invalid_changes_nothing),
        cmocka_unit_test(test_failure_midway_changes_nothing),
        cmocka_unit_test(test_long_and_colliding_names),
        cmocka_unit_test(test_round_trip_4s),
        cmocka_unit_test(test_round_trip_scripts_data_order),
    };
    return cmocka_run_group_tests_name("e2e_publish", tests, NULL, NULL);
}
