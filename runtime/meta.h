/* meta.h - the published apps this server serves, as immutable snapshots.
 *
 * A snapshot is the published version of one app: its bundle and catalog,
 * never changed once made. Readers take a reference for the length of a
 * request; a publish (seen through NOTIFY loom_meta, on any server) makes a
 * new snapshot and swaps it in, and the old one is freed when its last
 * reader lets go. */
#ifndef LOOM_META_H
#define LOOM_META_H

#include <jansson.h>
#include <stdatomic.h>

typedef struct app_snapshot {
    atomic_int refs;
    char *id;
    int version;
    long serial;       /* unique to this snapshot in this process: caches built from it are keyed by it */
    json_t *bundle;    /* owned */
    json_t *catalog;   /* owned */
    struct form_tables *tables;   /* owned: every form's fields read once, for writes */
} app_snapshot;

typedef struct meta meta;

meta *meta_new(void);
void meta_free(meta *m);
/* Makes a snapshot (stealing bundle and catalog) and puts it in place of the
 * app's current one. */
void meta_put(meta *m, const char *id, int version, json_t *bundle, json_t *catalog);
void meta_remove(meta *m, const char *id);
/* The current snapshot of app (a new reference: release it), or NULL. */
app_snapshot *meta_get(meta *m, const char *id);
/* The ids of every app served, as a new array. */
json_t *meta_ids(meta *m);
void snapshot_release(app_snapshot *s);

#endif
