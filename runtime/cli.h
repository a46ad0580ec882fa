/* cli.h - the command-line subcommands other than serve, and the options
 * every database command shares. */
#ifndef LOOM_CLI_H
#define LOOM_CLI_H

#include <stdbool.h>

typedef struct cli_db_opts {
    const char *db_url;     /* --db or LOOM_DATABASE_URL; NULL: embedded */
    const char *data_dir;   /* --data-dir, default ./loom-data */
} cli_db_opts;

/* Consumes --db URL / --data-dir DIR at argv[*i] (and its value). True when
 * argv[*i] was one of them; *i then points at the value. */
bool cli_db_option(int argc, char **argv, int *i, cli_db_opts *o);
/* Resolves a connection string into out: --db, or the embedded database
 * (started when it is not running). Prints an error and returns false. */
bool cli_db_connect_info(const cli_db_opts *o, char *out, size_t n);
/* Stops the embedded database if cli_db_connect_info() started it: a
 * command leaves the database as it found it. */
void cli_db_finish(void);

int cli_db(int argc, char **argv);     /* loom db start|stop|status|psql */
int cli_user(int argc, char **argv);   /* loom user add ... */
int cli_app(int argc, char **argv);    /* loom app check ... */
int cli_seed(int argc, char **argv);   /* loom app seed APP ... (from cli_app) */

#endif
