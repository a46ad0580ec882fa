/* scheduler.h - the thread that runs durable jobs (engine/store/jobs.h)
 * that fall due: timers of flow states now. One per server, with its own
 * database connections; woken by NOTIFY loom_jobs and by the next due time,
 * so a timer fires within a moment of falling due on whichever server
 * claims it first. */
#ifndef LOOM_SCHEDULER_H
#define LOOM_SCHEDULER_H

#include "meta.h"

typedef struct scheduler scheduler;

/* Starts the thread over the database conninfo and the apps in m; NULL
 * when it could not start. */
scheduler *scheduler_start(const char *conninfo, meta *m);
/* Jobs run to completion, and attempts that failed, so far (any thread). */
void scheduler_counts(scheduler *s, unsigned long long *done, unsigned long long *failed);
/* Stops it: the job under way finishes (or rolls back) first. */
void scheduler_stop(scheduler *s);

#endif
