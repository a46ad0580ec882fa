/* main.c - the `loom` command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/log.h"
#include "server.h"

static int usage(void)
{
    fprintf(stderr,
            "usage:\n"
            "  loom serve [--listen 127.0.0.1:8080] [--db URL] [--data-dir ./loom-data] [--workers N]\n"
            "  loom db start|stop|status|psql [--data-dir DIR]\n"
            "  loom user add NAME --password-stdin [--admin] [--designer] [--role APP:ROLE]...\n"
            "  loom app check PATH                 validate a bundle file or directory offline\n"
            "Database commands take --db URL (or LOOM_DATABASE_URL); without it they use the embedded\n"
            "PostgreSQL under --data-dir.\n");
    return 2;
}

static long num_arg(const char *opt, const char *v, long min, long max)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n < min || n > max) {
        fprintf(stderr, "loom: %s takes a whole number from %ld to %ld\n", opt, min, max);
        exit(2);
    }
    return n;
}

static int cmd_serve(int argc, char **argv)
{
    server_config cfg = {.listen = "127.0.0.1:8080"};
    cli_db_opts o = {0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (cli_db_option(argc, argv, &i, &o))
            continue;
        if (i + 1 >= argc)
            return usage();
        if (strcmp(a, "--listen") == 0)
            cfg.listen = argv[++i];
        else if (strcmp(a, "--workers") == 0)
            cfg.workers = (int)num_arg(a, argv[++i], 1, 1024);
        else if (strcmp(a, "--max-body") == 0)
            cfg.max_body = (size_t)num_arg(a, argv[++i], 1024, 1L << 30);
        else if (strcmp(a, "--header-timeout-ms") == 0)
            cfg.header_timeout_ms = (int)num_arg(a, argv[++i], 10, 3600000);
        else if (strcmp(a, "--idle-timeout-ms") == 0)
            cfg.idle_timeout_ms = (int)num_arg(a, argv[++i], 10, 3600000);
        else
            return usage();
    }
    cfg.db_url = o.db_url ? o.db_url : getenv("LOOM_DATABASE_URL");
    cfg.data_dir = o.data_dir ? o.data_dir : "./loom-data";
    return server_run(&cfg);
}

int main(int argc, char **argv)
{
    log_init();
    if (argc < 2)
        return usage();
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "db") == 0)
        return cli_db(argc - 2, argv + 2);
    int status;
    if (strcmp(cmd, "user") == 0)
        status = cli_user(argc - 2, argv + 2);
    else if (strcmp(cmd, "app") == 0)
        status = cli_app(argc - 2, argv + 2);
    else
        return usage();
    cli_db_finish();   /* leave the embedded database as it was found */
    return status;
}
