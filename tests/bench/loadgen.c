/* loadgen.c - an open-loop HTTP load generator for latency at a fixed rate.
 *
 *   loadgen -p PORT -c CONNS -r RATE -d SECONDS [-H "Header: value"] PATH
 *
 * Requests are scheduled at RATE per second in total, spread evenly over
 * CONNS keep-alive connections. Latency runs from a request's scheduled time
 * to the end of its response, so a server that falls behind is charged for the
 * wait (no coordinated omission). Prints the achieved rate, errors and the
 * latency percentiles. Loopback only: it connects to 127.0.0.1. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct client {
    int fd;
    double next;        /* scheduled time of the next request */
    double in_flight;   /* scheduled time of the request awaiting its answer, or 0 */
    char buf[65536];
    size_t len;
} client;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Length of the complete response at the start of buf, or 0. Sets *status. */
static size_t response_len(const char *buf, size_t len, int *status)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end - buf) + 4;
    size_t body = 0;
    for (const char *p = buf; p < end; p++) {
        if ((p == buf || p[-1] == '\n') && strncasecmp(p, "Content-Length:", 15) == 0)
            body = strtoul(p + 15, NULL, 10);
    }
    if (len < head + body)
        return 0;
    *status = atoi(buf + 9);
    return head + body;
}

int main(int argc, char **argv)
{
    int port = 8080, conns = 16, opt;
    double rate = 1000, secs = 10;
    const char *header = NULL;
    while ((opt = getopt(argc, argv, "p:c:r:d:H:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'd': secs = atof(optarg); break;
        case 'H': header = optarg; break;
        default: return 2;
        }
    }
    if (optind >= argc || conns < 1 || rate <= 0) {
        fprintf(stderr, "usage: loadgen -p PORT -c CONNS -r RATE -d SECONDS [-H HEADER] PATH\n");
        return 2;
    }
    char req[4096];
    int reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s\r\n", argv[optind],
                          header ? header : "", header ? "\r\n" : "");
    int ep = epoll_create1(0);
    client *cl = calloc((size_t)conns, sizeof *cl);
    double start = now() + 0.1, interval = conns / rate;
    for (int i = 0; i < conns; i++) {
        cl[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (connect(cl[i].fd, (struct sockaddr *)&a, sizeof a) != 0) {
            perror("connect");
            return 1;
        }
        int one = 1;
        setsockopt(cl[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cl[i].next = start + interval * i / conns;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cl[i].fd, &ev);
    }
    size_t cap = (size_t)(rate * secs * 1.1) + 16, n = 0;
    double *lat = malloc(cap * sizeof *lat);
    long errors = 0, sent = 0;
    double end = start + secs;
    for (;;) {
        double t = now();
        double wake = end + 5;
        bool pending = false;
        for (int i = 0; i < conns; i++) {
            client *c = &cl[i];
            if (c->in_flight) {
                pending = true;
                continue;
            }
            if (c->next >= end)
                continue;
            if (c->next <= t) {
                if (write(c->fd, req, (size_t)reqlen) != reqlen) {
                    errors++;
                    continue;
                }
                c->in_flight = c->next;
                c->next += interval;
                sent++;
                pending = true;
            } else if (c->next < wake) {
                wake = c->next;
            }
        }
        if (!pending && t >= end)
            break;
        if (t > end + 5)
            break;   /* answers that never came */
        /* sleep until the next send is due (microsecond precision: a
         * millisecond timeout would either spin or send late), 5 ms at most */
        double wait = wake - t;
        if (wait < 0)
            wait = 0;
        if (wait > 0.005)
            wait = 0.005;
        struct timespec ts = {0, (long)(wait * 1e9)};
        struct epoll_event evs[64];
        int k = epoll_pwait2(ep, evs, 64, &ts, NULL);
        double done_at = now();
        for (int e = 0; e < k; e++) {
            client *c = &cl[evs[e].data.u32];
            ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
            if (r <= 0) {
                fprintf(stderr, "loadgen: connection closed\n");
                return 1;
            }
            c->len += (size_t)r;
            int status;
            size_t used;
            while (c->in_flight && (used = response_len(c->buf, c->len, &status)) > 0) {
                if (status != 200)
                    errors++;
                if (n < cap)
                    lat[n++] = done_at - c->in_flight;
                c->in_flight = 0;
                memmove(c->buf, c->buf + used, c->len - used);
                c->len -= used;
            }
        }
    }
    qsort(lat, n, sizeof *lat, cmp_double);
#define PCT(p) (n ? lat[(size_t)((double)(n - 1) * (p))] * 1000 : 0)
    printf("target %.0f req/s, achieved %.0f req/s, %ld sent, %zu answered, %ld errors\n", rate, n / secs, sent, n,
           errors);
    printf("latency ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n", PCT(0.5), PCT(0.9), PCT(0.99),
           PCT(0.999), n ? lat[n - 1] * 1000 : 0);
    return errors ? 1 : 0;
}
