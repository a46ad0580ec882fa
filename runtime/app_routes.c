/* app_routes.c - the runtime API's app routes: the published apps the caller
 * holds a role in, and one app's face for that caller (labels in the
 * caller's language, menu, the forms its roles have permissions on). Served
 * from the server's snapshots, so a publish on any server shows here at once.
 * And a form's render schema or JSON Schema for the caller (engine/form/schema). */
#include <string.h>
#include <strings.h>

#include "form/schema.h"
#include "handlers.h"
#include "meta.h"
#include "model/bundle.h"
#include "perm/perm.h"
#include "records.h"
#include "store/query.h"

static void decref_cb(void *p)
{
    json_decref(p);
}

json_t *app_caller_roles(ctx *c, const char *app)
{
    json_t *all = json_loads(PQgetvalue(c->user->row, 0, 7), 0, NULL);
    arena_defer(c->a, decref_cb, all);
    json_t *r = json_object_get(all, app);
    return json_is_array(r) ? r : NULL;
}

static bool may_use(ctx *c, const char *app)
{
    return c->user->admin || json_array_size(app_caller_roles(c, app)) > 0;
}

const char *app_locale(ctx *c, json_t *locales)
{
    const char *al = http_request_header(c->req, "accept-language");
    size_t i;
    json_t *l;
    for (const char *p = al; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",;");
        json_array_foreach(locales, i, l)
        {
            const char *s = json_string_value(l);
            if (s && strlen(s) == n && !strncasecmp(s, p, n))
                return s;
        }
        p += n;
        p += strcspn(p, ",");
    }
    return json_string_value(json_array_get(locales, 0));
}

void apps_list(void *cp)
{
    ctx *c = cp;
    meta *m = server_meta(c->srv);
    json_t *ids = meta_ids(m), *items = json_array();
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id)
    {
        const char *app = json_string_value(id);
        if (!may_use(c, app))
            continue;
        app_snapshot *s = meta_get(m, app);
        if (!s)
            continue;
        json_t *a = json_object_get(s->bundle, "app");
        json_t *locales = json_object_get(a, "locales");
        json_array_append_new(items, json_pack("{s:s, s:o, s:i}", "id", app, "label",
                                               schema_label(json_object_get(a, "label"), app_locale(c, locales), locales, app),
                                               "version", s->version));
        snapshot_release(s);
    }
    json_decref(ids);
    ctx_json(c, 200, json_pack("{s:o, s:n}", "items", items, "next_cursor"));
}

void apps_get(void *cp)
{
    ctx *c = cp;
    const char *app = c->params[0];
    app_snapshot *s = may_use(c, app) ? meta_get(server_meta(c->srv), app) : NULL;
    if (!s) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such app", NULL);
        return;
    }
    json_t *a = json_object_get(s->bundle, "app");
    json_t *locales = json_object_get(a, "locales");
    const char *loc = app_locale(c, locales);
    json_t *roles = app_caller_roles(c, app);
    bool app_admin = c->user->admin;
    size_t i;
    json_t *r;
    json_array_foreach(roles, i, r) app_admin = app_admin || !strcmp(jstr(r), "admin");
    /* a form is listed when one of my roles has a permission on it (or "*") */
    json_t *perms = json_object_get(s->bundle, "permissions");
    json_t *forms = json_array();
    json_t *f;
    json_array_foreach(json_object_get(s->bundle, "forms"), i, f)
    {
        const char *fid = json_string_value(json_object_get(f, "id"));
        bool listed = app_admin;
        size_t k;
        json_array_foreach(roles, k, r)
        {
            const char *role = jstr(r);
            listed = listed || json_object_get(json_object_get(perms, fid), role) ||
                     json_object_get(json_object_get(perms, "*"), role);
        }
        if (!listed)
            continue;
        perm_decision d;
        perm_decide(s->bundle, fid, roles, c->user->admin, &d);
        json_array_append_new(forms, json_pack("{s:s, s:o, s:o}", "id", fid, "label",
                                               schema_label(json_object_get(f, "label"), loc, locales, fid), "permissions",
                                               perm_summary(&d)));
        perm_free(&d);
    }
    /* the menu: its form items the caller has (with their labels), groups left empty dropped */
    json_t *menu = json_array();
    json_t *g, *item;
    json_array_foreach(json_object_get(a, "menu"), i, g)
    {
        json_t *items = json_array();
        size_t k;
        json_array_foreach(json_object_get(g, "items"), k, item)
        {
            const char *fid = json_string_value(json_object_get(item, "form"));
            json_t *listed = NULL;
            size_t m;
            json_array_foreach(fid ? forms : NULL, m, f) if (!strcmp(jstr(json_object_get(f, "id")), fid)) listed = f;
            if (listed)
                json_array_append_new(items, json_pack("{s:s, s:O}", "form", fid, "label", json_object_get(listed, "label")));
            else if (!fid)
                json_array_append(items, item);   /* a report or a dashboard: its engine decides */
        }
        if (json_array_size(items))
            json_array_append_new(menu, json_pack("{s:o, s:o}", "label",
                                                  schema_label(json_object_get(g, "label"), loc, locales, ""), "items", items));
        else
            json_decref(items);
    }
    ctx_json(c, 200, json_pack("{s:s, s:o, s:i, s:s?, s:o, s:o, s:o, s:o}", "id", app, "label",
                               schema_label(json_object_get(a, "label"), loc, locales, app), "version", s->version,
                               "locale", loc, "roles", roles ? json_incref(roles) : json_array(), "menu", menu, "forms", forms,
                               "timezone", (json_object_get(a, "timezone") ? json_incref(json_object_get(a, "timezone")) : json_string("UTC"))));
    snapshot_release(s);
}

void apps_form(void *cp)
{
    ctx *c = cp;
    const char *app = c->params[0];
    app_snapshot *s = may_use(c, app) ? meta_get(server_meta(c->srv), app) : NULL;
    json_t *form = s ? bundle_item(json_object_get(s->bundle, "forms"), c->params[1]) : NULL;
    perm_decision d = {0};
    if (form)
        perm_decide(s->bundle, c->params[1], app_caller_roles(c, app), c->user->admin, &d);
    const char *format = query_param(c->a, c->req->query, "format");
    if (!form || (!d.read && !d.create)) {   /* a form the caller may neither read nor fill is not there */
        ctx_problem(c, LOOM_NOT_FOUND, "no such form", NULL);
    } else if (format && strcmp(format, "jsonschema") != 0) {
        ctx_problem(c, LOOM_BAD_REQUEST, "format is jsonschema or absent", NULL);
    } else {
        const char *loc = app_locale(c, json_object_get(json_object_get(s->bundle, "app"), "locales"));
        ctx_json(c, 200, format ? schema_json(s->bundle, form, &d, loc) : schema_render(s->bundle, form, &d, loc));
    }
    perm_free(&d);
    if (s)
        snapshot_release(s);
}

/* GET /api/apps/{app}/forms/{form}/fields/{field}/choices?search=&limit=&cursor=: the users a user field
 * (a subform's as "rows.field", or _owner) may hold, for a picker: active, holding one of the field's
 * roles in the app (any role of the app when the field names none), by id, as {"id", "title"}. A field
 * the caller does not see, or that holds no users, is 404; _owner only for a caller who may set it. */
void apps_field_choices(void *cp)
{
    ctx *c = cp;
    rec_req r;
    if (!rec_begin(c, &r))
        return;
    const char *name = c->params[2], *dot = strchr(name, '.');
    json_t *fdef = bundle_item(json_object_get(r.snap->bundle, "forms"), r.form), *f = NULL;
    perm_decision d;
    perm_decide(r.snap->bundle, r.form, r.fc.roles, r.fc.admin, &d);
    bool owner = !strcmp(name, "_owner");
    if (dot) {
        char sub[128];
        snprintf(sub, sizeof sub, "%.*s", (int)(dot - name), name);
        json_t *sf = bundle_item(json_object_get(fdef, "fields"), sub);
        f = sf && field_is(sf, "subform") ? bundle_item(json_object_get(sf, "fields"), dot + 1) : NULL;
    } else if (!owner) {
        f = bundle_item(json_object_get(fdef, "fields"), name);
    }
    bool seen = fdef && (d.read || d.create) &&   /* a form it may fill without reading it needs pickers too */
                (owner ? perm_scope_all(d.update) : f && field_is(f, "user") && perm_field(&d, name) != FIELD_HIDDEN);
    perm_free(&d);
    if (!seen) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such user field", NULL);
        return;
    }
    long limit;
    const char *q = c->req->query, *search = query_param(c->a, q, "search"), *cursor = query_param(c->a, q, "cursor");
    if (!rec_parse_limit(c, query_param(c->a, q, "limit"), &limit))
        return;
    char *end = NULL;
    long long after = cursor && *cursor ? strtoll(cursor, &end, 10) : 0;
    if (cursor && *cursor && (*end || after < 0)) {
        ctx_problem(c, LOOM_BAD_REQUEST, "not a cursor of these choices",
                    json_pack("[{s:s, s:s, s:s}]", "path", "/cursor", "code", "bad_request", "message", "a user id"));
        return;
    }
    json_t *args = json_array();
    buf sql = {0};
    json_array_append_new(args, json_string(c->params[0]));
    buf_puts(&sql, "SELECT u.id, coalesce(u.display_name, u.username) FROM loom.users u WHERE u.active AND "
                   "jsonb_array_length(coalesce(u.app_roles -> $1, '[]')) > 0");
    json_t *roles = f ? json_object_get(f, "roles") : NULL;
    if (json_array_size(roles)) {
        char *list = json_dumps(roles, JSON_COMPACT);
        json_array_append_new(args, json_string(list));
        free(list);
        buf_printf(&sql, " AND (u.app_roles -> $1) ?| ARRAY(SELECT jsonb_array_elements_text($%zu::jsonb))", json_array_size(args));
    }
    if (search && *search) {   /* in the name or the username, % _ \ as themselves */
        buf pat = {0};
        buf_puts(&pat, "%");
        for (const char *p = search; *p; p++) {
            if (*p == '%' || *p == '_' || *p == '\\')
                buf_puts(&pat, "\\");
            buf_append(&pat, p, 1);
        }
        buf_puts(&pat, "%");
        json_array_append_new(args, json_string(pat.data));
        buf_free(&pat);
        buf_printf(&sql, " AND (u.display_name ILIKE $%zu ESCAPE '\\' OR u.username ILIKE $%zu ESCAPE '\\')",
                   json_array_size(args), json_array_size(args));
    }
    char n[24];
    snprintf(n, sizeof n, "%lld", after);
    json_array_append_new(args, json_string(n));
    buf_printf(&sql, " AND u.id > $%zu::bigint ORDER BY u.id LIMIT %ld", json_array_size(args), limit + 1);
    loom_err e = {0};
    PGresult *res = query_exec(c->db, c->a, sql.data, args, &e);
    buf_free(&sql);
    json_decref(args);
    if (!res) {
        ctx_db_fail(c, &e);
        return;
    }
    json_t *items = json_array();
    int rows = PQntuples(res) > limit ? (int)limit : PQntuples(res);
    for (int i = 0; i < rows; i++)
        json_array_append_new(items, json_pack("{s:I, s:s}", "id", (json_int_t)atoll(PQgetvalue(res, i, 0)), "title",
                                               PQgetvalue(res, i, 1)));
    json_t *next = PQntuples(res) > limit ? json_string(PQgetvalue(res, rows - 1, 0)) : json_null();
    ctx_json(c, 200, json_pack("{s:o, s:o}", "items", items, "next_cursor", next));
}
