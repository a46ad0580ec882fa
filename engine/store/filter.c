/* filter.c - see filter.h. */
#include "store/filter.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "form/ddl.h"
#include "form/record.h"
#include "model/bundle.h"
#include "perm/perm.h"

#define MAX_DEPTH 8
#define MAX_TERMS 200

#define DECISIONS 8   /* forms whose permission decision one compile keeps */

typedef struct fx {
    const filter_ctx *c;
    buf *sql;
    json_t *args;
    filter_err *err;
    int aliases, terms;
    const char *decided[DECISIONS];   /* form of each kept decision */
    perm_decision decisions[DECISIONS];
    int ndecided;
} fx;

static bool fail(fx *f, loom_code code, const char *path, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static bool fail(fx *f, loom_code code, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->err->message, sizeof f->err->message, fmt, ap);
    va_end(ap);
    snprintf(f->err->path, sizeof f->err->path, "%s", path);
    f->err->code = code;
    return false;
}

/* A JSON Pointer one step deeper. */
static void child_path(char *out, size_t n, const char *base, const char *key)
{
    size_t o = (size_t)snprintf(out, n, "%s/", base);
    for (const char *k = key; *k && o + 3 < n; k++) {
        if (*k == '~' || *k == '/') {
            out[o++] = '~';
            out[o++] = *k == '~' ? '0' : '1';
        } else {
            out[o++] = *k;
        }
    }
    out[o < n ? o : n - 1] = '\0';
}

/* ---- what the caller may see ---- */

/* The caller's permission decision on form, decided once per compile (the
 * pointer is valid until the next call). */
static const perm_decision *decision(fx *f, const char *form)
{
    for (int i = 0; i < f->ndecided && i < DECISIONS; i++)
        if (!strcmp(f->decided[i], form))
            return &f->decisions[i];
    int slot = f->ndecided++ % DECISIONS;   /* past DECISIONS forms: reuse the oldest slot */
    if (f->ndecided > DECISIONS)
        perm_free(&f->decisions[slot]);
    perm_decide(f->c->bundle, form, f->c->roles, f->c->admin, &f->decisions[slot]);
    f->decided[slot] = form;
    return &f->decisions[slot];
}

static void fx_done(fx *f)
{
    for (int i = 0; i < f->ndecided && i < DECISIONS; i++)
        perm_free(&f->decisions[i]);
}

static bool may_read(fx *f, const char *form)
{
    return f->c->system || decision(f, form)->read != NULL;
}

static bool visible(fx *f, const char *form, const char *name)
{
    return f->c->system || perm_field(decision(f, form), name) != FIELD_HIDDEN;
}

/* ---- columns ---- */

typedef struct column {
    char expr[160];      /* alias."name" */
    const char *cast;    /* base type of a parameter compared with it */
    json_t *field;       /* the field (borrowed), or a made-up one for system fields (owned) */
    bool owned, array;
} column;

static const struct {
    const char *name, *type, *cast;
} system_columns[] = {
    {"id", "integer", "bigint"},           {"_version", "integer", "bigint"},
    {"_state", "text", "text"},            {"_owner", "user", "bigint"},
    {"_created_by", "user", "bigint"},     {"_updated_by", "user", "bigint"},
    {"_created_at", "datetime", "timestamptz"}, {"_updated_at", "datetime", "timestamptz"},
};

static void column_free(column *col)
{
    if (col->owned)
        json_decref(col->field);
}

/* ---- values ---- */

/* Appends $n::cast for a value (a string, or NULL for SQL NULL). */
static void param(fx *f, const char *value, const char *cast)
{
    json_array_append_new(f->args, value ? json_string(value) : json_null());
    buf_printf(f->sql, "$%zu::%s", json_array_size(f->args), cast);
}

/* "-2h" -> "-2 hours" (a duration for an interval parameter). */
static bool duration_text(const char *s, char *out, size_t n)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || end[1] != '\0')
        return false;
    const char *unit = *end == 'm' ? "minutes" : *end == 'h' ? "hours" : *end == 'd' ? "days" : *end == 'w' ? "weeks" : NULL;
    if (!unit)
        return false;
    snprintf(out, n, "%s%ld %s", *s == '-' ? "-" : "", v, unit);
    return true;
}

/* The value v stands for: a report parameter's when it is {"$param": id}
 * (and the filter runs), else v. */
static json_t *resolved(fx *f, json_t *v)
{
    json_t *id = json_object_size(v) == 1 ? json_object_get(v, "$param") : NULL;
    json_t *pv = id && !f->c->check ? json_object_get(f->c->params, jstr(id)) : NULL;
    return pv ? pv : v;
}

/* Whether v is a day compared with a datetime column: {"$today": ...} or a
 * date ("2026-11-01"), which stand for that day in the app's time zone. */
static bool is_day(fx *f, column *col, json_t *v)
{
    v = resolved(f, v);
    const char *s = json_string_value(v);
    return col->cast && !strcmp(col->cast, "timestamptz") &&
           ((json_object_size(v) == 1 && json_object_get(v, "$today")) || (s && strlen(s) == 10 && s[4] == '-'));
}

/* Appends day v ({"$today": "±<n>d"} or a date) as an SQL date. */
static bool day_sql(fx *f, json_t *v, const char *path)
{
    json_t *today = json_object_get(v, "$today");
    if (!today) {
        json_t *date = json_pack("{s:s}", "type", "date");
        const char *code;
        char msg[200];
        json_t *canon = field_coerce(date, v, &code, msg, sizeof msg);
        json_decref(date);
        if (!canon)
            return fail(f, LOOM_BAD_FILTER, path, "%s", msg);
        param(f, json_string_value(canon), "date");
        json_decref(canon);
        return true;
    }
    char p[512], tmp[32];
    child_path(p, sizeof p, path, "$today");
    const char *s = jstr(today);
    long days = 0;
    char *end = (char *)s;
    if (*s) {
        days = strtol(s, &end, 10);
        if (end == s || strcmp(end, "d") != 0)
            return fail(f, LOOM_BAD_FILTER, p, "$today takes \"\" or ±<n>d");
    }
    buf_puts(f->sql, "((now() AT TIME ZONE ");
    param(f, f->c->timezone ? f->c->timezone : "UTC", "text");
    buf_puts(f->sql, ")::date + ");
    snprintf(tmp, sizeof tmp, "%ld", days);
    param(f, tmp, "integer");
    buf_puts(f->sql, ")");
    return true;
}

/* Appends the instant day v starts in the app's time zone, or the next day
 * starts when next. */
static bool day_start(fx *f, json_t *v, bool next, const char *path)
{
    buf_puts(f->sql, "((");
    if (!day_sql(f, resolved(f, v), path))
        return false;
    buf_puts(f->sql, next ? " + 1)::timestamp AT TIME ZONE " : ")::timestamp AT TIME ZONE ");
    param(f, f->c->timezone ? f->c->timezone : "UTC", "text");
    buf_puts(f->sql, ")");
    return true;
}

/* Appends "(col >= <day v's start> AND col < <the next day's start>)": a
 * datetime on day v. */
static bool on_day(fx *f, column *col, json_t *v, const char *path)
{
    buf_printf(f->sql, "(%s >= ", col->expr);
    if (!day_start(f, v, false, path))
        return false;
    buf_printf(f->sql, " AND %s < ", col->expr);
    if (!day_start(f, v, true, path))
        return false;
    buf_puts(f->sql, ")");
    return true;
}

/* Appends a value compared with col: a value producer ($me, $now, $today,
 * $param, $field) or a literal coerced by the column's field. */
static bool value(fx *f, column *col, json_t *v, const char *path)
{
    if (is_day(f, col, v))   /* a datetime compared with a day: the day's start */
        return day_start(f, v, false, path);
    if (json_is_object(v) && json_object_size(v) == 1) {
        const char *k = json_object_iter_key(json_object_iter(v));
        json_t *x = json_object_iter_value(json_object_iter(v));
        char p[512], tmp[64];
        child_path(p, sizeof p, path, k);
        bool when = col->cast && (!strcmp(col->cast, "timestamptz") || !strcmp(col->cast, "date"));
        if (!strcmp(k, "$me") && (!col->cast || strcmp(col->cast, "bigint")))
            return fail(f, LOOM_BAD_FILTER, p, "$me is compared with user fields");
        if ((!strcmp(k, "$now") || !strcmp(k, "$today")) && !when)
            return fail(f, LOOM_BAD_FILTER, p, "%s is compared with date and datetime fields", k);
        if (!strcmp(k, "$me")) {
            if (!json_is_true(x))
                return fail(f, LOOM_BAD_FILTER, p, "$me takes true");
            snprintf(tmp, sizeof tmp, "%lld", f->c->me);
            param(f, tmp, "bigint");
            return true;
        }
        if (!strcmp(k, "$now")) {
            if (!duration_text(jstr(x), tmp, sizeof tmp) && *jstr(x))
                return fail(f, LOOM_BAD_FILTER, p, "$now takes \"\" or ±<n>m|h|d|w");
            buf_puts(f->sql, "(now() + ");
            param(f, *jstr(x) ? tmp : "0 minutes", "interval");
            buf_puts(f->sql, ")");
            return true;
        }
        if (!strcmp(k, "$today"))   /* a date column: the day itself */
            return day_sql(f, v, path);
        if (!strcmp(k, "$param")) {
            json_t *pv = json_object_get(f->c->params, jstr(x));
            if (!pv)
                return fail(f, LOOM_BAD_FILTER, p, "no parameter \"%.64s\"", jstr(x));
            if (!f->c->check)
                return value(f, col, pv, p);
        } else if (!strcmp(k, "$field")) {
            if (!f->c->check && f->c->field_values) {   /* a write: the record's value (null matches nothing) */
                json_t *fv = json_object_get(f->c->field_values, jstr(x));
                if (!fv || json_is_null(fv)) {
                    buf_puts(f->sql, "NULL");
                    return true;
                }
                return value(f, col, fv, p);
            }
            if (!f->c->field_form || !f->c->check)
                return fail(f, LOOM_BAD_FILTER, p, "$field is for ref filters");
            json_t *form = bundle_item(json_object_get(f->c->bundle, "forms"), f->c->field_form);
            if (!bundle_item(json_object_get(form, "fields"), jstr(x)) && strcmp(jstr(x), "id") != 0)
                return fail(f, LOOM_UNKNOWN_FIELD, p, "no field \"%.64s\"", jstr(x));
        }
        if (!strcmp(k, "$param") || !strcmp(k, "$field")) {   /* checking: a value of the column's type */
            param(f, NULL, col->cast ? col->cast : "text");
            return true;
        }
    }
    const char *code;
    char msg[200];
    json_t *canon = field_coerce(col->field, v, &code, msg, sizeof msg);
    if (!canon)
        return fail(f, LOOM_BAD_FILTER, path, "%s", msg);
    char *text = json_is_string(canon) ? strdup(json_string_value(canon)) : json_dumps(canon, JSON_ENCODE_ANY);
    param(f, text, col->cast);
    free(text);
    json_decref(canon);
    return true;
}

/* % _ \ literally, for ILIKE ... ESCAPE '\'. */
static void like_escape(const char *s, buf *out)
{
    for (; *s; s++) {
        if (*s == '%' || *s == '_' || *s == '\\')
            buf_puts(out, "\\");
        buf_append(out, s, 1);
    }
}

/* ---- operators ---- */

static bool list_values(fx *f, column *col, json_t *list, const char *path)
{
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x)
    {
        char p[512];
        snprintf(p, sizeof p, "%s/%zu", path, i);
        if (i)
            buf_puts(f->sql, ", ");
        if (!value(f, col, x, p))
            return false;
    }
    return true;
}

static bool op(fx *f, column *col, const char *name, json_t *v, const char *path)
{
    buf *s = f->sql;
    if (++f->terms > MAX_TERMS)
        return fail(f, LOOM_BAD_FILTER, path, "the filter has too many conditions");
    bool set_op = !strcmp(name, "$has") || !strcmp(name, "$hasany") || !strcmp(name, "$null");
    if (col->array && !set_op)
        return fail(f, LOOM_BAD_FILTER, path, "a multiselect field is tested with $has, $hasany or $null");
    if (!col->cast && !col->array && strcmp(name, "$null") != 0)
        return fail(f, LOOM_BAD_FILTER, path, "this field can only be tested with $null");
    if (!strcmp(name, "$eq") || !strcmp(name, "$ne")) {
        bool eq = !strcmp(name, "$eq");
        if (json_is_null(v)) {
            buf_printf(s, "%s IS %sNULL", col->expr, eq ? "" : "NOT ");
            return true;
        }
        if (is_day(f, col, v)) {   /* a datetime on that day, in the app's time zone */
            if (!eq)
                buf_printf(s, "(%s IS NULL OR NOT ", col->expr);
            if (!on_day(f, col, v, path))
                return false;
            if (!eq)
                buf_puts(s, ")");
            return true;
        }
        buf_printf(s, "%s %s ", col->expr, eq ? "=" : "IS DISTINCT FROM");   /* $ne also matches null */
        return value(f, col, v, path);
    }
    const char *cmp = !strcmp(name, "$gt") ? ">" : !strcmp(name, "$gte") ? ">=" : !strcmp(name, "$lt") ? "<"
                      : !strcmp(name, "$lte")                                                       ? "<="
                                                                                                     : NULL;
    if (cmp) {
        if (json_is_null(v))
            return fail(f, LOOM_BAD_FILTER, path, "cannot compare with null");
        if (is_day(f, col, v)) {   /* whole days: after a day is from the next one on, up to a day takes it all */
            bool next = !strcmp(name, "$gt") || !strcmp(name, "$lte");
            buf_printf(s, "%s %s ", col->expr, cmp[0] == '>' ? ">=" : "<");
            return day_start(f, v, next, path);
        }
        buf_printf(s, "%s %s ", col->expr, cmp);
        return value(f, col, v, path);
    }
    if (!strcmp(name, "$in") || !strcmp(name, "$nin")) {
        bool in = !strcmp(name, "$in");
        if (!json_is_array(v))
            return fail(f, LOOM_BAD_FILTER, path, "%s takes a list", name);
        if (json_array_size(v) == 0) {
            buf_puts(s, in ? "FALSE" : "TRUE");   /* $in: [] matches nothing */
            return true;
        }
        bool days = false;
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) days = days || is_day(f, col, x);
        if (days) {   /* a datetime on one of the days (or at one of the instants) */
            buf_printf(s, in ? "(" : "(%s IS NULL OR NOT (", col->expr);
            json_array_foreach(v, i, x)
            {
                char p[512];
                snprintf(p, sizeof p, "%s/%zu", path, i);
                buf_puts(s, i ? " OR " : "");
                if (!is_day(f, col, x))
                    buf_printf(s, "%s = ", col->expr);
                if (!(is_day(f, col, x) ? on_day(f, col, x, p) : value(f, col, x, p)))
                    return false;
            }
            buf_puts(s, in ? ")" : "))");
            return true;
        }
        buf_printf(s, in ? "%s IN (" : "(%s NOT IN (", col->expr);
        if (!list_values(f, col, v, path))
            return false;
        if (in)
            buf_puts(s, ")");
        else
            buf_printf(s, ") OR %s IS NULL)", col->expr);   /* $nin also matches null */
        return true;
    }
    if (!strcmp(name, "$between")) {
        if (!json_is_array(v) || json_array_size(v) != 2)
            return fail(f, LOOM_BAD_FILTER, path, "$between takes two values");
        char p[512];
        json_t *lo = json_array_get(v, 0), *hi = json_array_get(v, 1);
        if (is_day(f, col, lo) || is_day(f, col, hi)) {   /* inclusive: the last day whole */
            buf_printf(s, "(%s >= ", col->expr);
            snprintf(p, sizeof p, "%s/0", path);
            if (!value(f, col, lo, p))
                return false;
            buf_printf(s, is_day(f, col, hi) ? " AND %s < " : " AND %s <= ", col->expr);
            snprintf(p, sizeof p, "%s/1", path);
            if (is_day(f, col, hi) ? !day_start(f, hi, true, p) : !value(f, col, hi, p))
                return false;
            buf_puts(s, ")");
            return true;
        }
        buf_printf(s, "%s BETWEEN ", col->expr);
        snprintf(p, sizeof p, "%s/0", path);
        if (!value(f, col, lo, p))
            return false;
        buf_puts(s, " AND ");
        snprintf(p, sizeof p, "%s/1", path);
        return value(f, col, hi, p);
    }
    if (!strcmp(name, "$contains") || !strcmp(name, "$startswith")) {
        if (!json_is_string(v))
            return fail(f, LOOM_BAD_FILTER, path, "%s takes text", name);
        buf pat = {0};
        if (!strcmp(name, "$contains"))
            buf_puts(&pat, "%");
        like_escape(json_string_value(v), &pat);
        buf_puts(&pat, "%");
        buf_printf(s, "%s::text ILIKE ", col->expr);
        param(f, pat.data, "text");
        buf_puts(s, " ESCAPE '\\'");
        buf_free(&pat);
        return true;
    }
    if (!strcmp(name, "$null")) {
        if (!json_is_boolean(v))
            return fail(f, LOOM_BAD_FILTER, path, "$null takes true or false");
        buf_printf(s, "%s IS %sNULL", col->expr, json_is_true(v) ? "" : "NOT ");
        return true;
    }
    if (!strcmp(name, "$has") || !strcmp(name, "$hasany")) {
        if (!col->array)
            return fail(f, LOOM_BAD_FILTER, path, "%s is for multiselect fields", name);
        json_t *one = json_pack("{s:s, s:O}", "type", "select", "options", json_object_get(col->field, "options"));
        column el = {.cast = "text", .field = one};
        bool ok;
        if (!strcmp(name, "$has")) {
            ok = value(f, &el, v, path);
            buf_printf(s, " = ANY(%s)", col->expr);
        } else if (!json_is_array(v)) {
            ok = fail(f, LOOM_BAD_FILTER, path, "$hasany takes a list");
        } else {
            buf_printf(s, "%s && ARRAY[", col->expr);
            ok = list_values(f, &el, v, path);
            buf_puts(s, "]::text[]");
        }
        json_decref(one);
        return ok;
    }
    return fail(f, LOOM_BAD_FILTER, path, "unknown operator %.32s", name);
}

/* The condition on one column: a literal (equality) or an object of operators. */
static bool condition(fx *f, column *col, json_t *v, const char *path)
{
    bool operators = json_is_object(v) && json_object_size(v) > 0;
    const char *k;
    json_t *x;
    if (operators) {   /* {"$now": ...} and friends are values, not operators */
        json_object_foreach(v, k, x) operators = operators && k[0] == '$' &&
            strcmp(k, "$me") && strcmp(k, "$now") && strcmp(k, "$today") && strcmp(k, "$param") && strcmp(k, "$field");
    }
    if (!operators)
        return op(f, col, "$eq", v, path);
    buf_puts(f->sql, "(");
    bool first = true;
    json_object_foreach(v, k, x)
    {
        char p[512];
        child_path(p, sizeof p, path, k);
        if (!first)
            buf_puts(f->sql, " AND ");
        first = false;
        if (!op(f, col, k, x, p))
            return false;
    }
    buf_puts(f->sql, ")");
    return true;
}

/* ---- scopes ---- */

static bool combine(fx *f, const char *form, json_t *fields, const char *alias, json_t *filter, const char *path,
                    int depth);

/* The rows of form (aliased alias) a scope admits: alternatives, any of
 * which admits a row. A permission filter sees every field. */
static bool scope(fx *f, const char *form, const char *alias, json_t *alts)
{
    if (json_array_size(alts) == 0) {
        buf_puts(f->sql, "FALSE");
        return true;
    }
    char me[32];
    snprintf(me, sizeof me, "%lld", f->c->me);
    buf_puts(f->sql, "(");
    size_t i;
    json_t *alt;
    json_array_foreach(alts, i, alt)
    {
        const char *s = json_string_value(alt);
        if (i)
            buf_puts(f->sql, " OR ");
        if (s && !strcmp(s, "all")) {
            buf_puts(f->sql, "TRUE");
        } else if (s && !strcmp(s, "own")) {
            buf_printf(f->sql, "%s.\"_owner\" = ", alias);
            param(f, me, "bigint");
        } else if (s && !strcmp(s, "team")) {   /* my team's records, and mine when I have no team */
            buf_printf(f->sql, "%s.\"_owner\" IN (SELECT o.id FROM loom.users o JOIN loom.users m ON o.id = m.id OR "
                               "o.team = m.team WHERE m.id = ", alias);
            param(f, me, "bigint");
            buf_puts(f->sql, ")");
        } else if (json_is_object(json_object_get(alt, "filter"))) {
            filter_ctx sys = *f->c;
            sys.system = true;
            const filter_ctx *caller = f->c;
            f->c = &sys;
            json_t *fdef = bundle_item(json_object_get(sys.bundle, "forms"), form);
            bool ok = combine(f, form, json_object_get(fdef, "fields"), alias, json_object_get(alt, "filter"),
                              "/filter", 0);
            f->c = caller;
            if (!ok)
                return false;
        } else {
            return fail(f, LOOM_BAD_FILTER, "", "not a scope");
        }
    }
    buf_puts(f->sql, ")");
    return true;
}

/* " AND <the caller's read scope>" on form, unless the caller reads it all. */
static bool read_scope(fx *f, const char *form, const char *alias)
{
    if (f->c->system)
        return true;
    json_t *read = decision(f, form)->read;
    if (perm_scope_all(read))
        return true;
    buf_puts(f->sql, " AND ");
    return scope(f, form, alias, read);
}

/* ---- paths ---- */

/* The condition for path (relative to fields of form, rows aliased alias;
 * prefix is the subform name when fields are a subform's). */
static bool path_condition(fx *f, const char *form, json_t *fields, const char *prefix, const char *alias,
                           const char *table_of_form, const char *dotted, json_t *v, const char *path)
{
    char head[128];
    const char *dot = strchr(dotted, '.');
    snprintf(head, sizeof head, "%.*s", (int)(dot ? dot - dotted : (long)strlen(dotted)), dotted);
    column col = {0};
    for (size_t i = 0; !prefix && i < sizeof system_columns / sizeof system_columns[0]; i++) {
        if (strcmp(system_columns[i].name, head) != 0 || (!strcmp(head, "_state") && !bundle_flow(f->c->bundle, form)))
            continue;
        if (dot)
            return fail(f, LOOM_UNKNOWN_FIELD, path, "\"%.64s\" leads nowhere", head);
        snprintf(col.expr, sizeof col.expr, "%s.\"%s\"", alias, head);
        col.cast = system_columns[i].cast;
        col.field = json_pack("{s:s}", "type", system_columns[i].type);
        col.owned = true;
        bool ok = condition(f, &col, v, path);
        column_free(&col);
        return ok;
    }
    json_t *field = bundle_item(fields, head);
    char name[160];
    snprintf(name, sizeof name, "%s%s%s", prefix ? prefix : "", prefix ? "." : "", head);
    if (!field || !visible(f, form, name))
        return fail(f, LOOM_UNKNOWN_FIELD, path, "no field \"%.64s\"", name);
    const char *type = jstr(json_object_get(field, "type"));
    if (!dot) {
        if (!strcmp(type, "subform"))
            return fail(f, LOOM_BAD_FILTER, path, "filter on a field of the subform (%s.<field>)", head);
        snprintf(col.expr, sizeof col.expr, "%s.\"%s\"", alias, head);
        col.cast = ddl_compare_type(type);
        col.field = field;
        col.array = !strcmp(type, "multiselect");
        return condition(f, &col, v, path);
    }
    char sub_alias[16], child[DDL_NAME_MAX + 1], tmp[160];
    snprintf(sub_alias, sizeof sub_alias, "x%d", ++f->aliases);
    if (!strcmp(type, "ref")) {
        const char *target = jstr(json_object_get(field, "form"));
        json_t *tform = bundle_item(json_object_get(f->c->bundle, "forms"), target);
        if (!tform || !may_read(f, target))   /* a path only goes into forms the caller may read */
            return fail(f, LOOM_UNKNOWN_FIELD, path, "no field \"%.64s\"", dotted);
        buf_puts(f->sql, "EXISTS (SELECT 1 FROM ");
        ddl_quote(f->sql, f->c->schema);
        buf_puts(f->sql, ".");
        ddl_quote(f->sql, target);
        buf_printf(f->sql, " AS %s WHERE %s.\"id\" = %s.\"%s\" AND ", sub_alias, sub_alias, alias, head);
        if (!path_condition(f, target, json_object_get(tform, "fields"), NULL, sub_alias, target, dot + 1, v, path))
            return false;
        if (!read_scope(f, target, sub_alias))   /* and only through the rows the caller may read */
            return false;
        buf_puts(f->sql, ")");
        return true;
    }
    if (!strcmp(type, "subform") && !prefix) {
        snprintf(tmp, sizeof tmp, "%s__%s", table_of_form, head);
        ddl_physical_name(tmp, child);
        buf_puts(f->sql, "EXISTS (SELECT 1 FROM ");
        ddl_quote(f->sql, f->c->schema);
        buf_puts(f->sql, ".");
        ddl_quote(f->sql, child);
        buf_printf(f->sql, " AS %s WHERE %s.\"_parent\" = %s.\"id\" AND ", sub_alias, sub_alias, alias);
        if (!path_condition(f, form, json_object_get(field, "fields"), head, sub_alias, table_of_form, dot + 1, v, path))
            return false;
        buf_puts(f->sql, ")");
        return true;
    }
    return fail(f, LOOM_UNKNOWN_FIELD, path, "\"%.64s\" is neither a ref nor a subform", head);
}

static bool combine(fx *f, const char *form, json_t *fields, const char *alias, json_t *filter, const char *path,
                    int depth)
{
    if (!json_is_object(filter))
        return fail(f, LOOM_BAD_FILTER, path, "a filter is an object");
    if (depth > MAX_DEPTH)
        return fail(f, LOOM_BAD_FILTER, path, "the filter is nested too deeply");
    if (json_object_size(filter) == 0) {
        buf_puts(f->sql, "TRUE");
        return true;
    }
    buf_puts(f->sql, "(");
    bool first = true;
    const char *k;
    json_t *v;
    json_object_foreach(filter, k, v)
    {
        char p[512];
        child_path(p, sizeof p, path, k);
        if (!first)
            buf_puts(f->sql, " AND ");
        first = false;
        if (!strcmp(k, "$and") || !strcmp(k, "$or")) {
            if (!json_is_array(v) || json_array_size(v) == 0)
                return fail(f, LOOM_BAD_FILTER, p, "%s takes a non-empty list of filters", k);
            buf_puts(f->sql, "(");
            size_t i;
            json_t *sub;
            json_array_foreach(v, i, sub)
            {
                char q[512];
                snprintf(q, sizeof q, "%s/%zu", p, i);
                if (i)
                    buf_puts(f->sql, !strcmp(k, "$and") ? " AND " : " OR ");
                if (!combine(f, form, fields, alias, sub, q, depth + 1))
                    return false;
            }
            buf_puts(f->sql, ")");
        } else if (!strcmp(k, "$not")) {
            buf_puts(f->sql, "NOT COALESCE(");   /* the complement: a row with a null is "not vip" */
            if (!combine(f, form, fields, alias, v, p, depth + 1))
                return false;
            buf_puts(f->sql, ", FALSE)");
        } else if (k[0] == '$') {
            return fail(f, LOOM_BAD_FILTER, p, "unknown combinator %.32s", k);
        } else if (!path_condition(f, form, fields, NULL, alias, form, k, v, p)) {
            return false;
        }
    }
    buf_puts(f->sql, ")");
    return true;
}

bool filter_sql(const filter_ctx *c, const char *form, const char *alias, json_t *filter, buf *sql, json_t *args,
                filter_err *err)
{
    fx f = {.c = c, .sql = sql, .args = args, .err = err};
    json_t *fdef = bundle_item(json_object_get(c->bundle, "forms"), form);
    bool ok = fdef && may_read(&f, form) ? combine(&f, form, json_object_get(fdef, "fields"), alias, filter, "", 0)
                                         : fail(&f, LOOM_NOT_FOUND, "", "no such form");
    fx_done(&f);
    return ok;
}

bool filter_scope_sql(const filter_ctx *c, const char *form, const char *alias, json_t *alts, buf *sql,
                      json_t *args, filter_err *err)
{
    fx f = {.c = c, .sql = sql, .args = args, .err = err};
    bool ok = scope(&f, form, alias, alts);
    fx_done(&f);
    return ok;
}
