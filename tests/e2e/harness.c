/* harness.c - see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char base_url[4096];

double h_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *h_loom_bin(void)
{
    const char *b = getenv("LOOM_BIN");
    return b ? b : "./loom";
}

const char *h_log_dir(void)
{
    const char *d = getenv("LOOM_TEST_LOGS");
    return d ? d : "/tmp";
}

const char *h_base_url(void)
{
    if (base_url[0])
        return base_url;
    const char *file = getenv("LOOM_TEST_DB_FILE");
    FILE *f = file ? fopen(file, "r") : NULL;
    if (!f || !fgets(base_url, sizeof base_url, f)) {
        fprintf(stderr, "harness: no test database (LOOM_TEST_DB_FILE); run through ctest\n");
        exit(1);
    }
    fclose(f);
    base_url[strcspn(base_url, "\r\n")] = '\0';
    return base_url;
}

/* base_url with its dbname replaced. */
static char *url_for(const char *dbname)
{
    const char *base = h_base_url();
    const char *p = strstr(base, "dbname=");
    size_t n = p ? (size_t)(p - base) : strlen(base);
    char *out = malloc(n + strlen(dbname) + 16);
    snprintf(out, n + strlen(dbname) + 16, "%.*sdbname=%s", (int)n, base, dbname);
    return out;
}

bool h_sql(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "harness: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok;
}

char *h_sql_value(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQexec(c, sql);
    char *v = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strdup(PQgetvalue(r, 0, 0));
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "harness: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return v;
}

char *h_fresh_db(const char *name)
{
    char *admin = url_for("postgres");
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    h_sql(admin, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    if (!h_sql(admin, sql))
        exit(1);
    free(admin);
    return url_for(name);
}

int h_run(const char *const *argv, const char *stdin_text, char *out, size_t outlen)
{
    int in[2], o[2];
    if (pipe(in) != 0 || pipe(o) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(o[1], 1);
        dup2(o[1], 2);
        close(in[0]);
        close(in[1]);
        close(o[0]);
        close(o[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(o[1]);
    if (stdin_text) {
        ssize_t w = write(in[1], stdin_text, strlen(stdin_text));
        (void)w;
    }
    close(in[1]);
    size_t used = 0;
    char tmp[4096];
    ssize_t r;
    while ((r = read(o[0], tmp, sizeof tmp)) > 0) {
        if (out && used + 1 < outlen) {
            size_t take = (size_t)r < outlen - 1 - used ? (size_t)r : outlen - 1 - used;
            memcpy(out + used, tmp, take);
            used += take;
        }
    }
    if (out && outlen)
        out[used] = '\0';
    close(o[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int h_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

bool h_wait_healthy(int port, int timeout_ms)
{
    double end = h_now() + timeout_ms / 1000.0;
    while (h_now() < end) {
        h_resp r = h_req(port, "GET", "/healthz", NULL, NULL);
        bool ok = r.status == 200;
        h_resp_free(&r);
        if (ok)
            return true;
        usleep(50000);
    }
    return false;
}

bool h_server_start(h_server *s, const char *db_url, const char *const *args, const char *const *env)
{
    static int seq;
    s->port = h_free_port();
    snprintf(s->log, sizeof s->log, "%s/server-%d-%d.log", h_log_dir(), (int)getpid(), ++seq);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", s->port);
    const char *argv[64];
    int n = 0;
    argv[n++] = h_loom_bin();
    argv[n++] = "serve";
    argv[n++] = "--listen";
    argv[n++] = listen;
    if (db_url) {
        argv[n++] = "--db";
        argv[n++] = db_url;
    }
    for (int i = 0; args && args[i] && n < 62; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    s->pid = fork();
    if (s->pid == 0) {
        /* a test that fails half way never stops its server: it goes with the test process */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        dup2(fd, 1);
        setenv("LOOM_ADMIN_PASSWORD", H_ADMIN_PASSWORD, 1);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (h_wait_healthy(s->port, 60000))
        return true;
    fprintf(stderr, "harness: server did not become healthy; log %s\n", s->log);
    h_server_stop(s);
    return false;
}

int h_server_stop(h_server *s)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    int st = 0;
    double end = h_now() + 60;
    while (h_now() < end) {
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid) {
            s->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        usleep(20000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
    return -1;
}

/* ---- client ---- */

bool h_conn_open(h_conn *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(c->fd);
        c->fd = -1;
        return false;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return true;
}

void h_conn_close(h_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    buf_free(&c->in);
}

bool h_conn_send(h_conn *c, const char *data, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, data, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        data += w;
        n -= (size_t)w;
    }
    return true;
}

bool h_conn_sends(h_conn *c, const char *s)
{
    return h_conn_send(c, s, strlen(s));
}

/* Reads more into c->in; 1 read, 0 EOF, -1 timeout or error. */
static int fill(h_conn *c, double deadline)
{
    int wait = (int)((deadline - h_now()) * 1000);
    if (wait < 0)
        return -1;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, wait) <= 0)
        return -1;
    char tmp[65536];
    ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
    if (r < 0)
        return errno == ECONNRESET ? 0 : -1;
    if (r == 0)
        return 0;
    buf_append(&c->in, tmp, (size_t)r);
    return 1;
}

bool h_resp_header(const h_resp *r, const char *name, char *out, size_t n)
{
    if (!r->head)
        return false;
    size_t nl = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t len = e ? (size_t)(e - v) : strlen(v);
            snprintf(out, n, "%.*s", (int)len, v);
            return true;
        }
    }
    return false;
}

/* A chunked body at p (n bytes so far), decoded into r->body / r->body_len:
 * the bytes it took, or -1 while it is not all here (r untouched). */
static long dechunk(const char *p, size_t n, h_resp *r)
{
    buf out = {0};
    size_t at = 0;
    for (;;) {
        const char *eol = memmem(p + at, n - at, "\r\n", 2);
        if (!eol)
            break;
        size_t size = strtoul(p + at, NULL, 16), data = (size_t)(eol - p) + 2;
        if (n < data + size + 2)
            break;
        if (size == 0) {   /* the last chunk (no trailers here) */
            r->body = out.data ? out.data : strdup("");
            r->body_len = out.len;
            return (long)(data + 2);
        }
        buf_append(&out, p + data, size);
        at = data + size + 2;
    }
    buf_free(&out);
    return -1;
}

bool h_conn_read(h_conn *c, h_resp *r, int timeout_ms)
{
    memset(r, 0, sizeof *r);
    double deadline = h_now() + timeout_ms / 1000.0;
    for (;;) {
        char *end = c->in.data ? strstr(c->in.data, "\r\n\r\n") : NULL;
        if (end) {
            size_t head_len = (size_t)(end - c->in.data) + 4;
            h_resp tmp = {.head = strndup(c->in.data, head_len - 2)};
            char cl[32];
            size_t body_len = h_resp_header(&tmp, "Content-Length", cl, sizeof cl) ? (size_t)atol(cl) : 0;
            if (h_resp_header(&tmp, "Transfer-Encoding", cl, sizeof cl) && !strcasecmp(cl, "chunked")) {
                long used = dechunk(c->in.data + head_len, c->in.len - head_len, r);
                if (used >= 0) {   /* the whole body is here: r->body holds it */
                    r->head = tmp.head;
                    r->status = atoi(c->in.data + 9);
                    r->json = json_loadb(r->body, r->body_len, 0, NULL);
                    buf_consume(&c->in, head_len + (size_t)used);
                    return true;
                }
                free(tmp.head);
                if (fill(c, deadline) <= 0)
                    return false;
                continue;
            }
            if (c->in.len >= head_len + body_len) {
                r->head = tmp.head;
                r->status = atoi(c->in.data + 9);
                r->body = malloc(body_len + 1);   /* binary-safe: a body may hold NULs */
                memcpy(r->body, c->in.data + head_len, body_len);
                r->body[body_len] = '\0';
                r->body_len = body_len;
                r->json = json_loadb(r->body, body_len, 0, NULL);
                buf_consume(&c->in, head_len + body_len);
                return true;
            }
            free(tmp.head);
        }
        if (fill(c, deadline) <= 0)
            return false;
    }
}

bool h_conn_closed(h_conn *c, int timeout_ms)
{
    double deadline = h_now() + timeout_ms / 1000.0;
    for (;;) {
        int r = fill(c, deadline);
        if (r == 0)
            return true;
        if (r < 0)
            return false;
    }
}

void h_resp_free(h_resp *r)
{
    free(r->head);
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

const char *h_code(const h_resp *r)
{
    const char *s = json_string_value(json_object_get(r->json, "code"));
    return s ? s : "";
}

h_resp h_req(int port, const char *method, const char *path, const char *token, const char *body)
{
    return h_req_h(port, method, path, token, body, NULL);
}

h_resp h_req_h(int port, const char *method, const char *path, const char *token, const char *body,
               const char *headers)
{
    h_resp r = {0};
    h_conn c;
    if (!h_conn_open(&c, port))
        return r;
    buf req = {0};
    buf_printf(&req, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n", method, path);
    if (token)
        buf_printf(&req, "Authorization: Bearer %s\r\n", token);
    if (headers)
        buf_puts(&req, headers);
    if (body)
        buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    else
        buf_puts(&req, "\r\n");
    if (h_conn_send(&c, req.data, req.len))
        h_conn_read(&c, &r, 30000);
    buf_free(&req);
    h_conn_close(&c);
    return r;
}

char *h_login(int port, const char *user, const char *password)
{
    json_t *b = json_pack("{s:s, s:s}", "username", user, "password", password);
    char *body = json_dumps(b, 0);
    json_decref(b);
    h_resp r = h_req(port, "POST", "/api/auth/login", NULL, body);
    free(body);
    const char *t = json_string_value(json_object_get(r.json, "token"));
    char *token = r.status == 200 && t ? strdup(t) : NULL;
    h_resp_free(&r);
    return token;
}

char *h_user(int port, const char *admin_token, const char *name, json_t *extra, long long *out_id)
{
    char password[96];
    snprintf(password, sizeof password, "%s-password", name);
    json_t *b = json_pack("{s:s, s:s}", "username", name, "password", password);
    if (extra)
        json_object_update(b, extra);
    json_decref(extra);
    char *body = json_dumps(b, 0);
    json_decref(b);
    h_resp r = h_req(port, "POST", "/api/admin/users", admin_token, body);
    free(body);
    bool ok = r.status == 201;
    if (ok && out_id)
        *out_id = json_integer_value(json_object_get(r.json, "id"));
    h_resp_free(&r);
    return ok ? h_login(port, name, password) : NULL;
}
