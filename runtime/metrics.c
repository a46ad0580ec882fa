/* metrics.c - counters per (route, status) and one latency histogram per route. */
#include "metrics.h"

#include <stdlib.h>

static const int statuses[] = {100, 200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 408, 409,
                               412, 413, 415, 422, 429, 431, 500, 501, 503};
#define NSTATUS (int)(sizeof statuses / sizeof statuses[0])
static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
#define NBOUNDS (int)(sizeof bounds / sizeof bounds[0])

typedef struct route_stats {
    unsigned long long by_status[NSTATUS + 1];   /* last slot: any other status */
    unsigned long long buckets[NBOUNDS + 1];     /* last slot: +Inf */
    double sum;
    unsigned long long count;
} route_stats;

struct metrics {
    int nroutes;
    const char *const *names;
    route_stats *stats;   /* nroutes + 1; the last is "unmatched" */
};

metrics *metrics_new(int nroutes, const char *const *route_names)
{
    metrics *m = calloc(1, sizeof *m);
    if (!m || !(m->stats = calloc((size_t)nroutes + 1, sizeof(route_stats))))
        abort();
    m->nroutes = nroutes;
    m->names = route_names;
    return m;
}

void metrics_free(metrics *m)
{
    if (m) {
        free(m->stats);
        free(m);
    }
}

void metrics_observe(metrics *m, int route, int status, double seconds)
{
    route_stats *r = &m->stats[route < 0 || route >= m->nroutes ? m->nroutes : route];
    int s = 0;
    while (s < NSTATUS && statuses[s] != status)
        s++;
    r->by_status[s]++;
    int b = 0;
    while (b < NBOUNDS && seconds > bounds[b])
        b++;
    r->buckets[b]++;
    r->sum += seconds;
    r->count++;
}

static const char *route_name(const metrics *m, int i)
{
    return i == m->nroutes ? "unmatched" : m->names[i];
}

void metrics_render(const metrics *m, const metrics_gauges *g, buf *out)
{
    buf_puts(out, "# HELP loom_http_requests_total HTTP requests answered, by route and status.\n"
                  "# TYPE loom_http_requests_total counter\n");
    for (int i = 0; i <= m->nroutes; i++)
        for (int s = 0; s <= NSTATUS; s++)
            if (m->stats[i].by_status[s])
                buf_printf(out, "loom_http_requests_total{route=\"%s\",status=\"%s%d\"} %llu\n",
                           route_name(m, i), s == NSTATUS ? "other" : "", s == NSTATUS ? 0 : statuses[s],
                           m->stats[i].by_status[s]);
    buf_puts(out, "# HELP loom_http_request_duration_seconds Time from the end of a request to its "
                  "response written, by route.\n"
                  "# TYPE loom_http_request_duration_seconds histogram\n");
    for (int i = 0; i <= m->nroutes; i++) {
        const route_stats *r = &m->stats[i];
        if (!r->count)
            continue;
        unsigned long long cum = 0;
        for (int b = 0; b < NBOUNDS; b++) {
            cum += r->buckets[b];
            buf_printf(out, "loom_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                       route_name(m, i), bounds[b], cum);
        }
        buf_printf(out, "loom_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                   route_name(m, i), r->count);
        buf_printf(out, "loom_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", route_name(m, i), r->sum);
        buf_printf(out, "loom_http_request_duration_seconds_count{route=\"%s\"} %llu\n", route_name(m, i),
                   r->count);
    }
    buf_printf(out,
               "# HELP loom_pool_workers Worker threads, each with one database connection.\n"
               "# TYPE loom_pool_workers gauge\nloom_pool_workers %d\n"
               "# HELP loom_pool_busy Workers running a request now.\n"
               "# TYPE loom_pool_busy gauge\nloom_pool_busy %d\n"
               "# HELP loom_pool_queued Requests waiting for a worker.\n"
               "# TYPE loom_pool_queued gauge\nloom_pool_queued %d\n"
               "# HELP loom_db_connections_up Worker database connections that are usable.\n"
               "# TYPE loom_db_connections_up gauge\nloom_db_connections_up %d\n"
               "# HELP loom_http_connections Open client connections.\n"
               "# TYPE loom_http_connections gauge\nloom_http_connections %d\n"
               "# HELP loom_auth_batched_lookups_total Token lookups a worker sent in one pipelined batch.\n"
               "# TYPE loom_auth_batched_lookups_total counter\nloom_auth_batched_lookups_total %llu\n"
               "# HELP loom_batched_queries_total Record pages and one-statement creates a worker sent with others in one round trip.\n"
               "# TYPE loom_batched_queries_total counter\nloom_batched_queries_total %llu\n"
               "# HELP loom_jobs_total Durable jobs (timers) this server ran, by result (failed: attempts that failed).\n"
               "# TYPE loom_jobs_total counter\nloom_jobs_total{result=\"done\"} %llu\nloom_jobs_total{result=\"failed\"} %llu\n",
               g->workers, g->workers_busy, g->queued, g->db_connections_up, g->connections,
               g->batched_lookups, g->batched_queries, g->jobs_done, g->jobs_failed);
}
