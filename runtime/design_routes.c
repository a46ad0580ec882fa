/* design_routes.c - the designer API over HTTP (/api/design/...).
 *
 * Thin handlers over designer-api/design.h. Who may do what: a platform admin
 * everything; a user holding the app role "designer" everything on that app;
 * a platform designer may also create apps, and becomes designer of each app
 * it creates. Bodies are read with the bundle limits (duplicate keys, depth).
 * Not yet here: the migration plan, rollback, rule tests and rule runs. */
#include <stdlib.h>
#include <string.h>

#include "design.h"
#include "handlers.h"
#include "model/bundle.h"
#include "model/validate.h"
#include "perm/perm.h"

static const char *const kinds[] = {"forms", "flows", "rules", "reports", "dashboards", NULL};

static void decref_cb(void *p)
{
    json_decref(p);
}

/* The caller's app roles, {"app": ["role", ...]}, borrowed from the auth row. */
static json_t *app_roles(ctx *c)
{
    json_t *roles = json_loads(PQgetvalue(c->user->row, 0, 7), 0, NULL);
    if (roles)
        arena_defer(c->a, decref_cb, roles);
    return roles;
}

static bool is_designer_of(ctx *c, const char *app)
{
    if (c->user->admin)
        return true;
    json_t *list = json_object_get(app_roles(c), app);
    size_t i;
    json_t *r;
    json_array_foreach(list, i, r) if (json_is_string(r) && !strcmp(json_string_value(r), "designer")) return true;
    return false;
}

/* Responds 404 (the app is not visible) unless the caller designs app. */
static bool may_design(ctx *c, const char *app)
{
    if (is_designer_of(c, app))
        return true;
    ctx_problem(c, LOOM_NOT_FOUND, "no such app", NULL);
    return false;
}

static json_t *design_body(ctx *c)
{
    char err[256];
    json_t *v = bundle_parse(c->req->body, c->req->body_len, err, sizeof err);
    if (!v) {
        ctx_bad_json(c, arena_strdup(c->a, err));
        return NULL;
    }
    arena_defer(c->a, decref_cb, v);
    if (!json_is_object(v)) {
        ctx_bad_json(c, "the body must be a JSON object");
        return NULL;
    }
    return v;
}

static void fail(ctx *c, const loom_err *e, json_t *errors)
{
    if (e->code == LOOM_UNAVAILABLE || e->code == LOOM_INTERNAL) {
        json_decref(errors);
        ctx_db_fail(c, e);
        return;
    }
    if (!errors && e->path)
        errors = json_pack("[{s:s, s:s, s:s}]", "path", e->path, "code", loom_code_name(e->code), "message",
                           e->message ? e->message : loom_code_title(e->code));
    ctx_problem(c, e->code, e->message, errors);
}

/* A stored bundle text as the response body (it is JSON already, key order kept). */
static void respond_text(ctx *c, int status, const char *text)
{
    c->res->status = status;
    c->res->content_type = "application/json; charset=utf-8";
    buf_puts(&c->res->body, text);
}

static json_t *validation_result(json_t *bundle)
{
    json_t *errors = model_validate(bundle);
    bool valid = json_array_size(errors) == 0;
    return json_pack("{s:b, s:o, s:o}", "valid", valid, "errors", errors, "warnings", valid ? perm_warnings(bundle) : json_array());
}

/* Gives the caller the app role designer of app (a platform designer that
 * created it). */
static db_stmt grant_designer = {.sql =
    "UPDATE loom.users SET app_roles = jsonb_set(app_roles, ARRAY[$2::text], "
    " (SELECT coalesce(jsonb_agg(DISTINCT r), '[]') FROM jsonb_array_elements_text("
    "   coalesce(app_roles->$2, '[]') || '[\"designer\"]') AS r)), updated_at = now() WHERE id = $1::bigint"};

static bool grant(ctx *c, const char *app)
{
    if (c->user->admin)
        return true;
    const char *p[] = {arena_printf(c->a, "%lld", c->user->id), app};
    if (!ctx_query(c, &grant_designer, 2, p))
        return false;
    auth_cache_drop_user(c->user->id);   /* its next request sees the new role */
    return true;
}

/* ---- apps ---- */

void design_apps_list(void *cp)
{
    ctx *c = cp;
    loom_err e = {0};
    json_t *only = NULL;
    if (!c->user->admin) {
        /* json_object_foreach evaluates its object at every step: take it once */
        json_t *roles = app_roles(c);
        only = json_object();
        const char *app;
        json_t *list;
        json_object_foreach(roles, app, list)
        {
            if (is_designer_of(c, app))
                json_object_set_new(only, app, json_true());
        }
    }
    json_t *items = design_list(c->db, c->a, only, &e);
    json_decref(only);
    if (!items) {
        fail(c, &e, NULL);
        return;
    }
    ctx_json(c, 200, json_pack("{s:o, s:n}", "items", items, "next_cursor"));
}

/* POST /api/design/apps (create_only) and POST /api/design/import. */
static void save_bundle(ctx *c, json_t *bundle, bool create_only, bool publish, bool data)
{
    const char *app = json_string_value(json_object_get(json_object_get(bundle, "app"), "id"));
    if (!c->user->admin && !c->user->designer && !(app && is_designer_of(c, app))) {
        ctx_problem(c, LOOM_FORBIDDEN, "this needs the platform role designer or admin", NULL);
        return;
    }
    if (publish) {   /* nothing is stored from an invalid bundle that is to be published */
        json_t *errors = model_validate(bundle);
        if (json_array_size(errors)) {
            ctx_problem(c, LOOM_INVALID_DEFINITION, "the bundle is not valid", errors);
            return;
        }
        json_decref(errors);
    }
    loom_err e = {0};
    bool created;
    if (!design_save_draft(c->db, c->a, bundle, create_only, &created, &e)) {
        fail(c, &e, NULL);
        return;
    }
    if (!created && !is_designer_of(c, app)) {   /* an existing app someone else designs */
        ctx_problem(c, LOOM_CONFLICT, "an app with this id exists", NULL);
        return;
    }
    if (created && !grant(c, app))
        return;
    json_t *out = validation_result(bundle);
    json_object_set_new(out, "id", json_string(app));
    json_object_set_new(out, "created", json_boolean(created));
    if (publish) {
        json_t *errors = NULL;
        json_t *res = design_publish(c->db, c->a, app, "imported", false, NULL, NULL, &errors, &e);
        if (!res) {
            json_decref(out);
            fail(c, &e, errors);
            return;
        }
        json_object_set(out, "version", json_object_get(res, "version"));
        json_object_set(out, "steps", json_object_get(res, "steps"));
        long seeded = (long)json_integer_value(json_object_get(res, "seeded"));
        if (data && !json_object_get(res, "seeded")) {   /* not a first publish: load it now, as asked */
            seeded = design_load_published_data(c->db, c->a, app, &errors, &e);
            if (seeded < 0) {
                json_decref(res);
                json_decref(out);
                fail(c, &e, errors);
                return;
            }
        }
        json_object_set_new(out, "seeded", json_integer(seeded));
        json_decref(res);
    }
    ctx_json(c, created ? 201 : 200, out);
}

void design_apps_create(void *cp)
{
    ctx *c = cp;
    json_t *bundle = design_body(c);
    if (bundle)
        save_bundle(c, bundle, true, false, false);
}

void design_import(void *cp)
{
    ctx *c = cp;
    json_t *bundle = design_body(c);
    const char *publish = query_param(c->a, c->req->query, "publish");
    const char *data = query_param(c->a, c->req->query, "data");
    bool with_data = data && !strcmp(data, "true");
    if (with_data && !(publish && !strcmp(publish, "true"))) {
        ctx_problem(c, LOOM_BAD_REQUEST, "data=true loads seed data into the published app: add publish=true", NULL);
        return;
    }
    if (bundle)
        save_bundle(c, bundle, false, publish && !strcmp(publish, "true"), with_data);
}

void design_app_get(void *cp)
{
    ctx *c = cp;
    if (!may_design(c, c->params[0]))
        return;
    loom_err e = {0};
    const char *text = design_draft(c->db, c->a, c->params[0], &e);
    if (text)
        respond_text(c, 200, text);
    else
        fail(c, &e, NULL);
}

void design_app_put(void *cp)
{
    ctx *c = cp;
    if (!may_design(c, c->params[0]))
        return;
    json_t *bundle = design_body(c);
    if (!bundle)
        return;
    const char *id = json_string_value(json_object_get(json_object_get(bundle, "app"), "id"));
    if (!id || strcmp(id, c->params[0]) != 0) {
        ctx_problem(c, LOOM_VALIDATION_FAILED, "app.id must be the app of the path",
                    json_pack("[{s:s, s:s, s:s}]", "path", "/app/id", "code", "bad_value", "message",
                              "app.id must be the app of the path"));
        return;
    }
    loom_err e = {0};
    bool created;
    if (!design_save_draft(c->db, c->a, bundle, false, &created, &e)) {
        fail(c, &e, NULL);
        return;
    }
    if (created) {   /* PUT does not create: that is POST's job */
        ctx_problem(c, LOOM_NOT_FOUND, "no such app", NULL);
        return;
    }
    json_t *out = validation_result(bundle);
    json_object_set_new(out, "id", json_string(id));
    ctx_json(c, 200, out);
}

void design_app_delete(void *cp)
{
    ctx *c = cp;
    if (!may_design(c, c->params[0]))
        return;
    const char *confirm = query_param(c->a, c->req->query, "confirm");
    if (!confirm || strcmp(confirm, c->params[0]) != 0) {
        ctx_problem(c, LOOM_BAD_REQUEST, "deleting an app drops its data: pass ?confirm=<app id>", NULL);
        return;
    }
    loom_err e = {0};
    if (design_delete(c->db, c->a, c->params[0], &e))
        c->res->status = 204;
    else
        fail(c, &e, NULL);
}

void design_app_validate(void *cp)
{
    ctx *c = cp;
    if (!may_design(c, c->params[0]))
        return;
    loom_err e = {0};
    const char *text = design_draft(c->db, c->a, c->params[0], &e);
    json_t *bundle = text ? json_loads(text, 0, NULL) : NULL;
    if (!bundle) {
        fail(c, &e, NULL);
        return;
    }
    ctx_json(c, 200, validation_result(bundle));
    json_decref(bundle);
}

void design_app_publish(void *cp)
{
    ctx *c = cp;
    if (!may_design(c, c->params[0]))
        return;
    const char *note = NULL;
    bool allow = false;
    if (c->req->body_len) {
        json_t *body = ctx_body_object(c);
        if (!body)
            return;
        note = json_string_value(json_object_get(body, "note"));
        allow = json_is_true(json_object_get(body, "allow_destructive"));
    }
    json_t *errors = NULL;
    loom_err e = {0};
    json_t *res = design_publish(c->db, c->a, c->params[0], note, allow, NULL, NULL, &errors, &e);
    if (res)
        ctx_json(c, 200, res);
    else
        fail(c, &e, errors);
}

void design_app_plan(void *cp)
{
    ctx *c = cp;
    if (!may_design(c, c->params[0]))
        return;
    const char *allow = query_param(c->a, c->req->query, "allow_destructive");
    json_t *errors = NULL;
    loom_err e = {0};
    json_t *plan = design_plan(c->db, c->a, c->params[0], allow && !strcmp(allow, "true"), &errors, &e);
    if (plan)
        ctx_json(c, 200, plan);
    else
        fail(c, &e, errors);
}

void design_app_rollback(void *cp)
{
    ctx *c = cp;
    if (!may_design(c, c->params[0]))
        return;
    json_t *body = ctx_body_object(c);
    if (!body)
        return;
    json_t *v = json_object_get(body, "version");
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        ctx_problem(c, LOOM_VALIDATION_FAILED, "version must be a published version number",
                    json_pack("[{s:s, s:s, s:s}]", "path", "/version", "code", "type", "message",
                              "must be a published version number"));
        return;
    }
    json_t *errors = NULL;
    loom_err e = {0};
    json_t *res = design_rollback(c->db, c->a, c->params[0], (int)json_integer_value(v),
                                  json_is_true(json_object_get(body, "allow_destructive")), &errors, &e);
    if (res)
        ctx_json(c, 200, res);
    else
        fail(c, &e, errors);
}

void design_app_versions(void *cp)
{
    ctx *c = cp;
    if (!may_design(c, c->params[0]))
        return;
    loom_err e = {0};
    json_t *items = design_versions(c->db, c->a, c->params[0], &e);
    if (items)
        ctx_json(c, 200, json_pack("{s:o, s:n}", "items", items, "next_cursor"));
    else
        fail(c, &e, NULL);
}

/* GET .../versions/{n} and GET .../export?version=n */
static void version_bundle(ctx *c, const char *version, bool with_data)
{
    if (!may_design(c, c->params[0]))
        return;
    if (version && atoi(version) <= 0) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such version", NULL);
        return;
    }
    loom_err e = {0};
    int v;
    const char *text = design_version_text(c->db, c->a, c->params[0], version, &v, &e);
    json_t *b = text && !with_data ? json_loads(text, 0, NULL) : NULL;
    if (b && json_object_get(b, "data")) {   /* without the seed data; key order kept otherwise */
        json_object_del(b, "data");
        ctx_json(c, 200, b);
    } else if (text) {
        json_decref(b);
        respond_text(c, 200, text);
    } else {
        fail(c, &e, NULL);
    }
}

void design_app_version(void *cp)
{
    ctx *c = cp;
    version_bundle(c, c->params[1], true);
}

void design_app_export(void *cp)
{
    ctx *c = cp;
    const char *v = query_param(c->a, c->req->query, "version"), *data = query_param(c->a, c->req->query, "data");
    if (data && strcmp(data, "true") && strcmp(data, "false")) {
        ctx_problem(c, LOOM_BAD_REQUEST, "data is true or false", NULL);
        return;
    }
    version_bundle(c, v && *v ? v : NULL, !data || !strcmp(data, "true"));
}

/* ---- parts of the draft: /{kind}/{id} and /permissions, /webhooks, /settings ---- */

static bool known_kind(const char *k)
{
    for (const char *const *p = kinds; *p; p++)
        if (!strcmp(*p, k))
            return true;
    return false;
}

/* The draft of app as JSON (owned by the arena), or NULL after responding. */
static json_t *load_draft(ctx *c)
{
    loom_err e = {0};
    const char *text = design_draft(c->db, c->a, c->params[0], &e);
    json_t *b = text ? json_loads(text, 0, NULL) : NULL;
    if (!b) {
        fail(c, &e, NULL);
        return NULL;
    }
    arena_defer(c->a, decref_cb, b);
    return b;
}

static void store_draft(ctx *c, json_t *bundle, int status, json_t *part)
{
    loom_err e = {0};
    bool created;
    if (!design_save_draft(c->db, c->a, bundle, false, &created, &e)) {
        fail(c, &e, NULL);
        return;
    }
    if (!part) {
        c->res->status = status;
        return;
    }
    json_t *out = validation_result(bundle);
    json_object_set(out, "item", part);
    ctx_json(c, status, out);
}

/* GET|PUT|DELETE /api/design/apps/{app}/{kind}/{id} */
static void kind_item(ctx *c, const char *method)
{
    const char *kind = c->params[1], *id = c->params[2];
    if (!may_design(c, c->params[0]))
        return;
    if (!known_kind(kind)) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such route", NULL);
        return;
    }
    json_t *bundle = load_draft(c);
    if (!bundle)
        return;
    json_t *items = json_object_get(bundle, kind);
    if (!json_is_array(items)) {
        items = json_array();
        json_object_set_new(bundle, kind, items);
    }
    size_t i, at = (size_t)-1;
    json_t *x;
    json_array_foreach(items, i, x) if (json_is_string(json_object_get(x, "id")) && !strcmp(json_string_value(json_object_get(x, "id")), id)) at = i;
    if (!strcmp(method, "GET")) {
        if (at == (size_t)-1)
            ctx_problem(c, LOOM_NOT_FOUND, "no such item", NULL);
        else
            ctx_json(c, 200, json_incref(json_array_get(items, at)));
        return;
    }
    if (!strcmp(method, "DELETE")) {
        if (at == (size_t)-1) {
            ctx_problem(c, LOOM_NOT_FOUND, "no such item", NULL);
            return;
        }
        json_array_remove(items, at);
        store_draft(c, bundle, 204, NULL);
        return;
    }
    json_t *item = design_body(c);
    if (!item)
        return;
    const char *bid = json_string_value(json_object_get(item, "id"));
    if (!bid || strcmp(bid, id) != 0) {
        ctx_problem(c, LOOM_VALIDATION_FAILED, "id must be the id of the path",
                    json_pack("[{s:s, s:s, s:s}]", "path", "/id", "code", "bad_value", "message",
                              "id must be the id of the path"));
        return;
    }
    if (at == (size_t)-1)
        json_array_append(items, item);
    else
        json_array_set(items, at, item);
    store_draft(c, bundle, at == (size_t)-1 ? 201 : 200, item);
}

void design_item_get(void *c) { kind_item(c, "GET"); }
void design_item_put(void *c) { kind_item(c, "PUT"); }
void design_item_delete(void *c) { kind_item(c, "DELETE"); }

/* GET|PUT /api/design/apps/{app}/permissions|webhooks|settings; settings is
 * the "app" object. */
static void section(ctx *c, bool put)
{
    const char *name = c->params[1];
    const char *key = !strcmp(name, "settings") ? "app" : name;
    if (!may_design(c, c->params[0]))
        return;
    if (strcmp(name, "permissions") && strcmp(name, "webhooks") && strcmp(name, "settings")) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such route", NULL);
        return;
    }
    json_t *bundle = load_draft(c);
    if (!bundle)
        return;
    if (!put) {
        json_t *v = json_object_get(bundle, key);
        ctx_json(c, 200, v ? json_incref(v) : (!strcmp(name, "webhooks") ? json_array() : json_object()));
        return;
    }
    char err[256];
    json_t *v = bundle_parse(c->req->body, c->req->body_len, err, sizeof err);
    if (!v) {
        ctx_bad_json(c, arena_strdup(c->a, err));
        return;
    }
    if (!strcmp(name, "settings") && strcmp(jstr(json_object_get(v, "id")), c->params[0]) != 0) {
        json_decref(v);
        ctx_problem(c, LOOM_VALIDATION_FAILED, "the app id cannot change",
                    json_pack("[{s:s, s:s, s:s}]", "path", "/id", "code", "bad_value", "message",
                              "the app id cannot change"));
        return;
    }
    json_object_set_new(bundle, key, v);
    store_draft(c, bundle, 200, v);
}

void design_section_get(void *c) { section(c, false); }
void design_section_put(void *c) { section(c, true); }
