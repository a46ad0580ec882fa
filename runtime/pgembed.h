/* pgembed.h - the embedded PostgreSQL: a cluster under the data directory.
 *
 * Layout of --data-dir: pg/ (the cluster, created by initdb on first use),
 * pg.log (the server log), run/ (the Unix socket directory, mode 0700) and
 * serve.lock (held by the one `loom serve` that owns the database). The server
 * listens on its Unix socket only. When the socket path would be too long for
 * sun_path, the socket directory is /tmp/loom-<hash> instead.
 *
 * PostgreSQL refuses to run as root: as root, every PostgreSQL program runs
 * under an unprivileged account (LOOM_PG_USER, else "postgres", else "nobody").
 * That account must be able to traverse every parent of the data directory;
 * when it cannot, the cluster goes to /var/lib/loom/clusters/<hash> instead
 * and a warning says why. */
#ifndef LOOM_PGEMBED_H
#define LOOM_PGEMBED_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct pgembed {
    char data_dir[PATH_MAX];
    char cluster[PATH_MAX];
    char sock_dir[PATH_MAX];
    char log_path[PATH_MAX];
    char bindir[PATH_MAX];
    bool drop_privs;          /* running as root: PostgreSQL runs as account */
    uid_t uid;
    gid_t gid;
    char account[64];
    char note[PATH_MAX + 128]; /* why the cluster is not under data_dir, or "" */
} pgembed;

/* Resolves paths, the PostgreSQL binaries and the account; creates data_dir.
 * Returns false with a message in err. */
bool pgembed_init(pgembed *pg, const char *data_dir, char *err, size_t errlen);
/* Takes the lock that makes one `loom serve` the owner of the database.
 * Returns the lock's file descriptor (close it to release) or -1 with err. */
int pgembed_lock(pgembed *pg, char *err, size_t errlen);
/* Creates the cluster if needed, removes a stale postmaster.pid, starts the
 * server and waits until it accepts connections, and creates the database.
 * Returns 1 when it started the server, 0 when it was already running, -1 on
 * failure (err has the reason and the tail of the server log). */
int pgembed_start(pgembed *pg, char *err, size_t errlen);
/* Stops the server (fast shutdown). True when it is not running afterwards. */
bool pgembed_stop(pgembed *pg, char *err, size_t errlen);
/* True when the server is running. */
bool pgembed_running(pgembed *pg);
/* The libpq connection string of the database. */
void pgembed_conninfo(const pgembed *pg, char *out, size_t n);

#endif
