/* test_embedded.c - the embedded PostgreSQL and the database's comings and
 * goings: `loom serve` without --db (initdb, start, clean stop on SIGTERM,
 * one owner per data directory), a stale postmaster.pid, `loom db`, an outage
 * with recovery and no restart, migrations applied once by servers starting
 * together, and the fallback when the PostgreSQL account cannot reach the
 * data directory. These tests make clusters of their own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static char dir[64];        /* a temporary directory for these tests */
static char data_dir[128];  /* its data/ */

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/loom-emb.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    chmod(dir, 0755);
    snprintf(data_dir, sizeof data_dir, "%s/data", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    const char *stop[] = {h_loom_bin(), "db", "stop", "--data-dir", data_dir, NULL};
    h_run(stop, NULL, NULL, 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static bool file_exists(const char *a, const char *b)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", a, b);
    return access(p, F_OK) == 0;
}

/* Runs `loom db CMD --data-dir data_dir`, returning the exit status. */
static int loom_db(const char *cmd, char *out, size_t n)
{
    const char *argv[] = {h_loom_bin(), "db", cmd, "--data-dir", data_dir, NULL};
    return h_run(argv, NULL, out, n);
}

static void test_serve_embedded_lifecycle(void **state)
{
    (void)state;
    h_server s;
    const char *args[] = {"--data-dir", data_dir, "--workers", "2", NULL};
    assert_true(h_server_start(&s, NULL, args, NULL));
    char cluster[256];
    snprintf(cluster, sizeof cluster, "%s/pg", data_dir);
    assert_true(file_exists(cluster, "PG_VERSION"));
    assert_true(file_exists(cluster, "postmaster.pid"));
    if (geteuid() == 0) {
        struct stat st;
        assert_int_equal(stat(cluster, &st), 0);
        assert_int_not_equal(st.st_uid, 0);   /* PostgreSQL runs unprivileged */
    }
    h_resp r = h_req(s.port, "GET", "/readyz", NULL, NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    char *t = h_login(s.port, "admin", H_ADMIN_PASSWORD);
    assert_non_null(t);
    free(t);

    /* a second server on the same data directory refuses */
    char listen[64], out[4096];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", h_free_port());
    const char *second[] = {h_loom_bin(), "serve", "--data-dir", data_dir, "--listen", listen, NULL};
    assert_int_equal(h_run(second, NULL, out, sizeof out), 1);
    assert_non_null(strstr(out, "another loom serve owns the embedded database"));

    /* SIGTERM: the server stops PostgreSQL cleanly */
    assert_int_equal(h_server_stop(&s), 0);
    assert_false(file_exists(cluster, "postmaster.pid"));
    assert_int_equal(loom_db("status", out, sizeof out), 3);
    assert_non_null(strstr(out, "stopped"));
}

static void test_stale_postmaster_pid(void **state)
{
    (void)state;
    char pidfile[256], out[4096];
    snprintf(pidfile, sizeof pidfile, "%s/pg/postmaster.pid", data_dir);
    /* as after a crash in a container: the pid now belongs to another process */
    FILE *f = fopen(pidfile, "w");
    assert_non_null(f);
    fprintf(f, "%d\n%s/pg\n1700000000\n5432\n/tmp\n\n  5432001    163845\nready   \n", (int)getpid(), data_dir);
    fclose(f);
    assert_int_equal(loom_db("start", out, sizeof out), 0);
    assert_non_null(strstr(out, "started"));
    assert_int_equal(loom_db("status", out, sizeof out), 0);
    assert_non_null(strstr(out, "running"));
    assert_int_equal(loom_db("start", out, sizeof out), 0);
    assert_non_null(strstr(out, "already running"));
    assert_int_equal(loom_db("stop", out, sizeof out), 0);
    assert_non_null(strstr(out, "stopped"));
    assert_int_equal(loom_db("status", out, sizeof out), 3);
}

static void test_restart_after_kill_9(void **state)
{
    (void)state;
    char out[4096], pidfile[256];
    assert_int_equal(loom_db("start", out, sizeof out), 0);
    snprintf(pidfile, sizeof pidfile, "%s/pg/postmaster.pid", data_dir);
    FILE *f = fopen(pidfile, "r");
    assert_non_null(f);
    int pid = 0;
    assert_int_equal(fscanf(f, "%d", &pid), 1);
    fclose(f);
    assert_int_equal(kill(pid, SIGKILL), 0);
    /* the postmaster is gone; its lock file stays behind */
    double end = h_now() + 10;
    while (kill(pid, 0) == 0 && h_now() < end)
        usleep(20000);
    assert_true(file_exists(data_dir, "pg/postmaster.pid"));
    /* its backends notice and exit on their own; start recovers the cluster */
    end = h_now() + 20;
    int rc;
    while ((rc = loom_db("start", out, sizeof out)) != 0 && h_now() < end)
        usleep(200000);
    assert_int_equal(rc, 0);
    assert_int_equal(loom_db("status", out, sizeof out), 0);
    assert_int_equal(loom_db("stop", out, sizeof out), 0);
}

static void test_outage_and_recovery(void **state)
{
    (void)state;
    char out[4096];
    assert_int_equal(loom_db("start", out, sizeof out), 0);
    char *u = strstr(out, "url: ");
    assert_non_null(u);
    char db_url[1024];
    snprintf(db_url, sizeof db_url, "%s", u + 5);
    db_url[strcspn(db_url, "\n")] = '\0';

    h_server s;
    const char *args[] = {"--workers", "2", NULL};
    assert_true(h_server_start(&s, db_url, args, NULL));
    char *t = h_login(s.port, "admin", H_ADMIN_PASSWORD);
    assert_non_null(t);

    assert_int_equal(loom_db("stop", out, sizeof out), 0);
    h_resp r = h_req(s.port, "GET", "/api/me", t, NULL);
    assert_int_equal(r.status, 503);
    assert_string_equal(h_code(&r), "unavailable");
    h_resp_free(&r);
    r = h_req(s.port, "GET", "/readyz", NULL, NULL);
    assert_int_equal(r.status, 503);
    h_resp_free(&r);
    r = h_req(s.port, "GET", "/healthz", NULL, NULL);
    assert_int_equal(r.status, 200);   /* the process itself is fine */
    h_resp_free(&r);

    assert_int_equal(loom_db("start", out, sizeof out), 0);
    /* every worker reconnects by itself: several requests in a row succeed */
    double end = h_now() + 15;
    int ok = 0;
    while (ok < 6 && h_now() < end) {
        r = h_req(s.port, "GET", "/api/me", t, NULL);
        ok = r.status == 200 ? ok + 1 : 0;
        h_resp_free(&r);
        if (!ok)
            usleep(100000);
    }
    assert_int_equal(ok, 6);
    r = h_req(s.port, "GET", "/readyz", NULL, NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);

    /* its loom_meta listener came back too: a publish made elsewhere (the
     * command line) is served without a restart */
    const char *imp[] = {h_loom_bin(), "app", "import", SOURCE_DIR "/tests/fixtures/model/valid_spec_examples/bundle.json",
                         "--publish", "--db", db_url, NULL};
    assert_int_equal(h_run(imp, NULL, out, sizeof out), 0);
    end = h_now() + 10;
    int status = 0;
    while (status != 200 && h_now() < end) {
        r = h_req(s.port, "GET", "/api/apps/fours", t, NULL);
        status = r.status;
        h_resp_free(&r);
        if (status != 200)
            usleep(100000);
    }
    assert_int_equal(status, 200);
    free(t);
    assert_int_equal(h_server_stop(&s), 0);
    assert_int_equal(loom_db("stop", out, sizeof out), 0);
}

static void test_migrations_once_with_two_servers(void **state)
{
    (void)state;
    char *url = h_fresh_db("loomtest_migrate");
    h_server a, b;
    /* started together on an empty database */
    const char *args[] = {"--workers", "1", NULL};
    pid_t child = fork();
    if (child == 0) {
        h_server c;
        _exit(h_server_start(&c, url, args, NULL) && h_server_stop(&c) == 0 ? 0 : 1);
    }
    assert_true(h_server_start(&a, url, args, NULL));
    int st;
    waitpid(child, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *n = h_sql_value(url, "SELECT count(*) = max(version) FROM loom.schema_migrations");
    assert_string_equal(n, "t");
    free(n);
    n = h_sql_value(url, "SELECT count(*) FROM loom.users");
    assert_string_equal(n, "1");   /* one first admin */
    free(n);
    assert_int_equal(h_server_stop(&a), 0);

    /* a restart applies nothing */
    assert_true(h_server_start(&b, url, args, NULL));
    FILE *f = fopen(b.log, "r");
    char line[2048];
    bool seen = false;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "platform schema ready") && strstr(line, "\"applied\":0"))
            seen = true;
    if (f)
        fclose(f);
    assert_true(seen);
    assert_int_equal(h_server_stop(&b), 0);
    free(url);
}

static void test_untraversable_parent(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char hidden[128], data[160], out[4096];
    snprintf(hidden, sizeof hidden, "%s/private", dir);
    assert_int_equal(mkdir(hidden, 0700), 0);   /* root only: postgres cannot enter */
    snprintf(data, sizeof data, "%s/data", hidden);
    const char *start[] = {h_loom_bin(), "db", "start", "--data-dir", data, NULL};
    assert_int_equal(h_run(start, NULL, out, sizeof out), 0);
    assert_non_null(strstr(out, "cannot traverse"));
    assert_non_null(strstr(out, hidden));
    const char *status[] = {h_loom_bin(), "db", "status", "--data-dir", data, NULL};
    assert_int_equal(h_run(status, NULL, out, sizeof out), 0);
    char *cl = strstr(out, "cluster: /var/lib/loom/clusters/");
    assert_non_null(cl);
    char cluster[512];
    snprintf(cluster, sizeof cluster, "%s", cl + 9);
    cluster[strcspn(cluster, "\n")] = '\0';
    const char *stop[] = {h_loom_bin(), "db", "stop", "--data-dir", data, NULL};
    assert_int_equal(h_run(stop, NULL, out, sizeof out), 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf \"$(dirname '%s')\"", cluster);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serve_embedded_lifecycle),
        cmocka_unit_test(test_stale_postmaster_pid),
        cmocka_unit_test(test_restart_after_kill_9),
        cmocka_unit_test(test_outage_and_recovery),
        cmocka_unit_test(test_migrations_once_with_two_servers),
        cmocka_unit_test(test_untraversable_parent),
    };
    return cmocka_run_group_tests_name("e2e_embedded", tests, setup, teardown);
}
