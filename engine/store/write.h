/* write.h - writing one record of a published form: create, update, delete,
 * inside the caller's transaction, with everything the contract asks of a
 * write (definitions: Forms, "order of work"):
 *
 *   field modes and system fields -> coercion and validation (every problem
 *   at once) -> defaults -> formulas (subform rows, then the record, in
 *   dependency order) -> conditional required, visible_when, checks -> refs
 *   and users checked in the database (a ref the caller cannot read is
 *   not_found) -> autonumbers -> the row, its child rows and the history
 *   entry.
 *
 * An update locks the row, answers 412 for a stale If-Match, merges the
 * changed fields into the stored record (subform rows: with an id updated,
 * without inserted, missing deleted) and must leave the record inside the
 * caller's update scope. A change that changes nothing writes nothing. In a
 * flow, a plain update changes only what the record's state leaves editable.
 * Before/after rules join this order with the rule engine. */
#ifndef LOOM_WRITE_H
#define LOOM_WRITE_H

#include <jansson.h>
#include <stdbool.h>

#include "core/arena.h"
#include "core/error.h"
#include "rule/sandbox.h"
#include "store/db.h"
#include "store/filter.h"

typedef struct write_ctx {
    const filter_ctx *fc;   /* the caller: bundle, schema, roles, admin, me, timezone */
    json_t *catalog;        /* the published catalog (constraint names) */
    const struct form_tables *tables;   /* the snapshot's field tables, or NULL (each write reads its own) */
    db *db;
    arena *a;
    sandbox *sb;            /* the thread's sandbox */
    const char *app;        /* the app's id */
    int version;            /* its published version: compiled expressions are cached under it */
    const char *locale;     /* the language of check messages */
    char now[24], today[12];   /* the transaction's clock once write_fix_clock read it, else empty */
    bool last;              /* the caller runs nothing in the transaction after the write, and responds from
                               what it returns: an update or transition whose last statement is its row's may
                               send COMMIT with it (then the transaction is over when the write returns) */
} write_ctx;

typedef struct write_result {
    loom_code code;         /* LOOM_OK, else the failure */
    char message[256];      /* its detail */
    json_t *errors;         /* [{path, code, message}] (owned; write_result_free) or NULL */
    bool from_db;           /* the failure is db's, a statement that failed unexpectedly */
    loom_err db;
    long long id, version;  /* the record and its _version after the write */
    json_t *approval;       /* a transition that waits for approvers, or a decision: the approval (owned) */
    json_t *record;         /* create: the record as the caller reads it, when that is known without a
                               read (owned; write_result_free), else NULL */
    bool unchanged;         /* an update whose body changed nothing: nothing written */
} write_result;

/* Creates a record of form from body (a JSON object). */
bool write_create(const write_ctx *w, const char *form, json_t *body, write_result *out);
/* A create that is one statement, left for the caller to run. */
typedef struct write_pending write_pending;
/* Like write_create, but when pending is not NULL and the create turns out
 * to be one statement (nothing read from the database on the way, which
 * leaves the transaction begun on w->db unused; no subform rows, files or
 * flow state to write after it; the record readable to the caller whole),
 * returns true with *pending set instead of running it: the caller rolls
 * the unused transaction back, runs write_pending_sql outside any
 * transaction (alone, or in one round trip with others' statements), and
 * ends with write_create_done. *pending lives as long as w->a. */
bool write_create_plan(const write_ctx *w, const char *form, json_t *body, write_pending **pending,
                       write_result *out);
/* The statement of a pending create and its text parameters. */
const char *write_pending_sql(const write_pending *p, int *nparams, const char ***params);
/* Ends a pending create with its statement's result r (NULL: it failed
 * with e), as write_create would have. */
bool write_create_done(write_pending *p, PGresult *r, const loom_err *e, write_result *out);
/* Updates record id (digits) with the fields of body; if_match < 0: no
 * If-Match was sent. */
bool write_update(const write_ctx *w, const char *form, const char *id, json_t *body, long long if_match,
                  write_result *out);
/* Takes transition (an id of the form's flow) on record id: the record
 * locked, its state checked (409 state_changed), the caller checked against
 * allowed (403; read access is needed as for any write), the input values
 * (only the transition's input fields, writable whatever their mode, never
 * hidden ones) checked as an update's, the guard over the record with them
 * (422 transition_not_allowed), set, formulas and checks, requires; then
 * the new state, a new visit and one history entry (from, to, transition,
 * comment, the changed fields). values may be NULL; if_match >= 0: the
 * record must be at that version (412). A transition with an
 * approval, once all of that holds, only starts it: the approvers fixed
 * (422 transition_not_allowed when too few are eligible), the record left
 * as it is, out->approval the pending approval. While one is pending, no
 * transition starts and its input fields cannot change (409
 * approval_pending). */
bool write_transition(const write_ctx *w, const char *form, const char *id, const char *transition, json_t *values,
                      const char *comment, long long if_match, write_result *out);
/* Decides (decision "approve" or "reject") the approval pending on record
 * id as one of its approvers (403 otherwise; 409 conflict when none is
 * pending or the caller has decided already). When the quorum approves, the
 * transition completes as its requester with the values given at the start,
 * guard, requires and validation checked again (failing: status "failed");
 * when it can no longer be reached, the approval is rejected and the record
 * moves to reject_to, if the approval names one. out->approval says how it
 * stands; every decision is in the history. */
bool write_decide(const write_ctx *w, const char *form, const char *id, const char *decision, const char *comment,
                  write_result *out);
/* The transitions the caller may take on record id now (its state, their
 * allowed): *actions [{id, label, to, input, requires}] (owned), input
 * without the fields hidden from the caller (none while an approval is
 * pending: out->approval); *may_update when a plain update could change a
 * field (the update scope admits the record, and the caller writes a field
 * its state lets change), *may_delete when the delete scope admits it. A
 * record outside the caller's read scope is 404. */
bool write_actions(const write_ctx *w, const char *form, const char *id, json_t **actions, bool *may_update,
                   bool *may_delete, write_result *out);
/* A timer of kind "sla" or "timeout" scheduled for record id's visit
 * number visit of state has fallen due: when the record is still in that
 * visit, its breach is written to the history and run as the
 * system, in order: notify (in-app notifications to the assignee form's
 * users), set (an update that ignores editable), transition (which first
 * cancels a pending approval; a timeout is one transition). A record gone
 * or moved on is nothing to do. w's caller is the system (admin, system,
 * me 0). */
bool write_fire(const write_ctx *w, const char *form, const char *id, const char *kind, const char *state, int visit,
                write_result *out);
/* Deletes record id. */
bool write_delete(const write_ctx *w, const char *form, const char *id, long long if_match, write_result *out);
void write_result_free(write_result *r);

typedef struct write_import_opts {
    bool upsert;          /* rows whose key matches a record update it */
    const char *key;      /* upsert: a unique field, or "id" (a checked field id) */
    bool partial;         /* write the good rows even when others fail */
    bool validate_only;   /* check the rows, write nothing (an earlier batch failed) */
} write_import_opts;

typedef struct write_import_result {
    long inserted, updated, unchanged;   /* unchanged: rows whose key found a record they left as it was */
    json_t *errors;       /* [{row, field, code, message}], appended to (the caller's) */
} write_import_result;

/* Imports bodies (JSON objects, or null for a row the caller found wrong
 * and reported; the first is data row first_row) into form
 * as one batch. Inserts check every row as write_create does, refs and
 * users of all rows in one query, then write the good rows with COPY (ids
 * and autonumbers reserved up front, subform rows, history); a clash only
 * the database sees sends the batch through write_create row by row, so
 * the row is known. Upserts update the records their keys find in bulk
 * as well (each row checked as write_update does), new rows as inserts.
 * Row problems go to res->errors, in the order they are found (see
 * write_import_sort_errors); false only when the import as a whole failed
 * (out says why). */
bool write_import(const write_ctx *w, const char *form, json_t *bodies, long first_row, const write_import_opts *o,
                  write_import_result *res, write_result *out);
/* Sorts an import's problems by row, those of one row in the order found. */
void write_import_sort_errors(json_t *errors);
/* Appends an import problem {row, field ("" for the whole row; row 0: the header), code, message} to into. */
void write_import_problem(json_t *into, long row, const char *field, const char *code, const char *message);

/* An insert batch of an import between its two steps: write_import_check
 * checks the rows, write_import_store verifies their refs and unique keys
 * and writes them. The check needs no database when
 * write_import_check_offloadable says so: it may then run on another
 * thread (with a write_ctx of its own: its own sandbox) while the store of
 * the batch before it runs. write_import is the two in a row. */
typedef struct write_import_batch {
    json_t *bodies;       /* the rows as given */
    long first_row;       /* the data row of the first */
    json_t *recs;         /* the rows that passed, checked */
    long *rownum;         /* the data row of each of recs */
    json_t *links;        /* the refs and users of recs, to verify */
    json_t *errors;       /* the other rows' problems, [{row, field, code, message}] */
    write_result out;     /* a failure of the batch as a whole */
} write_import_batch;

bool write_import_check(const write_ctx *w, const char *form, json_t *bodies, long first_row, write_import_batch *b);
bool write_import_store(const write_ctx *w, const char *form, write_import_batch *b, const write_import_opts *o,
                        write_import_result *res, write_result *out);
/* Whether write_import_check of form needs no database: no file fields,
 * and the clock fixed (write_fix_clock). */
bool write_import_check_offloadable(const write_ctx *w, const char *form);
void write_import_batch_free(write_import_batch *b);
/* Reads the transaction's clock into w, so that writes with w take it from
 * there (w must not outlive the transaction). False with out on a database failure. */
bool write_fix_clock(write_ctx *w, write_result *out);

#endif
