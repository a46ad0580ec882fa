/* filter.h - the filter language (definitions: Filters) compiled to one
 * parameterised SQL condition.
 *
 * Identifiers come only from the catalog (quoted); every value is a
 * parameter, coerced by its field's type first. A path goes through refs
 * (into forms the caller may read) and subforms with EXISTS subqueries; a
 * hidden field is the same unknown_field as one that does not exist, so a
 * filter never probes a hidden value. */
#ifndef LOOM_FILTER_H
#define LOOM_FILTER_H

#include <jansson.h>
#include <stdbool.h>

#include "core/buf.h"
#include "core/error.h"

typedef struct filter_ctx {
    json_t *bundle;         /* the published bundle */
    const char *schema;     /* the app's schema */
    json_t *roles;          /* the caller's app roles; NULL with system = true */
    bool admin;             /* platform admin */
    bool system;            /* rules and permissions themselves: no field is hidden */
    long long me;           /* the caller's user id, for {"$me": true} */
    const char *timezone;   /* the app's, for {"$today": ...} */
    json_t *params;         /* report parameters by id, for {"$param": id}, or NULL */
    bool check;             /* only check the filter (publishing): parameters and {"$field": f} stand for
                               values not known yet, so $param needs only the id in params */
    const char *field_form; /* the form {"$field": f} names a field of (ref filters), or NULL */
    json_t *field_values;   /* at run time: the record {"$field": f} reads (a ref filter on a write), or NULL */
} filter_ctx;

typedef struct filter_err {
    loom_code code;      /* LOOM_BAD_FILTER, LOOM_UNKNOWN_FIELD or LOOM_NOT_FOUND */
    char message[256];
    char path[512];      /* a JSON Pointer into the filter */
} filter_err;

/* Appends the condition of filter over the rows of form (aliased alias) to
 * sql; values go to args (an array of strings or nulls, $1 = args[0]).
 * Returns false with err filled in. A form the caller may not read is
 * LOOM_NOT_FOUND. */
bool filter_sql(const filter_ctx *c, const char *form, const char *alias, json_t *filter, buf *sql, json_t *args,
                filter_err *err);

/* Appends the condition that admits the rows of form (aliased alias) a
 * scope of perm_decide() admits: an array of alternatives ("all", "own",
 * "team", {"filter": ...}), or NULL for none. Permission filters see every
 * field. False only when a permission filter is bad, which publishing
 * prevents. */
bool filter_scope_sql(const filter_ctx *c, const char *form, const char *alias, json_t *scope, buf *sql,
                      json_t *args, filter_err *err);

#endif
