/* ddl.h - the PostgreSQL schema of an app, planned from its bundle.
 *
 * Each app gets a schema app_<id>; each form a table with typed columns and
 * the system columns (id, _version, _state when a flow is attached, _owner,
 * _created_at/_by, _updated_at/_by); each subform a child table
 * <form>__<subform> with _parent and _pos; refs are real foreign keys, user
 * fields reference loom.users; unique fields and groups are UNIQUE
 * constraints; index flags, index groups and every ref column get an index.
 * Names longer than PostgreSQL's 63 bytes are cut and end in a hash, and the
 * catalog maps ids to the physical names. Identifiers are always quoted and
 * come only from the validated bundle. */
#ifndef LOOM_DDL_H
#define LOOM_DDL_H

#include <jansson.h>
#include <stdbool.h>

#include "core/buf.h"

#define DDL_NAME_MAX 63

/* A plan: {"schema", "steps": [{"op", "form", "field"?, "sql"}],
 * "destructive": [{"op", "form", "field"?, "detail"}], "checks": [{"form",
 * "field"?, "problem", "sql"}] (queries that count existing rows a step would
 * reject: run them first), "unsupported": [{"form", "field", "change"}],
 * "catalog": {"schema", "forms", "objects"}}. Ops: create_schema,
 * create_table, create_child_table, add_column, widen_column, alter_column,
 * set_initial_state, add_foreign_key, add_unique, create_index, drop_index,
 * drop_constraint, soft_drop_column, soft_drop_table, drop_column, drop_table.
 * Returns a new reference. */

/* The plan that creates the whole schema of a new app from a valid bundle. */
json_t *ddl_plan_create(json_t *bundle);
/* The plan from a published version (its bundle and catalog) to a valid
 * draft that becomes version `version`. Removed fields and forms are soft
 * drops (renamed to _dropped_v<version>_<name>, kept hidden) unless
 * allow_destructive, which drops them; type changes that may lose values are
 * listed under "unsupported". */
json_t *ddl_plan_change(json_t *published, json_t *catalog, json_t *draft, int version, bool allow_destructive);
/* SQL that (re)creates pg_temp.loom_cast_ok(value text, type text): whether
 * value converts to the type. Plans with lossy type changes use it in their
 * checks and steps: run it in the session first. */
extern const char DDL_CAST_HELPER[];

/* A physical name for name: itself when it fits in 63 bytes, else its first
 * 54 bytes, "_" and 8 hex digits of its SHA-256. */
void ddl_physical_name(const char *name, char out[DDL_NAME_MAX + 1]);
/* The SQL type a value of a field type is compared as ("bigint", "numeric",
 * "boolean", "date", "timestamptz", "text"), or NULL for the types that are
 * not compared by value (multiselect, file, subform). */
const char *ddl_compare_type(const char *field_type);
/* The column type of a (non-subform) field: "bigint", "numeric(18,2)",
 * "text[]", ... (tmp holds it when it is built). */
const char *ddl_column_type(json_t *field, char tmp[64]);
/* Appends name as a quoted SQL identifier. */
void ddl_quote(buf *out, const char *name);

#endif
