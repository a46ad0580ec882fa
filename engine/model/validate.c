/* validate.c - whole-app validation (see validate.h).
 *
 * One pass per kind, in dependency order: app (roles), forms (fields, which
 * every other kind refers to), flows, rules, reports, dashboards,
 * permissions, webhooks, data. Lua expressions and scripts are compiled, never
 * run, in a bare Lua state; patterns are compiled with PCRE2. */
#include "model/validate.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "model/bundle.h"
#include "rule/sandbox.h"
#include "store/filter.h"

#define PATH_LEN 512

typedef struct vctx {
    json_t *errors;
    json_t *forms;     /* id -> form (borrowed) */
    json_t *roles;     /* app role ids (and the reserved ones) -> true */
    json_t *flows;     /* form id -> flow (borrowed) */
    json_t *reports;   /* id -> report (borrowed) */
    json_t *bundle;
    const char *form_id;   /* the form whose fields are being checked */
    lua_State *L;
} vctx;

static const char *const system_fields[] = {"id", "_version", "_state", "_owner", "_created_at",
                                            "_created_by", "_updated_at", "_updated_by", NULL};

/* ---- reporting and paths ---- */

static void problem(vctx *v, const char *path, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void problem(vctx *v, const char *path, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(v->errors, json_pack("{s:s, s:s, s:s}", "path", path, "code", code, "message", msg));
}

/* base + "/" + key, with key escaped as RFC 6901 says (~ -> ~0, / -> ~1). */
static void ptr_key(char out[PATH_LEN], const char *base, const char *key)
{
    size_t o = (size_t)snprintf(out, PATH_LEN, "%s/", base);
    for (const char *k = key; *k && o + 3 < PATH_LEN; k++) {
        if (*k == '~' || *k == '/') {
            out[o++] = '~';
            out[o++] = *k == '~' ? '0' : '1';
        } else {
            out[o++] = *k;
        }
    }
    out[o < PATH_LEN ? o : PATH_LEN - 1] = '\0';
}

static void ptr_index(char out[PATH_LEN], const char *base, size_t i)
{
    snprintf(out, PATH_LEN, "%s/%zu", base, i);
}

/* ---- small checks ---- */

/* The string value of x, or "" (never NULL). */
bool model_is_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 48 || !(s[0] >= 'a' && s[0] <= 'z'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

/* Reports keys not in allowed (x_ extensions excepted) and required keys that
 * are missing. False (reported) when obj is not an object. */
static bool check_object(vctx *v, json_t *obj, const char *path, const char *const *allowed,
                         const char *const *required)
{
    if (!json_is_object(obj)) {
        problem(v, path, "type", "must be an object");
        return false;
    }
    const char *key;
    json_t *val;
    char p[PATH_LEN];
    json_object_foreach(obj, key, val)
    {
        if (strncmp(key, "x_", 2) != 0 && !in_list(key, allowed)) {
            ptr_key(p, path, key);
            problem(v, p, "unknown_key", "unknown key \"%.64s\"", key);
        }
    }
    for (; required && *required; required++) {
        if (!json_object_get(obj, *required)) {
            ptr_key(p, path, *required);
            problem(v, p, "required", "%s is required", *required);
        }
    }
    return true;
}

/* The "id" of obj, checked; NULL (reported) when missing or bad. seen, when
 * given, collects ids of this kind and reports a duplicate. */
static const char *check_id(vctx *v, json_t *obj, const char *path, json_t *seen)
{
    json_t *id = json_object_get(obj, "id");
    char p[PATH_LEN];
    ptr_key(p, path, "id");
    if (!id)
        return NULL;   /* "required" is reported by check_object */
    const char *s = json_string_value(id);
    if (!s) {
        problem(v, p, "type", "must be a string");
        return NULL;
    }
    if (!model_is_id(s)) {
        problem(v, p, "bad_id", "must match ^[a-z][a-z0-9_]{0,47}$");
        return NULL;
    }
    if (seen) {
        if (json_object_get(seen, s)) {
            problem(v, p, "duplicate_id", "\"%s\" is used twice", s);
            return NULL;
        }
        json_object_set_new(seen, s, json_true());
    }
    return s;
}

static void check_label(vctx *v, json_t *label, const char *path)
{
    if (!label || json_is_string(label))
        return;
    if (!json_is_object(label) || json_object_size(label) == 0) {
        problem(v, path, "bad_label", "a label is a string or a map from locale to string");
        return;
    }
    const char *loc;
    json_t *s;
    char p[PATH_LEN];
    json_object_foreach(label, loc, s)
    {
        ptr_key(p, path, loc);
        if (!json_is_string(s))
            problem(v, p, "bad_label", "must be a string");
    }
}

static bool want(vctx *v, json_t *val, const char *path, bool ok, const char *what)
{
    if (val && !ok)
        problem(v, path, "type", "must be %s", what);
    return val && ok;
}

static void check_bool(vctx *v, json_t *obj, const char *base, const char *key)
{
    json_t *val = json_object_get(obj, key);
    char p[PATH_LEN];
    ptr_key(p, base, key);
    want(v, val, p, json_is_boolean(val), "true or false");
}

/* A non-negative integer property; returns it, or -1 when absent or bad. */
static long long check_count(vctx *v, json_t *obj, const char *base, const char *key)
{
    json_t *val = json_object_get(obj, key);
    char p[PATH_LEN];
    ptr_key(p, base, key);
    if (!want(v, val, p, json_is_integer(val) && json_integer_value(val) >= 0, "a whole number, 0 or more"))
        return -1;
    return json_integer_value(val);
}

static bool is_duration(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 2 || !strchr("mhdw", s[n - 1]))
        return false;
    for (size_t i = 0; i < n - 1; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static void check_duration(vctx *v, json_t *val, const char *path)
{
    if (val && !is_duration(json_string_value(val)))
        problem(v, path, "bad_duration", "a duration is <n>m, <n>h, <n>d or <n>w");
}

static bool is_date(const char *s)
{
    int y, m, d;
    char tail;
    return s && strlen(s) == 10 && sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &tail) == 3 && m >= 1 && m <= 12 &&
           d >= 1 && d <= 31 && s[4] == '-' && s[7] == '-';
}

/* RFC 3339: 2026-11-22T09:30:00Z, with optional fraction and an offset. */
static bool is_datetime(const char *s)
{
    if (!s || strlen(s) < 20)
        return false;
    char date[11];
    memcpy(date, s, 10);
    date[10] = '\0';
    int h, mi, sec;
    const char *zone = s + 19;
    if (*zone == '.')
        while (*++zone >= '0' && *zone <= '9')
            ;
    return is_date(date) && (s[10] == 'T' || s[10] == 't') && sscanf(s + 11, "%2d:%2d:%2d", &h, &mi, &sec) == 3 &&
           h < 24 && mi < 60 && sec < 61 &&
           (!strcmp(zone, "Z") || !strcmp(zone, "z") ||
            ((zone[0] == '+' || zone[0] == '-') && strlen(zone) == 6 && zone[3] == ':'));
}

/* A decimal as JSON: a number, or a string of digits with an optional sign and point. */
static bool is_decimal(json_t *val)
{
    if (json_is_number(val))
        return true;
    const char *s = json_string_value(val);
    if (!s || !*s)
        return false;
    if (*s == '-' || *s == '+')
        s++;
    bool digits = false, point = false;
    for (; *s; s++) {
        if (*s >= '0' && *s <= '9')
            digits = true;
        else if (*s == '.' && !point)
            point = true;
        else
            return false;
    }
    return digits;
}

/* ---- Lua ---- */

static void check_lua(vctx *v, const char *code, size_t len, const char *path, bool expression)
{
    if (sandbox_load(v->L, code, len, expression) != LUA_OK)
        problem(v, path, expression ? "bad_expression" : "bad_script", "%s", lua_tostring(v->L, -1));
    lua_settop(v->L, 0);
}

static void check_expr(vctx *v, json_t *val, const char *path)
{
    if (!val)
        return;
    if (!json_is_string(val)) {
        problem(v, path, "type", "must be a Lua expression (a string)");
        return;
    }
    check_lua(v, json_string_value(val), json_string_length(val), path, true);
}

/* ---- fields and paths ---- */

static const char *type_of(json_t *field)
{
    const char *t = json_string_value(json_object_get(field, "type"));
    return t ? t : "";
}

/* Resolves a dotted path ("customer.level", "parts.part", "_owner") from a
 * form's fields. Returns the final field (NULL for a system field) and sets
 * *ok; a path may go through ref fields into their forms and into a subform. */
static json_t *resolve_path(vctx *v, json_t *fields, const char *path, bool *ok)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur_fields = fields, *field = NULL;
    *ok = false;
    for (char *seg = buf, *next; seg; seg = next) {
        next = strchr(seg, '.');
        if (next)
            *next++ = '\0';
        if (in_list(seg, system_fields)) {
            if (next)
                return NULL;   /* system fields lead nowhere */
            *ok = true;
            return NULL;
        }
        field = cur_fields ? bundle_item(cur_fields, seg) : NULL;
        if (!field)
            return NULL;
        if (!next)
            break;
        const char *t = type_of(field);
        if (strcmp(t, "ref") == 0) {
            json_t *target = json_object_get(v->forms, jstr(json_object_get(field, "form")));
            cur_fields = json_object_get(target, "fields");
        } else if (strcmp(t, "subform") == 0) {
            cur_fields = json_object_get(field, "fields");
        } else {
            return NULL;
        }
    }
    *ok = true;
    return field;
}

/* Checks that every element of list (an array of field ids) is a field of
 * fields. sub: also accept "subform.field" names. */
static void check_field_list(vctx *v, json_t *list, const char *path, json_t *fields, bool allow_system)
{
    if (!list)
        return;
    if (!json_is_array(list)) {
        problem(v, path, "type", "must be an array of field ids");
        return;
    }
    size_t i;
    json_t *f;
    char p[PATH_LEN];
    json_array_foreach(list, i, f)
    {
        ptr_index(p, path, i);
        const char *s = json_string_value(f);
        if (!s)
            problem(v, p, "type", "must be a field id");
        else if (!(allow_system && in_list(s, system_fields)) && !bundle_item(fields, s))
            problem(v, p, "unknown_field", "no field \"%.64s\" in this form", s);
    }
}

/* The form an item names in its "form" key: NULL (with unknown_form
 * reported) when it names none that exists; NULL silently when it has no
 * "form" ("required" is reported by check_object). */
static json_t *item_form(vctx *v, json_t *item, const char *path)
{
    json_t *f = json_object_get(item, "form");
    if (!f)
        return NULL;
    json_t *form = json_is_string(f) ? json_object_get(v->forms, json_string_value(f)) : NULL;
    if (!form) {
        char p[PATH_LEN];
        ptr_key(p, path, "form");
        problem(v, p, "unknown_form", "no form \"%.64s\"", jstr(f));
    }
    return form;
}

/* A list of app role ids. */
static void check_role_list(vctx *v, json_t *list, const char *path)
{
    if (!list)
        return;
    if (!json_is_array(list)) {
        problem(v, path, "type", "must be an array of role ids");
        return;
    }
    size_t i;
    json_t *r;
    char p[PATH_LEN];
    json_array_foreach(list, i, r)
    {
        ptr_index(p, path, i);
        if (!json_is_string(r) || !json_object_get(v->roles, json_string_value(r)))
            problem(v, p, "unknown_role", "no role \"%.64s\" in this app", jstr(r));
    }
}

/* ---- filters ---- */

static const char *const filter_ops[] = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
                                         "$between", "$contains", "$startswith", "$null", "$has",
                                         "$hasany", NULL};
static const char *const value_ops[] = {"$now", "$today", "$me", "$param", "$field", NULL};

/* A value in a filter: a literal or one of the value producers. */
static void check_filter_value(vctx *v, json_t *val, const char *path, json_t *params, json_t *fields)
{
    if (!json_is_object(val) || json_object_size(val) != 1)
        return;
    const char *k = json_object_iter_key(json_object_iter(val));
    json_t *x = json_object_iter_value(json_object_iter(val));
    char p[PATH_LEN];
    ptr_key(p, path, k);
    if (strcmp(k, "$now") == 0 || strcmp(k, "$today") == 0) {
        const char *s = json_string_value(x);
        if (!s || ((*s == '+' || *s == '-') ? !is_duration(s + 1) : (*s && !is_duration(s))))
            problem(v, p, "bad_filter", "must be \"\" or ±<n>m|h|d|w");
    } else if (strcmp(k, "$param") == 0) {
        const char *id = json_string_value(x);
        bool found = false;
        size_t i;
        json_t *prm;
        json_array_foreach(params, i, prm) found =
            found || (id && json_is_string(json_object_get(prm, "id")) &&
                      strcmp(json_string_value(json_object_get(prm, "id")), id) == 0);
        if (!found)
            problem(v, p, "bad_filter", "no parameter \"%.64s\"", id ? id : "");
    } else if (strcmp(k, "$field") == 0) {
        bool ok = false;
        if (json_is_string(x))
            resolve_path(v, fields, json_string_value(x), &ok);
        if (!ok)
            problem(v, p, "unknown_field", "no such field");
    }
}

/* A filter over the form whose fields are given (see definitions: Filters). */
static void check_filter(vctx *v, json_t *flt, const char *path, json_t *fields, json_t *params, int depth)
{
    if (!json_is_object(flt)) {
        problem(v, path, "bad_filter", "a filter is an object");
        return;
    }
    if (depth > 8) {
        problem(v, path, "bad_filter", "nested too deeply");
        return;
    }
    const char *key;
    json_t *val;
    char p[PATH_LEN], q[PATH_LEN];
    json_object_foreach(flt, key, val)
    {
        ptr_key(p, path, key);
        if (strcmp(key, "$and") == 0 || strcmp(key, "$or") == 0) {
            if (!json_is_array(val)) {
                problem(v, p, "bad_filter", "must be an array of filters");
                continue;
            }
            size_t i;
            json_t *sub;
            json_array_foreach(val, i, sub)
            {
                ptr_index(q, p, i);
                check_filter(v, sub, q, fields, params, depth + 1);
            }
            continue;
        }
        if (strcmp(key, "$not") == 0) {
            check_filter(v, val, p, fields, params, depth + 1);
            continue;
        }
        if (key[0] == '$') {
            problem(v, p, "bad_filter", "unknown combinator %.32s", key);
            continue;
        }
        bool ok;
        resolve_path(v, fields, key, &ok);
        if (!ok) {
            problem(v, p, "unknown_field", "no field \"%.64s\"", key);
            continue;
        }
        if (!json_is_object(val)) {
            continue;   /* a literal: equality */
        }
        const char *op;
        json_t *x;
        json_object_foreach(val, op, x)
        {
            ptr_key(q, p, op);
            if (in_list(op, value_ops)) {
                check_filter_value(v, val, p, params, fields);
                break;
            }
            if (!in_list(op, filter_ops)) {
                problem(v, q, "bad_filter", "unknown operator %.32s", op);
                continue;
            }
            if ((!strcmp(op, "$in") || !strcmp(op, "$nin") || !strcmp(op, "$hasany")) && !json_is_array(x))
                problem(v, q, "bad_filter", "must be an array");
            else if (!strcmp(op, "$between") && !(json_is_array(x) && json_array_size(x) == 2))
                problem(v, q, "bad_filter", "must be an array of two values");
            else if (!strcmp(op, "$null") && !json_is_boolean(x))
                problem(v, q, "bad_filter", "must be true or false");
            else
                check_filter_value(v, x, q, params, fields);
        }
    }
}

/* A filter of the bundle over form: its shape (every problem at once), then,
 * when the shape is sound, the compiler that serves it at run time, so
 * publishing accepts exactly the filters that run (a select value that is
 * not an option, $me on a text field, equality on a multiselect). source:
 * the form {"$field": f} names fields of (ref filters), or NULL. */
static void check_form_filter(vctx *v, json_t *flt, const char *path, const char *form, const char *source,
                              json_t *params)
{
    size_t before = json_array_size(v->errors);
    check_filter(v, flt, path, json_object_get(json_object_get(v->forms, form), "fields"), params, 0);
    if (json_array_size(v->errors) != before || !json_object_get(v->forms, form))
        return;
    json_t *ids = json_object();
    size_t i;
    json_t *x;
    json_array_foreach(params, i, x) json_object_set_new(ids, jstr(json_object_get(x, "id")), json_true());
    filter_ctx c = {.bundle = v->bundle, .schema = "check", .system = true, .timezone = "UTC", .params = ids,
                    .check = true, .field_form = source};
    buf sql = {0};
    json_t *args = json_array();
    filter_err e;
    if (!filter_sql(&c, form, "t", flt, &sql, args, &e)) {
        char p[PATH_LEN];
        snprintf(p, sizeof p, "%s%s", path, e.path);
        problem(v, p, loom_code_name(e.code), "%s", e.message);
    }
    buf_free(&sql);
    json_decref(args);
    json_decref(ids);
}

/* ---- forms ---- */

static const char *const field_common[] = {"id", "type", "label", "help", "required", "default", "readonly",
                                           "unique", "index", "formula", "visible_when", NULL};

typedef struct ftype {
    const char *name;
    const char *const props[4];
} ftype;

static const ftype ftypes[] = {
    {"text", {"min_length", "max_length", "pattern"}},
    {"longtext", {"max_length"}},
    {"integer", {"min", "max"}},
    {"decimal", {"precision", "scale", "min", "max"}},
    {"money", {"min", "max", "currency"}},
    {"boolean", {NULL}},
    {"date", {"min", "max"}},
    {"datetime", {"min", "max"}},
    {"select", {"options"}},
    {"multiselect", {"options", "min_items", "max_items"}},
    {"email", {"max_length"}},
    {"phone", {"max_length"}},
    {"url", {"max_length"}},
    {"ref", {"form", "on_delete", "filter"}},
    {"user", {"roles"}},
    {"subform", {"fields", "min_rows", "max_rows"}},
    {"autonumber", {"pattern"}},
    {"file", {"multiple", "max_size", "content_types"}},
};
#define NFTYPES (sizeof ftypes / sizeof ftypes[0])

static const ftype *ftype_find(const char *name)
{
    for (size_t i = 0; i < NFTYPES; i++)
        if (strcmp(ftypes[i].name, name) == 0)
            return &ftypes[i];
    return NULL;
}

static void check_pattern(vctx *v, json_t *pat, const char *path)
{
    const char *s = json_string_value(pat);
    if (!s) {
        problem(v, path, "type", "must be a regular expression (a string)");
        return;
    }
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)s, json_string_length(pat), PCRE2_UTF, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        problem(v, path, "bad_pattern", "at %zu: %s", (size_t)off, (char *)msg);
    }
    pcre2_code_free(re);
}

/* The options of a select/multiselect; their values go into values. */
static void check_options(vctx *v, json_t *field, const char *path, json_t *values)
{
    json_t *opts = json_object_get(field, "options");
    char p[PATH_LEN], q[PATH_LEN];
    ptr_key(p, path, "options");
    if (!json_is_array(opts) || json_array_size(opts) == 0) {
        problem(v, p, opts ? "type" : "required", "options must be a non-empty array");
        return;
    }
    if (json_array_size(opts) > MODEL_MAX_ITEMS) {
        problem(v, p, "too_many", "at most %d options", MODEL_MAX_ITEMS);
        return;
    }
    static const char *const keys[] = {"value", "label", "color", NULL};
    static const char *const req[] = {"value", NULL};
    size_t i;
    json_t *o;
    json_array_foreach(opts, i, o)
    {
        ptr_index(q, p, i);
        if (!check_object(v, o, q, keys, req))
            continue;
        const char *val = json_string_value(json_object_get(o, "value"));
        char r[PATH_LEN];
        ptr_key(r, q, "value");
        if (!val)
            problem(v, r, "type", "an option value is a string");
        else if (json_object_get(values, val))
            problem(v, r, "duplicate_id", "option \"%.64s\" is given twice", val);
        else
            json_object_set_new(values, val, json_true());
        ptr_key(r, q, "label");
        check_label(v, json_object_get(o, "label"), r);
    }
}

static void check_min_max(vctx *v, json_t *field, const char *path, bool (*ok)(json_t *), const char *what)
{
    const char *keys[] = {"min", "max"};
    char p[PATH_LEN];
    for (int i = 0; i < 2; i++) {
        json_t *val = json_object_get(field, keys[i]);
        ptr_key(p, path, keys[i]);
        if (val && !ok(val))
            problem(v, p, "type", "must be %s", what);
    }
}

static bool ok_integer(json_t *x) { return json_is_integer(x); }
static bool ok_decimal(json_t *x) { return is_decimal(x); }
static bool ok_date(json_t *x) { return is_date(json_string_value(x)); }
static bool ok_datetime(json_t *x) { return is_datetime(json_string_value(x)); }

/* Whether d is a value field (of type t; options: its option values as
 * keys) takes as a default or a set: 1 yes, 0 no, -1 the type takes none.
 * "today", "now" and "me" stand for the values they resolve to. */
static int value_fits(json_t *field, const char *t, json_t *options, json_t *d)
{
    const char *s = json_string_value(d);
    bool ok;
    if (!strcmp(t, "text") || !strcmp(t, "longtext") || !strcmp(t, "email") || !strcmp(t, "phone") ||
        !strcmp(t, "url")) {
        json_t *ml = json_object_get(field, "max_length");
        ok = s && (!json_is_integer(ml) || (json_int_t)json_string_length(d) <= json_integer_value(ml));
    } else if (!strcmp(t, "integer")) {
        json_t *mn = json_object_get(field, "min"), *mx = json_object_get(field, "max");
        ok = json_is_integer(d) && (!json_is_integer(mn) || json_integer_value(d) >= json_integer_value(mn)) &&
             (!json_is_integer(mx) || json_integer_value(d) <= json_integer_value(mx));
    } else if (!strcmp(t, "decimal") || !strcmp(t, "money")) {
        ok = is_decimal(d);
    } else if (!strcmp(t, "boolean")) {
        ok = json_is_boolean(d);
    } else if (!strcmp(t, "date")) {
        ok = s && (!strcmp(s, "today") || is_date(s));
    } else if (!strcmp(t, "datetime")) {
        ok = s && (!strcmp(s, "now") || is_datetime(s));
    } else if (!strcmp(t, "select")) {
        ok = s && json_object_get(options, s);
    } else if (!strcmp(t, "multiselect")) {
        ok = json_is_array(d);
        size_t i;
        json_t *x;
        json_array_foreach(d, i, x) ok = ok && json_is_string(x) && json_object_get(options, json_string_value(x));
    } else if (!strcmp(t, "user")) {
        ok = (s && !strcmp(s, "me")) || (json_is_integer(d) && json_integer_value(d) > 0);
    } else if (!strcmp(t, "ref")) {
        ok = json_is_integer(d) && json_integer_value(d) > 0;
    } else {
        return -1;
    }
    return ok;
}

/* Checks the default against the field's type. */
static void check_default(vctx *v, json_t *field, const char *t, json_t *options, const char *path)
{
    json_t *d = json_object_get(field, "default");
    if (!d || json_is_null(d))
        return;
    char p[PATH_LEN];
    ptr_key(p, path, "default");
    int fits = value_fits(field, t, options, d);
    if (fits < 0)
        problem(v, p, "invalid_default", "a %s field takes no default", t);
    else if (!fits)
        problem(v, p, "invalid_default", "not a valid value for a %s field", t);
}

/* A set of a transition or a breach: fields of the form, values they take
 * (null empties one). */
static void check_set(vctx *v, json_t *set, const char *path, json_t *fields)
{
    if (!json_is_object(set)) {
        problem(v, path, "type", "must be an object of field -> value");
        return;
    }
    const char *fk;
    json_t *fv;
    json_object_foreach(set, fk, fv)
    {
        char p[PATH_LEN];
        ptr_key(p, path, fk);
        json_t *f = bundle_item(fields, fk);
        if (!f) {
            problem(v, p, "unknown_field", "no field \"%.64s\" in this form", fk);
            continue;
        }
        const char *t = type_of(f);
        json_t *options = json_object();
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(f, "options"), i, o)
            json_object_set_new(options, jstr(json_object_get(o, "value")), json_true());
        int fits = json_is_null(fv) ? 1 : value_fits(f, t, options, fv);
        json_decref(options);
        if (fits < 0)
            problem(v, p, "bad_value", "a %s field cannot be set", t);
        else if (!fits)
            problem(v, p, "bad_value", "not a valid value for a %s field", t);
    }
}

/* Properties particular to the field's type. */
static void check_field_type(vctx *v, json_t *field, const char *t, const char *path, bool in_subform)
{
    char p[PATH_LEN];
    json_t *options = json_object();
    if (!strcmp(t, "text") || !strcmp(t, "longtext") || !strcmp(t, "email") || !strcmp(t, "phone") ||
        !strcmp(t, "url")) {
        long long mn = check_count(v, field, path, "min_length");
        long long mx = check_count(v, field, path, "max_length");
        if (mn >= 0 && mx >= 0 && mn > mx) {
            ptr_key(p, path, "min_length");
            problem(v, p, "bad_value", "min_length is larger than max_length");
        }
        if (json_object_get(field, "pattern")) {
            ptr_key(p, path, "pattern");
            check_pattern(v, json_object_get(field, "pattern"), p);
        }
    } else if (!strcmp(t, "integer")) {
        check_min_max(v, field, path, ok_integer, "a whole number");
    } else if (!strcmp(t, "decimal") || !strcmp(t, "money")) {
        check_min_max(v, field, path, ok_decimal, "a decimal");
        long long prec = check_count(v, field, path, "precision");
        long long scale = check_count(v, field, path, "scale");
        ptr_key(p, path, "precision");
        if (json_object_get(field, "precision") && (prec < 1 || prec > 38))
            problem(v, p, "bad_value", "precision is 1 to 38");
        ptr_key(p, path, "scale");
        if (scale >= 0 && scale > (prec > 0 ? prec : 18))
            problem(v, p, "bad_value", "scale cannot exceed precision");
        json_t *cur = json_object_get(field, "currency");
        ptr_key(p, path, "currency");
        const char *c = json_string_value(cur);
        if (cur && !(c && strlen(c) == 3 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' &&
                     c[2] >= 'A' && c[2] <= 'Z'))
            problem(v, p, "bad_value", "a currency is an ISO 4217 code such as CNY");
    } else if (!strcmp(t, "date")) {
        check_min_max(v, field, path, ok_date, "a date YYYY-MM-DD");
    } else if (!strcmp(t, "datetime")) {
        check_min_max(v, field, path, ok_datetime, "an RFC 3339 date-time");
    } else if (!strcmp(t, "select") || !strcmp(t, "multiselect")) {
        check_options(v, field, path, options);
        long long mn = check_count(v, field, path, "min_items");
        long long mx = check_count(v, field, path, "max_items");
        if (mn >= 0 && mx >= 0 && mn > mx) {
            ptr_key(p, path, "min_items");
            problem(v, p, "bad_value", "min_items is larger than max_items");
        }
    } else if (!strcmp(t, "ref")) {
        json_t *target = json_object_get(field, "form");
        ptr_key(p, path, "form");
        if (!target)
            problem(v, p, "required", "a ref field names its form");
        else if (!json_is_string(target) || !json_object_get(v->forms, json_string_value(target)))
            problem(v, p, "unknown_form", "no form \"%.64s\"", jstr(target));
        json_t *od = json_object_get(field, "on_delete");
        ptr_key(p, path, "on_delete");
        const char *ods = json_string_value(od);
        static const char *const modes[] = {"restrict", "set_null", "cascade", NULL};
        if (od && !(ods && in_list(ods, modes)))
            problem(v, p, "bad_value", "on_delete is restrict, set_null or cascade");
        else if (ods && !strcmp(ods, "set_null") && json_is_true(json_object_get(field, "required")))
            problem(v, p, "bad_value", "a required ref cannot be set to null when its target is deleted");
        json_t *flt = json_object_get(field, "filter");
        if (flt) {
            ptr_key(p, path, "filter");
            if (in_subform)   /* {"$field": f} would name a field of the row */
                check_filter(v, flt, p, json_object_get(json_object_get(v->forms, jstr(target)), "fields"), NULL, 0);
            else
                check_form_filter(v, flt, p, jstr(target), v->form_id, NULL);
        }
    } else if (!strcmp(t, "user")) {
        ptr_key(p, path, "roles");
        check_role_list(v, json_object_get(field, "roles"), p);
    } else if (!strcmp(t, "subform")) {
        if (in_subform) {
            problem(v, path, "bad_value", "a subform cannot hold another subform");
        }
        check_count(v, field, path, "min_rows");
        check_count(v, field, path, "max_rows");
    } else if (!strcmp(t, "autonumber")) {
        json_t *pat = json_object_get(field, "pattern");
        ptr_key(p, path, "pattern");
        const char *s = json_string_value(pat);
        if (pat && !(s && strstr(s, "{seq")))
            problem(v, p, "bad_value", "an autonumber pattern needs a {seq:N} part");
    } else if (!strcmp(t, "file")) {
        check_bool(v, field, path, "multiple");
        check_count(v, field, path, "max_size");
        json_t *ct = json_object_get(field, "content_types");
        ptr_key(p, path, "content_types");
        if (ct && !json_is_array(ct))
            problem(v, p, "type", "must be an array of media types");
    }
    check_default(v, field, t, options, path);
    json_decref(options);
    if (json_is_true(json_object_get(field, "unique")) &&
        (!strcmp(t, "subform") || !strcmp(t, "multiselect") || !strcmp(t, "file"))) {
        ptr_key(p, path, "unique");
        problem(v, p, "bad_value", "a %s field cannot be unique", t);
    }
}

static void check_fields(vctx *v, json_t *fields, const char *path, bool in_subform);

static void check_field(vctx *v, json_t *field, const char *path, json_t *seen, bool in_subform)
{
    json_t *tv = json_object_get(field, "type");
    const char *t = json_string_value(tv);
    const ftype *ft = t ? ftype_find(t) : NULL;
    /* allowed keys: the common ones and the type's own */
    const char *allowed[20];
    size_t n = 0;
    for (const char *const *k = field_common; *k; k++)
        allowed[n++] = *k;
    for (int i = 0; ft && i < 4 && ft->props[i]; i++)
        allowed[n++] = ft->props[i];
    allowed[n] = NULL;
    static const char *const req[] = {"id", "type", NULL};
    if (!check_object(v, field, path, ft ? allowed : field_common, req))
        return;
    const char *id = check_id(v, field, path, seen);
    char p[PATH_LEN];
    if (id && in_list(id, system_fields)) {
        ptr_key(p, path, "id");
        problem(v, p, "bad_id", "\"%s\" is a system field", id);
    }
    ptr_key(p, path, "type");
    if (tv && !ft) {
        problem(v, p, "unknown_type", "no field type \"%.32s\"", t ? t : "");
        return;
    }
    if (!ft)
        return;
    ptr_key(p, path, "label");
    check_label(v, json_object_get(field, "label"), p);
    ptr_key(p, path, "help");
    check_label(v, json_object_get(field, "help"), p);
    json_t *req_v = json_object_get(field, "required");
    ptr_key(p, path, "required");
    if (json_is_string(req_v))
        check_expr(v, req_v, p);
    else
        want(v, req_v, p, json_is_boolean(req_v), "true, false or a Lua expression");
    check_bool(v, field, path, "readonly");
    check_bool(v, field, path, "unique");
    check_bool(v, field, path, "index");
    ptr_key(p, path, "formula");
    check_expr(v, json_object_get(field, "formula"), p);
    ptr_key(p, path, "visible_when");
    check_expr(v, json_object_get(field, "visible_when"), p);
    check_field_type(v, field, t, path, in_subform);
    if (!strcmp(t, "subform")) {
        json_t *sub = json_object_get(field, "fields");
        ptr_key(p, path, "fields");
        if (!sub)
            problem(v, p, "required", "a subform has fields");
        else
            check_fields(v, sub, p, true);
    }
}

static void check_fields(vctx *v, json_t *fields, const char *path, bool in_subform)
{
    if (!json_is_array(fields)) {
        problem(v, path, "type", "must be an array of fields");
        return;
    }
    if (json_array_size(fields) > MODEL_MAX_FIELDS) {
        problem(v, path, "too_many", "at most %d fields", MODEL_MAX_FIELDS);
        return;
    }
    json_t *seen = json_object();
    size_t i;
    json_t *f;
    char p[PATH_LEN];
    json_array_foreach(fields, i, f)
    {
        ptr_index(p, path, i);
        check_field(v, f, p, seen, in_subform);
    }
    json_decref(seen);
}

/* DFS over formula dependencies; state: 0 new, 1 on the stack, 2 done. */
static bool formula_cycle(json_t *fields, const char *id, json_t *state)
{
    json_int_t st = json_integer_value(json_object_get(state, id));
    if (st == 1)
        return true;
    if (st == 2)
        return false;
    json_object_set_new(state, id, json_integer(1));
    json_t *f = bundle_item(fields, id);
    const char *formula = json_string_value(json_object_get(f, "formula"));
    bool cycle = false;
    if (formula) {
        json_t *names = sandbox_names(formula, strlen(formula));
        const char *n;
        json_t *x;
        json_object_foreach(names, n, x)
        {
            json_t *dep = bundle_item(fields, n);
            if (dep && json_object_get(dep, "formula") && formula_cycle(fields, n, state)) {
                cycle = true;
                break;
            }
        }
        json_decref(names);
    }
    json_object_set_new(state, id, json_integer(2));
    return cycle;
}

static void check_form(vctx *v, json_t *form, const char *path)
{
    static const char *const keys[] = {"id", "label", "title", "fields", "unique", "indexes", "checks", "layout",
                                       NULL};
    static const char *const req[] = {"id", "fields", NULL};
    if (!check_object(v, form, path, keys, req))
        return;
    char p[PATH_LEN], q[PATH_LEN];
    ptr_key(p, path, "label");
    check_label(v, json_object_get(form, "label"), p);
    json_t *fields = json_object_get(form, "fields");
    ptr_key(p, path, "fields");
    if (!fields)
        return;
    v->form_id = jstr(json_object_get(form, "id"));
    check_fields(v, fields, p, false);
    if (!json_is_array(fields) || json_array_size(fields) > MODEL_MAX_FIELDS)
        return;

    json_t *title = json_object_get(form, "title");
    ptr_key(p, path, "title");
    if (title && (!json_is_string(title) || !bundle_item(fields, json_string_value(title))))
        problem(v, p, "unknown_field", "title names a field of this form");

    const char *lists[] = {"unique", "indexes"};
    for (int k = 0; k < 2; k++) {
        json_t *groups = json_object_get(form, lists[k]);
        ptr_key(p, path, lists[k]);
        if (!groups)
            continue;
        if (!json_is_array(groups)) {
            problem(v, p, "type", "must be an array of arrays of field ids");
            continue;
        }
        size_t i;
        json_t *g;
        json_array_foreach(groups, i, g)
        {
            ptr_index(q, p, i);
            if (!json_is_array(g) || json_array_size(g) == 0)
                problem(v, q, "type", "must be a non-empty array of field ids");
            else
                check_field_list(v, g, q, fields, true);
        }
    }

    json_t *checks = json_object_get(form, "checks");
    ptr_key(p, path, "checks");
    if (checks && !json_is_array(checks)) {
        problem(v, p, "type", "must be an array");
    } else {
        static const char *const ckeys[] = {"expr", "message", NULL};
        static const char *const creq[] = {"expr", NULL};
        size_t i;
        json_t *c;
        json_array_foreach(checks, i, c)
        {
            ptr_index(q, p, i);
            if (!check_object(v, c, q, ckeys, creq))
                continue;
            char r[PATH_LEN];
            ptr_key(r, q, "expr");
            check_expr(v, json_object_get(c, "expr"), r);
            ptr_key(r, q, "message");
            check_label(v, json_object_get(c, "message"), r);
        }
    }

    json_t *layout = json_object_get(form, "layout");
    ptr_key(p, path, "layout");
    if (layout && !json_is_array(layout)) {
        problem(v, p, "type", "must be an array of sections");
    } else {
        static const char *const lkeys[] = {"section", "columns", "fields", NULL};
        size_t i;
        json_t *sec;
        json_array_foreach(layout, i, sec)
        {
            ptr_index(q, p, i);
            if (!check_object(v, sec, q, lkeys, NULL))
                continue;
            char r[PATH_LEN];
            ptr_key(r, q, "section");
            check_label(v, json_object_get(sec, "section"), r);
            json_t *cols = json_object_get(sec, "columns");
            ptr_key(r, q, "columns");
            want(v, cols, r, json_is_integer(cols) && json_integer_value(cols) >= 1 && json_integer_value(cols) <= 4,
                 "1 to 4");
            ptr_key(r, q, "fields");
            check_field_list(v, json_object_get(sec, "fields"), r, fields, false);
        }
    }

    /* formula cycles */
    json_t *state = json_object();
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *id = json_string_value(json_object_get(f, "id"));
        if (id && json_object_get(f, "formula") && !json_object_get(state, id) && formula_cycle(fields, id, state)) {
            char r[PATH_LEN];
            snprintf(r, sizeof r, "%s/fields/%zu/formula", path, i);
            problem(v, r, "formula_cycle", "formula of \"%s\" depends on itself", id);
        }
    }
    json_decref(state);
}

/* ---- flows ---- */

/* An assignee form: {"role"}, {"field"}, {"manager_of"}, {"users"}, {"user"}. */
static void check_assignee(vctx *v, json_t *a, const char *path, json_t *fields)
{
    static const char *const keys[] = {"role", "field", "manager_of", "users", "user", NULL};
    if (!check_object(v, a, path, keys, NULL))
        return;
    if (json_object_size(a) != 1) {
        problem(v, path, "bad_value", "an assignee is one of role, field, manager_of, users, user");
        return;
    }
    char p[PATH_LEN];
    json_t *x;
    if ((x = json_object_get(a, "role"))) {
        ptr_key(p, path, "role");
        if (!json_is_string(x) || !json_object_get(v->roles, json_string_value(x)))
            problem(v, p, "unknown_role", "no role \"%.64s\" in this app", jstr(x));
    }
    const char *fk[] = {"field", "manager_of"};
    for (int k = 0; k < 2; k++) {
        if (!(x = json_object_get(a, fk[k])))
            continue;
        ptr_key(p, path, fk[k]);
        const char *fid = json_string_value(x);
        json_t *f = fid ? bundle_item(fields, fid) : NULL;
        bool owner = fid && !strcmp(fid, "_owner");
        if (!owner && !(f && !strcmp(type_of(f), "user")))
            problem(v, p, "unknown_field", "must name a user field of the form");
    }
    if ((x = json_object_get(a, "users"))) {
        ptr_key(p, path, "users");
        want(v, x, p, json_is_array(x), "an array of user ids");
    }
    if ((x = json_object_get(a, "user"))) {
        ptr_key(p, path, "user");
        want(v, x, p, json_is_integer(x), "a user id");
    }
}

static bool state_exists(json_t *states, const char *id)
{
    return id && json_object_get(states, id);
}

static void check_flow(vctx *v, json_t *flow, const char *path, json_t *seen_forms)
{
    static const char *const keys[] = {"id", "label", "form", "initial", "states", "transitions", "moves", NULL};
    static const char *const req[] = {"id", "form", "initial", "states", "transitions", NULL};
    if (!check_object(v, flow, path, keys, req))
        return;
    char p[PATH_LEN], q[PATH_LEN], r[PATH_LEN];
    ptr_key(p, path, "label");
    check_label(v, json_object_get(flow, "label"), p);
    json_t *form = item_form(v, flow, path);
    if (!form)
        return;
    const char *form_id = json_string_value(json_object_get(flow, "form"));
    ptr_key(p, path, "form");
    if (json_object_get(seen_forms, form_id)) {
        problem(v, p, "duplicate_id", "form \"%s\" already has a flow", form_id);
        return;
    }
    json_object_set_new(seen_forms, form_id, json_true());
    json_object_set(v->flows, form_id, flow);
    json_t *fields = json_object_get(form, "fields");

    /* states */
    json_t *states = json_object(), *finals = json_object();
    json_t *sarr = json_object_get(flow, "states");
    ptr_key(p, path, "states");
    if (!json_is_array(sarr) || json_array_size(sarr) == 0 || json_array_size(sarr) > MODEL_MAX_ITEMS) {
        if (sarr)
            problem(v, p, "type", "must be a non-empty array of states");
        json_decref(states);
        json_decref(finals);
        return;
    }
    static const char *const skeys[] = {"id", "label", "final", "assignee", "editable", "sla", "timeout", NULL};
    static const char *const sreq[] = {"id", NULL};
    size_t i;
    json_t *s;
    json_t *seen = json_object();
    json_array_foreach(sarr, i, s)
    {
        ptr_index(q, p, i);
        if (!check_object(v, s, q, skeys, sreq))
            continue;
        const char *id = check_id(v, s, q, seen);
        if (id) {
            json_object_set(states, id, s);
            if (json_is_true(json_object_get(s, "final")))
                json_object_set_new(finals, id, json_true());
        }
    }
    json_decref(seen);

    /* transitions (ids first: states refer to them) */
    json_t *tarr = json_object_get(flow, "transitions");
    json_t *tids = json_object();
    json_array_foreach(tarr, i, s)
    {
        const char *id = json_string_value(json_object_get(s, "id"));
        if (id)
            json_object_set_new(tids, id, json_true());
    }

    json_array_foreach(sarr, i, s)
    {
        ptr_index(q, p, i);
        ptr_key(r, q, "label");
        check_label(v, json_object_get(s, "label"), r);
        check_bool(v, s, q, "final");
        if (json_object_get(s, "assignee")) {
            ptr_key(r, q, "assignee");
            check_assignee(v, json_object_get(s, "assignee"), r, fields);
        }
        ptr_key(r, q, "editable");
        check_field_list(v, json_object_get(s, "editable"), r, fields, false);
        json_t *sla = json_object_get(s, "sla");
        ptr_key(r, q, "sla");
        static const char *const slakeys[] = {"within", "on_breach", NULL};
        static const char *const slareq[] = {"within", NULL};
        if (sla && check_object(v, sla, r, slakeys, slareq)) {
            char t[PATH_LEN];
            ptr_key(t, r, "within");
            check_duration(v, json_object_get(sla, "within"), t);
            json_t *acts = json_object_get(sla, "on_breach");
            ptr_key(t, r, "on_breach");
            if (acts && !json_is_array(acts)) {
                problem(v, t, "type", "must be an array of actions");
            } else {
                size_t k;
                json_t *act;
                static const char *const akeys[] = {"notify", "set", "transition", NULL};
                json_array_foreach(acts, k, act)
                {
                    char u[PATH_LEN], w[PATH_LEN];
                    ptr_index(u, t, k);
                    if (!check_object(v, act, u, akeys, NULL))
                        continue;
                    if (json_object_size(act) != 1)
                        problem(v, u, "bad_value", "an action is one of notify, set, transition");
                    if (json_object_get(act, "notify")) {
                        ptr_key(w, u, "notify");
                        check_assignee(v, json_object_get(act, "notify"), w, fields);
                    }
                    json_t *set = json_object_get(act, "set");
                    if (set) {
                        ptr_key(w, u, "set");
                        check_set(v, set, w, fields);
                    }
                    json_t *tr = json_object_get(act, "transition");
                    if (tr) {
                        ptr_key(w, u, "transition");
                        if (!json_is_string(tr) || !json_object_get(tids, json_string_value(tr)))
                            problem(v, w, "unknown_transition", "no transition \"%.64s\"", jstr(tr));
                    }
                }
            }
        }
        json_t *to = json_object_get(s, "timeout");
        ptr_key(r, q, "timeout");
        static const char *const tokeys[] = {"after", "transition", NULL};
        if (to && check_object(v, to, r, tokeys, tokeys)) {
            char t[PATH_LEN];
            ptr_key(t, r, "after");
            check_duration(v, json_object_get(to, "after"), t);
            json_t *tr = json_object_get(to, "transition");
            ptr_key(t, r, "transition");
            if (!json_is_string(tr) || !json_object_get(tids, json_string_value(tr)))
                problem(v, t, "unknown_transition", "no transition \"%.64s\"", jstr(tr));
        }
    }

    /* moves: where records in states this version removes go when it is published */
    json_t *moves = json_object_get(flow, "moves");
    ptr_key(r, path, "moves");
    if (moves && !json_is_object(moves)) {
        problem(v, r, "type", "must map removed states to states of the flow");
    } else {
        const char *mk;
        json_t *mv;
        json_object_foreach(moves, mk, mv)
        {
            char t[PATH_LEN];
            ptr_key(t, r, mk);
            if (!model_is_id(mk) || state_exists(states, mk))
                problem(v, t, "bad_value", "a move is from a state the flow no longer has");
            else if (!json_is_string(mv) || !state_exists(states, json_string_value(mv)))
                problem(v, t, "unknown_state", "no state \"%.64s\"", jstr(mv));
        }
    }

    const char *initial = json_string_value(json_object_get(flow, "initial"));
    ptr_key(r, path, "initial");
    if (json_object_get(flow, "initial") && !state_exists(states, initial))
        problem(v, r, "unknown_state", "no state \"%.64s\"", initial ? initial : "");

    ptr_key(p, path, "transitions");
    if (!json_is_array(tarr)) {
        if (tarr)
            problem(v, p, "type", "must be an array of transitions");
        tarr = NULL;
    }
    static const char *const tkeys[] = {"id", "label", "from", "to", "allowed", "input", "requires", "when",
                                        "set", "approval", NULL};
    static const char *const treq[] = {"id", "from", "to", NULL};
    seen = json_object();
    json_array_foreach(tarr, i, s)
    {
        ptr_index(q, p, i);
        if (!check_object(v, s, q, tkeys, treq))
            continue;
        check_id(v, s, q, seen);
        ptr_key(r, q, "label");
        check_label(v, json_object_get(s, "label"), r);
        json_t *from = json_object_get(s, "from");
        ptr_key(r, q, "from");
        if (from && !json_is_array(from)) {
            problem(v, r, "type", "must be an array of states (\"*\" = any non-final state)");
        } else {
            size_t k;
            json_t *st;
            json_array_foreach(from, k, st)
            {
                char t[PATH_LEN];
                ptr_index(t, r, k);
                const char *sid = json_string_value(st);
                if (!(sid && (!strcmp(sid, "*") || state_exists(states, sid))))
                    problem(v, t, "unknown_state", "no state \"%.64s\"", sid ? sid : "");
            }
        }
        const char *to = json_string_value(json_object_get(s, "to"));
        ptr_key(r, q, "to");
        if (json_object_get(s, "to") && !state_exists(states, to))
            problem(v, r, "unknown_state", "no state \"%.64s\"", to ? to : "");
        json_t *allowed = json_object_get(s, "allowed");
        ptr_key(r, q, "allowed");
        static const char *const alkeys[] = {"roles", "assignee", "owner", NULL};
        if (!allowed) {
            problem(v, r, "no_one_allowed", "nobody may take this transition: give it \"allowed\"");
        } else if (check_object(v, allowed, r, alkeys, NULL)) {
            json_t *roles = json_object_get(allowed, "roles");
            bool someone = json_is_true(json_object_get(allowed, "assignee")) ||
                           json_is_true(json_object_get(allowed, "owner")) ||
                           (json_is_array(roles) && json_array_size(roles) > 0);
            if (!someone)
                problem(v, r, "no_one_allowed", "nobody may take this transition");
            char u[PATH_LEN];
            ptr_key(u, r, "roles");
            check_role_list(v, roles, u);
        }
        ptr_key(r, q, "input");
        check_field_list(v, json_object_get(s, "input"), r, fields, false);
        size_t k;
        json_t *in;
        json_array_foreach(json_is_array(json_object_get(s, "input")) ? json_object_get(s, "input") : NULL, k, in)
        {
            json_t *f = bundle_item(fields, json_string_value(in));
            char t[PATH_LEN];
            ptr_index(t, r, k);
            if (f && (json_object_get(f, "formula") || !strcmp(type_of(f), "autonumber")))
                problem(v, t, "bad_value", "a computed field cannot be an input");
        }
        ptr_key(r, q, "requires");
        check_field_list(v, json_object_get(s, "requires"), r, fields, false);
        ptr_key(r, q, "when");
        check_expr(v, json_object_get(s, "when"), r);
        json_t *set = json_object_get(s, "set");
        ptr_key(r, q, "set");
        if (set)
            check_set(v, set, r, fields);
        json_t *ap = json_object_get(s, "approval");
        ptr_key(r, q, "approval");
        static const char *const apkeys[] = {"approvers", "mode", "no_self_approval", "reject_to", NULL};
        static const char *const apreq[] = {"approvers", NULL};
        if (ap && check_object(v, ap, r, apkeys, apreq)) {
            char t[PATH_LEN];
            if (json_object_get(ap, "approvers")) {
                ptr_key(t, r, "approvers");
                check_assignee(v, json_object_get(ap, "approvers"), t, fields);
            }
            json_t *mode = json_object_get(ap, "mode");
            ptr_key(t, r, "mode");
            const char *ms = json_string_value(mode);
            json_t *al = json_object_get(mode, "at_least");
            if (mode && !(ms && (!strcmp(ms, "any") || !strcmp(ms, "all"))) &&
                !(json_is_object(mode) && json_object_size(mode) == 1 && json_is_integer(al) &&
                  json_integer_value(al) >= 1))
                problem(v, t, "bad_value", "mode is \"any\", \"all\" or {\"at_least\": n}");
            check_bool(v, ap, r, "no_self_approval");
            const char *rt = json_string_value(json_object_get(ap, "reject_to"));
            ptr_key(t, r, "reject_to");
            if (json_object_get(ap, "reject_to") && !state_exists(states, rt))
                problem(v, t, "unknown_state", "no state \"%.64s\"", rt ? rt : "");
        }
    }
    json_decref(seen);

    /* reachability from the initial state */
    if (state_exists(states, initial)) {
        json_t *reached = json_object();
        json_object_set_new(reached, initial, json_true());
        bool grew = true;
        while (grew) {
            grew = false;
            json_array_foreach(tarr, i, s)
            {
                const char *to = json_string_value(json_object_get(s, "to"));
                if (!to || json_object_get(reached, to) || !state_exists(states, to))
                    continue;
                size_t k;
                json_t *st;
                bool from_reached = false;
                json_array_foreach(json_object_get(s, "from"), k, st)
                {
                    const char *sid = json_string_value(st);
                    if (!sid)
                        continue;
                    if (!strcmp(sid, "*")) {
                        const char *rid;
                        json_t *x;
                        json_object_foreach(reached, rid, x) from_reached = from_reached || !json_object_get(finals, rid);
                    } else if (json_object_get(reached, sid)) {
                        from_reached = true;
                    }
                }
                if (from_reached) {
                    json_object_set_new(reached, to, json_true());
                    grew = true;
                }
            }
        }
        json_array_foreach(sarr, i, s)
        {
            const char *id = json_string_value(json_object_get(s, "id"));
            if (id && model_is_id(id) && !json_object_get(reached, id)) {
                snprintf(q, sizeof q, "%s/states/%zu", path, i);
                problem(v, q, "unreachable_state", "state \"%s\" cannot be reached from \"%s\"", id, initial);
            }
        }
        json_decref(reached);
    }
    json_decref(tids);
    json_decref(states);
    json_decref(finals);
}

/* ---- rules ---- */

static void check_rule(vctx *v, json_t *rule, const char *path)
{
    static const char *const keys[] = {"id", "label", "form", "on", "phase", "when", "script", "script_file",
                                       "order", "enabled", "fields", "transition", "state", "cron", NULL};
    static const char *const req[] = {"id", "on", NULL};
    if (!check_object(v, rule, path, keys, req))
        return;
    char p[PATH_LEN];
    static const char *const ons[] = {"create", "update", "save", "delete", "transition", "enter", "schedule", NULL};
    static const char *const phases[] = {"before", "after", "async", NULL};
    const char *on = json_string_value(json_object_get(rule, "on"));
    ptr_key(p, path, "on");
    if (json_object_get(rule, "on") && !(on && in_list(on, ons)))
        problem(v, p, "bad_value", "on is one of create, update, save, delete, transition, enter, schedule");
    const char *phase = json_string_value(json_object_get(rule, "phase"));
    ptr_key(p, path, "phase");
    if (json_object_get(rule, "phase") && !(phase && in_list(phase, phases)))
        problem(v, p, "bad_value", "phase is before, after or async");
    const char *form_id = json_string_value(json_object_get(rule, "form"));
    json_t *form = item_form(v, rule, path);
    ptr_key(p, path, "form");
    bool schedule = on && !strcmp(on, "schedule");
    if (!json_object_get(rule, "form") && !schedule)
        problem(v, p, "required", "a rule on %s names its form", on ? on : "records");
    json_t *fields = json_object_get(form, "fields");
    if (form) {
        ptr_key(p, path, "fields");
        check_field_list(v, json_object_get(rule, "fields"), p, fields, true);
    }
    json_t *flow = form_id ? json_object_get(v->flows, form_id) : NULL;
    const char *tr = json_string_value(json_object_get(rule, "transition"));
    ptr_key(p, path, "transition");
    if (json_object_get(rule, "transition")) {
        bool found = false;
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(flow, "transitions"), i, t) found =
            found || (tr && json_is_string(json_object_get(t, "id")) && !strcmp(json_string_value(json_object_get(t, "id")), tr));
        if (!found)
            problem(v, p, "unknown_transition", "the form's flow has no transition \"%.64s\"", tr ? tr : "");
    }
    const char *st = json_string_value(json_object_get(rule, "state"));
    ptr_key(p, path, "state");
    if (json_object_get(rule, "state") || (on && !strcmp(on, "enter"))) {
        bool found = false;
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(flow, "states"), i, s) found =
            found || (st && json_is_string(json_object_get(s, "id")) && !strcmp(json_string_value(json_object_get(s, "id")), st));
        if (!found)
            problem(v, p, json_object_get(rule, "state") ? "unknown_state" : "required",
                    "an enter rule names a state of the form's flow");
    }
    ptr_key(p, path, "cron");
    json_t *cron = json_object_get(rule, "cron");
    if (schedule && !cron)
        problem(v, p, "required", "a schedule rule has a cron expression");
    if (cron) {
        const char *c = json_string_value(cron);
        int parts = 0;
        for (const char *s = c ? c : ""; *s;) {
            while (*s == ' ')
                s++;
            if (!*s)
                break;
            parts++;
            while (*s && *s != ' ')
                s++;
        }
        if (parts != 5)
            problem(v, p, "bad_value", "cron has five fields: minute hour day month weekday");
    }
    ptr_key(p, path, "when");
    check_expr(v, json_object_get(rule, "when"), p);
    json_t *order = json_object_get(rule, "order");
    ptr_key(p, path, "order");
    want(v, order, p, json_is_integer(order), "a whole number");
    check_bool(v, rule, path, "enabled");
    json_t *script = json_object_get(rule, "script");
    ptr_key(p, path, "script");
    if (!script)
        problem(v, p, "required", "a rule has a script (or a script_file)");
    else if (!json_is_string(script))
        problem(v, p, "type", "must be Lua source (a string)");
    else
        check_lua(v, json_string_value(script), json_string_length(script), p, false);
}

/* ---- reports and dashboards ---- */

static bool is_numeric_type(const char *t)
{
    return !strcmp(t, "integer") || !strcmp(t, "decimal") || !strcmp(t, "money");
}

static bool is_time_path(json_t *f, const char *path)
{
    if (!f)
        return !strcmp(path, "_created_at") || !strcmp(path, "_updated_at");
    return !strcmp(type_of(f), "date") || !strcmp(type_of(f), "datetime");
}

static void check_report(vctx *v, json_t *rep, const char *path, json_t *seen)
{
    static const char *const keys[] = {"id", "label", "form", "params", "filter", "dimensions", "measures", "sort",
                                       "limit", "chart", "roles", NULL};
    static const char *const req[] = {"id", "form", "measures", NULL};
    if (!check_object(v, rep, path, keys, req))
        return;
    const char *id = check_id(v, rep, path, seen);
    if (id)
        json_object_set(v->reports, id, rep);
    char p[PATH_LEN], q[PATH_LEN], r[PATH_LEN];
    ptr_key(p, path, "label");
    check_label(v, json_object_get(rep, "label"), p);
    json_t *form = item_form(v, rep, path);
    if (!form)
        return;
    const char *form_id = json_string_value(json_object_get(rep, "form"));
    json_t *fields = json_object_get(form, "fields");
    json_t *params = json_object_get(rep, "params");
    size_t i;
    json_t *x;
    ptr_key(p, path, "params");
    if (params && !json_is_array(params)) {
        problem(v, p, "type", "must be an array");
        params = NULL;
    }
    json_t *pseen = json_object();
    static const char *const pkeys[] = {"id", "type", "label", "default", NULL};
    static const char *const preq[] = {"id", "type", NULL};
    json_array_foreach(params, i, x)
    {
        ptr_index(q, p, i);
        if (!check_object(v, x, q, pkeys, preq))
            continue;
        check_id(v, x, q, pseen);
        const char *t = json_string_value(json_object_get(x, "type"));
        ptr_key(r, q, "type");
        if (json_object_get(x, "type") && !(t && ftype_find(t)))
            problem(v, r, "unknown_type", "no field type \"%.32s\"", t ? t : "");
    }
    json_decref(pseen);
    if (json_object_get(rep, "filter")) {
        ptr_key(p, path, "filter");
        check_form_filter(v, json_object_get(rep, "filter"), p, form_id, NULL, params);
    }
    json_t *names = json_object();   /* every "as", for sort and chart */
    json_t *dims = json_object_get(rep, "dimensions");
    ptr_key(p, path, "dimensions");
    static const char *const dkeys[] = {"field", "bucket", "as", "label", NULL};
    static const char *const dreq[] = {"field", NULL};
    static const char *const buckets[] = {"day", "week", "month", "quarter", "year", NULL};
    if (dims && !json_is_array(dims))
        problem(v, p, "type", "must be an array");
    else
        json_array_foreach(dims, i, x)
        {
            ptr_index(q, p, i);
            if (!check_object(v, x, q, dkeys, dreq))
                continue;
            const char *fp = json_string_value(json_object_get(x, "field"));
            bool ok = false;
            json_t *f = fp ? resolve_path(v, fields, fp, &ok) : NULL;
            ptr_key(r, q, "field");
            if (!ok)
                problem(v, r, "unknown_field", "no field \"%.64s\" on this path", fp ? fp : "");
            json_t *b = json_object_get(x, "bucket");
            ptr_key(r, q, "bucket");
            if (b && !(json_is_string(b) && in_list(json_string_value(b), buckets)))
                problem(v, r, "bad_value", "bucket is day, week, month, quarter or year");
            else if (b && ok && !is_time_path(f, fp))
                problem(v, r, "bad_value", "only dates and datetimes take a bucket");
            const char *as = json_string_value(json_object_get(x, "as"));
            json_object_set_new(names, as ? as : (fp ? fp : ""), json_true());
        }
    json_t *meas = json_object_get(rep, "measures");
    ptr_key(p, path, "measures");
    static const char *const mkeys[] = {"fn", "field", "duration", "state_time", "unit", "filter", "as", "label",
                                        NULL};
    static const char *const mreq[] = {"fn", "as", NULL};
    static const char *const fns[] = {"count", "count_distinct", "sum", "avg", "min", "max", "ratio", NULL};
    if (meas && (!json_is_array(meas) || json_array_size(meas) == 0))
        problem(v, p, "type", "must be a non-empty array");
    else
        json_array_foreach(meas, i, x)
        {
            ptr_index(q, p, i);
            if (!check_object(v, x, q, mkeys, mreq))
                continue;
            const char *fn = json_string_value(json_object_get(x, "fn"));
            ptr_key(r, q, "fn");
            if (json_object_get(x, "fn") && !(fn && in_list(fn, fns))) {
                problem(v, r, "bad_value", "fn is count, count_distinct, sum, avg, min, max or ratio");
                continue;
            }
            const char *fp = json_string_value(json_object_get(x, "field"));
            ptr_key(r, q, "field");
            if (json_object_get(x, "field")) {
                bool ok = false;
                json_t *f = fp ? resolve_path(v, fields, fp, &ok) : NULL;
                if (!ok)
                    problem(v, r, "unknown_field", "no field \"%.64s\" on this path", fp ? fp : "");
                else if (fn && (!strcmp(fn, "sum") || !strcmp(fn, "avg")) && !(f && is_numeric_type(type_of(f))))
                    problem(v, r, "bad_value", "%s needs a number field", fn);
            } else if (fn && strcmp(fn, "count") && strcmp(fn, "ratio") && !json_object_get(x, "duration") &&
                       !json_object_get(x, "state_time")) {
                problem(v, r, "required", "%s needs a field", fn);
            }
            json_t *dur = json_object_get(x, "duration");
            if (dur) {
                ptr_key(r, q, "duration");
                static const char *const dk[] = {"from", "to", "unit", NULL};
                static const char *const dr[] = {"from", "to", NULL};
                if (check_object(v, dur, r, dk, dr)) {
                    const char *ends[] = {"from", "to"};
                    for (int k = 0; k < 2; k++) {
                        char t[PATH_LEN];
                        ptr_key(t, r, ends[k]);
                        const char *ep = json_string_value(json_object_get(dur, ends[k]));
                        bool ok = false;
                        json_t *f = ep ? resolve_path(v, fields, ep, &ok) : NULL;
                        if (json_object_get(dur, ends[k]) && !(ok && is_time_path(f, ep)))
                            problem(v, t, "unknown_field", "must name a date or datetime field");
                    }
                }
            }
            json_t *stt = json_object_get(x, "state_time");
            if (stt) {
                ptr_key(r, q, "state_time");
                json_t *flow = json_object_get(v->flows, form_id);
                bool found = false;
                size_t k;
                json_t *s;
                json_array_foreach(json_object_get(flow, "states"), k, s) found =
                    found || (json_is_string(stt) && json_equal(json_object_get(s, "id"), stt));
                if (!found)
                    problem(v, r, "unknown_state", "the form's flow has no such state");
            }
            json_t *unit = json_object_get(x, "unit");
            static const char *const units[] = {"minutes", "hours", "days", NULL};
            ptr_key(r, q, "unit");
            if (unit && !(json_is_string(unit) && in_list(json_string_value(unit), units)))
                problem(v, r, "bad_value", "unit is minutes, hours or days");
            if (json_object_get(x, "filter")) {
                ptr_key(r, q, "filter");
                check_form_filter(v, json_object_get(x, "filter"), r, form_id, NULL, params);
            }
            const char *as = json_string_value(json_object_get(x, "as"));
            ptr_key(r, q, "as");
            if (json_object_get(x, "as") && !(as && model_is_id(as)))
                problem(v, r, "bad_id", "as must match ^[a-z][a-z0-9_]{0,47}$");
            else if (as && json_object_get(names, as))
                problem(v, r, "duplicate_id", "\"%s\" names two columns", as);
            else if (as)
                json_object_set_new(names, as, json_true());
        }
    json_t *sort = json_object_get(rep, "sort");
    ptr_key(p, path, "sort");
    static const char *const sk[] = {"by", "desc", NULL};
    static const char *const sreq[] = {"by", NULL};
    if (sort && !json_is_array(sort))
        problem(v, p, "type", "must be an array");
    else
        json_array_foreach(sort, i, x)
        {
            ptr_index(q, p, i);
            if (!check_object(v, x, q, sk, sreq))
                continue;
            ptr_key(r, q, "by");
            json_t *by = json_object_get(x, "by");
            if (by && !(json_is_string(by) && json_object_get(names, json_string_value(by))))
                problem(v, r, "unknown_field", "sort by a dimension or measure of the report");
            check_bool(v, x, q, "desc");
        }
    json_t *limit = json_object_get(rep, "limit");
    ptr_key(p, path, "limit");
    want(v, limit, p, json_is_integer(limit) && json_integer_value(limit) >= 1 && json_integer_value(limit) <= 100000,
         "a whole number from 1 to 100000");
    json_t *chart = json_object_get(rep, "chart");
    ptr_key(p, path, "chart");
    static const char *const ck[] = {"type", "x", "y", "series", NULL};
    static const char *const ctypes[] = {"table", "kpi", "bar", "line", "area", "pie", "funnel", NULL};
    if (chart && check_object(v, chart, p, ck, NULL)) {
        json_t *ct = json_object_get(chart, "type");
        ptr_key(q, p, "type");
        if (ct && !(json_is_string(ct) && in_list(json_string_value(ct), ctypes)))
            problem(v, q, "bad_value", "chart type is table, kpi, bar, line, area, pie or funnel");
        const char *one[] = {"x", "series"};
        for (int k = 0; k < 2; k++) {
            json_t *c = json_object_get(chart, one[k]);
            ptr_key(q, p, one[k]);
            if (c && !(json_is_string(c) && json_object_get(names, json_string_value(c))))
                problem(v, q, "unknown_field", "must name a column of the report");
        }
        json_t *y = json_object_get(chart, "y");
        ptr_key(q, p, "y");
        if (y && !json_is_array(y))
            problem(v, q, "type", "must be an array of columns");
        else
            json_array_foreach(y, i, x)
            {
                ptr_index(r, q, i);
                if (!(json_is_string(x) && json_object_get(names, json_string_value(x))))
                    problem(v, r, "unknown_field", "must name a column of the report");
            }
    }
    ptr_key(p, path, "roles");
    check_role_list(v, json_object_get(rep, "roles"), p);
    json_decref(names);
}

static void check_dashboard(vctx *v, json_t *d, const char *path)
{
    static const char *const keys[] = {"id", "label", "roles", "widgets", NULL};
    static const char *const req[] = {"id", "widgets", NULL};
    if (!check_object(v, d, path, keys, req))
        return;
    char p[PATH_LEN], q[PATH_LEN], r[PATH_LEN];
    ptr_key(p, path, "label");
    check_label(v, json_object_get(d, "label"), p);
    size_t i;
    json_t *x;
    ptr_key(p, path, "roles");
    check_role_list(v, json_object_get(d, "roles"), p);
    json_t *widgets = json_object_get(d, "widgets");
    ptr_key(p, path, "widgets");
    static const char *const wk[] = {"report", "title", "width", "params", "chart", NULL};
    static const char *const wr[] = {"report", NULL};
    if (widgets && !json_is_array(widgets)) {
        problem(v, p, "type", "must be an array of widgets");
        return;
    }
    json_array_foreach(widgets, i, x)
    {
        ptr_index(q, p, i);
        if (!check_object(v, x, q, wk, wr))
            continue;
        json_t *rep = json_object_get(x, "report");
        ptr_key(r, q, "report");
        if (rep && !(json_is_string(rep) && json_object_get(v->reports, json_string_value(rep))))
            problem(v, r, "unknown_report", "no report \"%.64s\"", jstr(rep));
        ptr_key(r, q, "title");
        check_label(v, json_object_get(x, "title"), r);
        json_t *w = json_object_get(x, "width");
        ptr_key(r, q, "width");
        want(v, w, r, json_is_integer(w) && json_integer_value(w) >= 1 && json_integer_value(w) <= 12, "1 to 12");
        json_t *prm = json_object_get(x, "params");
        ptr_key(r, q, "params");
        want(v, prm, r, json_is_object(prm), "an object of parameter values");
    }
}

/* ---- permissions, webhooks, data ---- */

static void check_scope(vctx *v, json_t *scope, const char *path, const char *form)
{
    if (!scope || json_is_boolean(scope))
        return;
    const char *s = json_string_value(scope);
    if (s && (!strcmp(s, "all") || !strcmp(s, "own") || !strcmp(s, "team")))
        return;
    if (json_is_object(scope) && json_object_size(scope) == 1 && json_object_get(scope, "filter")) {
        char p[PATH_LEN];
        ptr_key(p, path, "filter");
        if (strcmp(form, "*") != 0)
            check_form_filter(v, json_object_get(scope, "filter"), p, form, NULL, NULL);
        return;
    }
    problem(v, path, "bad_value", "a scope is false, true, \"all\", \"own\", \"team\" or {\"filter\": ...}");
}

static void check_permissions(vctx *v, json_t *perms, const char *path)
{
    if (!json_is_object(perms)) {
        problem(v, path, "type", "must be an object: form -> role -> permissions");
        return;
    }
    const char *form_id;
    json_t *by_role;
    char p[PATH_LEN], q[PATH_LEN], r[PATH_LEN];
    json_object_foreach(perms, form_id, by_role)
    {
        ptr_key(p, path, form_id);
        json_t *form = json_object_get(v->forms, form_id);
        bool any = !strcmp(form_id, "*");
        if (!any && !form) {
            problem(v, p, "unknown_form", "no form \"%.64s\"", form_id);
            continue;
        }
        if (!json_is_object(by_role)) {
            problem(v, p, "type", "must be an object: role -> permissions");
            continue;
        }
        json_t *fields = json_object_get(form, "fields");
        const char *role;
        json_t *perm;
        json_object_foreach(by_role, role, perm)
        {
            ptr_key(q, p, role);
            if (!json_object_get(v->roles, role)) {
                problem(v, q, "unknown_role", "no role \"%.64s\" in this app", role);
                continue;
            }
            static const char *const keys[] = {"create", "read", "update", "delete", "fields", NULL};
            if (!check_object(v, perm, q, keys, NULL))
                continue;
            check_bool(v, perm, q, "create");
            const char *scopes[] = {"read", "update", "delete"};
            for (int k = 0; k < 3; k++) {
                ptr_key(r, q, scopes[k]);
                check_scope(v, json_object_get(perm, scopes[k]), r, form_id);
            }
            json_t *fm = json_object_get(perm, "fields");
            ptr_key(r, q, "fields");
            if (!fm)
                continue;
            if (!json_is_object(fm)) {
                problem(v, r, "type", "must be an object: field -> write, read or hidden");
                continue;
            }
            const char *fid;
            json_t *mode;
            json_object_foreach(fm, fid, mode)
            {
                char t[PATH_LEN];
                ptr_key(t, r, fid);
                bool ok = false;
                if (fields)
                    resolve_path(v, fields, fid, &ok);
                /* "parts.unit_cost" names a subform field; refs are not followed here */
                if (any)
                    ok = true;
                else if (ok && strchr(fid, '.')) {
                    char head[128];
                    snprintf(head, sizeof head, "%.*s", (int)(strchr(fid, '.') - fid), fid);
                    ok = !strcmp(type_of(bundle_item(fields, head)), "subform");
                }
                if (!ok)
                    problem(v, t, "unknown_field", "no field \"%.64s\" in this form", fid);
                const char *m = json_string_value(mode);
                if (!(m && (!strcmp(m, "write") || !strcmp(m, "read") || !strcmp(m, "hidden"))))
                    problem(v, t, "bad_value", "a field mode is write, read or hidden");
            }
        }
    }
}

static void check_webhooks(vctx *v, json_t *hooks, const char *path)
{
    if (!json_is_array(hooks)) {
        problem(v, path, "type", "must be an array of webhooks");
        return;
    }
    static const char *const keys[] = {"id", "url", "events", "secret_env", NULL};
    static const char *const req[] = {"id", "url", "events", NULL};
    static const char *const evs[] = {"create", "update", "delete", "transition", NULL};
    json_t *seen = json_object();
    size_t i;
    json_t *h;
    char p[PATH_LEN], q[PATH_LEN], r[PATH_LEN];
    json_array_foreach(hooks, i, h)
    {
        ptr_index(p, path, i);
        if (!check_object(v, h, p, keys, req))
            continue;
        check_id(v, h, p, seen);
        const char *url = json_string_value(json_object_get(h, "url"));
        ptr_key(q, p, "url");
        if (json_object_get(h, "url") && !(url && (!strncmp(url, "http://", 7) || !strncmp(url, "https://", 8))))
            problem(v, q, "bad_value", "url is an http or https URL");
        const char *env = json_string_value(json_object_get(h, "secret_env"));
        ptr_key(q, p, "secret_env");
        if (json_object_get(h, "secret_env") && !(env && !strncmp(env, "LOOM_WEBHOOK_", 13)))
            problem(v, q, "bad_value", "secret_env must start with LOOM_WEBHOOK_");
        json_t *events = json_object_get(h, "events");
        ptr_key(q, p, "events");
        if (events && !json_is_array(events)) {
            problem(v, q, "type", "must be an array of <form>.<event>");
            continue;
        }
        size_t k;
        json_t *e;
        json_array_foreach(events, k, e)
        {
            ptr_index(r, q, k);
            const char *s = json_string_value(e);
            const char *dot = s ? strchr(s, '.') : NULL;
            char form[64];
            if (dot && dot - s < (long)sizeof form)
                snprintf(form, sizeof form, "%.*s", (int)(dot - s), s);
            if (!dot || dot - s >= (long)sizeof form || !json_object_get(v->forms, form) || !in_list(dot + 1, evs))
                problem(v, r, "bad_value", "an event is <form>.<create|update|delete|transition> of this app");
        }
    }
    json_decref(seen);
}

static void check_data(vctx *v, json_t *data, const char *path)
{
    if (!json_is_object(data)) {
        problem(v, path, "type", "must be an object: form -> records");
        return;
    }
    const char *form_id;
    json_t *rows;
    char p[PATH_LEN];
    json_object_foreach(data, form_id, rows)
    {
        ptr_key(p, path, form_id);
        if (!json_object_get(v->forms, form_id))
            problem(v, p, "unknown_form", "no form \"%.64s\"", form_id);
        else if (!json_is_array(rows) && !json_is_string(rows))
            problem(v, p, "type", "must be an array of records (or CSV text)");
    }
}

/* ---- app ---- */

static void check_app(vctx *v, json_t *app)
{
    static const char *const keys[] = {"id", "version", "label", "locales", "timezone", "roles", "menu", NULL};
    static const char *const req[] = {"id", "label", NULL};
    if (!check_object(v, app, "/app", keys, req))
        return;
    check_id(v, app, "/app", NULL);
    check_label(v, json_object_get(app, "label"), "/app/label");
    json_t *ver = json_object_get(app, "version");
    want(v, ver, "/app/version", json_is_string(ver), "a string");
    json_t *locales = json_object_get(app, "locales");
    if (locales && (!json_is_array(locales) || json_array_size(locales) == 0))
        problem(v, "/app/locales", "type", "must be a non-empty array of locale names");
    json_t *tz = json_object_get(app, "timezone");
    const char *tzs = json_string_value(tz);
    if (tz && !(tzs && *tzs && strlen(tzs) < 64 && !strpbrk(tzs, " '\"\\;")))
        problem(v, "/app/timezone", "bad_value", "must be an IANA time zone name such as Asia/Shanghai");
    json_t *roles = json_object_get(app, "roles");
    char p[PATH_LEN], q[PATH_LEN];
    if (roles && !json_is_array(roles)) {
        problem(v, "/app/roles", "type", "must be an array of roles");
    } else {
        static const char *const rk[] = {"id", "label", NULL};
        static const char *const rr[] = {"id", NULL};
        json_t *seen = json_object();
        size_t i;
        json_t *r;
        json_array_foreach(roles, i, r)
        {
            ptr_index(p, "/app/roles", i);
            if (!check_object(v, r, p, rk, rr))
                continue;
            const char *id = check_id(v, r, p, seen);
            if (id)
                json_object_set_new(v->roles, id, json_true());
            ptr_key(q, p, "label");
            check_label(v, json_object_get(r, "label"), q);
        }
        json_decref(seen);
    }
}

static void check_menu(vctx *v, json_t *menu)
{
    if (!menu)
        return;
    if (!json_is_array(menu)) {
        problem(v, "/app/menu", "type", "must be an array of groups");
        return;
    }
    static const char *const gk[] = {"label", "items", NULL};
    static const char *const gr[] = {"items", NULL};
    static const char *const ik[] = {"form", "report", "dashboard", NULL};
    size_t i, k;
    json_t *g, *item;
    char p[PATH_LEN], q[PATH_LEN], r[PATH_LEN];
    json_array_foreach(menu, i, g)
    {
        ptr_index(p, "/app/menu", i);
        if (!check_object(v, g, p, gk, gr))
            continue;
        ptr_key(q, p, "label");
        check_label(v, json_object_get(g, "label"), q);
        ptr_key(q, p, "items");
        json_array_foreach(json_object_get(g, "items"), k, item)
        {
            ptr_index(r, q, k);
            if (!check_object(v, item, r, ik, NULL))
                continue;
            if (json_object_size(item) != 1) {
                problem(v, r, "bad_value", "an item is one of form, report, dashboard");
                continue;
            }
            const char *kind = json_object_iter_key(json_object_iter(item));
            const char *target = json_string_value(json_object_iter_value(json_object_iter(item)));
            bool ok = target && (!strcmp(kind, "form")     ? json_object_get(v->forms, target) != NULL
                                 : !strcmp(kind, "report") ? json_object_get(v->reports, target) != NULL
                                                           : true);
            char t[PATH_LEN];
            ptr_key(t, r, kind);
            if (!ok)
                problem(v, t, !strcmp(kind, "form") ? "unknown_form" : "unknown_report", "no %s \"%.64s\"", kind,
                        target ? target : "");
        }
    }
}

/* ---- the bundle ---- */

/* Runs check on every element of bundle[kind] (an array of at most max). */
static json_t *kind_array(vctx *v, json_t *bundle, const char *kind, size_t max)
{
    json_t *arr = json_object_get(bundle, kind);
    char p[PATH_LEN];
    ptr_key(p, "", kind);
    if (!arr)
        return NULL;
    if (!json_is_array(arr)) {
        problem(v, p, "type", "must be an array");
        return NULL;
    }
    if (json_array_size(arr) > max) {
        problem(v, p, "too_many", "at most %zu %s", max, kind);
        return NULL;
    }
    return arr;
}

json_t *model_validate(json_t *bundle)
{
    vctx v = {.bundle = bundle, .errors = json_array(), .forms = json_object(), .roles = json_object(), .flows = json_object(),
              .reports = json_object(), .L = luaL_newstate()};
    if (!v.L)
        abort();
    json_object_set_new(v.roles, "admin", json_true());      /* reserved app roles */
    json_object_set_new(v.roles, "designer", json_true());
    static const char *const keys[] = {"format", "app", "forms", "flows", "rules", "reports", "dashboards",
                                       "permissions", "webhooks", "data", NULL};
    static const char *const req[] = {"format", "app", NULL};
    if (!check_object(&v, bundle, "", keys, req))
        goto out;
    json_t *fmt = json_object_get(bundle, "format");
    if (fmt && strcmp(jstr(fmt), "loom.app/1") != 0)
        problem(&v, "/format", "bad_format", "this server reads format \"loom.app/1\"");
    if (json_object_get(bundle, "app"))
        check_app(&v, json_object_get(bundle, "app"));

    size_t i;
    json_t *x;
    char p[PATH_LEN];
    /* forms: index the ids first, so refs between forms resolve in any order */
    json_t *forms = kind_array(&v, bundle, "forms", MODEL_MAX_FORMS);
    json_t *seen = json_object();
    json_array_foreach(forms, i, x)
    {
        ptr_index(p, "/forms", i);
        if (!json_is_object(x))
            continue;
        const char *id = check_id(&v, x, p, seen);
        if (id)
            json_object_set(v.forms, id, x);
    }
    json_decref(seen);
    json_array_foreach(forms, i, x)
    {
        ptr_index(p, "/forms", i);
        check_form(&v, x, p);
    }

    json_t *flows = kind_array(&v, bundle, "flows", MODEL_MAX_ITEMS);
    json_t *flow_ids = json_object(), *flow_forms = json_object();
    json_array_foreach(flows, i, x)
    {
        ptr_index(p, "/flows", i);
        if (json_is_object(x))
            check_id(&v, x, p, flow_ids);
        check_flow(&v, x, p, flow_forms);
    }
    json_decref(flow_ids);
    json_decref(flow_forms);

    json_t *rules = kind_array(&v, bundle, "rules", MODEL_MAX_ITEMS);
    seen = json_object();
    json_array_foreach(rules, i, x)
    {
        ptr_index(p, "/rules", i);
        if (json_is_object(x))
            check_id(&v, x, p, seen);
        check_rule(&v, x, p);
    }
    json_decref(seen);

    json_t *reports = kind_array(&v, bundle, "reports", MODEL_MAX_ITEMS);
    seen = json_object();
    json_array_foreach(reports, i, x)
    {
        ptr_index(p, "/reports", i);
        check_report(&v, x, p, seen);
    }
    json_decref(seen);

    json_t *dashboards = kind_array(&v, bundle, "dashboards", MODEL_MAX_ITEMS);
    seen = json_object();
    json_array_foreach(dashboards, i, x)
    {
        ptr_index(p, "/dashboards", i);
        if (json_is_object(x))
            check_id(&v, x, p, seen);
        check_dashboard(&v, x, p);
    }
    json_decref(seen);

    check_menu(&v, json_object_get(json_object_get(bundle, "app"), "menu"));
    if (json_object_get(bundle, "permissions"))
        check_permissions(&v, json_object_get(bundle, "permissions"), "/permissions");
    if (json_object_get(bundle, "webhooks"))
        check_webhooks(&v, json_object_get(bundle, "webhooks"), "/webhooks");
    if (json_object_get(bundle, "data"))
        check_data(&v, json_object_get(bundle, "data"), "/data");
out:
    lua_close(v.L);
    json_decref(v.forms);
    json_decref(v.roles);
    json_decref(v.flows);
    json_decref(v.reports);
    return v.errors;
}
