/* list_plain.c - a plain hand-written server for tests/bench/list.sh's page,
 * as a reference point for Loom's list benchmark: what the simplest
 * single-purpose C server reaches on the same machine, against the same
 * pgbench.
 *
 *   list_plain CONNINFO PORT SQL_FILE
 *
 * A thread per keep-alive connection, each with its own PostgreSQL connection
 * and blocking I/O; every request (its path is not looked at) runs SQL_FILE's
 * statement, prepared once, and answers {"items": [the first 50 rows],
 * "next_cursor"} as Loom writes it: numbers and booleans bare, timestamps as
 * "YYYY-MM-DDTHH:MM:SSZ", other values as JSON strings, the cursor the last
 * row's sort values (its price and id: the page's sort), base64url. No
 * authentication, permissions, routing, logging or metrics. Loopback only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* memmem, mempcpy */
#endif
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PAGE 50

static const char *conninfo;
static char *sql;

/* PostgreSQL type oids this page has */
enum { INT8 = 20, INT4 = 23, BOOL = 16, TIMESTAMPTZ = 1184 };

static char *json_string(char *o, const char *v, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '"' || c == '\\' || c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    return o;
}

static char *base64url(char *o, const char *s, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)s[i] << 16 | (i + 1 < n ? (unsigned char)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? (unsigned char)s[i + 2] : 0);
        *o++ = a[v >> 18 & 63];
        *o++ = a[v >> 12 & 63];
        if (i + 1 < n)
            *o++ = a[v >> 6 & 63];
        if (i + 2 < n)
            *o++ = a[v & 63];
    }
    return o;
}

/* The answer to one request, headers included, into out (big enough). */
static size_t page(PGresult *r, char *out)
{
    char *body = out + 256, *o = body;
    int rows = PQntuples(r) > PAGE ? PAGE : PQntuples(r), cols = PQnfields(r);
    char keys[64][72];   /* per column, once: ",\"name\":" */
    size_t klen[64];
    if (cols > 64)
        return 0;
    for (int k = 0; k < cols; k++)
        klen[k] = (size_t)snprintf(keys[k], sizeof keys[k], ",\"%s\":", PQfname(r, k));
    o = stpcpy(o, "{\"items\":[");
    for (int i = 0; i < rows; i++) {
        o = stpcpy(o, i ? ",{" : "{");
        for (int k = 0; k < cols; k++) {
            o = mempcpy(o, keys[k] + !k, klen[k] - !k);
            if (PQgetisnull(r, i, k)) {
                o = stpcpy(o, "null");
                continue;
            }
            const char *v = PQgetvalue(r, i, k);
            size_t n = (size_t)PQgetlength(r, i, k);
            switch (PQftype(r, k)) {
            case INT8:
            case INT4: o = mempcpy(o, v, n); break;
            case BOOL: o = stpcpy(o, *v == 't' ? "true" : "false"); break;
            case TIMESTAMPTZ:   /* "2026-11-22 10:00:00.123456+00" in a UTC session */
                *o++ = '"';
                o = mempcpy(o, v, 19);
                o[-9] = 'T';
                o = stpcpy(o, "Z\"");
                break;
            default: o = json_string(o, v, n);
            }
        }
        *o++ = '}';
    }
    o = stpcpy(o, "],\"next_cursor\":");
    if (PQntuples(r) > PAGE) {
        char key[256];
        int n = snprintf(key, sizeof key, "{\"s\":\"-price,-id\",\"k\":[\"%s\",%s]}",
                         PQgetvalue(r, rows - 1, PQfnumber(r, "price")), PQgetvalue(r, rows - 1, PQfnumber(r, "id")));
        *o++ = '"';
        o = base64url(o, key, (size_t)n);
        *o++ = '"';
    } else {
        o = stpcpy(o, "null");
    }
    *o++ = '}';
    char head[128];
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %zu\r\n\r\n",
                     (size_t)(o - body));
    memcpy(body - h, head, (size_t)h);
    memmove(out, body - h, (size_t)(o - body) + (size_t)h);
    return (size_t)(o - body) + (size_t)h;
}

static void *serve(void *arg)
{
    int fd = (int)(long)arg;
    PGconn *c = PQconnectdb(conninfo);
    PGresult *p = PQprepare(c, "page", sql, 0, NULL);
    if (PQresultStatus(p) != PGRES_COMMAND_OK)
        fprintf(stderr, "list_plain: %s", PQerrorMessage(c));
    PQclear(p);
    char in[16384], *out = malloc(1 << 20);
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fd, in + have, sizeof in - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        char *end;
        while ((end = memmem(in, have, "\r\n\r\n", 4))) {   /* wrk sends GETs without a body */
            size_t used = (size_t)(end + 4 - in);
            memmove(in, in + used, have - used);
            have -= used;
            PGresult *r = PQexecPrepared(c, "page", 0, NULL, NULL, NULL, 0);
            size_t len = PQresultStatus(r) == PGRES_TUPLES_OK ? page(r, out) : 0;
            PQclear(r);
            if (!len || write(fd, out, len) != (ssize_t)len)
                goto done;
        }
        if (have == sizeof in)
            break;
    }
done:
    close(fd);
    PQfinish(c);
    free(out);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: list_plain CONNINFO PORT SQL_FILE\n");
        return 2;
    }
    conninfo = argv[1];
    FILE *f = fopen(argv[3], "r");
    if (!f || !(sql = calloc(1, 65536)) || !fread(sql, 1, 65535, f)) {
        perror(argv[3]);
        return 1;
    }
    fclose(f);
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 128)) {
        perror("list_plain");
        return 1;
    }
    for (;;) {
        int fd = accept(s, NULL, NULL);
        if (fd < 0)
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        if (pthread_create(&t, NULL, serve, (void *)(long)fd) == 0)
            pthread_detach(t);
        else
            close(fd);
    }
}
