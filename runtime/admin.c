/* admin.c - platform administration: users and API keys (platform admins).
 *
 * Bodies are checked completely before anything is written, and every problem
 * is reported at once as a 422 validation_failed with JSON Pointer paths.
 * Deactivating a user or changing its password revokes its sessions; the last
 * active admin cannot be deactivated or lose the admin role. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/secret.h"
#include "form/record.h"
#include "model/validate.h"
#include "handlers.h"

#define LIST_DEFAULT 50
#define LIST_MAX 1000

/* ---- checking bodies ---- */

static void add_error(json_t *errors, const char *path, const char *code, const char *message)
{
    json_array_append_new(errors, json_pack("{s:s, s:s, s:s}", "path", path, "code", code, "message", message));
}

static bool is_username(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || !isalnum((unsigned char)s[0]))
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_.@-", *s))
            return false;
    return true;
}

static bool is_email(const char *s)
{
    const char *at = strchr(s, '@');
    if (!at || at == s || strchr(at + 1, '@') || strpbrk(s, " \t\r\n<>,;\""))
        return false;
    const char *dot = strrchr(at, '.');
    return dot && dot > at + 1 && dot[1] != '\0';
}

static void check_text(json_t *errors, json_t *v, const char *path, size_t max, bool nullable)
{
    if (nullable && json_is_null(v))
        return;
    if (!json_is_string(v)) {
        add_error(errors, path, "type", nullable ? "must be a string or null" : "must be a string");
        return;
    }
    if (record_text_length(json_string_value(v)) > max) {
        char msg[64];
        snprintf(msg, sizeof msg, "must be at most %zu characters", max);
        add_error(errors, path, "too_long", msg);
    }
}

json_t *admin_user_check(json_t *body, bool create)
{
    json_t *errors = json_array();
    static const char *known[] = {"username", "password", "display_name", "email", "team",
                                  "manager", "platform_roles", "roles", "active", NULL};
    const char *key;
    json_t *v;
    char path[320];
    json_object_foreach(body, key, v)
    {
        int k = 0;
        while (known[k] && strcmp(known[k], key) != 0)
            k++;
        if (!known[k]) {
            snprintf(path, sizeof path, "/%.256s", key);
            add_error(errors, path, "unknown_field", "unknown field");
        }
    }
    if (create && !json_object_get(body, "username"))
        add_error(errors, "/username", "required", "username is required");
    if (create && !json_object_get(body, "password"))
        add_error(errors, "/password", "required", "password is required");

    if ((v = json_object_get(body, "username"))) {
        if (!json_is_string(v))
            add_error(errors, "/username", "type", "must be a string");
        else if (!is_username(json_string_value(v)))
            add_error(errors, "/username", "pattern",
                      "1 to 64 letters, digits or _ . @ -, starting with a letter or digit");
    }
    if ((v = json_object_get(body, "password"))) {
        if (!json_is_string(v))
            add_error(errors, "/password", "type", "must be a string");
        else if (record_text_length(json_string_value(v)) < 8)
            add_error(errors, "/password", "too_short", "must be at least 8 characters");
        else if (strlen(json_string_value(v)) > 1024)
            add_error(errors, "/password", "too_long", "must be at most 1024 bytes");
    }
    if ((v = json_object_get(body, "display_name")))
        check_text(errors, v, "/display_name", 200, true);
    if ((v = json_object_get(body, "team")))
        check_text(errors, v, "/team", 200, true);
    if ((v = json_object_get(body, "email"))) {
        check_text(errors, v, "/email", 254, true);
        if (json_is_string(v) && !is_email(json_string_value(v)))
            add_error(errors, "/email", "pattern", "must be an email address");
    }
    if ((v = json_object_get(body, "manager")) && !json_is_null(v) &&
        (!json_is_integer(v) || json_integer_value(v) <= 0))
        add_error(errors, "/manager", "type", "must be a user id or null");
    if ((v = json_object_get(body, "active")) && !json_is_boolean(v))
        add_error(errors, "/active", "type", "must be true or false");
    if ((v = json_object_get(body, "platform_roles"))) {
        if (!json_is_array(v)) {
            add_error(errors, "/platform_roles", "type", "must be an array");
        } else {
            size_t i;
            json_t *r;
            json_array_foreach(v, i, r)
            {
                snprintf(path, sizeof path, "/platform_roles/%zu", i);
                const char *s = json_string_value(r);
                if (!s || (strcmp(s, "admin") != 0 && strcmp(s, "designer") != 0))
                    add_error(errors, path, "not_an_option", "must be admin or designer");
            }
        }
    }
    if ((v = json_object_get(body, "roles"))) {
        if (!json_is_object(v)) {
            add_error(errors, "/roles", "type", "must be an object of app id -> [role id]");
        } else {
            const char *app;
            json_t *list;
            json_object_foreach(v, app, list)
            {
                snprintf(path, sizeof path, "/roles/%.256s", app);
                if (!model_is_id(app))
                    add_error(errors, path, "pattern", "must be an app id");
                if (!json_is_array(list)) {
                    add_error(errors, path, "type", "must be an array of role ids");
                    continue;
                }
                size_t i;
                json_t *r;
                json_array_foreach(list, i, r)
                {
                    snprintf(path, sizeof path, "/roles/%.256s/%zu", app, i);
                    if (!json_is_string(r) || !model_is_id(json_string_value(r)))
                        add_error(errors, path, "pattern", "must be a role id");
                }
            }
        }
    }
    return errors;
}

/* ---- helpers ---- */

/* Text of an optional key for a parameter: NULL when absent or null. */
static const char *param_text(arena *a, json_t *body, const char *key)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v))
        return NULL;
    if (json_is_string(v))
        return json_string_value(v);
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    char *copy = arena_strdup(a, s);
    free(s);
    return copy;
}

static bool reject_if_invalid(ctx *c, json_t *errors)
{
    if (json_array_size(errors) == 0) {
        json_decref(errors);
        return false;
    }
    ctx_problem(c, LOOM_VALIDATION_FAILED,
                arena_printf(c->a, "%zu field%s not valid", json_array_size(errors),
                             json_array_size(errors) == 1 ? " is" : "s are"),
                errors);
    return true;
}

static void user_not_unique(ctx *c)
{
    ctx_problem(c, LOOM_NOT_UNIQUE, "the username is taken",
                json_pack("[{s:s, s:s, s:s}]", "path", "/username", "code", "not_unique", "message",
                          "the username is taken"));
}

static void manager_missing(ctx *c)
{
    ctx_problem(c, LOOM_VALIDATION_FAILED, "1 field is not valid",
                json_pack("[{s:s, s:s, s:s}]", "path", "/manager", "code", "not_found", "message",
                          "no such user"));
}

/* ---- users ---- */

static db_stmt insert_user = {.sql =
    "INSERT INTO loom.users (username, display_name, email, team, manager, password_hash,"
    " platform_roles, app_roles, active)"
    " VALUES ($1, $2, $3, $4, $5::bigint, $6,"
    " ARRAY(SELECT DISTINCT jsonb_array_elements_text(coalesce($7::jsonb, '[]'))),"
    " coalesce($8::jsonb, '{}'), coalesce($9::boolean, true))"
    " RETURNING id"};
static db_stmt select_user = {.sql = "SELECT " AUTH_USER_COLUMNS " FROM loom.users u WHERE u.id = $1"};

json_t *admin_user_insert(db *d, arena *a, json_t *body, loom_err *err)
{
    char hash[SECRET_PWHASH_LEN];
    if (!secret_password_hash(json_string_value(json_object_get(body, "password")), hash)) {
        err->code = LOOM_INTERNAL;
        err->message = "could not hash the password";
        return NULL;
    }
    const char *params[] = {json_string_value(json_object_get(body, "username")),
                            param_text(a, body, "display_name"),
                            param_text(a, body, "email"),
                            param_text(a, body, "team"),
                            param_text(a, body, "manager"),
                            hash,
                            param_text(a, body, "platform_roles"),
                            param_text(a, body, "roles"),
                            param_text(a, body, "active")};
    PGresult *r = db_query(d, a, &insert_user, 9, params, err);
    if (!r) {
        if (err->code == LOOM_CONFLICT) {   /* foreign key: the manager does not exist */
            err->code = LOOM_VALIDATION_FAILED;
            err->path = "/manager";
        }
        return NULL;
    }
    const char *id[] = {PQgetvalue(r, 0, 0)};
    PGresult *u = db_query(d, a, &select_user, 1, id, err);
    return u ? auth_user_json(u, 0) : NULL;
}

void admin_users_create(void *cp)
{
    ctx *c = cp;
    json_t *body = ctx_body_object(c);
    if (!body || reject_if_invalid(c, admin_user_check(body, true)))
        return;
    loom_err e = {0};
    json_t *user = admin_user_insert(c->db, c->a, body, &e);
    if (user) {
        char loc[64];
        snprintf(loc, sizeof loc, "/api/admin/users/%lld", (long long)json_integer_value(json_object_get(user, "id")));
        http_response_header(c->res, "Location", loc);
        ctx_json(c, 201, user);
    } else if (e.code == LOOM_NOT_UNIQUE) {
        user_not_unique(c);
    } else if (e.code == LOOM_VALIDATION_FAILED) {
        manager_missing(c);
    } else {
        ctx_db_fail(c, &e);
    }
}

/* Parses ?limit= and ?cursor=; responds 400 and returns false when invalid. */
static bool list_params(ctx *c, const char **out_limit, const char **out_after)
{
    const char *limit = query_param(c->a, c->req->query, "limit");
    const char *cursor = query_param(c->a, c->req->query, "cursor");
    long n = LIST_DEFAULT;
    if (limit) {
        char *end;
        n = strtol(limit, &end, 10);
        if (*end || n < 1 || n > LIST_MAX) {
            ctx_problem(c, LOOM_BAD_REQUEST, "limit must be a whole number from 1 to 1000", NULL);
            return false;
        }
    }
    if (cursor && *cursor && !path_id(cursor)) {
        ctx_problem(c, LOOM_BAD_REQUEST, "cursor is not valid", NULL);
        return false;
    }
    *out_limit = arena_printf(c->a, "%ld", n + 1);   /* one more tells whether a next page exists */
    *out_after = cursor && *cursor ? cursor : "0";
    return true;
}

/* Answers a list route: runs st ($1 = after this id, $2 = limit + 1) and
 * responds {"items", "next_cursor"} with row() of each row (column 0 = id). */
static void list_page(ctx *c, db_stmt *st, json_t *(*row)(PGresult *, int))
{
    const char *limit_plus_one, *after;
    if (!list_params(c, &limit_plus_one, &after))
        return;
    const char *params[] = {after, limit_plus_one};
    PGresult *r = ctx_query(c, st, 2, params);
    if (!r)
        return;
    int want = atoi(limit_plus_one) - 1;
    int n = PQntuples(r);
    json_t *items = json_array();
    for (int i = 0; i < n && i < want; i++)
        json_array_append_new(items, row(r, i));
    json_t *next = n > want ? json_string(PQgetvalue(r, want - 1, 0)) : json_null();
    ctx_json(c, 200, json_pack("{s:o, s:o}", "items", items, "next_cursor", next));
}

static db_stmt list_users = {.sql =
    "SELECT " AUTH_USER_COLUMNS " FROM loom.users u WHERE u.id > $1::bigint ORDER BY u.id LIMIT $2::int"};

void admin_users_list(void *c)
{
    list_page(c, &list_users, auth_user_json);
}

void admin_users_get(void *cp)
{
    ctx *c = cp;
    long long id = path_id(c->params[0]);
    if (!id) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such user", NULL);
        return;
    }
    const char *params[] = {c->params[0]};
    PGresult *r = ctx_query(c, &select_user, 1, params);
    if (!r)
        return;
    if (PQntuples(r) == 0)
        ctx_problem(c, LOOM_NOT_FOUND, "no such user", NULL);
    else
        ctx_json(c, 200, auth_user_json(r, 0));
}

/* One static statement for every patch: each column changes only when its
 * key is in the patch ($2), so values stay parameters. */
static db_stmt update_user = {.sql =
    "UPDATE loom.users u SET"
    " username = CASE WHEN p ? 'username' THEN p->>'username' ELSE u.username END,"
    " display_name = CASE WHEN p ? 'display_name' THEN p->>'display_name' ELSE u.display_name END,"
    " email = CASE WHEN p ? 'email' THEN p->>'email' ELSE u.email END,"
    " team = CASE WHEN p ? 'team' THEN p->>'team' ELSE u.team END,"
    " manager = CASE WHEN p ? 'manager' THEN (p->>'manager')::bigint ELSE u.manager END,"
    " platform_roles = CASE WHEN p ? 'platform_roles'"
    "   THEN ARRAY(SELECT DISTINCT jsonb_array_elements_text(p->'platform_roles')) ELSE u.platform_roles END,"
    " app_roles = CASE WHEN p ? 'roles' THEN p->'roles' ELSE u.app_roles END,"
    " active = CASE WHEN p ? 'active' THEN (p->>'active')::boolean ELSE u.active END,"
    " password_hash = coalesce($3, u.password_hash),"
    " updated_at = now()"
    " FROM (SELECT $2::jsonb AS p) AS patch"
    " WHERE u.id = $1::bigint"
    " RETURNING u.id, u.active"};
static db_stmt revoke_sessions = {.sql =
    "UPDATE loom.sessions SET revoked_at = now() WHERE user_id = $1::bigint AND revoked_at IS NULL"};
static db_stmt count_admins = {.sql =
    "SELECT count(*) FROM loom.users WHERE active AND 'admin' = ANY(platform_roles)"};

void admin_users_update(void *cp)
{
    ctx *c = cp;
    long long id = path_id(c->params[0]);
    if (!id) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such user", NULL);
        return;
    }
    json_t *body = ctx_body_object(c);
    if (!body)
        return;
    json_t *errors = admin_user_check(body, false);
    json_t *m = json_object_get(body, "manager");
    if (json_is_integer(m) && json_integer_value(m) == id)
        add_error(errors, "/manager", "not_found", "a user cannot be their own manager");
    if (reject_if_invalid(c, errors))
        return;

    const char *password = json_string_value(json_object_get(body, "password"));
    char hash[SECRET_PWHASH_LEN];
    if (password && !secret_password_hash(password, hash)) {
        ctx_problem(c, LOOM_INTERNAL, NULL, NULL);
        return;
    }
    json_t *patch = json_deep_copy(body);
    json_object_del(patch, "password");
    char *ptext = json_dumps(patch, JSON_COMPACT);
    json_decref(patch);
    const char *params[] = {c->params[0], arena_strdup(c->a, ptext), password ? hash : NULL};
    free(ptext);
    loom_err e = {0};
    PGresult *r = db_query(c->db, c->a, &update_user, 3, params, &e);
    if (!r) {
        if (e.code == LOOM_NOT_UNIQUE)
            user_not_unique(c);
        else if (e.code == LOOM_CONFLICT)
            manager_missing(c);
        else
            ctx_db_fail(c, &e);
        return;
    }
    if (PQntuples(r) == 0) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such user", NULL);
        return;
    }
    auth_cache_drop_user(atoll(c->params[0]));   /* at once here; other servers when loom_auth arrives */
    if (PQgetvalue(r, 0, 1)[0] == 'f' || password) {
        const char *p[] = {c->params[0]};
        if (!ctx_query(c, &revoke_sessions, 1, p))
            return;
    }
    PGresult *n = ctx_query(c, &count_admins, 0, NULL);
    if (!n)
        return;
    if (atoi(PQgetvalue(n, 0, 0)) == 0) {
        ctx_problem(c, LOOM_CONFLICT, "the last active admin cannot be deactivated or lose the admin role", NULL);
        return;
    }
    const char *p[] = {c->params[0]};
    PGresult *u = ctx_query(c, &select_user, 1, p);
    if (u)
        ctx_json(c, 200, auth_user_json(u, 0));
}

/* ---- API keys ---- */

#define KEY_COLUMNS                                                                          \
    "k.id, k.name, k.user_id, "                                                              \
    "to_char(k.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "          \
    "to_char(k.revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

static json_t *key_json(PGresult *r, int i)
{
    return json_pack("{s:I, s:s, s:I, s:s, s:o}", "id", (json_int_t)atoll(PQgetvalue(r, i, 0)), "name",
                     PQgetvalue(r, i, 1), "user", (json_int_t)atoll(PQgetvalue(r, i, 2)), "created_at",
                     PQgetvalue(r, i, 3),
                     "revoked_at", PQgetisnull(r, i, 4) ? json_null() : json_string(PQgetvalue(r, i, 4)));
}

static db_stmt insert_key = {.sql =
    "INSERT INTO loom.api_keys (name, user_id, key_hash, created_by)"
    " SELECT $1, u.id, $3, $4::bigint FROM loom.users u WHERE u.id = $2::bigint"
    " RETURNING id, name, user_id,"
    " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), NULL"};

void admin_keys_create(void *cp)
{
    ctx *c = cp;
    json_t *body = ctx_body_object(c);
    if (!body)
        return;
    json_t *errors = json_array();
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "name") != 0 && strcmp(key, "user") != 0)
            add_error(errors, arena_printf(c->a, "/%.256s", key), "unknown_field", "unknown field");
    }
    v = json_object_get(body, "name");
    if (!v)
        add_error(errors, "/name", "required", "name is required");
    else
        check_text(errors, v, "/name", 200, false);
    if (json_is_string(v) && !*json_string_value(v))
        add_error(errors, "/name", "required", "name is required");
    json_t *user = json_object_get(body, "user");
    if (user && !(json_is_integer(user) && json_integer_value(user) > 0))
        add_error(errors, "/user", "type", "must be a user id");
    if (reject_if_invalid(c, errors))
        return;

    char token[SECRET_TOKEN_LEN], hash[SECRET_HASH_HEX];
    secret_token_new("lk_", token);
    secret_sha256_hex(token, strlen(token), hash);
    const char *uid = user ? arena_printf(c->a, "%lld", (long long)json_integer_value(user))
                           : arena_printf(c->a, "%lld", c->user->id);
    const char *me = arena_printf(c->a, "%lld", c->user->id);
    const char *params[] = {json_string_value(v), uid, hash, me};
    PGresult *r = ctx_query(c, &insert_key, 4, params);
    if (!r)
        return;
    if (PQntuples(r) == 0) {
        ctx_problem(c, LOOM_VALIDATION_FAILED, "1 field is not valid",
                    json_pack("[{s:s, s:s, s:s}]", "path", "/user", "code", "not_found", "message", "no such user"));
        return;
    }
    json_t *out = key_json(r, 0);
    json_object_del(out, "revoked_at");
    json_object_set_new(out, "key", json_string(token));
    ctx_json(c, 201, out);
}

static db_stmt list_keys = {.sql =
    "SELECT " KEY_COLUMNS " FROM loom.api_keys k WHERE k.id > $1::bigint ORDER BY k.id LIMIT $2::int"};

void admin_keys_list(void *c)
{
    list_page(c, &list_keys, key_json);
}

static db_stmt revoke_key = {.sql =
    "UPDATE loom.api_keys SET revoked_at = now() WHERE id = $1::bigint AND revoked_at IS NULL RETURNING user_id"};

void admin_keys_delete(void *cp)
{
    ctx *c = cp;
    if (!path_id(c->params[0])) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such API key", NULL);
        return;
    }
    const char *params[] = {c->params[0]};
    PGresult *r = ctx_query(c, &revoke_key, 1, params);
    if (!r)
        return;
    if (PQntuples(r) != 1) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such API key", NULL);
        return;
    }
    auth_cache_drop_user(atoll(PQgetvalue(r, 0, 0)));
    c->res->status = 204;
}
