/* cli_db.c - `loom db start|stop|status|psql` and the shared --db/--data-dir
 * handling of database commands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "pgembed.h"
#include "store/migrate.h"
#include "store/db.h"

bool cli_db_option(int argc, char **argv, int *i, cli_db_opts *o)
{
    const char *a = argv[*i];
    const char **slot = strcmp(a, "--db") == 0 ? &o->db_url : strcmp(a, "--data-dir") == 0 ? &o->data_dir : NULL;
    if (!slot)
        return false;
    if (*i + 1 >= argc) {
        fprintf(stderr, "loom: %s needs a value\n", a);
        exit(2);
    }
    *slot = argv[++*i];
    return true;
}

static pgembed started_pg;   /* the embedded database this command started */
static bool started;

bool cli_db_connect_info(const cli_db_opts *o, char *out, size_t n)
{
    const char *url = o->db_url ? o->db_url : getenv("LOOM_DATABASE_URL");
    if (url) {
        snprintf(out, n, "%s", url);
        return true;
    }
    pgembed pg;
    char err[2048];
    int r = -1;
    if (!pgembed_init(&pg, o->data_dir ? o->data_dir : "./loom-data", err, sizeof err) ||
        (r = pgembed_start(&pg, err, sizeof err)) < 0) {
        fprintf(stderr, "loom: %s\n", err);
        return false;
    }
    if (r == 1) {
        started_pg = pg;
        started = true;
    }
    pgembed_conninfo(&pg, out, n);
    return true;
}

void cli_db_finish(void)
{
    char err[512];
    if (started && !pgembed_stop(&started_pg, err, sizeof err))
        fprintf(stderr, "loom: %s\n", err);
    started = false;
}

static int usage(void)
{
    fprintf(stderr, "usage: loom db start|stop|status|psql [--data-dir DIR]\n");
    return 2;
}

int cli_db(int argc, char **argv)
{
    if (argc < 1)
        return usage();
    const char *cmd = argv[0];
    cli_db_opts o = {0};
    for (int i = 1; i < argc; i++) {
        if (!cli_db_option(argc, argv, &i, &o))
            return usage();
    }
    if (o.db_url) {
        fprintf(stderr, "loom: db %s manages the embedded database; --db names another server\n", cmd);
        return 2;
    }
    pgembed pg;
    char err[2048];
    if (!pgembed_init(&pg, o.data_dir ? o.data_dir : "./loom-data", err, sizeof err)) {
        fprintf(stderr, "loom: %s\n", err);
        return 1;
    }
    if (pg.note[0])
        fprintf(stderr, "loom: note: %s\n", pg.note);
    char conninfo[8192];
    pgembed_conninfo(&pg, conninfo, sizeof conninfo);
    if (strcmp(cmd, "start") == 0) {
        int r = pgembed_start(&pg, err, sizeof err);
        if (r < 0) {
            fprintf(stderr, "loom: %s\n", err);
            return 1;
        }
        printf("%s\nurl: %s\n", r ? "started" : "already running", conninfo);
        return 0;
    }
    if (strcmp(cmd, "stop") == 0) {
        bool was = pgembed_running(&pg);
        if (!pgembed_stop(&pg, err, sizeof err)) {
            fprintf(stderr, "loom: %s\n", err);
            return 1;
        }
        printf("%s\n", was ? "stopped" : "not running");
        return 0;
    }
    if (strcmp(cmd, "status") == 0) {
        bool running = pgembed_running(&pg);
        printf("%s\ncluster: %s\nurl: %s\n", running ? "running" : "stopped", pg.cluster, conninfo);
        return running ? 0 : 3;
    }
    if (strcmp(cmd, "psql") == 0) {
        if (!pgembed_running(&pg)) {
            fprintf(stderr, "loom: the embedded database is not running (loom db start)\n");
            return 1;
        }
        char psql[PATH_MAX + 8];
        snprintf(psql, sizeof psql, "%s/psql", pg.bindir);
        execl(psql, "psql", conninfo, (char *)NULL);
        perror("loom: psql");
        return 1;
    }
    return usage();
}
