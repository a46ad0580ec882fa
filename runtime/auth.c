/* auth.c - login, logout, the current user, bearer-token checks and the first
 * admin.
 *
 * Session tokens ("lt_...") and API keys ("lk_...") carry 256 random bits and
 * are stored only as their SHA-256. Every way a login can fail (unknown user,
 * wrong password, deactivated user) runs one argon2id verification and gets
 * the same 401, so neither the answer nor its time tells them apart. Failed
 * logins are counted per username and per client address over a window; past
 * the limit the answer is 429 with Retry-After, before any hashing. */
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "core/secret.h"
#include "handlers.h"

/* ---- failed-login counters ---- */

#define RL_SLOTS 4096
#define RL_WINDOW 900 /* seconds */

typedef struct rl_slot {
    char key[96];
    time_t start;
    int failures;
} rl_slot;

static rl_slot rl_table[RL_SLOTS];
static pthread_mutex_t rl_lock = PTHREAD_MUTEX_INITIALIZER;

static int env_int(const char *name, int dflt)
{
    const char *s = getenv(name);
    return s && atoi(s) > 0 ? atoi(s) : dflt;
}

static unsigned rl_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The slot for key (creating it, evicting an expired or the oldest entry of
 * its probe run). Call with rl_lock held. */
static rl_slot *rl_slot_for(const char *key, time_t now, bool create)
{
    unsigned h = rl_hash(key);
    rl_slot *victim = NULL;
    bool victim_free = false;
    for (unsigned i = 0; i < 8; i++) {
        rl_slot *s = &rl_table[(h + i) % RL_SLOTS];
        if (strcmp(s->key, key) == 0) {
            if (now - s->start >= RL_WINDOW) {
                s->start = now;
                s->failures = 0;
            }
            return s;
        }
        bool is_free = s->key[0] == '\0' || now - s->start >= RL_WINDOW;
        if (!victim || (is_free && !victim_free) || (!victim_free && !is_free && s->start < victim->start)) {
            victim = s;
            victim_free = is_free;
        }
    }
    if (!create)
        return NULL;
    snprintf(victim->key, sizeof victim->key, "%s", key);
    victim->start = now;
    victim->failures = 0;
    return victim;
}

/* Seconds until key may try again, or 0 when it is under its limit. */
static int rl_blocked(const char *key, int limit)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&rl_lock);
    rl_slot *s = rl_slot_for(key, now, false);
    int wait = s && s->failures >= limit ? (int)(s->start + RL_WINDOW - now) : 0;
    pthread_mutex_unlock(&rl_lock);
    return wait > 0 ? wait : 0;
}

static void rl_fail(const char *key)
{
    pthread_mutex_lock(&rl_lock);
    rl_slot_for(key, time(NULL), true)->failures++;
    pthread_mutex_unlock(&rl_lock);
}

static void rl_clear(const char *key)
{
    pthread_mutex_lock(&rl_lock);
    rl_slot *s = rl_slot_for(key, time(NULL), false);
    if (s)
        s->key[0] = '\0';
    pthread_mutex_unlock(&rl_lock);
}

/* ---- users as JSON ---- */

static json_t *json_text_or_null(PGresult *r, int i, int col)
{
    return PQgetisnull(r, i, col) ? json_null() : json_string(PQgetvalue(r, i, col));
}

static json_t *json_parse_col(PGresult *r, int i, int col)
{
    json_t *v = json_loads(PQgetvalue(r, i, col), 0, NULL);
    return v ? v : json_null();
}

/* "2026-11-22 09:30:00.123456+00" (a timestamptz in a UTC session) ->
 * "2026-11-22T09:30:00Z". */
static json_t *json_time_col(PGresult *r, int i, int col)
{
    const char *v = PQgetvalue(r, i, col);
    char out[24];
    if (strlen(v) < 19)
        return json_string(v);
    memcpy(out, v, 19);
    out[10] = 'T';
    out[19] = 'Z';
    out[20] = '\0';
    return json_string(out);
}

/* True when the text[] of identifiers arr ("{admin,designer}") has item. */
static bool idarray_has(const char *arr, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = arr; (p = strstr(p, item)) != NULL; p += n)
        if (p > arr && (p[-1] == '{' || p[-1] == ',') && (p[n] == ',' || p[n] == '}'))
            return true;
    return false;
}

/* A text[] of identifiers, "{admin,designer}", as a JSON array. */
static json_t *json_idarray_col(PGresult *r, int i, int col)
{
    json_t *a = json_array();
    const char *p = PQgetvalue(r, i, col);
    if (*p == '{')
        p++;
    while (*p && *p != '}') {
        size_t n = strcspn(p, ",}");
        json_array_append_new(a, json_stringn(p, n));
        p += n;
        if (*p == ',')
            p++;
    }
    return a;
}

json_t *auth_user_json(PGresult *r, int i)
{
    return json_pack("{s:I, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:b, s:o, s:o}",
                     "id", (json_int_t)atoll(PQgetvalue(r, i, 0)),
                     "username", PQgetvalue(r, i, 1),
                     "display_name", json_text_or_null(r, i, 2),
                     "email", json_text_or_null(r, i, 3),
                     "team", json_text_or_null(r, i, 4),
                     "manager", PQgetisnull(r, i, 5) ? json_null() : json_integer(atoll(PQgetvalue(r, i, 5))),
                     "platform_roles", json_idarray_col(r, i, 6),
                     "roles", json_parse_col(r, i, 7),
                     "active", PQgetvalue(r, i, 8)[0] == 't',
                     "created_at", json_time_col(r, i, 9),
                     "updated_at", json_time_col(r, i, 10));
}

/* ---- bearer tokens ---- */

/* The user's columns, then when the token stops being valid (epoch seconds; none for a key). */
static db_stmt by_session = {.sql =
    "SELECT " AUTH_USER_COLUMNS ", extract(epoch FROM s.expires_at)::float8 FROM loom.sessions s"
    " JOIN loom.users u ON u.id = s.user_id"
    " WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND u.active"};
static db_stmt by_key = {.sql =
    "SELECT " AUTH_USER_COLUMNS ", NULL::float8 FROM loom.api_keys k JOIN loom.users u ON u.id = k.user_id"
    " WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND u.active"};

/* ---- the token cache ----
 * A token's lookup, kept for AUTH_CACHE_TTL seconds (never past the
 * session's expiry) while the server's listener is up: every change to a
 * user, a session or a key notifies loom_auth (a trigger), and the listener
 * drops that user's entries before the next requests run; a request that
 * changes them drops them at once on its own server too. When the listener
 * is down the cache is off and empty: the database decides every request. */

#define AUTH_CACHE_BUCKETS 1024
#define AUTH_CACHE_MAX 20000
#define AUTH_CACHE_TTL 60.0

struct auth_cached {
    struct auth_cached *next;
    char hash[SECRET_HASH_HEX];
    bool is_key;
    long long user_id;
    double valid_until;   /* monotonic seconds */
    PGresult *row;        /* read-only once cached: shared by requests */
    _Atomic(char *) me;   /* GET /api/me's body, made by the first request that needs it */
    atomic_int refs;
};

static struct {
    pthread_mutex_t lock;
    auth_cached *buckets[AUTH_CACHE_BUCKETS];
    int n;
    bool on;
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned bucket_of(const char *hash)
{
    return (unsigned)strtoul((char[9]){hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7], 0}, NULL, 16) %
           AUTH_CACHE_BUCKETS;
}

void auth_cache_release(auth_cached *e)
{
    if (e && atomic_fetch_sub(&e->refs, 1) == 1) {
        PQclear(e->row);
        free(atomic_load(&e->me));
        free(e);
    }
}

/* Unlinks the entries matching (hash, or user_id when hash is NULL, or all); lock held. */
static void drop_locked(const char *hash, long long user_id, bool all)
{
    for (int b = hash ? (int)bucket_of(hash) : 0; b < (hash ? (int)bucket_of(hash) + 1 : AUTH_CACHE_BUCKETS); b++) {
        auth_cached **pp = &cache.buckets[b];
        while (*pp) {
            auth_cached *e = *pp;
            if (all || (hash ? !strcmp(e->hash, hash) : e->user_id == user_id)) {
                *pp = e->next;
                cache.n--;
                auth_cache_release(e);
            } else {
                pp = &e->next;
            }
        }
    }
}

void auth_cache_enable(bool on)
{
    pthread_mutex_lock(&cache.lock);
    drop_locked(NULL, 0, true);   /* on or off, what was kept may have missed a notification */
    cache.on = on;
    pthread_mutex_unlock(&cache.lock);
}

void auth_cache_drop_user(long long user_id)
{
    pthread_mutex_lock(&cache.lock);
    drop_locked(NULL, user_id, false);
    pthread_mutex_unlock(&cache.lock);
}

void auth_cache_drop_token(const char *hash)
{
    pthread_mutex_lock(&cache.lock);
    drop_locked(hash, 0, false);
    pthread_mutex_unlock(&cache.lock);
}

auth_cached *auth_cache_get(const char *hash, bool is_key)
{
    auth_cached *found = NULL;
    double now = mono_now();
    pthread_mutex_lock(&cache.lock);
    for (auth_cached *e = cache.on ? cache.buckets[bucket_of(hash)] : NULL; e; e = e->next) {
        if (e->is_key == is_key && !strcmp(e->hash, hash)) {
            if (e->valid_until > now) {
                atomic_fetch_add(&e->refs, 1);
                found = e;
            }
            break;
        }
    }
    pthread_mutex_unlock(&cache.lock);
    return found;
}

/* Keeps a successful lookup (row: one row of the by_session/by_key columns). */
static void cache_put(const char *hash, bool is_key, PGresult *row)
{
    double ttl = AUTH_CACHE_TTL;
    if (!PQgetisnull(row, 0, 11)) {   /* a session: not past its expiry */
        double left = strtod(PQgetvalue(row, 0, 11), NULL) - (double)time(NULL);
        if (left < ttl)
            ttl = left;
    }
    if (ttl <= 0)
        return;
    auth_cached *e = calloc(1, sizeof *e);
    if (!e)
        return;
    snprintf(e->hash, sizeof e->hash, "%s", hash);
    e->is_key = is_key;
    e->user_id = atoll(PQgetvalue(row, 0, 0));
    e->valid_until = mono_now() + ttl;
    e->row = PQcopyResult(row, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
    atomic_init(&e->refs, 1);
    if (!e->row) {
        free(e);
        return;
    }
    pthread_mutex_lock(&cache.lock);
    if (!cache.on) {
        pthread_mutex_unlock(&cache.lock);
        auth_cache_release(e);
        return;
    }
    if (cache.n >= AUTH_CACHE_MAX)
        drop_locked(NULL, 0, true);
    drop_locked(hash, 0, false);
    unsigned b = bucket_of(hash);
    e->next = cache.buckets[b];
    cache.buckets[b] = e;
    cache.n++;
    pthread_mutex_unlock(&cache.lock);
}


static bool unauthenticated(ctx *c, const char *detail)
{
    http_response_header(c->res, "WWW-Authenticate", "Bearer");
    ctx_problem(c, LOOM_UNAUTHENTICATED, detail, NULL);
    return false;
}

bool auth_bearer_hash(const http_request *r, char hash[SECRET_HASH_HEX], bool *out_is_key)
{
    const char *h = http_request_header(r, "authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    const char *token = h + 7;
    while (*token == ' ')
        token++;
    size_t len = strlen(token);
    bool is_key = strncmp(token, "lk_", 3) == 0;
    if (len < 16 || len > 128 || (!is_key && strncmp(token, "lt_", 3) != 0))
        return false;
    secret_sha256_hex(token, len, hash);
    *out_is_key = is_key;
    return true;
}

db_stmt *auth_lookup_stmt(bool is_key)
{
    return is_key ? &by_key : &by_session;
}

bool auth_authenticate(ctx *c, const auth_lookup *pre, auth_cached *cached)
{
    char hash[SECRET_HASH_HEX];
    bool is_key;
    if (cached) {   /* found by this request's own token: already hashed */
        memcpy(hash, cached->hash, sizeof hash);
        is_key = cached->is_key;
    } else if (!auth_bearer_hash(c->req, hash, &is_key)) {
        return unauthenticated(c, http_request_header(c->req, "authorization") ? "the token is not valid"
                                                                              : "a bearer token is required");
    }
    loom_err e = {0};
    PGresult *r;
    if (cached) {   /* borrowed: the request's arena holds the reference */
        r = cached->row;
    } else if (pre) {
        r = pre->row;
        e = pre->err;
    } else {
        const char *params[] = {hash};
        r = db_query(c->db, c->a, auth_lookup_stmt(is_key), 1, params, &e);
    }
    if (!r) {
        ctx_db_fail(c, &e);
        return false;
    }
    if (PQntuples(r) != 1)
        return unauthenticated(c, "the token is not valid");
    if (!cached)
        cache_put(hash, is_key, r);
    auth_user *u = arena_calloc(c->a, sizeof *u);
    u->id = atoll(PQgetvalue(r, 0, 0));
    u->username = PQgetvalue(r, 0, 1);
    const char *roles = PQgetvalue(r, 0, 6);
    u->admin = idarray_has(roles, "admin");
    u->designer = idarray_has(roles, "designer");
    u->api_key = is_key;
    u->token_hash = arena_strdup(c->a, hash);
    u->row = r;
    u->cached = cached;
    c->user = u;
    return true;
}

/* ---- handlers ---- */

static db_stmt find_login = {.sql =
    "SELECT id, password_hash, active FROM loom.users WHERE lower(username) = lower($1)"};
static db_stmt new_session = {.sql =
    "WITH gone AS (DELETE FROM loom.sessions WHERE user_id = $2 AND expires_at < now() - interval '7 days')"
    " INSERT INTO loom.sessions (token_hash, user_id, expires_at)"
    " VALUES ($1, $2, now() + make_interval(secs => $3::int))"
    " RETURNING to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"};
static db_stmt user_by_id = {.sql = "SELECT " AUTH_USER_COLUMNS " FROM loom.users u WHERE u.id = $1"};

static json_t *field_error(const char *path, const char *code, const char *message)
{
    return json_pack("{s:s, s:s, s:s}", "path", path, "code", code, "message", message);
}

void auth_login(void *cp)
{
    ctx *c = cp;
    json_t *body = ctx_body_object(c);
    if (!body)
        return;
    const char *username = json_string_value(json_object_get(body, "username"));
    const char *password = json_string_value(json_object_get(body, "password"));
    json_t *errors = json_array();
    if (!username || !*username)
        json_array_append_new(errors, field_error("/username", "required", "username is required"));
    if (!password || !*password)
        json_array_append_new(errors, field_error("/password", "required", "password is required"));
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "username") != 0 && strcmp(key, "password") != 0)
            json_array_append_new(errors, field_error(arena_printf(c->a, "/%s", key), "unknown_field",
                                                      "unknown field"));
    }
    if (json_array_size(errors)) {
        ctx_problem(c, LOOM_VALIDATION_FAILED, "the login is not valid", errors);
        return;
    }
    json_decref(errors);

    char *ukey = arena_printf(c->a, "u:%.80s", username);
    for (char *p = ukey; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    char *ipkey = arena_printf(c->a, "ip:%s", c->req->client_ip);
    int wait = rl_blocked(ukey, env_int("LOOM_LOGIN_LIMIT_USER", 10));
    if (!wait)
        wait = rl_blocked(ipkey, env_int("LOOM_LOGIN_LIMIT_IP", 100));
    if (wait) {
        http_response_header(c->res, "Retry-After", arena_printf(c->a, "%d", wait));
        ctx_problem(c, LOOM_RATE_LIMITED, "too many failed logins; try again later", NULL);
        return;
    }

    const char *p1[] = {username};
    PGresult *r = ctx_query(c, &find_login, 1, p1);
    if (!r)
        return;
    bool found = PQntuples(r) == 1;
    const char *hash = found && !PQgetisnull(r, 0, 1) ? PQgetvalue(r, 0, 1) : NULL;
    bool ok = secret_password_verify(hash, password) && found && PQgetvalue(r, 0, 2)[0] == 't';
    if (!ok) {
        rl_fail(ukey);
        rl_fail(ipkey);
        unauthenticated(c, "invalid username or password");
        return;
    }
    rl_clear(ukey);

    char token[SECRET_TOKEN_LEN], thash[SECRET_HASH_HEX], ttl[16];
    secret_token_new("lt_", token);
    secret_sha256_hex(token, strlen(token), thash);
    snprintf(ttl, sizeof ttl, "%d", server_session_ttl(c->srv));
    const char *uid = PQgetvalue(r, 0, 0);
    const char *p2[] = {thash, uid, ttl};
    PGresult *s = ctx_query(c, &new_session, 3, p2);
    if (!s)
        return;
    const char *p3[] = {uid};
    PGresult *u = ctx_query(c, &user_by_id, 1, p3);
    if (!u)
        return;
    ctx_json(c, 200, json_pack("{s:s, s:s, s:o}", "token", token, "expires_at", PQgetvalue(s, 0, 0), "user",
                               auth_user_json(u, 0)));
}

static db_stmt revoke_session = {.sql =
    "UPDATE loom.sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL"};   /* notifies loom_auth */

void auth_logout(void *cp)
{
    ctx *c = cp;
    /* an API key is not a session: it stays valid until an admin deletes it */
    if (!c->user->api_key) {
        const char *p[] = {c->user->token_hash};
        if (!ctx_query(c, &revoke_session, 1, p))
            return;
        auth_cache_drop_token(c->user->token_hash);   /* at once here; other servers when loom_auth arrives */
    }
    c->res->status = 204;
}

void auth_me(void *cp)
{
    ctx *c = cp;
    auth_cached *e = c->user->cached;
    if (!e) {
        ctx_json(c, 200, auth_user_json(c->user->row, 0));
        return;
    }
    /* the same body for as long as the entry lives: made once */
    char *body = atomic_load(&e->me);
    if (!body) {
        json_t *j = auth_user_json(e->row, 0);
        char *made = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        char *none = NULL;
        if (atomic_compare_exchange_strong(&e->me, &none, made))
            body = made;
        else {
            free(made);
            body = none;   /* another request made it first */
        }
    }
    c->res->status = 200;
    c->res->content_type = "application/json; charset=utf-8";
    buf_reset(&c->res->body);
    buf_puts(&c->res->body, body);
}

/* ---- first admin ---- */

bool auth_bootstrap_admin(PGconn *conn, char *err, size_t errlen)
{
    const char *password = getenv("LOOM_ADMIN_PASSWORD");
    if (!password || !*password)
        return true;
    const char *name = getenv("LOOM_ADMIN_USER");
    if (!name || !*name)
        name = "admin";
    PGresult *r = PQexec(conn, "SELECT EXISTS (SELECT 1 FROM loom.users)");
    bool any = PQresultStatus(r) == PGRES_TUPLES_OK && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (any)
        return true;
    char hash[SECRET_PWHASH_LEN];
    if (!secret_password_hash(password, hash)) {
        snprintf(err, errlen, "could not hash the admin password");
        return false;
    }
    /* servers starting together: the lock makes one of them create it */
    PQclear(PQexec(conn, "BEGIN; SELECT pg_advisory_xact_lock(1819242350)"));
    const char *params[] = {name, hash};
    r = PQexecParams(conn,
                     "INSERT INTO loom.users (username, display_name, password_hash, platform_roles)"
                     " SELECT $1, $1, $2, '{admin}' WHERE NOT EXISTS (SELECT 1 FROM loom.users)",
                     2, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    bool created = ok && strcmp(PQcmdTuples(r), "1") == 0;
    if (!ok)
        snprintf(err, errlen, "%s", PQerrorMessage(conn));
    PQclear(r);
    r = PQexec(conn, ok ? "COMMIT" : "ROLLBACK");
    PQclear(r);
    if (created)
        log_json(LOG_INFO, "created the first platform admin", json_pack("{s:s}", "username", name));
    return ok;
}
