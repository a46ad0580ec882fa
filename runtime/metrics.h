/* metrics.h - request counters and a latency histogram in Prometheus text.
 * Observed and rendered on the loop thread only, so no locking. */
#ifndef LOOM_METRICS_H
#define LOOM_METRICS_H

#include "core/buf.h"

typedef struct metrics metrics;

typedef struct metrics_gauges {
    int workers, workers_busy, queued, connections, db_connections_up;
    unsigned long long batched_lookups;   /* token lookups sent in pipelined batches */
    unsigned long long batched_queries;   /* requests' queries sent in pipelined batches */
    unsigned long long jobs_done, jobs_failed;   /* jobs this server's scheduler ran, and attempts that failed */
} metrics_gauges;

/* route_names has nroutes entries (borrowed for the life of m). */
metrics *metrics_new(int nroutes, const char *const *route_names);
void metrics_free(metrics *m);
/* route -1 counts as "unmatched". */
void metrics_observe(metrics *m, int route, int status, double seconds);
void metrics_render(const metrics *m, const metrics_gauges *g, buf *out);

#endif
