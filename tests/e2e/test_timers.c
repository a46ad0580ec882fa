/* test_timers.c - SLA timers and timeouts as durable jobs, against real
 * servers and a real PostgreSQL (tests/fixtures/flow: pending has a 2 h SLA
 * that notifies the managers and sets overdue; completed times out into
 * closed after 3 d). Time is moved by making jobs due in the database, as
 * if the hours had passed: a breach runs once, in its visit only; leaving a
 * state cancels its timers; a timeout transitions as the system and cancels
 * a pending approval; notifications are listed and marked read; with two
 * servers, after a lease left by a dead server and after a real kill -9,
 * every timer fires exactly once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#ifndef SOURCE_DIR
#error SOURCE_DIR must name the repository
#endif

static h_server srv;
static char *url, *admin, *advisor, *tech, *mgr, *cust;
static long long tech_id;

static char *make_user(const char *name, const char *role, long long *id)
{
    return h_user(srv.port, admin, name, json_pack("{s:{s:[s]}}", "roles", "svc", role), id);
}

static int setup(void **state)
{
    (void)state;
    url = h_fresh_db("loomtest_timers");
    char out[16384];
    const char *import[] = {h_loom_bin(), "app", "import", SOURCE_DIR "/tests/fixtures/flow/bundle.json",
                            "--publish", "--db", url, NULL};
    if (h_run(import, NULL, out, sizeof out) != 0) {
        fprintf(stderr, "%s\n", out);
        return -1;
    }
    const char *args[] = {"--workers", "2", NULL};
    if (!h_server_start(&srv, url, args, NULL))
        return -1;
    admin = h_login(srv.port, "admin", H_ADMIN_PASSWORD);
    advisor = make_user("advisor", "advisor", NULL);
    mgr = make_user("mgr", "manager", NULL);
    tech = make_user("tech", "technician", &tech_id);
    cust = make_user("cust", "customer", NULL);
    return admin && advisor && mgr && tech && cust ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int st = h_server_stop(&srv);
    free(admin);
    free(advisor);
    free(tech);
    free(mgr);
    free(cust);
    free(url);
    return st == 0 ? 0 : -1;
}

static h_resp req(int port, const char *method, const char *token, const char *body, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static h_resp req(int port, const char *method, const char *token, const char *body, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    return h_req(port, method, path, token, body);
}

static long long sql_int(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static long long sql_int(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    char *v = h_sql_value(url, sql);
    assert_non_null(v);
    long long n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

static long long new_ticket(void)
{
    h_resp r = req(srv.port, "POST", cust, "{\"title\": \"异响\"}", "/api/apps/svc/forms/ticket/records");
    assert_int_equal(r.status, 201);
    long long id = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);
    return id;
}

static void act(long long id, const char *token, const char *t, const char *body, int status)
{
    h_resp r = req(srv.port, "POST", token, body, "/api/apps/svc/forms/ticket/records/%lld/actions/%s", id, t);
    if (r.status != status)
        fprintf(stderr, "%s: %d %s\n", t, r.status, r.body ? r.body : "");
    assert_int_equal(r.status, status);
    h_resp_free(&r);
}

/* As if the hours had passed: the pending timers of kind of record id
 * (0: all) fall due now. */
static void make_due(long long id, const char *kind)
{
    char sql[512];
    snprintf(sql, sizeof sql, "UPDATE loom.jobs SET run_at = now() - interval '1 second' WHERE status = 'pending' "
                              "AND kind = '%s' AND (%lld = 0 OR record = %lld); NOTIFY loom_jobs", kind, id, id);
    assert_true(h_sql(url, sql));
}

/* Waits (up to 15 s) until no timer of kind is due or running for record
 * id (0: any); true when they are all settled. */
static bool settled(long long id, const char *kind)
{
    double end = h_now() + 15;
    while (h_now() < end) {
        if (sql_int("SELECT count(*) FROM loom.jobs WHERE kind = '%s' AND (status = 'running' OR (status = 'pending' "
                    "AND run_at <= now())) AND (%lld = 0 OR record = %lld)", kind, id, id) == 0)
            return true;
        usleep(20000);
    }
    return false;
}

static void test_sla_breach_once(void **state)
{
    (void)state;
    long long id = new_ticket();
    /* creating it entered pending: one SLA timer for visit 1, due in 2 h */
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE record = %lld AND kind = 'sla' AND state = 'pending' "
                             "AND visit = 1 AND status = 'pending' AND run_at BETWEEN now() + interval '119 minutes' "
                             "AND now() + interval '121 minutes'", id), 1);
    make_due(id, "sla");
    assert_true(settled(id, "sla"));
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE record = %lld AND status = 'done'", id), 1);
    assert_int_equal(sql_int("SELECT count(*) FROM app_svc.ticket WHERE id = %lld AND overdue", id), 1);
    /* the breach and the system's set, in the history */
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE record = %lld AND action = 'breach' AND "
                             "from_state = 'pending' AND actor IS NULL", id), 1);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE record = %lld AND action = 'update' AND "
                             "actor IS NULL AND changes::jsonb ? 'overdue'", id), 1);
    /* the managers are notified; the state is unchanged */
    h_resp r = req(srv.port, "GET", mgr, NULL, "/api/notifications?unread=true");
    assert_int_equal(r.status, 200);
    long long nid = 0;
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(r.json, "items"), i, n) if (json_integer_value(json_object_get(n, "record")) == id)
    {
        nid = json_integer_value(json_object_get(n, "id"));
        assert_string_equal(json_string_value(json_object_get(n, "kind")), "sla_breach");
        assert_non_null(strstr(json_string_value(json_object_get(n, "title")), "2h"));
        assert_true(json_is_null(json_object_get(n, "read_at")));
    }
    h_resp_free(&r);
    assert_true(nid > 0);
    r = req(srv.port, "GET", advisor, NULL, "/api/notifications");
    json_array_foreach(json_object_get(r.json, "items"), i, n) assert_true(json_integer_value(json_object_get(n, "record")) != id);
    h_resp_free(&r);
    r = req(srv.port, "POST", advisor, NULL, "/api/notifications/%lld/read", nid);   /* not the advisor's */
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    r = req(srv.port, "POST", mgr, NULL, "/api/notifications/%lld/read", nid);
    assert_int_equal(r.status, 200);
    assert_true(json_is_string(json_object_get(r.json, "read_at")));
    h_resp_free(&r);
    r = req(srv.port, "GET", mgr, NULL, "/api/notifications?unread=true");
    json_array_foreach(json_object_get(r.json, "items"), i, n) assert_true(json_integer_value(json_object_get(n, "id")) != nid);
    h_resp_free(&r);
    /* the server counts what its scheduler ran */
    r = req(srv.port, "GET", NULL, NULL, "/metrics");
    const char *m = r.body ? strstr(r.body, "loom_jobs_total{result=\"done\"} ") : NULL;
    assert_non_null(m);
    assert_true(strtoll(m + strlen("loom_jobs_total{result=\"done\"} "), NULL, 10) >= 1);
    h_resp_free(&r);
    /* one timer per visit of a state: a second one for the same visit cannot exist */
    char sql[512];
    snprintf(sql, sizeof sql, "INSERT INTO loom.jobs (kind, app, form, record, state, visit, run_at) "
                              "VALUES ('sla', 'svc', 'ticket', %lld, 'pending', 1, now())", id);
    assert_false(h_sql(url, sql));
}

static void test_leaving_cancels(void **state)
{
    (void)state;
    long long id = new_ticket();
    char body[128];
    snprintf(body, sizeof body, "{\"values\": {\"technician\": %lld}}", tech_id);
    act(id, advisor, "dispatch", body, 200);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE record = %lld AND status = 'cancelled'", id), 1);
    /* a stale timer of the visit it left, fired anyway: nothing happens */
    assert_true(h_sql(url, "UPDATE loom.jobs SET status = 'pending', run_at = now() - interval '1 second' "
                           "WHERE status = 'cancelled'; NOTIFY loom_jobs"));
    assert_true(settled(id, "sla"));
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE record = %lld AND action = 'breach'", id), 0);
    assert_int_equal(sql_int("SELECT count(*) FROM app_svc.ticket WHERE id = %lld AND overdue IS NULL", id), 1);
    /* deleting a record cancels its timers */
    long long gone = new_ticket();
    h_resp r = req(srv.port, "DELETE", admin, NULL, "/api/apps/svc/forms/ticket/records/%lld", gone);
    assert_int_equal(r.status, 204);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE record = %lld AND status = 'cancelled'", gone), 1);
}

static void test_timeout_transitions_and_cancels_approval(void **state)
{
    (void)state;
    long long id = new_ticket();
    char body[128];
    snprintf(body, sizeof body, "{\"values\": {\"technician\": %lld}}", tech_id);
    act(id, advisor, "dispatch", body, 200);
    act(id, tech, "start", NULL, 200);
    act(id, tech, "complete", "{\"values\": {\"labor_hours\": 1}}", 200);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE record = %lld AND kind = 'timeout' AND "
                             "state = 'completed' AND status = 'pending' AND run_at > now() + interval '71 hours'", id), 1);
    act(id, advisor, "discount", "{\"values\": {\"discount\": 20}}", 202);
    make_due(id, "timeout");
    assert_true(settled(id, "timeout"));
    assert_int_equal(sql_int("SELECT count(*) FROM app_svc.ticket WHERE id = %lld AND _state = 'closed'", id), 1);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.approvals WHERE record = %lld AND status = 'cancelled'", id), 1);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE record = %lld AND action = 'transition' AND "
                             "transition = 'close' AND actor IS NULL", id), 1);
}

/* n tickets whose SLA falls due at once on two servers, one of them also
 * inheriting leases a dead server left: every breach exactly once. */
static void test_two_servers_exactly_once(void **state)
{
    (void)state;
    h_server b;
    const char *args[] = {"--workers", "2", NULL};
    assert_true(h_server_start(&b, url, args, NULL));
    enum { N = 300 };
    long long first = 0;
    for (int i = 0; i < N; i++) {
        long long id = new_ticket();
        if (!first)
            first = id;
    }
    /* a third of them claimed by a server that died holding them */
    assert_true(h_sql(url, "UPDATE loom.jobs SET status = 'running', leased_by = 'dead:1:x', "
                           "leased_until = now() - interval '1 second', attempts = 1 WHERE status = 'pending' AND "
                           "kind = 'sla' AND record % 3 = 0"));
    make_due(0, "sla");
    assert_true(settled(0, "sla"));
    assert_int_equal(h_server_stop(&b), 0);
    assert_int_equal(sql_int("SELECT count(*) FROM (SELECT record FROM loom.history WHERE action = 'breach' AND "
                             "record >= %lld GROUP BY record HAVING count(*) = 1) x", first), N);
    assert_int_equal(sql_int("SELECT count(*) FROM app_svc.ticket WHERE id >= %lld AND overdue", first), N);
    /* the dead server's leases were taken over */
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE leased_by = 'dead:1:x'"), 0);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE record >= %lld AND status = 'done'", first), N);
}

/* kill -9 in the middle of a batch, then a restart: nothing twice, nothing
 * lost. The tickets come from a CSV import (their timers from the bulk path). */
/* n new tickets through a CSV import (their timers from the bulk path); the first id. */
static long long import_tickets(int n)
{
    long long first = sql_int("SELECT coalesce(max(id), 0) + 1 FROM app_svc.ticket");
    buf csv = {0};
    buf_puts(&csv, "title\n");
    for (int i = 0; i < n; i++)
        buf_printf(&csv, "工单 %d\n", i);
    char headers[] = "Content-Type: text/csv\r\n";
    h_resp r = h_req_h(srv.port, "POST", "/api/apps/svc/forms/ticket/import", advisor, csv.data, headers);
    buf_free(&csv);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "inserted")), n);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE record >= %lld AND kind = 'sla' AND status = 'pending' "
                             "AND visit = 1", first), n);
    /* each create entry notes the state it entered, as an API create's does */
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE app = 'svc' AND form = 'ticket' AND record >= %lld "
                             "AND action = 'create' AND from_state IS NULL AND to_state = 'pending'", first), n);
    return first;
}

/* Waits until at least n timers of records from first on are done. */
static void wait_done(long long first, long long n)
{
    double end = h_now() + 10;
    while (h_now() < end && sql_int("SELECT count(*) FROM loom.jobs WHERE status = 'done' AND record >= %lld", first) < n)
        usleep(1000);
}

static void test_crash_exactly_once(void **state)
{
    (void)state;
    enum { N = 1500 };
    long long first = import_tickets(N);
    h_server c;
    const char *args[] = {"--workers", "2", NULL};
    assert_int_equal(h_server_stop(&srv), 0);   /* only c runs the timers */
    assert_true(h_server_start(&c, url, args, NULL));
    make_due(0, "sla");
    wait_done(first, 50);   /* kill it once it has fired some of them */
    kill(c.pid, SIGKILL);
    waitpid(c.pid, NULL, 0);
    long long done = sql_int("SELECT count(*) FROM loom.jobs WHERE status = 'done' AND record >= %lld", first);
    assert_true(done >= 50 && done < N);   /* killed in the middle */
    /* the leases it held run out: as if their minute had passed */
    assert_true(h_sql(url, "UPDATE loom.jobs SET leased_until = now() - interval '1 second' WHERE status = 'running'"));
    assert_true(h_server_start(&srv, url, args, NULL));
    assert_true(settled(0, "sla"));
    assert_int_equal(sql_int("SELECT count(*) FROM (SELECT record FROM loom.history WHERE action = 'breach' AND "
                             "record >= %lld GROUP BY record HAVING count(*) = 1) x", first), N);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE action = 'breach' AND record >= %lld", first), N);
}

/* A job that fails is retried later with backoff, then given up on. */
static void test_retry_then_fail(void **state)
{
    (void)state;
    assert_true(h_sql(url, "INSERT INTO loom.jobs (kind, app, form, record, state, visit, run_at) VALUES "
                           "('sla', 'nope', 'ticket', 1, 'pending', 1, now()); NOTIFY loom_jobs"));
    double end = h_now() + 10;
    while (h_now() < end && sql_int("SELECT attempts FROM loom.jobs WHERE app = 'nope'") < 1)
        usleep(20000);
    usleep(100000);
    /* back to pending, due again in 2 s, with its error */
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE app = 'nope' AND status = 'pending' AND attempts = 1 "
                             "AND run_at > now() AND last_error LIKE '%%not published%%' AND leased_by IS NULL"), 1);
    /* the last attempt fails for good */
    assert_true(h_sql(url, "UPDATE loom.jobs SET attempts = 7, run_at = now() WHERE app = 'nope'; NOTIFY loom_jobs"));
    end = h_now() + 10;
    while (h_now() < end && sql_int("SELECT count(*) FROM loom.jobs WHERE app = 'nope' AND status = 'failed'") == 0)
        usleep(20000);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE app = 'nope' AND status = 'failed' AND attempts = 8 "
                             "AND done_at IS NOT NULL"), 1);
    assert_true(h_sql(url, "DELETE FROM loom.jobs WHERE app = 'nope'"));
}

/* A server that stops (SIGTERM) in the middle of a batch gives back what it
 * claimed and did not run: no lease is left to run out. */
static void test_stop_gives_back(void **state)
{
    (void)state;
    enum { N = 1500 };
    long long first = import_tickets(N);
    h_server c;
    const char *args[] = {"--workers", "2", NULL};
    assert_int_equal(h_server_stop(&srv), 0);
    assert_true(h_server_start(&c, url, args, NULL));
    make_due(0, "sla");
    wait_done(first, 50);
    assert_int_equal(h_server_stop(&c), 0);
    long long done = sql_int("SELECT count(*) FROM loom.jobs WHERE status = 'done' AND record >= %lld", first);
    assert_true(done >= 50 && done < N);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE status = 'running'"), 0);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs WHERE status = 'pending' AND record >= %lld AND "
                             "run_at <= now()", first), N - done);
    assert_true(h_server_start(&srv, url, args, NULL));
    assert_true(settled(0, "sla"));
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE action = 'breach' AND record >= %lld", first), N);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sla_breach_once),
        cmocka_unit_test(test_leaving_cancels),
        cmocka_unit_test(test_timeout_transitions_and_cancels_approval),
        cmocka_unit_test(test_retry_then_fail),
        cmocka_unit_test(test_two_servers_exactly_once),
        cmocka_unit_test(test_crash_exactly_once),
        cmocka_unit_test(test_stop_gives_back),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
