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

#include "core/buf.h"

#define DDL_NAME_MAX 63

/* The plan that creates the whole schema of a new app from a valid bundle:
 * {"schema", "steps": [{"op", "form", "field"?, "sql"}], "catalog"}. Ops:
 * create_schema, create_table, create_child_table, add_foreign_key,
 * add_unique, create_index. Returns a new reference. */
json_t *ddl_plan_create(json_t *bundle);
/* A physical name for name: itself when it fits in 63 bytes, else its first
 * 54 bytes, "_" and 8 hex digits of its SHA-256. */
void ddl_physical_name(const char *name, char out[DDL_NAME_MAX + 1]);
/* Appends name as a quoted SQL identifier. */
void ddl_quote(buf *out, const char *name);

#endif
