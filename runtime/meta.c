/* meta.c - snapshots behind one mutex; readers hold it only to take a reference. */
#include "meta.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "form/record.h"

struct meta {
    pthread_mutex_t lock;
    app_snapshot **apps;
    int n, cap;
};

meta *meta_new(void)
{
    meta *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void snapshot_release(app_snapshot *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    form_tables_free(s->tables);   /* before the bundle it points into */
    json_decref(s->bundle);
    json_decref(s->catalog);
    free(s->id);
    free(s);
}

void meta_free(meta *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n; i++)
        snapshot_release(m->apps[i]);
    free(m->apps);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int find(meta *m, const char *id)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->apps[i]->id, id))
            return i;
    return -1;
}

void meta_put(meta *m, const char *id, int version, json_t *bundle, json_t *catalog)
{
    app_snapshot *s = calloc(1, sizeof *s);
    if (!s || !(s->id = strdup(id)))
        abort();
    static atomic_long serials;
    atomic_init(&s->refs, 1);
    s->serial = atomic_fetch_add(&serials, 1) + 1;
    s->version = version;
    s->bundle = bundle;
    s->catalog = catalog;
    s->tables = form_tables_new(json_object_get(bundle, "forms"));
    app_snapshot *old = NULL;
    pthread_mutex_lock(&m->lock);
    int i = find(m, id);
    if (i >= 0) {
        old = m->apps[i];
        m->apps[i] = s;
    } else {
        if (m->n == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 8;
            m->apps = realloc(m->apps, sizeof *m->apps * (size_t)m->cap);
            if (!m->apps)
                abort();
        }
        m->apps[m->n++] = s;
    }
    pthread_mutex_unlock(&m->lock);
    snapshot_release(old);
}

void meta_remove(meta *m, const char *id)
{
    app_snapshot *old = NULL;
    pthread_mutex_lock(&m->lock);
    int i = find(m, id);
    if (i >= 0) {
        old = m->apps[i];
        m->apps[i] = m->apps[--m->n];
    }
    pthread_mutex_unlock(&m->lock);
    snapshot_release(old);
}

app_snapshot *meta_get(meta *m, const char *id)
{
    pthread_mutex_lock(&m->lock);
    int i = find(m, id);
    app_snapshot *s = i >= 0 ? m->apps[i] : NULL;
    if (s)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&m->lock);
    return s;
}

json_t *meta_ids(meta *m)
{
    json_t *ids = json_array();
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < m->n; i++)
        json_array_append_new(ids, json_string(m->apps[i]->id));
    pthread_mutex_unlock(&m->lock);
    return ids;
}
