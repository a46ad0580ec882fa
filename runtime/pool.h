/* pool.h - a fixed pool of worker threads fed by one FIFO queue.
 *
 * Each worker has its own state, made by init on the worker's thread (a
 * database connection, say) and passed to every job it runs. */
#ifndef LOOM_POOL_H
#define LOOM_POOL_H

typedef struct pool pool;

typedef void *(*pool_init_fn)(int index, void *arg);
typedef void (*pool_fini_fn)(void *worker);
typedef void (*pool_job_fn)(void *worker, void *job);

/* Starts n workers. Returns NULL if a thread could not be started. */
pool *pool_start(int n, pool_init_fn init, pool_fini_fn fini, pool_job_fn run, void *arg);
/* Queues a job; never blocks for long. */
void pool_submit(pool *p, void *job);
/* Lets the workers finish every queued job, then joins them and frees p. */
void pool_stop(pool *p);

int pool_size(const pool *p);
/* Workers running a job, and jobs waiting, right now. */
int pool_busy(pool *p);
int pool_queued(pool *p);

#endif
