/* pool.h - a fixed pool of worker threads fed by one FIFO queue.
 *
 * Each worker has its own state, made by init on the worker's thread (a
 * database connection, say) and passed to every job it runs. A worker takes
 * jobs in small batches: its fair share of what is waiting (the queue length
 * divided by the number of workers, rounded up, at most batch_max), so that
 * under load one wake-up serves several jobs, and when the queue is short
 * every job still goes to a worker of its own. */
#ifndef LOOM_POOL_H
#define LOOM_POOL_H

typedef struct pool pool;

typedef void *(*pool_init_fn)(int index, void *arg);
typedef void (*pool_fini_fn)(void *worker);
/* Runs jobs[0..n-1], in order. */
typedef void (*pool_batch_fn)(void *worker, void **jobs, int n);

/* Starts n workers. Returns NULL if a thread could not be started. */
pool *pool_start(int n, int batch_max, pool_init_fn init, pool_fini_fn fini, pool_batch_fn run, void *arg);
/* Queues jobs[0..n-1] and wakes as many workers as can share them; never
 * blocks for long. */
void pool_submit(pool *p, void **jobs, int n);
/* Lets the workers finish every queued job, then joins them and frees p. */
void pool_stop(pool *p);

int pool_size(const pool *p);
/* Workers running a job, and jobs waiting, right now. */
int pool_busy(pool *p);
int pool_queued(pool *p);

#endif
