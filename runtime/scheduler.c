/* scheduler.c - see scheduler.h. */
#include "scheduler.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/secret.h"
#include "rule/sandbox.h"
#include "store/jobs.h"
#include "store/write.h"
#include "http.h"   /* http_now */

#define CLAIM_BATCH 64
#define IDLE_MS 5000   /* the longest sleep: a lease that runs out is noticed by then */
#define PURGE_S 600    /* how often what has expired is deleted */

struct scheduler {
    pthread_t thread;
    atomic_bool stop;
    int wake[2];              /* a byte on it ends the wait: stop */
    char conninfo[1024];
    meta *meta;
    char runner[64];          /* this server, in leases */
    db *db;
    sandbox *sb;
    PGconn *listen;           /* LISTEN loom_jobs */
    atomic_ullong done, failed;
};

/* Runs claimed job i of r in a transaction of its own. */
static void run_job(scheduler *s, PGresult *r, int i)
{
    const char *id = PQgetvalue(r, i, JOB_ID), *kind = PQgetvalue(r, i, JOB_KIND), *app = PQgetvalue(r, i, JOB_APP);
    arena *a = arena_new();
    loom_err e = {0};
    bool held = false, ok = db_begin(s->db, a, &e) && jobs_lock(s->db, a, id, s->runner, &held, &e);
    char why[300] = "";
    if (ok && held) {
        app_snapshot *snap = meta_get(s->meta, app);
        if (!snap) {
            ok = false;
            snprintf(why, sizeof why, "app %s is not published here (yet)", app);
        } else if (strcmp(kind, "sla") && strcmp(kind, "timeout")) {
            ok = false;
            snprintf(why, sizeof why, "no such kind of job: %s", kind);
        } else {
            json_t *a0 = json_object_get(snap->bundle, "app");
            const char *tz = json_string_value(json_object_get(a0, "timezone"));
            json_t *roles = json_array();
            filter_ctx fc = {.bundle = snap->bundle,
                             .schema = json_string_value(json_object_get(snap->catalog, "schema")),
                             .roles = roles,
                             .admin = true,
                             .system = true,
                             .timezone = tz ? tz : "UTC"};
            write_ctx w = {.fc = &fc, .catalog = snap->catalog, .tables = snap->tables, .db = s->db, .a = a, .sb = s->sb, .app = snap->id,
                           .version = snap->version,
                           .locale = json_string_value(json_array_get(json_object_get(a0, "locales"), 0))};
            write_result out;
            ok = write_fire(&w, PQgetvalue(r, i, JOB_FORM), PQgetvalue(r, i, JOB_RECORD), kind, PQgetvalue(r, i, JOB_STATE),
                            atoi(PQgetvalue(r, i, JOB_VISIT)), &out);
            if (!ok) {
                e = out.from_db ? out.db : (loom_err){0};
                snprintf(why, sizeof why, "%s: %s", loom_code_name(out.code), out.from_db && out.db.message ? out.db.message : out.message);
            }
            write_result_free(&out);
            json_decref(roles);
            snapshot_release(snap);
        }
    }
    if (ok && held)
        ok = jobs_done(s->db, a, id, &e) && db_commit(s->db, a, &e);
    if (ok && held)
        atomic_fetch_add(&s->done, 1);
    if (!held || !ok)
        db_rollback(s->db);
    if (!ok) {
        if (!*why)
            snprintf(why, sizeof why, "%s", e.message ? e.message : "the database failed");
        loom_err e2 = {0};
        jobs_retry(s->db, a, id, s->runner, why, &e2);
        atomic_fetch_add(&s->failed, 1);
        log_json(LOG_WARN, "job failed", json_pack("{s:s, s:s, s:s, s:s}", "job", id, "kind", kind, "app", app, "error", why));
    }
    arena_free(a);
}

/* Claims and runs a batch; the number claimed. */
static int run_due(scheduler *s)
{
    arena *a = arena_new();
    loom_err e = {0};
    PGresult *r = jobs_claim(s->db, a, s->runner, CLAIM_BATCH, &e);
    int n = r ? PQntuples(r) : 0, i = 0;
    for (; i < n && !atomic_load(&s->stop); i++)
        run_job(s, r, i);
    if (i < n) {   /* stopping: what is left goes back at once */
        buf ids = {0};
        buf_puts(&ids, "{");
        for (int k = i; k < n; k++)
            buf_printf(&ids, "%s%s", k > i ? "," : "", PQgetvalue(r, k, JOB_ID));
        buf_puts(&ids, "}");
        jobs_release(s->db, a, ids.data, s->runner, &e);
        buf_free(&ids);
    }
    arena_free(a);
    return n;
}

static void listen_up(scheduler *s)
{
    if (s->listen && PQstatus(s->listen) == CONNECTION_OK)
        return;
    if (s->listen)
        PQfinish(s->listen);
    char err[256];
    s->listen = db_connect_once(s->conninfo, err, sizeof err);
    PGresult *r = s->listen ? PQexec(s->listen, "LISTEN loom_jobs") : NULL;
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        PQfinish(s->listen);
        s->listen = NULL;
    }
    PQclear(r);
}

/* What has outlived its use: idempotency keys past their 24 hours, and
 * sessions a week past their end (a user who signs in again clears their
 * own; these are the others'). A few thousand rows a statement, so that no
 * statement holds much; several servers doing it at once is harmless. */
static void purge(scheduler *s)
{
    static const char *const sql[] = {
        "DELETE FROM loom.idempotency WHERE ctid IN (SELECT ctid FROM loom.idempotency "
        "WHERE created_at < now() - interval '24 hours' LIMIT 5000)",
        "DELETE FROM loom.sessions WHERE ctid IN (SELECT ctid FROM loom.sessions "
        "WHERE expires_at < now() - interval '7 days' LIMIT 5000)",
    };
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        long gone = 0, n;
        do {
            arena *a = arena_new();
            loom_err e = {0};
            PGresult *r = db_exec(s->db, a, sql[i], &e);
            n = r ? atol(PQcmdTuples(r)) : 0;
            gone += n;
            arena_free(a);
        } while (n == 5000 && !atomic_load(&s->stop));
        if (gone)
            log_json(LOG_INFO, "purged", json_pack("{s:s, s:I}", "what", i ? "sessions" : "idempotency keys", "rows",
                                                   (json_int_t)gone));
    }
}

static void *scheduler_main(void *arg)
{
    scheduler *s = arg;
    double purged = 0;   /* when, monotonic seconds: at start, then every PURGE_S */
    while (!atomic_load(&s->stop)) {
        listen_up(s);
        long wait = 1000;   /* the database is away: look again in a second */
        if (db_ready(s->db)) {
            if (http_now() - purged >= PURGE_S || !purged) {
                purge(s);
                purged = http_now();
            }
            while (run_due(s) == CLAIM_BATCH && !atomic_load(&s->stop))
                ;
            arena *a = arena_new();
            loom_err e = {0};
            wait = jobs_wait_ms(s->db, a, s->listen ? IDLE_MS : 1000, &e);
            arena_free(a);
            if (wait < 0)
                wait = 1000;
        }
        if (wait == 0)
            continue;
        struct pollfd fds[2] = {{.fd = s->wake[0], .events = POLLIN}, {.fd = s->listen ? PQsocket(s->listen) : -1, .events = POLLIN}};
        if (poll(fds, 2, (int)wait) < 0 && errno != EINTR)
            break;
        if (s->listen && PQconsumeInput(s->listen)) {
            PGnotify *n;
            while ((n = PQnotifies(s->listen)))
                PQfreemem(n);
        }
    }
    return NULL;
}

scheduler *scheduler_start(const char *conninfo, meta *m)
{
    scheduler *s = calloc(1, sizeof *s);
    if (!s || pipe(s->wake) != 0) {
        free(s);
        return NULL;
    }
    snprintf(s->conninfo, sizeof s->conninfo, "%s", conninfo);
    s->meta = m;
    char host[32] = "", rnd[12];
    unsigned char bytes[6];
    gethostname(host, sizeof host - 1);
    secret_random(bytes, sizeof bytes);
    secret_base64url(bytes, sizeof bytes, rnd);
    snprintf(s->runner, sizeof s->runner, "%s:%d:%s", host, (int)getpid(), rnd);
    s->db = db_new(conninfo);
    /* a timer's transaction waits for no disk flush: one lost in a crash goes with its job's "done" and
     * every change it made (as if it had rolled back), so the job fires again: still once */
    db_set_session(s->db, "SET synchronous_commit = off");
    s->sb = sandbox_new(NULL);
    if (pthread_create(&s->thread, NULL, scheduler_main, s) != 0) {
        db_free(s->db);
        sandbox_free(s->sb);
        close(s->wake[0]);
        close(s->wake[1]);
        free(s);
        return NULL;
    }
    return s;
}

void scheduler_counts(scheduler *s, unsigned long long *done, unsigned long long *failed)
{
    *done = s ? atomic_load(&s->done) : 0;
    *failed = s ? atomic_load(&s->failed) : 0;
}

void scheduler_stop(scheduler *s)
{
    if (!s)
        return;
    atomic_store(&s->stop, true);
    ssize_t w = write(s->wake[1], "x", 1);
    (void)w;
    pthread_join(s->thread, NULL);
    db_free(s->db);
    sandbox_free(s->sb);
    if (s->listen)
        PQfinish(s->listen);
    close(s->wake[0]);
    close(s->wake[1]);
    free(s);
}
