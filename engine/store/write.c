/* write.c - see write.h. */
#include "store/write.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "flow/flow.h"
#include "form/ddl.h"
#include "form/record.h"
#include "form/schema.h"
#include "model/bundle.h"
#include "perm/perm.h"
#include "store/query.h"

/* One write in progress. */
typedef struct wr {
    const write_ctx *w;
    const char *form;
    json_t *fdef, *fields;
    const field_table *ft;   /* the form's fields read once, when a write first needs them: fields_of() */
    field_table *own_ft;     /* ... read by this write itself (no snapshot's to use), freed with it */
    perm_decision d;
    json_t *errors;          /* validation problems, reported together */
    json_t *expr_errors;     /* expressions that failed at run time (formula_error) */
    write_result *out;
    bool have_clock;
    char now[24], today[12];
    int clock_use;           /* whether expressions read the clock: -1 not known yet */
    json_t *orders;          /* formula order per field list ("" the record's, else the subform's id) */
    json_t *view_names;      /* the names the record's expressions read (null: any); NULL: not known yet */
    char key_prefix[200];    /* of the chunk cache keys */
    size_t key_len;
    bool plain;              /* every field writable by the caller, no subforms: a body needs no stripping */
    bool has_files;          /* the form has file fields (in rows too) */
    /* what the record's own fields hold, so that a write (an import's every row) skips what has nothing to do */
    bool has_subforms, has_links, has_defaults, has_conditions;
    json_t *flow;            /* the form's flow, or NULL */
    const char *state;       /* an update of a record in a flow: its state (what is editable) */
    json_t *input;           /* a transition: the fields it takes, writable whatever their mode, else NULL */
    bool peek;               /* read a record without locking it (what the caller may do) */
    bool approving;          /* completing an approved transition: no new approval, none pending to stop it */
    json_t *pending;         /* the approval pending on the record being written, or NULL */
    int manages;             /* the caller manages the user of the state's manager_of assignee: 0 not asked
                                yet, 1 no, 2 yes (asked once however many transitions are weighed) */
    bool copying;            /* a COPY FROM STDIN is open and its data goes through (copy_start) */
} wr;

static bool fail(wr *x, loom_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static bool fail(wr *x, loom_code code, const char *fmt, ...)
{
    x->out->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->out->message, sizeof x->out->message, fmt, ap);
    va_end(ap);
    return false;
}

static void problem(json_t *errors, const char *path, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void problem(json_t *errors, const char *path, const char *code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(errors, json_pack("{s:s, s:s, s:s}", "path", path, "code", code, "message", msg));
}

/* ---- the database ---- */

static bool db_failed(wr *x, const loom_err *e)
{
    x->out->code = e->code;
    x->out->db = *e;
    x->out->from_db = true;
    snprintf(x->out->message, sizeof x->out->message, "%s", e->message ? e->message : "database error");
    return false;
}

static PGresult *run(wr *x, const char *sql, json_t *args, loom_err *e)
{
    return query_exec(x->w->db, x->w->a, sql, args, e);
}

/* Runs sql; a failure ends the write as the database's. */
static PGresult *must(wr *x, const char *sql, json_t *args)
{
    loom_err e = {0};
    PGresult *r = run(x, sql, args, &e);
    if (!r)
        db_failed(x, &e);
    return r;
}

static void arg(json_t *args, const char *v)
{
    json_array_append_new(args, v ? json_string(v) : json_null());
}

static void arg_int(json_t *args, long long v)
{
    char t[24];
    snprintf(t, sizeof t, "%lld", v);
    arg(args, t);
}

/* The acting user's id as a parameter: NULL for the system actor (0). */
static void arg_me(json_t *args, long long me)
{
    if (me)
        arg_int(args, me);
    else
        arg(args, NULL);
}

static void arg_json(json_t *args, json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    arg(args, s);
    free(s);
}

static void qualified(buf *s, const char *schema, const char *table)
{
    ddl_quote(s, schema);
    buf_puts(s, ".");
    ddl_quote(s, table);
}

static void child_table(const char *form, const char *sub, char out[DDL_NAME_MAX + 1])
{
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s__%s", form, sub);
    ddl_physical_name(tmp, out);
}

/* What now() and today() answer during this write: the transaction's time,
 * today in the app's time zone. */
/* The transaction's clock, now and today in the app's timezone. */
static bool read_clock(const write_ctx *w, char now[24], char today[12], loom_err *e)
{
    static db_stmt st = {.sql = "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                                "to_char(now() AT TIME ZONE $1, 'YYYY-MM-DD')"};
    const char *p[] = {w->fc->timezone};
    PGresult *r = db_query(w->db, w->a, &st, 1, p, e);
    if (!r)
        return false;
    snprintf(now, 24, "%s", PQgetvalue(r, 0, 0));
    snprintf(today, 12, "%s", PQgetvalue(r, 0, 1));
    return true;
}

bool write_fix_clock(write_ctx *w, write_result *out)
{
    memset(out, 0, sizeof *out);
    loom_err e = {0};
    if (read_clock(w, w->now, w->today, &e))
        return true;
    w->now[0] = '\0';
    out->code = e.code;
    out->db = e;
    out->from_db = true;
    snprintf(out->message, sizeof out->message, "%s", e.message ? e.message : "database error");
    return false;
}

static bool tx_clock(wr *x)
{
    if (x->have_clock)
        return true;
    loom_err e = {0};
    if (x->w->now[0]) {
        memcpy(x->now, x->w->now, sizeof x->now);
        memcpy(x->today, x->w->today, sizeof x->today);
    } else if (!read_clock(x->w, x->now, x->today, &e)) {
        return db_failed(x, &e);
    }
    sandbox_set_clock(x->w->sb, x->now, x->today);
    x->have_clock = true;
    return true;
}

/* ---- field modes ---- */

static perm_mode mode(wr *x, const char *sub, const char *id)
{
    if (!sub)
        return perm_field(&x->d, id);
    char name[160];
    snprintf(name, sizeof name, "%s%s%s", sub ? sub : "", sub ? "." : "", id);
    return perm_field(&x->d, name);
}

static json_t *row_by_id(json_t *rows, json_t *id, size_t *index)
{
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) if (id && json_equal(json_object_get(r, "id"), id))
    {
        if (index)
            *index = i;
        return r;
    }
    return NULL;
}

/* Whether v, as field f stores it, is the stored value old: an unchanged
 * value is no change, however it is written (0 for the money "0.00", a
 * ref as {"id": 7} for 7). */
static bool unchanged(json_t *f, json_t *v, json_t *old)
{
    if (json_equal(v, old) || (json_is_null(v) && !old))
        return true;
    if (!v || !old || json_is_null(v) || json_is_null(old) || field_is(f, "subform"))
        return false;
    const char *code;
    char msg[200];
    json_t *canon = field_coerce(f, v, &code, msg, sizeof msg);
    bool same = canon && json_equal(canon, old);
    json_decref(canon);
    return same;
}

/* A copy of a subform's rows without what the caller may not write. In an
 * update, a row with an id is completed from the stored row (the fields the
 * caller did not send, and may not see), and values equal to the stored ones
 * are accepted for fields it may not write: rows are sent whole. */
static json_t *strip_rows(wr *x, json_t *sub, json_t *rows, json_t *old_rows, const char *base, bool input)
{
    const char *sid = jstr(json_object_get(sub, "id"));
    json_t *subfields = json_object_get(sub, "fields");
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        if (!json_is_object(r)) {
            json_array_append(out, r);   /* record_check reports it */
            continue;
        }
        json_t *id = json_object_get(r, "id");
        json_t *old = old_rows ? row_by_id(old_rows, id, NULL) : NULL;
        if (id && json_is_integer(id) && !old) {
            char p[512];
            snprintf(p, sizeof p, "%s/%zu/id", base, i);
            problem(x->errors, p, "not_found", "no such row in this record");
        }
        json_t *copy = json_object();
        const char *k;
        json_t *v;
        json_object_foreach(r, k, v)
        {
            json_t *f = bundle_item(subfields, k);
            perm_mode m = f ? mode(x, sid, k) : FIELD_WRITE;
            if (input && m == FIELD_READ)   /* a transition's input: its rows are writable too */
                m = FIELD_WRITE;
            bool same = old && f && unchanged(f, v, json_object_get(old, k));
            if (f && (m != FIELD_WRITE || field_computed(f)) && same)
                continue;
            if (f && m != FIELD_WRITE) {
                char p[512];
                snprintf(p, sizeof p, "%s/%zu/%s", base, i, k);
                if (m == FIELD_HIDDEN)
                    problem(x->errors, p, "unknown_field", "no such field");
                else
                    problem(x->errors, p, "readonly", "you may not change this field");
                continue;
            }
            json_object_set(copy, k, v);
        }
        if (old) {   /* what was not sent stays as it is */
            json_object_foreach(old, k, v)
            {
                json_t *f = bundle_item(subfields, k);
                if (f && !field_computed(f) && !json_object_get(copy, k))
                    json_object_set(copy, k, v);
            }
        }
        json_array_append_new(out, copy);
    }
    return out;
}

/* A copy of body without the fields the caller may not write (each an
 * error: hidden ones exactly like fields that do not exist). */
static json_t *strip(wr *x, json_t *body, json_t *old)
{
    if (x->plain && !old && !json_object_get(body, "_owner"))
        return json_incref(body);
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        json_t *f = bundle_item(x->fields, k);
        char p[256];
        snprintf(p, sizeof p, "/%.200s", k);
        if (!f) {
            if (!strcmp(k, "_owner") && !perm_scope_all(x->d.update))
                problem(x->errors, p, "readonly", "only a caller who may update every record sets the owner");
            else
                json_object_set(out, k, v);   /* system fields and unknown ones: record_check reports them */
            continue;
        }
        perm_mode m = mode(x, NULL, k);
        bool input = x->input && flow_has(x->input, k);
        if (m == FIELD_HIDDEN) {
            problem(x->errors, p, "unknown_field", "no such field");
        } else if (x->input && !input) {
            problem(x->errors, p, "readonly", "not an input of this transition");
        } else if (m == FIELD_READ && !input) {
            if (!old || !unchanged(f, v, json_object_get(old, k)))   /* sending it back unchanged is no change */
                problem(x->errors, p, "readonly", "you may not change this field");
        } else if (!x->input && x->state && !x->w->fc->system && !flow_editable(x->flow, x->state, k) &&
                   !unchanged(f, v, old ? json_object_get(old, k) : NULL)) {
            problem(x->errors, p, "readonly", "not editable in state \"%s\"", x->state);
        } else if (field_is(f, "subform") && json_is_array(v)) {
            json_object_set_new(out, k, strip_rows(x, f, v, old ? json_object_get(old, k) : NULL, p, input));
        } else {
            json_object_set(out, k, v);
        }
    }
    return out;
}

/* ---- defaults ---- */

/* The value d assigned to field f (a default, a transition's set): "me",
 * "now" and "today" resolved; NULL when the clock cannot be read or d does
 * not fit f (*code, msg say why; publishing checks defaults). */
static json_t *assigned_value(wr *x, json_t *f, json_t *d, const char **code, char *msg, size_t n)
{
    const char *s = json_string_value(d);
    *code = NULL;
    if (s && !strcmp(s, "me") && field_is(f, "user"))
        return x->w->fc->me ? json_integer(x->w->fc->me) : json_null();   /* the system actor is nobody */
    if (s && (!strcmp(s, "now") || !strcmp(s, "today")) && (field_is(f, "date") || field_is(f, "datetime"))) {
        if (!tx_clock(x))
            return NULL;
        return json_string(field_is(f, "date") ? x->today : x->now);
    }
    return field_coerce(f, d, code, msg, n);
}

/* Whether the caller holds one of user field f's roles (or f has none). */
static bool holds_field_role(wr *x, json_t *f)
{
    json_t *want = json_object_get(f, "roles");
    if (!json_array_size(want))
        return true;
    size_t i, k;
    json_t *r, *mine;
    json_array_foreach(want, i, r) json_array_foreach(x->w->fc->roles, k, mine) if (json_equal(r, mine)) return true;
    return false;
}

static json_t *default_value(wr *x, json_t *f)
{
    const char *code;
    char msg[256];
    json_t *d = json_object_get(f, "default");
    if (json_is_string(d) && !strcmp(json_string_value(d), "me") && !holds_field_role(x, f))
        return json_null();   /* "me" only for whom the field may hold: else empty, for the caller to choose */
    return assigned_value(x, f, d, &code, msg, sizeof msg);
}

/* Fills the defaults of the fields absent from given into values. */
static bool defaults(wr *x, json_t *fields, json_t *given, json_t *values)
{
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        if (!json_object_get(f, "default") || json_object_get(given, id) || field_is(f, "subform"))
            continue;
        json_t *v = default_value(x, f);
        if (!v)
            return x->out->code == LOOM_OK ? fail(x, LOOM_INTERNAL, "bad default") : false;
        json_object_set_new(values, id, v);
    }
    return true;
}

/* The form's fields read once (a write that checks no body and runs no
 * expression never needs them; an import's batch reads them once). */
static const field_table *fields_of(wr *x)
{
    if (!x->ft)
        x->ft = form_tables_get(x->w->tables, x->form);
    if (!x->ft)
        x->ft = x->own_ft = field_table_new(x->fields);
    return x->ft;
}

/* ---- expressions ---- */

/* A value as Lua sees it: decimals and money (number) as numbers. */
static json_t *lua_value(bool number, json_t *v)
{
    if (number && json_is_string(v))
        return json_real(strtod(json_string_value(v), NULL));
    return json_incref(v);
}

/* The variables of an expression over rec (fields of t): subform rows
 * included unless rows is false; only those in names unless names is NULL
 * or null. */
static json_t *lua_view(const field_table *t, json_t *rec, bool rows, json_t *names)
{
    json_t *o = json_object();
    bool all = !json_is_object(names);
    for (size_t i = 0; i < t->n; i++) {
        const field_info *fi = &t->f[i];
        json_t *v = json_object_get(rec, fi->id);
        if (!v || (!all && !json_object_get(names, fi->id))) {
            continue;
        } else if (!fi->subform) {
            json_object_set_new(o, fi->id, lua_value(fi->number, v));
        } else if (rows) {
            json_t *a = json_array();
            size_t r;
            json_t *row;
            json_array_foreach(v, r, row) json_array_append_new(a, lua_view(fi->rows, row, false, NULL));
            json_object_set_new(o, fi->id, a);
        }
    }
    const char *k;
    json_t *v;
    json_object_foreach(rec, k, v) if ((*k == '_' || !strcmp(k, "id")) && (all || json_object_get(names, k)))
        json_object_set(o, k, v);   /* system fields */
    return o;
}

static void add_names(json_t *into, const char *code)
{
    if (!code)
        return;
    json_t *names = sandbox_names(code, strlen(code));
    json_object_update(into, names);
    json_decref(names);
}

/* The names the record's own expressions (its subform rows' aside) read: a
 * set, or null when one names _ENV (then the view holds every field). */
static json_t *view_names(json_t *fields, json_t *checks)
{
    json_t *names = json_object();
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        add_names(names, json_string_value(json_object_get(f, "formula")));
        add_names(names, json_string_value(json_object_get(f, "required")));
        add_names(names, json_string_value(json_object_get(f, "visible_when")));
    }
    json_array_foreach(checks, i, f) add_names(names, json_string_value(json_object_get(f, "expr")));
    if (!json_object_get(names, "_ENV"))
        return names;
    json_decref(names);
    return json_null();
}

/* Runs expression code (cached under what) with vars; *out its value. */
static loom_code eval(wr *x, const char *what, const char *code, json_t *vars, json_t **out, char *err, size_t n)
{
    char key[320];
    if (!x->key_len)   /* "<app>/<version>/<form>/" once per write */
        x->key_len = (size_t)snprintf(x->key_prefix, sizeof x->key_prefix, "%s/%d/%s/", x->w->app, x->w->version, x->form);
    size_t wl = strlen(what);
    if (x->key_len + wl >= sizeof key)
        wl = sizeof key - x->key_len - 1;
    memcpy(key, x->key_prefix, x->key_len);
    memcpy(key + x->key_len, what, wl);
    key[x->key_len + wl] = '\0';
    *out = NULL;
    int chunk = sandbox_compile(x->w->sb, key, code, strlen(code), true, err, n);
    if (chunk < 0)
        return LOOM_RULE_ERROR;
    return sandbox_run(x->w->sb, chunk, vars, out, err, n);
}

/* Evaluates a condition; false with the failure noted when it fails. */
static bool condition(wr *x, const char *what, const char *code, json_t *vars, const char *path, bool *truth)
{
    json_t *v;
    char err[256];
    loom_code c = eval(x, what, code, vars, &v, err, sizeof err);
    if (c != LOOM_OK) {
        problem(x->expr_errors, path, c == LOOM_RULE_LIMIT ? "rule_limit" : "formula_error", "%s", err);
        return false;
    }
    *truth = v && !json_is_null(v) && !json_is_false(v);
    json_decref(v);
    return true;
}

/* The formula fields of fields, each after the formulas it uses. */
static json_t *formula_order(json_t *fields)
{
    json_t *order = json_array(), *done = json_object();
    for (bool progress = true; progress;) {
        progress = false;
        size_t i;
        json_t *f;
        json_array_foreach(fields, i, f)
        {
            const char *id = jstr(json_object_get(f, "id")), *code = json_string_value(json_object_get(f, "formula"));
            if (!code || json_object_get(done, id))
                continue;
            json_t *names = sandbox_names(code, strlen(code));
            bool ready = true;
            const char *n;
            json_t *y;
            json_object_foreach(names, n, y)
            {
                json_t *dep = bundle_item(fields, n);
                ready = ready && !(dep && dep != f && json_object_get(dep, "formula") && !json_object_get(done, n));
            }
            json_decref(names);
            if (ready) {
                json_array_append(order, f);
                json_object_set_new(done, id, json_true());
                progress = true;
            }
        }
    }
    json_decref(done);
    return order;
}

/* A formula's result as the field's canonical value: numbers rounded half
 * away from zero to a decimal's scale, whole reals as integers, numbers as
 * text for text fields. NULL with *code when it does not fit. */
static json_t *formula_value(json_t *f, json_t *v, const char **code, char *msg, size_t n)
{
    if (!v || json_is_null(v))
        return json_null();
    json_t *conv = NULL;
    if ((field_is(f, "decimal") || field_is(f, "money")) && json_is_number(v)) {
        json_t *sc = json_object_get(f, "scale");
        int scale = field_is(f, "money") ? 2 : json_is_integer(sc) ? (int)json_integer_value(sc) : 2;
        double p = pow(10, scale), d = json_number_value(v);
        d = round(d * p) / p;
        char t[64];
        snprintf(t, sizeof t, "%.*f", scale, d);
        conv = json_string(t);
    } else if (field_is(f, "integer") && json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9007199254740992.0) {
        conv = json_integer((json_int_t)json_real_value(v));
    } else if (json_is_number(v) && ddl_compare_type(jstr(json_object_get(f, "type"))) &&
               !strcmp(ddl_compare_type(jstr(json_object_get(f, "type"))), "text")) {
        char t[64];
        if (json_is_integer(v))
            snprintf(t, sizeof t, "%lld", (long long)json_integer_value(v));
        else
            snprintf(t, sizeof t, "%.15g", json_real_value(v));
        conv = json_string(t);
    }
    json_t *out = field_coerce(f, conv ? conv : v, code, msg, n);
    json_decref(conv);
    return out;
}

/* Computes the formulas of fields over rec (its Lua view in view, kept up
 * to date). what_prefix names the chunks; base is the JSON Pointer of rec. */
static void formulas(wr *x, json_t *fields, const char *what_prefix, json_t *rec, json_t *view, const char *base)
{
    json_t *order = json_object_get(x->orders, what_prefix);   /* computed once per write or batch */
    if (!order) {
        order = formula_order(fields);
        json_object_set_new(x->orders, what_prefix, order);
    }
    size_t i;
    json_t *f;
    json_array_foreach(order, i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        char what[160], path[512], err[256];
        snprintf(what, sizeof what, "%s%s/formula", what_prefix, id);
        json_t *v, *canon = NULL;
        const char *code = NULL;
        loom_code c = eval(x, what, jstr(json_object_get(f, "formula")), view, &v, err, sizeof err);
        if (c == LOOM_OK) {
            canon = formula_value(f, v, &code, err, sizeof err);
            json_decref(v);
        }
        if (!canon)   /* the path only for a problem */
            snprintf(path, sizeof path, "%s/%s", base, id);
        if (c != LOOM_OK) {
            problem(x->expr_errors, path, c == LOOM_RULE_LIMIT ? "rule_limit" : "formula_error", "%s", err);
            json_object_set_new(rec, id, json_null());
            json_object_set_new(view, id, json_null());
            continue;
        }
        if (!canon) {
            problem(x->errors, path, code, "%s", err);
            canon = json_null();
        }
        json_object_set_new(view, id, lua_value(field_is(f, "decimal") || field_is(f, "money"), canon));
        json_object_set_new(rec, id, canon);
    }
}

static bool empty(json_t *v)
{
    return !v || json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0) ||
           (json_is_string(v) && !*json_string_value(v));
}

/* Drops the "required" problem reported at path (a field that is hidden is
 * never required). */
static void unrequire(wr *x, const char *path)
{
    for (size_t i = json_array_size(x->errors); i-- > 0;) {
        json_t *e = json_array_get(x->errors, i);
        if (!strcmp(jstr(json_object_get(e, "path")), path) && !strcmp(jstr(json_object_get(e, "code")), "required"))
            json_array_remove(x->errors, i);
    }
}

/* visible_when and conditional required over the fields of rec. */
static void requirements(wr *x, json_t *fields, const char *what_prefix, json_t *rec, json_t *view, const char *base)
{
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        const char *vis = json_string_value(json_object_get(f, "visible_when"));
        const char *req = json_string_value(json_object_get(f, "required"));
        if (!vis && !req)
            continue;
        char what[160], path[512];
        snprintf(path, sizeof path, "%s/%s", base, id);
        bool shown = true, needed = false;
        if (vis) {
            snprintf(what, sizeof what, "%s%s/visible_when", what_prefix, id);
            if (!condition(x, what, vis, view, path, &shown))
                continue;
        }
        if (!shown) {
            unrequire(x, path);
            continue;
        }
        if (req) {
            snprintf(what, sizeof what, "%s%s/required", what_prefix, id);
            if (condition(x, what, req, view, path, &needed) && needed && empty(json_object_get(rec, id)))
                problem(x->errors, path, "required", "a value is required");
        }
    }
}

static bool has_expressions(json_t *fields)
{
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        if (json_object_get(f, "formula") || json_is_string(json_object_get(f, "required")) ||
            json_object_get(f, "visible_when"))
            return true;
        if (field_is(f, "subform") && has_expressions(json_object_get(f, "fields")))
            return true;
    }
    return false;
}

static bool mentions_clock(const char *expr)
{
    if (!expr)
        return false;
    json_t *names = sandbox_names(expr, strlen(expr));
    bool yes = json_object_get(names, "now") || json_object_get(names, "today");
    json_decref(names);
    return yes;
}

/* Whether an expression of fields (or of checks) asks now() or today(). */
static bool uses_clock(json_t *fields, json_t *checks)
{
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        if (mentions_clock(json_string_value(json_object_get(f, "formula"))) ||
            mentions_clock(json_string_value(json_object_get(f, "required"))) ||
            mentions_clock(json_string_value(json_object_get(f, "visible_when"))) ||
            (field_is(f, "subform") && uses_clock(json_object_get(f, "fields"), NULL)))
            return true;
    }
    json_array_foreach(checks, i, f) if (mentions_clock(json_string_value(json_object_get(f, "expr")))) return true;
    return false;
}

/* Formulas, then conditions and checks, over the whole record. */
static bool expressions(wr *x, json_t *rec)
{
    json_t *checks = json_object_get(x->fdef, "checks");
    if (!json_array_size(checks) && !has_expressions(x->fields))
        return true;
    /* the transaction's clock only when an expression reads it: a round trip saved otherwise */
    if (x->clock_use < 0)
        x->clock_use = uses_clock(x->fields, checks);
    if (x->clock_use && !tx_clock(x))
        return false;
    if (!x->view_names)
        x->view_names = view_names(x->fields, checks);
    const field_table *ft = fields_of(x);
    json_t *view = lua_view(ft, rec, true, x->view_names);
    json_t *parent = NULL;   /* what a subform row sees of the record: made when a row needs it */
    size_t i;
    /* subform rows first: a record's formula may sum them */
    for (i = 0; x->has_subforms && i < ft->n; i++) {
        const field_info *sf = &ft->f[i];
        json_t *rows = sf->subform ? json_object_get(rec, sf->id) : NULL;
        if (!json_array_size(rows) || !has_expressions(sf->rows->fields))
            continue;
        if (!parent)
            parent = lua_view(ft, rec, false, NULL);
        const char *sid = sf->id;
        json_t *subfields = sf->rows->fields;
        char prefix[80];
        snprintf(prefix, sizeof prefix, "%s.", sid);
        json_t *vrows = json_array();
        size_t r;
        json_t *row;
        json_array_foreach(rows, r, row)
        {
            char base[160];
            snprintf(base, sizeof base, "/%s/%zu", sid, r);
            json_t *rv = lua_view(sf->rows, row, false, NULL);
            json_object_set(rv, "parent", parent);
            formulas(x, subfields, prefix, row, rv, base);
            requirements(x, subfields, prefix, row, rv, base);
            json_object_del(rv, "parent");
            json_array_append_new(vrows, rv);
        }
        json_object_set_new(view, sid, vrows);
    }
    formulas(x, x->fields, "", rec, view, "");
    if (x->has_conditions)
        requirements(x, x->fields, "", rec, view, "");
    json_t *c;
    json_array_foreach(checks, i, c)
    {
        char what[32];
        snprintf(what, sizeof what, "check/%zu", i);
        bool ok;
        if (!condition(x, what, jstr(json_object_get(c, "expr")), view, "", &ok) || ok)
            continue;
        json_t *app = json_object_get(x->w->fc->bundle, "app");
        json_t *m = schema_label(json_object_get(c, "message"), x->w->locale, json_object_get(app, "locales"),
                                 "the record fails a check");
        problem(x->errors, "", "check_failed", "%s", jstr(m));
        json_decref(m);
    }
    json_decref(view);
    json_decref(parent);
    return true;
}

/* ---- refs and users ---- */

/* Appends "{1,2,3}" (an array literal of ids). */
static void id_array(buf *s, json_t *ids)
{
    buf_puts(s, "{");
    const char *k;
    json_t *v;
    int n = 0;
    json_object_foreach(ids, k, v) buf_printf(s, "%s%s", n++ ? "," : "", k);
    buf_puts(s, "}");
}

/* Notes the link value v of field f at path for checking: links is
 * {group: {"field": f, "ids": {id: [paths]}}}. */
static void note_link(json_t *links, json_t *f, const char *group, json_t *v, const char *path)
{
    if (!json_is_integer(v))
        return;
    json_t *g = json_object_get(links, group);
    if (!g) {
        g = json_pack("{s:O?, s:{}}", "field", f, "ids");
        json_object_set_new(links, group, g);
    }
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)json_integer_value(v));
    json_t *paths = json_object_get(json_object_get(g, "ids"), id);
    if (!paths) {
        paths = json_array();
        json_object_set_new(json_object_get(g, "ids"), id, paths);
    }
    json_array_append_new(paths, json_string(path));
}

/* rec_values: the record a ref filter's {"$field": f} reads. */
/* Whether a field that filter names with {"$field": f} differs between rec and old. */
static bool field_refs_changed(json_t *filter, json_t *rec, json_t *old)
{
    const char *k;
    json_t *v;
    size_t i;
    if (json_is_array(filter)) {
        json_array_foreach(filter, i, v) if (field_refs_changed(v, rec, old)) return true;
        return false;
    }
    json_object_foreach(filter, k, v)
    {
        if (!strcmp(k, "$field") && json_is_string(v)) {
            if (!json_equal(json_object_get(rec, json_string_value(v)), json_object_get(old, json_string_value(v))))
                return true;
        } else if ((json_is_object(v) || json_is_array(v)) && field_refs_changed(v, rec, old)) {
            return true;
        }
    }
    return false;
}

static void collect_links(json_t *fields, const char *sub, json_t *rec, json_t *old, json_t *links, const char *base,
                          json_t *rec_values)
{
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        if (!field_is(f, "ref") && !field_is(f, "user") && !field_is(f, "subform"))
            continue;
        const char *id = jstr(json_object_get(f, "id"));
        json_t *v = json_object_get(rec, id);
        char path[512], group[160];
        snprintf(path, sizeof path, "%s/%s", base, id);
        json_t *filter = field_is(f, "ref") ? json_object_get(f, "filter") : NULL;
        char *text = filter ? json_dumps(filter, JSON_COMPACT) : NULL;
        bool per_record = text && strstr(text, "\"$field\"");
        free(text);
        /* unchanged: it was checked when it was set, unless its filter reads a field of the record that
         * changed (a row's filter reads the record, whose old values are not at hand here: always) */
        if (old && json_equal(v, json_object_get(old, id)) && (!per_record || (!sub && !field_refs_changed(filter, rec, old))))
            continue;
        if (field_is(f, "ref")) {
            /* a ref filter narrows the candidates: a group per field, per record when it reads the record */
            snprintf(group, sizeof group, "ref:%s%s%s%s%s%s", jstr(json_object_get(f, "form")), filter ? "@" : "",
                     filter && sub ? sub : "", filter && sub ? "." : "", filter ? id : "", per_record ? base : "");
            note_link(links, f, group, v, path);
            if (per_record)
                json_object_set(json_object_get(links, group), "values", rec_values);
        } else if (field_is(f, "user")) {
            snprintf(group, sizeof group, "user:%s%s%s", sub ? sub : "", sub ? "." : "", id);
            note_link(links, f, json_object_get(f, "roles") ? group : "user:", v, path);
        } else if (field_is(f, "subform")) {
            size_t r;
            json_t *row;
            json_array_foreach(v, r, row)
            {
                char rb[512];
                snprintf(rb, sizeof rb, "%s/%zu", path, r);
                json_t *orow = row_by_id(json_object_get(old, id), json_object_get(row, "id"), NULL);
                collect_links(json_object_get(f, "fields"), id, row, orow, links, rb, rec_values);
            }
        }
    }
}

/* Notes the links of rec that changed from old, under base. */
static void links_of(wr *x, json_t *rec, json_t *old, json_t *links, const char *base)
{
    if (x->has_links)
        collect_links(x->fields, NULL, rec, old, links, base, rec);
    json_t *owner = json_object_get(rec, "_owner");
    if (owner && !(old && json_equal(owner, json_object_get(old, "_owner")))) {
        char path[64];
        snprintf(path, sizeof path, "%s/_owner", base);
        note_link(links, NULL, "user:", owner, path);
    }
}

/* Every link noted exists (refs: and the caller may read the record;
 * users: active, holding one of the field's roles), in one query; the
 * others are not_found problems at their paths. Consumes links. */
static bool verify_links(wr *x, json_t *links)
{
    if (!json_object_size(links)) {
        json_decref(links);
        return true;
    }
    buf sql = {0};
    json_t *args = json_array();
    const char *group;
    json_t *g;
    int k = 0;
    bool ok = true;
    json_object_foreach(links, group, g)
    {
        buf ids = {0};
        id_array(&ids, json_object_get(g, "ids"));
        json_t *f = json_object_get(g, "field");
        if (k)
            buf_puts(&sql, " UNION ALL ");
        if (!strncmp(group, "ref:", 4)) {
            char target[80];
            snprintf(target, sizeof target, "%.*s", (int)strcspn(group + 4, "@"), group + 4);
            json_t *filter = json_object_get(f, "filter");
            if (filter) {   /* the field's filter, {"$field": f} read from the record written; the app's own
                             * definition, so it sees every field (the caller's read scope follows) */
                filter_ctx fc = *x->w->fc;
                fc.system = true;
                fc.field_values = json_object_get(g, "values");
                filter_err fe;
                buf_printf(&sql, "SELECT %d, t.\"id\" FROM ", k);
                qualified(&sql, x->w->fc->schema, target);
                arg(args, ids.data);
                buf_printf(&sql, " AS t WHERE t.\"id\" = ANY($%zu::bigint[]) AND ", json_array_size(args));
                ok = ok && filter_sql(&fc, target, "t", filter, &sql, args, &fe);
                buf_puts(&sql, " INTERSECT ");
            }
            perm_decision d;
            perm_decide(x->w->fc->bundle, target, x->w->fc->roles, x->w->fc->admin, &d);
            buf_printf(&sql, "SELECT %d, t.\"id\" FROM ", k);
            qualified(&sql, x->w->fc->schema, target);
            arg(args, ids.data);
            buf_printf(&sql, " AS t WHERE t.\"id\" = ANY($%zu::bigint[])", json_array_size(args));
            if (!d.read) {
                buf_puts(&sql, " AND FALSE");
            } else if (!perm_scope_all(d.read)) {
                filter_err fe;
                buf_puts(&sql, " AND ");
                ok = ok && filter_scope_sql(x->w->fc, target, "t", d.read, &sql, args, &fe);
            }
            perm_free(&d);
        } else {
            arg(args, ids.data);
            buf_printf(&sql, "SELECT %d, u.id FROM loom.users u WHERE u.id = ANY($%zu::bigint[]) AND u.active", k,
                       json_array_size(args));
            json_t *roles = json_object_get(f, "roles");
            if (json_array_size(roles)) {
                arg(args, x->w->app);
                buf_printf(&sql, " AND (u.app_roles -> $%zu) ?| ", json_array_size(args));
                arg_json(args, roles);
                buf_printf(&sql, "ARRAY(SELECT jsonb_array_elements_text($%zu::jsonb))", json_array_size(args));
            }
        }
        json_object_set_new(g, "k", json_integer(k++));
        buf_free(&ids);
    }
    PGresult *r = ok ? must(x, sql.data, args) : NULL;
    if (!ok)
        fail(x, LOOM_INTERNAL, "a permission filter does not compile");
    buf_free(&sql);
    json_decref(args);
    if (r) {
        json_t *found = json_object();
        for (int i = 0; i < PQntuples(r); i++) {
            char key[48];
            snprintf(key, sizeof key, "%s:%s", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
            json_object_set_new(found, key, json_true());
        }
        json_object_foreach(links, group, g)
        {
            const char *id;
            json_t *paths;
            json_object_foreach(json_object_get(g, "ids"), id, paths)
            {
                char key[48];
                snprintf(key, sizeof key, "%lld:%s", (long long)json_integer_value(json_object_get(g, "k")), id);
                if (json_object_get(found, key))
                    continue;
                size_t i;
                json_t *p;
                json_array_foreach(paths, i, p) problem(x->errors, jstr(p), "not_found",
                                                        !strncmp(group, "ref:", 4) ? "no such record"
                                                                                   : "no such user here");
            }
        }
        json_decref(found);
    }
    json_decref(links);
    return r != NULL;
}

static bool check_links(wr *x, json_t *rec, json_t *old)
{
    json_t *links = json_object();
    links_of(x, rec, old, links, "");
    return verify_links(x, links);
}

/* ---- files ---- */

/* Notes every file id of field f's value v under "field" (sub.id in rows):
 * files is {file id: [[field path, pointer], ...]}. */
static void note_files(json_t *files, const char *field, json_t *v, const char *path)
{
    json_t *list = json_is_array(v) ? v : NULL;
    size_t n = list ? json_array_size(list) : (json_is_object(v) ? 1 : 0);
    for (size_t i = 0; i < n; i++) {
        json_t *one = list ? json_array_get(list, i) : v;
        const char *id = json_string_value(json_object_get(one, "id"));
        if (!id)
            continue;
        char p[512];
        if (list)
            snprintf(p, sizeof p, "%s/%zu", path, i);
        else
            snprintf(p, sizeof p, "%s", path);
        json_t *uses = json_object_get(files, id);
        if (!uses) {
            uses = json_array();
            json_object_set_new(files, id, uses);
        }
        json_array_append_new(uses, json_pack("[s, s]", field, p));
    }
}

/* The files rec holds: {file id: [[field, pointer], ...]}. */
static json_t *files_of(wr *x, json_t *rec)
{
    json_t *files = json_object();
    size_t i;
    json_t *f;
    json_array_foreach(x->fields, i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        char path[256];
        snprintf(path, sizeof path, "/%s", id);
        if (field_is(f, "file")) {
            note_files(files, id, json_object_get(rec, id), path);
        } else if (field_is(f, "subform")) {
            size_t r, k;
            json_t *row, *sf;
            json_array_foreach(json_object_get(rec, id), r, row) json_array_foreach(json_object_get(f, "fields"), k, sf)
            {
                if (!field_is(sf, "file"))
                    continue;
                char name[160], rp[512];
                snprintf(name, sizeof name, "%s.%s", id, jstr(json_object_get(sf, "id")));
                snprintf(rp, sizeof rp, "%s/%zu/%s", path, r, jstr(json_object_get(sf, "id")));
                note_files(files, name, json_object_get(row, jstr(json_object_get(sf, "id"))), rp);
            }
        }
    }
    return files;
}

/* The field definition a file field name ("doc" or "lines.doc") names. */
static json_t *file_field(wr *x, const char *name)
{
    const char *dot = strchr(name, '.');
    if (!dot)
        return bundle_item(x->fields, name);
    char sub[80];
    snprintf(sub, sizeof sub, "%.*s", (int)(dot - name), name);
    return bundle_item(json_object_get(bundle_item(x->fields, sub), "fields"), dot + 1);
}

/* Replaces the JSON at pointer (a field or an item of a list) in rec. */
static void put_at(json_t *rec, const char *pointer, json_t *v)
{
    json_t *at = rec, *parent = NULL;
    char key[128];
    const char *p = pointer;
    while (*p == '/') {
        p++;
        size_t n = strcspn(p, "/");
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        parent = at;
        p += n;
        at = json_is_array(parent) ? json_array_get(parent, strtoul(key, NULL, 10)) : json_object_get(parent, key);
        if (!at)
            return;
    }
    if (json_is_array(parent))
        json_array_set(parent, strtoul(key, NULL, 10), v);
    else if (parent)
        json_object_set(parent, key, v);
}

/* Every file the record holds exists; a file new to the record was
 * uploaded by the caller; sizes and content types are the stored ones and
 * within the field's limits. */
static bool check_files(wr *x, json_t *rec, json_t *old)
{
    static db_stmt st = {.sql = "SELECT id, name, size, content_type, uploaded_by FROM loom.files "
                                "WHERE id IN (SELECT jsonb_object_keys($1::jsonb))"};
    if (!x->has_files)
        return true;
    json_t *files = files_of(x, rec);
    if (!json_object_size(files)) {
        json_decref(files);
        return true;
    }
    json_t *had = old ? files_of(x, old) : json_object();
    char *ids = json_dumps(files, JSON_COMPACT);   /* its keys are the ids */
    const char *p[] = {ids};
    loom_err e = {0};
    PGresult *r = db_query(x->w->db, x->w->a, &st, 1, p, &e);
    free(ids);
    const char *id;
    json_t *uses;
    if (!r) {
        json_decref(files);
        json_decref(had);
        return db_failed(x, &e);
    }
    json_object_foreach(files, id, uses)
    {
        int row = -1;
        for (int i = 0; i < PQntuples(r) && row < 0; i++)
            if (!strcmp(PQgetvalue(r, i, 0), id))
                row = i;
        bool mine = row >= 0 && !PQgetisnull(r, row, 4) && strtoll(PQgetvalue(r, row, 4), NULL, 10) == x->w->fc->me;
        size_t k;
        json_t *use;
        json_array_foreach(uses, k, use)
        {
            const char *field = jstr(json_array_get(use, 0)), *ptr = jstr(json_array_get(use, 1));
            bool kept = false;   /* already in this field of the record */
            size_t j;
            json_t *u;
            json_array_foreach(json_object_get(had, id), j, u) kept = kept || !strcmp(jstr(json_array_get(u, 0)), field);
            if (row < 0 || (!mine && !kept)) {
                problem(x->errors, ptr, "not_found", "no such uploaded file");
                continue;
            }
            json_t *f = file_field(x, field);
            long long size = strtoll(PQgetvalue(r, row, 2), NULL, 10);
            const char *ct = PQgetvalue(r, row, 3);
            json_t *max = json_object_get(f, "max_size"), *types = json_object_get(f, "content_types");
            if (json_is_integer(max) && size > json_integer_value(max))
                problem(x->errors, ptr, "too_large", "files may be at most %lld bytes", (long long)json_integer_value(max));
            bool type_ok = !json_array_size(types);
            json_t *t;
            json_array_foreach(types, j, t)
            {
                const char *want = jstr(t);
                size_t wl = strlen(want);
                /* "image/..." with a star admits every image type */
                type_ok = type_ok || !strcasecmp(want, ct) ||
                          (wl > 2 && !strcmp(want + wl - 2, "/*") && !strncasecmp(want, ct, wl - 1));
            }
            if (!type_ok)
                problem(x->errors, ptr, "type", "files of type %s are not accepted here", ct);
            json_t *meta = json_pack("{s:s, s:s, s:I, s:s}", "id", id, "name", PQgetvalue(r, row, 1), "size",
                                     (json_int_t)size, "content_type", ct);
            put_at(rec, ptr, meta);
            json_decref(meta);
        }
    }
    json_decref(files);
    json_decref(had);
    return true;
}

/* Keeps loom.file_links (which records hold which files, for downloads)
 * equal to what rec holds (NULL: the record is gone). */
static bool link_files(wr *x, long long id, json_t *rec, json_t *old)
{
    static db_stmt del = {.sql = "DELETE FROM loom.file_links WHERE app = $1 AND form = $2 AND record = $3"};
    /* the files and their fields as two JSON arrays of one length */
    static db_stmt ins = {
        .sql = "INSERT INTO loom.file_links (file, app, form, record, field) "
               "SELECT f, $1, $2, $3, fld FROM jsonb_array_elements_text($4::jsonb) WITH ORDINALITY AS a(f, i) "
               "JOIN jsonb_array_elements_text($5::jsonb) WITH ORDINALITY AS b(fld, j) ON i = j "
               "ON CONFLICT DO NOTHING"};
    json_t *now = rec ? files_of(x, rec) : json_object(), *before = old ? files_of(x, old) : json_object();
    bool same = json_equal(now, before), ok = true;
    if (!same) {
        char rid[24];
        snprintf(rid, sizeof rid, "%lld", id);
        loom_err e = {0};
        const char *p[5] = {x->w->app, x->form, rid, NULL, NULL};
        if (old && !db_query(x->w->db, x->w->a, &del, 3, p, &e))
            ok = db_failed(x, &e);
        json_t *files = json_array(), *fields = json_array();
        const char *fid;
        json_t *uses;
        json_object_foreach(now, fid, uses)
        {
            size_t k;
            json_t *u;
            json_array_foreach(uses, k, u)
            {
                json_array_append_new(files, json_string(fid));
                json_array_append(fields, json_array_get(u, 0));
            }
        }
        if (ok && json_array_size(files)) {
            char *a = json_dumps(files, JSON_COMPACT), *b = json_dumps(fields, JSON_COMPACT);
            p[3] = a;
            p[4] = b;
            if (!db_query(x->w->db, x->w->a, &ins, 5, p, &e))
                ok = db_failed(x, &e);
            free(a);
            free(b);
        }
        json_decref(files);
        json_decref(fields);
    }
    json_decref(now);
    json_decref(before);
    return ok;
}

/* ---- autonumbers ---- */

/* Renders pattern with the date parts of today; the {seq[:N]} part becomes
 * seq (zero-padded to N), or "#" when seq < 0 (the counter's name). */
static void render_number(const char *pattern, const char *today, long long seq, buf *out)
{
    for (const char *p = pattern; *p;) {
        if (*p == '{') {
            const char *end = strchr(p, '}');
            if (end) {
                size_t n = (size_t)(end - p - 1);
                const char *t = p + 1;
                if (n == 4 && !strncmp(t, "yyyy", 4))
                    buf_append(out, today, 4);
                else if (n == 2 && !strncmp(t, "yy", 2))
                    buf_append(out, today + 2, 2);
                else if (n == 2 && !strncmp(t, "MM", 2))
                    buf_append(out, today + 5, 2);
                else if (n == 2 && !strncmp(t, "dd", 2))
                    buf_append(out, today + 8, 2);
                else if (n >= 3 && !strncmp(t, "seq", 3)) {
                    int width = t[3] == ':' ? atoi(t + 4) : 0;
                    if (seq < 0)
                        buf_puts(out, "#");
                    else
                        buf_printf(out, "%0*lld", width > 0 && width < 20 ? width : 1, seq);
                } else
                    buf_append(out, p, n + 2);
                p = end + 1;
                continue;
            }
        }
        buf_append(out, p++, 1);
    }
}

/* Assigns each autonumber of the records recs (one create, or an import
 * batch): a counter per form, field and period (the pattern with its date
 * parts filled in), stepped by the number of records under a row lock, so
 * parallel creates never share a number and none is skipped. */
static bool autonumbers(wr *x, json_t *recs)
{
    static db_stmt step = {.sql = "INSERT INTO loom.counters (app, name, value) VALUES ($1, $2, $3) "
                                  "ON CONFLICT (app, name) DO UPDATE SET value = loom.counters.value + $3 "
                                  "RETURNING value"};
    size_t n = json_array_size(recs), i;
    char count[24];
    snprintf(count, sizeof count, "%zu", n);
    json_t *f;
    json_array_foreach(n ? x->fields : NULL, i, f)
    {
        if (!field_is(f, "autonumber"))
            continue;
        if (!tx_clock(x))
            return false;
        const char *id = jstr(json_object_get(f, "id"));
        const char *pattern = json_string_value(json_object_get(f, "pattern"));
        if (!pattern)
            pattern = "{seq}";
        buf name = {0};
        buf_printf(&name, "%s.%s:", x->form, id);
        render_number(pattern, x->today, -1, &name);
        const char *p[] = {x->w->app, name.data, count};
        loom_err e = {0};
        PGresult *r = db_query(x->w->db, x->w->a, &step, 3, p, &e);
        buf_free(&name);
        if (!r)
            return db_failed(x, &e);
        long long last = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        for (size_t k = 0; k < n; k++) {
            buf v = {0};
            render_number(pattern, x->today, last - (long long)n + 1 + (long long)k, &v);
            json_object_set_new(json_array_get(recs, k), id, json_string(v.data));
            buf_free(&v);
        }
    }
    return true;
}

/* ---- statements ---- */

/* For the columns of fields (subforms left out), appends to cols
 * ', "a", "b"', to xcols ', x."a", x."b"' and to def '"a" text, "b" bigint'
 * (the record type jsonb_to_record reads them with); any may be NULL.
 * Returns how many there are. */
static int columns(json_t *fields, buf *cols, buf *xcols, buf *def)
{
    int n = 0;
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        if (field_is(f, "subform"))
            continue;
        const char *id = jstr(json_object_get(f, "id"));
        char tmp[64];
        if (cols) {
            buf_puts(cols, ", ");
            ddl_quote(cols, id);
        }
        if (xcols) {
            buf_puts(xcols, ", x.");
            ddl_quote(xcols, id);
        }
        if (def) {
            buf_puts(def, n ? ", " : "");
            ddl_quote(def, id);
            buf_printf(def, " %s", ddl_column_type(f, tmp));
        }
        n++;
    }
    return n;
}

/* The values of the columns of rec, as jsonb_to_record reads them. */
static json_t *column_values(json_t *fields, json_t *rec)
{
    json_t *o = json_object();
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        json_t *v = json_object_get(rec, id);
        if (!field_is(f, "subform") && v)
            json_object_set(o, id, v);
    }
    return o;
}

/* The constraint a unique violation names, as the paths of its fields. */
static bool not_unique(wr *x, const loom_err *e)
{
    const char *name = e->path ? e->path : "";
    json_t *errors = json_array();
    /* the catalog maps "table|key|a,b" to the constraint's name; find it */
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(x->w->catalog, "objects"), key, v)
    {
        if (strcmp(jstr(v), name))
            continue;
        const char *cols = strstr(key, "|key|");
        char table[160];
        snprintf(table, sizeof table, "%.*s", (int)(strchr(key, '|') - key), key);
        const char *sub = strstr(table, "__");
        for (const char *c = cols ? cols + 5 : ""; *c;) {
            size_t n = strcspn(c, ",");
            char p[320];
            if (sub)
                snprintf(p, sizeof p, "/%s/%.*s", sub + 2, (int)n, c);
            else
                snprintf(p, sizeof p, "/%.*s", (int)n, c);
            problem(errors, p, "not_unique", "another record has this value");
            c += n + (c[n] == ',');
        }
        break;
    }
    x->out->errors = errors;
    return fail(x, LOOM_NOT_UNIQUE, "another record has the same value");
}

/* Runs a statement that writes; unique clashes become not_unique. */
static PGresult *write_sql_as(wr *x, const char *sql, json_t *args, bool commit)
{
    loom_err e = {0};
    PGresult *r;
    if (commit) {
        int n;
        const char **vals = query_params(x->w->a, args, &n);
        r = db_query_text_commit(x->w->db, x->w->a, sql, n, vals, &e);
    } else {
        r = run(x, sql, args, &e);
    }
    if (!r && e.code == LOOM_NOT_UNIQUE)
        not_unique(x, &e);
    else if (!r)
        db_failed(x, &e);
    return r;
}

static PGresult *write_sql(wr *x, const char *sql, json_t *args)
{
    return write_sql_as(x, sql, args, false);
}

/* ", "f" = x."f"" for each field of fields that has a column (not a subform). */
static void set_columns(buf *sql, json_t *fields)
{
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        if (field_is(f, "subform"))
            continue;
        buf_puts(sql, ", ");
        ddl_quote(sql, jstr(json_object_get(f, "id")));
        buf_puts(sql, " = x.");
        ddl_quote(sql, jstr(json_object_get(f, "id")));
    }
}

/* n new ids of table $1 ($2: n): the sequence found once, not once per id
 * (its lookup costs 8 times the nextval; OFFSET 0 keeps the planner from
 * pulling the subquery up into the per-row expression). */
#define NEW_IDS_SQL                                                                                                    \
    "SELECT nextval(s.seq) FROM (SELECT pg_get_serial_sequence($1, 'id')::regclass AS seq OFFSET 0) AS s, "           \
    "generate_series(1, $2::int)"

/* Gives the subform rows of recs without an id one from their table (a
 * query per subform that has such rows), and makes every row as a read
 * shows it: "id" first, then each field in order, null when empty. So the
 * history entry of a write names the rows as they are stored. */
static bool rows_ready(wr *x, json_t *recs)
{
    const field_table *ft = fields_of(x);
    for (size_t k = 0; k < ft->n; k++) {
        const field_info *fi = &ft->f[k];
        if (!fi->subform)
            continue;
        size_t need = 0, i, r;
        json_t *rec, *row;
        json_array_foreach(recs, i, rec)
        {
            json_array_foreach(json_object_get(rec, fi->id), r, row) need += !json_object_get(row, "id");
        }
        PGresult *ids = NULL;
        if (need) {
            char child[DDL_NAME_MAX + 1], count[24];
            child_table(x->form, fi->id, child);
            buf t = {0};
            qualified(&t, x->w->fc->schema, child);
            snprintf(count, sizeof count, "%zu", need);
            json_t *args = json_pack("[s, s]", t.data, count);
            buf_free(&t);
            ids = must(x, NEW_IDS_SQL, args);
            json_decref(args);
            if (!ids)
                return false;
        }
        int next = 0;
        json_array_foreach(recs, i, rec)
        {
            json_t *rows = json_object_get(rec, fi->id);
            json_array_foreach(rows, r, row)
            {
                json_t *id = json_object_get(row, "id"), *out = json_object();
                json_object_set_new(out, "id", id ? json_incref(id) : json_integer(strtoll(PQgetvalue(ids, next++, 0), NULL, 10)));
                for (size_t m = 0; m < fi->rows->n; m++) {
                    json_t *v = json_object_get(row, fi->rows->f[m].id);
                    json_object_set(out, fi->rows->f[m].id, v ? v : json_null());
                }
                json_array_set_new(rows, r, out);
            }
        }
    }
    return true;
}

/* Inserts, updates and deletes the rows of each subform of rec that
 * differ from old (NULL on create). */
static bool write_rows(wr *x, long long id, json_t *rec, json_t *old)
{
    size_t i;
    json_t *f;
    json_array_foreach(x->fields, i, f)
    {
        if (!field_is(f, "subform"))
            continue;
        const char *sid = jstr(json_object_get(f, "id"));
        json_t *rows = json_object_get(rec, sid), *orows = old ? json_object_get(old, sid) : NULL;
        if (old && json_equal(rows, orows))
            continue;
        json_t *subfields = json_object_get(f, "fields");
        char child[DDL_NAME_MAX + 1];
        child_table(x->form, sid, child);
        json_t *ins = json_array(), *upd = json_array(), *keep = json_object();
        size_t r;
        json_t *row;
        json_array_foreach(rows, r, row)
        {
            json_t *v = column_values(subfields, row);
            json_object_set_new(v, "_pos", json_integer((json_int_t)r));
            json_t *rid = json_object_get(row, "id");
            size_t at;
            json_t *orow = rid ? row_by_id(orows, rid, &at) : NULL;
            if (orow) {
                char k[24];
                snprintf(k, sizeof k, "%lld", (long long)json_integer_value(rid));
                json_object_set_new(keep, k, json_true());
                if (json_equal(orow, row) && at == r) {
                    json_decref(v);
                    continue;
                }
                json_object_set(v, "id", rid);
                json_array_append_new(upd, v);
            } else {   /* a new row, with the id rows_ready gave it */
                json_object_set(v, "id", rid);
                json_array_append_new(ins, v);
            }
        }
        bool ok = true;
        buf cols = {0}, xcols = {0}, def = {0}, sql = {0};
        columns(subfields, &cols, &xcols, &def);
        if (orows && json_array_size(orows) > json_object_size(keep)) {
            json_t *args = json_array();
            buf ids = {0};
            id_array(&ids, keep);
            arg_int(args, id);
            arg(args, ids.data);
            buf_puts(&sql, "DELETE FROM ");
            qualified(&sql, x->w->fc->schema, child);
            buf_puts(&sql, " WHERE \"_parent\" = $1 AND \"id\" <> ALL($2::bigint[])");
            ok = must(x, sql.data, args) != NULL;
            buf_free(&ids);
            json_decref(args);
        }
        if (ok && json_array_size(upd)) {
            json_t *args = json_array();
            arg_int(args, id);
            arg_json(args, upd);
            buf_reset(&sql);
            buf_puts(&sql, "UPDATE ");
            qualified(&sql, x->w->fc->schema, child);
            buf_puts(&sql, " AS s SET \"_pos\" = x.\"_pos\"");
            set_columns(&sql, subfields);
            buf_printf(&sql, " FROM jsonb_to_recordset($2::jsonb) AS x(\"id\" bigint, \"_pos\" integer%s%s) "
                             "WHERE s.\"id\" = x.\"id\" AND s.\"_parent\" = $1",
                       def.len ? ", " : "", def.data ? def.data : "");
            ok = write_sql(x, sql.data, args) != NULL;
            json_decref(args);
        }
        if (ok && json_array_size(ins)) {
            json_t *args = json_array();
            arg_int(args, id);
            arg_json(args, ins);
            buf_reset(&sql);
            buf_puts(&sql, "INSERT INTO ");
            qualified(&sql, x->w->fc->schema, child);
            buf_printf(&sql, " (\"id\", \"_parent\", \"_pos\"%s) SELECT x.\"id\", $1, x.\"_pos\"%s FROM "
                             "jsonb_to_recordset($2::jsonb) AS x(\"id\" bigint, \"_pos\" integer%s%s)",
                       cols.data ? cols.data : "", xcols.data ? xcols.data : "", def.len ? ", " : "",
                       def.data ? def.data : "");
            ok = write_sql(x, sql.data, args) != NULL;
            json_decref(args);
        }
        buf_free(&cols);
        buf_free(&def);
        buf_free(&xcols);
        buf_free(&sql);
        json_decref(ins);
        json_decref(upd);
        json_decref(keep);
        if (!ok)
            return false;
    }
    return true;
}

/* The history entry's changes: {field: [old, new]} for every field whose
 * value differs (old NULL: created; rec NULL: deleted). */
static json_t *changes(wr *x, json_t *old, json_t *rec)
{
    json_t *ch = json_object();
    size_t i;
    json_t *f;
    json_array_foreach(x->fields, i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        json_t *a = old ? json_object_get(old, id) : NULL, *b = rec ? json_object_get(rec, id) : NULL;
        if (empty(a) && empty(b))
            continue;
        if (!a || !b || !json_equal(a, b))
            json_object_set_new(ch, id, json_pack("[O?, O?]", a, b));
    }
    json_t *a = old ? json_object_get(old, "_owner") : NULL, *b = rec ? json_object_get(rec, "_owner") : NULL;
    if (old && rec && !json_equal(a, b))
        json_object_set_new(ch, "_owner", json_pack("[O?, O?]", a, b));
    return ch;
}

/* ---- timers ---- */

/* The seconds until the SLA and the timeout of state of x's flow fall due
 * (0: none), as enter_state schedules them. */
static void state_timers(wr *x, const char *state, long long *sla, long long *timeout)
{
    json_t *st = flow_state(x->flow, state);
    *sla = flow_seconds(json_string_value(json_object_get(json_object_get(st, "sla"), "within")));
    *timeout = flow_seconds(json_string_value(json_object_get(json_object_get(st, "timeout"), "after")));
}

/* Wakes the scheduler when the CTE j (the jobs inserted) has a row. */
#define NOTIFY_JOBS "SELECT pg_notify('loom_jobs', '') FROM (SELECT 1 FROM j LIMIT 1) AS any_job"

/* Appends the INSERT of the SLA and timeout jobs (due in $after and
 * $after+1 seconds, those above 0) of the rows of from, which names them t
 * (with "id", "_state" and "_visit"), where cond holds; app and form are
 * $app and $app+1. */
static void jobs_insert(buf *sql, int app, const char *from, const char *cond, int after)
{
    buf_printf(sql, "INSERT INTO loom.jobs (kind, app, form, record, state, visit, run_at) SELECT k.kind, $%d, $%d, t.\"id\", "
                    "t.\"_state\", t.\"_visit\", now() + k.after * interval '1 second' FROM %s, (VALUES ('sla', $%d::bigint), "
                    "('timeout', $%d::bigint)) AS k(kind, after) WHERE %sk.after > 0 RETURNING 1",
               app, app + 1, from, after, after + 1, cond);
}

/* Records ids (an array literal "{1,2}") have entered state in a new visit:
 * the timers of the visit they left are cancelled (leaving), and the
 * state's SLA and timeout are scheduled for this one (loom_jobs wakes the
 * schedulers when the transaction commits). */
static bool enter_state(wr *x, const char *ids, const char *state, bool leaving)
{
    long long sla, timeout;
    state_timers(x, state, &sla, &timeout);
    if (leaving && flow_has_timers(x->flow)) {   /* without timers in the flow, any left from before are stale */
        json_t *args = json_pack("[s, s, s]", x->w->app, x->form, ids);
        PGresult *r = must(x, "UPDATE loom.jobs SET status = 'cancelled', done_at = now() WHERE app = $1 AND form = $2 "
                              "AND record = ANY($3::bigint[]) AND status = 'pending' AND visit IS NOT NULL", args);
        json_decref(args);
        if (!r)
            return false;
    }
    if (sla <= 0 && timeout <= 0)
        return true;
    buf sql = {0}, from = {0};
    qualified(&from, x->w->fc->schema, x->form);
    buf_puts(&from, " AS t");
    buf_puts(&sql, "WITH j AS (");
    jobs_insert(&sql, 1, from.data, "t.\"id\" = ANY($3::bigint[]) AND ", 4);
    buf_puts(&sql, ") " NOTIFY_JOBS);
    json_t *args = json_pack("[s, s, s]", x->w->app, x->form, ids);
    arg_int(args, sla);
    arg_int(args, timeout);
    PGresult *r = must(x, sql.data, args);
    buf_free(&sql);
    buf_free(&from);
    json_decref(args);
    return r != NULL;
}

/* ---- the three writes ---- */

static bool begin(wr *x, const write_ctx *w, const char *form, write_result *out)
{
    memset(out, 0, sizeof *out);
    memset(x, 0, sizeof *x);
    x->w = w;
    x->form = form;
    x->out = out;
    x->errors = json_array();
    x->expr_errors = json_array();
    x->clock_use = -1;
    x->orders = json_object();
    x->fdef = bundle_item(json_object_get(w->fc->bundle, "forms"), form);
    x->fields = json_object_get(x->fdef, "fields");
    x->flow = bundle_flow(w->fc->bundle, form);
    perm_decide(w->fc->bundle, form, w->fc->roles, w->fc->admin, &x->d);
    if (!x->fdef || (!x->d.read && !x->d.create))
        return fail(x, LOOM_NOT_FOUND, "no such form");
    x->plain = true;
    size_t i, k;
    json_t *f, *sf;
    json_array_foreach(x->fields, i, f)
    {
        x->plain = x->plain && !field_is(f, "subform") && mode(x, NULL, jstr(json_object_get(f, "id"))) == FIELD_WRITE;
        x->has_files = x->has_files || field_is(f, "file");
        json_array_foreach(json_object_get(f, "fields"), k, sf) x->has_files = x->has_files || field_is(sf, "file");
        x->has_subforms = x->has_subforms || field_is(f, "subform");
        x->has_links = x->has_links || field_is(f, "ref") || field_is(f, "user") || field_is(f, "subform");
        x->has_defaults = x->has_defaults || json_object_get(f, "default");
        x->has_conditions = x->has_conditions || json_object_get(f, "visible_when") ||
                            json_is_string(json_object_get(f, "required"));
    }
    return true;
}

/* Ends a write: the problems found, if any, become its answer. */
static bool finish(wr *x, bool ok)
{
    /* bad input first: an expression over it failing says nothing more */
    if (ok && json_array_size(x->errors)) {
        x->out->errors = json_incref(x->errors);
        ok = fail(x, LOOM_VALIDATION_FAILED, "%zu problem%s in the record", json_array_size(x->errors),
                  json_array_size(x->errors) == 1 ? "" : "s");
    } else if (ok && json_array_size(x->expr_errors)) {
        x->out->errors = json_incref(x->expr_errors);
        ok = fail(x, LOOM_FORMULA_ERROR, "an expression failed");
    }
    json_decref(x->errors);
    json_decref(x->expr_errors);
    json_decref(x->orders);
    json_decref(x->view_names);
    field_table_free(x->own_ft);
    perm_free(&x->d);
    return ok;
}

/* Checks body: modes, system fields, coercion. The checked values go to
 * *values; false after a 400 (system fields). */
static bool check_body(wr *x, json_t *body, json_t *old, json_t **values)
{
    if (!json_is_object(body)) {
        *values = NULL;
        return fail(x, LOOM_BAD_REQUEST, "a record is a JSON object");
    }
    json_t *given = strip(x, body, old);
    record_result rr;
    record_check_fields(fields_of(x), given, old == NULL, &rr);
    json_decref(given);
    json_array_extend(x->errors, rr.errors);
    *values = json_incref(rr.values);
    bool ok = true;
    if (json_array_size(rr.system)) {
        json_t *errors = json_array();
        size_t i;
        json_t *s;
        json_array_foreach(rr.system, i, s)
        {
            char p[64];
            snprintf(p, sizeof p, "/%s", jstr(s));
            problem(errors, p, "readonly", "system fields are set by Loom");
        }
        x->out->errors = errors;
        ok = fail(x, LOOM_BAD_REQUEST, "system fields cannot be written");
    }
    record_result_free(&rr);
    return ok;
}

/* Defaults of absent fields, in the record and in new subform rows. */
static bool fill_defaults(wr *x, json_t *body, json_t *rec, bool create)
{
    if (create && x->has_defaults && !defaults(x, x->fields, body, rec))
        return false;
    if (!x->has_subforms)
        return true;
    size_t i;
    json_t *f;
    json_array_foreach(x->fields, i, f)
    {
        const char *sid = jstr(json_object_get(f, "id"));
        if (create && field_is(f, "subform") && !json_is_array(json_object_get(rec, sid)))
            json_object_set_new(rec, sid, json_array());   /* no rows, as a record shows it */
        json_t *given = json_object_get(body, sid);
        if (!field_is(f, "subform") || !json_is_array(given))
            continue;
        size_t r;
        json_t *row;
        json_array_foreach(json_object_get(rec, sid), r, row)
        {
            json_t *grow = json_array_get(given, r);
            if (!json_object_get(row, "id") && !defaults(x, json_object_get(f, "fields"), grow, row))
                return false;
        }
    }
    return true;
}

/* Whether rec holds subform rows. */
static bool holds_rows(wr *x, json_t *rec)
{
    size_t i;
    json_t *f;
    bool rows = false;
    json_array_foreach(x->has_subforms ? x->fields : NULL, i, f) rows =
        rows || (field_is(f, "subform") && json_array_size(json_object_get(rec, jstr(json_object_get(f, "id")))));
    return rows;
}

/* Whether every subform's rows in rec are old's, as they were read (an
 * update that wrote no row). */
static bool rows_unchanged(wr *x, json_t *rec, json_t *old)
{
    size_t i;
    json_t *f;
    json_array_foreach(old ? x->fields : NULL, i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        if (field_is(f, "subform") && !json_equal(json_object_get(rec, id), json_object_get(old, id)))
            return false;
    }
    return old != NULL;
}

/* Rows of subform sub as a read shows them to the caller (rows: as read,
 * or as rows_ready made them): without the fields hidden from it, an empty
 * multiselect as []. */
static json_t *rows_shown(wr *x, json_t *sub, json_t *rows)
{
    const char *sid = jstr(json_object_get(sub, "id"));
    json_t *out = json_array(), *row, *v;
    size_t i;
    const char *k;
    json_array_foreach(rows, i, row)
    {
        json_t *r = json_object();
        json_object_foreach(row, k, v)
        {
            if (strcmp(k, "id") && mode(x, sid, k) == FIELD_HIDDEN)
                continue;
            bool list = json_is_null(v) && field_is(bundle_item(json_object_get(sub, "fields"), k), "multiselect");
            json_object_set_new(r, k, list ? json_array() : json_incref(v));
        }
        json_array_append_new(out, r);
    }
    return out;
}

/* Whether a read gives every subform's rows their fields in the form's
 * order (json_build_object; past 48 visible fields it builds jsonb, whose
 * keys come in its own order): then rows just written are shown as read. */
static bool rows_in_order(wr *x)
{
    size_t i, k;
    json_t *f, *sf;
    json_array_foreach(x->fields, i, f)
    {
        size_t visible = 0;
        json_array_foreach(field_is(f, "subform") ? json_object_get(f, "fields") : NULL, k, sf) visible +=
            mode(x, jstr(json_object_get(f, "id")), jstr(json_object_get(sf, "id"))) != FIELD_HIDDEN;
        if (visible >= 49)
            return false;
    }
    return true;
}

/* The record rec as a read would show it to the caller, built from what
 * was written: sys (its system fields, stolen) and the fields the caller
 * sees (subform rows with the ids rows_ready gave them); or NULL when only
 * a read can say: a read scope other than "all" (is it readable?), or rows
 * just written of a subform a read would not give in the form's order. */
static json_t *shown(wr *x, json_t *rec, json_t *sys, json_t *old)
{
    size_t i;
    json_t *f;
    bool rows = holds_rows(x, rec) || holds_rows(x, old);
    if (!perm_scope_all(x->d.read) || (rows && !rows_unchanged(x, rec, old) && !rows_in_order(x))) {
        json_decref(sys);
        return NULL;
    }
    json_array_foreach(x->fields, i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        if (mode(x, NULL, id) == FIELD_HIDDEN)
            continue;
        json_t *v = json_object_get(rec, id);
        if (field_is(f, "subform") && json_array_size(v))
            json_object_set_new(sys, id, rows_shown(x, f, v));
        else if ((!v || json_is_null(v)) && (field_is(f, "multiselect") || field_is(f, "subform")))
            json_object_set_new(sys, id, json_array());
        else
            json_object_set(sys, id, v ? v : json_null());
    }
    return sys;
}

/* The record just created (r: id, _owner, _created_at, _created_by), as shown(). */
static json_t *created_record(wr *x, json_t *rec, PGresult *r)
{
    json_t *user = PQgetisnull(r, 0, 3) ? json_null() : json_integer(strtoll(PQgetvalue(r, 0, 3), NULL, 10));
    json_t *owner = PQgetisnull(r, 0, 1) ? json_null() : json_integer(strtoll(PQgetvalue(r, 0, 1), NULL, 10));
    json_t *out = json_pack("{s:I, s:i}", "id", (json_int_t)strtoll(PQgetvalue(r, 0, 0), NULL, 10), "_version", 1);
    if (x->flow)
        json_object_set(out, "_state", json_object_get(x->flow, "initial"));
    json_object_set_new(out, "_owner", owner);
    json_object_set_new(out, "_created_at", json_string(PQgetvalue(r, 0, 2)));
    json_object_set(out, "_created_by", user);
    json_object_set_new(out, "_updated_at", json_string(PQgetvalue(r, 0, 2)));
    json_object_set_new(out, "_updated_by", user);
    return shown(x, rec, out, NULL);
}

/* The statement that inserts the checked record rec, its history entry and
 * the timers of its flow's initial state (returning id, _owner, _created_at,
 * _created_by): into sql and args. */
static void create_statement(wr *x, json_t *rec, buf *sql, json_t *args)
{
    buf cols = {0}, def = {0}, xcols = {0};
    int n = columns(x->fields, &cols, &xcols, &def);
    json_t *vals = column_values(x->fields, rec);
    json_t *ch = changes(x, NULL, rec);
    json_t *owner = json_object_get(rec, "_owner");
    arg_json(args, vals);
    arg_me(args, json_is_integer(owner) ? json_integer_value(owner) : json_is_null(owner) ? 0 : x->w->fc->me);   /* null: none */
    arg_me(args, x->w->fc->me);
    arg(args, x->w->app);
    arg(args, x->form);
    arg_json(args, ch);
    long long sla = 0, timeout = 0;
    if (x->flow) {
        arg(args, jstr(json_object_get(x->flow, "initial")));
        state_timers(x, jstr(json_object_get(x->flow, "initial")), &sla, &timeout);
    }
    bool timers = sla > 0 || timeout > 0;
    if (timers) {   /* $8, $9: only when the statement uses them */
        arg_int(args, sla);
        arg_int(args, timeout);
    }
    buf_puts(sql, "WITH r AS (INSERT INTO ");
    qualified(sql, x->w->fc->schema, x->form);
    buf_printf(sql, " (\"_owner\", \"_created_by\", \"_updated_by\"%s%s) SELECT $2, $3, $3%s%s FROM ",
               x->flow ? ", \"_state\"" : "", cols.data ? cols.data : "", x->flow ? ", $7" : "",
               xcols.data ? xcols.data : "");
    if (n)
        buf_printf(sql, "jsonb_to_record($1::jsonb) AS x(%s)", def.data);
    else
        buf_puts(sql, "(SELECT $1::jsonb) AS x");
    buf_printf(sql, " RETURNING \"id\", \"_owner\", \"_created_at\", \"_created_by\"%s), h AS (INSERT INTO loom.history "
                    "(app, form, record, actor, action, changes%s) SELECT $4, $5, r.\"id\", $3, 'create', $6::json%s FROM r)",
               x->flow ? ", \"_state\", \"_visit\"" : "", x->flow ? ", to_state" : "", x->flow ? ", $7" : "");
    if (timers) {   /* as enter_state schedules them, in the same statement */
        buf_puts(sql, ", j AS (");
        jobs_insert(sql, 4, "r AS t", "", 8);
        buf_puts(sql, ")");
    }
    buf_puts(sql, " SELECT \"id\", \"_owner\", to_char(\"_created_at\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                  "\"_created_by\"");
    if (timers)
        buf_puts(sql, ", (SELECT count(*) FROM (" NOTIFY_JOBS ") AS woken)");
    buf_puts(sql, " FROM r");
    buf_free(&cols);
    buf_free(&def);
    buf_free(&xcols);
    json_decref(vals);
    json_decref(ch);
}

/* A create left to its one statement (write_create_plan). */
struct write_pending {
    write_ctx w;        /* the write's own copy: x.w points here */
    wr x;
    write_result none;  /* x.out until write_create_done */
    json_t *rec, *args;
    buf sql;
    const char **params;
    int nparams;
};

static void pending_free(void *arg)
{
    write_pending *p = arg;
    p->x.out = &p->none;
    finish(&p->x, false);
    json_decref(p->rec);
    json_decref(p->args);
    buf_free(&p->sql);
}

bool write_create(const write_ctx *w, const char *form, json_t *body, write_result *out)
{
    return write_create_plan(w, form, body, NULL, out);
}

bool write_create_plan(const write_ctx *w, const char *form, json_t *body, write_pending **pending, write_result *out)
{
    wr x;
    if (pending)
        *pending = NULL;
    if (!begin(&x, w, form, out))
        return finish(&x, false);
    if (!x.d.create)
        return finish(&x, fail(&x, LOOM_FORBIDDEN, "you may not create %s records", form));
    json_t *rec;
    bool ok = check_body(&x, body, NULL, &rec) && fill_defaults(&x, body, rec, true) && check_files(&x, rec, NULL) &&
              expressions(&x, rec) && check_links(&x, rec, NULL);
    if (ok && (json_array_size(x.errors) || json_array_size(x.expr_errors))) {
        json_decref(rec);
        return finish(&x, true);
    }
    json_t *one = json_pack("[O]", rec);
    ok = ok && autonumbers(&x, one) && (!holds_rows(&x, rec) || rows_ready(&x, one));
    json_decref(one);
    /* nothing to write after the statement (subform rows, files; create rules, when they come, will be such
     * writes) and the record as the caller sees it known from it */
    bool alone = !holds_rows(&x, rec) && !x.has_files && perm_scope_all(x.d.read);
    /* and nothing read on the way (links, counters, the clock): the one statement is the whole create */
    if (ok && pending && alone && db_tx_unused(w->db)) {
        write_pending *p = arena_alloc(w->a, sizeof *p);
        *p = (write_pending){.w = *w, .x = x, .rec = rec, .args = json_array()};
        p->x.w = &p->w;
        p->x.out = &p->none;
        create_statement(&p->x, rec, &p->sql, p->args);
        p->params = query_params(w->a, p->args, &p->nparams);
        arena_defer(w->a, pending_free, p);
        *pending = p;
        return true;
    }
    if (ok) {
        buf sql = {0};
        json_t *args = json_array();
        create_statement(&x, rec, &sql, args);
        PGresult *r = write_sql_as(&x, sql.data, args, w->last && alone);   /* what follows then writes nothing */
        if (r) {
            out->id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
            out->version = 1;
        }
        ok = r && write_rows(&x, out->id, rec, NULL) && link_files(&x, out->id, rec, NULL);
        if (ok)
            out->record = created_record(&x, rec, r);
        buf_free(&sql);
        json_decref(args);
    }
    json_decref(rec);
    return finish(&x, ok);
}

const char *write_pending_sql(const write_pending *p, int *nparams, const char ***params)
{
    *nparams = p->nparams;
    *params = p->params;
    return p->sql.data;
}

bool write_create_done(write_pending *p, PGresult *r, const loom_err *e, write_result *out)
{
    memset(out, 0, sizeof *out);
    p->x.out = out;
    bool ok;
    if (!r) {
        ok = e->code == LOOM_NOT_UNIQUE ? not_unique(&p->x, e) : db_failed(&p->x, e);
    } else {
        out->id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        out->version = 1;
        out->record = created_record(&p->x, p->rec, r);
        ok = true;
    }
    p->x.out = &p->none;
    return ok;
}

/* Locks record id (unless x->peek) and reads it whole; *old the record,
 * *scopes its read, update, delete admissions. False after a 404. */
static bool lock(wr *x, const char *id, json_t **old, bool scopes[3])
{
    *old = NULL;
    if (!x->d.read)
        return fail(x, LOOM_NOT_FOUND, "no such record");
    query q;
    filter_err fe;
    bool ok = query_lock(x->w->fc, x->form, id, !x->peek, &q, &fe);
    PGresult *r = ok ? must(x, q.sql.data, q.args) : NULL;
    if (!ok)
        fail(x, LOOM_INTERNAL, "a permission filter does not compile");
    if (r && PQntuples(r) == 1) {
        json_t *items = query_items(&q, r, NULL);
        *old = json_incref(json_array_get(items, 0));
        json_decref(items);
        int n = (int)json_array_size(q.out);
        for (int k = 0; k < 3; k++)
            scopes[k] = *PQgetvalue(r, 0, n + k) == 't';
    }
    query_free(&q);
    if (!r)
        return false;
    if (!*old || !scopes[0])
        return fail(x, LOOM_NOT_FOUND, "no such record");
    return true;
}

static bool version_ok(wr *x, json_t *old, long long if_match)
{
    long long v = json_integer_value(json_object_get(old, "_version"));
    if (if_match >= 0 && if_match != v)
        return fail(x, LOOM_VERSION_MISMATCH, "the record is at version %lld, not %lld", v, if_match);
    return true;
}

/* The update scope must still admit the record after the change. */
static bool still_in_scope(wr *x, const char *id)
{
    if (perm_scope_all(x->d.update))
        return true;
    buf sql = {0};
    json_t *args = json_array();
    filter_err fe;
    buf_puts(&sql, "SELECT 1 FROM ");
    qualified(&sql, x->w->fc->schema, x->form);
    arg(args, id);
    buf_puts(&sql, " AS t WHERE t.\"id\" = $1::bigint AND ");
    bool ok = filter_scope_sql(x->w->fc, x->form, "t", x->d.update, &sql, args, &fe);
    PGresult *r = ok ? must(x, sql.data, args) : NULL;
    buf_free(&sql);
    json_decref(args);
    if (!r)
        return ok ? false : fail(x, LOOM_INTERNAL, "a permission filter does not compile");
    if (PQntuples(r) == 0)
        return fail(x, LOOM_FORBIDDEN, "the change would take the record out of what you may update");
    return true;
}

/* Whether the caller may take transition t on record old (allowed: roles,
 * the state's assignee, the owner; an app admin always may). */
static bool allowed(wr *x, json_t *t, json_t *old)
{
    const filter_ctx *fc = x->w->fc;
    if (fc->admin || flow_has(fc->roles, "admin"))
        return true;
    json_t *al = json_object_get(t, "allowed");
    json_t *roles = json_object_get(al, "roles");
    size_t i;
    json_t *r;
    json_array_foreach(roles, i, r) if (flow_has(fc->roles, json_string_value(r))) return true;
    json_t *owner = json_object_get(old, "_owner");
    if (json_is_true(json_object_get(al, "owner")) && fc->me && json_is_integer(owner) &&
        json_integer_value(owner) == fc->me)
        return true;
    if (!json_is_true(json_object_get(al, "assignee")))
        return false;
    json_t *a = json_object_get(flow_state(x->flow, jstr(json_object_get(old, "_state"))), "assignee");
    long long managed = 0;
    flow_match m = a ? flow_assignee_match(a, old, fc->me, fc->roles, &managed) : FLOW_NO;
    if (m != FLOW_MANAGER)
        return m == FLOW_YES;
    if (x->manages)
        return x->manages == 2;
    static db_stmt st = {.sql = "SELECT 1 FROM loom.users WHERE id = $1::bigint AND manager = $2::bigint"};
    char u[24], me[24];
    snprintf(u, sizeof u, "%lld", managed);
    snprintf(me, sizeof me, "%lld", fc->me);
    loom_err e = {0};
    PGresult *res = db_query(x->w->db, x->w->a, &st, 2, (const char *[]){u, me}, &e);
    if (!res) {
        db_failed(x, &e);   /* out->code says it was not a refusal */
        return false;
    }
    x->manages = PQntuples(res) == 1 ? 2 : 1;
    return x->manages == 2;
}

/* A transition's set: field assignments ("now", "today", "me" resolved). */
static bool apply_set(wr *x, json_t *set, json_t *rec)
{
    const char *k;
    json_t *v;
    json_object_foreach(set, k, v)
    {
        json_t *f = bundle_item(x->fields, k);
        const char *code;
        char msg[256], p[256];
        json_t *val = !f ? NULL : json_is_null(v) ? json_null() : assigned_value(x, f, v, &code, msg, sizeof msg);
        if (!val && f && !code)
            return false;   /* the clock could not be read */
        snprintf(p, sizeof p, "/%.200s", k);
        if (!val)
            problem(x->errors, p, f ? code : "unknown_field", "the transition sets %s", f ? msg : "no such field");
        else
            json_object_set_new(rec, k, val);
    }
    return true;
}

/* A transition's guard (when) over rec: false after a 422 transition_not_allowed. */
static bool guard(wr *x, json_t *t, json_t *rec)
{
    const char *when = json_string_value(json_object_get(t, "when"));
    if (!when || json_array_size(x->errors))
        return true;
    if (mentions_clock(when) && !tx_clock(x))
        return false;
    char what[160];
    snprintf(what, sizeof what, "transition/%s/when", jstr(json_object_get(t, "id")));
    json_t *view = lua_view(fields_of(x), rec, true, NULL);
    bool truth = true;
    bool ran = condition(x, what, when, view, "", &truth);
    json_decref(view);
    if (ran && !truth)
        return fail(x, LOOM_TRANSITION_NOT_ALLOWED, "the condition of transition \"%s\" does not hold",
                    jstr(json_object_get(t, "id")));
    return true;
}

/* The fields a transition requires that are empty in rec, as problems. */
static void required_by(wr *x, json_t *t, json_t *rec)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(t, "requires"), i, f)
    {
        char p[256];
        snprintf(p, sizeof p, "/%.200s", jstr(f));
        if (empty(json_object_get(rec, jstr(f))))
            problem(x->errors, p, "required", "transition \"%s\" requires a value", jstr(json_object_get(t, "id")));
    }
}

/* Whether an update's row statement is all it writes (no subform rows, no
 * files, no timers to cancel or start, no update scope to check after it),
 * and the caller reads the answer from it (read scope all): with w->last,
 * it then commits with that statement. */
static bool row_is_last(wr *x, json_t *old, json_t *rec, json_t *t)
{
    return x->w->last && !holds_rows(x, old) && !holds_rows(x, rec) && !x->has_files &&
           (t ? !flow_has_timers(x->flow) : perm_scope_all(x->d.update)) && perm_scope_all(x->d.read);
}

/* Writes rec over old (record id): its changes ch, and with transition t
 * the new state and visit, all in history as one entry. */
static bool update_row(wr *x, const char *id, json_t *old, json_t *rec, json_t *ch, json_t *t, const char *comment)
{
    const write_ctx *w = x->w;
    buf sql = {0}, def = {0};
    int n = columns(x->fields, NULL, NULL, &def);
    json_t *args = json_array(), *vals = column_values(x->fields, rec);
    json_t *owner = json_object_get(rec, "_owner");
    arg(args, id);
    arg_json(args, vals);
    arg_me(args, w->fc->me);
    arg(args, w->app);
    arg(args, x->form);
    arg_json(args, ch);
    if (json_is_integer(owner))
        arg_int(args, json_integer_value(owner));
    else
        arg(args, NULL);
    buf_puts(&sql, "WITH u AS (UPDATE ");
    qualified(&sql, w->fc->schema, x->form);
    buf_puts(&sql, " AS t SET \"_version\" = t.\"_version\" + 1, \"_updated_at\" = now(), "
                   "\"_updated_by\" = $3, \"_owner\" = $7::bigint");
    if (t) {
        arg(args, jstr(json_object_get(old, "_state")));
        arg(args, jstr(json_object_get(t, "to")));
        arg(args, jstr(json_object_get(t, "id")));
        arg(args, comment);
        buf_puts(&sql, ", \"_state\" = $9, \"_state_at\" = now(), \"_visit\" = t.\"_visit\" + 1");
    }
    set_columns(&sql, x->fields);
    if (n)
        buf_printf(&sql, " FROM jsonb_to_record($2::jsonb) AS x(%s)", def.data);
    else
        buf_puts(&sql, " FROM (SELECT $2::jsonb) AS x");
    buf_puts(&sql, " WHERE t.\"id\" = $1::bigint RETURNING t.\"id\", t.\"_version\"), ");
    if (t)
        buf_puts(&sql, "h AS (INSERT INTO loom.history (app, form, record, actor, action, changes, from_state, to_state, "
                       "transition, comment) SELECT $4, $5, u.\"id\", $3, 'transition', $6::json, $8, $9, $10, $11 FROM u) ");
    else
        buf_puts(&sql, "h AS (INSERT INTO loom.history (app, form, record, actor, action, changes) "
                       "SELECT $4, $5, u.\"id\", $3, 'update', $6::json FROM u) ");
    buf_puts(&sql, "SELECT \"_version\", to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM u");
    PGresult *r = write_sql_as(x, sql.data, args, row_is_last(x, old, rec, t));   /* what follows then writes nothing */
    if (r) {
        x->out->version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        /* as a read shows it, in the same order */
        json_t *sys = json_pack("{s:O, s:I}", "id", json_object_get(old, "id"), "_version", (json_int_t)x->out->version);
        if (x->flow)
            json_object_set(sys, "_state", t ? json_object_get(t, "to") : json_object_get(old, "_state"));
        json_object_set(sys, "_owner", owner ? owner : json_null());
        json_object_set(sys, "_created_at", json_object_get(old, "_created_at"));
        json_object_set(sys, "_created_by", json_object_get(old, "_created_by"));
        json_object_set_new(sys, "_updated_at", json_string(PQgetvalue(r, 0, 1)));
        json_object_set_new(sys, "_updated_by", w->fc->me ? json_integer(w->fc->me) : json_null());
        json_decref(x->out->record);
        x->out->record = shown(x, rec, sys, old);
    }
    buf_free(&sql);
    buf_free(&def);
    json_decref(args);
    json_decref(vals);
    char ids[32];
    snprintf(ids, sizeof ids, "{%s}", id);
    return r && write_rows(x, x->out->id, rec, old) && link_files(x, x->out->id, rec, old) &&
           (!t || enter_state(x, ids, jstr(json_object_get(t, "to")), true));
}

/* ---- approvals ---- */

/* The columns approval_json() reads, of approvals aliased a. */
#define APPROVAL_COLUMNS                                                                                         \
    "SELECT a.id, a.transition, a.requested_by, to_char(a.requested_at AT TIME ZONE 'UTC', "                     \
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), a.\"values\", to_jsonb(a.approvers), a.mode, a.decisions, a.status, a.comment "

/* Row i of an APPROVAL_COLUMNS result as the contract shows an approval, its
 * values without the fields hidden from the caller. */
static json_t *approval_json(wr *x, PGresult *r, int i)
{
    json_t *values = json_loads(PQgetvalue(r, i, 4), 0, NULL);
    const char *k;
    void *tmp;
    json_t *v;
    json_object_foreach_safe(values, tmp, k, v) if (mode(x, NULL, k) == FIELD_HIDDEN) json_object_del(values, k);
    return json_pack("{s:I, s:s, s:o, s:s, s:o, s:o, s:o, s:o, s:s, s:o}", "id",
                     (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10), "transition", PQgetvalue(r, i, 1),
                     "requested_by",
                     PQgetisnull(r, i, 2) ? json_null() : json_integer(strtoll(PQgetvalue(r, i, 2), NULL, 10)),
                     "requested_at", PQgetvalue(r, i, 3), "values", values ? values : json_object(), "approvers",
                     json_loads(PQgetvalue(r, i, 5), 0, NULL), "mode", json_loads(PQgetvalue(r, i, 6), JSON_DECODE_ANY, NULL),
                     "decisions", json_loads(PQgetvalue(r, i, 7), 0, NULL), "status", PQgetvalue(r, i, 8), "comment",
                     PQgetisnull(r, i, 9) ? json_null() : json_string(PQgetvalue(r, i, 9)));
}

/* x->pending: the approval pending on record id (locked with it unless
 * x->peek), or NULL. */
static bool load_pending(wr *x, const char *id)
{
    json_decref(x->pending);
    x->pending = NULL;
    if (!x->flow || !flow_has_approvals(x->flow))   /* any pending one's transition is gone: none */
        return true;
    json_t *args = json_pack("[s, s, s]", x->w->app, x->form, id);
    PGresult *r = must(x, x->peek ? APPROVAL_COLUMNS "FROM loom.approvals a WHERE a.app = $1 AND a.form = $2 AND "
                                    "a.record = $3::bigint AND a.status = 'pending'"
                                  : APPROVAL_COLUMNS "FROM loom.approvals a WHERE a.app = $1 AND a.form = $2 AND "
                                    "a.record = $3::bigint AND a.status = 'pending' FOR UPDATE",
                       args);
    json_decref(args);
    if (r && PQntuples(r))
        x->pending = approval_json(x, r, 0);
    if (x->pending && !flow_transition(x->flow, jstr(json_object_get(x->pending, "transition")))) {
        /* a publish took its transition away: it can never complete, and must not block the record */
        json_t *a = json_array();
        arg_int(a, json_integer_value(json_object_get(x->pending, "id")));
        json_decref(x->pending);
        x->pending = NULL;
        if (!x->peek)
            r = must(x, "UPDATE loom.approvals SET status = 'cancelled', resolved_at = now() WHERE id = $1::bigint", a);
        json_decref(a);
    }
    return r != NULL;
}

/* How many approvals an approval of n approvers in mode needs. */
static long long needed(json_t *mode, long long n)
{
    const char *m = json_string_value(mode);
    if (m && !strcmp(m, "all"))
        return n;
    json_t *k = json_object_get(mode, "at_least");
    return json_is_integer(k) ? (long long)json_integer_value(k) : 1;
}

/* A history entry of record id without field changes. */
static bool history_note(wr *x, const char *id, const char *action, const char *from, const char *to,
                         const char *transition, const char *comment)
{
    json_t *args = json_array();
    arg(args, x->w->app);
    arg(args, x->form);
    arg(args, id);
    arg_me(args, x->w->fc->me);
    arg(args, action);
    arg(args, from);
    arg(args, to);
    arg(args, transition);
    arg(args, comment);
    PGresult *r = must(x, "INSERT INTO loom.history (app, form, record, actor, action, from_state, to_state, transition, "
                          "comment) VALUES ($1, $2, $3::bigint, $4::bigint, $5, $6, $7, $8, $9)", args);
    json_decref(args);
    return r != NULL;
}

/* The active users an assignee form (who) names on record rec, but not
 * user exclude: a new array of ids, ascending, or NULL after a failure. */
static json_t *assignee_users(wr *x, json_t *who, json_t *rec, long long exclude)
{
    buf ids = {0};
    buf_puts(&ids, "{");
    json_t *list = json_object_get(who, "users"), *one = json_object_get(who, "user");
    size_t i;
    json_t *u;
    json_array_foreach(list, i, u) if (json_is_integer(u)) buf_printf(&ids, "%s%lld", ids.len > 1 ? "," : "", (long long)json_integer_value(u));
    if (json_is_integer(one))
        buf_printf(&ids, "%s%lld", ids.len > 1 ? "," : "", (long long)json_integer_value(one));
    json_t *fv = json_object_get(rec, jstr(json_object_get(who, "field")));
    if (json_is_integer(fv))
        buf_printf(&ids, "%s%lld", ids.len > 1 ? "," : "", (long long)json_integer_value(fv));
    json_t *mv = json_object_get(rec, jstr(json_object_get(who, "manager_of")));
    buf_puts(&ids, "}");
    json_t *args = json_array();
    arg(args, ids.data);
    arg_int(args, exclude);
    arg(args, json_string_value(json_object_get(who, "role")));
    arg(args, x->w->app);
    arg_int(args, json_is_integer(mv) ? json_integer_value(mv) : 0);
    buf_free(&ids);
    PGresult *r = must(x, "SELECT coalesce(jsonb_agg(id ORDER BY id), '[]') FROM loom.users WHERE active AND id <> $2::bigint "
                          "AND (id = ANY($1::bigint[]) OR ($3::text IS NOT NULL AND app_roles -> $4 ? $3) OR "
                          "id = (SELECT manager FROM loom.users WHERE id = $5::bigint))", args);
    json_decref(args);
    return r ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
}

/* Starts the approval of transition t on record id (rec: as it would be),
 * with the checked input values: the approvers fixed from the assignee form
 * (active users; not the requester under no_self_approval). */
static bool start_approval(wr *x, const char *id, json_t *t, json_t *values, json_t *rec, const char *comment)
{
    json_t *ap = json_object_get(t, "approval");
    const filter_ctx *fc = x->w->fc;
    json_t *approvers = assignee_users(x, json_object_get(ap, "approvers"), rec,
                                       json_is_true(json_object_get(ap, "no_self_approval")) ? fc->me : 0);
    if (!approvers)
        return false;
    size_t i;
    json_t *u;
    PGresult *r;
    long long n = (long long)json_array_size(approvers), need = needed(json_object_get(ap, "mode"), n);
    bool ok = true;
    if (n == 0 || n < need) {
        ok = fail(x, LOOM_TRANSITION_NOT_ALLOWED, "transition \"%s\" needs %lld approver%s and %lld %s eligible",
                  jstr(json_object_get(t, "id")), need, need == 1 ? "" : "s", n, n == 1 ? "is" : "are");
    } else {
        json_t *args = json_array();
        arg(args, x->w->app);
        arg(args, x->form);
        arg(args, id);
        arg(args, jstr(json_object_get(t, "id")));
        arg_me(args, fc->me);
        arg(args, comment);
        arg_json(args, values);
        buf lit = {0};
        buf_puts(&lit, "{");
        json_array_foreach(approvers, i, u) buf_printf(&lit, "%s%lld", i ? "," : "", (long long)json_integer_value(u));
        buf_puts(&lit, "}");
        arg(args, lit.data);
        buf_free(&lit);
        json_t *m = json_object_get(ap, "mode");
        if (m)
            arg_json(args, m);
        else
            arg(args, "\"any\"");
        r = must(x, "WITH a AS (INSERT INTO loom.approvals (app, form, record, transition, requested_by, comment, \"values\", "
                    "approvers, mode) VALUES ($1, $2, $3::bigint, $4, $5::bigint, $6, $7::jsonb, $8::bigint[], $9::jsonb) "
                    "RETURNING *) " APPROVAL_COLUMNS "FROM a", args);
        json_decref(args);
        ok = r && history_note(x, id, "approval_requested", NULL, NULL, jstr(json_object_get(t, "id")), comment);
        if (ok)
            x->out->approval = approval_json(x, r, 0);
    }
    json_decref(approvers);
    return ok;
}

/* Record old with values (a checked body) set over it, a new object:
 * subform rows keep what the caller cannot set (autonumbers, readonly). */
static json_t *merged(wr *x, json_t *old, json_t *values)
{
    json_t *rec = json_copy(old);
    json_object_update(rec, values);
    size_t i;
    json_t *f;
    json_array_foreach(x->fields, i, f)
    {
        if (!field_is(f, "subform") || !json_object_get(values, jstr(json_object_get(f, "id"))))
            continue;
        json_t *orows = json_object_get(old, jstr(json_object_get(f, "id")));
        size_t r;
        json_t *row;
        json_array_foreach(json_object_get(rec, jstr(json_object_get(f, "id"))), r, row)
        {
            json_t *orow = row_by_id(orows, json_object_get(row, "id"), NULL);
            const char *k;
            json_t *v;
            json_object_foreach(orow, k, v) if (!json_object_get(row, k)) json_object_set(row, k, v);
        }
    }
    return rec;
}

/* An update (t NULL) or transition t of record id with the fields of body. */
static bool update(wr *x, const char *id, json_t *body, long long if_match, json_t *t, const char *comment)
{
    json_t *old = NULL, *values = NULL, *rec = NULL;
    bool scopes[3];
    bool ok = lock(x, id, &old, scopes);
    const char *state = ok ? jstr(json_object_get(old, "_state")) : "";
    ok = ok && load_pending(x, id);
    if (ok && t && x->pending && !x->approving)
        ok = fail(x, LOOM_APPROVAL_PENDING, "transition \"%s\" waits for approval",
                  jstr(json_object_get(x->pending, "transition")));
    else if (ok && t && !flow_starts_in(x->flow, t, state))
        ok = fail(x, LOOM_STATE_CHANGED, "transition \"%s\" does not start in state \"%s\"",
                  jstr(json_object_get(t, "id")), state);
    else if (ok && t && !x->approving && !allowed(x, t, old))
        ok = x->out->code == LOOM_OK && fail(x, LOOM_FORBIDDEN, "you may not take transition \"%s\"",
                                              jstr(json_object_get(t, "id")));
    else if (ok && !t && !scopes[1])
        ok = fail(x, LOOM_FORBIDDEN, "you may not update this record");
    if (ok && x->flow) {
        x->state = state;
        x->input = t ? json_object_get(t, "input") : NULL;
        if (t && !x->input)
            x->input = json_array();   /* takes nothing */
        else
            json_incref(x->input);
    }
    ok = ok && version_ok(x, old, if_match) && check_body(x, body, old, &values);
    if (ok && !t && x->pending) {   /* the pending transition's input stays as it was asked with */
        json_t *pt = flow_transition(x->flow, jstr(json_object_get(x->pending, "transition")));
        const char *k;
        json_t *v;
        json_object_foreach(values, k, v) if (flow_has(json_object_get(pt, "input"), k) &&
                                              !json_equal(v, json_object_get(old, k)))
        {
            ok = fail(x, LOOM_APPROVAL_PENDING, "%s is an input of transition \"%s\", which waits for approval", k,
                      jstr(json_object_get(pt, "id")));
            break;
        }
    }
    if (ok) {
        rec = merged(x, old, values);
        ok = fill_defaults(x, body, rec, false) && check_files(x, rec, old) &&
             (!t || (guard(x, t, rec) && apply_set(x, json_object_get(t, "set"), rec))) && expressions(x, rec) &&
             check_links(x, rec, old);
        if (ok && t)
            required_by(x, t, rec);
    }
    bool valid = ok && !json_array_size(x->errors) && !json_array_size(x->expr_errors);
    if (valid && holds_rows(x, rec)) {
        json_t *one = json_pack("[O]", rec);
        ok = valid = rows_ready(x, one);
        json_decref(one);
    }
    json_t *ch = valid ? changes(x, old, rec) : NULL;
    x->out->id = strtoll(id, NULL, 10);
    x->out->version = old ? json_integer_value(json_object_get(old, "_version")) : 0;
    if (ch && t && json_object_get(t, "approval") && !x->approving)
        ok = start_approval(x, id, t, values, rec, comment);
    else if (ch && (t || json_object_size(ch)))
        ok = update_row(x, id, old, rec, ch, t, comment) && (t || still_in_scope(x, id));
    else if (ch)
        x->out->unchanged = true;
    json_decref(x->input);
    x->input = NULL;
    json_decref(x->pending);
    x->pending = NULL;
    json_decref(ch);
    json_decref(old);
    json_decref(values);
    json_decref(rec);
    return ok;
}

bool write_update(const write_ctx *w, const char *form, const char *id, json_t *body, long long if_match,
                  write_result *out)
{
    wr x;
    return finish(&x, begin(&x, w, form, out) && update(&x, id, body, if_match, NULL, NULL));
}

bool write_transition(const write_ctx *w, const char *form, const char *id, const char *transition, json_t *values,
                      const char *comment, long long if_match, write_result *out)
{
    wr x;
    bool ok = begin(&x, w, form, out);
    json_t *t = ok && x.flow ? flow_transition(x.flow, transition) : NULL;
    if (ok && !t)
        ok = fail(&x, LOOM_NOT_FOUND, "no such transition");
    json_t *body = values ? json_incref(values) : json_object();
    ok = ok && update(&x, id, body, if_match, t, comment);
    json_decref(body);
    return finish(&x, ok);
}

bool write_actions(const write_ctx *w, const char *form, const char *id, json_t **actions, bool *may_update,
                   bool *may_delete, write_result *out)
{
    wr x;
    json_t *old = NULL;
    bool scopes[3] = {false, false, false};
    bool ok = begin(&x, w, form, out);
    x.peek = true;
    ok = ok && lock(&x, id, &old, scopes) && load_pending(&x, id);
    *actions = json_array();
    out->approval = json_incref(x.pending);
    const char *state = x.pending ? "" : jstr(json_object_get(old, "_state"));   /* pending: nothing starts */
    /* a plain update: in the update scope, and a field the caller writes that the state lets change */
    *may_update = false;
    *may_delete = ok && scopes[2];
    json_t *f;
    size_t i;
    json_array_foreach(ok && scopes[1] ? x.fields : NULL, i, f)
    {
        const char *fid = jstr(json_object_get(f, "id"));
        if (mode(&x, NULL, fid) == FIELD_WRITE && !field_computed(f) &&
            (!x.flow || flow_editable(x.flow, jstr(json_object_get(old, "_state")), fid)))
            *may_update = true;
    }
    json_t *app = json_object_get(w->fc->bundle, "app");
    json_t *t;
    json_array_foreach(ok && x.flow ? json_object_get(x.flow, "transitions") : NULL, i, t)
    {
        if (!flow_starts_in(x.flow, t, state))
            continue;
        if (!allowed(&x, t, old)) {
            if (x.out->code == LOOM_OK)
                continue;
            ok = false;
            break;
        }
        json_t *input = json_array();
        size_t k;
        json_array_foreach(json_object_get(t, "input"), k, f) if (mode(&x, NULL, jstr(f)) != FIELD_HIDDEN)
            json_array_append(input, f);
        json_t *requires = json_object_get(t, "requires");
        json_array_append_new(*actions, json_pack("{s:O, s:o, s:O, s:o, s:o}", "id", json_object_get(t, "id"), "label",
                                                  schema_label(json_object_get(t, "label"), w->locale,
                                                               json_object_get(app, "locales"), jstr(json_object_get(t, "id"))),
                                                  "to", json_object_get(t, "to"), "input", input, "requires",
                                                  requires ? json_incref(requires) : json_array()));
    }
    json_decref(old);
    json_decref(x.pending);
    return finish(&x, ok);
}

/* The caller's app roles and whether it is a platform admin, for user id
 * (the requester of an approval): *fc is w's caller made that user. */
static bool as_user(wr *x, long long id, filter_ctx *fc, json_t **roles)
{
    json_t *args = json_array();
    arg_int(args, id);
    arg(args, x->w->app);
    PGresult *r = must(x, "SELECT coalesce(app_roles -> $2, '[]'), 'admin' = ANY(platform_roles) FROM loom.users "
                          "WHERE id = $1::bigint", args);
    json_decref(args);
    if (!r)
        return false;
    *fc = *x->w->fc;
    fc->me = id;
    fc->roles = *roles = PQntuples(r) ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : json_array();
    fc->admin = PQntuples(r) && *PQgetvalue(r, 0, 1) == 't';
    return true;
}

bool write_decide(const write_ctx *w, const char *form, const char *id, const char *decision, const char *comment,
                  write_result *out)
{
    wr x;
    json_t *old = NULL;
    bool scopes[3];
    bool ok = begin(&x, w, form, out) && lock(&x, id, &old, scopes) && load_pending(&x, id);
    json_t *p = x.pending;
    long long me = w->fc->me;
    if (ok && !p)
        ok = fail(&x, LOOM_CONFLICT, "no approval is pending on this record");
    bool approver = false, decided = false;
    size_t i;
    json_t *v;
    json_array_foreach(ok ? json_object_get(p, "approvers") : NULL, i, v) approver = approver || json_integer_value(v) == me;
    json_array_foreach(ok ? json_object_get(p, "decisions") : NULL, i, v) decided =
        decided || json_integer_value(json_object_get(v, "user")) == me;
    if (ok && !approver)
        ok = fail(&x, LOOM_FORBIDDEN, "you are not an approver of this request");
    else if (ok && decided)
        ok = fail(&x, LOOM_CONFLICT, "you have decided on this request already");
    ok = ok && tx_clock(&x);
    json_t *t = ok ? flow_transition(x.flow, jstr(json_object_get(p, "transition"))) : NULL;
    const char *status = "pending", *state = jstr(json_object_get(old, "_state"));
    const char *reject_to = jstr(json_object_get(json_object_get(t, "approval"), "reject_to"));
    bool approve = decision && !strcmp(decision, "approve");
    if (ok) {
        json_t *ds = json_object_get(p, "decisions");
        json_array_append_new(ds, json_pack("{s:I, s:s, s:s?, s:s}", "user", (json_int_t)me, "decision",
                                            approve ? "approve" : "reject", "comment", comment, "at", x.now));
        long long yes = 0, no = 0, n = (long long)json_array_size(json_object_get(p, "approvers"));
        json_array_foreach(ds, i, v)
        {
            bool y = !strcmp(jstr(json_object_get(v, "decision")), "approve");
            yes += y;
            no += !y;
        }
        long long need = needed(json_object_get(p, "mode"), n);
        status = yes >= need ? "approved" : no > n - need ? "rejected" : "pending";
        bool moves = !strcmp(status, "rejected") && *reject_to && strcmp(reject_to, state) != 0;
        ok = history_note(&x, id, approve ? "approve" : "reject", moves ? state : NULL, moves ? reject_to : NULL,
                          jstr(json_object_get(t, "id")), comment);
        if (ok && moves) {   /* rejected: back to reject_to, a new visit */
            buf sql = {0};
            buf_puts(&sql, "UPDATE ");
            qualified(&sql, w->fc->schema, form);
            buf_puts(&sql, " SET \"_state\" = $2, \"_state_at\" = now(), \"_visit\" = \"_visit\" + 1, "
                           "\"_version\" = \"_version\" + 1, \"_updated_at\" = now(), \"_updated_by\" = $3::bigint "
                           "WHERE \"id\" = $1::bigint");
            json_t *args = json_array();
            arg(args, id);
            arg(args, reject_to);
            arg_me(args, me);
            char ids[32];
            snprintf(ids, sizeof ids, "{%s}", id);
            ok = must(&x, sql.data, args) != NULL && enter_state(&x, ids, reject_to, true);
            buf_free(&sql);
            json_decref(args);
        }
    }
    bool failed = false;
    json_t *errors = NULL;
    if (ok && !strcmp(status, "approved")) {   /* the transition, as its requester, with the values of the start */
        filter_ctx fc;
        json_t *roles = NULL;
        loom_err e = {0};
        ok = as_user(&x, json_integer_value(json_object_get(p, "requested_by")), &fc, &roles) &&
             db_exec(w->db, w->a, "SAVEPOINT loom_approved", &e);
        if (!ok && e.code)
            db_failed(&x, &e);
        write_ctx as = *w;
        as.fc = &fc;
        write_result done;
        wr y;
        if (ok && begin(&y, &as, form, &done)) {
            y.approving = true;
            bool applied = update(&y, id, json_object_get(p, "values"), -1, t, jstr(json_object_get(p, "comment")));
            applied = finish(&y, applied);
            if (applied) {
                db_exec(w->db, w->a, "RELEASE SAVEPOINT loom_approved", &e);
            } else if (done.from_db) {
                *out = done;
                memset(&done, 0, sizeof done);
                ok = false;
            } else {
                db_exec(w->db, w->a, "ROLLBACK TO SAVEPOINT loom_approved", &e);
                failed = true;
                errors = done.errors ? json_incref(done.errors)
                                     : json_pack("[{s:s, s:s, s:s}]", "path", "", "code", loom_code_name(done.code),
                                                 "message", done.message);
                ok = history_note(&x, id, "approval_failed", NULL, NULL, jstr(json_object_get(t, "id")), done.message);
            }
            write_result_free(&done);
        } else if (ok) {
            finish(&y, false);
            write_result_free(&done);
            ok = fail(&x, LOOM_INTERNAL, "the approved transition could not start");
        }
        json_decref(roles);
        if (failed)
            status = "failed";
    }
    if (ok) {
        json_t *args = json_array();
        arg_json(args, json_object_get(p, "decisions"));
        arg(args, status);
        arg_int(args, json_integer_value(json_object_get(p, "id")));
        ok = must(&x, "UPDATE loom.approvals SET decisions = $1::jsonb, status = $2, resolved_at = CASE WHEN $2 = "
                      "'pending' THEN NULL ELSE now() END WHERE id = $3::bigint", args) != NULL;
        json_decref(args);
        json_object_set_new(p, "status", json_string(status));
        if (errors)
            json_object_set(p, "errors", errors);
        out->approval = json_incref(p);
    }
    json_decref(errors);
    out->id = strtoll(id, NULL, 10);
    json_decref(old);
    json_decref(x.pending);
    return finish(&x, ok);
}

/* ---- timers falling due ---- */

/* A notification to each user of the assignee form who about record id. */
static bool notify(wr *x, json_t *who, json_t *rec, const char *id, const char *title)
{
    json_t *users = assignee_users(x, who, rec, 0);
    if (!users)
        return false;
    json_t *args = json_array();
    arg_json(args, users);
    arg(args, x->w->app);
    arg(args, x->form);
    arg(args, id);
    arg(args, title);
    PGresult *r = must(x, "INSERT INTO loom.notifications (user_id, app, form, record, kind, title) SELECT u::bigint, $2, $3, "
                          "$4::bigint, 'sla_breach', $5 FROM jsonb_array_elements_text($1::jsonb) AS u", args);
    json_decref(args);
    json_decref(users);
    return r != NULL;
}

/* Runs one step of a breach as the system: set (values as a transition's
 * set gives them) or transition t, through a write of its own. */
static bool system_step(wr *x, const char *id, json_t *set, json_t *t, const char *comment)
{
    wr y;
    write_result res;
    bool ok = begin(&y, x->w, x->form, &res);
    json_t *body = json_object();
    if (ok && set) {   /* "now", "today", "me" as a transition's set resolves them */
        ok = apply_set(&y, set, body);
        if (ok && json_array_size(y.errors))
            ok = fail(&y, LOOM_VALIDATION_FAILED, "a breach sets a value its field does not take");
    }
    ok = ok && update(&y, id, body, -1, t, comment);
    json_decref(body);
    ok = finish(&y, ok);
    if (!ok) {
        if (res.from_db)
            db_failed(x, &res.db);
        else
            fail(x, res.code, "%s", res.message);
    }
    write_result_free(&res);
    return ok;
}

bool write_fire(const write_ctx *w, const char *form, const char *id, const char *kind, const char *state, int visit,
                write_result *out)
{
    wr x;
    bool ok = begin(&x, w, form, out);
    if (ok && !x.flow)
        return finish(&x, true);   /* the flow is gone: nothing is due any more */
    buf sql = {0};
    buf_puts(&sql, "SELECT \"_state\", \"_visit\" FROM ");
    qualified(&sql, w->fc->schema, form);
    buf_puts(&sql, " WHERE \"id\" = $1::bigint FOR UPDATE");
    json_t *args = json_pack("[s]", id);
    PGresult *r = ok ? must(&x, sql.data, args) : NULL;
    buf_free(&sql);
    json_decref(args);
    /* only in the visit that scheduled it */
    if (!r || PQntuples(r) == 0 || strcmp(PQgetvalue(r, 0, 0), state) || atoi(PQgetvalue(r, 0, 1)) != visit)
        return finish(&x, r != NULL && ok);
    json_t *st = flow_state(x.flow, state);
    bool timeout = !strcmp(kind, "timeout");
    json_t *spec = json_object_get(st, timeout ? "timeout" : "sla");
    char comment[96];
    snprintf(comment, sizeof comment, "%s %s", kind, jstr(json_object_get(spec, timeout ? "after" : "within")));
    ok = history_note(&x, id, "breach", state, NULL, NULL, comment);
    json_t *steps = timeout ? json_pack("[{s:O}]", "transition", json_object_get(spec, "transition"))
                            : json_incref(json_object_get(spec, "on_breach"));
    size_t i;
    json_t *step;
    json_array_foreach(ok ? steps : NULL, i, step)
    {
        json_t *tv = json_object_get(step, "transition"), *who = json_object_get(step, "notify");
        if (who) {
            json_t *old = NULL;
            bool scopes[3];
            x.peek = true;
            ok = lock(&x, id, &old, scopes);
            json_t *app = json_object_get(w->fc->bundle, "app");
            json_t *flabel = schema_label(json_object_get(x.fdef, "label"), NULL, json_object_get(app, "locales"), form);
            json_t *slabel = schema_label(json_object_get(st, "label"), NULL, json_object_get(app, "locales"), state);
            char title[512];
            snprintf(title, sizeof title, "%s #%s: %s %s", jstr(flabel), id, jstr(slabel), comment);
            json_decref(flabel);
            json_decref(slabel);
            ok = ok && notify(&x, who, old, id, title);
            json_decref(old);
        } else if (tv) {
            /* a timeout (or breach) that moves the record cancels what waits for approval first */
            json_t *a = json_pack("[s, s, s]", w->app, form, id);
            ok = must(&x, "UPDATE loom.approvals SET status = 'cancelled', resolved_at = now() WHERE app = $1 AND "
                          "form = $2 AND record = $3::bigint AND status = 'pending'", a) != NULL;
            json_decref(a);
            json_t *t = flow_transition(x.flow, jstr(tv));
            if (ok && t && !system_step(&x, id, NULL, t, comment) && x.out->code == LOOM_STATE_CHANGED)
                x.out->code = LOOM_OK;   /* it does not start where an earlier step took the record: nothing to do */
            ok = x.out->code == LOOM_OK;
        } else {
            ok = system_step(&x, id, json_object_get(step, "set"), NULL, comment);
        }
        if (!ok)
            break;
    }
    json_decref(steps);
    return finish(&x, ok);
}

#define CASCADE_DEPTH 16

static bool remove_record(wr *x, const char *id, json_t *old, int depth);

/* What the deletion of record id of x's form does to the records that refer
 * to it, done here rather than by the foreign keys so that each is in the
 * history: refs with on_delete cascade delete their records (and theirs, to
 * CASCADE_DEPTH), set_null empties the ref as an update. A restrict ref is
 * left to the foreign key (409). Refs in subform rows change their parent
 * records (row_dependents). */
/* Subform rows of form (sub) whose ref col points at record id: each parent
 * record is updated as a write would, by the same actor: the rows go
 * (cascade) or their ref empties (set_null), with its version and history. */
static bool row_dependents(wr *x, const char *form, json_t *sub, json_t *f, const char *id)
{
    const char *sid = jstr(json_object_get(sub, "id")), *col = jstr(json_object_get(f, "id"));
    bool cascade = !strcmp(jstr(json_object_get(f, "on_delete")), "cascade");
    char child[DDL_NAME_MAX + 1];
    child_table(form, sid, child);
    buf sql = {0};
    buf_puts(&sql, "SELECT \"_parent\", \"id\", ");
    ddl_quote(&sql, col);
    buf_puts(&sql, " = $1::bigint FROM ");
    qualified(&sql, x->w->fc->schema, child);
    buf_puts(&sql, " WHERE \"_parent\" IN (SELECT \"_parent\" FROM ");
    qualified(&sql, x->w->fc->schema, child);
    buf_puts(&sql, " WHERE ");
    ddl_quote(&sql, col);
    buf_puts(&sql, " = $1::bigint) ORDER BY \"_parent\", \"_pos\", \"id\"");
    json_t *args = json_pack("[s]", id);
    PGresult *r = must(x, sql.data, args);
    buf_free(&sql);
    json_decref(args);
    if (!r)
        return false;
    filter_ctx sys = *x->w->fc;   /* as the delete's consequence: whoever may see the parent */
    sys.system = sys.admin = true;
    write_ctx wsys = *x->w;
    wsys.fc = &sys;
    bool ok = true;
    for (int n = 0; ok && n < PQntuples(r);) {
        const char *parent = PQgetvalue(r, n, 0);
        json_t *rows = json_array();
        int m = n;
        for (; m < PQntuples(r) && !strcmp(PQgetvalue(r, m, 0), parent); m++) {
            bool hit = *PQgetvalue(r, m, 2) == 't';
            if (hit && cascade)
                continue;   /* the row goes */
            json_t *row = json_pack("{s:I}", "id", (json_int_t)strtoll(PQgetvalue(r, m, 1), NULL, 10));
            if (hit)
                json_object_set_new(row, col, json_null());
            json_array_append_new(rows, row);
        }
        json_t *body = json_pack("{s:o}", sid, rows);
        write_result res;
        ok = write_update(&wsys, form, parent, body, -1, &res);
        if (!ok) {
            x->out->code = res.code;
            x->out->from_db = res.from_db;
            x->out->db = res.db;
            snprintf(x->out->message, sizeof x->out->message, "%s %s: %s", form, parent, res.message);
            x->out->errors = json_incref(res.errors);
        }
        write_result_free(&res);
        json_decref(body);
        n = m;
    }
    return ok;
}

static bool dependents(wr *x, const char *id, int depth)
{
    size_t i, k;
    json_t *form, *f;
    json_array_foreach(json_object_get(x->w->fc->bundle, "forms"), i, form)
    {
        const char *fid = jstr(json_object_get(form, "id"));
        json_array_foreach(json_object_get(form, "fields"), k, f)
        {
            if (field_is(f, "subform")) {
                size_t r;
                json_t *sf;
                json_array_foreach(json_object_get(f, "fields"), r, sf)
                {
                    const char *od = jstr(json_object_get(sf, "on_delete"));
                    if (field_is(sf, "ref") && !strcmp(jstr(json_object_get(sf, "form")), x->form) &&
                        (!strcmp(od, "cascade") || !strcmp(od, "set_null")) && !row_dependents(x, fid, f, sf, id))
                        return false;
                }
                continue;
            }
            const char *od = jstr(json_object_get(f, "on_delete"));
            if (!field_is(f, "ref") || strcmp(jstr(json_object_get(f, "form")), x->form) ||
                (strcmp(od, "cascade") && strcmp(od, "set_null")))
                continue;
            const char *col = jstr(json_object_get(f, "id"));
            buf sql = {0};
            json_t *args = json_array();
            arg(args, id);
            bool ok;
            if (!strcmp(od, "set_null")) {
                char ch[160];
                snprintf(ch, sizeof ch, "{\"%s\": [%s, null]}", col, id);   /* an id and digits */
                arg_me(args, x->w->fc->me);
                arg(args, x->w->app);
                arg(args, fid);
                arg(args, ch);
                buf_puts(&sql, "WITH u AS (UPDATE ");
                qualified(&sql, x->w->fc->schema, fid);
                buf_puts(&sql, " SET ");
                ddl_quote(&sql, col);
                buf_puts(&sql, " = NULL, \"_version\" = \"_version\" + 1, \"_updated_at\" = now(), \"_updated_by\" = $2 WHERE ");
                ddl_quote(&sql, col);
                buf_puts(&sql, " = $1::bigint AND \"id\" <> $1::bigint RETURNING \"id\") "
                               "INSERT INTO loom.history (app, form, record, actor, action, changes) "
                               "SELECT $3, $4, u.\"id\", $2, 'update', $5::json FROM u");
                ok = must(x, sql.data, args) != NULL;
            } else {
                buf_puts(&sql, "SELECT \"id\" FROM ");
                qualified(&sql, x->w->fc->schema, fid);
                buf_puts(&sql, " WHERE ");
                ddl_quote(&sql, col);
                buf_puts(&sql, " = $1::bigint AND \"id\" <> $1::bigint FOR UPDATE");
                PGresult *r = must(x, sql.data, args);
                ok = r != NULL;
                if (ok && PQntuples(r) && depth >= CASCADE_DEPTH)
                    ok = fail(x, LOOM_CONFLICT, "deleting this record would cascade deeper than %d levels", CASCADE_DEPTH);
                for (int n = 0; ok && r && n < PQntuples(r); n++) {
                    wr y;
                    write_result yo;
                    char child[24];
                    snprintf(child, sizeof child, "%s", PQgetvalue(r, n, 0));
                    /* the cascade is the delete's consequence: every child goes, whoever may see it */
                    filter_ctx sys = *x->w->fc;
                    sys.system = sys.admin = true;
                    write_ctx wsys = *x->w;
                    wsys.fc = &sys;
                    json_t *cold = NULL;
                    bool sc[3];
                    ok = begin(&y, &wsys, fid, &yo) && lock(&y, child, &cold, sc) &&
                         remove_record(&y, child, cold, depth + 1);
                    json_decref(cold);
                    if (!ok) {
                        *x->out = yo;   /* the child's failure is the delete's */
                        memset(&yo, 0, sizeof yo);
                    }
                    finish(&y, ok);
                    write_result_free(&yo);
                }
            }
            buf_free(&sql);
            json_decref(args);
            if (!ok)
                return false;
        }
    }
    return true;
}

/* A delete that a restrict ref stopped (e: the foreign key it names): which
 * records refer to this one, by their form and field. False. */
static bool referred(wr *x, const loom_err *e)
{
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(x->w->catalog, "objects"), key, v)   /* "table|fkey|col|target|action" */
    {
        const char *fk = strstr(key, "|fkey|");
        if (!fk || strcmp(jstr(v), e->path ? e->path : ""))
            continue;
        char table[160], col[160];
        snprintf(table, sizeof table, "%.*s", (int)(strchr(key, '|') - key), key);
        snprintf(col, sizeof col, "%.*s", (int)strcspn(fk + 6, "|"), fk + 6);
        const char *form = table, *sub = NULL, *fid, *sid;   /* the table's form (and subform): the catalog knows */
        json_t *entry, *se;
        json_object_foreach(json_object_get(x->w->catalog, "forms"), fid, entry)
        {
            if (!strcmp(jstr(json_object_get(entry, "table")), table))
                form = fid;
            json_object_foreach(json_object_get(entry, "subforms"), sid, se) if (!strcmp(jstr(json_object_get(se, "table")), table))
                form = fid, sub = sid;
        }
        return fail(x, LOOM_CONFLICT, "%s records refer to this one (their %s%s%s): delete them or change it first", form,
                    sub ? sub : "", sub ? "." : "", col);
    }
    return fail(x, LOOM_CONFLICT, "other records refer to this one");
}

/* Deletes record id (old: its values) with its history entry, after what
 * it does to the records that refer to it. */
static bool remove_record(wr *x, const char *id, json_t *old, int depth)
{
    if (!dependents(x, id, depth))
        return false;
    json_t *ch = changes(x, old, NULL), *args = json_array();
    arg(args, id);
    arg(args, x->w->app);
    arg(args, x->form);
    arg_me(args, x->w->fc->me);
    arg_json(args, ch);
    buf sql = {0};
    buf_puts(&sql, "WITH d AS (DELETE FROM ");
    qualified(&sql, x->w->fc->schema, x->form);
    buf_puts(&sql, " WHERE \"id\" = $1::bigint RETURNING \"id\") "
                   "INSERT INTO loom.history (app, form, record, actor, action, changes) "
                   "SELECT $2, $3, d.\"id\", $4, 'delete', $5::json FROM d");
    loom_err e = {0};
    bool ok = run(x, sql.data, args, &e) != NULL;
    if (!ok && e.code == LOOM_CONFLICT)
        referred(x, &e);
    else if (!ok)
        db_failed(x, &e);
    ok = ok && link_files(x, strtoll(id, NULL, 10), NULL, old);
    if (ok && x->flow) {   /* a record that is gone: its approval can never complete, its timers have nothing to do */
        json_t *a = json_pack("[s, s, s]", x->w->app, x->form, id);
        ok = must(x, "WITH j AS (UPDATE loom.jobs SET status = 'cancelled', done_at = now() WHERE app = $1 AND form = $2 "
                     "AND record = $3::bigint AND status = 'pending') UPDATE loom.approvals SET status = 'cancelled', "
                     "resolved_at = now() WHERE app = $1 AND form = $2 AND record = $3::bigint AND status = 'pending'",
                  a) != NULL;
        json_decref(a);
    }
    buf_free(&sql);
    json_decref(args);
    json_decref(ch);
    return ok;
}

bool write_delete(const write_ctx *w, const char *form, const char *id, long long if_match, write_result *out)
{
    wr x;
    json_t *old = NULL;
    bool scopes[3];
    bool ok = begin(&x, w, form, out) && lock(&x, id, &old, scopes);
    if (ok && !scopes[2])
        ok = fail(&x, LOOM_FORBIDDEN, "you may not delete this record");
    ok = ok && version_ok(&x, old, if_match) && remove_record(&x, id, old, 0);
    out->id = strtoll(id, NULL, 10);
    json_decref(old);
    return finish(&x, ok);
}

void write_result_free(write_result *r)
{
    json_decref(r->errors);
    json_decref(r->record);
    json_decref(r->approval);
    r->errors = r->record = r->approval = NULL;
}

/* ---- imports ---- */

/* Appends the n bytes at t escaped for COPY's text format. */
static void copy_text(buf *out, const char *t, size_t n)
{
    const char *end = t + n, *p;
    for (p = t; p < end; p++) {
        char e = *p == '\\' ? '\\' : *p == '\n' ? 'n' : *p == '\r' ? 'r' : *p == '\t' ? 't' : 0;
        if (!e)
            continue;
        buf_append(out, t, (size_t)(p - t));
        char esc[2] = {'\\', e};
        buf_append(out, esc, 2);
        t = p + 1;
    }
    buf_append(out, t, (size_t)(end - t));
}

/* Appends v as a COPY text value of field f (NULL: a system column): \N
 * for null, lists as array literals, other non-strings as JSON. */
static void copy_value(buf *out, json_t *f, json_t *v)
{
    if (!v || json_is_null(v)) {
        buf_puts(out, "\\N");
        return;
    }
    if (json_is_string(v)) {
        copy_text(out, json_string_value(v), strlen(json_string_value(v)));   /* as a parameter would: to a NUL */
    } else if (json_is_integer(v)) {
        buf_printf(out, "%lld", (long long)json_integer_value(v));
    } else if (json_is_boolean(v)) {
        buf_puts(out, json_is_true(v) ? "t" : "f");
    } else if (f && json_is_array(v) && field_is(f, "multiselect")) {
        buf tmp = {0};
        buf_puts(&tmp, "{");
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            buf_puts(&tmp, i ? ",\"" : "\"");
            for (const char *c = jstr(x); *c; c++) {
                if (*c == '"' || *c == '\\')
                    buf_append(&tmp, "\\", 1);
                buf_append(&tmp, c, 1);
            }
            buf_puts(&tmp, "\"");
        }
        buf_puts(&tmp, "}");
        copy_text(out, tmp.data, tmp.len);
        buf_free(&tmp);
    } else {
        char *j = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        copy_text(out, j, strlen(j));
        free(j);
    }
}

/* A COPY that failed (r: its error, or NULL when the connection broke) as
 * x's error; false. */
static bool copy_failed(wr *x, PGresult *r)
{
    loom_err e = {.code = LOOM_UNAVAILABLE, .message = "the database connection broke"};
    if (r) {
        const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL), *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        const char *cn = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
        e.code = loom_code_from_sqlstate(PQresultErrorField(r, PG_DIAG_SQLSTATE));
        e.message = arena_strdup(x->w->a, detail ? detail : primary ? primary : "COPY failed");
        e.path = cn ? arena_strdup(x->w->a, cn) : NULL;
    }
    return e.code == LOOM_NOT_UNIQUE ? not_unique(x, &e) : db_failed(x, &e);
}

/* COPY table_sql FROM STDIN, in three steps so that PostgreSQL reads the
 * rows while the next ones are written: copy_start, copy_send (as often as
 * wanted; it sends data and empties it), copy_end. Both false with x's
 * error. */
static bool copy_start(wr *x, const char *table_sql)
{
    loom_err e = {0};
    if (!db_flush_begin(x->w->db, x->w->a, &e))
        return db_failed(x, &e);
    buf sql = {0};
    buf_printf(&sql, "COPY %s FROM STDIN", table_sql);
    PGresult *r = PQexec(db_conn(x->w->db), sql.data);
    buf_free(&sql);
    x->copying = PQresultStatus(r) == PGRES_COPY_IN;
    bool ok = x->copying || copy_failed(x, r);
    PQclear(r);
    return ok;
}

static void copy_send(wr *x, buf *data)
{
    for (size_t off = 0; x->copying && off < data->len; off += 1u << 20) {
        size_t n = data->len - off > (1u << 20) ? (1u << 20) : data->len - off;
        x->copying = PQputCopyData(db_conn(x->w->db), data->data + off, (int)n) == 1;
    }
    buf_reset(data);
}

static bool copy_end(wr *x)
{
    PGconn *conn = db_conn(x->w->db);
    bool ok = x->copying && PQputCopyEnd(conn, NULL) == 1;
    x->copying = false;
    PGresult *r, *bad = NULL;
    while ((r = PQgetResult(conn))) {
        if (PQresultStatus(r) == PGRES_COPY_IN) {   /* a send failed: the COPY is still open */
            PQclear(r);
            ok = false;
            if (PQputCopyEnd(conn, "could not send the rows") != 1)
                break;
            continue;
        }
        if (PQresultStatus(r) == PGRES_COMMAND_OK || bad) {
            PQclear(r);
            continue;
        }
        bad = r;   /* the first error */
        ok = false;
    }
    if (!ok)
        copy_failed(x, bad);
    PQclear(bad);
    return ok;
}

/* COPY table_sql FROM STDIN with the rows in data. */
static bool copy_in(wr *x, const char *table_sql, buf *data)
{
    if (!copy_start(x, table_sql))
        return false;
    copy_send(x, data);
    return copy_end(x);
}

/* Appends v (NULL: null) as JSON text, escaped for COPY text when
 * in_copy: what json_dumps writes, without a tree walk for plain values. */
static void value_json(buf *out, json_t *v, bool in_copy)
{
    if (!v || json_is_null(v)) {
        buf_puts(out, "null");
    } else if (json_is_string(v)) {
        buf_json_string(out, json_string_value(v), in_copy);
    } else if (json_is_integer(v)) {
        char n[24];
        buf_append(out, n, (size_t)snprintf(n, sizeof n, "%lld", (long long)json_integer_value(v)));
    } else if (json_is_boolean(v)) {
        buf_puts(out, json_is_true(v) ? "true" : "false");
    } else {   /* lists, objects, reals */
        char *j = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (in_copy)
            copy_text(out, j, strlen(j));
        else
            buf_puts(out, j);
        free(j);
    }
}

/* The changes of a created record, {"f": [null, v], ...} as changes()
 * makes them, written as COPY text straight away: an import writes one per
 * row, so no JSON tree is built for it. */
static void created_changes(wr *x, json_t *rec, buf *out)
{
    buf_puts(out, "{");
    bool first = true;
    const field_table *ft = fields_of(x);
    for (size_t i = 0; i < ft->n; i++) {
        const char *id = ft->f[i].id;
        json_t *v = json_object_get(rec, id);
        if (empty(v))
            continue;
        buf_puts(out, first ? "\"" : ",\"");   /* an id: [a-z0-9_] */
        buf_puts(out, id);
        buf_puts(out, "\":[null,");
        value_json(out, v, true);
        buf_puts(out, "]");
        first = false;
    }
    buf_puts(out, "}");
}

/* Inserts the checked records recs (all valid) with COPY: ids and
 * autonumbers reserved up front, the rows, their subform rows and their
 * history entries. */
static bool bulk_insert(wr *x, json_t *recs)
{
    size_t n = json_array_size(recs);
    char count[24], table[160];
    snprintf(count, sizeof count, "%zu", n);
    buf qt = {0};
    qualified(&qt, x->w->fc->schema, x->form);
    snprintf(table, sizeof table, "%s", qt.data);
    buf_free(&qt);
    json_t *args = json_pack("[s, s]", table, count);
    PGresult *ids = must(x, NEW_IDS_SQL, args);
    json_decref(args);
    if (!ids)
        return false;
    if (!autonumbers(x, recs) || (x->has_subforms && !rows_ready(x, recs)))
        return false;
    size_t i;
    json_t *f;
    json_t *flow = bundle_flow(x->w->fc->bundle, x->form);
    char me[24];
    if (x->w->fc->me)
        snprintf(me, sizeof me, "%lld", x->w->fc->me);
    else
        snprintf(me, sizeof me, "\\N");   /* the system actor */
    buf rows = {0}, hist = {0}, cols = {0}, target = {0};
    columns(x->fields, &cols, NULL, NULL);
    buf_printf(&target, "%s (\"id\", \"_owner\", \"_created_by\", \"_updated_by\"%s%s)", table, flow ? ", \"_state\"" : "",
               cols.data ? cols.data : "");
    size_t nsub = json_array_size(x->fields);
    buf *children = calloc(nsub + 1, sizeof *children);   /* per field: its subform rows */
    const field_table *ft = fields_of(x);
    bool ok = copy_start(x, target.data);   /* the rows go as they are written: PostgreSQL reads while we write */
    json_t *rec;
    json_array_foreach(recs, i, rec)
    {
        if (!ok)
            break;
        const char *id = PQgetvalue(ids, (int)i, 0);
        json_t *owner = json_object_get(rec, "_owner");
        buf_printf(&rows, "%s\t", id);
        if (json_is_integer(owner))
            buf_printf(&rows, "%lld", (long long)json_integer_value(owner));
        else
            buf_puts(&rows, json_is_null(owner) ? "\\N" : me);   /* an owner given as null: none */
        buf_printf(&rows, "\t%s\t%s", me, me);
        if (flow) {
            buf_puts(&rows, "\t");
            copy_value(&rows, NULL, json_object_get(flow, "initial"));
        }
        for (size_t k = 0; k < ft->n; k++) {
            const field_info *fi = &ft->f[k];
            if (!fi->subform) {
                buf_puts(&rows, "\t");
                copy_value(&rows, fi->def, json_object_get(rec, fi->id));
                continue;
            }
            buf *cb = &children[k];
            size_t r;
            json_t *row;
            json_array_foreach(json_object_get(rec, fi->id), r, row)
            {
                buf_printf(cb, "%lld\t%s\t%zu", (long long)json_integer_value(json_object_get(row, "id")), id, r);
                for (size_t m = 0; m < fi->rows->n; m++) {
                    buf_puts(cb, "\t");
                    copy_value(cb, fi->rows->f[m].def, json_object_get(row, fi->rows->f[m].id));
                }
                buf_puts(cb, "\n");
            }
        }
        buf_puts(&rows, "\n");
        if (rows.len >= 1u << 18)
            copy_send(x, &rows);
        buf_printf(&hist, "%s\t%s\t%s\t%s\tcreate\t", x->w->app, x->form, id, me);
        created_changes(x, rec, &hist);
        if (flow) {   /* the record entered its initial state */
            buf_puts(&hist, "\t");
            copy_value(&hist, NULL, json_object_get(flow, "initial"));
        }
        buf_puts(&hist, "\n");
    }
    if (ok) {
        copy_send(x, &rows);
        ok = copy_end(x);
    }
    json_array_foreach(x->fields, i, f)
    {
        if (!ok || !children[i].len)
            continue;
        json_t *sub = f;
        const char *sid = jstr(json_object_get(f, "id"));
        char child[DDL_NAME_MAX + 1];
        child_table(x->form, sid, child);
        buf_reset(&target);
        qualified(&target, x->w->fc->schema, child);
        buf sc = {0};
        columns(json_object_get(sub, "fields"), &sc, NULL, NULL);
        buf_printf(&target, " (\"id\", \"_parent\", \"_pos\"%s)", sc.data ? sc.data : "");
        ok = copy_in(x, target.data, &children[i]);
        buf_free(&sc);
    }
    ok = ok && copy_in(x, flow ? "loom.history (app, form, record, actor, action, changes, to_state)"
                               : "loom.history (app, form, record, actor, action, changes)", &hist);
    if (ok && flow) {   /* the initial state's timers, for every record */
        buf all = {0};
        buf_puts(&all, "{");
        for (int k = 0; k < PQntuples(ids); k++)
            buf_printf(&all, "%s%s", k ? "," : "", PQgetvalue(ids, k, 0));
        buf_puts(&all, "}");
        ok = enter_state(x, all.data, jstr(json_object_get(flow, "initial")), false);
        buf_free(&all);
    }
    buf_free(&target);
    buf_free(&rows);
    buf_free(&hist);
    buf_free(&cols);
    for (size_t k = 0; k < nsub; k++)
        buf_free(&children[k]);
    free(children);
    return ok;
}

void write_import_problem(json_t *into, long row, const char *field, const char *code, const char *message)
{
    json_array_append_new(into, json_pack("{s:I, s:s, s:s, s:s}", "row", (json_int_t)row, "field", field, "code", code,
                                          "message", message));
}

/* The problems of row (1-based) as import errors {row, field, code, message}. */
static void row_errors(json_t *into, long row, json_t *problems)
{
    size_t i;
    json_t *p;
    json_array_foreach(problems, i, p)
    {
        const char *path = jstr(json_object_get(p, "path"));
        char field[256];
        snprintf(field, sizeof field, "%s", *path == '/' ? path + 1 : path);
        json_array_append_new(into, json_pack("{s:I, s:s, s:O, s:O}", "row", (json_int_t)row, "field", field, "code",
                                              json_object_get(p, "code"), "message", json_object_get(p, "message")));
    }
}

/* An import row's body checked as a create (old NULL) or an update of old
 * is checked before the database (system fields, values, defaults, files,
 * formulas, checks): *rec is its record when it passes, else NULL with its
 * problems in into as row's. False when the import cannot go on. */
static bool import_row(wr *x, json_t *body, json_t *old, json_t *into, long row, json_t **rec)
{
    json_decref(x->errors);
    json_decref(x->expr_errors);
    x->errors = json_array();
    x->expr_errors = json_array();
    json_t *values = NULL;
    if (!check_body(x, body, old, &values) && x->out->errors) {   /* system fields: the row's problem here */
        json_array_extend(x->errors, x->out->errors);
        json_decref(x->out->errors);
        x->out->errors = NULL;
        x->out->code = LOOM_OK;
    }
    *rec = old ? merged(x, old, values) : json_incref(values);
    json_decref(values);
    bool ok = fill_defaults(x, body, *rec, !old) && check_files(x, *rec, old) && expressions(x, *rec);
    json_t *problems = json_array_size(x->errors) ? x->errors : x->expr_errors;
    if (ok && !json_array_size(problems))
        return true;
    row_errors(into, row, problems);
    json_decref(*rec);
    *rec = NULL;
    return ok;
}

/* One row through the one-record write, inside a savepoint (partial
 * imports and upserts): its failure is the row's, not the import's. */
static bool import_one(const write_ctx *w, const char *form, json_t *body, const char *update_id, long row,
                       write_import_result *res, write_result *out)
{
    loom_err e = {0};
    if (!db_exec(w->db, w->a, "SAVEPOINT loom_row", &e))
        return (out->code = e.code, out->db = e, out->from_db = true, false);
    write_result one;
    bool ok = update_id ? write_update(w, form, update_id, body, -1, &one) : write_create(w, form, body, &one);
    if (ok) {
        if (!update_id)
            res->inserted++;
        else if (one.unchanged)
            res->unchanged++;
        else
            res->updated++;
        write_result_free(&one);
        db_exec(w->db, w->a, "RELEASE SAVEPOINT loom_row", &e);
    } else if (one.from_db && one.code == LOOM_UNAVAILABLE) {
        *out = one;
        return false;
    } else {
        db_exec(w->db, w->a, "ROLLBACK TO SAVEPOINT loom_row", &e);
        if (json_array_size(one.errors)) {   /* (a clash on an index Loom did not make has none) */
            row_errors(res->errors, row, one.errors);
        } else {
            write_import_problem(res->errors, row, "", loom_code_name(one.code), one.message);
        }
        write_result_free(&one);
    }
    return true;
}

/* Verifies the links of a batch's records (consumed; noted at
 * /<index>/<field>): each problem is reported as the row's (rownum[index]),
 * and its index marked in bad. */
static bool verify_batch_links(wr *x, json_t *links, const long *rownum, json_t *bad, write_import_result *res)
{
    bool ok = verify_links(x, links);
    size_t i;
    json_t *p;
    json_array_foreach(x->errors, i, p)
    {
        const char *path = jstr(json_object_get(p, "path"));
        char *end;
        long k = strtol(path + 1, &end, 10);
        json_t *one = json_pack("[{s:s, s:O, s:O}]", "path", end, "code", json_object_get(p, "code"), "message",
                                json_object_get(p, "message"));
        row_errors(res->errors, rownum[k], one);
        json_decref(one);
        char key[24];
        snprintf(key, sizeof key, "%ld", k);
        json_object_set_new(bad, key, json_true());
    }
    json_decref(x->errors);
    x->errors = json_array();
    return ok;
}

/* The unique keys of the form (fields and groups; autonumbers come from
 * counters and cannot clash): an array of arrays of field ids. */
static json_t *unique_keys(wr *x)
{
    json_t *keys = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(x->fields, i, f) if (json_is_true(json_object_get(f, "unique")) && !field_is(f, "subform"))
        json_array_append_new(keys, json_pack("[O]", json_object_get(f, "id")));
    json_array_foreach(json_object_get(x->fdef, "unique"), i, f) json_array_append(keys, f);
    return keys;
}

/* Marks (in bad, by index into recs) the records whose unique keys clash
 * with one another or with stored records, as not_unique problems of
 * their rows: COPY would fail the batch without saying which row. */
static bool unique_precheck(wr *x, json_t *recs, const long *rownum, json_t *bad, write_import_result *res)
{
    json_t *keys = unique_keys(x);
    size_t k;
    json_t *key;
    bool ok = true;
    json_array_foreach(keys, k, key)
    {
        json_t *seen = json_object(), *vals = json_array(), *where = json_array();   /* where: index into recs */
        size_t i;
        json_t *rec;
        json_array_foreach(recs, i, rec)
        {
            json_t *v = json_array();
            size_t c;
            json_t *col;
            bool null = false;
            json_array_foreach(key, c, col)
            {
                json_t *x1 = json_object_get(rec, jstr(col));
                null = null || !x1 || json_is_null(x1);
                json_array_append(v, x1 ? x1 : json_null());
            }
            char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            char idx[24];
            snprintf(idx, sizeof idx, "%zu", i);
            if (null) {   /* NULLs never clash */
            } else if (json_object_get(seen, text)) {
                json_object_set_new(bad, idx, json_true());
                write_import_problem(res->errors, rownum[i], jstr(json_array_get(key, 0)), "not_unique",
                                     "another row of the file has this value");
            } else {
                json_object_set_new(seen, text, json_true());
                json_array_append(vals, v);
                json_array_append_new(where, json_integer((json_int_t)i));
            }
            free(text);
            json_decref(v);
        }
        if (ok && json_array_size(vals)) {
            buf sql = {0};
            buf_puts(&sql, "SELECT x.i FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS x(v, i) WHERE EXISTS "
                           "(SELECT 1 FROM ");
            qualified(&sql, x->w->fc->schema, x->form);
            buf_puts(&sql, " AS t WHERE ");
            size_t c;
            json_t *col;
            json_array_foreach(key, c, col)
            {
                char tmp[64];
                json_t *f = bundle_item(x->fields, jstr(col));
                buf_printf(&sql, "%st.", c ? " AND " : "");
                ddl_quote(&sql, jstr(col));
                buf_printf(&sql, " = (x.v->>%zu)::%s", c, f ? ddl_column_type(f, tmp) : "text");
            }
            buf_puts(&sql, ")");
            json_t *args = json_array();
            arg_json(args, vals);
            PGresult *r = must(x, sql.data, args);
            ok = r != NULL;
            for (int n = 0; r && n < PQntuples(r); n++) {
                size_t at = (size_t)json_integer_value(json_array_get(where, (size_t)strtoll(PQgetvalue(r, n, 0), NULL, 10) - 1));
                char idx[24];
                snprintf(idx, sizeof idx, "%zu", at);
                json_object_set_new(bad, idx, json_true());
                write_import_problem(res->errors, rownum[at], jstr(json_array_get(key, 0)), "not_unique",
                                     "another record has this value");
            }
            buf_free(&sql);
            json_decref(args);
        }
        json_decref(seen);
        json_decref(vals);
        json_decref(where);
    }
    json_decref(keys);
    return ok;
}

/* Checks and writes the records bodies (nulls: rows left out) in bulk, as
 * an insert-only import does. */
static bool bulk_create(wr *x, json_t *bodies, long first_row, const write_import_opts *o, write_import_result *res)
{
    write_import_batch b;
    bool ok = write_import_check(x->w, x->form, bodies, first_row, &b);
    if (ok)
        ok = write_import_store(x->w, x->form, &b, o, res, x->out);
    else
        *x->out = b.out, memset(&b.out, 0, sizeof b.out);
    write_import_batch_free(&b);
    return ok;
}

/* An upsert row's body as its record's update: without the key when Loom
 * gives it (an id, an autonumber), which no row writes. A new reference. */
static json_t *keyless(json_t *body, bool given, const char *key)
{
    if (!given)
        return json_incref(body);
    json_t *b = json_copy(body);
    json_object_del(b, key);
    return b;
}

/* Whether the rows that found their records can be updated in bulk: no
 * files to link or subform rows to write (a CSV sets neither). */
static bool bulk_updatable(wr *x, json_t *bodies)
{
    size_t i, k;
    json_t *f, *body;
    json_array_foreach(x->fields, k, f) if (field_is(f, "subform") || field_is(f, "file"))
    {
        json_array_foreach(bodies, i, body) if (json_object_get(body, jstr(json_object_get(f, "id")))) return false;
    }
    return true;
}

/* The changed records of upd ([[row, old, rec, changes], ...]) written with
 * their history entries, in one statement. */
static bool write_updates(wr *x, json_t *upd)
{
    const write_ctx *w = x->w;
    buf sql = {0}, def = {0}, rows = {0};
    columns(x->fields, NULL, NULL, &def);
    json_t *args = json_array();
    const field_table *ft = fields_of(x);
    size_t i;
    json_t *u;
    /* the rows as JSON text, written straight (a batch is thousands of records) */
    buf_puts(&rows, "[");
    json_array_foreach(upd, i, u)
    {
        json_t *rec = json_array_get(u, 2), *owner = json_object_get(rec, "_owner");
        buf_printf(&rows, "%s{\"id\":%lld,\"_owner\":", i ? "," : "",
                   (long long)json_integer_value(json_object_get(json_array_get(u, 1), "id")));
        value_json(&rows, json_is_integer(owner) ? owner : NULL, false);
        buf_puts(&rows, ",\"_changes\":");
        value_json(&rows, json_array_get(u, 3), false);
        for (size_t k = 0; k < ft->n; k++) {
            json_t *v = json_object_get(rec, ft->f[k].id);
            if (ft->f[k].subform || !v)
                continue;
            buf_printf(&rows, ",\"%s\":", ft->f[k].id);   /* an id: [a-z0-9_] */
            value_json(&rows, v, false);
        }
        buf_puts(&rows, "}");
    }
    buf_puts(&rows, "]");
    arg(args, rows.data);
    buf_free(&rows);
    arg_me(args, w->fc->me);
    arg(args, w->app);
    arg(args, x->form);
    buf_printf(&sql, "WITH x AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(\"id\" bigint, \"_owner\" bigint, "
                     "\"_changes\" jsonb%s%s)), u AS (UPDATE ",
               def.len ? ", " : "", def.len ? def.data : "");
    qualified(&sql, w->fc->schema, x->form);
    buf_puts(&sql, " AS t SET \"_version\" = t.\"_version\" + 1, \"_updated_at\" = now(), \"_updated_by\" = $2::bigint, "
                   "\"_owner\" = x.\"_owner\"");
    set_columns(&sql, x->fields);
    buf_puts(&sql, " FROM x WHERE t.\"id\" = x.\"id\" RETURNING t.\"id\"), h AS (INSERT INTO loom.history (app, form, "
                   "record, actor, action, changes) SELECT $3, $4, x.\"id\", $2::bigint, 'update', x.\"_changes\" FROM u "
                   "JOIN x USING (\"id\")) SELECT count(*) FROM u");
    PGresult *r = write_sql(x, sql.data, args);
    buf_free(&sql);
    buf_free(&def);
    json_decref(args);
    return r != NULL;
}

/* Whether every record of upd is still in the caller's update scope. */
static bool updates_in_scope(wr *x, json_t *upd, bool *in)
{
    *in = true;
    if (perm_scope_all(x->d.update) || !json_array_size(upd))
        return true;
    buf sql = {0}, ids = {0};
    json_t *ilist = json_object(), *args = json_array();
    size_t i;
    json_t *u;
    json_array_foreach(upd, i, u)
    {
        char id[24];
        snprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(json_array_get(u, 1), "id")));
        json_object_set_new(ilist, id, json_true());
    }
    id_array(&ids, ilist);
    arg(args, ids.data);
    buf_puts(&sql, "SELECT count(*) FROM ");
    qualified(&sql, x->w->fc->schema, x->form);
    buf_puts(&sql, " AS t WHERE t.\"id\" = ANY($1::bigint[]) AND ");
    filter_err fe;
    bool ok = filter_scope_sql(x->w->fc, x->form, "t", x->d.update, &sql, args, &fe);
    PGresult *r = ok ? must(x, sql.data, args) : NULL;
    if (!ok)
        fail(x, LOOM_INTERNAL, "a permission filter does not compile");
    else if (r)
        *in = strtoll(PQgetvalue(r, 0, 0), NULL, 10) == (long long)json_array_size(upd);
    buf_free(&sql);
    buf_free(&ids);
    json_decref(ilist);
    json_decref(args);
    return r != NULL;
}

/* Updates the records the rows of bodies found (found[i]: the id; given: the
 * key is Loom's, left out of the row), in bulk: the records locked in one
 * query, each row checked as an update checks it, their links verified in
 * one query, and the changed records written with their history in one
 * statement. A unique clash, or a record the change takes out of the
 * caller's update scope, sends the rows one by one, which finds the row. */
static bool bulk_update(wr *x, json_t *bodies, char **found, bool given, long first_row, const write_import_opts *o,
                        write_import_result *res)
{
    size_t n = json_array_size(bodies), i;
    json_t *seen = json_object(), *body;   /* the ids found */
    bool ok = true;
    for (i = 0; i < n; i++)
        if (found[i])
            json_object_set_new(seen, found[i], json_true());
    if (!json_object_size(seen)) {
        json_decref(seen);
        return true;
    }
    buf lit = {0};
    id_array(&lit, seen);
    json_decref(seen);
    query q;
    filter_err fe;
    ok = query_lock(x->w->fc, x->form, lit.data, true, &q, &fe);
    PGresult *r = ok ? must(x, q.sql.data, q.args) : NULL;
    if (!ok)
        fail(x, LOOM_INTERNAL, "a permission filter does not compile");
    ok = r != NULL;
    json_t *pending = json_object();   /* record id -> the transition its pending approval waits on */
    if (ok && x->flow && flow_has_approvals(x->flow)) {
        json_t *args = json_pack("[s, s, s]", x->w->app, x->form, lit.data);
        PGresult *p = must(x, "SELECT record, transition FROM loom.approvals WHERE app = $1 AND form = $2 AND "
                              "record = ANY($3::bigint[]) AND status = 'pending' FOR UPDATE", args);
        json_decref(args);
        ok = p != NULL;
        for (int k = 0; p && k < PQntuples(p); k++)
            json_object_set_new(pending, PQgetvalue(p, k, 0), json_string(PQgetvalue(p, k, 1)));
    }
    buf_free(&lit);
    json_t *olds = r ? query_items(&q, r, NULL) : NULL, *by_id = json_object();   /* id -> row of r */
    int ncol = (int)json_array_size(q.out);
    for (int k = 0; r && k < PQntuples(r); k++) {
        char id[24];
        snprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(json_array_get(olds, (size_t)k), "id")));
        json_object_set_new(by_id, id, json_integer(k));
    }
    /* each row checked against its record: [[row, old, rec], ...], links noted at /<index in it> */
    json_t *checked = json_array(), *links = json_object();
    long *rownum = calloc(n + 1, sizeof *rownum);
    json_array_foreach(ok ? bodies : NULL, i, body)
    {
        if (!found[i])
            continue;
        long row = first_row + (long)i;
        json_t *at = json_object_get(by_id, found[i]);
        int k = at ? (int)json_integer_value(at) : -1;
        if (k < 0 || *PQgetvalue(r, k, ncol) != 't') {
            write_import_problem(res->errors, row, "", "not_found", "no such record");
            continue;
        }
        if (*PQgetvalue(r, k, ncol + 1) != 't') {
            write_import_problem(res->errors, row, "", "forbidden", "you may not update this record");
            continue;
        }
        json_t *old = json_array_get(olds, (size_t)k), *rec;
        x->state = x->flow ? jstr(json_object_get(old, "_state")) : NULL;
        json_t *b = keyless(body, given, o->key);
        ok = import_row(x, b, old, res->errors, row, &rec);
        json_decref(b);
        if (!ok)
            break;
        if (!rec)
            continue;
        /* a pending transition's input stays as it was asked with (a transition gone: it blocks nothing) */
        json_t *pt = flow_transition(x->flow, json_string_value(json_object_get(pending, found[i]))), *in;
        size_t f;
        json_array_foreach(pt ? json_object_get(pt, "input") : NULL, f, in)
        {
            json_t *a = json_object_get(rec, jstr(in)), *was = json_object_get(old, jstr(in));
            if (a != was && !(a && was && json_equal(a, was))) {
                char msg[256];
                snprintf(msg, sizeof msg, "%s is an input of transition \"%s\", which waits for approval", jstr(in),
                         jstr(json_object_get(pt, "id")));
                write_import_problem(res->errors, row, "", "approval_pending", msg);
                json_decref(rec);
                rec = NULL;
                break;
            }
        }
        if (!rec)
            continue;
        char base[24];
        snprintf(base, sizeof base, "/%zu", json_array_size(checked));
        links_of(x, rec, old, links, base);
        rownum[json_array_size(checked)] = row;
        json_array_append_new(checked, json_pack("[I, O, o]", (json_int_t)row, old, rec));
    }
    x->state = NULL;
    json_decref(x->errors);   /* the rows' problems are in res->errors */
    json_decref(x->expr_errors);
    x->errors = json_array();
    x->expr_errors = json_array();
    json_t *bad = json_object(), *upd = json_array(), *c;
    ok = ok && verify_batch_links(x, json_incref(links), rownum, bad, res);
    json_array_foreach(ok ? checked : NULL, i, c)
    {
        char key[24];
        snprintf(key, sizeof key, "%zu", i);
        if (json_object_get(bad, key))
            continue;
        json_t *old = json_array_get(c, 1), *rec = json_array_get(c, 2), *ch = changes(x, old, rec);
        if (json_object_size(ch)) {
            json_array_append_new(upd, json_pack("[O, O, O, o]", json_array_get(c, 0), old, rec, ch));
            res->updated++;
        } else {   /* a row that changes nothing writes nothing (no new version, no history) */
            json_decref(ch);
            res->unchanged++;
        }
    }
    bool write = ok && json_array_size(upd) && !o->validate_only && (o->partial || !json_array_size(res->errors));
    if (write) {
        loom_err e = {0};
        bool in = true;
        ok = db_exec(x->w->db, x->w->a, "SAVEPOINT loom_bulk", &e) != NULL;
        if (!ok)
            db_failed(x, &e);
        else if (write_updates(x, upd) && (ok = updates_in_scope(x, upd, &in)) && in) {
            db_exec(x->w->db, x->w->a, "RELEASE SAVEPOINT loom_bulk", &e);
        } else if (ok && (!in || x->out->code == LOOM_NOT_UNIQUE || x->out->code == LOOM_CONFLICT ||
                          x->out->code == LOOM_VALIDATION_FAILED)) {
            /* which row: the rows one by one find it */
            db_exec(x->w->db, x->w->a, "ROLLBACK TO SAVEPOINT loom_bulk", &e);
            write_result_free(x->out);
            memset(x->out, 0, sizeof *x->out);
            res->updated -= (long)json_array_size(upd);
            json_array_foreach(upd, i, c)
            {
                long row = (long)json_integer_value(json_array_get(c, 0));
                json_t *b = keyless(json_array_get(bodies, (size_t)(row - first_row)), given, o->key);
                ok = import_one(x->w, x->form, b, found[row - first_row], row, res, x->out);
                json_decref(b);
                if (!ok)
                    break;
            }
        } else {
            ok = false;
        }
    }
    json_decref(bad);
    json_decref(upd);
    json_decref(links);
    json_decref(checked);
    json_decref(olds);
    json_decref(by_id);
    json_decref(pending);
    free(rownum);
    query_free(&q);
    return ok;
}

/* An upsert of the rows bodies: a row whose key finds a record updates it
 * (in bulk when bulk_updatable, else one by one, each in a savepoint); the
 * others are new records, checked and written in bulk as an insert is. By
 * id, a row without one is new and an id no record has is that row's
 * not_found. */
static bool upsert(wr *x, json_t *bodies, long first_row, const write_import_opts *o, write_import_result *res)
{
    size_t n = json_array_size(bodies), i;
    bool by_id = !strcmp(o->key, "id"), ok = true;
    json_t *kf = bundle_item(x->fields, o->key), *keys = json_array(), *body;
    bool given = by_id || field_computed(kf);   /* Loom gives the key (an id, an autonumber): no row sets it */
    /* the keys as their column holds them, so that its unique index finds them: [[row index, key], ...] */
    json_array_foreach(bodies, i, body)
    {
        json_t *kv = json_object_get(body, o->key), *key = NULL;
        const char *code;
        char msg[256];
        if (by_id && json_is_integer(kv) && json_integer_value(kv) > 0)
            key = json_incref(kv);
        else if (!by_id && given && json_is_string(kv))
            key = json_incref(kv);   /* an autonumber is text */
        else if (!by_id && kv && !json_is_null(kv))
            key = field_coerce(kf, kv, &code, msg, sizeof msg);   /* NULL: the row's check reports it */
        if (key)
            json_array_append_new(keys, json_pack("[I, o]", (json_int_t)i, key));
    }
    char **found = calloc(n + 1, sizeof *found);   /* per row: the id of the record its key finds */
    if (json_array_size(keys)) {
        buf sql = {0};
        char tmp[64];
        buf_puts(&sql, "SELECT (k->>0)::int, t.\"id\" FROM jsonb_array_elements($1::jsonb) AS k JOIN ");
        qualified(&sql, x->w->fc->schema, x->form);
        buf_printf(&sql, " AS t ON t.\"%s\" = (k->>1)::%s", o->key, by_id ? "bigint" : ddl_column_type(kf, tmp));   /* a checked field id */
        json_t *args = json_array();
        arg_json(args, keys);
        PGresult *r = must(x, sql.data, args);
        ok = r != NULL;
        for (int k = 0; r && k < PQntuples(r); k++)
            found[atoi(PQgetvalue(r, k, 0))] = PQgetvalue(r, k, 1);
        buf_free(&sql);
        json_decref(args);
    }
    /* the new records in their rows' places (others null), so that row numbers hold */
    json_t *fresh = json_array(), *seen = json_object();   /* seen: the records found */
    bool any = false;
    json_array_foreach(bodies, i, body)
    {
        json_t *kv = json_object_get(body, o->key), *b = json_null();
        if (found[i] && json_object_get(seen, found[i])) {
            write_import_problem(res->errors, first_row + (long)i, o->key, "not_unique", "another row of the file updates this record");
            found[i] = NULL;
        } else if (found[i]) {
            json_object_set_new(seen, found[i], json_true());
        } else if (json_is_null(body)) {
        } else if (given && kv && !json_is_null(kv)) {   /* ids and autonumbers are Loom's to give: a new record comes without */
            char msg[128];
            snprintf(msg, sizeof msg, "no record has this %s (new records go without one)", by_id ? "id" : o->key);
            write_import_problem(res->errors, first_row + (long)i, o->key, "not_found", msg);
        } else {   /* a new record (an empty key Loom gives left out) */
            b = keyless(body, given, o->key);
            any = true;
        }
        json_array_append_new(fresh, b);
    }
    if (ok && any && x->d.create)
        ok = bulk_create(x, fresh, first_row, o, res);
    bool bulk = bulk_updatable(x, bodies);
    if (ok && bulk)
        ok = bulk_update(x, bodies, found, given, first_row, o, res);
    json_array_foreach(bodies, i, body)
    {
        json_t *one = json_array_get(fresh, i);
        if (!ok || (found[i] && bulk) || (!found[i] && (json_is_null(one) || x->d.create)))
            continue;   /* (without the right to create, each new row says so, one by one) */
        json_t *b = found[i] ? keyless(body, given, o->key) : json_incref(one);
        ok = import_one(x->w, x->form, b, found[i], first_row + (long)i, res, x->out);
        json_decref(b);
    }
    json_decref(fresh);
    json_decref(seen);
    json_decref(keys);
    free(found);
    return ok;
}

typedef struct {
    json_t *e;
    long row;
    size_t at;
} sorted_problem;

static int by_row(const void *a, const void *b)
{
    const sorted_problem *p = a, *q = b;
    return p->row != q->row ? (p->row < q->row ? -1 : 1) : (p->at > q->at) - (p->at < q->at);
}

void write_import_sort_errors(json_t *errors)
{
    size_t n = json_array_size(errors);
    if (n < 2)
        return;
    sorted_problem *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_incref(json_array_get(errors, i));
        v[i] = (sorted_problem){e, (long)json_integer_value(json_object_get(e, "row")), i};
    }
    qsort(v, n, sizeof *v, by_row);
    for (size_t i = 0; i < n; i++)
        json_array_set_new(errors, i, v[i].e);
    free(v);
}

bool write_import(const write_ctx *w, const char *form, json_t *bodies, long first_row, const write_import_opts *o,
                  write_import_result *res, write_result *out)
{
    wr x;
    if (!begin(&x, w, form, out))
        return finish(&x, false);
    if (!x.d.create && !(o->upsert && x.d.update))
        return finish(&x, fail(&x, LOOM_FORBIDDEN, "you may not create %s records", form));
    return finish(&x, o->upsert ? upsert(&x, bodies, first_row, o, res) : bulk_create(&x, bodies, first_row, o, res));
}

bool write_import_check(const write_ctx *w, const char *form, json_t *bodies, long first_row, write_import_batch *b)
{
    memset(b, 0, sizeof *b);
    b->bodies = json_incref(bodies);
    b->first_row = first_row;
    b->errors = json_array();
    b->recs = json_array();
    b->links = json_object();
    size_t n = json_array_size(bodies);
    b->rownum = calloc(n + 1, sizeof *b->rownum);
    wr x;
    if (!begin(&x, w, form, &b->out))
        return finish(&x, false);
    if (!x.d.create)
        return finish(&x, fail(&x, LOOM_FORBIDDEN, "you may not create %s records", form));
    /* every row checked as a create would; the links of all verified in one query by write_import_store */
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *body = json_array_get(bodies, i), *rec = NULL;
        if (json_is_null(body))
            continue;   /* a row the caller found wrong and reported */
        if (!json_is_object(body)) {
            write_import_problem(b->errors, first_row + (long)i, "", "type", "a row is an object");
            continue;
        }
        ok = import_row(&x, body, NULL, b->errors, first_row + (long)i, &rec);
        if (ok && rec) {
            char base[24];
            snprintf(base, sizeof base, "/%zu", json_array_size(b->recs));
            links_of(&x, rec, NULL, b->links, base);
            b->rownum[json_array_size(b->recs)] = first_row + (long)i;
            json_array_append(b->recs, rec);
        }
        json_decref(rec);
    }
    json_decref(x.errors);   /* the rows' problems are in b->errors, not the batch's */
    json_decref(x.expr_errors);
    x.errors = json_array();
    x.expr_errors = json_array();
    return finish(&x, ok);
}

bool write_import_check_offloadable(const write_ctx *w, const char *form)
{
    wr x;
    write_result out;
    bool ok = begin(&x, w, form, &out) && !x.has_files && w->now[0];
    finish(&x, true);
    write_result_free(&out);
    return ok;
}

void write_import_batch_free(write_import_batch *b)
{
    json_decref(b->bodies);
    json_decref(b->errors);
    json_decref(b->recs);
    json_decref(b->links);
    free(b->rownum);
    write_result_free(&b->out);
    memset(b, 0, sizeof *b);
}

bool write_import_store(const write_ctx *w, const char *form, write_import_batch *b, const write_import_opts *o,
                        write_import_result *res, write_result *out)
{
    wr x;
    if (!begin(&x, w, form, out))
        return finish(&x, false);
    json_array_extend(res->errors, b->errors);
    json_t *recs = b->recs, *bodies = b->bodies;
    const long *rownum = b->rownum;
    long first_row = b->first_row;
    json_t *bad = json_object();
    bool ok = verify_batch_links(&x, json_incref(b->links), rownum, bad, res);
    size_t i;
    if (ok && json_array_size(recs))
        ok = unique_precheck(&x, recs, rownum, bad, res);
    json_t *good = json_array();
    json_t *rec;
    json_array_foreach(recs, i, rec)
    {
        char key[24];
        snprintf(key, sizeof key, "%zu", i);
        if (!json_object_get(bad, key))
            json_array_append(good, rec);
    }
    json_decref(bad);
    bool write = ok && json_array_size(good) && !o->validate_only && (o->partial || !json_array_size(res->errors));
    if (write) {
        loom_err e = {0};
        ok = db_exec(w->db, w->a, "SAVEPOINT loom_bulk", &e) != NULL;
        if (!ok)
            db_failed(&x, &e);
        else if (bulk_insert(&x, good)) {
            res->inserted += (long)json_array_size(good);
            db_exec(w->db, w->a, "RELEASE SAVEPOINT loom_bulk", &e);
        } else if (x.out->code == LOOM_NOT_UNIQUE || x.out->code == LOOM_CONFLICT || x.out->code == LOOM_VALIDATION_FAILED) {
            /* a clash COPY cannot say the row of: the rows one by one find it */
            db_exec(w->db, w->a, "ROLLBACK TO SAVEPOINT loom_bulk", &e);
            write_result_free(x.out);
            memset(x.out, 0, sizeof *x.out);
            ok = true;
            size_t k = 0;
            json_array_foreach(recs, i, rec)
            {
                (void)rec;
                if (!ok)
                    break;
                if (k < json_array_size(good) && json_array_get(good, k) == json_array_get(recs, i)) {
                    k++;
                    /* the body of that row */
                    ok = import_one(w, form, json_array_get(bodies, (size_t)(rownum[i] - first_row)), NULL, rownum[i], res,
                                    out);
                }
            }
            if (ok && !o->partial && json_array_size(res->errors))
                res->inserted = 0;   /* all or nothing: the caller rolls back */
        } else {
            ok = false;
        }
    }
    json_decref(good);
    return finish(&x, ok);
}
