/* pool.c - worker threads over a ring buffer of jobs. */
#include "pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    void **ring;
    int cap, head, count;
    int busy;
    bool stopping;
    int n;
    pthread_t *threads;
    pool_init_fn init;
    pool_fini_fn fini;
    pool_batch_fn run;
    int batch_max;
    void *arg;
    int next_index;
};

static void *worker_main(void *arg)
{
    pool *p = arg;
    pthread_mutex_lock(&p->lock);
    int index = p->next_index++;
    pthread_mutex_unlock(&p->lock);
    void *w = p->init ? p->init(index, p->arg) : NULL;
    void *jobs[p->batch_max];
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->count == 0 && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->count == 0) {
            pthread_mutex_unlock(&p->lock);
            break;
        }
        int take = (p->count + p->n - 1) / p->n;
        if (take > p->batch_max)
            take = p->batch_max;
        for (int i = 0; i < take; i++) {
            jobs[i] = p->ring[p->head];
            p->head = (p->head + 1) % p->cap;
        }
        p->count -= take;
        p->busy++;
        pthread_mutex_unlock(&p->lock);
        p->run(w, jobs, take);
        pthread_mutex_lock(&p->lock);
        p->busy--;
        pthread_mutex_unlock(&p->lock);
    }
    if (p->fini)
        p->fini(w);
    return NULL;
}

pool *pool_start(int n, int batch_max, pool_init_fn init, pool_fini_fn fini, pool_batch_fn run, void *arg)
{
    pool *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->cap = 1024;
    p->ring = malloc(sizeof(void *) * (size_t)p->cap);
    p->threads = calloc((size_t)n, sizeof(pthread_t));
    if (!p->ring || !p->threads)
        abort();
    p->init = init;
    p->fini = fini;
    p->run = run;
    p->batch_max = batch_max > 0 ? batch_max : 1;
    p->arg = arg;
    p->n = n;   /* the share computation needs it before every thread is up */
    for (int i = 0; i < n; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
            p->n = i;   /* join only the threads that exist */
            pool_stop(p);
            return NULL;
        }
    }
    return p;
}

void pool_submit(pool *p, void **jobs, int n)
{
    pthread_mutex_lock(&p->lock);
    while (p->count + n > p->cap) {
        /* grow: unwrap the ring into a larger array */
        void **ring = malloc(sizeof(void *) * (size_t)p->cap * 2);
        if (!ring)
            abort();
        for (int i = 0; i < p->count; i++)
            ring[i] = p->ring[(p->head + i) % p->cap];
        free(p->ring);
        p->ring = ring;
        p->head = 0;
        p->cap *= 2;
    }
    for (int i = 0; i < n; i++)
        p->ring[(p->head + p->count + i) % p->cap] = jobs[i];
    p->count += n;
    if (n == 1)
        pthread_cond_signal(&p->cond);
    else
        pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

void pool_stop(pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p->ring);
    free(p->threads);
    free(p);
}

int pool_size(const pool *p)
{
    return p->n;
}

int pool_busy(pool *p)
{
    pthread_mutex_lock(&p->lock);
    int b = p->busy;
    pthread_mutex_unlock(&p->lock);
    return b;
}

int pool_queued(pool *p)
{
    pthread_mutex_lock(&p->lock);
    int q = p->count;
    pthread_mutex_unlock(&p->lock);
    return q;
}
