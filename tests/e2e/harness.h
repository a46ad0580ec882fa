/* harness.h - what the end-to-end tests share: the throwaway database the
 * db fixture started, `loom serve` processes, and a raw-socket HTTP client
 * that can send anything (pipelined, partial, malformed). */
#ifndef LOOM_HARNESS_H
#define LOOM_HARNESS_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/buf.h"

#define H_ADMIN_PASSWORD "admin-pass-123"

/* Connection string of the shared cluster's loom database. */
const char *h_base_url(void);
/* Drops and creates database name on the shared cluster; returns its
 * connection string (malloc'd). */
char *h_fresh_db(const char *name);
/* Runs sql on url and returns the first value (malloc'd), or NULL. */
char *h_sql_value(const char *url, const char *sql);
/* Runs sql on url; true when it succeeded. */
bool h_sql(const char *url, const char *sql);

/* Runs a command (argv[0] is a path); stdin_text (may be NULL) is its input;
 * out (may be NULL) receives stdout and stderr. Returns the exit status. */
int h_run(const char *const *argv, const char *stdin_text, char *out, size_t outlen);
const char *h_loom_bin(void);
/* A directory for logs of servers the tests start. */
const char *h_log_dir(void);

typedef struct h_server {
    pid_t pid;
    int port;
    char log[512];
} h_server;

int h_free_port(void);
/* Starts `loom serve --listen 127.0.0.1:<free port>` plus args (NULL-ended)
 * with env entries "K=V" (NULL-ended, may be NULL) added, LOOM_ADMIN_PASSWORD
 * set, and waits until /healthz answers. db_url NULL: no --db. */
bool h_server_start(h_server *s, const char *db_url, const char *const *args, const char *const *env);
/* SIGTERM, then waits; returns the exit status (-1 if it had to be killed). */
int h_server_stop(h_server *s);
bool h_wait_healthy(int port, int timeout_ms);

typedef struct h_conn {
    int fd;
    buf in;
} h_conn;

typedef struct h_resp {
    int status;      /* 0: no complete response */
    char *head;      /* status line and headers */
    char *body;
    size_t body_len;
    json_t *json;    /* body parsed when it is JSON, else NULL */
} h_resp;

bool h_conn_open(h_conn *c, int port);
void h_conn_close(h_conn *c);
bool h_conn_send(h_conn *c, const char *data, size_t n);
bool h_conn_sends(h_conn *c, const char *s);
/* Reads one response; false on timeout or EOF before it is complete. */
bool h_conn_read(h_conn *c, h_resp *r, int timeout_ms);
/* True when the server closes the connection within timeout_ms (any bytes
 * read before are kept). */
bool h_conn_closed(h_conn *c, int timeout_ms);
/* Copies header name's value into out; false when absent. */
bool h_resp_header(const h_resp *r, const char *name, char *out, size_t n);
void h_resp_free(h_resp *r);
/* The error code of a problem+json body, or "". */
const char *h_code(const h_resp *r);

/* One request on a new connection (body may be NULL, token may be NULL). */
h_resp h_req(int port, const char *method, const char *path, const char *token, const char *body);
/* The same with extra header lines ("Name: value\r\n" each), or NULL. */
h_resp h_req_h(int port, const char *method, const char *path, const char *token, const char *body,
               const char *headers);
/* Logs in; returns the token (malloc'd) or NULL. */
char *h_login(int port, const char *user, const char *password);
/* Creates user name (password "<name>-password") through the admin API, with
 * the keys of extra (stolen, may be NULL) added to the body, and logs in:
 * returns its token (malloc'd) and its id in *out_id (may be NULL), or NULL. */
char *h_user(int port, const char *admin_token, const char *name, json_t *extra, long long *out_id);

double h_now(void);

#endif
