/* query.c - see query.h. */
#include "store/query.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/secret.h"
#include "form/ddl.h"
#include "model/bundle.h"
#include "perm/perm.h"

/* Decoders of a selected column's text into JSON. */
enum { DEC_INT = 'i', DEC_STR = 's', DEC_BOOL = 'b', DEC_JSON = 'j', DEC_TIME = 't' };

/* How a cursor reads the value of a sort key compared as cast. */
static char cursor_decoder(const char *cast)
{
    return !strcmp(cast, "bigint") || !strcmp(cast, "timestamptz") ? DEC_INT : !strcmp(cast, "boolean") ? DEC_BOOL : DEC_STR;
}

static const struct {
    const char *name, *type;
} system_fields[] = {
    {"id", "integer"},           {"_version", "integer"},       {"_state", "text"},
    {"_owner", "user"},          {"_created_at", "datetime"},   {"_created_by", "user"},
    {"_updated_at", "datetime"}, {"_updated_by", "user"},
};

static bool fail(filter_err *e, loom_code code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool fail(filter_err *e, loom_code code, const char *path, const char *fmt, ...)
{
    e->code = code;
    snprintf(e->path, sizeof e->path, "%s", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return false;
}

/* The type of a system field of form, or NULL when form has no such one. */
static const char *system_type(json_t *bundle, const char *form, const char *name)
{
    for (size_t i = 0; i < sizeof system_fields / sizeof system_fields[0]; i++)
        if (!strcmp(system_fields[i].name, name))
            return strcmp(name, "_state") || bundle_flow(bundle, form) ? system_fields[i].type : NULL;
    return NULL;
}

/* Appends the SQL that renders column col (of alias) of a field of type as
 * its JSON text form; returns the decoder for it. Top-level dates and
 * datetimes come raw (the session is UTC with ISO dates) and are formatted
 * in C, which is cheaper than to_char; inside a subform's JSON they are
 * formatted by SQL. */
static char render(buf *s, const char *alias, const char *col, const char *type, bool in_json)
{
    if (!strcmp(type, "integer") || !strcmp(type, "ref") || !strcmp(type, "user")) {
        buf_printf(s, "%s.\"%s\"", alias, col);
        return DEC_INT;
    }
    if (!strcmp(type, "boolean")) {
        buf_printf(s, "%s.\"%s\"", alias, col);
        return DEC_BOOL;
    }
    if (!in_json && (!strcmp(type, "date") || !strcmp(type, "datetime"))) {
        buf_printf(s, "%s.\"%s\"", alias, col);
        return !strcmp(type, "date") ? DEC_STR : DEC_TIME;
    }
    if (!strcmp(type, "date")) {
        buf_printf(s, "to_char(%s.\"%s\", 'YYYY-MM-DD')", alias, col);
        return DEC_STR;
    }
    if (!strcmp(type, "datetime")) {
        buf_printf(s, "to_char(%s.\"%s\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')", alias, col);
        return DEC_STR;
    }
    if (!strcmp(type, "multiselect")) {
        buf_printf(s, "coalesce(array_to_json(%s.\"%s\"), '[]')", alias, col);
        return DEC_JSON;
    }
    if (!strcmp(type, "file")) {
        buf_printf(s, "%s.\"%s\"", alias, col);
        return DEC_JSON;
    }
    /* text kinds, and decimals: a numeric(p,s) column's text has its scale
     * already; inside JSON they must be made strings */
    buf_printf(s, in_json ? "%s.\"%s\"::text" : "%s.\"%s\"", alias, col);
    return DEC_STR;
}

/* A ref or user column (of alias) as {"id", "title"}: a user's title is its
 * name; a record's is its title field, "#<id>" without one (or when that
 * field is hidden), and absent when the caller may not read the record. As
 * text for a column of its own, as jsonb inside a subform row. */
static void render_expanded(const filter_ctx *c, const char *alias, const char *name, json_t *f, bool as_text,
                            query *q, filter_err *err)
{
    buf *s = &q->sql;
    buf_printf(s, "CASE WHEN %s.\"%s\" IS NULL THEN NULL ELSE jsonb_strip_nulls(jsonb_build_object('id', %s.\"%s\", "
                  "'title', ", alias, name, alias, name);
    if (!f || field_is(f, "user")) {
        buf_printf(s, "(SELECT coalesce(u.display_name, u.username) FROM loom.users u WHERE u.id = %s.\"%s\")", alias,
                   name);
    } else {
        const char *target = jstr(json_object_get(f, "form"));
        json_t *tdef = bundle_item(json_object_get(c->bundle, "forms"), target);
        const char *title = jstr(json_object_get(tdef, "title"));
        perm_decision td;
        perm_decide(c->bundle, target, c->roles, c->admin, &td);
        if (!c->system && !td.read) {
            buf_puts(s, "NULL");
        } else {
            buf_puts(s, "(SELECT ");
            if (*title && bundle_item(json_object_get(tdef, "fields"), title) &&
                (c->system || perm_field(&td, title) != FIELD_HIDDEN))
                buf_printf(s, "e.\"%s\"::text", title);
            else
                buf_puts(s, "'#' || e.\"id\"");
            buf_puts(s, " FROM ");
            ddl_quote(s, c->schema);
            buf_puts(s, ".");
            ddl_quote(s, target);
            buf_printf(s, " AS e WHERE e.\"id\" = %s.\"%s\"", alias, name);
            if (!c->system && !perm_scope_all(td.read)) {
                buf_puts(s, " AND ");
                filter_scope_sql(c, target, "e", td.read, s, q->args, err);
            }
            buf_puts(s, ")");
        }
        perm_free(&td);
    }
    buf_puts(s, as_text ? "))::text END" : ")) END");
}

/* A subform's rows as one JSON array (the fields the caller may read; the
 * refs and users named "<subform>.<field>" in expanded, expanded). */
static void render_subform(query *q, const filter_ctx *c, const perm_decision *d, const char *form, json_t *sub,
                           json_t *expanded, filter_err *err)
{
    buf *s = &q->sql;
    char tmp[160], child[DDL_NAME_MAX + 1];
    snprintf(tmp, sizeof tmp, "%s__%s", form, jstr(json_object_get(sub, "id")));
    ddl_physical_name(tmp, child);
    /* json_build_object keeps the form's order; a function takes at most 100
     * arguments, so a row of more fields is built as jsonb in parts (its keys
     * then come in jsonb's order) */
    size_t i, visible = 0;
    json_t *f;
    json_array_foreach(json_object_get(sub, "fields"), i, f)
    {
        snprintf(tmp, sizeof tmp, "%s.%s", jstr(json_object_get(sub, "id")), jstr(json_object_get(f, "id")));
        visible += c->system || perm_field(d, tmp) != FIELD_HIDDEN;
    }
    const char *build = visible < 49 ? "json_build_object" : "jsonb_build_object";
    buf_printf(s, "(SELECT coalesce(json_agg((%s('id', s.\"id\"", build);
    int pairs = 1;
    json_array_foreach(json_object_get(sub, "fields"), i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        snprintf(tmp, sizeof tmp, "%s.%s", jstr(json_object_get(sub, "id")), id);
        if (!c->system && perm_field(d, tmp) == FIELD_HIDDEN)
            continue;
        if (++pairs % 40 == 0 && visible >= 49)
            buf_puts(s, ") || jsonb_build_object(");
        else
            buf_puts(s, ", ");
        buf_printf(s, "'%s', ", id);   /* an id: [a-z0-9_] only */
        if (json_object_get(expanded, tmp))
            render_expanded(c, "s", id, f, false, q, err);
        else
            render(s, "s", id, jstr(json_object_get(f, "type")), true);   /* nests as JSON inside the row */
    }
    buf_puts(s, ")) ORDER BY s.\"_pos\", s.\"id\"), '[]')::text FROM ");
    ddl_quote(s, c->schema);
    buf_puts(s, ".");
    ddl_quote(s, child);
    buf_puts(s, " AS s WHERE s.\"_parent\" = t.\"id\")");
}

/* The next item of the comma list at *p into name (cut at 127 bytes), the
 * spaces around it trimmed ("name, -budget"; a "+" a URL left unencoded is
 * a space); advances *p past its comma. Its length: 0 when empty, 127 or
 * more when too long. */
static size_t next_item(const char **p, char name[128])
{
    size_t n = strcspn(*p, ",");
    const char *s = *p, *e = *p + n;
    while (s < e && *s == ' ')
        s++;
    while (e > s && e[-1] == ' ')
        e--;
    size_t len = (size_t)(e - s);
    snprintf(name, 128, "%.*s", (int)(len < 127 ? len : 127), s);
    *p += n + ((*p)[n] == ',');
    return len;
}

/* The set of fields to expand (a comma list): refs and users the caller
 * may see, and the system user fields. NULL (and *ok) when there are none. */
static json_t *parse_expand(const filter_ctx *c, const perm_decision *d, const char *form, json_t *fdef,
                            const char *expand, filter_err *err, bool *ok)
{
    *ok = true;
    if (!expand || !*expand)
        return NULL;
    json_t *set = json_object();
    char name[128];
    for (const char *p = expand; *p;) {
        size_t n = next_item(&p, name);
        const char *dot = strchr(name, '.');
        json_t *f;
        if (dot) {   /* a field of a subform's rows: "lines.product" */
            char sub[128];
            snprintf(sub, sizeof sub, "%.*s", (int)(dot - name), name);
            json_t *sf = bundle_item(json_object_get(fdef, "fields"), sub);
            f = sf && field_is(sf, "subform") &&
                        (c->system || perm_field(d, sub) != FIELD_HIDDEN)
                    ? bundle_item(json_object_get(sf, "fields"), dot + 1)
                    : NULL;
        } else {
            f = bundle_item(json_object_get(fdef, "fields"), name);
        }
        const char *type = f ? jstr(json_object_get(f, "type")) : dot ? NULL : system_type(c->bundle, form, name);
        bool visible = f ? c->system || perm_field(d, name) != FIELD_HIDDEN : type != NULL;
        if (n == 0 || n >= 127 || !visible) {
            json_decref(set);
            *ok = fail(err, LOOM_UNKNOWN_FIELD, "/expand", "no field \"%.64s\"", name);
            return NULL;
        }
        if (strcmp(type, "ref") && strcmp(type, "user")) {
            json_decref(set);
            *ok = fail(err, LOOM_BAD_REQUEST, "/expand", "\"%.64s\" is not a ref or user field", name);
            return NULL;
        }
        json_object_set_new(set, name, json_true());
    }
    return set;
}

/* The selected columns: projection (a comma list, or NULL for all the caller
 * may read), with the refs and users of expand expanded; id always. */
static bool select_list(const filter_ctx *c, const perm_decision *d, const char *form, json_t *fdef,
                        const char *projection, const char *expand, query *q, filter_err *err)
{
    bool ok;
    json_t *expanded = parse_expand(c, d, form, fdef, expand, err, &ok);
    if (!ok)
        return false;
    json_t *wanted = NULL;
    if (projection) {
        wanted = json_object();
        char name[128];
        for (const char *p = projection; *p;) {
            size_t n = next_item(&p, name);
            json_t *f = bundle_item(json_object_get(fdef, "fields"), name);
            bool ok = n > 0 && n < 127 && (f ? c->system || perm_field(d, name) != FIELD_HIDDEN
                                             : system_type(c->bundle, form, name) != NULL);
            if (!ok) {
                json_decref(wanted);
                json_decref(expanded);
                return fail(err, LOOM_UNKNOWN_FIELD, "/fields", "no field \"%.64s\"", name);
            }
            json_object_set_new(wanted, name, json_true());
        }
    }
    bool first = true;
    for (size_t i = 0; i < sizeof system_fields / sizeof system_fields[0]; i++) {
        const char *name = system_fields[i].name;
        if (!system_type(c->bundle, form, name) || (wanted && strcmp(name, "id") && !json_object_get(wanted, name)))
            continue;
        if (!first)
            buf_puts(&q->sql, ", ");
        first = false;
        char dec = DEC_JSON;
        if (json_object_get(expanded, name))
            render_expanded(c, "t", name, NULL, true, q, err);
        else
            dec = render(&q->sql, "t", name, system_fields[i].type, false);
        json_array_append_new(q->out, json_pack("[s, s#]", name, &dec, (size_t)1));
    }
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(fdef, "fields"), i, f)
    {
        const char *name = jstr(json_object_get(f, "id")), *type = jstr(json_object_get(f, "type"));
        if ((!c->system && perm_field(d, name) == FIELD_HIDDEN) || (wanted && !json_object_get(wanted, name)))
            continue;
        buf_puts(&q->sql, ", ");
        char dec = DEC_JSON;
        if (!strcmp(type, "subform"))
            render_subform(q, c, d, form, f, expanded, err);
        else if (json_object_get(expanded, name))
            render_expanded(c, "t", name, f, true, q, err);
        else
            dec = render(&q->sql, "t", name, type, false);
        json_array_append_new(q->out, json_pack("[s, s#]", name, &dec, (size_t)1));
    }
    json_decref(wanted);
    json_decref(expanded);
    return true;
}

/* A sort key through a ref ("customer.name"): the ref must be a field the
 * caller sees, and the target's field one it sees there; the value is read
 * from the target record inside the caller's read scope (null outside it). */
static bool sort_through_ref(const filter_ctx *c, const perm_decision *d, json_t *fdef, const char *name, query *q,
                             buf *expr, const char **type, json_t **field, const char **target_form, filter_err *err)
{
    char head[128];
    const char *dot = strchr(name, '.');
    snprintf(head, sizeof head, "%.*s", (int)(dot - name), name);
    json_t *ref = bundle_item(json_object_get(fdef, "fields"), head);
    if (!ref || !field_is(ref, "ref") || (!c->system && perm_field(d, head) == FIELD_HIDDEN) ||
        strchr(dot + 1, '.'))
        return fail(err, LOOM_UNKNOWN_FIELD, "/sort", "no field \"%.64s\"", name);
    const char *target = jstr(json_object_get(ref, "form"));
    json_t *tdef = bundle_item(json_object_get(c->bundle, "forms"), target);
    perm_decision td;
    perm_decide(c->bundle, target, c->roles, c->admin, &td);
    json_t *tf = bundle_item(json_object_get(tdef, "fields"), dot + 1);
    *field = tf;
    *target_form = target;
    *type = tf && (c->system || (td.read && perm_field(&td, dot + 1) != FIELD_HIDDEN)) ? jstr(json_object_get(tf, "type"))
            : !tf && (c->system || td.read) ? system_type(c->bundle, target, dot + 1) : NULL;
    bool ok = *type != NULL;
    if (ok) {
        buf_printf(expr, "(SELECT e.\"%s\" FROM ", dot + 1);   /* checked ids */
        ddl_quote(expr, c->schema);
        buf_puts(expr, ".");
        ddl_quote(expr, target);
        buf_printf(expr, " AS e WHERE e.\"id\" = t.\"%s\"", head);
        if (!c->system && !perm_scope_all(td.read)) {
            buf_puts(expr, " AND ");
            ok = filter_scope_sql(c, target, "e", td.read, expr, q->args, err);
        }
        buf_puts(expr, ")");
    }
    perm_free(&td);
    return ok || fail(err, LOOM_UNKNOWN_FIELD, "/sort", "no field \"%.64s\"", name);
}

/* Wraps expr, a sort key's value, into its rank when the key is a select
 * field (its options' order) or a flow's _state (its states' order), so that
 * it sorts as the form lists them rather than by the stored text; a value
 * no longer among them ranks as empty. The values go as one parameter (a
 * text[] literal). False when the key sorts as it is. */
static bool by_rank(const filter_ctx *c, const char *form, json_t *field, const char *name, query *q, buf *expr)
{
    const char *type = json_string_value(json_object_get(field, "type"));
    json_t *list = type && !strcmp(type, "select") ? json_object_get(field, "options")
                   : !field && !strcmp(name, "_state") ? json_object_get(bundle_flow(c->bundle, form), "states")
                                                       : NULL;
    if (!json_array_size(list))
        return false;
    buf lit = {0};
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o)
    {
        buf_puts(&lit, i ? ",\"" : "{\"");
        for (const char *p = json_string_value(json_object_get(o, field ? "value" : "id")); p && *p; p++) {
            if (*p == '"' || *p == '\\')
                buf_append(&lit, "\\", 1);
            buf_append(&lit, p, 1);
        }
        buf_puts(&lit, "\"");
    }
    buf_puts(&lit, "}");
    json_array_append_new(q->args, json_string(lit.data));
    buf_free(&lit);
    buf ranked = {0};
    buf_printf(&ranked, "array_position($%zu::text[], %s)", json_array_size(q->args), expr->data);
    buf_free(expr);
    *expr = ranked;
    return true;
}

/* Parses the sort into q->sort ([name, desc, cast, SQL expression] per key, id last). */
static bool parse_sort(const filter_ctx *c, const perm_decision *d, const char *form, json_t *fdef, const char *sort,
                       query *q, filter_err *err)
{
    if (!sort || !*sort)
        sort = "-id";
    bool has_id = false, desc = false;
    char item[128], name[128];
    for (const char *p = sort; *p && !has_id;) {
        size_t n = next_item(&p, item);
        desc = *item == '-';
        const char *k = item + (desc || *item == '+');
        while (*k == ' ')
            k++;
        size_t kn = n - (size_t)(k - item);
        snprintf(name, sizeof name, "%s", k);
        buf expr = {0};
        const char *type = NULL, *key_form = form, *key_name = name;
        json_t *f = NULL;
        if (strchr(name, '.')) {   /* through a ref: "customer.name" */
            if (!sort_through_ref(c, d, fdef, name, q, &expr, &type, &f, &key_form, err)) {
                buf_free(&expr);
                return false;
            }
            key_name = strchr(name, '.') + 1;
        } else {
            f = bundle_item(json_object_get(fdef, "fields"), name);
            type = f && (c->system || perm_field(d, name) != FIELD_HIDDEN) ? jstr(json_object_get(f, "type"))
                   : !f ? system_type(c->bundle, form, name) : NULL;
            buf_printf(&expr, "t.\"%s\"", name);   /* checked: a field id */
        }
        if (!type || kn == 0 || kn >= 127) {
            buf_free(&expr);
            return fail(err, LOOM_UNKNOWN_FIELD, "/sort", "no field \"%.64s\"", name);
        }
        bool bad_type = !ddl_compare_type(type), too_many = json_array_size(q->sort) >= QUERY_MAX_SORT, twice = false;
        size_t j;
        json_t *x;
        json_array_foreach(q->sort, j, x) twice = twice || !strcmp(jstr(json_array_get(x, 0)), name);
        if (bad_type || too_many || twice) {
            buf_free(&expr);
            return bad_type   ? fail(err, LOOM_BAD_REQUEST, "/sort", "\"%.64s\" cannot be sorted", name)
                   : too_many ? fail(err, LOOM_BAD_REQUEST, "/sort", "at most 8 sort keys")
                              : fail(err, LOOM_BAD_REQUEST, "/sort", "\"%.64s\" is sorted on twice", name);
        }
        has_id = !strcmp(name, "id");
        const char *cast = by_rank(c, key_form, f, key_name, q, &expr) ? "bigint" : ddl_compare_type(type);
        json_array_append_new(q->sort, json_pack("[s, b, s, s]", name, desc, cast, expr.data));
        buf_free(&expr);
    }
    if (!has_id)   /* the tiebreak that makes the order total, in the last key's direction */
        json_array_append_new(q->sort, json_pack("[s, b, s, s]", "id", desc, "bigint", "t.\"id\""));
    size_t j;
    json_t *x;
    size_t o = 0;
    json_array_foreach(q->sort, j, x)
        o += (size_t)snprintf(q->sort_text + o, o < sizeof q->sort_text ? sizeof q->sort_text - o : 0, "%s%s%s",
                              j ? "," : "", json_is_true(json_array_get(x, 1)) ? "-" : "", jstr(json_array_get(x, 0)));
    return true;
}

/* A cursor value checked against its cast, as parameter text (NULL: SQL null). */
static bool cursor_value(json_t *v, const char *cast, char *out, size_t n)
{
    if (json_is_null(v)) {
        out[0] = '\0';
        return true;
    }
    if (!strcmp(cast, "bigint") || !strcmp(cast, "timestamptz")) {
        if (!json_is_integer(v))
            return false;
        snprintf(out, n, "%lld", (long long)json_integer_value(v));
        return true;
    }
    if (!strcmp(cast, "boolean")) {
        if (!json_is_boolean(v))
            return false;
        snprintf(out, n, "%s", json_is_true(v) ? "true" : "false");
        return true;
    }
    const char *s = json_string_value(v);
    if (!s || strlen(s) >= n)
        return false;
    if (!strcmp(cast, "numeric")) {
        size_t digits = strspn(s + (*s == '-'), "0123456789");
        const char *rest = s + (*s == '-') + digits;
        if (*rest == '.')
            rest += 1 + strspn(rest + 1, "0123456789");
        if (!digits || *rest)
            return false;
    } else if (!strcmp(cast, "date")) {
        int y, m, day;
        char tail;
        static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        if (strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%c", &y, &m, &day, &tail) != 3 || m < 1 || m > 12 || day < 1 ||
            day > mdays[m - 1] || (m == 2 && day == 29 && (y % 4 || (y % 100 == 0 && y % 400))))
            return false;
    }
    snprintf(out, n, "%s", s);
    return true;
}

static void param(query *q, const char *value, const char *cast)
{
    json_array_append_new(q->args, value ? json_string(value) : json_null());
    if (!strcmp(cast, "timestamptz"))   /* epoch microseconds, exactly */
        buf_printf(&q->sql, "('epoch'::timestamptz + $%zu::bigint * interval '1 microsecond')", json_array_size(q->args));
    else
        buf_printf(&q->sql, "$%zu::%s", json_array_size(q->args), cast);
}

/* " AND (<rows after the cursor>)" */
static bool keyset(query *q, const char *cursor, filter_err *err)
{
    unsigned char raw[1024];
    size_t len = strlen(cursor);
    long n = len <= sizeof raw * 4 / 3 ? secret_base64url_decode(cursor, raw) : -1;
    json_t *cur = n > 0 ? json_loadb((const char *)raw, (size_t)n, 0, NULL) : NULL;
    json_t *vals = json_object_get(cur, "k");
    bool ok = cur && !strcmp(jstr(json_object_get(cur, "s")), q->sort_text) && json_is_array(vals) &&
              json_array_size(vals) == json_array_size(q->sort);
    char text[QUERY_MAX_SORT][256];
    for (size_t i = 0; ok && i < json_array_size(vals); i++)
        ok = cursor_value(json_array_get(vals, i), jstr(json_array_get(json_array_get(q->sort, i), 2)), text[i],
                          sizeof text[i]);
    if (!ok) {
        json_decref(cur);
        return fail(err, LOOM_BAD_REQUEST, "/cursor", "not a cursor of this query");
    }
    /* One row comparison when it means the same, which an index on the keys
     * serves directly (the 1000th page as fast as the first): every key
     * descending (a null key sorts first, and compares as not after), or every
     * key ascending on columns that are never null. */
    size_t nk = json_array_size(q->sort);
    bool all_desc = true, all_asc_not_null = true, null_value = false;
    for (size_t i = 0; i < nk; i++) {
        json_t *key = json_array_get(q->sort, i);
        const char *name = jstr(json_array_get(key, 0));
        bool desc = json_is_true(json_array_get(key, 1));
        all_desc = all_desc && desc;
        all_asc_not_null = all_asc_not_null && !desc &&
                           (!strcmp(name, "id") || !strcmp(name, "_version") || !strcmp(name, "_created_at") ||
                            !strcmp(name, "_updated_at"));
        null_value = null_value || json_is_null(json_array_get(vals, i));
    }
    if (!null_value && (all_desc || all_asc_not_null)) {
        buf_puts(&q->sql, " AND (");
        for (size_t i = 0; i < nk; i++)
            buf_printf(&q->sql, "%s%s", i ? ", " : "", jstr(json_array_get(json_array_get(q->sort, i), 3)));
        buf_puts(&q->sql, all_desc ? ") < (" : ") > (");
        for (size_t i = 0; i < nk; i++) {
            if (i)
                buf_puts(&q->sql, ", ");
            param(q, text[i], jstr(json_array_get(json_array_get(q->sort, i), 2)));
        }
        buf_puts(&q->sql, ")");
        json_decref(cur);
        return true;
    }
    /* else: key i is after, the keys before it equal (NULLS LAST ascending, NULLS FIRST descending) */
    buf_puts(&q->sql, " AND (");
    bool any = false;
    for (size_t i = 0; i < json_array_size(q->sort); i++) {
        json_t *key = json_array_get(q->sort, i);
        const char *expr = jstr(json_array_get(key, 3)), *cast = jstr(json_array_get(key, 2));
        bool desc = json_is_true(json_array_get(key, 1)), null = json_is_null(json_array_get(vals, i));
        if (null && !desc)
            continue;   /* nothing sorts after a null ascending but nulls, which the later keys order */
        buf_puts(&q->sql, any ? " OR (" : "(");
        any = true;
        for (size_t j = 0; j < i; j++) {
            const char *jn = jstr(json_array_get(json_array_get(q->sort, j), 3));
            if (json_is_null(json_array_get(vals, j))) {
                buf_printf(&q->sql, "%s IS NULL AND ", jn);
            } else {
                buf_printf(&q->sql, "%s = ", jn);
                param(q, text[j], jstr(json_array_get(json_array_get(q->sort, j), 2)));
                buf_puts(&q->sql, " AND ");
            }
        }
        if (null) {
            buf_printf(&q->sql, "%s IS NOT NULL)", expr);
        } else {
            buf_printf(&q->sql, desc ? "%s < " : "(%s > ", expr);
            param(q, text[i], cast);
            buf_printf(&q->sql, desc ? ")" : " OR %s IS NULL))", expr);
        }
    }
    if (!any)
        buf_puts(&q->sql, "FALSE");
    buf_puts(&q->sql, ")");
    json_decref(cur);
    return true;
}

static void query_init(query *q)
{
    memset(q, 0, sizeof *q);
    q->args = json_array();
    q->out = json_array();
    q->sort = json_array();
}

/* "SELECT <columns> FROM schema.form AS t WHERE <read scope>" */
static bool select_from(const filter_ctx *c, const char *form, const char *fields, const char *expand, query *q,
                        perm_decision *d, json_t **fdef, filter_err *err)
{
    *fdef = bundle_item(json_object_get(c->bundle, "forms"), form);
    perm_decide(c->bundle, form, c->roles, c->admin, d);
    if (!*fdef || (!c->system && !d->read))
        return fail(err, LOOM_NOT_FOUND, "", "no such form");
    buf_puts(&q->sql, "SELECT ");
    if (!select_list(c, d, form, *fdef, fields, expand, q, err))
        return false;
    return true;
}

/* The selected column that holds sort key's value as its cursor reads it
 * (a plain column rendered as is), or -1. */
static int same_column(const query *q, json_t *key)
{
    const char *name = jstr(json_array_get(key, 0)), *cast = jstr(json_array_get(key, 2));
    char want[160];
    snprintf(want, sizeof want, "t.\"%s\"", name);
    if (strcmp(jstr(json_array_get(key, 3)), want) || !strcmp(cast, "timestamptz"))
        return -1;
    char dec = cursor_decoder(cast);
    size_t k;
    json_t *col;
    json_array_foreach(q->out, k, col)
    if (!strcmp(jstr(json_array_get(col, 0)), name))
        return *jstr(json_array_get(col, 1)) == dec ? (int)k : -1;
    return -1;
}

static void from_where(const filter_ctx *c, const char *form, buf *sql)
{
    buf_puts(sql, " FROM ");
    ddl_quote(sql, c->schema);
    buf_puts(sql, ".");
    ddl_quote(sql, form);
    buf_puts(sql, " AS t WHERE ");
}

/* Whether the label of an option (a string, or a map from locale to
 * string) or its value contains s, ignoring ASCII case. */
static bool option_mentions(json_t *o, const char *s)
{
    if (strcasestr(jstr(json_object_get(o, "value")), s))
        return true;
    json_t *label = json_object_get(o, "label"), *l;
    const char *locale;
    if (json_is_string(label))
        return strcasestr(json_string_value(label), s) != NULL;
    json_object_foreach(label, locale, l) if (json_is_string(l) && strcasestr(json_string_value(l), s)) return true;
    return false;
}

static bool searchable_text(const char *type)
{
    static const char *const kinds[] = {"text", "longtext", "email", "phone", "url", "autonumber"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(type, kinds[i]))
            return true;
    return false;
}

/* The filter a search is (NULL for a blank one): any field of form the
 * caller sees containing s, text kinds by their text, selects and
 * multiselects by an option whose label or value contains it, refs by the
 * title of the record they link to. */
static json_t *search_filter(const filter_ctx *c, const perm_decision *d, json_t *fdef, const char *text)
{
    while (*text == ' ')
        text++;
    size_t n = strlen(text);
    while (n && text[n - 1] == ' ')
        n--;
    if (!n)
        return NULL;
    char *s = strndup(text, n);   /* the search, spaces around it trimmed */
    json_t *any = json_array();
    size_t i, k;
    json_t *f, *o;
    json_array_foreach(json_object_get(fdef, "fields"), i, f)
    {
        const char *id = jstr(json_object_get(f, "id")), *type = jstr(json_object_get(f, "type"));
        if (!c->system && perm_field(d, id) == FIELD_HIDDEN)
            continue;
        if (searchable_text(type)) {
            json_array_append_new(any, json_pack("{s:{s:s}}", id, "$contains", s));
        } else if (!strcmp(type, "ref")) {   /* by the title of the record it links to, when the caller reads it */
            const char *target = jstr(json_object_get(f, "form"));
            json_t *tdef = bundle_item(json_object_get(c->bundle, "forms"), target);
            const char *title = json_string_value(json_object_get(tdef, "title"));
            json_t *tf = title ? bundle_item(json_object_get(tdef, "fields"), title) : NULL;
            perm_decision td;
            perm_decide(c->bundle, target, c->roles, c->admin, &td);
            if (tf && searchable_text(jstr(json_object_get(tf, "type"))) &&
                (c->system || (td.read && perm_field(&td, title) != FIELD_HIDDEN))) {
                char path[160];
                snprintf(path, sizeof path, "%s.%s", id, title);
                json_array_append_new(any, json_pack("{s:{s:s}}", path, "$contains", s));
            }
            perm_free(&td);
        } else if (!strcmp(type, "select") || !strcmp(type, "multiselect")) {
            json_t *values = json_array();
            json_array_foreach(json_object_get(f, "options"), k, o) if (option_mentions(o, s))
                json_array_append(values, json_object_get(o, "value"));
            if (json_array_size(values))
                json_array_append_new(any, json_pack("{s:{s:o}}", id, !strcmp(type, "select") ? "$in" : "$hasany", values));
            else
                json_decref(values);
        }
    }
    if (!json_array_size(any))   /* nothing to search in: nothing found */
        json_array_append_new(any, json_pack("{s:{s:[]}}", "id", "$in"));
    free(s);
    return json_pack("{s:o}", "$or", any);
}

/* Appends the read scope of d, filter (NULL: none) and search (NULL: none)
 * over alias t to where, their parameters to args. */
static bool where_sql(const filter_ctx *c, const char *form, const perm_decision *d, json_t *filter, json_t *search,
                      buf *where, json_t *args, filter_err *err)
{
    if (!c->system && !perm_scope_all(d->read)) {
        if (!filter_scope_sql(c, form, "t", d->read, where, args, err))
            return false;
        buf_puts(where, " AND ");
    }
    json_t *everything = json_object();
    bool ok = filter_sql(c, form, "t", filter ? filter : everything, where, args, err);
    json_decref(everything);
    if (!ok) {
        char inner[sizeof err->path];   /* a pointer into the request: under /filter */
        snprintf(inner, sizeof inner, "%s", err->path);
        snprintf(err->path, sizeof err->path, "/filter%s", inner);
        return false;
    }
    if (search) {
        buf_puts(where, " AND ");
        if (!filter_sql(c, form, "t", search, where, args, err))
            return fail(err, err->code, "/search", "%s", err->message);
    }
    return true;
}

bool query_list_base(const filter_ctx *c, const char *form, const query_spec *spec, query *q, filter_err *err)
{
    query_init(q);
    perm_decision d = {0};
    json_t *fdef;
    bool ok = select_from(c, form, spec->fields, spec->expand, q, &d, &fdef, err) && parse_sort(c, &d, form, fdef, spec->sort, q, err);
    q->limit = spec->limit ? spec->limit : QUERY_DEFAULT_LIMIT;
    if (ok && (q->limit < 1 || q->limit > QUERY_MAX_LIMIT))
        ok = fail(err, LOOM_BAD_REQUEST, "/limit", "limit is 1 to 1000");
    /* the sort values of the last row, for its cursor: a selected column
     * that has the same text, else a column of their own after the others */
    size_t i;
    json_t *key;
    int extra = (int)json_array_size(q->out);
    json_array_foreach(ok ? q->sort : NULL, i, key)
    {
        const char *expr = jstr(json_array_get(key, 3));
        int col = same_column(q, key);
        if (col < 0 && !strcmp(jstr(json_array_get(key, 2)), "timestamptz"))
            buf_printf(&q->sql, ", (extract(epoch FROM %s) * 1000000)::bigint", expr);
        else if (col < 0)
            buf_printf(&q->sql, ", %s", expr);
        json_array_append_new(key, json_integer(col < 0 ? extra++ : col));
    }
    /* WHERE: the read scope and the filter; the count's is built again with
     * its own parameters, as the list's may follow parameters of the select
     * list or the sort (a ref's read scope) that the count does not have */
    buf where = {0};
    json_t *search = ok && spec->search ? search_filter(c, &d, fdef, spec->search) : NULL;
    ok = ok && where_sql(c, form, &d, spec->filter, search, &where, q->args, err);
    if (ok && spec->count) {
        buf_puts(&q->count_sql, "SELECT count(*)");
        from_where(c, form, &q->count_sql);
        q->count_args = json_array();
        ok = where_sql(c, form, &d, spec->filter, search, &q->count_sql, q->count_args, err);
    }
    json_decref(search);
    if (ok) {
        from_where(c, form, &q->sql);
        buf_puts(&q->sql, where.data);
    }
    buf_free(&where);
    perm_free(&d);
    return ok;
}

bool query_list_end(query *q, const char *cursor, filter_err *err)
{
    if (cursor && *cursor && !keyset(q, cursor, err))
        return false;
    buf_puts(&q->sql, " ORDER BY ");
    size_t i;
    json_t *key;
    json_array_foreach(q->sort, i, key)
    {
        bool desc = json_is_true(json_array_get(key, 1));
        buf_printf(&q->sql, "%s%s %s", i ? ", " : "", jstr(json_array_get(key, 3)),
                   desc ? "DESC NULLS FIRST" : "ASC NULLS LAST");
    }
    buf_printf(&q->sql, " LIMIT %ld", q->limit + 1);
    return true;
}

bool query_list(const filter_ctx *c, const char *form, const query_spec *spec, query *q, filter_err *err)
{
    return query_list_base(c, form, spec, q, err) && query_list_end(q, spec->cursor, err);
}

void query_copy(const query *src, query *dst)
{
    memset(dst, 0, sizeof *dst);
    buf_append(&dst->sql, src->sql.data ? src->sql.data : "", src->sql.len);
    if (src->count_sql.len)
        buf_append(&dst->count_sql, src->count_sql.data, src->count_sql.len);
    dst->args = json_deep_copy(src->args);
    dst->count_args = src->count_args ? json_deep_copy(src->count_args) : NULL;
    dst->out = json_incref(src->out);     /* never changed after the base is built */
    dst->sort = json_incref(src->sort);
    dst->limit = src->limit;
    memcpy(dst->sort_text, src->sort_text, sizeof dst->sort_text);
}

/* ---- a cache of built queries ---- */

struct query_cache {
    int n;
    unsigned long long uses;
    struct qc_entry {
        char *key;
        query q;
        unsigned long long used;
    } *e;
};

query_cache *query_cache_new(int n)
{
    query_cache *c = calloc(1, sizeof *c);
    c->n = n;
    c->e = calloc((size_t)n, sizeof *c->e);
    return c;
}

void query_cache_free(query_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        if (c->e[i].key) {
            free(c->e[i].key);
            query_free(&c->e[i].q);
        }
    free(c->e);
    free(c);
}

const query *query_cache_get(query_cache *c, const char *key)
{
    for (int i = 0; i < c->n; i++)
        if (c->e[i].key && !strcmp(c->e[i].key, key)) {
            c->e[i].used = ++c->uses;
            return &c->e[i].q;
        }
    return NULL;
}

void query_cache_put(query_cache *c, const char *key, const query *q)
{
    int victim = 0;
    for (int i = 0; i < c->n; i++) {
        if (!c->e[i].key) {
            victim = i;
            break;
        }
        if (c->e[i].used < c->e[victim].used)
            victim = i;
    }
    struct qc_entry *v = &c->e[victim];
    if (v->key) {
        free(v->key);
        query_free(&v->q);
    }
    v->key = strdup(key);
    query_copy(q, &v->q);
    v->used = ++c->uses;
}

bool query_get(const filter_ctx *c, const char *form, const char *id, const char *expand, query *q, filter_err *err)
{
    query_init(q);
    perm_decision d = {0};
    json_t *fdef;
    bool ok = select_from(c, form, NULL, expand, q, &d, &fdef, err);
    if (ok) {
        from_where(c, form, &q->sql);
        buf_puts(&q->sql, "t.\"id\" = ");
        param(q, id, "bigint");
        if (!c->system && !perm_scope_all(d.read)) {
            buf_puts(&q->sql, " AND ");
            ok = filter_scope_sql(c, form, "t", d.read, &q->sql, q->args, err);
        }
    }
    perm_free(&d);
    return ok;
}

bool query_lock(const filter_ctx *c, const char *form, const char *id, bool for_update, query *q, filter_err *err)
{
    query_init(q);
    filter_ctx sys = *c;
    sys.system = true;
    perm_decision d = {0};
    json_t *fdef;
    bool ok = select_from(&sys, form, NULL, NULL, q, &d, &fdef, err);
    json_t *scopes[] = {d.read, d.update, d.remove};
    for (int k = 0; ok && k < 3; k++) {
        if (!scopes[k] || perm_scope_all(scopes[k])) {
            buf_puts(&q->sql, scopes[k] ? ", TRUE" : ", FALSE");
            continue;
        }
        buf_puts(&q->sql, ", (");
        ok = filter_scope_sql(c, form, "t", scopes[k], &q->sql, q->args, err);
        buf_puts(&q->sql, ")");
    }
    if (ok) {
        from_where(&sys, form, &q->sql);
        if (*id == '{') {   /* several: locked in id order, as concurrent lockers of the same rows do */
            buf_puts(&q->sql, "t.\"id\" = ANY(");
            param(q, id, "bigint[]");
            buf_puts(&q->sql, ") ORDER BY t.\"id\"");
        } else {
            buf_puts(&q->sql, "t.\"id\" = ");
            param(q, id, "bigint");
        }
        if (for_update)
            buf_puts(&q->sql, " FOR UPDATE OF t");
    }
    perm_free(&d);
    return ok;
}

/* "2026-11-22 10:00:00.123456+00" -> "2026-11-22T10:00:00Z" in out; false
 * when v is not a UTC timestamp as a UTC session writes it (or is past year
 * 9999): then it is used as PostgreSQL wrote it. */
static bool utc_time(const char *v, char out[21])
{
    size_t n = strlen(v);
    if (n < 22 || v[10] != ' ' || (v[19] != '.' && v[19] != '+') || memcmp(v + n - 3, "+00", 3) != 0)
        return false;
    memcpy(out, v, 19);
    out[10] = 'T';
    out[19] = 'Z';
    out[20] = '\0';
    return true;
}

static json_t *decode(char dec, PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return json_null();
    const char *v = PQgetvalue(r, row, col);
    switch (dec) {
    case DEC_INT: return json_integer(strtoll(v, NULL, 10));
    case DEC_BOOL: return json_boolean(*v == 't');
    case DEC_TIME: {
        char out[21];
        return json_string(utc_time(v, out) ? out : v);
    }
    case DEC_JSON: {
        json_t *j = json_loads(v, JSON_DECODE_ANY, NULL);
        return j ? j : json_null();
    }
    default: return json_string(v);
    }
}

/* The cursor after row (the last of a page): {"s": the sort, "k": its sort
 * values}, base64url, written as text. */
static char *cursor_after(const query *q, PGresult *r, int row)
{
    buf j = {0};
    buf_puts(&j, "{\"s\":");
    buf_json_string(&j, q->sort_text, false);
    buf_puts(&j, ",\"k\":[");
    for (size_t s = 0; s < json_array_size(q->sort); s++) {
        json_t *key = json_array_get(q->sort, s);
        int col = (int)json_integer_value(json_array_get(key, 4));
        if (s)
            buf_append(&j, ",", 1);
        if (PQgetisnull(r, row, col)) {
            buf_puts(&j, "null");
            continue;
        }
        const char *v = PQgetvalue(r, row, col);
        switch (cursor_decoder(jstr(json_array_get(key, 2)))) {
        case DEC_INT: buf_printf(&j, "%lld", strtoll(v, NULL, 10)); break;
        case DEC_BOOL: buf_puts(&j, *v == 't' ? "true" : "false"); break;
        default: buf_json_stringn(&j, v, (size_t)PQgetlength(r, row, col), false);
        }
    }
    buf_puts(&j, "]}");
    char *out = malloc(j.len * 4 / 3 + 4);
    if (!out)
        abort();
    secret_base64url((const unsigned char *)j.data, j.len, out);
    buf_free(&j);
    return out;
}

json_t *query_items(const query *q, PGresult *r, char **next)
{
    json_t *items = json_array();
    int rows = PQntuples(r), ncols = (int)json_array_size(q->out);
    bool more = next && rows > q->limit;
    if (more)
        rows = (int)q->limit;
    for (int i = 0; i < rows; i++) {
        json_t *rec = json_object();
        for (int k = 0; k < ncols; k++) {
            json_t *col = json_array_get(q->out, (size_t)k);
            json_object_set_new(rec, jstr(json_array_get(col, 0)), decode(*jstr(json_array_get(col, 1)), r, i, k));
        }
        json_array_append_new(items, rec);
    }
    if (next)
        *next = more ? cursor_after(q, r, rows - 1) : NULL;
    return items;
}

void query_page_json(const query *q, PGresult *r, buf *out, char **next)
{
    int rows = PQntuples(r), ncols = (int)json_array_size(q->out);
    bool more = rows > q->limit;
    if (more)
        rows = (int)q->limit;
    /* per column, once: its decoder and its key text ("\"name\":", with the comma before it) */
    char *decs = malloc((size_t)ncols + 1);
    size_t *at = malloc(sizeof *at * (size_t)(ncols + 1));
    buf keys = {0};
    for (int k = 0; k < ncols; k++) {
        json_t *col = json_array_get(q->out, (size_t)k);
        decs[k] = *jstr(json_array_get(col, 1));
        at[k] = keys.len;
        buf_puts(&keys, k ? ",\"" : "\"");
        buf_puts(&keys, jstr(json_array_get(col, 0)));   /* ids: [a-z0-9_] */
        buf_puts(&keys, "\":");
    }
    at[ncols] = keys.len;
    buf_reserve(out, (keys.len + (size_t)ncols * 16) * (size_t)rows + 8);   /* near enough: it grows if not */
    buf_append(out, "[", 1);
    for (int i = 0; i < rows; i++) {
        buf_append(out, i ? ",{" : "{", i ? 2 : 1);
        for (int k = 0; k < ncols; k++) {
            buf_append(out, keys.data + at[k], at[k + 1] - at[k]);
            size_t n = (size_t)PQgetlength(r, i, k);
            if (!n && PQgetisnull(r, i, k)) {   /* only an empty value may be a null */
                buf_append(out, "null", 4);
                continue;
            }
            const char *v = PQgetvalue(r, i, k);
            switch (decs[k]) {
            case DEC_INT:   /* numbers as PostgreSQL wrote them */
                buf_append(out, v, n);
                break;
            case DEC_JSON:   /* PostgreSQL's JSON text spaces its tokens out */
                buf_json_compact(out, v, n);
                break;
            case DEC_BOOL:
                buf_append(out, *v == 't' ? "true" : "false", *v == 't' ? 4 : 5);
                break;
            case DEC_TIME: {
                char t[21];
                if (utc_time(v, t))
                    buf_json_stringn(out, t, 20, false);
                else
                    buf_json_stringn(out, v, n, false);
                break;
            }
            default:
                buf_json_stringn(out, v, n, false);
            }
        }
        buf_append(out, "}", 1);
    }
    buf_append(out, "]", 1);
    buf_free(&keys);
    free(at);
    free(decs);
    *next = more ? cursor_after(q, r, rows - 1) : NULL;
}

void query_free(query *q)
{
    buf_free(&q->sql);
    buf_free(&q->count_sql);
    json_decref(q->args);
    json_decref(q->count_args);
    json_decref(q->out);
    json_decref(q->sort);
}

const char **query_params(arena *a, json_t *args, int *n)
{
    *n = (int)json_array_size(args);
    const char **vals = arena_alloc(a, ((size_t)*n + 1) * sizeof *vals);
    for (int i = 0; i < *n; i++)
        vals[i] = json_string_value(json_array_get(args, (size_t)i));
    return vals;
}

PGresult *query_exec(db *d, arena *a, const char *sql, json_t *args, loom_err *err)
{
    int n;
    const char **vals = query_params(a, args, &n);
    return db_query_text(d, a, sql, n, vals, err);
}
