/* handlers.h - the route handlers, by module. Each takes a ctx *. */
#ifndef LOOM_HANDLERS_H
#define LOOM_HANDLERS_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "server.h"

/* ops.c */
void ops_healthz(void *c);
void ops_readyz(void *c);
void ops_metrics(void *c);
void ops_openapi(void *c);

/* auth.c */
void auth_login(void *c);
void auth_logout(void *c);
void auth_me(void *c);
/* The SHA-256 (hex) of the request's bearer token and whether it is an API
 * key; false when the header is missing or the token is malformed. */
bool auth_bearer_hash(const http_request *r, char hash[65], bool *out_is_key);
/* The statement that resolves a token hash ($1) into the user's columns. */
db_stmt *auth_lookup_stmt(bool is_key);
/* The result of auth_lookup_stmt run ahead of time (a worker batches them). */
typedef struct auth_lookup {
    PGresult *row;   /* NULL: the lookup failed with err */
    loom_err err;
} auth_lookup;
/* The token cache (auth.c): a token's lookup kept while the server's
 * loom_auth listener is up (a reference: release it, or hand it to
 * auth_authenticate), NULL on a miss. */
typedef struct auth_cached auth_cached;
auth_cached *auth_cache_get(const char *hash, bool is_key);
void auth_cache_release(auth_cached *e);
/* On (the listener is up) or off (it is down); either way it starts empty. */
void auth_cache_enable(bool on);
void auth_cache_drop_user(long long user_id);
void auth_cache_drop_token(const char *hash);
/* Resolves the bearer token into c->user: from cached (borrowed: the
 * request holds a reference), else pre when not NULL, else by running the lookup
 * (and caching it). Responds 401 (503 when the database is unreachable) and
 * returns false when there is no valid token. */
bool auth_authenticate(ctx *c, const auth_lookup *pre, auth_cached *cached);
/* The user JSON of row i of a result selected with AUTH_USER_COLUMNS. */
json_t *auth_user_json(PGresult *r, int i);
/* Creates the first platform admin from LOOM_ADMIN_USER / LOOM_ADMIN_PASSWORD
 * when the database has no user yet. Returns false with a message in err. */
bool auth_bootstrap_admin(PGconn *conn, char *err, size_t errlen);

/* Raw columns: formatting is done in C (auth_user_json), which keeps the
 * per-request authentication query as cheap as a primary-key lookup. */
#define AUTH_USER_COLUMNS                                                                        \
    "u.id, u.username, u.display_name, u.email, u.team, u.manager, u.platform_roles, "           \
    "u.app_roles, u.active, u.created_at, u.updated_at"

/* design_routes.c: the designer API */
void design_apps_list(void *c);
void design_apps_create(void *c);
void design_import(void *c);
void design_app_get(void *c);
void design_app_put(void *c);
void design_app_delete(void *c);
void design_app_validate(void *c);
void design_app_publish(void *c);
void design_app_plan(void *c);
void design_app_rollback(void *c);
void design_app_versions(void *c);
void design_app_version(void *c);
void design_app_export(void *c);
void design_section_get(void *c);
void design_section_put(void *c);
void design_item_get(void *c);
void design_item_put(void *c);
void design_item_delete(void *c);

/* app_routes.c: the runtime API's apps */
void apps_list(void *c);
void apps_get(void *c);
void apps_form(void *c);
void apps_field_choices(void *c);
/* The locale to answer in: the first Accept-Language tag among locales, else
 * the first of locales. */
const char *app_locale(ctx *c, json_t *locales);
/* The caller's roles in app (an array owned by the request), or NULL. */
json_t *app_caller_roles(ctx *c, const char *app);

/* record_routes.c: the runtime API's records */
void records_list(void *c);
void records_query(void *c);
/* their halves (ctx_run_split) */
bool records_list_plan(ctx *c, route_query *q);
bool records_query_plan(ctx *c, route_query *q);
void records_page_finish(ctx *c, route_query *q);
void records_get(void *c);
void records_create(void *c);
/* its halves: a create that is one statement (records_create_plan decides)
 * runs outside a transaction, alone or with others' queries */
bool records_create_plan(ctx *c, route_query *q);
void records_create_finish(ctx *c, route_query *q);
void records_update(void *c);
void records_delete(void *c);
void records_history(void *c);

/* flow_routes.c: a record's actions and transitions */
void records_actions(void *c);
void records_transition(void *c);
void records_approval(void *c);
void tasks_list(void *c);
void notifications_list(void *c);
void notifications_read(void *c);

/* io_routes.c: CSV import, CSV and XLSX export */
void records_import(void *c);
void records_export(void *c);

/* file_routes.c: uploaded files */
void files_upload(void *c);
void files_download(void *c);

/* admin.c */
void admin_users_create(void *c);
void admin_users_list(void *c);
void admin_users_get(void *c);
void admin_users_update(void *c);
void admin_keys_create(void *c);
void admin_keys_list(void *c);
void admin_keys_delete(void *c);

/* Checks a user body for create (all required keys) or update. Returns a
 * new array of {path, code, message}, empty when the body is valid. */
json_t *admin_user_check(json_t *body, bool create);
/* Inserts a user from a checked body, in the caller's transaction, hashing its
 * password. Returns the user's JSON (new reference) or NULL with *err set
 * (LOOM_NOT_UNIQUE for a taken username, LOOM_VALIDATION_FAILED with path for
 * a manager that does not exist). Shared by the API and `loom user add`. */
json_t *admin_user_insert(db *d, arena *a, json_t *body, loom_err *err);

#endif
