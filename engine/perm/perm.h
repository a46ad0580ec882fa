/* perm.h - the one permission decision (definitions: Permissions).
 *
 * perm_decide() answers, for a caller (its app roles, and whether it is a
 * platform admin) and a form: may it create; which records it may read,
 * update, delete (a scope); and each field's mode. Deny by default: a caller
 * whose roles have no entry for the form (nor "*") may do nothing. Several
 * roles give the union: the widest scope, the most open field mode. The app
 * role "admin" and platform admins may do everything. Every path that
 * touches records (lists, filters, sorts, history, exports, reports) asks
 * this, and nothing else. */
#ifndef LOOM_PERM_H
#define LOOM_PERM_H

#include <jansson.h>
#include <stdbool.h>

typedef enum { FIELD_HIDDEN, FIELD_READ, FIELD_WRITE } perm_mode;

typedef struct perm_decision {
    bool create;
    /* Scopes: NULL = none; otherwise an array of alternatives, any of which
     * admits a record: "all", "own", "team", or {"filter": ...}. "all"
     * alone when any role has it. */
    json_t *read, *update, *remove;
    json_t *modes;   /* field id (and "subform.field") -> "write" | "read" | "hidden" */
} perm_decision;

/* Decides for form (an id of bundle's forms). roles: the caller's app roles
 * (an array of strings, may be NULL). The caller frees with perm_free(). */
void perm_decide(json_t *bundle, const char *form, json_t *roles, bool platform_admin, perm_decision *out);
void perm_free(perm_decision *d);
/* The mode of a field ("parts.unit_cost" for a subform field). */
perm_mode perm_field(const perm_decision *d, const char *field);
/* True when scope admits every record. */
bool perm_scope_all(json_t *scope);
/* What d allows, for a client to show: {"create": bool, "read", "update",
 * "delete"}, each scope false (none), "all", or the kinds of its
 * alternatives (["own"], ["team", "filter"]: some records; never a
 * filter's conditions). */
json_t *perm_summary(const perm_decision *d);
/* The warnings about a valid bundle's permissions, [{"path", "code",
 * "message"}]: unreadable_ref when a role may write a ref field (creating or
 * updating its form) but reads no record of the ref's form; unwritable_required
 * when a role may create a form but not write one of its required fields. */
json_t *perm_warnings(json_t *bundle);

#endif
