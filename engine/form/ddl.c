/* ddl.c - an app's schema as a state, and the steps from one state to another.
 *
 * ddl_state() turns a bundle into the schema it needs: tables (form tables
 * and child tables) with typed columns, and objects (unique constraints,
 * indexes, foreign keys) keyed by what they are, e.g. "vehicle|key|vin".
 * diff() compares two states and writes the steps, in an order that always
 * works: drop objects no longer wanted, soft-drop columns and tables, create
 * tables, add columns, widen types, add objects. The physical names of
 * objects are kept in the catalog, so a later plan finds the ones it drops. */
#include "form/ddl.h"

#include "flow/flow.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/secret.h"
#include "flow/flow.h"
#include "model/bundle.h"

void ddl_physical_name(const char *name, char out[DDL_NAME_MAX + 1])
{
    size_t n = strlen(name);
    if (n <= DDL_NAME_MAX) {
        memcpy(out, name, n + 1);
        return;
    }
    char hex[SECRET_HASH_HEX];
    secret_sha256_hex(name, n, hex);
    snprintf(out, DDL_NAME_MAX + 1, "%.54s_%.8s", name, hex);
}

void ddl_quote(buf *out, const char *name)
{
    buf_puts(out, "\"");
    for (const char *p = name; *p; p++) {
        if (*p == '"')
            buf_puts(out, "\"");
        buf_append(out, p, 1);
    }
    buf_puts(out, "\"");
}

const char DDL_CAST_HELPER[] =
    "CREATE OR REPLACE FUNCTION pg_temp.loom_cast_ok(v text, t text) RETURNS boolean LANGUAGE plpgsql AS $$ "
    "BEGIN EXECUTE format('SELECT %L::%s', v, t); RETURN true; "
    "EXCEPTION WHEN others THEN RETURN false; END $$";

const char *ddl_compare_type(const char *t)
{
    if (!strcmp(t, "integer") || !strcmp(t, "ref") || !strcmp(t, "user"))
        return "bigint";
    if (!strcmp(t, "decimal") || !strcmp(t, "money"))
        return "numeric";
    if (!strcmp(t, "boolean") || !strcmp(t, "date"))
        return t;
    if (!strcmp(t, "datetime"))
        return "timestamptz";
    if (!strcmp(t, "multiselect") || !strcmp(t, "file") || !strcmp(t, "subform"))
        return NULL;
    return "text";
}

/* ---- the state of a bundle ---- */

const char *ddl_column_type(json_t *field, char tmp[64])
{
    const char *t = jstr(json_object_get(field, "type"));
    if (!strcmp(t, "integer"))
        return "bigint";
    if (!strcmp(t, "decimal")) {
        json_t *p = json_object_get(field, "precision"), *s = json_object_get(field, "scale");
        snprintf(tmp, 64, "numeric(%lld,%lld)", json_is_integer(p) ? (long long)json_integer_value(p) : 18LL,
                 json_is_integer(s) ? (long long)json_integer_value(s) : 2LL);
        return tmp;
    }
    if (!strcmp(t, "money"))
        return "numeric(18,2)";
    if (!strcmp(t, "boolean"))
        return "boolean";
    if (!strcmp(t, "date"))
        return "date";
    if (!strcmp(t, "datetime"))
        return "timestamptz";
    if (!strcmp(t, "multiselect"))
        return "text[]";
    if (!strcmp(t, "ref") || !strcmp(t, "user"))
        return "bigint";
    if (!strcmp(t, "file"))
        return "jsonb";
    return "text";   /* text, longtext, select, email, phone, url, autonumber */
}

static void add_object(json_t *objects, const char *table, const char *kind, json_t *cols, const char *form,
                       const char *target, const char *on_delete)
{
    buf key = {0};
    buf_printf(&key, "%s|%s|", table, kind);
    size_t i;
    json_t *c;
    json_array_foreach(cols, i, c) buf_printf(&key, "%s%s", i ? "," : "", jstr(c));
    if (target)
        buf_printf(&key, "|%s|%s", target, on_delete);
    json_t *o = json_pack("{s:s, s:s, s:O, s:s}", "table", table, "kind", kind, "cols", cols, "form", form);
    if (target) {
        json_object_set_new(o, "target", json_string(target));
        json_object_set_new(o, "on_delete", json_string(on_delete));
    }
    json_object_set_new(objects, key.data, o);
    buf_free(&key);
}

static bool leads_a_group(json_t *groups, const char *col)
{
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g) if (!strcmp(jstr(json_array_get(g, 0)), col)) return true;
    return false;
}

/* One table of the state: its columns and the objects on them. */
static void state_table(json_t *st, const char *schema, const char *form, const char *table, const char *parent,
                        json_t *fields, json_t *uniques, json_t *indexes, bool flow)
{
    (void)schema;
    json_t *cols = json_array();
    json_t *t = json_pack("{s:s, s:o}", "form", form, "columns", cols);
    if (parent)
        json_object_set_new(t, "parent", json_string(parent));
    if (flow)
        json_object_set_new(t, "flow", json_true());
    json_object_set_new(json_object_get(st, "tables"), table, t);
    json_t *objects = json_object_get(st, "objects");
    size_t i;
    json_t *f;
    char tmp[64];
    json_array_foreach(fields, i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        const char *type = jstr(json_object_get(f, "type"));
        if (!strcmp(type, "subform"))
            continue;
        json_t *col = json_pack("{s:s, s:s, s:s, s:b}", "name", id, "type", ddl_column_type(f, tmp), "field_type", type,
                                "required", json_is_true(json_object_get(f, "required")));
        if (!strcmp(type, "file") && json_is_true(json_object_get(f, "multiple")))
            json_object_set_new(col, "multiple", json_true());
        if (!strcmp(ddl_column_type(f, tmp), "text") && strcmp(type, "autonumber") != 0) {
            json_t *ml = json_object_get(f, "max_length");
            json_object_set_new(col, "max_length",
                                json_integer(json_is_integer(ml) ? json_integer_value(ml) : !strcmp(type, "longtext") ? 100000 : 200));
        }
        json_array_append_new(cols, col);
        json_t *one = json_pack("[s]", id);
        if (!strcmp(type, "ref")) {
            const char *od = jstr(json_object_get(f, "on_delete"));
            add_object(objects, table, "fkey", one, form, jstr(json_object_get(f, "form")),
                       !*od || !strcmp(od, "restrict") ? "RESTRICT" : !strcmp(od, "cascade") ? "CASCADE" : "SET NULL");
            /* PostgreSQL does not index a foreign key; deletes of the target need it */
            if (!leads_a_group(indexes, id) && !leads_a_group(uniques, id) &&
                !json_is_true(json_object_get(f, "unique")) && !json_is_true(json_object_get(f, "index")))
                add_object(objects, table, "idx", one, form, NULL, NULL);
        }
        if (json_is_true(json_object_get(f, "unique")) || !strcmp(type, "autonumber"))
            add_object(objects, table, "key", one, form, NULL, NULL);
        else if (json_is_true(json_object_get(f, "index")))
            add_object(objects, table, "idx", one, form, NULL, NULL);
        json_decref(one);
    }
    json_array_foreach(uniques, i, f) add_object(objects, table, "key", f, form, NULL, NULL);
    json_array_foreach(indexes, i, f) add_object(objects, table, "idx", f, form, NULL, NULL);
    if (parent) {
        json_t *p = json_pack("[s]", "_parent");
        add_object(objects, table, "idx", p, form, NULL, NULL);
        json_decref(p);
    }
}

/* Whether a role reads, updates or deletes form's records by their owner
 * ("own", "team"): its lists then look records up by _owner. */
static bool owner_scoped(json_t *bundle, const char *form)
{
    json_t *perms = json_object_get(bundle, "permissions");
    const char *where[] = {form, "*"};
    static const char *const ops[] = {"read", "update", "delete"};
    for (int w = 0; w < 2; w++) {
        const char *role;
        json_t *entry;
        json_object_foreach(json_object_get(perms, where[w]), role, entry)
        for (int k = 0; k < 3; k++) {
            const char *scope = json_string_value(json_object_get(entry, ops[k]));
            if (scope && (!strcmp(scope, "own") || !strcmp(scope, "team")))
                return true;
        }
    }
    return false;
}

/* The schema a bundle needs: {"schema", "tables": {name: {form, parent?,
 * flow?, columns: [{name, type, field_type, required}]}}, "objects": {key:
 * {table, kind, cols, form, target?, on_delete?}}}. */
static json_t *ddl_state(json_t *bundle)
{
    char schema[DDL_NAME_MAX + 1], tmp[128];
    snprintf(tmp, sizeof tmp, "app_%s", jstr(json_object_get(json_object_get(bundle, "app"), "id")));
    ddl_physical_name(tmp, schema);
    json_t *st = json_pack("{s:s, s:s, s:{}, s:{}, s:{}, s:{}}", "schema", schema, "app",
                           jstr(json_object_get(json_object_get(bundle, "app"), "id")), "tables", "objects", "flows",
                           "flow_defs");
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(bundle, "flows"), i, x)
    {
        json_object_set(json_object_get(st, "flows"), jstr(json_object_get(x, "form")), json_object_get(x, "initial"));
        json_object_set(json_object_get(st, "flow_defs"), jstr(json_object_get(x, "form")), x);
    }
    json_array_foreach(json_object_get(bundle, "forms"), i, x)
    {
        const char *id = jstr(json_object_get(x, "id"));
        json_t *fields = json_object_get(x, "fields");
        state_table(st, schema, id, id, NULL, fields, json_object_get(x, "unique"), json_object_get(x, "indexes"),
                    json_object_get(json_object_get(st, "flows"), id) != NULL);
        if (owner_scoped(bundle, id)) {   /* one owner's records, newest first, without reading the others' */
            json_t *cols = json_pack("[s, s]", "_owner", "id");
            add_object(json_object_get(st, "objects"), id, "idx", cols, id, NULL, NULL);
            json_decref(cols);
        }
        size_t k;
        json_t *f;
        json_array_foreach(fields, k, f)
        {
            if (strcmp(jstr(json_object_get(f, "type")), "subform") != 0)
                continue;
            char child[DDL_NAME_MAX + 1];
            snprintf(tmp, sizeof tmp, "%s__%s", id, jstr(json_object_get(f, "id")));
            ddl_physical_name(tmp, child);
            state_table(st, schema, id, child, id, json_object_get(f, "fields"), NULL, NULL, false);
            json_object_set_new(json_object_get(json_object_get(st, "tables"), child), "subform",
                                json_string(jstr(json_object_get(f, "id"))));
        }
    }
    return st;
}

/* ---- steps ---- */

typedef struct plan {
    const char *schema;
    int version;
    bool allow_destructive;
    json_t *steps, *destructive, *checks, *unsupported;
    json_t *names;   /* object key -> physical name (the catalog's "objects") */
    json_t *used;    /* physical names taken */
    bool named;      /* the old catalog names its objects: one it does not name was never created */
    buf sql;
} plan;

static void qualified(buf *out, const char *schema, const char *table)
{
    ddl_quote(out, schema);
    buf_puts(out, ".");
    ddl_quote(out, table);
}

static void add_step(plan *p, const char *op, const char *form, const char *field)
{
    json_t *s = json_pack("{s:s, s:s}", "op", op, "form", form);
    if (field)
        json_object_set_new(s, "field", json_string(field));
    json_object_set_new(s, "sql", json_string(p->sql.data));
    json_array_append_new(p->steps, s);
    buf_reset(&p->sql);
}

/* The physical name for a new object: <table>_<cols>_<suffix>, fitted to 63
 * bytes; index names are unique per schema and "a_b"+"c" reads like "a"+"b_c",
 * so a taken name gets a hash of the whole key. */
static const char *name_object(plan *p, const char *key, json_t *o)
{
    buf b = {0};
    buf_puts(&b, jstr(json_object_get(o, "table")));
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(o, "cols"), i, c) buf_printf(&b, "_%s", jstr(c));
    const char *kind = jstr(json_object_get(o, "kind"));
    buf_printf(&b, "_%s", !strcmp(kind, "key") ? "key" : !strcmp(kind, "idx") ? "idx" : "fkey");
    char out[DDL_NAME_MAX + 1];
    ddl_physical_name(b.data, out);
    if (json_object_get(p->used, out)) {
        char hex[SECRET_HASH_HEX];
        secret_sha256_hex(key, strlen(key), hex);
        char base[DDL_NAME_MAX + 1];
        snprintf(base, sizeof base, "%s", out);
        snprintf(out, sizeof out, "%.54s_%.8s", base, hex);
    }
    buf_free(&b);
    json_object_set_new(p->used, out, json_true());
    json_object_set_new(p->names, key, json_string(out));
    return json_string_value(json_object_get(p->names, key));
}

static void cols_list(buf *s, json_t *cols)
{
    size_t i;
    json_t *c;
    json_array_foreach(cols, i, c)
    {
        if (i)
            buf_puts(s, ", ");
        ddl_quote(s, jstr(c));
    }
}

static void create_object(plan *p, const char *key, json_t *o)
{
    const char *table = jstr(json_object_get(o, "table")), *kind = jstr(json_object_get(o, "kind"));
    const char *name = name_object(p, key, o);
    json_t *cols = json_object_get(o, "cols");
    const char *field = json_array_size(cols) == 1 ? jstr(json_array_get(cols, 0)) : NULL;
    buf *s = &p->sql;
    if (!strcmp(kind, "idx")) {
        buf_puts(s, "CREATE INDEX ");
        ddl_quote(s, name);
        buf_puts(s, " ON ");
        qualified(s, p->schema, table);
        buf_puts(s, " (");
        cols_list(s, cols);
        buf_puts(s, ")");
        add_step(p, "create_index", jstr(json_object_get(o, "form")), field);
        return;
    }
    buf_puts(s, "ALTER TABLE ");
    qualified(s, p->schema, table);
    buf_puts(s, " ADD CONSTRAINT ");
    ddl_quote(s, name);
    if (!strcmp(kind, "key")) {
        buf_puts(s, " UNIQUE (");
        cols_list(s, cols);
        buf_puts(s, ")");
        add_step(p, "add_unique", jstr(json_object_get(o, "form")), field);
    } else {
        buf_puts(s, " FOREIGN KEY (");
        cols_list(s, cols);
        buf_puts(s, ") REFERENCES ");
        qualified(s, p->schema, jstr(json_object_get(o, "target")));
        buf_puts(s, " (\"id\") ON DELETE ");
        buf_puts(s, jstr(json_object_get(o, "on_delete")));
        add_step(p, "add_foreign_key", jstr(json_object_get(o, "form")), field);
    }
}

static void drop_object(plan *p, const char *key, json_t *o)
{
    const char *name = jstr(json_object_get(p->names, key));
    if (!*name)
        return;   /* never created (a catalog without names): nothing to drop */
    const char *kind = jstr(json_object_get(o, "kind"));
    json_t *cols = json_object_get(o, "cols");
    const char *field = json_array_size(cols) == 1 ? jstr(json_array_get(cols, 0)) : NULL;
    buf *s = &p->sql;
    if (!strcmp(kind, "idx")) {
        buf_puts(s, "DROP INDEX ");
        qualified(s, p->schema, name);
    } else {
        buf_puts(s, "ALTER TABLE ");
        qualified(s, p->schema, jstr(json_object_get(o, "table")));
        buf_puts(s, " DROP CONSTRAINT ");
        ddl_quote(s, name);
    }
    add_step(p, !strcmp(kind, "idx") ? "drop_index" : "drop_constraint", jstr(json_object_get(o, "form")), field);
    json_object_del(p->used, name);
    json_object_del(p->names, key);
}

/* The current visit of the record's state: when it began and its number
 * (a timer fires only in the visit that scheduled it). */
#define FLOW_VISIT_COLUMNS ",\n  \"_state_at\" timestamptz NOT NULL DEFAULT now(),\n  \"_visit\" integer NOT NULL DEFAULT 1"

static void column_def(buf *s, json_t *c)
{
    ddl_quote(s, jstr(json_object_get(c, "name")));
    buf_puts(s, " ");
    buf_puts(s, jstr(json_object_get(c, "type")));
    if (!strcmp(jstr(json_object_get(c, "field_type")), "user"))
        buf_puts(s, " REFERENCES loom.users(id) ON DELETE SET NULL");
}

/* The index of a flow's queues ("my tasks": the records in a state, oldest
 * visit first): <table>__state. */
static void state_index(plan *p, const char *form, const char *table)
{
    char tmp[DDL_NAME_MAX * 2], name[DDL_NAME_MAX + 1];
    snprintf(tmp, sizeof tmp, "%s__state", table);
    ddl_physical_name(tmp, name);
    buf_puts(&p->sql, "CREATE INDEX IF NOT EXISTS ");
    ddl_quote(&p->sql, name);
    buf_puts(&p->sql, " ON ");
    qualified(&p->sql, p->schema, table);
    buf_puts(&p->sql, " (\"_state\", \"_state_at\")");
    add_step(p, "create_index", form, "_state");
}

static void create_table(plan *p, const char *table, json_t *t)
{
    buf *s = &p->sql;
    const char *parent = json_string_value(json_object_get(t, "parent"));
    buf_puts(s, "CREATE TABLE ");
    qualified(s, p->schema, table);
    buf_puts(s, " (\n  \"id\" bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY");
    if (parent) {
        buf_puts(s, ",\n  \"_parent\" bigint NOT NULL REFERENCES ");
        qualified(s, p->schema, parent);
        buf_puts(s, " (\"id\") ON DELETE CASCADE,\n  \"_pos\" integer NOT NULL DEFAULT 0");
    } else {
        buf_puts(s, ",\n  \"_version\" integer NOT NULL DEFAULT 1");
        if (json_is_true(json_object_get(t, "flow")))
            buf_puts(s, ",\n  \"_state\" text NOT NULL" FLOW_VISIT_COLUMNS);
        /* no foreign keys on the system user columns: Loom writes them from the caller (or an owner it
         * has checked), users are never deleted, and three checks per row cost a bulk import half its time */
        buf_puts(s, ",\n  \"_owner\" bigint"
                    ",\n  \"_created_at\" timestamptz NOT NULL DEFAULT now()"
                    ",\n  \"_created_by\" bigint"
                    ",\n  \"_updated_at\" timestamptz NOT NULL DEFAULT now()"
                    ",\n  \"_updated_by\" bigint");
    }
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(t, "columns"), i, c)
    {
        buf_puts(s, ",\n  ");
        column_def(s, c);
    }
    buf_puts(s, "\n)");
    add_step(p, parent ? "create_child_table" : "create_table", jstr(json_object_get(t, "form")),
             json_string_value(json_object_get(t, "subform")));
    if (json_is_true(json_object_get(t, "flow")))
        state_index(p, jstr(json_object_get(t, "form")), table);
}

static json_t *column_of(json_t *t, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(t, "columns"), i, c) if (!strcmp(jstr(json_object_get(c, "name")), name)) return c;
    return NULL;
}

/* The name a soft-dropped table or column moves to. */
static void dropped_name(plan *p, const char *name, char out[DDL_NAME_MAX + 1])
{
    char tmp[160];
    snprintf(tmp, sizeof tmp, "_dropped_v%d_%s", p->version, name);
    ddl_physical_name(tmp, out);
}

static void note_destructive(plan *p, const char *op, const char *form, const char *field, const char *detail)
{
    json_t *d = json_pack("{s:s, s:s, s:s}", "op", op, "form", form, "detail", detail);
    if (field)
        json_object_set_new(d, "field", json_string(field));
    json_array_append_new(p->destructive, d);
}

static void check(plan *p, const char *form, const char *field, const char *problem)
{
    json_array_append_new(p->checks, json_pack("{s:s, s:s?, s:s, s:s}", "form", form, "field", field, "problem",
                                               problem, "sql", p->sql.data));
    buf_reset(&p->sql);
}

/* Whether a column of type from can become to without losing anything. */
static bool widens(const char *from, const char *to)
{
    if (!strcmp(to, "text"))
        return strcmp(from, "text[]") && strcmp(from, "jsonb");
    int p1, s1, p2, s2;
    bool num_to = sscanf(to, "numeric(%d,%d)", &p2, &s2) == 2;
    if (!strcmp(from, "bigint") && num_to)
        return p2 - s2 >= 19;
    if (num_to && sscanf(from, "numeric(%d,%d)", &p1, &s1) == 2)
        return s2 >= s1 && p2 - s2 >= p1 - s1;
    return !strcmp(from, "date") && !strcmp(to, "timestamptz");
}

/* Digits before and after the point a numeric column type holds (bigint as
 * 18 and 0, a safe bound), or false for a non-number type. */
static bool numeric_shape(const char *type, int *out_int, int *out_scale)
{
    int prec, scale;
    if (!strcmp(type, "bigint")) {
        *out_int = 18;
        *out_scale = 0;
        return true;
    }
    if (sscanf(type, "numeric(%d,%d)", &prec, &scale) == 2) {
        *out_int = prec - scale;
        *out_scale = scale;
        return true;
    }
    return false;
}

/* A quoted column name ("col"); ids never hold a quote, but quote anyway. */
static void quoted(const char *col, char out[DDL_NAME_MAX * 2 + 3])
{
    buf b = {0};
    ddl_quote(&b, col);
    snprintf(out, DDL_NAME_MAX * 2 + 3, "%s", b.data);
    buf_free(&b);
}

/* A destructive check: count the rows of table matching where (SQL over the column). */
static void count_check(plan *p, const char *table, const char *form, const char *col, const char *where)
{
    buf_puts(&p->sql, "SELECT count(*) FROM ");
    qualified(&p->sql, p->schema, table);
    buf_printf(&p->sql, " WHERE %s", where);
    check(p, form, col, "destructive");
}

/* ALTER COLUMN col TYPE to USING using (SQL over the column). */
static void alter_type(plan *p, const char *table, const char *form, const char *col, const char *to,
                       const char *using, const char *op)
{
    char q[DDL_NAME_MAX * 2 + 3];
    quoted(col, q);
    buf_puts(&p->sql, "ALTER TABLE ");
    qualified(&p->sql, p->schema, table);
    buf_printf(&p->sql, " ALTER COLUMN %s TYPE %s USING %s", q, to, using);
    add_step(p, op, form, col);
}

/* A narrowing between number types: the rows it would change are counted
 * (a destructive check); the step rounds to the new scale and empties
 * values too large for the new type (run with allow_destructive when such
 * rows exist). */
static void narrow_number(plan *p, const char *table, const char *form, const char *col, const char *to, int ints,
                          int scale)
{
    char q[DDL_NAME_MAX * 2 + 3], sql[512];
    quoted(col, q);
    snprintf(sql, sizeof sql, "%s IS NOT NULL AND (%s::numeric <> round(%s::numeric, %d) OR abs(%s::numeric) >= 1e%d)",
             q, q, q, scale, q, ints);
    count_check(p, table, form, col, sql);
    snprintf(sql, sizeof sql, "CASE WHEN abs(%s::numeric) >= 1e%d THEN NULL ELSE round(%s::numeric, %d) END::%s", q,
             ints, q, scale, to);
    alter_type(p, table, form, col, to, sql, "narrow_column");
    note_destructive(p, "narrow_column", form, col, "values are rounded to the new scale; values too large become empty");
}

/* Any other conversion between scalar types (text -> integer, datetime ->
 * date, ...): rows whose value would not convert, or would change, are
 * counted (a destructive check); the step converts what converts and empties
 * the rest. Arrays and jsonb are not converted (false). */
static bool convert_scalar(plan *p, const char *table, const char *form, const char *col, const char *from,
                           const char *to)
{
    if (!strcmp(from, "text[]") || !strcmp(from, "jsonb") || !strcmp(to, "text[]") || !strcmp(to, "jsonb"))
        return false;
    char q[DDL_NAME_MAX * 2 + 3], sql[512];
    quoted(col, q);
    snprintf(sql, sizeof sql,
             "%s IS NOT NULL AND CASE WHEN pg_temp.loom_cast_ok(%s::text, '%s') "
             "THEN (%s::text::%s)::%s IS DISTINCT FROM %s ELSE true END",
             q, q, to, q, to, from, q);
    count_check(p, table, form, col, sql);
    snprintf(sql, sizeof sql, "CASE WHEN pg_temp.loom_cast_ok(%s::text, '%s') THEN %s::text::%s END", q, to, q, to);
    alter_type(p, table, form, col, to, sql, "convert_column");
    note_destructive(p, "convert_column", form, col, "values that do not convert become empty");
    return true;
}

/* Changes to and from a list (multiselect, text[]): a value becomes a list
 * of one; a list becomes its first item for a select (lists of several are
 * counted: destructive) or its items joined for text. False for the rest
 * (files to or from other types: their values have no equivalent). */
static bool convert_list(plan *p, const char *table, const char *form, const char *col, const char *from,
                         const char *to, const char *to_field)
{
    char q[DDL_NAME_MAX * 2 + 3], sql[512];
    quoted(col, q);
    if (!strcmp(to, "text[]") && strcmp(from, "jsonb")) {
        snprintf(sql, sizeof sql, "CASE WHEN %s IS NULL THEN NULL ELSE ARRAY[%s::text] END", q, q);
        alter_type(p, table, form, col, to, sql, "convert_column");
        return true;
    }
    if (strcmp(from, "text[]") || strcmp(to, "text"))
        return false;
    if (!strcmp(to_field, "select")) {
        snprintf(sql, sizeof sql, "cardinality(%s) > 1", q);
        count_check(p, table, form, col, sql);
        snprintf(sql, sizeof sql, "%s[1]", q);
        alter_type(p, table, form, col, to, sql, "convert_column");
        note_destructive(p, "convert_column", form, col, "lists of several values keep their first");
    } else {
        snprintf(sql, sizeof sql, "array_to_string(%s, ', ')", q);
        alter_type(p, table, form, col, to, sql, "convert_column");
    }
    return true;
}

/* A file field turned to many files (each value becomes a list of one) or
 * to one (a list keeps its first file; lists of several are counted). */
static void convert_files(plan *p, const char *table, const char *form, const char *col, bool to_many)
{
    char q[DDL_NAME_MAX * 2 + 3], sql[512];
    quoted(col, q);
    if (!to_many) {
        snprintf(sql, sizeof sql, "jsonb_typeof(%s) = 'array' AND jsonb_array_length(%s) > 1", q, q);
        count_check(p, table, form, col, sql);
        note_destructive(p, "convert_column", form, col, "lists of several files keep their first");
    }
    buf_puts(&p->sql, "UPDATE ");
    qualified(&p->sql, p->schema, table);
    if (to_many)
        buf_printf(&p->sql, " SET %s = jsonb_build_array(%s) WHERE jsonb_typeof(%s) = 'object'", q, q, q);
    else
        buf_printf(&p->sql, " SET %s = CASE WHEN jsonb_array_length(%s) = 0 THEN NULL ELSE %s->0 END "
                            "WHERE jsonb_typeof(%s) = 'array'", q, q, q, q);
    add_step(p, "convert_column", form, col);
}

/* Appends the end of a statement that begins "WITH m AS (... RETURNING id,
 * _visit)": the timers of state (of flow) for the visits of the records in
 * m, as entering it schedules them (store/write.c). */
static void schedule(plan *p, const char *app, const char *form, json_t *flow, const char *state)
{
    json_t *st = flow_state(flow, state);
    long long sla = flow_seconds(json_string_value(json_object_get(json_object_get(st, "sla"), "within")));
    long long timeout = flow_seconds(json_string_value(json_object_get(json_object_get(st, "timeout"), "after")));
    buf_printf(&p->sql, "INSERT INTO loom.jobs (kind, app, form, record, state, visit, run_at) SELECT k.kind, '%s', '%s', "
                        "m.\"id\", '%s', m.\"_visit\", now() + k.after * interval '1 second' FROM m, (VALUES ('sla', "
                        "%lld), ('timeout', %lld)) AS k(kind, after) WHERE k.after > 0",
               app, form, state, sla, timeout);
}

/* The states of flow of before that flow now lacks: records in one move to
 * the state flow's "moves" names for it (a new visit, in the history, with
 * the old state's timers cancelled and the new one's scheduled), or, when
 * it names none, stop the publish as a check that counts them. States are
 * ids: literals are safe. */
static void removed_states(plan *p, const char *app, const char *form, const char *table, json_t *before, json_t *flow)
{
    size_t i;
    json_t *st;
    json_array_foreach(json_object_get(before, "states"), i, st)
    {
        const char *gone = jstr(json_object_get(st, "id"));
        if (flow_state(flow, gone))
            continue;
        const char *to = json_string_value(json_object_get(json_object_get(flow, "moves"), gone));
        buf *s = &p->sql;
        if (!to) {
            buf_puts(s, "SELECT count(*) FROM ");
            qualified(s, p->schema, table);
            buf_printf(s, " WHERE \"_state\" = '%s'", gone);
            check(p, form, "_state", "removed_state");
            continue;
        }
        buf_puts(s, "WITH m AS (UPDATE ");
        qualified(s, p->schema, table);
        buf_printf(s, " SET \"_state\" = '%s', \"_state_at\" = now(), \"_visit\" = \"_visit\" + 1, \"_version\" = "
                      "\"_version\" + 1, \"_updated_at\" = now() WHERE \"_state\" = '%s' RETURNING \"id\", \"_visit\"), "
                      "h AS (INSERT INTO loom.history (app, form, record, action, from_state, to_state, comment) "
                      "SELECT '%s', '%s', m.\"id\", 'move', '%s', '%s', 'the state was removed' FROM m), "
                      "c AS (UPDATE loom.jobs SET status = 'cancelled', done_at = now() WHERE app = '%s' AND form = '%s' "
                      "AND status = 'pending' AND visit IS NOT NULL AND record IN (SELECT \"id\" FROM m)) ",
                   to, gone, app, form, gone, to, app, form);
        schedule(p, app, form, flow, to);
        add_step(p, "move_state", form, "_state");
    }
}

static void diff(plan *p, json_t *old, json_t *new)
{
    json_t *ot = json_object_get(old, "tables"), *nt = json_object_get(new, "tables");
    json_t *oo = json_object_get(old, "objects"), *no = json_object_get(new, "objects");
    const char *key, *name;
    json_t *o, *t;
    char moved[DDL_NAME_MAX + 1];

    /* 1. objects no longer wanted (on tables that stay; a dropped table takes its own along) */
    json_object_foreach(oo, key, o)
    {
        if (json_object_get(no, key))
            continue;
        const char *table = jstr(json_object_get(o, "table"));
        if (json_object_get(nt, table) || !p->allow_destructive) {
            drop_object(p, key, o);   /* a soft-dropped table keeps no names a new one could want */
        } else {                      /* DROP TABLE takes it along: just forget its name */
            json_object_del(p->used, jstr(json_object_get(p->names, key)));
            json_object_del(p->names, key);
        }
    }
    /* 2. columns that went away, and 3. tables that went away (children first) */
    json_object_foreach(ot, name, t)
    {
        json_t *n = json_object_get(nt, name);
        if (!n)
            continue;
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(t, "columns"), i, c)
        {
            const char *col = jstr(json_object_get(c, "name"));
            if (column_of(n, col))
                continue;
            const char *form = jstr(json_object_get(t, "form"));
            buf *s = &p->sql;
            buf_puts(s, "ALTER TABLE ");
            qualified(s, p->schema, name);
            if (p->allow_destructive) {
                buf_puts(s, " DROP COLUMN ");
                ddl_quote(s, col);
                add_step(p, "drop_column", form, col);
                note_destructive(p, "drop_column", form, col, "the column and its data are dropped");
            } else {
                dropped_name(p, col, moved);
                buf_puts(s, " RENAME COLUMN ");
                ddl_quote(s, col);
                buf_puts(s, " TO ");
                ddl_quote(s, moved);
                add_step(p, "soft_drop_column", form, col);
                note_destructive(p, "soft_drop_column", form, col,
                                 "the field is removed; its column is kept, hidden, until published with allow_destructive");
            }
        }
    }
    for (int children = 1; children >= 0; children--) {
        json_object_foreach(ot, name, t)
        {
            if (json_object_get(nt, name) || (json_object_get(t, "parent") != NULL) != children)
                continue;
            const char *form = jstr(json_object_get(t, "form"));
            buf *s = &p->sql;
            if (p->allow_destructive) {
                buf_puts(s, "DROP TABLE ");
                qualified(s, p->schema, name);
                buf_puts(s, " CASCADE");
                add_step(p, "drop_table", form, json_string_value(json_object_get(t, "subform")));
                note_destructive(p, "drop_table", form, json_string_value(json_object_get(t, "subform")),
                                 "the table and its data are dropped");
            } else {
                dropped_name(p, name, moved);
                buf_puts(s, "ALTER TABLE ");
                qualified(s, p->schema, name);
                buf_puts(s, " RENAME TO ");
                ddl_quote(s, moved);
                add_step(p, "soft_drop_table", form, json_string_value(json_object_get(t, "subform")));
                note_destructive(p, "soft_drop_table", form, json_string_value(json_object_get(t, "subform")),
                                 "the form is removed; its table is kept, hidden, until published with allow_destructive");
            }
        }
    }
    /* 4. new tables (form tables before child tables) */
    for (int children = 0; children <= 1; children++) {
        json_object_foreach(nt, name, t)
        {
            if (!json_object_get(ot, name) && (json_object_get(t, "parent") != NULL) == children)
                create_table(p, name, t);
        }
    }
    /* 5. new columns, changed types, flows, newly required fields */
    json_object_foreach(nt, name, t)
    {
        json_t *o_t = json_object_get(ot, name);
        if (!o_t)
            continue;
        const char *form = jstr(json_object_get(t, "form"));
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(t, "columns"), i, c)
        {
            const char *col = jstr(json_object_get(c, "name"));
            json_t *was = column_of(o_t, col);
            buf *s = &p->sql;
            if (!was) {
                buf_puts(s, "ALTER TABLE ");
                qualified(s, p->schema, name);
                buf_puts(s, " ADD COLUMN ");
                column_def(s, c);
                add_step(p, "add_column", form, col);
                continue;
            }
            const char *from = jstr(json_object_get(was, "type")), *to = jstr(json_object_get(c, "type"));
            if (strcmp(from, to) != 0) {
                int fi, fs, ti, ts;
                if (!widens(from, to) && numeric_shape(from, &fi, &fs) && numeric_shape(to, &ti, &ts)) {
                    narrow_number(p, name, form, col, to, ti, ts);
                    continue;
                }
                if (!widens(from, to)) {
                    if (!convert_scalar(p, name, form, col, from, to) &&
                        !convert_list(p, name, form, col, from, to, jstr(json_object_get(c, "field_type"))))
                        json_array_append_new(p->unsupported, json_pack("{s:s, s:s, s:s}", "form", form, "field", col,
                                                                        "change", "this type change (a file field to or from another type, or a list to a number or date)"));
                    continue;
                }
                char q[DDL_NAME_MAX * 2 + 3], using[200];
                quoted(col, q);
                snprintf(using, sizeof using, "%s::%s", q, to);
                alter_type(p, name, form, col, to, using, "widen_column");
            }
            if (!strcmp(jstr(json_object_get(c, "field_type")), "file") &&
                !strcmp(jstr(json_object_get(was, "field_type")), "file") &&
                json_is_true(json_object_get(c, "multiple")) != json_is_true(json_object_get(was, "multiple")))
                convert_files(p, name, form, col, json_is_true(json_object_get(c, "multiple")));
            json_t *ml_new = json_object_get(c, "max_length"), *ml_old = json_object_get(was, "max_length");
            if (json_is_integer(ml_new) && json_is_integer(ml_old) && !strcmp(from, to) &&
                json_integer_value(ml_new) < json_integer_value(ml_old)) {
                char q[DDL_NAME_MAX * 2 + 3], where[200];
                quoted(col, q);
                snprintf(where, sizeof where, "char_length(%s) > %lld", q, (long long)json_integer_value(ml_new));
                count_check(p, name, form, col, where);
                note_destructive(p, "shorten_text", form, col, "longer values stay as they are but no longer pass validation");
            }
            if (json_is_true(json_object_get(c, "required")) && !json_is_true(json_object_get(was, "required"))) {
                buf_puts(s, "SELECT count(*) FROM ");
                qualified(s, p->schema, name);
                buf_puts(s, " WHERE ");
                ddl_quote(s, col);
                buf_puts(s, " IS NULL");
                check(p, form, col, "required");
            }
        }
        bool had = json_is_true(json_object_get(o_t, "flow")), has = json_is_true(json_object_get(t, "flow"));
        if (has && !had) {
            const char *initial = jstr(json_object_get(json_object_get(new, "flows"), form));
            buf *s = &p->sql;
            buf_puts(s, "ALTER TABLE ");
            qualified(s, p->schema, name);
            buf_puts(s, " ADD COLUMN IF NOT EXISTS \"_state\" text, ADD COLUMN IF NOT EXISTS \"_state_at\" timestamptz "
                        "NOT NULL DEFAULT now(), ADD COLUMN IF NOT EXISTS \"_visit\" integer NOT NULL DEFAULT 1");
            add_step(p, "add_column", form, "_state");
            /* existing records enter the initial state (the value is an id: a literal is safe) */
            buf_puts(s, "WITH m AS (UPDATE ");
            qualified(s, p->schema, name);
            buf_printf(s, " SET \"_state\" = '%s' WHERE \"_state\" IS NULL RETURNING \"id\", \"_visit\") ", initial);
            schedule(p, jstr(json_object_get(new, "app")), form, json_object_get(json_object_get(new, "flow_defs"), form),
                     initial);
            add_step(p, "set_initial_state", form, "_state");
            buf_puts(s, "ALTER TABLE ");
            qualified(s, p->schema, name);
            buf_puts(s, " ALTER COLUMN \"_state\" SET NOT NULL");
            add_step(p, "alter_column", form, "_state");
            state_index(p, form, name);
        } else if (had && !has) {
            buf *s = &p->sql;
            buf_puts(s, "ALTER TABLE ");
            qualified(s, p->schema, name);
            buf_puts(s, " ALTER COLUMN \"_state\" DROP NOT NULL");
            add_step(p, "alter_column", form, "_state");
        } else if (had && has) {
            removed_states(p, jstr(json_object_get(new, "app")), form, name,
                           json_object_get(json_object_get(old, "flow_defs"), form),
                           json_object_get(json_object_get(new, "flow_defs"), form));
        }
    }
    /* 6. new objects, with a data check where existing rows could break them */
    json_object_foreach(no, key, o)
    {
        /* an object the published definition has but its catalog does not name was never created: the
         * engine that published it did not make such objects yet (the (_owner, id) index, say) */
        if (json_object_get(oo, key) && (!p->named || json_object_get(p->names, key)))
            continue;
        const char *table = jstr(json_object_get(o, "table")), *kind = jstr(json_object_get(o, "kind"));
        json_t *o_t = json_object_get(ot, table);
        /* only columns that existed before hold rows to check */
        bool old_cols = o_t != NULL;
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(o, "cols"), i, c) old_cols =
            old_cols && (column_of(o_t, jstr(c)) || !strcmp(jstr(c), "_parent"));
        const char *form = jstr(json_object_get(o, "form"));
        json_t *cols = json_object_get(o, "cols");
        const char *field = json_array_size(cols) == 1 ? jstr(json_array_get(cols, 0)) : NULL;
        buf *s = &p->sql;
        if (old_cols && !strcmp(kind, "key")) {
            buf_puts(s, "SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM ");
            qualified(s, p->schema, table);
            buf_puts(s, " GROUP BY ");
            cols_list(s, cols);
            buf_puts(s, " HAVING count(*) > 1) AS dup");
            check(p, form, field, "not_unique");
        } else if (old_cols && !strcmp(kind, "fkey")) {
            buf_puts(s, "SELECT count(*) FROM ");
            qualified(s, p->schema, table);
            buf_puts(s, " AS t WHERE t.");
            ddl_quote(s, jstr(json_array_get(cols, 0)));
            buf_puts(s, " IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ");
            qualified(s, p->schema, jstr(json_object_get(o, "target")));
            buf_puts(s, " AS r WHERE r.\"id\" = t.");
            ddl_quote(s, jstr(json_array_get(cols, 0)));
            buf_puts(s, ")");
            check(p, form, field, "not_found");
        }
        create_object(p, key, o);
    }
}

/* ---- plans ---- */

static json_t *run_plan(json_t *old_state, json_t *old_names, json_t *draft, int version, bool allow_destructive)
{
    json_t *new_state = ddl_state(draft);
    plan p = {.schema = jstr(json_object_get(new_state, "schema")), .version = version,
              .allow_destructive = allow_destructive, .steps = json_array(), .destructive = json_array(),
              .checks = json_array(), .unsupported = json_array(), .names = json_object(), .used = json_object(),
              .named = json_object_size(old_names) > 0};
    const char *k;
    json_t *v;
    json_object_foreach(old_names, k, v)
    {
        json_object_set(p.names, k, v);
        json_object_set_new(p.used, jstr(v), json_true());
    }
    if (!old_state) {
        buf_puts(&p.sql, "CREATE SCHEMA ");
        ddl_quote(&p.sql, p.schema);
        add_step(&p, "create_schema", "", NULL);
    }
    json_t *empty = json_pack("{s:{}, s:{}, s:{}}", "tables", "objects", "flows");
    diff(&p, old_state ? old_state : empty, new_state);
    json_decref(empty);
    /* the catalog: forms -> physical names, and every object's name */
    json_t *forms = json_object();
    const char *tname;
    json_t *t;
    json_object_foreach(json_object_get(new_state, "tables"), tname, t)
    {
        const char *form = jstr(json_object_get(t, "form"));
        json_t *cols = json_object();
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(t, "columns"), i, c)
            json_object_set_new(cols, jstr(json_object_get(c, "name")), json_string(jstr(json_object_get(c, "name"))));
        json_t *entry = json_object_get(forms, form);
        if (!entry) {
            entry = json_pack("{s:s?, s:o, s:{}}", "table", NULL, "columns", json_object(), "subforms");
            json_object_set_new(forms, form, entry);
        }
        const char *sub = json_string_value(json_object_get(t, "subform"));
        if (sub) {
            json_object_set_new(json_object_get(entry, "subforms"), sub, json_pack("{s:s, s:o}", "table", tname, "columns", cols));
        } else {
            json_object_set_new(entry, "table", json_string(tname));
            json_object_set_new(entry, "columns", cols);
        }
    }
    json_t *result = json_pack("{s:s, s:o, s:o, s:o, s:o, s:{s:s, s:o, s:o}}", "schema", p.schema, "steps", p.steps,
                               "destructive", p.destructive, "checks", p.checks, "unsupported", p.unsupported,
                               "catalog", "schema", p.schema, "forms", forms, "objects", p.names);
    buf_free(&p.sql);
    json_decref(p.used);
    json_decref(new_state);
    return result;
}

json_t *ddl_plan_create(json_t *bundle)
{
    return run_plan(NULL, NULL, bundle, 1, false);
}

json_t *ddl_plan_change(json_t *published, json_t *catalog, json_t *draft, int version, bool allow_destructive)
{
    json_t *old = ddl_state(published);
    json_t *plan = run_plan(old, json_object_get(catalog, "objects"), draft, version, allow_destructive);
    json_decref(old);
    return plan;
}
