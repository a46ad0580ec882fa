/* http.c - connections, parsing, limits and response writing.
 *
 * Everything here runs on the loop thread, except http_exchange_done*() and
 * what it calls (exchange_serialize, exchange_send): a worker writes its
 * response on the socket itself, which is safe because nothing else writes to
 * a connection while it has a busy exchange, and the loop never closes one then.
 *
 * Life of a connection: accepted -> reading (idle timer) -> a message begins
 * (header timer) -> headers complete (limits checked; idle timer while the body
 * streams) -> message complete: the parser is paused and the exchange is
 * dispatched; nothing more is parsed until its response has been written.
 * A connection is freed when both its handles are closed and no exchange of it
 * is in a worker's hands. */
#include "http.h"

#include <errno.h>
#include <http_parser.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/secret.h"

#define MAX_PENDING_INPUT (256 * 1024) /* unparsed bytes kept before reading stops */
#define MAX_HEADERS 100
#define READ_CHUNK 65536
#define DONE_SWEEP_MS 20 /* longest a finished exchange waits for the loop's bookkeeping */

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_async_t wake;
    uv_prepare_t prepare;         /* drains finished exchanges before the loop blocks */
    uv_timer_t sweep;             /* ... and at least every DONE_SWEEP_MS */
    http_config cfg;
    int port;
    atomic_bool stopping;
    int nconns;
    struct conn *conns;          /* all live connections (loop thread) */
    pthread_mutex_t done_lock;
    http_exchange *done_head, *done_tail;
    char id_prefix[9];
    atomic_ulong id_counter;
};

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    http_server *srv;
    struct conn *prev, *next;
    http_parser parser;
    buf in;                 /* bytes read but not yet parsed */
    size_t body_limit;      /* of the message being parsed */
    http_exchange *cur;     /* message being parsed */
    http_exchange *busy;    /* message being handled or written */
    uv_write_t wreq;
    int fd;                 /* the socket, for workers writing responses */
    bool input_waiting;     /* unparsed input while busy; guarded by srv->done_lock */
    bool peer_closed;       /* EOF while busy: close once the response is out */
    /* parse state of cur */
    buf url, hname, hval, body;
    http_header headers[MAX_HEADERS];
    int nheaders;
    size_t header_bytes;
    int n_content_length;
    bool has_te, te_chunked, expect_continue, in_value, in_headers;
    loom_code reject;       /* set by a callback that refuses the message */
    int handles;            /* open libuv handles */
    bool closing, reading, writing;
    char ip[48];
} conn;

static http_parser_settings settings;

double http_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *http_request_header(const http_request *r, const char *name)
{
    for (int i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

void http_response_header(http_response *res, const char *name, const char *value)
{
    buf_printf(&res->headers, "%s: %s\r\n", name, value);
}

/* ---- connection lifetime ---- */

static void conn_maybe_free(conn *c)
{
    if (c->handles > 0 || c->busy)
        return;
    if (c->cur) {
        arena_free(c->cur->arena);
        free(c->cur);
    }
    buf_free(&c->in);
    buf_free(&c->url);
    buf_free(&c->hname);
    buf_free(&c->hval);
    buf_free(&c->body);
    free(c);
}

static void handle_closed_cb(uv_handle_t *h)
{
    conn *c = h->data;
    c->handles--;
    conn_maybe_free(c);
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    uv_close((uv_handle_t *)&c->timer, handle_closed_cb);
    uv_close((uv_handle_t *)&c->tcp, handle_closed_cb);
}

static void timeout_cb(uv_timer_t *t);

static void conn_timer(conn *c, int ms)
{
    uv_timer_start(&c->timer, timeout_cb, (uint64_t)ms, 0);
}

/* ---- writing ---- */

static void exchange_free(http_exchange *ex)
{
    buf_free(&ex->res.body);
    buf_free(&ex->res.headers);
    buf_free(&ex->head);
    arena_free(ex->arena);
    free(ex);
}

static void conn_process(conn *c);

/* The exchange c->busy is fully written (status 0) or failed: log it, free
 * it, and go on with the connection. */
static void conn_finish(conn *c, int status)
{
    http_exchange *ex = c->busy;
    double secs = (ex->finished ? ex->finished : http_now()) - ex->started;
    if (c->srv->cfg.written)
        c->srv->cfg.written(c->srv->cfg.udata, ex, secs);
    bool close_after = ex->close_after;
    c->busy = NULL;
    c->writing = false;
    exchange_free(ex);
    if (c->closing) {
        conn_maybe_free(c);
        return;
    }
    if (status < 0 || close_after || c->peer_closed) {
        conn_close(c);
        return;
    }
    conn_timer(c, c->srv->cfg.idle_timeout_ms);
    conn_process(c);
}

static void write_cb(uv_write_t *w, int status)
{
    conn *c = w->data;
    c->busy->finished = http_now();
    conn_finish(c, status);
}

/* Serializes the status line and headers of ex into ex->head: with the
 * body's length, or for a streamed body, chunked (an HTTP/1.0 client: ended
 * by closing the connection). Runs on any thread: it reads only the exchange
 * and the server's stopping flag. */
static void head_serialize(http_server *s, http_exchange *ex, bool streamed)
{
    http_response *r = &ex->res;
    buf *h = &ex->head;
    buf_reset(h);
    buf_printf(h, "HTTP/1.1 %d %s\r\n", r->status, loom_http_reason(r->status));
    if (r->content_type) {
        buf_puts(h, "Content-Type: ");
        buf_puts(h, r->content_type);
        buf_puts(h, "\r\n");
    }
    if (streamed && ex->http10)
        ex->close_after = true;
    else if (streamed)
        buf_puts(h, "Transfer-Encoding: chunked\r\n");
    else if (r->status != 204 && r->status != 304)
        buf_printf(h, "Content-Length: %zu\r\n", r->body.len);
    if (ex->req.request_id) {
        buf_puts(h, "X-Request-Id: ");
        buf_puts(h, ex->req.request_id);
        buf_puts(h, "\r\n");
    }
    if (r->headers.len)
        buf_append(h, r->headers.data, r->headers.len);
    if (ex->close_after || atomic_load(&s->stopping)) {
        ex->close_after = true;
        buf_puts(h, "Connection: close\r\n");
    }
    buf_puts(h, "\r\n");
}

/* What is left to write of ex: its head and body, or the last chunk of a
 * streamed body (nothing when that stream failed). */
static void exchange_serialize(http_server *s, http_exchange *ex)
{
    if (!ex->streaming) {
        head_serialize(s, ex, false);
        return;
    }
    buf_reset(&ex->head);
    buf_reset(&ex->res.body);
    if (!ex->stream_failed && !ex->http10)
        buf_puts(&ex->res.body, "0\r\n\r\n");
    ex->sent = 0;
}

/* Fills iov with what of ex is not written yet; returns the count. */
static int exchange_unsent(http_exchange *ex, struct iovec iov[2])
{
    size_t hl = ex->head.len, off = ex->sent;
    int n = 0;
    if (off < hl)
        iov[n++] = (struct iovec){ex->head.data + off, hl - off};
    size_t boff = off > hl ? off - hl : 0;
    if (boff < ex->res.body.len)
        iov[n++] = (struct iovec){ex->res.body.data + boff, ex->res.body.len - boff};
    return n;
}

/* Writes as much of ex as the socket takes now, without blocking. True when
 * all of it went out. Any thread; the connection is not written by anyone
 * else while ex is its busy exchange. */
static bool exchange_send(conn *c, http_exchange *ex)
{
    struct iovec iov[2];
    int n;
    while ((n = exchange_unsent(ex, iov)) > 0) {
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;   /* EAGAIN: the loop writes the rest; an error: it finds out */
        ex->sent += (size_t)w;
    }
    ex->finished = http_now();
    return true;
}

/* Writes all of iov (n parts) on c from the handling thread, waiting up to
 * the idle timeout each time the client is not reading. */
static bool write_waiting(conn *c, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            if (poll(&p, 1, c->srv->cfg.idle_timeout_ms) <= 0 || !(p.revents & POLLOUT))
                return false;
            continue;
        }
        if (w <= 0)
            return false;
        size_t left = (size_t)w;
        for (; n > 0 && left >= iov->iov_len; n--, iov++)   /* the parts written whole */
            left -= iov->iov_len;
        if (n > 0) {   /* and the one written in part */
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return true;
}

bool http_exchange_stream(http_exchange *ex, const char *data, size_t n)
{
    conn *c = ex->conn;
    if (ex->stream_failed || !n)
        return !ex->stream_failed;
    struct iovec iov[4];
    int k = 0;
    if (!ex->streaming) {
        head_serialize(c->srv, ex, true);
        ex->streaming = true;
        iov[k++] = (struct iovec){ex->head.data, ex->head.len};
    }
    char size[24];
    if (!ex->http10)
        iov[k++] = (struct iovec){size, (size_t)snprintf(size, sizeof size, "%zx\r\n", n)};
    iov[k++] = (struct iovec){(void *)data, n};
    if (!ex->http10)
        iov[k++] = (struct iovec){"\r\n", 2};
    if (!write_waiting(c, iov, k))
        http_exchange_abort(ex);
    return !ex->stream_failed;
}

void http_exchange_abort(http_exchange *ex)
{
    ex->stream_failed = true;
    ex->close_after = true;
}

/* Writes the rest of ex (c->busy) through libuv (loop thread). */
static void conn_write_rest(conn *c, http_exchange *ex)
{
    struct iovec iov[2];
    int n = exchange_unsent(ex, iov);
    uv_buf_t bufs[2];
    for (int i = 0; i < n; i++)
        bufs[i] = uv_buf_init(iov[i].iov_base, (unsigned)iov[i].iov_len);
    c->wreq.data = c;
    c->writing = true;
    /* the idle timer also bounds how long a client may take to read this */
    conn_timer(c, c->srv->cfg.idle_timeout_ms);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, (unsigned)n, write_cb) < 0)
        conn_finish(c, -1);
}

/* Writes ex's response on c from the loop thread; ex must be c->busy. */
static void conn_respond(conn *c, http_exchange *ex)
{
    exchange_serialize(c->srv, ex);
    conn_write_rest(c, ex);
}

static http_exchange *exchange_new(conn *c)
{
    http_exchange *ex = calloc(1, sizeof *ex);
    if (!ex)
        abort();
    ex->arena = arena_new();
    ex->conn = c;
    ex->started = http_now();
    ex->route = -1;
    ex->req.client_ip = c->ip;
    return ex;
}

static void problem(http_exchange *ex, loom_code code, const char *detail)
{
    http_response *r = &ex->res;
    r->status = loom_code_status(code);
    r->content_type = "application/problem+json";
    buf_reset(&r->body);
    buf_printf(&r->body,
               "{\"type\":\"urn:loom:%s\",\"code\":\"%s\",\"status\":%d,\"title\":\"%s\",\"detail\":\"%s\"}",
               loom_code_name(code), loom_code_name(code), r->status, loom_code_title(code), detail);
}

/* Answers with an error the loop produced itself and closes afterwards. */
static void conn_reject(conn *c, loom_code code, const char *detail)
{
    http_exchange *ex = c->cur ? c->cur : exchange_new(c);
    c->cur = NULL;
    ex->route_name = "rejected";
    ex->close_after = true;
    problem(ex, code, detail);
    c->busy = ex;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    conn_respond(c, ex);
}

/* ---- parsing callbacks ---- */

static conn *pconn(http_parser *p)
{
    return p->data;
}

static int refuse(conn *c, loom_code code)
{
    c->reject = code;
    return -1;
}

static int count_header_bytes(conn *c, size_t n)
{
    c->header_bytes += n;
    if (c->header_bytes > c->srv->cfg.max_header)
        return refuse(c, LOOM_HEADERS_TOO_LARGE);
    return 0;
}

static int on_message_begin(http_parser *p)
{
    conn *c = pconn(p);
    c->cur = exchange_new(c);
    buf_reset(&c->url);
    buf_reset(&c->hname);
    buf_reset(&c->hval);
    buf_reset(&c->body);
    c->nheaders = 0;
    c->header_bytes = 0;
    c->n_content_length = 0;
    c->has_te = c->te_chunked = c->expect_continue = c->in_value = false;
    c->in_headers = true;
    conn_timer(c, c->srv->cfg.header_timeout_ms);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    conn *c = pconn(p);
    buf_append(&c->url, at, n);
    return count_header_bytes(c, n);
}

static void commit_header(conn *c)
{
    if (!c->hname.len)
        return;
    arena *a = c->cur->arena;
    char *name = arena_strndup(a, c->hname.data, c->hname.len);
    for (char *q = name; *q; q++)
        if (*q >= 'A' && *q <= 'Z')
            *q = (char)(*q + 32);
    const char *value = arena_strndup(a, c->hval.data ? c->hval.data : "", c->hval.len);
    if (strcmp(name, "content-length") == 0)
        c->n_content_length++;
    else if (strcmp(name, "transfer-encoding") == 0) {
        c->has_te = true;
        c->te_chunked = strcasecmp(value, "chunked") == 0;
    } else if (strcmp(name, "expect") == 0)
        c->expect_continue = strcasecmp(value, "100-continue") == 0;
    if (c->nheaders < MAX_HEADERS) {
        c->headers[c->nheaders].name = name;
        c->headers[c->nheaders].value = value;
        c->nheaders++;
    }
    buf_reset(&c->hname);
    buf_reset(&c->hval);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    conn *c = pconn(p);
    if (c->in_value) {
        commit_header(c);
        c->in_value = false;
    }
    buf_append(&c->hname, at, n);
    return count_header_bytes(c, n + 4);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    conn *c = pconn(p);
    c->in_value = true;
    buf_append(&c->hval, at, n);
    return count_header_bytes(c, n);
}

static int on_headers_complete(http_parser *p)
{
    conn *c = pconn(p);
    commit_header(c);
    c->in_headers = false;
    if (c->nheaders >= MAX_HEADERS)
        return refuse(c, LOOM_HEADERS_TOO_LARGE);
    /* request smuggling: one framing only, and only the one we understand */
    if (c->n_content_length > 1 || (c->has_te && c->n_content_length > 0) || (c->has_te && !c->te_chunked))
        return refuse(c, LOOM_BAD_REQUEST);
    http_request *r = &c->cur->req;
    arena *a = c->cur->arena;
    r->method = http_method_str(p->method);
    const char *url = c->url.data ? c->url.data : "/";
    const char *q = strchr(url, '?');
    r->path = q ? arena_strndup(a, url, (size_t)(q - url)) : arena_strdup(a, url);
    c->body_limit = c->srv->cfg.body_limit ? c->srv->cfg.body_limit(c->srv->cfg.udata, r->method, r->path)
                                           : c->srv->cfg.max_body;
    if (c->n_content_length && p->content_length > c->body_limit)
        return refuse(c, LOOM_PAYLOAD_TOO_LARGE);

    r->query = q ? arena_strdup(a, q + 1) : "";
    r->headers = arena_alloc(a, sizeof(http_header) * (size_t)(c->nheaders ? c->nheaders : 1));
    memcpy(r->headers, c->headers, sizeof(http_header) * (size_t)c->nheaders);
    r->nheaders = c->nheaders;

    if (c->expect_continue) {
        static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init(cont, sizeof cont - 1);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    conn_timer(c, c->srv->cfg.idle_timeout_ms);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    conn *c = pconn(p);
    if (c->body.len + n > c->body_limit)
        return refuse(c, LOOM_PAYLOAD_TOO_LARGE);
    buf_append(&c->body, at, n);
    conn_timer(c, c->srv->cfg.idle_timeout_ms);   /* a body may stream slowly, but not stall */
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn *c = pconn(p);
    http_exchange *ex = c->cur;
    ex->req.body_len = c->body.len;
    if (c->body.len > 65536) {   /* a big body is handed over, not copied: an import's may be a gigabyte */
        ex->req.body = c->body.data;
        arena_defer(ex->arena, free, c->body.data);
        c->body = (buf){0};
    } else {   /* a small one is copied, and the connection keeps its buffer for the next */
        ex->req.body = arena_strndup(ex->arena, c->body.data ? c->body.data : "", c->body.len);
    }
    ex->close_after = !http_should_keep_alive(p);
    ex->http10 = p->http_major < 1 || (p->http_major == 1 && p->http_minor == 0);
    http_parser_pause(p, 1);
    return 0;
}

/* ---- request ids ---- */

static bool id_is_safe(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

static void assign_request_id(http_server *s, http_exchange *ex)
{
    const char *given = http_request_header(&ex->req, "x-request-id");
    if (given && id_is_safe(given)) {
        ex->req.request_id = given;
        return;
    }
    unsigned long n = atomic_fetch_add(&s->id_counter, 1);
    ex->req.request_id = arena_printf(ex->arena, "%s%08lx", s->id_prefix, n & 0xffffffffUL);
}

/* ---- reading ---- */

static void drain_done(http_server *s);

/* Tells whoever finishes c->busy that the loop must look at c at once. */
static void mark_input_waiting(conn *c)
{
    pthread_mutex_lock(&c->srv->done_lock);
    c->input_waiting = true;
    pthread_mutex_unlock(&c->srv->done_lock);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    static char chunk[READ_CHUNK];   /* loop thread only; read_cb copies out of it */
    *b = uv_buf_init(chunk, sizeof chunk);
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b);

static void conn_read_start(conn *c)
{
    if (!c->reading && !c->closing) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
            c->reading = true;
    }
}

static void conn_read_stop(conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* Parses what is buffered and dispatches at most one complete request. */
static void conn_process(conn *c)
{
    http_server *s = c->srv;
    while (!c->busy && !c->closing && c->in.len > 0) {
        size_t used = http_parser_execute(&c->parser, &settings, c->in.data, c->in.len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        buf_consume(&c->in, used);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            http_exchange *ex = c->cur;
            c->cur = NULL;
            c->busy = ex;
            uv_timer_stop(&c->timer);
            assign_request_id(s, ex);
            if (c->in.len)
                mark_input_waiting(c);   /* pipelined: wake the loop when this one is done */
            s->cfg.dispatch(s->cfg.udata, ex);
            break;
        }
        if (e != HPE_OK) {
            loom_code code = c->reject != LOOM_OK ? c->reject : LOOM_BAD_REQUEST;
            const char *detail = code == LOOM_HEADERS_TOO_LARGE   ? "request headers exceed the limit"
                                 : code == LOOM_PAYLOAD_TOO_LARGE ? "request body exceeds the limit"
                                 : c->reject != LOOM_OK           ? "conflicting or unsupported message framing"
                                                                  : "malformed HTTP request";
            buf_reset(&c->in);
            conn_reject(c, code, detail);
            return;
        }
        if (used == 0)
            break;
    }
    if (c->closing)
        return;
    if (c->in.len > MAX_PENDING_INPUT || (c->busy && c->in.len > 0))
        conn_read_stop(c);
    else
        conn_read_start(c);
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    conn *c = st->data;
    drain_done(c->srv);   /* this connection's last response may be finished */
    if (c->closing)
        return;
    if (n < 0) {
        conn_read_stop(c);
        if (!c->busy)
            conn_close(c);
        else
            c->peer_closed = true;   /* finish what is in flight, then close */
        return;
    }
    if (n == 0)
        return;
    buf_append(&c->in, b->base, (size_t)n);
    if (c->busy) {
        mark_input_waiting(c);
        if (c->in.len > MAX_PENDING_INPUT)
            conn_read_stop(c);
        return;
    }
    /* only a message that has begun is under the header timer; anything else
     * read while idle re-arms the idle timer (set in on_message_begin) */
    conn_process(c);
}

static void timeout_cb(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->writing) {
        conn_close(c);   /* the client is not reading its response */
        return;
    }
    if (c->busy)
        return;          /* a worker has it; the timer is restarted on write */
    if (c->cur && c->in_headers) {
        buf_reset(&c->in);
        conn_reject(c, LOOM_REQUEST_TIMEOUT, "request headers were not received in time");
        return;
    }
    conn_close(c);
}

static void accept_cb(uv_stream_t *server, int status)
{
    http_server *s = server->data;
    if (status < 0 || atomic_load(&s->stopping))
        return;
    conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_os_fd_t fd;
    uv_fileno((uv_handle_t *)&c->tcp, &fd);
    c->fd = fd;
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->ip, sizeof c->ip);
        else
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->ip, sizeof c->ip);
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    conn_timer(c, s->cfg.idle_timeout_ms);
    conn_read_start(c);
}

/* ---- completions ---- */

void http_exchange_done_many(http_exchange **ex, int n)
{
    if (n == 0)
        return;
    http_server *s = ((conn *)ex[0]->conn)->srv;
    bool sent[n];
    for (int i = 0; i < n; i++) {
        exchange_serialize(s, ex[i]);
        sent[i] = exchange_send(ex[i]->conn, ex[i]);
    }
    bool wake = false;
    pthread_mutex_lock(&s->done_lock);
    for (int i = 0; i < n; i++) {
        conn *c = ex[i]->conn;
        wake = wake || !sent[i] || ex[i]->close_after || c->input_waiting;
        ex[i]->next_done = NULL;
        if (s->done_tail)
            s->done_tail->next_done = ex[i];
        else
            s->done_head = ex[i];
        s->done_tail = ex[i];
    }
    pthread_mutex_unlock(&s->done_lock);
    if (wake)
        uv_async_send(&s->wake);
}

void http_exchange_done(http_exchange *ex)
{
    http_exchange_done_many(&ex, 1);
}

/* Takes the finished exchanges and completes them (loop thread). */
static void drain_done(http_server *s)
{
    pthread_mutex_lock(&s->done_lock);
    http_exchange *ex = s->done_head;
    s->done_head = s->done_tail = NULL;
    for (http_exchange *e = ex; e; e = e->next_done)
        ((conn *)e->conn)->input_waiting = false;
    pthread_mutex_unlock(&s->done_lock);
    while (ex) {
        http_exchange *next = ex->next_done;
        conn *c = ex->conn;
        if (c->closing) {
            c->busy = NULL;
            exchange_free(ex);
            conn_maybe_free(c);
        } else if (ex->finished) {
            conn_finish(c, 0);
        } else {
            conn_write_rest(c, ex);
        }
        ex = next;
    }
}

static void wake_cb(uv_async_t *a)
{
    drain_done(a->data);
}

static void prepare_cb(uv_prepare_t *p)
{
    drain_done(p->data);
}

static void sweep_cb(uv_timer_t *t)
{
    drain_done(t->data);
}

/* ---- server ---- */

http_server *http_server_start(uv_loop_t *loop, const http_config *cfg, char *err, size_t errlen)
{
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;

    http_server *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->loop = loop;
    s->cfg = *cfg;
    if (!s->cfg.max_body)
        s->cfg.max_body = 8u << 20;
    if (!s->cfg.max_header)
        s->cfg.max_header = 8u << 10;
    if (!s->cfg.header_timeout_ms)
        s->cfg.header_timeout_ms = 10000;
    if (!s->cfg.idle_timeout_ms)
        s->cfg.idle_timeout_ms = 60000;
    pthread_mutex_init(&s->done_lock, NULL);
    unsigned char r[4];
    secret_random(r, sizeof r);
    snprintf(s->id_prefix, sizeof s->id_prefix, "%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);

    struct sockaddr_storage addr;
    int rc = strchr(cfg->host, ':') ? uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&addr)
                                    : uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&addr);
    if (rc == 0) {
        uv_tcp_init(loop, &s->listener);
        s->listener.data = s;
        rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&s->listener, 1024, accept_cb);
        if (rc != 0) {
            snprintf(err, errlen, "could not listen on %s:%d: %s", cfg->host, cfg->port, uv_strerror(rc));
            uv_close((uv_handle_t *)&s->listener, NULL);
            uv_run(loop, UV_RUN_NOWAIT);
            pthread_mutex_destroy(&s->done_lock);
            free(s);
            return NULL;
        }
    } else {
        snprintf(err, errlen, "invalid listen address %s: %s", cfg->host, uv_strerror(rc));
        free(s);
        return NULL;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
    s->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                               : ((struct sockaddr_in6 *)&bound)->sin6_port);
    uv_async_init(loop, &s->wake, wake_cb);
    s->wake.data = s;
    uv_prepare_init(loop, &s->prepare);
    s->prepare.data = s;
    uv_prepare_start(&s->prepare, prepare_cb);
    uv_unref((uv_handle_t *)&s->prepare);
    uv_timer_init(loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_start(&s->sweep, sweep_cb, DONE_SWEEP_MS, DONE_SWEEP_MS);
    uv_unref((uv_handle_t *)&s->sweep);
    return s;
}

int http_server_port(const http_server *s)
{
    return s->port;
}

int http_server_connections(const http_server *s)
{
    return s->nconns;
}

void http_server_stop(http_server *s)
{
    if (atomic_load(&s->stopping))
        return;
    atomic_store(&s->stopping, true);
    uv_close((uv_handle_t *)&s->listener, NULL);
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (!c->busy)
            conn_close(c);   /* busy ones close after their response (Connection: close) */
    }
}

void http_server_free(http_server *s)
{
    if (!s)
        return;
    drain_done(s);   /* answer what the workers finished; those close after writing */
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (!c->busy)
            conn_close(c);
    }
    uv_close((uv_handle_t *)&s->wake, NULL);
    uv_close((uv_handle_t *)&s->prepare, NULL);
    uv_close((uv_handle_t *)&s->sweep, NULL);
    uv_run(s->loop, UV_RUN_DEFAULT);
    pthread_mutex_destroy(&s->done_lock);
    free(s);
}
