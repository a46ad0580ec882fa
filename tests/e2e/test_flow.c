/* test_flow.c - flows over HTTP against a running server and a real
 * PostgreSQL (tests/fixtures/flow: an app "svc" with a service ticket that
 * moves pending -> dispatched -> in_repair -> completed -> closed, roles
 * advisor, technician, manager, customer): the actions a caller may take,
 * transitions with input, set, guard and requires, allowed by role,
 * assignee (field and manager_of) and owner, editable per state, 409 on a
 * stale state, history, and 50 parallel transitions on one record. */
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

#ifndef SOURCE_DIR
#error SOURCE_DIR must name the repository
#endif

static h_server srv;
static char *url, *admin, *advisor, *tech, *tech2, *mgr, *mgr2, *boss, *cust, *cust2, *intern;
static long long advisor_id, tech_id, mgr_id, mgr2_id, boss_id;

/* role: one role, or two as "a+b" */
static char *make_user(const char *name, const char *role, long long manager, long long *id)
{
    char first[32];
    snprintf(first, sizeof first, "%.*s", (int)strcspn(role, "+"), role);
    json_t *extra = json_pack("{s:{s:[s]}}", "roles", "svc", first);
    if (strchr(role, '+'))
        json_array_append_new(json_object_get(json_object_get(extra, "roles"), "svc"), json_string(strchr(role, '+') + 1));
    if (manager)
        json_object_set_new(extra, "manager", json_integer(manager));
    return h_user(srv.port, admin, name, extra, id);
}

static int setup(void **state)
{
    (void)state;
    url = h_fresh_db("loomtest_flow");
    char out[16384];
    const char *import[] = {h_loom_bin(), "app", "import", SOURCE_DIR "/tests/fixtures/flow/bundle.json",
                            "--publish", "--db", url, NULL};
    if (h_run(import, NULL, out, sizeof out) != 0) {
        fprintf(stderr, "%s\n", out);
        return -1;
    }
    const char *args[] = {"--workers", "4", NULL};
    if (!h_server_start(&srv, url, args, NULL))
        return -1;
    admin = h_login(srv.port, "admin", H_ADMIN_PASSWORD);
    advisor = make_user("advisor", "advisor", 0, &advisor_id);
    mgr = make_user("mgr", "manager", 0, &mgr_id);
    mgr2 = make_user("mgr2", "manager", 0, &mgr2_id);
    boss = make_user("boss", "advisor+manager", 0, &boss_id);
    tech = make_user("tech", "technician", mgr_id, &tech_id);
    tech2 = make_user("tech2", "technician", 0, NULL);
    cust = make_user("cust", "customer", 0, NULL);
    cust2 = make_user("cust2", "customer", 0, NULL);
    intern = make_user("intern", "intern", 0, NULL);
    return admin && advisor && mgr && mgr2 && boss && tech && tech2 && cust && cust2 && intern ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int st = h_server_stop(&srv);
    char **tokens[] = {&admin, &advisor, &tech, &tech2, &mgr, &mgr2, &boss, &cust, &cust2, &intern};
    for (size_t i = 0; i < sizeof tokens / sizeof *tokens; i++)
        free(*tokens[i]);
    free(url);
    return st == 0 ? 0 : -1;
}

static h_resp req(const char *method, const char *token, const char *body, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static h_resp req(const char *method, const char *token, const char *body, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    return h_req(srv.port, method, path, token, body);
}

static long long new_ticket(const char *token)
{
    h_resp r = req("POST", token, "{\"title\": \"异响\"}", "/api/apps/svc/forms/ticket/records");
    assert_int_equal(r.status, 201);
    assert_string_equal(json_string_value(json_object_get(r.json, "_state")), "pending");
    long long id = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);
    return id;
}

/* POST .../actions/{t} with body; the response (caller frees). */
static h_resp act(const char *token, long long id, const char *t, const char *body)
{
    return req("POST", token, body, "/api/apps/svc/forms/ticket/records/%lld/actions/%s", id, t);
}

/* Expects status and, for a problem, its code and (when given) one error "path code". */
static void expect(h_resp r, int status, const char *code, const char *error)
{
    if (r.status != status)
        fprintf(stderr, "got %d %s\n", r.status, r.body ? r.body : "");
    assert_int_equal(r.status, status);
    if (code)
        assert_string_equal(h_code(&r), code);
    if (error) {
        json_t *e = json_array_get(json_object_get(r.json, "errors"), 0);
        char got[256];
        snprintf(got, sizeof got, "%s %s", json_string_value(json_object_get(e, "path")),
                 json_string_value(json_object_get(e, "code")));
        assert_string_equal(got, error);
    }
    h_resp_free(&r);
}

static const char *state_of(h_resp *r)
{
    return json_string_value(json_object_get(r->json, "_state"));
}

/* The ids of the actions token may take on record id, comma-separated. */
static char *actions(const char *token, long long id)
{
    h_resp r = req("GET", token, NULL, "/api/apps/svc/forms/ticket/records/%lld/actions", id);
    assert_int_equal(r.status, 200);
    buf b = {0};
    buf_puts(&b, "");
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(r.json, "actions"), i, a)
        buf_printf(&b, "%s%s", i ? "," : "", json_string_value(json_object_get(a, "id")));
    h_resp_free(&r);
    return b.data;
}

/* Whether token may update (what "update") or delete the record now, as its actions say. */
static bool may(const char *token, long long id, const char *what)
{
    h_resp r = req("GET", token, NULL, "/api/apps/svc/forms/ticket/records/%lld/actions", id);
    assert_int_equal(r.status, 200);
    json_t *v = json_object_get(r.json, what);
    assert_true(json_is_boolean(v));
    bool yes = json_is_true(v);
    h_resp_free(&r);
    return yes;
}

static long long sql_int(const char *fmt, long long id)
{
    char sql[512];
    snprintf(sql, sizeof sql, fmt, id);
    char *v = h_sql_value(url, sql);
    assert_non_null(v);
    long long n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

static void test_ticket_lifecycle(void **state)
{
    (void)state;
    long long id = new_ticket(cust);
    char *a;
    assert_string_equal(a = actions(advisor, id), "dispatch");
    free(a);
    assert_string_equal(a = actions(cust, id), "cancel");   /* the owner */
    free(a);
    assert_string_equal(a = actions(tech, id), "");
    free(a);
    /* the advisor's list: labels by locale, input without what the caller cannot see */
    h_resp r = req("GET", advisor, NULL, "/api/apps/svc/forms/ticket/records/%lld/actions", id);
    assert_true(json_is_null(json_object_get(r.json, "approval")));
    json_t *d = json_array_get(json_object_get(r.json, "actions"), 0);
    assert_string_equal(json_string_value(json_object_get(d, "label")), "Dispatch");
    assert_string_equal(json_string_value(json_object_get(d, "to")), "dispatched");
    assert_int_equal(json_array_size(json_object_get(d, "input")), 1);   /* technician; secret is hidden */
    h_resp_free(&r);
    expect(req("GET", cust2, NULL, "/api/apps/svc/forms/ticket/records/%lld/actions", id), 404, "not_found", NULL);

    /* who may: the technician holds no advisor role; an unknown transition; a record outside the read scope */
    expect(act(tech, id, "dispatch", NULL), 403, "forbidden", NULL);
    expect(act(advisor, id, "fly", NULL), 404, "not_found", NULL);
    expect(act(cust2, id, "cancel", NULL), 404, "not_found", NULL);
    /* requires, input only, hidden input, bad bodies */
    expect(act(advisor, id, "dispatch", "{}"), 422, "validation_failed", "/technician required");
    expect(act(advisor, id, "dispatch", "{\"values\": {\"title\": \"x\"}}"), 422, "validation_failed", "/title readonly");
    expect(act(advisor, id, "dispatch", "{\"values\": {\"secret\": \"x\"}}"), 422, "validation_failed",
           "/secret unknown_field");
    expect(act(advisor, id, "dispatch", "{\"values\": [1]}"), 400, "bad_request", "/values bad_request");
    expect(act(advisor, id, "dispatch", "{\"value\": {}}"), 400, "bad_request", "/value bad_request");
    char body[256];
    snprintf(body, sizeof body, "{\"values\": {\"technician\": 999999}}");
    expect(act(advisor, id, "dispatch", body), 422, "validation_failed", "/technician not_found");
    assert_int_equal(sql_int("SELECT _version FROM app_svc.ticket WHERE id = %lld", id), 1);   /* nothing written */

    snprintf(body, sizeof body, "{\"values\": {\"technician\": %lld}, \"comment\": \"派给老王\"}", tech_id);
    r = act(advisor, id, "dispatch", body);
    assert_int_equal(r.status, 200);
    assert_string_equal(state_of(&r), "dispatched");
    assert_int_equal(json_integer_value(json_object_get(r.json, "_version")), 2);
    assert_int_equal(json_integer_value(json_object_get(r.json, "technician")), tech_id);
    assert_true(json_is_string(json_object_get(r.json, "dispatched_at")));   /* set: now */
    /* the answer is the record as a read shows it (built from the write, not read back) */
    h_resp g = req("GET", advisor, NULL, "/api/apps/svc/forms/ticket/records/%lld", id);
    assert_int_equal(g.status, 200);
    if (!json_equal(g.json, r.json))
        fprintf(stderr, "transition answered %s\nread gives %s\n", r.body, g.body);
    assert_true(json_equal(g.json, r.json));
    assert_string_equal(g.body, r.body);   /* the same text: key order too */
    h_resp_free(&g);
    h_resp_free(&r);
    expect(act(advisor, id, "dispatch", body), 409, "state_changed", NULL);

    /* what a client may offer: the advisor edits (notes, while dispatched), the technician and the customer
     * do not (no update scope), nobody deletes */
    assert_true(may(advisor, id, "update"));
    assert_false(may(tech, id, "update"));
    assert_false(may(cust, id, "update"));
    assert_false(may(advisor, id, "delete"));
    assert_true(may(admin, id, "delete"));   /* a platform admin may */
    /* editable: only notes while dispatched */
    expect(req("PATCH", advisor, "{\"title\": \"改\"}", "/api/apps/svc/forms/ticket/records/%lld", id), 422,
           "validation_failed", "/title readonly");
    r = req("PATCH", advisor, "{\"title\": \"异响\", \"notes\": \"客户在等\"}", "/api/apps/svc/forms/ticket/records/%lld", id);
    assert_int_equal(r.status, 200);   /* an unchanged value is no change */
    g = req("GET", advisor, NULL, "/api/apps/svc/forms/ticket/records/%lld", id);
    assert_string_equal(g.body, r.body);
    h_resp_free(&g);
    h_resp_free(&r);

    /* If-Match as on a PATCH: a stale version is 412 */
    char path[160];
    snprintf(path, sizeof path, "/api/apps/svc/forms/ticket/records/%lld/actions/start", id);
    expect(h_req_h(srv.port, "POST", path, tech, NULL, "If-Match: \"1\"\r\n"), 412, "version_mismatch", NULL);
    /* assignee by field: tech, not tech2 */
    expect(act(tech2, id, "start", NULL), 403, "forbidden", NULL);
    r = act(tech, id, "start", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(state_of(&r), "in_repair");
    h_resp_free(&r);

    /* the guard sees the input; input is writable although the technician only reads labor_hours */
    expect(act(tech, id, "complete", "{\"values\": {\"labor_hours\": 0}}"), 422, "transition_not_allowed", NULL);
    expect(act(tech, id, "complete", "{\"values\": {\"notes\": \"x\"}}"), 422, "validation_failed", "/notes readonly");
    r = act(tech, id, "complete", "{\"values\": {\"labor_hours\": 2.5, \"parts\": [{\"name\": \"滤芯\", \"qty\": 1}]}}");
    assert_int_equal(r.status, 200);
    assert_string_equal(state_of(&r), "completed");
    assert_string_equal(json_string_value(json_object_get(r.json, "labor_hours")), "2.5");
    assert_int_equal(json_array_size(json_object_get(r.json, "parts")), 1);
    h_resp_free(&r);

    /* assignee manager_of technician; a transition to the same state is a new visit */
    int visit = (int)sql_int("SELECT _visit FROM app_svc.ticket WHERE id = %lld", id);
    expect(act(tech, id, "review", NULL), 403, "forbidden", NULL);
    r = act(mgr, id, "review", "{\"values\": {\"notes\": \"复核\"}}");
    assert_int_equal(r.status, 200);
    assert_string_equal(state_of(&r), "completed");
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT _visit FROM app_svc.ticket WHERE id = %lld", id), visit + 1);

    r = act(advisor, id, "close", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(state_of(&r), "closed");
    h_resp_free(&r);
    /* final: "*" does not start here, and nothing is editable */
    assert_false(may(advisor, id, "update"));
    expect(act(cust, id, "cancel", NULL), 409, "state_changed", NULL);
    expect(req("PATCH", advisor, "{\"notes\": \"晚了\"}", "/api/apps/svc/forms/ticket/records/%lld", id), 422,
           "validation_failed", "/notes readonly");
    assert_string_equal(a = actions(advisor, id), "");
    free(a);

    /* history: the create enters the initial state; one entry per transition, with from, to, transition and
     * comment; "" is null */
    r = req("GET", advisor, NULL, "/api/apps/svc/forms/ticket/records/%lld/history", id);
    assert_int_equal(r.status, 200);
    json_t *items = json_object_get(r.json, "items");
    const char *want[][3] = {{"create", "", "pending"}, {"transition", "pending", "dispatched"}, {"update", "", ""},
                             {"transition", "dispatched", "in_repair"}, {"transition", "in_repair", "completed"},
                             {"transition", "completed", "completed"}, {"transition", "completed", "closed"}};
    assert_int_equal(json_array_size(items), 7);
    for (size_t i = 0; i < 7; i++) {
        json_t *h = json_array_get(items, i);
        assert_string_equal(json_string_value(json_object_get(h, "action")), want[i][0]);
        for (int k = 1; k < 3; k++) {
            json_t *v = json_object_get(h, k == 1 ? "from" : "to");
            if (*want[i][k])
                assert_string_equal(json_string_value(v), want[i][k]);
            else
                assert_true(json_is_null(v));
        }
    }
    json_t *dispatch = json_array_get(items, 1);
    assert_string_equal(json_string_value(json_object_get(dispatch, "transition")), "dispatch");
    assert_string_equal(json_string_value(json_object_get(dispatch, "comment")), "派给老王");
    json_t *ch = json_object_get(dispatch, "changes");
    assert_non_null(json_object_get(ch, "technician"));
    assert_non_null(json_object_get(ch, "dispatched_at"));
    assert_null(json_object_get(ch, "secret"));
    h_resp_free(&r);
}

static void test_owner_cancel_from_any_state(void **state)
{
    (void)state;
    long long id = new_ticket(cust);
    expect(act(cust2, id, "cancel", NULL), 404, "not_found", NULL);
    expect(act(advisor, id, "cancel", NULL), 403, "forbidden", NULL);   /* not the owner */
    h_resp r = act(cust, id, "cancel", "{\"comment\": \"不修了\"}");
    assert_int_equal(r.status, 200);
    assert_string_equal(state_of(&r), "closed");
    assert_true(json_is_false(json_object_get(r.json, "overdue")));
    h_resp_free(&r);
}

typedef struct racer {
    long long id;
    char body[128];
    int status;
} racer;

static void *race(void *p)
{
    racer *x = p;
    h_resp r = act(advisor, x->id, "dispatch", x->body);
    x->status = r.status;
    h_resp_free(&r);
    return NULL;
}

static void test_parallel_transitions(void **state)
{
    (void)state;
    long long id = new_ticket(cust);
    enum { N = 50 };
    racer x[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        x[i].id = id;
        snprintf(x[i].body, sizeof x[i].body, "{\"values\": {\"technician\": %lld}}", tech_id);
        pthread_create(&th[i], NULL, race, &x[i]);
    }
    int ok = 0, conflict = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += x[i].status == 200;
        conflict += x[i].status == 409;
    }
    assert_int_equal(ok, 1);
    assert_int_equal(conflict, N - 1);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE record = %lld AND action = 'transition'", id), 1);
    assert_int_equal(sql_int("SELECT _version FROM app_svc.ticket WHERE id = %lld", id), 2);
}

/* A new ticket taken to completed (dispatched to tech, repaired). */
static long long completed_ticket(void)
{
    long long id = new_ticket(cust);
    char body[128];
    snprintf(body, sizeof body, "{\"values\": {\"technician\": %lld}}", tech_id);
    expect(act(advisor, id, "dispatch", body), 200, NULL, NULL);
    expect(act(tech, id, "start", NULL), 200, NULL, NULL);
    expect(act(tech, id, "complete", "{\"values\": {\"labor_hours\": 1}}"), 200, NULL, NULL);
    return id;
}

static h_resp decide(const char *token, long long id, const char *decision)
{
    char body[128];
    snprintf(body, sizeof body, "{\"decision\": \"%s\", \"comment\": \"%s\"}", decision, decision);
    return req("POST", token, body, "/api/apps/svc/forms/ticket/records/%lld/approval", id);
}

static const char *approval_status(h_resp *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "approval"), "status"));
}

/* The approvers of the approval in r, comma-separated ids. */
static char *approvers(h_resp *r)
{
    buf b = {0};
    buf_puts(&b, "");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(json_object_get(r->json, "approval"), "approvers"), i, v)
        buf_printf(&b, "%s%lld", i ? "," : "", (long long)json_integer_value(v));
    return b.data;
}

/* "any" among the managers: the request waits, blocks, is approved by one
 * and completes as its requester; a second request is rejected by all and
 * goes back to reject_to. */
static void test_approval_any(void **state)
{
    (void)state;
    long long id = completed_ticket();
    long long version = sql_int("SELECT _version FROM app_svc.ticket WHERE id = %lld", id);
    h_resp r = act(advisor, id, "discount", "{\"values\": {\"discount\": 100}, \"comment\": \"老客户\"}");
    assert_int_equal(r.status, 202);
    assert_string_equal(approval_status(&r), "pending");
    char *who = approvers(&r), want[96];
    snprintf(want, sizeof want, "%lld,%lld,%lld", mgr_id, mgr2_id, boss_id);
    assert_string_equal(who, want);
    free(who);
    json_t *ap = json_object_get(r.json, "approval");
    assert_string_equal(json_string_value(json_object_get(json_object_get(ap, "values"), "discount")), "100.00");
    assert_int_equal(json_integer_value(json_object_get(ap, "requested_by")), advisor_id);
    h_resp_free(&r);
    /* the record waits as it was */
    assert_int_equal(sql_int("SELECT _version FROM app_svc.ticket WHERE id = %lld", id), version);
    assert_int_equal(sql_int("SELECT count(*) FROM app_svc.ticket WHERE id = %lld AND discount IS NULL", id), 1);
    char *a = actions(advisor, id);
    assert_string_equal(a, "");
    free(a);
    r = req("GET", advisor, NULL, "/api/apps/svc/forms/ticket/records/%lld/actions", id);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "approval"), "status")), "pending");
    h_resp_free(&r);
    expect(act(advisor, id, "close", NULL), 409, "approval_pending", NULL);
    expect(act(advisor, id, "discount", "{\"values\": {\"discount\": 5}}"), 409, "approval_pending", NULL);
    expect(req("PATCH", advisor, "{\"discount\": 5}", "/api/apps/svc/forms/ticket/records/%lld", id), 409,
           "approval_pending", NULL);
    expect(req("PATCH", advisor, "{\"notes\": \"等审批\"}", "/api/apps/svc/forms/ticket/records/%lld", id), 200, NULL, NULL);
    /* so does an import's update (in bulk) */
    char csv[96];
    snprintf(csv, sizeof csv, "id,discount\n%lld,5\n", id);
    r = h_req_h(srv.port, "POST", "/api/apps/svc/forms/ticket/import?mode=upsert&key=id&partial=true", advisor, csv,
                "Content-Type: text/csv\r\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "code")),
                        "approval_pending");
    h_resp_free(&r);
    snprintf(csv, sizeof csv, "id,notes\n%lld,批量\n", id);
    r = h_req_h(srv.port, "POST", "/api/apps/svc/forms/ticket/import?mode=upsert&key=id", advisor, csv,
                "Content-Type: text/csv\r\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "updated")), 1);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_svc.ticket WHERE id = %lld AND notes = '批量' AND discount IS NULL", id), 1);
    /* only approvers decide, once each */
    expect(decide(tech, id, "approve"), 403, "forbidden", NULL);
    expect(req("POST", mgr, "{\"decision\": \"maybe\"}", "/api/apps/svc/forms/ticket/records/%lld/approval", id), 400,
           "bad_request", "/decision bad_request");
    int visit = (int)sql_int("SELECT _visit FROM app_svc.ticket WHERE id = %lld", id);
    r = decide(mgr, id, "approve");
    assert_int_equal(r.status, 200);
    assert_string_equal(approval_status(&r), "approved");
    json_t *rec = json_object_get(r.json, "record");
    assert_string_equal(json_string_value(json_object_get(rec, "discount")), "100.00");
    assert_string_equal(json_string_value(json_object_get(rec, "_state")), "completed");
    assert_int_equal(json_integer_value(json_object_get(rec, "_updated_by")), advisor_id);   /* as the requester */
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT _visit FROM app_svc.ticket WHERE id = %lld", id), visit + 1);
    expect(decide(mgr2, id, "approve"), 409, "conflict", NULL);   /* nothing pending now */
    /* history: requested, approved, then the transition by the requester */
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE record = %lld AND action = 'approval_requested'", id), 1);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE record = %lld AND action = 'approve'", id), 1);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT actor FROM loom.history WHERE record = %%lld AND transition = 'discount' AND "
                              "action = 'transition'");
    assert_int_equal(sql_int(sql, id), advisor_id);

    /* rejected by every approver ("any" can no longer be reached): back to reject_to */
    r = act(boss, id, "discount", "{\"values\": {\"discount\": 300}}");
    assert_int_equal(r.status, 202);
    who = approvers(&r);
    snprintf(want, sizeof want, "%lld,%lld", mgr_id, mgr2_id);   /* not the requester: no_self_approval */
    assert_string_equal(who, want);
    free(who);
    h_resp_free(&r);
    expect(decide(boss, id, "approve"), 403, "forbidden", NULL);   /* no self-approval */
    r = decide(mgr, id, "reject");
    assert_string_equal(approval_status(&r), "pending");
    h_resp_free(&r);
    expect(decide(mgr, id, "approve"), 409, "conflict", NULL);   /* decided already */
    r = decide(mgr2, id, "reject");
    assert_int_equal(r.status, 200);
    assert_string_equal(approval_status(&r), "rejected");
    rec = json_object_get(r.json, "record");
    assert_string_equal(json_string_value(json_object_get(rec, "_state")), "in_repair");
    assert_string_equal(json_string_value(json_object_get(rec, "discount")), "100.00");
    assert_int_equal(json_array_size(json_object_get(json_object_get(r.json, "approval"), "decisions")), 2);
    h_resp_free(&r);
}

/* at_least 2 of the managers; a guard that no longer holds fails the approval */
static void test_approval_quorum_and_failure(void **state)
{
    (void)state;
    long long id = completed_ticket();
    expect(act(boss, id, "refund", NULL), 202, NULL, NULL);
    h_resp r = decide(mgr, id, "approve");
    assert_string_equal(approval_status(&r), "pending");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "record"), "_state")), "completed");
    h_resp_free(&r);
    r = decide(mgr2, id, "approve");
    assert_string_equal(approval_status(&r), "approved");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "record"), "_state")), "closed");
    h_resp_free(&r);

    id = completed_ticket();
    expect(act(boss, id, "refund", NULL), 202, NULL, NULL);
    r = decide(mgr, id, "reject");   /* 2 of 2 needed: one rejection ends it */
    assert_string_equal(approval_status(&r), "rejected");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "record"), "_state")), "completed");
    h_resp_free(&r);

    /* the guard is checked again at approval: it no longer holds */
    expect(act(advisor, id, "discount", "{\"values\": {\"discount\": 50}}"), 202, NULL, NULL);
    expect(req("PATCH", advisor, "{\"notes\": \"frozen\"}", "/api/apps/svc/forms/ticket/records/%lld", id), 200, NULL,
           NULL);
    long long version = sql_int("SELECT _version FROM app_svc.ticket WHERE id = %lld", id);
    r = decide(mgr, id, "approve");
    assert_int_equal(r.status, 200);
    assert_string_equal(approval_status(&r), "failed");
    assert_string_equal(h_code(&r), "");
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT _version FROM app_svc.ticket WHERE id = %lld", id), version);
    assert_int_equal(sql_int("SELECT count(*) FROM app_svc.ticket WHERE id = %lld AND discount IS NULL", id), 1);
    expect(act(advisor, id, "close", NULL), 200, NULL, NULL);   /* nothing pending any more */
}

/* nobody eligible: the technician would approve their own request; approvers by manager */
static void test_approval_nobody_eligible(void **state)
{
    (void)state;
    long long id = new_ticket(cust);
    char body[128];
    snprintf(body, sizeof body, "{\"values\": {\"technician\": %lld}}", tech_id);
    expect(act(advisor, id, "dispatch", body), 200, NULL, NULL);
    expect(act(tech, id, "start", NULL), 200, NULL, NULL);
    expect(act(tech, id, "extend", NULL), 422, "transition_not_allowed", NULL);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.approvals WHERE record = %lld", id), 0);
    /* approvers by manager: the technician's manager decides his overtime, and only he */
    h_resp r = act(tech, id, "overtime", "{\"values\": {\"labor_hours\": 9}}");
    assert_int_equal(r.status, 202);
    char *who = approvers(&r), want[32];
    snprintf(want, sizeof want, "%lld", mgr_id);
    assert_string_equal(who, want);
    free(who);
    h_resp_free(&r);
    expect(decide(mgr2, id, "approve"), 403, "forbidden", NULL);
    r = decide(mgr, id, "approve");
    assert_string_equal(approval_status(&r), "approved");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "record"), "labor_hours")), "9.0");
    h_resp_free(&r);
}

/* The tasks of token (query: extra parameters) for record id, as
 * "kind:state" joined with ","; *total the items in all. */
static char *tasks_for(const char *token, const char *query, long long id, size_t *total)
{
    h_resp r = req("GET", token, NULL, "/api/tasks?%s", query);
    if (r.status != 200)
        fprintf(stderr, "tasks: %d %s\n", r.status, r.body ? r.body : "");
    assert_int_equal(r.status, 200);
    buf b = {0};
    buf_puts(&b, "");
    size_t i;
    json_t *t;
    json_t *items = json_object_get(r.json, "items");
    json_array_foreach(items, i, t) if (json_integer_value(json_object_get(t, "record")) == id)
    {
        buf_printf(&b, "%s%s:%s", b.len ? "," : "", json_string_value(json_object_get(t, "kind")),
                   json_string_value(json_object_get(t, "state")));
        assert_string_equal(json_string_value(json_object_get(t, "app")), "svc");
        assert_string_equal(json_string_value(json_object_get(t, "title")), "异响");
        assert_non_null(json_string_value(json_object_get(t, "since")));
        /* the SLA of pending (2 h) is the due time; other states have none */
        bool pending = !strcmp(json_string_value(json_object_get(t, "state")), "pending");
        assert_true(pending == json_is_string(json_object_get(t, "due_at")));
    }
    if (total)
        *total = json_array_size(items);
    h_resp_free(&r);
    return b.data;
}

static void expect_tasks(const char *token, long long id, const char *want)
{
    char *got = tasks_for(token, "app=svc", id, NULL);
    assert_string_equal(got, want);
    free(got);
}

static void test_tasks(void **state)
{
    (void)state;
    long long id = new_ticket(cust);
    expect_tasks(advisor, id, "assignee:pending");   /* role advisor */
    expect_tasks(boss, id, "assignee:pending");
    expect_tasks(tech, id, "");
    expect_tasks(cust, id, "");
    char *none = tasks_for(advisor, "app=nope", id, NULL);
    assert_string_equal(none, "");
    free(none);
    char body[128];
    snprintf(body, sizeof body, "{\"values\": {\"technician\": %lld}}", tech_id);
    expect(act(advisor, id, "dispatch", body), 200, NULL, NULL);
    expect_tasks(advisor, id, "");
    expect_tasks(tech, id, "assignee:dispatched");   /* the technician field */
    expect_tasks(tech2, id, "");
    expect(act(tech, id, "start", NULL), 200, NULL, NULL);
    expect(act(tech, id, "complete", "{\"values\": {\"labor_hours\": 1}}"), 200, NULL, NULL);
    expect_tasks(tech, id, "");
    expect_tasks(mgr, id, "assignee:completed");   /* manager of the technician */
    expect_tasks(mgr2, id, "");
    expect(act(advisor, id, "discount", "{\"values\": {\"discount\": 10}}"), 202, NULL, NULL);
    expect_tasks(mgr, id, "assignee:completed,approval:completed");
    expect_tasks(mgr2, id, "approval:completed");
    expect_tasks(advisor, id, "");
    h_resp r = decide(mgr2, id, "approve");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    expect_tasks(mgr2, id, "");
    expect_tasks(mgr, id, "assignee:completed");

    /* pages of one: every task once, in order */
    for (int i = 0; i < 3; i++)
        new_ticket(cust);
    size_t all;
    free(tasks_for(advisor, "app=svc&limit=1000", 0, &all));
    assert_true(all >= 3);
    char query[512] = "limit=1";
    size_t seen = 0;
    char prev[64] = "";
    for (;;) {
        r = req("GET", advisor, NULL, "/api/tasks?%s", query);
        assert_int_equal(r.status, 200);
        json_t *items = json_object_get(r.json, "items");
        assert_true(json_array_size(items) <= 1);
        if (json_array_size(items)) {
            const char *since = json_string_value(json_object_get(json_array_get(items, 0), "since"));
            assert_true(strcmp(prev, since) <= 0);
            snprintf(prev, sizeof prev, "%s", since);
            seen++;
        }
        const char *next = json_string_value(json_object_get(r.json, "next_cursor"));
        if (!next) {
            h_resp_free(&r);
            break;
        }
        buf q = {0};
        buf_puts(&q, "limit=1&cursor=");
        for (const char *p = next; *p; p++)
            buf_printf(&q, *p == ' ' ? "%%20" : "%c", *p);
        snprintf(query, sizeof query, "%s", q.data);
        buf_free(&q);
        h_resp_free(&r);
    }
    assert_int_equal(seen, all);
    expect(req("GET", advisor, NULL, "/api/tasks?cursor=junk"), 400, "bad_request", NULL);
}

/* Tasks and actions stay inside the read scope: the intern is the assignee of every open memo by role,
 * but reads only the public ones. */
static void test_tasks_read_scope(void **state)
{
    (void)state;
    long long ids[2];
    const char *titles[] = {"公开", "秘密"};
    for (int i = 0; i < 2; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"title\": \"%s\"}", titles[i]);
        h_resp r = req("POST", advisor, body, "/api/apps/svc/forms/memo/records");
        assert_int_equal(r.status, 201);
        ids[i] = json_integer_value(json_object_get(r.json, "id"));
        h_resp_free(&r);
    }
    h_resp r = req("GET", intern, NULL, "/api/tasks");
    assert_int_equal(r.status, 200);
    json_t *items = json_object_get(r.json, "items");
    assert_int_equal(json_array_size(items), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "record")), ids[0]);
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "title")), "公开");
    h_resp_free(&r);
    expect(req("GET", intern, NULL, "/api/apps/svc/forms/memo/records/%lld/actions", ids[1]), 404, "not_found", NULL);
    expect(req("POST", intern, NULL, "/api/apps/svc/forms/memo/records/%lld/actions/ack", ids[1]), 404, "not_found", NULL);
    expect(req("POST", intern, NULL, "/api/apps/svc/forms/memo/records/%lld/actions/ack", ids[0]), 200, NULL, NULL);
    r = req("GET", intern, NULL, "/api/tasks");
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 0);
    h_resp_free(&r);
}

/* Sorting by _state follows the flow's states, not their ids' text, also page by page. */
static void test_sort_by_state(void **state)
{
    (void)state;
    char *want = h_sql_value(url, "SELECT string_agg(id::text, ',' ORDER BY array_position(ARRAY['pending', 'dispatched', "
                                  "'in_repair', 'completed', 'closed'], _state) DESC, id DESC) FROM app_svc.ticket");
    char *states = h_sql_value(url, "SELECT count(DISTINCT _state) FROM app_svc.ticket");
    assert_true(atoi(states) >= 3);
    free(states);
    buf got = {0};
    char cursor[512] = "";
    for (int page = 0; page < 1000; page++) {
        h_resp r = req("GET", admin, NULL, "/api/apps/svc/forms/ticket/records?sort=-_state&limit=2&fields=id%s%s",
                       *cursor ? "&cursor=" : "", cursor);
        assert_int_equal(r.status, 200);
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(r.json, "items"), i, it)
            buf_printf(&got, "%s%lld", got.len ? "," : "", (long long)json_integer_value(json_object_get(it, "id")));
        const char *next = json_string_value(json_object_get(r.json, "next_cursor"));
        snprintf(cursor, sizeof cursor, "%s", next ? next : "");
        h_resp_free(&r);
        if (!next)
            break;
    }
    assert_string_equal(got.data, want);
    buf_free(&got);
    free(want);
}

/* Publishing a flow without a state that records are in: stopped until the
 * draft says where they go, then they move there (a new visit, history). */
static void test_publish_removed_state(void **state)
{
    (void)state;
    long long id = new_ticket(cust);
    char body[128];
    snprintf(body, sizeof body, "{\"values\": {\"technician\": %lld}}", tech_id);
    expect(act(advisor, id, "dispatch", body), 200, NULL, NULL);
    long long dispatched = sql_int("SELECT count(*) FROM app_svc.ticket WHERE _state = 'dispatched' AND %lld > 0", id);
    h_resp r = req("GET", admin, NULL, "/api/design/apps/svc/flows/ticket_flow");
    assert_int_equal(r.status, 200);
    json_t *flow = json_deep_copy(r.json);
    h_resp_free(&r);
    /* without "dispatched": dispatch goes straight to in_repair, start goes */
    json_t *states = json_object_get(flow, "states"), *ts = json_object_get(flow, "transitions");
    size_t i;
    json_t *x;
    json_array_foreach(states, i, x) if (!strcmp(json_string_value(json_object_get(x, "id")), "dispatched"))
    {
        json_array_remove(states, i);
        break;
    }
    json_array_foreach(ts, i, x) if (!strcmp(json_string_value(json_object_get(x, "id")), "start"))
    {
        json_array_remove(ts, i);
        break;
    }
    json_array_foreach(ts, i, x) if (!strcmp(json_string_value(json_object_get(x, "id")), "dispatch"))
        json_object_set_new(x, "to", json_string("in_repair"));
    char *text = json_dumps(flow, JSON_COMPACT);
    r = req("PUT", admin, text, "/api/design/apps/svc/flows/ticket_flow");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    free(text);
    r = req("POST", admin, "{}", "/api/design/apps/svc/publish");
    assert_int_equal(r.status, 422);
    json_t *e = json_array_get(json_object_get(r.json, "errors"), 0);
    assert_string_equal(json_string_value(json_object_get(e, "code")), "removed_state");
    assert_int_equal(json_integer_value(json_object_get(e, "rows")), dispatched);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_svc.ticket WHERE _state = 'dispatched' AND %lld > 0", id), dispatched);
    /* the draft says where they go */
    json_object_set_new(flow, "moves", json_pack("{s:s}", "dispatched", "in_repair"));
    text = json_dumps(flow, JSON_COMPACT);
    r = req("PUT", admin, text, "/api/design/apps/svc/flows/ticket_flow");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    free(text);
    json_decref(flow);
    int visit = (int)sql_int("SELECT _visit FROM app_svc.ticket WHERE id = %lld", id);
    r = req("POST", admin, "{}", "/api/design/apps/svc/publish");
    if (r.status != 200)
        fprintf(stderr, "publish: %d %s\n", r.status, r.body);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_svc.ticket WHERE _state = 'dispatched' AND %lld > 0", id), 0);
    assert_int_equal(sql_int("SELECT _visit FROM app_svc.ticket WHERE id = %lld AND _state = 'in_repair'", id), visit + 1);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.history WHERE record = %lld AND action = 'move' AND "
                             "from_state = 'dispatched' AND to_state = 'in_repair'", id), 1);
    /* the technician works on it in its new state, on the new version */
    double end = h_now() + 5;
    h_resp a;
    for (;;) {
        a = act(tech, id, "complete", "{\"values\": {\"labor_hours\": 2}}");
        if (a.status == 200 || h_now() > end)
            break;
        h_resp_free(&a);
        usleep(20000);
    }
    assert_int_equal(a.status, 200);
    h_resp_free(&a);
}

/* Attaching a flow to a form with records: they enter its initial state, with its timers. */
static void test_attach_flow(void **state)
{
    (void)state;
    h_resp r = req("PUT", admin, "{\"id\": \"note\", \"fields\": [{\"id\": \"text\", \"type\": \"text\"}]}",
                   "/api/design/apps/svc/forms/note");
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    r = req("GET", admin, NULL, "/api/design/apps/svc/permissions");
    json_t *perms = json_deep_copy(r.json);
    h_resp_free(&r);
    json_object_set_new(perms, "note", json_pack("{s:{s:b, s:s}}", "advisor", "create", 1, "read", "all"));
    char *text = json_dumps(perms, JSON_COMPACT);
    r = req("PUT", admin, text, "/api/design/apps/svc/permissions");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    free(text);
    json_decref(perms);
    r = req("POST", admin, "{}", "/api/design/apps/svc/publish");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    double end = h_now() + 5;
    for (int i = 0; i < 2;) {
        r = req("POST", advisor, "{\"text\": \"x\"}", "/api/apps/svc/forms/note/records");
        i += r.status == 201;
        h_resp_free(&r);
        assert_true(h_now() < end);
    }
    r = req("PUT", admin, "{\"id\": \"note_flow\", \"form\": \"note\", \"initial\": \"draft\", \"states\": ["
                          "{\"id\": \"draft\", \"sla\": {\"within\": \"1d\"}}, {\"id\": \"done\", \"final\": true}], "
                          "\"transitions\": [{\"id\": \"finish\", \"from\": [\"draft\"], \"to\": \"done\", "
                          "\"allowed\": {\"roles\": [\"advisor\"]}}]}",
            "/api/design/apps/svc/flows/note_flow");
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    r = req("POST", admin, "{}", "/api/design/apps/svc/publish");
    if (r.status != 200)
        fprintf(stderr, "publish: %s\n", r.body);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(sql_int("SELECT count(*) FROM app_svc.note WHERE _state = 'draft' AND _visit = 1 AND %lld = 1", 1), 2);
    assert_int_equal(sql_int("SELECT count(*) FROM loom.jobs j JOIN app_svc.note n ON n.id = j.record WHERE j.form = 'note' "
                             "AND j.kind = 'sla' AND j.state = 'draft' AND j.visit = 1 AND j.status = 'pending' AND "
                             "j.run_at > now() + interval '23 hours' AND %lld = 1", 1), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ticket_lifecycle),
        cmocka_unit_test(test_owner_cancel_from_any_state),
        cmocka_unit_test(test_parallel_transitions),
        cmocka_unit_test(test_approval_any),
        cmocka_unit_test(test_approval_quorum_and_failure),
        cmocka_unit_test(test_approval_nobody_eligible),
        cmocka_unit_test(test_tasks),
        cmocka_unit_test(test_tasks_read_scope),
        cmocka_unit_test(test_sort_by_state),
        cmocka_unit_test(test_publish_removed_state),
        cmocka_unit_test(test_attach_flow),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
