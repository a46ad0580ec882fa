/* http.h - HTTP/1.1 server on a libuv loop.
 *
 * The loop thread accepts, reads and parses (http-parser) and enforces the
 * limits: headers over max_header bytes -> 431, a declared or streamed body
 * over max_body -> 413 before the rest is read, Content-Length together with
 * Transfer-Encoding or twice -> 400, and close. Headers must arrive within
 * header_timeout_ms (else 408), a connection idle for idle_timeout_ms is
 * closed, and so is one whose client does not read a response within it.
 *
 * Requests on one connection are handled one at a time, in order (keep-alive
 * and pipelining): the next is parsed only once the previous response is
 * written, and reading stops while a bounded amount of input is waiting, so a
 * client that does not read its responses only slows itself down.
 *
 * Each complete request becomes an http_exchange handed to the dispatch
 * callback on the loop thread. Whoever handles it fills ex->res and calls
 * http_exchange_done() from any thread. That call writes the response on the
 * (non-blocking) socket at once, and wakes the loop only when the loop has
 * something to do: the rest of a partial write, a connection to close, or
 * pipelined input waiting. Otherwise the loop's bookkeeping (log, metrics,
 * idle timer) follows at its next iteration, at most DONE_SWEEP_MS later. */
#ifndef LOOM_HTTP_H
#define LOOM_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "core/arena.h"
#include "core/buf.h"

typedef struct http_header {
    const char *name;   /* lower case */
    const char *value;
} http_header;

typedef struct http_request {
    const char *method;   /* "GET", ... */
    const char *path;     /* percent-encoded, without the query */
    const char *query;    /* after '?', or "" */
    http_header *headers;
    int nheaders;
    const char *body;     /* NUL-terminated; body_len excludes the NUL */
    size_t body_len;
    const char *request_id;
    const char *client_ip;
} http_request;

typedef struct http_response {
    int status;
    const char *content_type;  /* NULL: no body */
    buf body;
    buf headers;               /* extra "Name: value\r\n" lines */
} http_response;

typedef struct http_exchange {
    http_request req;
    http_response res;
    arena *arena;          /* request lifetime: freed after the response is written */
    void *conn;            /* internal */
    struct http_exchange *next_done;
    double started;        /* monotonic seconds */
    int route;             /* set by the dispatcher for logs and metrics; -1 = none */
    const char *route_name;
    /* internal */
    bool close_after;
    bool http10;           /* an HTTP/1.0 request: no chunks; a streamed body ends with the connection */
    bool streaming;        /* the body goes out in chunks as it is made (http_exchange_stream) */
    bool stream_failed;    /* ... and the client stopped taking it, or the handler gave up on it */
    buf head;              /* the serialized status line and headers */
    size_t sent;           /* bytes of head + body already written */
    double finished;       /* when the response was fully written, or 0 */
} http_exchange;

typedef struct http_server http_server;

typedef void (*http_dispatch_cb)(void *udata, http_exchange *ex);
/* Called on the loop thread after a response is written (logs, metrics). */
typedef void (*http_written_cb)(void *udata, const http_exchange *ex, double seconds);

typedef struct http_config {
    const char *host;
    int port;
    size_t max_body;        /* default 8 MiB */
    size_t max_header;      /* default 8 KiB */
    int header_timeout_ms;  /* default 10 s */
    int idle_timeout_ms;    /* default 60 s */
    /* The body limit of a request (by method and path), when not max_body; NULL: max_body for all. */
    size_t (*body_limit)(void *udata, const char *method, const char *path);
    http_dispatch_cb dispatch;
    http_written_cb written;
    void *udata;
} http_config;

/* Binds and starts listening on loop. Returns NULL with a message in err. */
http_server *http_server_start(uv_loop_t *loop, const http_config *cfg, char *err, size_t errlen);
/* The port actually bound (useful with port 0). */
int http_server_port(const http_server *s);
/* Stops accepting and closes idle connections; busy ones close once their
 * response is written. Call on the loop thread, then leave uv_run(). */
void http_server_stop(http_server *s);
/* Call outside uv_run() once no handler can call http_exchange_done() any
 * more (the workers have stopped): writes the last responses, runs the loop
 * until every connection is closed, and frees the server. */
void http_server_free(http_server *s);
int http_server_connections(const http_server *s);

/* Value of a request header (name in lower case), or NULL. */
const char *http_request_header(const http_request *r, const char *name);
/* Hands the response back to the loop; callable from any thread, once. */
void http_exchange_done(http_exchange *ex);
/* Sends data as the next part of ex's body, from the handling thread,
 * before http_exchange_done: the first call sends ex->res's status and
 * headers with Transfer-Encoding: chunked (to an HTTP/1.0 client: without,
 * and the connection closes after; ex->res.body is not used then),
 * each call one chunk, waiting up to the idle timeout while the client does
 * not read. False once the client is gone or too slow: the rest is dropped.
 * http_exchange_done ends the body. */
bool http_exchange_stream(http_exchange *ex, const char *data, size_t n);
/* Gives up on a streamed body (the handler failed half way): it is left
 * unterminated and the connection closes, so the client sees it cut short. */
void http_exchange_abort(http_exchange *ex);
/* The same for n exchanges at once, with a single wake-up of the loop. */
void http_exchange_done_many(http_exchange **ex, int n);
/* Adds a response header line. */
void http_response_header(http_response *res, const char *name, const char *value);

/* Seconds on the monotonic clock. */
double http_now(void);

#endif
