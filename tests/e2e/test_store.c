/* test_store.c - engine/store against a real PostgreSQL: statements prepared
 * once per connection, pipelined batches (including a failure in the middle
 * of one), transactions that report a rolled-back COMMIT, reconnection, and
 * idempotent migrations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "store/db.h"
#include "store/migrate.h"

static char *url;

static int setup(void **state)
{
    (void)state;
    url = h_fresh_db("loomtest_store");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(url);
    return 0;
}

static db_stmt twice = {.sql = "SELECT $1::int * 2"};

typedef struct fixture {
    db *d;
    arena *a;
} fixture;

/* Each test gets a connected db and an arena. */
static int open_db(void **state)
{
    fixture *f = malloc(sizeof *f);
    f->d = db_new(url);
    f->a = arena_new();
    *state = f;
    return db_ready(f->d) ? 0 : -1;
}

static int close_db(void **state)
{
    fixture *f = *state;
    arena_free(f->a);
    db_free(f->d);
    free(f);
    return 0;
}

static void test_query_many_in_order(void **state)
{
    fixture *f = *state;
    db *d = f->d;
    arena *a = f->a;
    enum { N = 6 };
    const char *vals[N] = {"1", "2", "3", "4", "5", "6"};
    const char *const *params[N];
    arena *arenas[N];
    PGresult *out[N];
    loom_err errs[N];
    for (int i = 0; i < N; i++) {
        params[i] = &vals[i];
        arenas[i] = a;
    }
    db_query_many(d, arenas, &twice, 1, N, params, out, errs);
    for (int i = 0; i < N; i++) {
        assert_non_null(out[i]);
        assert_int_equal(atoi(PQgetvalue(out[i], 0, 0)), 2 * (i + 1));
    }
    /* the connection is usable afterwards, outside pipeline mode */
    loom_err e;
    PGresult *r = db_exec(d, a, "SELECT 42", &e);
    assert_non_null(r);
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
}

static void test_query_many_failure_in_the_middle(void **state)
{
    fixture *f = *state;
    db *d = f->d;
    arena *a = f->a;
    enum { N = 5 };
    const char *vals[N] = {"10", "20", "not a number", "40", "50"};
    const char *const *params[N];
    arena *arenas[N];
    PGresult *out[N];
    loom_err errs[N];
    for (int i = 0; i < N; i++) {
        params[i] = &vals[i];
        arenas[i] = a;
    }
    db_query_many(d, arenas, &twice, 1, N, params, out, errs);
    assert_null(out[2]);
    assert_int_equal(errs[2].code, LOOM_VALIDATION_FAILED);   /* 22P02 invalid text representation */
    /* the ones the failure aborted ran again on their own */
    int want[N] = {20, 40, 0, 80, 100};
    for (int i = 0; i < N; i++)
        if (i != 2)
            assert_int_equal(atoi(PQgetvalue(out[i], 0, 0)), want[i]);
}

/* The arguments of n statements of one parameter each, vals[i] the i-th's. */
static void one_param_each(arena *a, int n, const char *const *vals, arena **arenas, int *nparams,
                           const char *const **params, loom_err *errs)
{
    for (int i = 0; i < n; i++) {
        params[i] = &vals[i];
        arenas[i] = a;
        nparams[i] = 1;
    }
    memset(errs, 0, sizeof *errs * (size_t)n);
}

/* Texts of several requests in one round trip: each its own answer, a failure only its own, and a
 * text prepared by an earlier call reused */
static void test_query_text_many(void **state)
{
    fixture *f = *state;
    db *d = f->d;
    arena *a = f->a;
    enum { N = 4 };
    const char *sqls[N] = {"SELECT $1::int * 3", "SELECT 100 / $1::int", "SELECT $1::text || '!'", "SELECT $1::int * 3"};
    const char *vals[N] = {"7", "0", "hi", "8"};
    const char *const *params[N];
    arena *arenas[N];
    int nparams[N];
    PGresult *out[N];
    loom_err errs[N];
    for (int round = 0; round < 2; round++) {
        one_param_each(a, N, vals, arenas, nparams, params, errs);
        db_query_text_many(d, arenas, N, sqls, nparams, params, false, out, errs);
        assert_string_equal(PQgetvalue(out[0], 0, 0), "21");
        assert_null(out[1]);   /* division by zero: its own error */
        assert_int_not_equal(errs[1].code, LOOM_OK);
        assert_int_not_equal(errs[1].code, LOOM_UNAVAILABLE);
        assert_string_equal(PQgetvalue(out[2], 0, 0), "hi!");
        assert_string_equal(PQgetvalue(out[3], 0, 0), "24");
    }
    /* inside a transaction they run in it, one after the other */
    loom_err e = {0};
    assert_true(db_begin(d, a, &e));
    const char *sqls2[2] = {"SELECT set_config('loom.t', $1, true)", "SELECT current_setting('loom.t', $1::boolean)"};
    const char *vals2[2] = {"in", "true"};
    for (int i = 0; i < 2; i++)
        params[i] = &vals2[i];
    memset(errs, 0, sizeof errs);
    db_query_text_many(d, arenas, 2, sqls2, nparams, params, false, out, errs);
    assert_string_equal(PQgetvalue(out[1], 0, 0), "in");
    db_rollback(d);
    PGresult *r = db_exec(d, a, "SELECT current_setting('loom.t', true)", &e);
    assert_string_equal(PQgetvalue(r, 0, 0), "");   /* rolled back with it */
}

/* Writes in one round trip: each stands alone. A failure rolls back the
 * pipeline's one implicit transaction, the writes before it too, so every
 * write runs again alone: each committed once, the failing one with its own
 * error. */
static void test_writes_many(void **state)
{
    fixture *f = *state;
    db *d = f->d;
    arena *a = f->a;
    loom_err e = {0};
    assert_non_null(db_exec(d, a, "DROP TABLE IF EXISTS piped; CREATE TABLE piped (k int PRIMARY KEY, n serial)", &e));
    enum { N = 4 };
    const char *sql = "INSERT INTO piped (k) VALUES ($1::int) RETURNING k";
    const char *sqls[N] = {sql, sql, sql, sql};
    const char *vals[N] = {"1", "2", "1", "3"};   /* the third clashes with the first */
    const char *const *params[N];
    arena *arenas[N];
    int nparams[N];
    PGresult *out[N];
    loom_err errs[N];
    one_param_each(a, N, vals, arenas, nparams, params, errs);
    db_query_text_many(d, arenas, N, sqls, nparams, params, true, out, errs);
    for (int i = 0; i < N; i++) {
        if (i == 2) {
            assert_null(out[i]);
            assert_int_equal(errs[i].code, LOOM_NOT_UNIQUE);
        } else {
            assert_non_null(out[i]);
            assert_string_equal(PQgetvalue(out[i], 0, 0), vals[i]);
        }
    }
    PGresult *r = db_exec(d, a, "SELECT string_agg(k::text, ',' ORDER BY k) FROM piped", &e);
    assert_string_equal(PQgetvalue(r, 0, 0), "1,2,3");
    /* without a failure, one round trip commits them all */
    const char *more[N] = {"4", "5", "6", "7"};
    for (int i = 0; i < N; i++)
        params[i] = &more[i];
    db_query_text_many(d, arenas, N, sqls, nparams, params, true, out, errs);
    r = db_exec(d, a, "SELECT count(*), max(n) - min(n) FROM piped WHERE k >= 4", &e);
    assert_string_equal(PQgetvalue(r, 0, 0), "4");
    assert_string_equal(PQgetvalue(r, 0, 1), "3");   /* no statement ran twice */
    assert_non_null(db_exec(d, a, "DROP TABLE piped", &e));
}

static void test_commit_of_failed_transaction(void **state)
{
    fixture *f = *state;
    db *d = f->d;
    arena *a = f->a;
    loom_err e = {0};
    assert_true(db_begin(d, a, &e));
    assert_null(db_exec(d, a, "SELECT 1/0", &e));
    /* COMMIT of an aborted transaction answers ROLLBACK: that is a failure */
    assert_false(db_commit(d, a, &e));
    assert_false(db_in_tx(d));
    assert_non_null(db_exec(d, a, "SELECT 1", &e));
}

/* Run-time statements stay prepared (pg_prepared_statements shows them),
 * the least recently used is evicted past DB_TEXT_STMTS, and a column type
 * changed under a cached plan is prepared again instead of failing. */
static void test_text_statements(void **state)
{
    fixture *f = *state;
    db *d = f->d;
    arena *a = f->a;
    loom_err e = {0};
    assert_non_null(db_exec(d, a, "DROP TABLE IF EXISTS text_stmt_t; CREATE TABLE text_stmt_t (x integer);"
                                  "INSERT INTO text_stmt_t VALUES (41)", &e));
    const char *sql = "SELECT x + $1::int FROM text_stmt_t";
    const char *one[] = {"1"};
    /* a text PostgreSQL refuses to prepare is its error, not an unreachable database */
    assert_null(db_query_text(d, a, "SELECT 1", 1, one, &e));
    assert_int_equal(e.code, LOOM_INTERNAL);
    assert_non_null(db_exec(d, a, "SELECT 1", &e));
    for (int i = 0; i < 3; i++) {
        PGresult *r = db_query_text(d, a, sql, 1, one, &e);
        assert_non_null(r);
        assert_string_equal(PQgetvalue(r, 0, 0), "42");
    }
    PGresult *n = db_exec(d, a, "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%text_stmt_t%'", &e);
    assert_string_equal(PQgetvalue(n, 0, 0), "1");   /* prepared once */
    for (int i = 0; i < DB_TEXT_STMTS + 10; i++) {
        char *other = arena_printf(a, "SELECT %d + $1::int", i);
        PGresult *r = db_query_text(d, a, other, 1, one, &e);
        assert_non_null(r);
        assert_int_equal(atoi(PQgetvalue(r, 0, 0)), i + 1);
    }
    n = db_exec(d, a, "SELECT count(*) FROM pg_prepared_statements", &e);
    assert_int_equal(atoi(PQgetvalue(n, 0, 0)), DB_TEXT_STMTS);
    PGresult *r = db_query_text(d, a, sql, 1, one, &e);   /* evicted: prepared again */
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    assert_non_null(db_exec(d, a, "ALTER TABLE text_stmt_t ALTER COLUMN x TYPE numeric(10,2)", &e));
    r = db_query_text(d, a, "SELECT x FROM text_stmt_t", 0, NULL, &e);
    assert_string_equal(PQgetvalue(r, 0, 0), "41.00");
    assert_non_null(db_exec(d, a, "ALTER TABLE text_stmt_t ALTER COLUMN x TYPE text", &e));
    r = db_query_text(d, a, "SELECT x FROM text_stmt_t", 0, NULL, &e);
    assert_non_null(r);
    assert_string_equal(PQgetvalue(r, 0, 0), "41.00");
    /* a bad statement is an error, not a cache entry */
    assert_null(db_query_text(d, a, "SELECT nope FROM text_stmt_t", 0, NULL, &e));
    assert_non_null(db_exec(d, a, "DROP TABLE text_stmt_t", &e));
}

static void test_reconnects_after_backend_killed(void **state)
{
    fixture *f = *state;
    db *d = f->d;
    arena *a = f->a;
    loom_err e = {0};
    PGresult *r = db_query(d, a, &twice, 1, (const char *[]){"21"}, &e);
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", PQbackendPID(db_conn(d)));
    assert_true(h_sql(url, sql));
    assert_null(db_query(d, a, &twice, 1, (const char *[]){"21"}, &e));
    assert_int_equal(e.code, LOOM_UNAVAILABLE);
    assert_false(db_up(d));
    /* the next use reconnects, and statements are prepared again */
    double end = h_now() + 5;
    while (!db_ready(d) && h_now() < end)
        ;
    r = db_query(d, a, &twice, 1, (const char *[]){"21"}, &e);
    assert_non_null(r);
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
}

/* Session settings hold from the first connect on, and again after a reconnect */
static void test_session_settings(void **state)
{
    (void)state;
    db *d = db_new(url);
    arena *a = arena_new();
    loom_err e = {0};
    db_set_session(d, "SET synchronous_commit = off");
    assert_true(db_ready(d));
    PGresult *r = db_exec(d, a, "SHOW synchronous_commit", &e);
    assert_non_null(r);
    assert_string_equal(PQgetvalue(r, 0, 0), "off");
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", PQbackendPID(db_conn(d)));
    assert_true(h_sql(url, sql));
    assert_null(db_exec(d, a, "SELECT 1", &e));
    double end = h_now() + 5;
    while (!db_ready(d) && h_now() < end)
        ;
    r = db_exec(d, a, "SHOW synchronous_commit", &e);
    assert_non_null(r);
    assert_string_equal(PQgetvalue(r, 0, 0), "off");
    arena_free(a);
    db_free(d);
}

/* The connection lost under a pipeline of texts: every statement fails as unavailable, none half
 * answered; the next call reconnects and prepares the texts again */
static void test_text_many_after_backend_killed(void **state)
{
    fixture *f = *state;
    db *d = f->d;
    arena *a = f->a;
    enum { N = 3 };
    const char *sqls[N] = {"SELECT $1::int + 1", "SELECT $1::int + 2", "SELECT $1::int + 3"};
    const char *vals[N] = {"10", "20", "30"};
    const char *const *params[N] = {&vals[0], &vals[1], &vals[2]};
    arena *arenas[N] = {a, a, a};
    int nparams[N] = {1, 1, 1};
    PGresult *out[N];
    loom_err errs[N];
    memset(errs, 0, sizeof errs);
    db_query_text_many(d, arenas, N, sqls, nparams, params, false, out, errs);   /* prepared on this connection */
    assert_string_equal(PQgetvalue(out[2], 0, 0), "33");
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", PQbackendPID(db_conn(d)));
    assert_true(h_sql(url, sql));
    memset(errs, 0, sizeof errs);
    db_query_text_many(d, arenas, N, sqls, nparams, params, false, out, errs);
    for (int i = 0; i < N; i++) {
        assert_null(out[i]);
        assert_int_equal(errs[i].code, LOOM_UNAVAILABLE);
    }
    assert_false(db_up(d));
    double end = h_now() + 5;
    while (!db_ready(d) && h_now() < end)
        ;
    memset(errs, 0, sizeof errs);
    db_query_text_many(d, arenas, N, sqls, nparams, params, false, out, errs);
    for (int i = 0; i < N; i++)
        assert_int_equal(atoi(PQgetvalue(out[i], 0, 0)), 11 * (i + 1));
}

static void test_migrations_idempotent(void **state)
{
    (void)state;
    char err[512];
    PGconn *c = db_connect_once(url, err, sizeof err);
    assert_non_null(c);
    int first = store_migrate(c, err, sizeof err);
    assert_int_equal(first, store_schema_version());
    assert_int_equal(store_migrate(c, err, sizeof err), 0);
    PQfinish(c);
    char *n = h_sql_value(url, "SELECT count(*) FROM loom.schema_migrations");
    assert_int_equal(atoi(n), store_schema_version());
    free(n);
}

/* Migration 5 on a table published before it: the foreign keys of the
 * system user columns go, the key of a user field stays. */
static void test_migration_drops_system_user_keys(void **state)
{
    (void)state;
    assert_true(h_sql(url, "CREATE SCHEMA app_mig5;"
                           "CREATE TABLE app_mig5.t (id bigint PRIMARY KEY,"
                           " _owner bigint REFERENCES loom.users(id) ON DELETE SET NULL,"
                           " _created_by bigint REFERENCES loom.users(id) ON DELETE SET NULL,"
                           " _updated_by bigint REFERENCES loom.users(id) ON DELETE SET NULL,"
                           " agent bigint REFERENCES loom.users(id) ON DELETE SET NULL)"));
    assert_true(h_sql(url, store_migration_sql(5)));
    char *n = h_sql_value(url, "SELECT string_agg(a.attname, ',') FROM pg_constraint k JOIN pg_attribute a"
                               " ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]"
                               " WHERE k.conrelid = 'app_mig5.t'::regclass AND k.contype = 'f'");
    assert_string_equal(n, "agent");
    free(n);
    n = h_sql_value(url, "SELECT count(*) FROM pg_constraint WHERE connamespace = 'loom'::regnamespace AND contype = 'f'"
                         " AND confrelid = 'loom.users'::regclass");
    assert_true(atoi(n) >= 4);   /* loom's own tables keep theirs */
    free(n);
    /* migration 6 gives a flow table of before it the visit columns */
    assert_true(h_sql(url, "CREATE TABLE app_mig5.f (id bigint PRIMARY KEY, _state text NOT NULL);"
                           "INSERT INTO app_mig5.f VALUES (1, 'open')"));
    const char *m6 = store_migration_sql(6);
    const char *end = strstr(m6, "END $$;");
    assert_non_null(end);
    char *visit = strndup(m6, (size_t)(end - m6) + strlen("END $$;"));   /* its first statement */
    assert_true(h_sql(url, visit));
    free(visit);
    n = h_sql_value(url, "SELECT _visit || ' ' || (_state_at IS NOT NULL) FROM app_mig5.f");
    assert_string_equal(n, "1 true");
    free(n);
    assert_true(h_sql(url, "DROP SCHEMA app_mig5 CASCADE"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_query_many_in_order, open_db, close_db),
        cmocka_unit_test_setup_teardown(test_query_text_many, open_db, close_db),
        cmocka_unit_test_setup_teardown(test_writes_many, open_db, close_db),
        cmocka_unit_test_setup_teardown(test_query_many_failure_in_the_middle, open_db, close_db),
        cmocka_unit_test_setup_teardown(test_commit_of_failed_transaction, open_db, close_db),
        cmocka_unit_test_setup_teardown(test_text_statements, open_db, close_db),
        cmocka_unit_test_setup_teardown(test_reconnects_after_backend_killed, open_db, close_db),
        cmocka_unit_test(test_session_settings),
        cmocka_unit_test_setup_teardown(test_text_many_after_backend_killed, open_db, close_db),
        cmocka_unit_test(test_migrations_idempotent),
        cmocka_unit_test(test_migration_drops_system_user_keys),
    };
    return cmocka_run_group_tests_name("integration_store", tests, setup, teardown);
}
