/* db.h - one PostgreSQL connection as a worker uses it.
 *
 * A db owns a PGconn. It connects lazily, notices a broken connection and
 * reconnects on a later call (at most every DB_RETRY_MS), so a database outage
 * turns into LOOM_UNAVAILABLE errors rather than a stuck server. Statements are
 * static db_stmt values, prepared once per connection on first use. Results are
 * registered on the caller's arena and cleared with it. */
#ifndef LOOM_DB_H
#define LOOM_DB_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "core/arena.h"
#include "core/error.h"

#define DB_RETRY_MS 200
#define DB_MAX_STMTS 512
#define DB_TEXT_STMTS 64   /* run-time statements kept prepared per connection */

/* A statement of process lifetime: declare as `static db_stmt s = {.sql = SQL};`. */
typedef struct db_stmt {
    const char *sql;
    atomic_int id;   /* assigned on first use; 0 = not yet */
} db_stmt;

typedef struct db db;

/* Returns a new, not yet connected db for conninfo (a URL or key=value
 * string; copied). Free with db_free(). */
db *db_new(const char *conninfo);
/* Settings (SQL, e.g. "SET synchronous_commit = off") sent on every
 * (re)connect of d, before it is first used. */
void db_set_session(db *d, const char *sql);
/* The message of a statement cancelled by statement_timeout (code
 * LOOM_UNAVAILABLE: the database could not answer in time). */
#define DB_TIMED_OUT "the database did not answer within the statement timeout"
/* Lifts the session's statement timeout for the rest of the transaction
 * (DDL, imports: work that may rightly take long). */
bool db_no_timeout(db *d, arena *a, loom_err *err);
void db_free(db *d);

/* Connects or reconnects when needed. True when the connection is usable. */
bool db_ready(db *d);
/* True while the last call found the connection usable. */
bool db_up(const db *d);
/* The underlying connection, for code that needs libpq directly (borrowed). */
PGconn *db_conn(db *d);

/* Runs a prepared statement with text parameters (NULL = SQL NULL). Returns
 * the result (owned by a) or NULL with *err set: the code comes from the
 * SQLSTATE, the message is PostgreSQL's (for logs, not for clients). */
PGresult *db_query(db *d, arena *a, db_stmt *st, int nparams, const char *const *params, loom_err *err);
/* Runs st once per parameter set (params[i] has nparams values), all in one
 * round trip (libpq pipeline mode) and one implicit transaction (st reads).
 * out[i] is the result (owned by arenas[i]) or NULL with errs[i] set. */
void db_query_many(db *d, arena *const *arenas, db_stmt *st, int nparams, int count,
                   const char *const *const *params, PGresult **out, loom_err *errs);
/* Runs SQL text built at run time (identifiers from the catalog only) with
 * text parameters, like db_query. The DB_TEXT_STMTS most recently used texts
 * stay prepared on the connection, so a list asked again is only executed. */
PGresult *db_query_text(db *d, arena *a, const char *sql, int nparams, const char *const *params, loom_err *err);
/* Runs sql like db_query_text as the last statement of the open
 * transaction, and commits it in the same round trip. The transaction is
 * over when it returns: committed with the statement's result, or rolled
 * back (NULL with *err: the statement's failure, or LOOM_CONFLICT when the
 * commit failed). Outside a transaction it is db_query_text. */
PGresult *db_query_text_commit(db *d, arena *a, const char *sql, int nparams, const char *const *params,
                               loom_err *err);
/* Runs sqls[i] (with nparams[i] params[i]) for each i like db_query_text,
 * all in one round trip and one implicit transaction when the connection is
 * outside a transaction; a statement that fails is run again alone for its
 * own error. When writes, the statements are writes each of which must stand
 * alone: any failure (which rolled back the others) runs every one of them
 * again alone, each its own transaction. */
void db_query_text_many(db *d, arena *const *arenas, int count, const char *const *sqls, const int *nparams,
                        const char *const *const *params, bool writes, PGresult **out, loom_err *errs);
/* Runs SQL text without parameters (transaction control, DDL). */
PGresult *db_exec(db *d, arena *a, const char *sql, loom_err *err);

/* Begins a transaction. BEGIN is not sent on its own: it goes with the
 * transaction's first statement, in the same round trip. */
bool db_begin(db *d, arena *a, loom_err *err);
/* Sends a pending BEGIN now: before using db_conn() directly (COPY). */
bool db_flush_begin(db *d, arena *a, loom_err *err);
/* Begins a read-only transaction whose statements all see one snapshot. */
bool db_begin_snapshot(db *d, arena *a, loom_err *err);
/* Commits; false (with *err) when the transaction had failed and PostgreSQL
 * rolled it back instead. */
bool db_commit(db *d, arena *a, loom_err *err);
/* Rolls back if a transaction is open; never fails. */
void db_rollback(db *d);
bool db_in_tx(const db *d);
/* True inside a transaction where nothing has run yet (its BEGIN still
 * pending): rolling it back then costs nothing and undoes nothing. */
bool db_tx_unused(const db *d);

/* Opens a connection for one-off use (CLI, migrations) with a short connect
 * timeout. Returns NULL and writes PostgreSQL's message into err on failure. */
PGconn *db_connect_once(const char *conninfo, char *err, size_t errlen);

#endif
