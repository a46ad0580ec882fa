/* jobs.h - the durable job table (loom.jobs; timers first): claimed in
 * batches with FOR UPDATE SKIP LOCKED under a lease, so any number of
 * servers share it and each job runs on one of them; a job whose lease ran
 * out (its server died, kill -9 included) is claimed again. A job runs in
 * a transaction of its own that locks its row, checks the lease is still
 * the runner's and marks it done in the same commit as its effects: a job
 * takes effect once. A failure is retried with exponential backoff, up to
 * JOBS_MAX_ATTEMPTS, then the job is "failed" with its last error. */
#ifndef LOOM_JOBS_H
#define LOOM_JOBS_H

#include "store/db.h"

#define JOBS_LEASE_S 60
#define JOBS_MAX_ATTEMPTS 8

/* The columns of a claimed job, in a jobs_claim() result. */
enum { JOB_ID, JOB_KIND, JOB_APP, JOB_FORM, JOB_RECORD, JOB_STATE, JOB_VISIT, JOB_ATTEMPTS };

/* Claims up to n jobs that are due (or whose lease ran out) for runner, in
 * due order: a result owned by a (0 rows: none), or NULL with *e. */
PGresult *jobs_claim(db *d, arena *a, const char *runner, int n, loom_err *e);
/* Inside the job's transaction: locks job id if runner still holds it
 * (*held), else leaves it to whoever does. */
bool jobs_lock(db *d, arena *a, const char *id, const char *runner, bool *held, loom_err *e);
/* Inside the job's transaction: the job is done. */
bool jobs_done(db *d, arena *a, const char *id, loom_err *e);
/* After the job's transaction rolled back: tries again later, or gives up. */
bool jobs_retry(db *d, arena *a, const char *id, const char *runner, const char *error, loom_err *e);
/* Gives back the claimed jobs ids (an array literal) runner has not run
 * (it is stopping): others may run them at once, not when the lease ends. */
bool jobs_release(db *d, arena *a, const char *ids, const char *runner, loom_err *e);
/* Milliseconds until the next job falls due or a lease runs out (0: now),
 * at most cap_ms. */
long jobs_wait_ms(db *d, arena *a, long cap_ms, loom_err *e);

#endif
