/* perm.c - see perm.h. */
#include "perm/perm.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "model/bundle.h"

static const char *const ops[] = {"read", "update", "delete"};

static bool is_all(json_t *v)
{
    return json_is_true(v) || (json_is_string(v) && !strcmp(json_string_value(v), "all"));
}

bool perm_scope_all(json_t *scope)
{
    size_t i;
    json_t *s;
    json_array_foreach(scope, i, s) if (json_is_string(s) && !strcmp(json_string_value(s), "all")) return true;
    return false;
}

/* Adds one role's scope for an operation to the union. */
static void widen(json_t **scope, json_t *v)
{
    if (!v || json_is_false(v) || json_is_null(v))
        return;
    if (!*scope)
        *scope = json_array();
    if (perm_scope_all(*scope))
        return;
    if (is_all(v)) {
        json_array_clear(*scope);
        json_array_append_new(*scope, json_string("all"));
        return;
    }
    size_t i;
    json_t *s;
    json_array_foreach(*scope, i, s) if (json_equal(s, v)) return;   /* once each */
    json_array_append(*scope, v);
}

static perm_mode mode_of(const char *s)
{
    return !s ? FIELD_WRITE : !strcmp(s, "hidden") ? FIELD_HIDDEN : !strcmp(s, "read") ? FIELD_READ : FIELD_WRITE;
}

static const char *mode_name(perm_mode m)
{
    return m == FIELD_HIDDEN ? "hidden" : m == FIELD_READ ? "read" : "write";
}

/* Every field name of a form: "f" and, inside subforms, "sub.f". */
static void field_names(json_t *form, json_t *out)
{
    size_t i, k;
    json_t *f, *sf;
    json_array_foreach(json_object_get(form, "fields"), i, f)
    {
        const char *id = json_string_value(json_object_get(f, "id"));
        if (!id)
            continue;
        json_array_append_new(out, json_string(id));
        json_array_foreach(json_object_get(f, "fields"), k, sf)
        {
            const char *sid = json_string_value(json_object_get(sf, "id"));
            if (sid) {
                char name[128];
                snprintf(name, sizeof name, "%s.%s", id, sid);
                json_array_append_new(out, json_string(name));
            }
        }
    }
}


void perm_decide(json_t *bundle, const char *form, json_t *roles, bool platform_admin, perm_decision *out)
{
    memset(out, 0, sizeof *out);
    out->modes = json_object();
    json_t *names = json_array();
    field_names(bundle_item(json_object_get(bundle, "forms"), form), names);
    bool admin = platform_admin;
    size_t i;
    json_t *r;
    json_array_foreach(roles, i, r) admin = admin || (json_is_string(r) && !strcmp(json_string_value(r), "admin"));
    if (admin) {
        out->create = true;
        json_t **scopes[] = {&out->read, &out->update, &out->remove};
        for (int k = 0; k < 3; k++)
            *scopes[k] = json_pack("[s]", "all");
        json_t *n;
        json_array_foreach(names, i, n) json_object_set_new(out->modes, json_string_value(n), json_string("write"));
        json_decref(names);
        return;
    }
    json_t *perms = json_object_get(bundle, "permissions");
    const char *where[] = {form, "*"};
    bool any = false;
    /* each field starts hidden; every role with an entry opens it to its mode */
    perm_mode modes[2048];
    size_t nn = json_array_size(names) < 2048 ? json_array_size(names) : 2048;
    for (size_t k = 0; k < nn; k++)
        modes[k] = FIELD_HIDDEN;
    json_array_foreach(roles, i, r)
    {
        const char *role = json_string_value(r);
        for (int w = 0; role && w < 2; w++) {
            json_t *entry = json_object_get(json_object_get(perms, where[w]), role);
            if (!json_is_object(entry))
                continue;
            any = true;
            out->create = out->create || json_is_true(json_object_get(entry, "create"));
            json_t **scopes[] = {&out->read, &out->update, &out->remove};
            for (int k = 0; k < 3; k++)
                widen(scopes[k], json_object_get(entry, ops[k]));
            json_t *fm = json_object_get(entry, "fields");
            for (size_t k = 0; k < nn; k++) {
                const char *name = json_string_value(json_array_get(names, k));
                perm_mode m = mode_of(json_string_value(json_object_get(fm, name)));
                if (m > modes[k])
                    modes[k] = m;
            }
        }
    }
    if (any)
        for (size_t k = 0; k < nn; k++)
            json_object_set_new(out->modes, json_string_value(json_array_get(names, k)), json_string(mode_name(modes[k])));
    json_decref(names);
}

void perm_free(perm_decision *d)
{
    json_decref(d->read);
    json_decref(d->update);
    json_decref(d->remove);
    json_decref(d->modes);
    memset(d, 0, sizeof *d);
}

perm_mode perm_field(const perm_decision *d, const char *field)
{
    const char *m = json_string_value(json_object_get(d->modes, field));
    return m ? mode_of(m) : FIELD_HIDDEN;
}

static json_t *scope_summary(json_t *scope)
{
    if (!scope)
        return json_false();
    if (perm_scope_all(scope))
        return json_string("all");
    json_t *kinds = json_array(), *s, *k;
    size_t i, j;
    json_array_foreach(scope, i, s)
    {
        const char *kind = json_is_string(s) ? json_string_value(s) : "filter";
        bool seen = false;
        json_array_foreach(kinds, j, k) seen = seen || !strcmp(json_string_value(k), kind);
        if (!seen)
            json_array_append_new(kinds, json_string(kind));
    }
    return kinds;
}

json_t *perm_summary(const perm_decision *d)
{
    return json_pack("{s:b, s:o, s:o, s:o}", "create", d->create, "read", scope_summary(d->read), "update",
                     scope_summary(d->update), "delete", scope_summary(d->remove));
}

/* Appends a warning at role's permission entry on form. */
static void warn(json_t *out, const char *form, const char *role, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void warn(json_t *out, const char *form, const char *role, const char *code, const char *fmt, ...)
{
    char path[256], message[512];
    snprintf(path, sizeof path, "/permissions/%s/%s", form, role);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    json_array_append_new(out, json_pack("{s:s, s:s, s:s}", "path", path, "code", code, "message", message));
}

/* Warns when role may write ref field name (of a form it may create or
 * update) but reads no record of the ref's form: it could never fill it. */
static void warn_unreadable_ref(json_t *bundle, json_t *role_list, const char *role, const char *form,
                                const perm_decision *d, json_t *field, const char *name, json_t *out)
{
    const char *target = json_string_value(json_object_get(field, "form"));
    if (!target || perm_field(d, name) != FIELD_WRITE)
        return;
    perm_decision t;
    perm_decide(bundle, target, role_list, false, &t);
    if (!t.read)
        warn(out, form, role, "unreadable_ref", "role \"%s\" may write %s.%s but reads no %s record, so it can never fill it",
             role, form, name, target);
    perm_free(&t);
}

/* Warns when role may create form but cannot write name, a required field
 * without a default (in a subform: when it may add rows at all). */
static void warn_unwritable_required(const char *role, const char *form, const perm_decision *d, json_t *field,
                                     const char *name, json_t *out)
{
    const char *type = json_string_value(json_object_get(field, "type"));
    if (!json_is_true(json_object_get(field, "required")) || json_object_get(field, "default") ||
        json_object_get(field, "formula") || (type && !strcmp(type, "autonumber")) || perm_field(d, name) == FIELD_WRITE)
        return;
    warn(out, form, role, "unwritable_required",
         "role \"%s\" may create %s but cannot write its required field %s, so it can never %s", role, form, name,
         strchr(name, '.') ? "add a row" : "create one");
}

json_t *perm_warnings(json_t *bundle)
{
    json_t *out = json_array();
    size_t i, j, k, m;
    json_t *r, *form, *f, *sf;
    json_array_foreach(json_object_get(json_object_get(bundle, "app"), "roles"), i, r)
    {
        const char *role = json_string_value(json_object_get(r, "id"));
        if (!role || !strcmp(role, "admin"))
            continue;
        json_t *role_list = json_pack("[s]", role);
        json_array_foreach(json_object_get(bundle, "forms"), j, form)
        {
            const char *fid = json_string_value(json_object_get(form, "id"));
            perm_decision d;
            perm_decide(bundle, fid, role_list, false, &d);
            json_array_foreach(d.create || d.update ? json_object_get(form, "fields") : NULL, k, f)
            {
                const char *type = json_string_value(json_object_get(f, "type")), *id = json_string_value(json_object_get(f, "id"));
                if (type && id && !strcmp(type, "ref"))
                    warn_unreadable_ref(bundle, role_list, role, fid, &d, f, id, out);
                if (id && d.create)
                    warn_unwritable_required(role, fid, &d, f, id, out);
                bool rows = d.create && id && perm_field(&d, id) == FIELD_WRITE;   /* it may add rows */
                json_array_foreach(type && id && !strcmp(type, "subform") ? json_object_get(f, "fields") : NULL, m, sf)
                {
                    const char *sid = json_string_value(json_object_get(sf, "id")),
                               *stype = json_string_value(json_object_get(sf, "type"));
                    char name[128];
                    snprintf(name, sizeof name, "%s.%s", id, sid ? sid : "");
                    if (sid && stype && !strcmp(stype, "ref"))
                        warn_unreadable_ref(bundle, role_list, role, fid, &d, sf, name, out);
                    if (sid && rows)
                        warn_unwritable_required(role, fid, &d, sf, name, out);
                }
            }
            perm_free(&d);
        }
        json_decref(role_list);
    }
    return out;
}
