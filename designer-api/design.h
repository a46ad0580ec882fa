/* design.h - operations on app definitions, shared by the designer HTTP API
 * and `loom app ...`. No HTTP here: each function runs in the caller's open
 * transaction on d, allocates on a, and reports failures through *e (and, for
 * an invalid bundle, the list of problems through *out_errors).
 *
 * Drafts and published versions are stored as the JSON text they were given,
 * so key order survives an export. */
#ifndef LOOM_DESIGN_H
#define LOOM_DESIGN_H

#include <jansson.h>
#include <stdbool.h>

#include "core/arena.h"
#include "core/error.h"
#include "store/db.h"

/* Called before each DDL step of a publish (for progress displays). */
typedef void (*design_progress_fn)(void *udata, size_t step, size_t total, json_t *step_json);

/* Stores bundle as the draft of its app (app.id), creating the app when it
 * does not exist. create_only: fail with LOOM_CONFLICT when it exists.
 * The bundle needs an object "app" with a valid id; the rest may be a work in
 * progress. *out_created tells whether the app is new. */
bool design_save_draft(db *d, arena *a, json_t *bundle, bool create_only, bool *out_created, loom_err *e);

/* The draft of app as text (owned by a), or NULL (LOOM_NOT_FOUND). */
const char *design_draft(db *d, arena *a, const char *app, loom_err *e);

/* The migration from the published version to the draft (the whole schema
 * when nothing is published): {"steps", "destructive", "checks": [{"form",
 * "field", "problem", "rows"}], "unsupported"} with the checks run against
 * the data. An invalid draft fails with LOOM_INVALID_DEFINITION and
 * *out_errors. Returns a new reference. */
json_t *design_plan(db *d, arena *a, const char *app, bool allow_destructive, json_t **out_errors, loom_err *e);

/* Publishes the draft of app through its plan, all in the caller's
 * transaction: an invalid draft fails with LOOM_INVALID_DEFINITION, rows that
 * fail a new constraint with LOOM_VALIDATION_FAILED, a change the plan cannot
 * make yet with LOOM_NOT_IMPLEMENTED (problems in *out_errors, a new
 * reference). A draft equal to the published version publishes nothing and
 * returns {"version": n, "steps": []}. Removed fields and forms are soft
 * drops unless allow_destructive. Returns {"version", "steps",
 * "destructive"} (new reference) and sends NOTIFY loom_meta "<app>:<version>". */
json_t *design_publish(db *d, arena *a, const char *app, const char *note, bool allow_destructive,
                       design_progress_fn progress, void *udata, json_t **out_errors, loom_err *e);

/* Publishes version `version` of app again, as a new version, through the
 * same plan (its bundle becomes the draft first). Errors as design_publish. */
json_t *design_rollback(db *d, arena *a, const char *app, int version, bool allow_destructive, json_t **out_errors,
                        loom_err *e);

/* The bundle text of a published version (version NULL: the latest), owned
 * by a; *out_version receives its number. NULL with LOOM_NOT_FOUND. */
const char *design_version_text(db *d, arena *a, const char *app, const char *version, int *out_version,
                                loom_err *e);

/* [{"version", "published_at", "note", "steps"}] newest first (new reference). */
json_t *design_versions(db *d, arena *a, const char *app, loom_err *e);

/* [{"id", "label", "published_version", "updated_at"}] of every app, or only
 * of the apps in only (an object whose keys are app ids) when given. */
json_t *design_list(db *d, arena *a, json_t *only, loom_err *e);

/* Drops the app's schema and everything Loom keeps about it. */
bool design_delete(db *d, arena *a, const char *app, loom_err *e);
/* Loads bundle's seed data (the published version's bundle and catalog) as
 * the system actor, through the checks of the API, when the app has no
 * records yet (else 0: nothing is loaded). Returns the records written, or
 * -1: *out_errors the problems (validation_failed) or *e the database's
 * failure. design_publish calls it on an app's first publish. */
long design_load_data(db *d, arena *a, const char *app, int version, json_t *bundle, json_t *catalog,
                      json_t **out_errors, loom_err *e);
/* The same with the app's published version (an explicit reload: --data). */
long design_load_published_data(db *d, arena *a, const char *app, json_t **out_errors, loom_err *e);

#endif
