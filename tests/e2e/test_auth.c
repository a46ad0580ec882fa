/* test_auth.c - authentication and administration against a running server:
 * login, tokens stored hashed, the same 401 for every failure, rate limiting,
 * logout, expiry, the admin user API (validation, uniqueness, deactivation
 * revoking sessions, the last admin), API keys, and `loom user add`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/secret.h"
#include <unistd.h>

#include "harness.h"

static h_server srv;
static char *url;
static char *admin;   /* the admin's token */

static int setup(void **state)
{
    (void)state;
    url = h_fresh_db("loomtest_auth");
    const char *args[] = {"--workers", "3", NULL};
    const char *env[] = {"LOOM_LOGIN_LIMIT_USER=5", NULL};
    if (!h_server_start(&srv, url, args, env))
        return -1;
    admin = h_login(srv.port, "admin", H_ADMIN_PASSWORD);
    return admin ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int st = h_server_stop(&srv);
    free(admin);
    free(url);
    return st == 0 ? 0 : -1;
}

/* Sends body (stolen) as JSON. */
static h_resp send_json(const char *method, const char *path, const char *token, json_t *body)
{
    char *s = json_dumps(body, 0);
    json_decref(body);
    h_resp r = h_req(srv.port, method, path, token, s);
    free(s);
    return r;
}

#define post_json(path, token, body) send_json("POST", path, token, body)
#define patch_json(path, token, body) send_json("PATCH", path, token, body)

/* Creates a user and returns its id. */
static long long create_user(const char *name, const char *password, const char *platform_role)
{
    json_t *b = json_pack("{s:s, s:s, s:s, s:s}", "username", name, "password", password, "display_name", name,
                          "email", "someone@example.com");
    if (platform_role)
        json_object_set_new(b, "platform_roles", json_pack("[s]", platform_role));
    h_resp r = post_json("/api/admin/users", admin, b);
    assert_int_equal(r.status, 201);
    long long id = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);
    return id;
}

static void test_login_and_me(void **state)
{
    (void)state;
    h_resp r = h_req(srv.port, "GET", "/api/me", admin, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "username")), "admin");
    assert_string_equal(json_string_value(json_array_get(json_object_get(r.json, "platform_roles"), 0)), "admin");
    assert_true(json_is_object(json_object_get(r.json, "roles")));
    assert_null(json_object_get(r.json, "password_hash"));
    h_resp_free(&r);

    /* the login answer */
    r = post_json("/api/auth/login", NULL, json_pack("{s:s, s:s}", "username", "ADMIN", "password", H_ADMIN_PASSWORD));
    assert_int_equal(r.status, 200);   /* usernames are case-insensitive */
    const char *token = json_string_value(json_object_get(r.json, "token"));
    assert_non_null(token);
    assert_true(strlen(token) >= 3 + 43);   /* 256 bits in base64url */
    assert_non_null(json_string_value(json_object_get(r.json, "expires_at")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(r.json, "user"), "username")), "admin");

    /* stored only as its SHA-256 */
    char hash[SECRET_HASH_HEX], sql[256];
    secret_sha256_hex(token, strlen(token), hash);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM loom.sessions WHERE token_hash = '%s'", hash);
    char *n = h_sql_value(url, sql);
    assert_string_equal(n, "1");
    free(n);
    char esc[256];
    snprintf(esc, sizeof esc, "SELECT count(*) FROM loom.sessions WHERE token_hash LIKE '%%%s%%'", token + 3);
    n = h_sql_value(url, esc);
    assert_string_equal(n, "0");
    free(n);
    h_resp_free(&r);

    /* argon2id with at least 19 MiB and 2 passes */
    char *ph = h_sql_value(url, "SELECT password_hash FROM loom.users WHERE username = 'admin'");
    assert_non_null(strstr(ph, "$argon2id$v=19$m=19456,t=2,p=1$"));
    free(ph);
}

static void test_unauthenticated_answers_are_identical(void **state)
{
    (void)state;
    create_user("carol", "carol-password", NULL);
    h_resp a = post_json("/api/auth/login", NULL, json_pack("{s:s, s:s}", "username", "carol", "password", "wrong-one"));
    h_resp b = post_json("/api/auth/login", NULL, json_pack("{s:s, s:s}", "username", "nobody-here", "password", "wrong-one"));
    assert_int_equal(a.status, 401);
    assert_int_equal(b.status, 401);
    json_object_del(a.json, "request_id");
    json_object_del(b.json, "request_id");
    assert_true(json_equal(a.json, b.json));
    h_resp_free(&a);
    h_resp_free(&b);

    /* missing, malformed, unknown and revoked tokens: one answer */
    const char *tokens[] = {NULL, "garbage", "lt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                            "lk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"};
    for (int i = 0; i < 4; i++) {
        h_resp r = h_req(srv.port, "GET", "/api/me", tokens[i], NULL);
        assert_int_equal(r.status, 401);
        assert_string_equal(h_code(&r), "unauthenticated");
        char www[64];
        assert_true(h_resp_header(&r, "WWW-Authenticate", www, sizeof www));
        h_resp_free(&r);
    }
}

/* Median of 5 timed failed logins. */
static double median_login_time(const char *user)
{
    double t[5];
    for (int i = 0; i < 5; i++) {
        double t0 = h_now();
        h_resp r = post_json("/api/auth/login", NULL, json_pack("{s:s, s:s}", "username", user, "password", "not-it-at-all"));
        t[i] = h_now() - t0;
        assert_int_equal(r.status, 401);
        h_resp_free(&r);
    }
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            if (t[j] < t[i]) {
                double x = t[i];
                t[i] = t[j];
                t[j] = x;
            }
    return t[2];
}

static void test_unknown_user_costs_a_hash(void **state)
{
    (void)state;
    /* Not a benchmark: without the dummy verification an unknown user would
     * answer ~100x faster than a wrong password; the bound is deliberately
     * loose (3x) so that scheduling noise cannot fail it. */
    create_user("dave", "dave-password", NULL);
    create_user("dave2", "dave-password", NULL);
    double known = median_login_time("dave");
    double unknown = median_login_time("dave-does-not-exist");
    double known2 = median_login_time("dave2");
    double k = known < known2 ? known : known2;
    assert_true(unknown > k / 3 && unknown < k * 3);
}

static void test_rate_limit(void **state)
{
    (void)state;
    create_user("erin", "erin-password", NULL);
    for (int i = 0; i < 5; i++) {
        h_resp r = post_json("/api/auth/login", NULL, json_pack("{s:s, s:s}", "username", "erin", "password", "bad-password"));
        assert_int_equal(r.status, 401);
        h_resp_free(&r);
    }
    /* now even the right password is refused for a while */
    h_resp r = post_json("/api/auth/login", NULL, json_pack("{s:s, s:s}", "username", "Erin", "password", "erin-password"));
    assert_int_equal(r.status, 429);
    assert_string_equal(h_code(&r), "rate_limited");
    char retry[32];
    assert_true(h_resp_header(&r, "Retry-After", retry, sizeof retry));
    assert_true(atoi(retry) > 0);
    h_resp_free(&r);
    /* other users are not affected */
    char *t = h_login(srv.port, "admin", H_ADMIN_PASSWORD);
    assert_non_null(t);
    free(t);
}

static void test_logout_and_expiry(void **state)
{
    (void)state;
    char *t = h_login(srv.port, "admin", H_ADMIN_PASSWORD);
    h_resp r = h_req(srv.port, "POST", "/api/auth/logout", t, NULL);
    assert_int_equal(r.status, 204);
    h_resp_free(&r);
    r = h_req(srv.port, "GET", "/api/me", t, NULL);
    assert_int_equal(r.status, 401);
    h_resp_free(&r);
    free(t);

    t = h_login(srv.port, "admin", H_ADMIN_PASSWORD);
    char hash[SECRET_HASH_HEX], sql[256];
    secret_sha256_hex(t, strlen(t), hash);
    snprintf(sql, sizeof sql, "UPDATE loom.sessions SET expires_at = now() - interval '1 second' WHERE token_hash = '%s'", hash);
    assert_true(h_sql(url, sql));
    r = h_req(srv.port, "GET", "/api/me", t, NULL);
    assert_int_equal(r.status, 401);
    h_resp_free(&r);
    free(t);
}

static void test_create_user_validation(void **state)
{
    (void)state;
    h_resp r = post_json("/api/admin/users", admin,
                         json_pack("{s:s, s:s, s:s, s:[s], s:{s:[s]}, s:i, s:s}", "username", "bad name!", "password", "short",
                                   "email", "not-an-email", "platform_roles", "root", "roles", "Fours", "Sales",
                                   "manager", -3, "colour", "blue"));
    assert_int_equal(r.status, 422);
    assert_string_equal(h_code(&r), "validation_failed");
    json_t *errors = json_object_get(r.json, "errors");
    const char *want[][2] = {{"/colour", "unknown_field"}, {"/username", "pattern"}, {"/password", "too_short"},
                             {"/email", "pattern"}, {"/manager", "type"}, {"/platform_roles/0", "not_an_option"},
                             {"/roles/Fours", "pattern"}, {"/roles/Fours/0", "pattern"}};
    assert_int_equal(json_array_size(errors), sizeof want / sizeof want[0]);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        bool found = false;
        size_t j;
        json_t *e;
        json_array_foreach(errors, j, e)
        {
            if (strcmp(json_string_value(json_object_get(e, "path")), want[i][0]) == 0 &&
                strcmp(json_string_value(json_object_get(e, "code")), want[i][1]) == 0)
                found = true;
        }
        if (!found)
            fail_msg("missing error %s %s", want[i][0], want[i][1]);
    }
    h_resp_free(&r);

    r = post_json("/api/admin/users", admin, json_pack("{}"));
    assert_int_equal(r.status, 422);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 2);   /* username and password required */
    h_resp_free(&r);

    /* a manager that does not exist: 422 and nothing written */
    r = post_json("/api/admin/users", admin, json_pack("{s:s, s:s, s:i}", "username", "frank", "password", "frank-password", "manager", 999999));
    assert_int_equal(r.status, 422);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "path")), "/manager");
    h_resp_free(&r);
    char *n = h_sql_value(url, "SELECT count(*) FROM loom.users WHERE username = 'frank'");
    assert_string_equal(n, "0");
    free(n);
}

static void test_create_user_and_roles(void **state)
{
    (void)state;
    long long boss = create_user("grace", "grace-password", "designer");
    h_resp r = post_json("/api/admin/users", admin,
                         json_pack("{s:s, s:s, s:s, s:I, s:{s:[s, s]}}", "username", "heidi", "password", "heidi-password",
                                   "team", "east", "manager", (json_int_t)boss, "roles", "fours", "sales", "service_advisor"));
    assert_int_equal(r.status, 201);
    char loc[128];
    assert_true(h_resp_header(&r, "Location", loc, sizeof loc));
    assert_int_equal(json_integer_value(json_object_get(r.json, "manager")), boss);
    h_resp_free(&r);

    char *t = h_login(srv.port, "heidi", "heidi-password");
    assert_non_null(t);
    r = h_req(srv.port, "GET", "/api/me", t, NULL);
    assert_int_equal(r.status, 200);
    json_t *roles = json_object_get(json_object_get(r.json, "roles"), "fours");
    assert_int_equal(json_array_size(roles), 2);
    assert_string_equal(json_string_value(json_object_get(r.json, "team")), "east");
    h_resp_free(&r);

    /* not an admin: 403 on the admin API */
    r = h_req(srv.port, "GET", "/api/admin/users", t, NULL);
    assert_int_equal(r.status, 403);
    assert_string_equal(h_code(&r), "forbidden");
    h_resp_free(&r);
    free(t);

    /* the same name again, in any case */
    r = post_json("/api/admin/users", admin, json_pack("{s:s, s:s}", "username", "HEIDI", "password", "whatever-pass"));
    assert_int_equal(r.status, 409);
    assert_string_equal(h_code(&r), "not_unique");
    h_resp_free(&r);
}

static void test_list_users_paginates(void **state)
{
    (void)state;
    create_user("ivan", "ivan-password", NULL);
    create_user("judy", "judy-password", NULL);
    char path[128] = "/api/admin/users?limit=1";
    int seen = 0;
    long long last = 0;
    for (;;) {
        h_resp r = h_req(srv.port, "GET", path, admin, NULL);
        assert_int_equal(r.status, 200);
        json_t *items = json_object_get(r.json, "items");
        assert_true(json_array_size(items) <= 1);
        if (json_array_size(items)) {
            long long id = json_integer_value(json_object_get(json_array_get(items, 0), "id"));
            assert_true(id > last);
            last = id;
            seen++;
        }
        const char *next = json_string_value(json_object_get(r.json, "next_cursor"));
        if (!next) {
            h_resp_free(&r);
            break;
        }
        snprintf(path, sizeof path, "/api/admin/users?limit=1&cursor=%s", next);
        h_resp_free(&r);
    }
    char *n = h_sql_value(url, "SELECT count(*) FROM loom.users");
    assert_int_equal(seen, atoi(n));
    free(n);

    h_resp r = h_req(srv.port, "GET", "/api/admin/users?limit=1001", admin, NULL);
    assert_int_equal(r.status, 400);
    h_resp_free(&r);
}

static void test_deactivate_revokes_sessions(void **state)
{
    (void)state;
    long long id = create_user("mallory", "mallory-password", NULL);
    char *t = h_login(srv.port, "mallory", "mallory-password");
    assert_non_null(t);
    char path[64];
    snprintf(path, sizeof path, "/api/admin/users/%lld", id);
    h_resp r = patch_json(path, admin, json_pack("{s:b}", "active", 0));
    assert_int_equal(r.status, 200);
    assert_false(json_boolean_value(json_object_get(r.json, "active")));
    h_resp_free(&r);
    r = h_req(srv.port, "GET", "/api/me", t, NULL);
    assert_int_equal(r.status, 401);
    h_resp_free(&r);
    free(t);
    assert_null(h_login(srv.port, "mallory", "mallory-password"));

    /* reactivated: old sessions stay revoked, a new login works */
    r = patch_json(path, admin, json_pack("{s:b}", "active", 1));
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    t = h_login(srv.port, "mallory", "mallory-password");
    assert_non_null(t);

    /* a new password revokes sessions too */
    r = patch_json(path, admin, json_pack("{s:s, s:s}", "password", "new-mallory-password", "display_name", "M."));
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "display_name")), "M.");
    h_resp_free(&r);
    r = h_req(srv.port, "GET", "/api/me", t, NULL);
    assert_int_equal(r.status, 401);
    h_resp_free(&r);
    free(t);
    t = h_login(srv.port, "mallory", "new-mallory-password");
    assert_non_null(t);
    free(t);

    r = patch_json("/api/admin/users/999999", admin, json_pack("{s:s}", "team", "x"));
    assert_int_equal(r.status, 404);
    h_resp_free(&r);
    r = patch_json(path, admin, json_pack("{s:I}", "manager", (json_int_t)id));
    assert_int_equal(r.status, 422);
    h_resp_free(&r);
}

static void test_last_admin_stays(void **state)
{
    (void)state;
    char *id = h_sql_value(url, "SELECT id FROM loom.users WHERE username = 'admin'");
    char path[64];
    snprintf(path, sizeof path, "/api/admin/users/%s", id);
    free(id);
    h_resp r = patch_json(path, admin, json_pack("{s:b}", "active", 0));
    assert_int_equal(r.status, 409);
    h_resp_free(&r);
    r = patch_json(path, admin, json_pack("{s:[]}", "platform_roles"));
    assert_int_equal(r.status, 409);
    h_resp_free(&r);
    /* all or nothing: still active, still admin, the session still works */
    r = h_req(srv.port, "GET", "/api/me", admin, NULL);
    assert_int_equal(r.status, 200);
    assert_true(json_boolean_value(json_object_get(r.json, "active")));
    assert_int_equal(json_array_size(json_object_get(r.json, "platform_roles")), 1);
    h_resp_free(&r);
}

static void test_api_keys(void **state)
{
    (void)state;
    long long id = create_user("ken", "ken-password", NULL);
    h_resp r = post_json("/api/admin/api-keys", admin, json_pack("{s:s, s:I}", "name", "erp sync", "user", (json_int_t)id));
    assert_int_equal(r.status, 201);
    const char *key = json_string_value(json_object_get(r.json, "key"));
    assert_non_null(key);
    assert_memory_equal(key, "lk_", 3);
    char *k = strdup(key);
    long long kid = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);

    r = h_req(srv.port, "GET", "/api/me", k, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "username")), "ken");
    h_resp_free(&r);

    /* stored only as its SHA-256 */
    char khash[SECRET_HASH_HEX], sql[256];
    secret_sha256_hex(k, strlen(k), khash);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM loom.api_keys WHERE key_hash = '%s' AND id = %lld", khash, kid);
    char *cnt = h_sql_value(url, sql);
    assert_string_equal(cnt, "1");
    free(cnt);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM loom.api_keys WHERE position('%s' in key_hash) > 0", k + 3);
    cnt = h_sql_value(url, sql);
    assert_string_equal(cnt, "0");
    free(cnt);

    /* the key is never shown again */
    r = h_req(srv.port, "GET", "/api/admin/api-keys", admin, NULL);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, k));
    assert_null(strstr(r.body, k + 3));
    h_resp_free(&r);

    char path[64];
    snprintf(path, sizeof path, "/api/admin/api-keys/%lld", kid);
    r = h_req(srv.port, "DELETE", path, admin, NULL);
    assert_int_equal(r.status, 204);
    h_resp_free(&r);
    r = h_req(srv.port, "GET", "/api/me", k, NULL);
    assert_int_equal(r.status, 401);
    h_resp_free(&r);
    r = h_req(srv.port, "DELETE", path, admin, NULL);
    assert_int_equal(r.status, 404);
    h_resp_free(&r);

    r = post_json("/api/admin/api-keys", admin, json_pack("{s:s, s:i}", "name", "x", "user", 999999));
    assert_int_equal(r.status, 422);
    h_resp_free(&r);
    r = post_json("/api/admin/api-keys", admin, json_pack("{s:s}", "nom", "x"));
    assert_int_equal(r.status, 422);
    assert_int_equal(json_array_size(json_object_get(r.json, "errors")), 2);
    h_resp_free(&r);
    free(k);
}

/* Many requests in flight at once, with different users' tokens, API keys
 * and bad tokens: workers look tokens up in batches, and every answer must
 * still belong to its own request. */
static void test_concurrent_tokens_answer_their_own_request(void **state)
{
    (void)state;
    const char *names[] = {"quinn", "rupert", "sybil"};
    char *tokens[4];
    for (int i = 0; i < 3; i++) {
        create_user(names[i], "long-enough-pw", NULL);
        tokens[i] = h_login(srv.port, names[i], "long-enough-pw");
        assert_non_null(tokens[i]);
    }
    tokens[3] = strdup("lt_NotARealTokenNotARealTokenNotARealToken123");
    enum { CONNS = 24, ROUNDS = 20 };
    h_conn c[CONNS];
    for (int i = 0; i < CONNS; i++)
        assert_true(h_conn_open(&c[i], srv.port));
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < CONNS; i++) {
            char req[256];
            snprintf(req, sizeof req, "GET /api/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n",
                     tokens[(i + round) % 4]);
            assert_true(h_conn_sends(&c[i], req));
        }
        for (int i = 0; i < CONNS; i++) {
            h_resp r;
            assert_true(h_conn_read(&c[i], &r, 10000));
            int t = (i + round) % 4;
            if (t == 3) {
                assert_int_equal(r.status, 401);
            } else {
                assert_int_equal(r.status, 200);
                assert_string_equal(json_string_value(json_object_get(r.json, "username")), names[t]);
            }
            h_resp_free(&r);
        }
    }
    for (int i = 0; i < CONNS; i++)
        h_conn_close(&c[i]);
    for (int i = 0; i < 4; i++)
        free(tokens[i]);
    /* the batched path did run */
    h_resp m = h_req(srv.port, "GET", "/metrics", NULL, NULL);
    const char *line = strstr(m.body, "\nloom_auth_batched_lookups_total ");
    assert_non_null(line);
    assert_true(atoll(line + strlen("\nloom_auth_batched_lookups_total ")) > 0);
    h_resp_free(&m);
}

static void test_cli_user_add(void **state)
{
    (void)state;
    const char *argv[] = {h_loom_bin(), "user", "add", "olivia", "--password-stdin", "--designer",
                          "--role", "fours:sales", "--role", "fours:admin", "--db", url, NULL};
    char out[2048];
    assert_int_equal(h_run(argv, "olivia-password\n", out, sizeof out), 0);
    assert_non_null(strstr(out, "created user olivia"));
    char *t = h_login(srv.port, "olivia", "olivia-password");
    assert_non_null(t);
    h_resp r = h_req(srv.port, "GET", "/api/me", t, NULL);
    assert_int_equal(json_array_size(json_object_get(json_object_get(r.json, "roles"), "fours")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r.json, "platform_roles"), 0)), "designer");
    h_resp_free(&r);
    free(t);

    /* taken name and a short password: exit 1 with "path: code: message" */
    assert_int_equal(h_run(argv, "olivia-password\n", out, sizeof out), 1);
    assert_non_null(strstr(out, "/username: not_unique"));
    const char *argv2[] = {h_loom_bin(), "user", "add", "peggy", "--password-stdin", "--db", url, NULL};
    assert_int_equal(h_run(argv2, "short\n", out, sizeof out), 1);
    assert_non_null(strstr(out, "/password: too_short"));
}

/* Tokens are cached per server; a change made anywhere reaches every server's cache (loom_auth): a
 * logout, a deactivation through another server, a change made by hand in the database. */
static bool me_until(int port, const char *token, int status, const char *name)
{
    for (int i = 0; i < 100; i++) {   /* up to 2 s: a notification is a few milliseconds */
        h_resp r = h_req(port, "GET", "/api/me", token, NULL);
        bool ok = r.status == status &&
                  (!name || (r.json && !strcmp(json_string_value(json_object_get(r.json, "display_name")), name)));
        h_resp_free(&r);
        if (ok)
            return true;
        usleep(20000);
    }
    return false;
}

static void test_token_cache_across_servers(void **state)
{
    (void)state;
    h_server b;
    const char *args[] = {"--workers", "2", NULL};
    assert_true(h_server_start(&b, url, args, NULL));
    create_user("cachey", "cachey-password-1", NULL);
    char *t = h_login(srv.port, "cachey", "cachey-password-1");
    assert_non_null(t);
    h_resp r0;
    /* both servers answer (and keep) the token */
    for (int i = 0; i < 3; i++) {
        h_resp r = h_req(b.port, "GET", "/api/me", t, NULL);
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
    }
    /* a change by hand, no Loom involved: the trigger tells both servers */
    assert_true(h_sql(url, "UPDATE loom.users SET display_name = 'Renamed' WHERE username = 'cachey'"));
    assert_true(me_until(b.port, t, 200, "Renamed"));
    assert_true(me_until(srv.port, t, 200, "Renamed"));
    /* the cache is really used: a change that bypasses the triggers (replica mode) is not seen by B, which
     * has the token cached, for as long as the entry lives */
    assert_true(h_sql(url, "SET session_replication_role = replica; "
                           "UPDATE loom.users SET display_name = 'Unseen' WHERE username = 'cachey'"));
    r0 = h_req(b.port, "GET", "/api/me", t, NULL);
    assert_string_equal(json_string_value(json_object_get(r0.json, "display_name")), "Renamed");
    h_resp_free(&r0);
    assert_true(h_sql(url, "UPDATE loom.users SET display_name = 'Renamed' WHERE username = 'cachey'"));
    /* a logout through A: B refuses the token */
    h_resp r = h_req(srv.port, "POST", "/api/auth/logout", t, NULL);
    assert_int_equal(r.status, 204);
    h_resp_free(&r);
    r = h_req(srv.port, "GET", "/api/me", t, NULL);   /* on A at once */
    assert_int_equal(r.status, 401);
    h_resp_free(&r);
    assert_true(me_until(b.port, t, 401, NULL));
    free(t);
    /* a deactivation through B: A refuses the user's other session */
    t = h_login(srv.port, "cachey", "cachey-password-1");
    assert_non_null(t);
    r = h_req(srv.port, "GET", "/api/me", t, NULL);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    char *n = h_sql_value(url, "SELECT id FROM loom.users WHERE username = 'cachey'");
    char path[64];
    snprintf(path, sizeof path, "/api/admin/users/%s", n);
    free(n);
    char *admin_b = h_login(b.port, "admin", H_ADMIN_PASSWORD);
    r = h_req(b.port, "PATCH", path, admin_b, "{\"active\": false}");
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_true(me_until(srv.port, t, 401, NULL));
    free(admin_b);
    free(t);
    assert_int_equal(h_server_stop(&b), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_login_and_me),
        cmocka_unit_test(test_unauthenticated_answers_are_identical),
        cmocka_unit_test(test_unknown_user_costs_a_hash),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_logout_and_expiry),
        cmocka_unit_test(test_create_user_validation),
        cmocka_unit_test(test_create_user_and_roles),
        cmocka_unit_test(test_list_users_paginates),
        cmocka_unit_test(test_deactivate_revokes_sessions),
        cmocka_unit_test(test_last_admin_stays),
        cmocka_unit_test(test_api_keys),
        cmocka_unit_test(test_concurrent_tokens_answer_their_own_request),
        cmocka_unit_test(test_cli_user_add),
        cmocka_unit_test(test_token_cache_across_servers),
    };
    return cmocka_run_group_tests_name("e2e_auth", tests, setup, teardown);
}
