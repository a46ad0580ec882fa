/* ddl.c - CREATE statements for a new app (see ddl.h). Changing a published
 * app (add, widen, drop) builds on the same catalog in a later step. */
#include "form/ddl.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/secret.h"

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

/* schema.table, quoted. */
static void qualified(buf *out, const char *schema, const char *table)
{
    ddl_quote(out, schema);
    buf_puts(out, ".");
    ddl_quote(out, table);
}

static const char *column_type(json_t *field, char tmp[64])
{
    const char *t = json_string_value(json_object_get(field, "type"));
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

static void add_step(json_t *steps, const char *op, const char *form, const char *field, buf *sql)
{
    json_t *s = json_pack("{s:s, s:s}", "op", op, "form", form);
    if (field)
        json_object_set_new(s, "field", json_string(field));
    json_object_set_new(s, "sql", json_string(sql->data));
    json_array_append_new(steps, s);
    buf_reset(sql);
}

/* Constraint or index name: <table>_<cols>_<suffix>, fitted to 63 bytes.
 * Index names are unique per schema, and "a_b" + "c" reads like "a" + "b_c":
 * a name already used in the plan (used) gets a hash of the whole tuple. */
static void object_name(char out[DDL_NAME_MAX + 1], const char *table, json_t *cols, const char *suffix,
                        json_t *used)
{
    buf b = {0};
    buf_puts(&b, table);
    size_t i;
    json_t *c;
    json_array_foreach(cols, i, c)
    {
        buf_puts(&b, "_");
        buf_puts(&b, json_string_value(c));
    }
    buf_puts(&b, "_");
    buf_puts(&b, suffix);
    ddl_physical_name(b.data, out);
    if (json_object_get(used, out)) {
        buf_printf(&b, "|%s", table);   /* the tuple, unambiguously */
        char hex[SECRET_HASH_HEX];
        secret_sha256_hex(b.data, b.len, hex);
        char base[DDL_NAME_MAX + 1];
        snprintf(base, sizeof base, "%s", out);
        snprintf(out, DDL_NAME_MAX + 1, "%.54s_%.8s", base, hex);
    }
    json_object_set_new(used, out, json_true());
    buf_free(&b);
}

typedef struct plan {
    const char *schema;
    json_t *steps;
    json_t *used;    /* constraint and index names given so far */
    buf sql;
} plan;

static void unique_or_index(plan *p, const char *form, const char *table, json_t *cols, bool unique)
{
    char name[DDL_NAME_MAX + 1];
    object_name(name, table, cols, unique ? "key" : "idx", p->used);
    buf *s = &p->sql;
    if (unique) {
        buf_puts(s, "ALTER TABLE ");
        qualified(s, p->schema, table);
        buf_puts(s, " ADD CONSTRAINT ");
        ddl_quote(s, name);
        buf_puts(s, " UNIQUE (");
    } else {
        buf_puts(s, "CREATE INDEX ");
        ddl_quote(s, name);
        buf_puts(s, " ON ");
        qualified(s, p->schema, table);
        buf_puts(s, " (");
    }
    size_t i;
    json_t *c;
    json_array_foreach(cols, i, c)
    {
        if (i)
            buf_puts(s, ", ");
        ddl_quote(s, json_string_value(c));
    }
    buf_puts(s, ")");
    add_step(p->steps, unique ? "add_unique" : "create_index", form,
             json_array_size(cols) == 1 ? json_string_value(json_array_get(cols, 0)) : NULL, s);
}

/* True when groups has a group whose first column is col. */
static bool leads_a_group(json_t *groups, const char *col)
{
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        const char *first = json_string_value(json_array_get(g, 0));
        if (first && !strcmp(first, col))
            return true;
    }
    return false;
}

/* Columns of fields (not subforms) for a CREATE TABLE, and the catalog's
 * field -> column map. */
static void columns(plan *p, json_t *fields, json_t *colmap)
{
    size_t i;
    json_t *f;
    char tmp[64];
    json_array_foreach(fields, i, f)
    {
        const char *id = json_string_value(json_object_get(f, "id"));
        const char *t = json_string_value(json_object_get(f, "type"));
        if (!strcmp(t, "subform"))
            continue;
        buf_puts(&p->sql, ",\n  ");
        ddl_quote(&p->sql, id);
        buf_puts(&p->sql, " ");
        buf_puts(&p->sql, column_type(f, tmp));
        if (!strcmp(t, "user"))
            buf_puts(&p->sql, " REFERENCES loom.users(id) ON DELETE SET NULL");
        json_object_set_new(colmap, id, json_string(id));
    }
}

/* Foreign keys, uniques and indexes of one table (form or child). */
static void table_constraints(plan *p, const char *form, const char *table, json_t *fields, json_t *uniques,
                              json_t *indexes)
{
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *id = json_string_value(json_object_get(f, "id"));
        const char *t = json_string_value(json_object_get(f, "type"));
        json_t *one = json_pack("[s]", id);
        if (!strcmp(t, "ref")) {
            const char *target = json_string_value(json_object_get(f, "form"));
            const char *od = json_string_value(json_object_get(f, "on_delete"));
            char name[DDL_NAME_MAX + 1];
            object_name(name, table, one, "fkey", p->used);
            buf *s = &p->sql;
            buf_puts(s, "ALTER TABLE ");
            qualified(s, p->schema, table);
            buf_puts(s, " ADD CONSTRAINT ");
            ddl_quote(s, name);
            buf_puts(s, " FOREIGN KEY (");
            ddl_quote(s, id);
            buf_puts(s, ") REFERENCES ");
            qualified(s, p->schema, target);
            buf_puts(s, " (\"id\") ON DELETE ");
            buf_puts(s, !od || !strcmp(od, "restrict") ? "RESTRICT" : !strcmp(od, "cascade") ? "CASCADE" : "SET NULL");
            add_step(p->steps, "add_foreign_key", form, id, s);
            /* PostgreSQL does not index a foreign key; deletes of the target need it */
            if (!leads_a_group(indexes, id) && !leads_a_group(uniques, id) &&
                !json_is_true(json_object_get(f, "unique")) && !json_is_true(json_object_get(f, "index")))
                unique_or_index(p, form, table, one, false);
        }
        if (json_is_true(json_object_get(f, "unique")) || !strcmp(t, "autonumber"))
            unique_or_index(p, form, table, one, true);
        else if (json_is_true(json_object_get(f, "index")))
            unique_or_index(p, form, table, one, false);
        json_decref(one);
    }
    json_array_foreach(uniques, i, f) unique_or_index(p, form, table, f, true);
    json_array_foreach(indexes, i, f) unique_or_index(p, form, table, f, false);
}

json_t *ddl_plan_create(json_t *bundle)
{
    const char *app = json_string_value(json_object_get(json_object_get(bundle, "app"), "id"));
    char schema[DDL_NAME_MAX + 1], tmp[128];
    snprintf(tmp, sizeof tmp, "app_%s", app);
    ddl_physical_name(tmp, schema);
    plan p = {.schema = schema, .steps = json_array(), .used = json_object()};
    json_t *flows_by_form = json_object();
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(bundle, "flows"), i, x)
        json_object_set_new(flows_by_form, json_string_value(json_object_get(x, "form")), json_true());

    buf_puts(&p.sql, "CREATE SCHEMA ");
    ddl_quote(&p.sql, schema);
    add_step(p.steps, "create_schema", "", NULL, &p.sql);

    json_t *cat_forms = json_object();
    json_t *forms = json_object_get(bundle, "forms");
    /* tables first, so foreign keys between them can follow in any order */
    json_array_foreach(forms, i, x)
    {
        const char *id = json_string_value(json_object_get(x, "id"));
        json_t *fields = json_object_get(x, "fields");
        json_t *colmap = json_object(), *subs = json_object();
        buf_puts(&p.sql, "CREATE TABLE ");
        qualified(&p.sql, schema, id);
        buf_puts(&p.sql, " (\n  \"id\" bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n"
                         "  \"_version\" integer NOT NULL DEFAULT 1");
        if (json_object_get(flows_by_form, id))
            buf_puts(&p.sql, ",\n  \"_state\" text NOT NULL");
        buf_puts(&p.sql, ",\n  \"_owner\" bigint REFERENCES loom.users(id) ON DELETE SET NULL"
                         ",\n  \"_created_at\" timestamptz NOT NULL DEFAULT now()"
                         ",\n  \"_created_by\" bigint REFERENCES loom.users(id) ON DELETE SET NULL"
                         ",\n  \"_updated_at\" timestamptz NOT NULL DEFAULT now()"
                         ",\n  \"_updated_by\" bigint REFERENCES loom.users(id) ON DELETE SET NULL");
        columns(&p, fields, colmap);
        buf_puts(&p.sql, "\n)");
        add_step(p.steps, "create_table", id, NULL, &p.sql);

        size_t k;
        json_t *f;
        json_array_foreach(fields, k, f)
        {
            if (strcmp(json_string_value(json_object_get(f, "type")), "subform") != 0)
                continue;
            const char *sid = json_string_value(json_object_get(f, "id"));
            char child[DDL_NAME_MAX + 1];
            snprintf(tmp, sizeof tmp, "%s__%s", id, sid);
            ddl_physical_name(tmp, child);
            json_t *subcols = json_object();
            buf_puts(&p.sql, "CREATE TABLE ");
            qualified(&p.sql, schema, child);
            buf_puts(&p.sql, " (\n  \"id\" bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n  \"_parent\" bigint NOT NULL REFERENCES ");
            qualified(&p.sql, schema, id);
            buf_puts(&p.sql, " (\"id\") ON DELETE CASCADE,\n  \"_pos\" integer NOT NULL DEFAULT 0");
            columns(&p, json_object_get(f, "fields"), subcols);
            buf_puts(&p.sql, "\n)");
            add_step(p.steps, "create_child_table", id, sid, &p.sql);
            json_object_set_new(subs, sid, json_pack("{s:s, s:o}", "table", child, "columns", subcols));
        }
        json_object_set_new(cat_forms, id, json_pack("{s:s, s:o, s:o}", "table", id, "columns", colmap, "subforms", subs));
    }
    json_array_foreach(forms, i, x)
    {
        const char *id = json_string_value(json_object_get(x, "id"));
        json_t *fields = json_object_get(x, "fields");
        table_constraints(&p, id, id, fields, json_object_get(x, "unique"), json_object_get(x, "indexes"));
        size_t k;
        json_t *f;
        json_array_foreach(fields, k, f)
        {
            if (strcmp(json_string_value(json_object_get(f, "type")), "subform") != 0)
                continue;
            const char *child = json_string_value(json_object_get(
                json_object_get(json_object_get(json_object_get(cat_forms, id), "subforms"),
                                json_string_value(json_object_get(f, "id"))),
                "table"));
            json_t *parent = json_pack("[s]", "_parent");
            unique_or_index(&p, id, child, parent, false);
            json_decref(parent);
            table_constraints(&p, id, child, json_object_get(f, "fields"), NULL, NULL);
        }
    }
    buf_free(&p.sql);
    json_decref(p.used);
    json_decref(flows_by_form);
    return json_pack("{s:s, s:o, s:{s:s, s:o}}", "schema", schema, "steps", p.steps, "catalog", "schema", schema,
                     "forms", cat_forms);
}
