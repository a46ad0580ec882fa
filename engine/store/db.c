/* db.c - connection, reconnection and the per-connection statement cache. */
#include "store/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int next_stmt_id = 1;

/* A statement built at run time, prepared on this connection as "t<slot>". */
typedef struct text_stmt {
    unsigned long long hash;
    char *sql;               /* NULL: the slot is free */
    unsigned long long used; /* for least-recently-used eviction */
} text_stmt;

struct db {
    char *conninfo;
    char *session;               /* settings sent on every (re)connect, or NULL */
    PGconn *conn;
    bool up;
    bool in_tx;
    const char *pending_begin;   /* a BEGIN not sent yet: it travels with the next statement */
    long long last_try_ms;
    unsigned char prepared[DB_MAX_STMTS];
    text_stmt texts[DB_TEXT_STMTS];
    unsigned long long uses;
};

static void texts_forget(db *d)
{
    for (int i = 0; i < DB_TEXT_STMTS; i++) {
        free(d->texts[i].sql);
        d->texts[i].sql = NULL;
    }
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void quiet_notice_cb(void *arg, const char *message)
{
    (void)arg;
    (void)message;   /* NOTICEs ("already exists, skipping") are not for the user */
}

PGconn *db_connect_once(const char *conninfo, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {conninfo, "5", "loom", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        if (err)
            snprintf(err, errlen, "%s", PQerrorMessage(c));
        if (err && *err && err[strlen(err) - 1] == '\n')
            err[strlen(err) - 1] = '\0';
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, quiet_notice_cb, NULL);
    /* generic plans for prepared statements: a keyset page's cursor values change with every request, and
     * PostgreSQL's "auto" kept planning each one again (about 0.1 ms of its CPU a page, half the query) */
    PQclear(PQexec(c, "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; SET plan_cache_mode = force_generic_plan"));
    return c;
}

db *db_new(const char *conninfo)
{
    db *d = calloc(1, sizeof *d);
    if (!d || !(d->conninfo = strdup(conninfo)))
        abort();
    return d;
}

void db_set_session(db *d, const char *sql)
{
    free(d->session);
    if (!(d->session = strdup(sql)))
        abort();
}

bool db_no_timeout(db *d, arena *a, loom_err *err)
{
    return db_exec(d, a, "SET LOCAL statement_timeout = 0", err) != NULL;
}

void db_free(db *d)
{
    if (!d)
        return;
    if (d->conn)
        PQfinish(d->conn);
    texts_forget(d);
    free(d->conninfo);
    free(d->session);
    free(d);
}

bool db_ready(db *d)
{
    if (d->conn && PQstatus(d->conn) == CONNECTION_OK) {
        d->up = true;
        return true;
    }
    long long now = now_ms();
    if (d->last_try_ms && now - d->last_try_ms < DB_RETRY_MS) {
        d->up = false;
        return false;
    }
    d->last_try_ms = now;
    if (d->conn)
        PQfinish(d->conn);
    d->conn = db_connect_once(d->conninfo, NULL, 0);
    if (d->conn && d->session)
        PQclear(PQexec(d->conn, d->session));
    memset(d->prepared, 0, sizeof d->prepared);
    texts_forget(d);
    d->in_tx = false;
    d->up = d->conn != NULL;
    return d->up;
}

bool db_up(const db *d)
{
    return d->up;
}

PGconn *db_conn(db *d)
{
    return d->conn;
}

static void clear_cb(void *p)
{
    PQclear(p);
}

/* Turns a result into success (returned) or an error (NULL, *err set). */
static PGresult *db_result(db *d, arena *a, PGresult *r, loom_err *err)
{
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        arena_defer(a, clear_cb, r);
        return r;
    }
    const char *sqlstate = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg)
        msg = PQerrorMessage(d->conn);
    err->code = loom_code_from_sqlstate(sqlstate);
    err->message = sqlstate && !strcmp(sqlstate, "57014") ? DB_TIMED_OUT : arena_strdup(a, msg ? msg : "could not run query");
    err->path = NULL;
    if (r) {
        const char *cname = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
        if (cname)
            err->path = arena_strdup(a, cname);   /* the constraint, for the caller to map */
    }
    PQclear(r);
    if (PQstatus(d->conn) != CONNECTION_OK) {
        d->up = false;
        d->in_tx = false;
        err->code = LOOM_UNAVAILABLE;
    }
    return NULL;
}

static bool db_check(db *d, loom_err *err)
{
    if (d->conn && PQstatus(d->conn) == CONNECTION_OK)
        return true;
    err->code = LOOM_UNAVAILABLE;
    err->message = "could not reach the database";
    err->path = NULL;
    return false;
}

/* Prepares st on this connection if it is not yet; writes its name. */
static bool stmt_prepare(db *d, arena *a, db_stmt *st, int nparams, char name[16], loom_err *err)
{
    int id = atomic_load(&st->id);
    if (id == 0) {
        int want = atomic_fetch_add(&next_stmt_id, 1);
        /* on failure another thread assigned it, and id now holds its value */
        if (atomic_compare_exchange_strong(&st->id, &id, want))
            id = want;
    }
    if (id >= DB_MAX_STMTS)
        abort();   /* a static limit: raise DB_MAX_STMTS */
    snprintf(name, 16, "s%d", id);
    if (!d->prepared[id]) {
        PGresult *r = PQprepare(d->conn, name, st->sql, nparams, NULL);
        if (!db_result(d, a, r, err))
            return false;
        d->prepared[id] = 1;
    }
    return true;
}

/* Runs prepared statement name; a pending BEGIN goes first in the same
 * round trip (libpq pipeline mode), and when commit, a COMMIT after it
 * (*committed: its tag was COMMIT). Returns the statement's raw result. */
static PGresult *exec_prepared(db *d, const char *name, int nparams, const char *const *params, bool commit,
                               bool *committed)
{
    if (!d->pending_begin && !commit)
        return PQexecPrepared(d->conn, name, nparams, params, NULL, NULL, 0);
    const char *begin_sql = d->pending_begin;
    d->pending_begin = NULL;
    if (PQenterPipelineMode(d->conn) != 1)
        return NULL;
    PGresult *out = NULL;
    bool ok = (!begin_sql || PQsendQueryParams(d->conn, begin_sql, 0, NULL, NULL, NULL, NULL, 0) == 1) &&
              PQsendQueryPrepared(d->conn, name, nparams, params, NULL, NULL, 0) == 1 &&
              (!commit || PQsendQueryParams(d->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) == 1) &&
              PQpipelineSync(d->conn) == 1;
    if (ok && begin_sql) {
        PGresult *b = PQgetResult(d->conn);
        ok = b && PQresultStatus(b) == PGRES_COMMAND_OK;
        PQclear(b);
        PQclear(PQgetResult(d->conn));   /* the NULL that ends BEGIN */
    }
    if (ok) {
        out = PQgetResult(d->conn);
        if (out)
            PQclear(PQgetResult(d->conn));   /* the NULL that ends the statement */
    }
    if (ok && commit) {   /* aborted when the statement failed; ROLLBACK as its tag when the commit did */
        PGresult *c = PQgetResult(d->conn);
        *committed = c && PQresultStatus(c) == PGRES_COMMAND_OK && !strcmp(PQcmdStatus(c), "COMMIT");
        if (c)
            PQclear(PQgetResult(d->conn));
        PQclear(c);
    }
    if (ok) {
        PGresult *sync = PQgetResult(d->conn);
        ok = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
        PQclear(sync);
    }
    if (PQexitPipelineMode(d->conn) != 1 || !ok) {
        PQclear(out);
        return NULL;   /* db_result sees the broken connection */
    }
    return out;
}

PGresult *db_query(db *d, arena *a, db_stmt *st, int nparams, const char *const *params, loom_err *err)
{
    char name[16];
    if (!db_check(d, err) || !stmt_prepare(d, a, st, nparams, name, err))
        return NULL;
    return db_result(d, a, exec_prepared(d, name, nparams, params, false, NULL), err);
}

/* The slot of sql in the text statement cache, prepared; -1 with *err set. */
static int text_slot(db *d, arena *a, const char *sql, int nparams, loom_err *err)
{
    unsigned long long h = 14695981039346656037ull;   /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    int victim = 0;
    for (int i = 0; i < DB_TEXT_STMTS; i++) {
        text_stmt *t = &d->texts[i];
        if (t->sql && t->hash == h && !strcmp(t->sql, sql)) {
            t->used = ++d->uses;
            return i;
        }
        if (!t->sql || (d->texts[victim].sql && t->used < d->texts[victim].used))
            victim = i;
    }
    char name[16];
    snprintf(name, sizeof name, "t%d", victim);
    text_stmt *t = &d->texts[victim];
    if (t->sql) {   /* evict the least recently used */
        char dealloc[32];
        snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", name);
        if (!db_result(d, a, PQexec(d->conn, dealloc), err))
            return -1;
        free(t->sql);
        t->sql = NULL;
    }
    if (!db_result(d, a, PQprepare(d->conn, name, sql, nparams, NULL), err))
        return -1;
    if (!(t->sql = strdup(sql)))
        abort();
    t->hash = h;
    t->used = ++d->uses;
    return victim;
}

PGresult *db_query_text(db *d, arena *a, const char *sql, int nparams, const char *const *params, loom_err *err)
{
    if (!db_check(d, err))
        return NULL;
    for (int attempt = 0;; attempt++) {
        int slot = text_slot(d, a, sql, nparams, err);
        if (slot < 0)
            return NULL;
        char name[16];
        snprintf(name, sizeof name, "t%d", slot);
        PGresult *r = exec_prepared(d, name, nparams, params, false, NULL);
        const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        /* a publish changed a column's type under the cached plan: prepare it again, once (not inside a
         * transaction, which the error has aborted) */
        if (attempt == 0 && !d->in_tx && st && !strcmp(st, "0A000")) {
            PQclear(r);
            PQclear(PQexec(d->conn, arena_printf(a, "DEALLOCATE %s", name)));
            free(d->texts[slot].sql);
            d->texts[slot].sql = NULL;
            continue;
        }
        return db_result(d, a, r, err);
    }
}

PGresult *db_query_text_commit(db *d, arena *a, const char *sql, int nparams, const char *const *params,
                               loom_err *err)
{
    if (!d->in_tx)
        return db_query_text(d, a, sql, nparams, params, err);
    if (!db_check(d, err))
        return NULL;
    int slot = text_slot(d, a, sql, nparams, err);
    PGresult *r = NULL;
    if (slot >= 0) {
        char name[16];
        bool committed = false;
        snprintf(name, sizeof name, "t%d", slot);
        r = db_result(d, a, exec_prepared(d, name, nparams, params, true, &committed), err);
        if (r && !committed) {
            r = NULL;
            *err = (loom_err){.code = LOOM_CONFLICT, .message = "transaction was rolled back"};
        }
    }
    if (!r && d->in_tx && !d->pending_begin && PQstatus(d->conn) == CONNECTION_OK)
        PQclear(PQexec(d->conn, "ROLLBACK"));   /* the statement failed: its transaction is aborted */
    d->in_tx = false;
    d->pending_begin = NULL;
    return r;
}

/* Sends the prepared statements names[0..count-1] (each with its own
 * parameters) in one pipeline and reads their results into out. They are one
 * implicit transaction, committed at the pipeline's end. A statement that a
 * failure before it aborted, or that failed itself when redo_failed, is left
 * NULL with redo[i] set, for the caller to run again alone; when atomic (the
 * statements write), any failure rolled all of them back, so all are left to
 * run again. False when the connection broke or its state is unknown: then it
 * is dropped, and every statement without a result (every one, when atomic:
 * whether they committed is not known) has errs[i] set. */
static bool pipeline(db *d, arena *const *arenas, int count, const char (*names)[16], const int *nparams,
                     const char *const *const *params, bool redo_failed, bool atomic, PGresult **out, loom_err *errs,
                     bool *redo)
{
    for (int i = 0; i < count; i++) {
        out[i] = NULL;
        redo[i] = false;
    }
    bool sent = PQenterPipelineMode(d->conn) == 1;
    for (int i = 0; i < count && sent; i++)
        sent = PQsendQueryPrepared(d->conn, names[i], nparams[i], params[i], NULL, NULL, 0) == 1;
    if (sent && PQpipelineSync(d->conn) == 1) {
        for (int i = 0; i < count; i++) {
            PGresult *r = PQgetResult(d->conn);
            ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
            redo[i] = st == PGRES_PIPELINE_ABORTED ||
                      (redo_failed && st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && PQstatus(d->conn) == CONNECTION_OK);
            if (redo[i])
                PQclear(r);
            else
                out[i] = db_result(d, arenas[i], r, &errs[i]);
            PQclear(PQgetResult(d->conn));   /* the NULL that ends each query */
        }
        PGresult *sync = PQgetResult(d->conn);
        bool synced = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
        PQclear(sync);
        if (synced && PQexitPipelineMode(d->conn) == 1) {
            bool failed = false;
            for (int i = 0; atomic && i < count; i++)
                failed = failed || !out[i];
            for (int i = 0; failed && i < count; i++) {   /* rolled back: the results before the failure too */
                out[i] = NULL;
                redo[i] = true;
            }
            return true;
        }
    }
    PQfinish(d->conn);
    d->conn = NULL;
    d->up = false;
    for (int i = 0; i < count; i++) {
        if (out[i] && !atomic)
            continue;
        out[i] = NULL;
        redo[i] = false;
        errs[i].code = LOOM_UNAVAILABLE;
        errs[i].message = "could not reach the database";
        errs[i].path = NULL;
    }
    return false;
}

void db_query_many(db *d, arena *const *arenas, db_stmt *st, int nparams, int count,
                   const char *const *const *params, PGresult **out, loom_err *errs)
{
    char names[count][16];
    int np[count];
    for (int i = 0; i < count; i++)
        out[i] = NULL;
    if (!db_check(d, &errs[0]) || !db_flush_begin(d, arenas[0], &errs[0]) ||
        !stmt_prepare(d, arenas[0], st, nparams, names[0], &errs[0])) {
        for (int i = 1; i < count; i++)
            errs[i] = errs[0];
        return;
    }
    bool redo[count];
    for (int i = 0; i < count; i++) {
        memcpy(names[i], names[0], 16);
        np[i] = nparams;
    }
    if (count > 1 && pipeline(d, arenas, count, (const char (*)[16])names, np, params, false, false, out, errs, redo)) {
        for (int i = 0; i < count; i++)   /* a failure aborts the rest of a pipeline: those run again alone */
            if (redo[i])
                out[i] = db_query(d, arenas[i], st, nparams, params[i], &errs[i]);
    } else if (count == 1) {
        out[0] = db_query(d, arenas[0], st, nparams, params[0], &errs[0]);
    }
}

void db_query_text_many(db *d, arena *const *arenas, int count, const char *const *sqls, const int *nparams,
                        const char *const *const *params, bool writes, PGresult **out, loom_err *errs)
{
    char names[count][16];
    bool redo[count], piped = count > 1 && db_check(d, &errs[0]) && !d->pending_begin && !d->in_tx;
    /* every text prepared first (a batch needs fewer slots than there are, so none evicts another) */
    for (int i = 0; piped && i < count; i++) {
        int slot = text_slot(d, arenas[i], sqls[i], nparams[i], &errs[i]);
        piped = slot >= 0;
        snprintf(names[i], 16, "t%d", slot);
    }
    if (piped)   /* when the connection breaks, the results read before stay, the others are its errors */
        pipeline(d, arenas, count, (const char (*)[16])names, nparams, params, true, writes, out, errs, redo);
    for (int i = 0; i < count; i++)   /* a failure (a plan a publish changed, say) runs alone: its own answer */
        if (!piped || redo[i])
            out[i] = db_query_text(d, arenas[i], sqls[i], nparams[i], params[i], &errs[i]);
}

PGresult *db_exec(db *d, arena *a, const char *sql, loom_err *err)
{
    if (!db_check(d, err))
        return NULL;
    if (d->pending_begin) {   /* both in one simple query: one round trip */
        char *both = arena_printf(a, "%s; %s", d->pending_begin, sql);
        d->pending_begin = NULL;
        return db_result(d, a, PQexec(d->conn, both), err);
    }
    return db_result(d, a, PQexec(d->conn, sql), err);
}

bool db_flush_begin(db *d, arena *a, loom_err *err)
{
    if (!d->pending_begin)
        return true;
    const char *sql = d->pending_begin;
    d->pending_begin = NULL;
    return db_result(d, a, PQexec(d->conn, sql), err) != NULL;
}

/* A transaction begins with its first statement: BEGIN is sent with it. */
static bool begin(db *d, arena *a, const char *sql, loom_err *err)
{
    (void)a;
    if (!db_check(d, err))
        return false;
    d->pending_begin = sql;
    d->in_tx = true;
    return true;
}

bool db_begin(db *d, arena *a, loom_err *err)
{
    return begin(d, a, "BEGIN", err);
}

bool db_begin_snapshot(db *d, arena *a, loom_err *err)
{
    return begin(d, a, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err);
}

bool db_commit(db *d, arena *a, loom_err *err)
{
    if (d->pending_begin) {   /* nothing ran: nothing to commit */
        d->pending_begin = NULL;
        d->in_tx = false;
        return true;
    }
    PGresult *r = db_exec(d, a, "COMMIT", err);
    d->in_tx = false;
    if (!r)
        return false;
    if (strcmp(PQcmdStatus(r), "COMMIT") != 0) {
        err->code = LOOM_CONFLICT;
        err->message = "transaction was rolled back";
        err->path = NULL;
        return false;
    }
    return true;
}

void db_rollback(db *d)
{
    if (!d->in_tx)
        return;
    d->in_tx = false;
    if (d->pending_begin) {
        d->pending_begin = NULL;
        return;
    }
    if (d->conn && PQstatus(d->conn) == CONNECTION_OK)
        PQclear(PQexec(d->conn, "ROLLBACK"));
}

bool db_in_tx(const db *d)
{
    return d->in_tx;
}

bool db_tx_unused(const db *d)
{
    return d->in_tx && d->pending_begin;
}
