/* test_http.c - the HTTP layer against a running `loom serve`: keep-alive,
 * pipelining, limits (431, 413), request smuggling, chunked bodies, timeouts,
 * slow readers, routing errors, request ids and metrics. The server runs with
 * short timeouts and a 64 KiB body limit so the limits are quick to reach. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static h_server srv;
static char *url;

static int setup(void **state)
{
    (void)state;
    url = h_fresh_db("loomtest_http");
    const char *args[] = {"--workers", "2", "--max-body", "65536", "--header-timeout-ms", "1000",
                          "--idle-timeout-ms", "2000", NULL};
    return h_server_start(&srv, url, args, NULL) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int st = h_server_stop(&srv);
    free(url);
    return st == 0 ? 0 : -1;
}

static void test_keep_alive(void **state)
{
    (void)state;
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    for (int i = 0; i < 3; i++) {
        assert_true(h_conn_sends(&c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
        h_resp r;
        assert_true(h_conn_read(&c, &r, 5000));
        assert_int_equal(r.status, 200);
        assert_string_equal(json_string_value(json_object_get(r.json, "status")), "ok");
        h_resp_free(&r);
    }
    h_conn_close(&c);
}

static void test_pipelining_in_order(void **state)
{
    (void)state;
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    buf all = {0};
    /* alternate loop-thread and worker routes so that answers must be held in order */
    for (int i = 0; i < 200; i++)
        buf_printf(&all, "GET %s HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-%d\r\n\r\n",
                   i % 2 ? "/readyz" : "/healthz", i);
    assert_true(h_conn_send(&c, all.data, all.len));
    buf_free(&all);
    for (int i = 0; i < 200; i++) {
        h_resp r;
        assert_true(h_conn_read(&c, &r, 10000));
        assert_int_equal(r.status, 200);
        char id[64], want[64];
        snprintf(want, sizeof want, "req-%d", i);
        assert_true(h_resp_header(&r, "X-Request-Id", id, sizeof id));
        assert_string_equal(id, want);
        h_resp_free(&r);
    }
    h_conn_close(&c);
}

static void test_headers_too_large_431(void **state)
{
    (void)state;
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    buf req = {0};
    buf_puts(&req, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    for (int i = 0; i < 9000; i++)
        buf_puts(&req, "a");
    buf_puts(&req, "\r\n\r\n");
    h_conn_send(&c, req.data, req.len);
    buf_free(&req);
    h_resp r;
    assert_true(h_conn_read(&c, &r, 5000));
    assert_int_equal(r.status, 431);
    assert_string_equal(h_code(&r), "headers_too_large");
    h_resp_free(&r);
    assert_true(h_conn_closed(&c, 5000));
    h_conn_close(&c);

    /* just under the limit is fine */
    assert_true(h_conn_open(&c, srv.port));
    buf ok = {0};
    buf_puts(&ok, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    for (int i = 0; i < 7000; i++)
        buf_puts(&ok, "a");
    buf_puts(&ok, "\r\n\r\n");
    h_conn_send(&c, ok.data, ok.len);
    buf_free(&ok);
    assert_true(h_conn_read(&c, &r, 5000));
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    h_conn_close(&c);
}

static void test_body_too_large_413_before_body(void **state)
{
    (void)state;
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    /* only the headers are sent: the answer must come without the body */
    h_conn_sends(&c, "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 10000000\r\n\r\n");
    h_resp r;
    assert_true(h_conn_read(&c, &r, 5000));
    assert_int_equal(r.status, 413);
    assert_string_equal(h_code(&r), "payload_too_large");
    h_resp_free(&r);
    assert_true(h_conn_closed(&c, 5000));
    h_conn_close(&c);
}

static void test_chunked_body_over_limit_413(void **state)
{
    (void)state;
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    h_conn_sends(&c, "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[8192 + 16];
    snprintf(chunk, sizeof chunk, "2000\r\n");
    size_t n = strlen(chunk);
    memset(chunk + n, 'x', 8192);
    memcpy(chunk + n + 8192, "\r\n", 2);
    bool refused = false;
    for (int i = 0; i < 20 && !refused; i++)   /* 160 KiB > 64 KiB */
        refused = !h_conn_send(&c, chunk, n + 8194);
    h_resp r;
    assert_true(h_conn_read(&c, &r, 5000));
    assert_int_equal(r.status, 413);
    h_resp_free(&r);
    h_conn_close(&c);
}

static void test_chunked_body_accepted(void **state)
{
    (void)state;
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    const char *body = "{\"username\":\"admin\",\"password\":\"" H_ADMIN_PASSWORD "\"}";
    char req[512];
    size_t half = strlen(body) / 2;
    snprintf(req, sizeof req,
             "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             "%zx\r\n%.*s\r\n%zx\r\n%s\r\n0\r\n\r\n",
             half, (int)half, body, strlen(body) - half, body + half);
    h_conn_sends(&c, req);
    h_resp r;
    assert_true(h_conn_read(&c, &r, 10000));
    assert_int_equal(r.status, 200);
    assert_non_null(json_string_value(json_object_get(r.json, "token")));
    h_resp_free(&r);
    h_conn_close(&c);
}

static void expect_400_and_close(const char *raw)
{
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    h_conn_sends(&c, raw);
    h_resp r;
    assert_true(h_conn_read(&c, &r, 5000));
    assert_int_equal(r.status, 400);
    assert_string_equal(h_code(&r), "bad_request");
    h_resp_free(&r);
    assert_true(h_conn_closed(&c, 5000));
    h_conn_close(&c);
}

static void test_smuggling_rejected(void **state)
{
    (void)state;
    /* Content-Length with Transfer-Encoding */
    expect_400_and_close("POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    expect_400_and_close("POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         "Content-Length: 4\r\n\r\n0\r\n\r\n");
    /* two Content-Lengths, equal or not */
    expect_400_and_close("POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                         "Content-Length: 2\r\n\r\n{}");
    expect_400_and_close("POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                         "Content-Length: 40\r\n\r\n{}");
    /* a transfer coding we do not implement */
    expect_400_and_close("POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    /* not HTTP */
    expect_400_and_close("HELLO\r\n\r\n");
}

static void test_slow_headers_408(void **state)
{
    (void)state;
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    h_conn_sends(&c, "GET /healthz HTTP/1.1\r\nHost: x\r\n");   /* never finished */
    double t0 = h_now();
    sleep(0);
    h_resp r;
    assert_true(h_conn_read(&c, &r, 5000));
    assert_int_equal(r.status, 408);
    assert_true(h_now() - t0 >= 0.9);   /* not before the configured 1 s */
    h_resp_free(&r);
    assert_true(h_conn_closed(&c, 2000));
    h_conn_close(&c);

    /* dripping one byte at a time does not extend the header deadline */
    assert_true(h_conn_open(&c, srv.port));
    h_conn_sends(&c, "GET /healthz HTTP/1.1\r\n");
    bool closed = false;
    for (int i = 0; i < 30 && !closed; i++) {
        usleep(100000);
        closed = !h_conn_sends(&c, "X");
    }
    assert_true(h_conn_read(&c, &r, 3000));
    assert_int_equal(r.status, 408);
    h_resp_free(&r);
    h_conn_close(&c);
}

static void test_idle_connection_closed(void **state)
{
    (void)state;
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    assert_false(h_conn_closed(&c, 1000));   /* still open within the 2 s idle timeout */
    assert_true(h_conn_closed(&c, 3000));
    h_conn_close(&c);
}

static void test_slow_reader_does_not_block_others(void **state)
{
    (void)state;
    /* one client pipelines many requests and reads nothing */
    h_conn slow;
    assert_true(h_conn_open(&slow, srv.port));
    buf all = {0};
    int n = 20000;
    for (int i = 0; i < n; i++)
        buf_puts(&all, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    /* the server stops reading once its buffers fill: send what it takes */
    size_t sent = 0;
    for (; sent < all.len;) {
        ssize_t w = send(slow.fd, all.data + sent, all.len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w <= 0)
            break;
        sent += (size_t)w;
    }
    /* another client is served meanwhile */
    for (int i = 0; i < 5; i++) {
        h_resp r = h_req(srv.port, "GET", "/healthz", NULL, NULL);
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
    }
    /* the slow client still gets its answers, in order, once it reads */
    int complete = (int)(sent / strlen("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_true(complete > 0);
    for (int i = 0; i < complete && i < 50; i++) {
        h_resp r;
        assert_true(h_conn_read(&slow, &r, 10000));
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
    }
    buf_free(&all);
    h_conn_close(&slow);
}

static void test_routing_errors(void **state)
{
    (void)state;
    h_resp r = h_req(srv.port, "GET", "/no/such/route", NULL, NULL);
    assert_int_equal(r.status, 404);
    assert_string_equal(h_code(&r), "not_found");
    char ct[128];
    assert_true(h_resp_header(&r, "Content-Type", ct, sizeof ct));
    assert_string_equal(ct, "application/problem+json");
    assert_string_equal(json_string_value(json_object_get(r.json, "type")), "urn:loom:not_found");
    assert_int_equal(json_integer_value(json_object_get(r.json, "status")), 404);
    h_resp_free(&r);

    r = h_req(srv.port, "DELETE", "/api/me", NULL, NULL);
    assert_int_equal(r.status, 405);
    assert_string_equal(h_code(&r), "method_not_allowed");
    h_resp_free(&r);

    r = h_req(srv.port, "POST", "/api/auth/login", NULL, "{not json");
    assert_int_equal(r.status, 400);
    assert_string_equal(h_code(&r), "bad_json");
    json_t *e0 = json_array_get(json_object_get(r.json, "errors"), 0);   /* the whole body: path "" */
    assert_string_equal(json_string_value(json_object_get(e0, "path")), "");
    assert_string_equal(json_string_value(json_object_get(e0, "code")), "bad_json");
    h_resp_free(&r);

    r = h_req(srv.port, "POST", "/api/auth/login", NULL, "{\"username\":\"a\",\"username\":\"b\",\"password\":\"x\"}");
    assert_int_equal(r.status, 400);   /* duplicate keys are rejected */
    assert_string_equal(h_code(&r), "bad_json");
    h_resp_free(&r);
}

static void test_request_ids(void **state)
{
    (void)state;
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    h_conn_sends(&c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123\r\n\r\n"
                     "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: bad id\"\r\n\r\n"
                     "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    h_resp a, b, d;
    assert_true(h_conn_read(&c, &a, 5000));
    assert_true(h_conn_read(&c, &b, 5000));
    assert_true(h_conn_read(&c, &d, 5000));
    char ida[80], idb[80], idd[80];
    assert_true(h_resp_header(&a, "X-Request-Id", ida, sizeof ida));
    assert_true(h_resp_header(&b, "X-Request-Id", idb, sizeof idb));
    assert_true(h_resp_header(&d, "X-Request-Id", idd, sizeof idd));
    assert_string_equal(ida, "abc-123");
    assert_string_not_equal(idb, "bad id\"");   /* unsafe ids are replaced */
    assert_string_not_equal(idb, idd);
    h_resp_free(&a);
    h_resp_free(&b);
    h_resp_free(&d);
    h_conn_close(&c);
}

/* Finds the request log line with this request id in the server's log. */
static json_t *log_line_for(const char *request_id)
{
    double end = h_now() + 2;   /* lines are written once per loop iteration */
    while (h_now() < end) {
        FILE *f = fopen(srv.log, "r");
        char line[4096];
        json_t *found = NULL;
        while (f && !found && fgets(line, sizeof line, f)) {
            json_t *j = json_loads(line, 0, NULL);
            if (j && json_is_string(json_object_get(j, "request_id")) &&
                strcmp(json_string_value(json_object_get(j, "request_id")), request_id) == 0)
                found = j;
            else
                json_decref(j);
        }
        if (f)
            fclose(f);
        if (found)
            return found;
        usleep(20000);
    }
    return NULL;
}

static void test_request_log_line(void **state)
{
    (void)state;
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    h_conn_sends(&c, "GET /api/admin/users/7?x=%22 HTTP/1.1\r\nHost: x\r\nX-Request-Id: log-check-1\r\n\r\n");
    h_resp r;
    assert_true(h_conn_read(&c, &r, 5000));
    assert_int_equal(r.status, 401);
    h_resp_free(&r);
    h_conn_close(&c);
    json_t *line = log_line_for("log-check-1");
    assert_non_null(line);
    assert_string_equal(json_string_value(json_object_get(line, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(line, "route")), "GET /api/admin/users/{id}");
    assert_string_equal(json_string_value(json_object_get(line, "path")), "/api/admin/users/7");
    assert_int_equal(json_integer_value(json_object_get(line, "status")), 401);
    assert_true(json_is_number(json_object_get(line, "duration_ms")));
    assert_non_null(json_string_value(json_object_get(line, "time")));
    json_decref(line);
}

static void test_http10_closes(void **state)
{
    (void)state;
    h_conn c;
    assert_true(h_conn_open(&c, srv.port));
    h_conn_sends(&c, "GET /healthz HTTP/1.0\r\n\r\n");
    h_resp r;
    assert_true(h_conn_read(&c, &r, 5000));
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_true(h_conn_closed(&c, 2000));
    h_conn_close(&c);
}

static void test_openapi_served(void **state)
{
    (void)state;
    h_resp r = h_req(srv.port, "GET", "/openapi.json", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_string_equal(json_string_value(json_object_get(r.json, "openapi")), "3.1.0");
    assert_non_null(json_object_get(json_object_get(r.json, "paths"), "/api/me"));
    h_resp_free(&r);
}

static void test_metrics(void **state)
{
    (void)state;
    h_resp r = h_req(srv.port, "GET", "/healthz", NULL, NULL);
    h_resp_free(&r);
    r = h_req(srv.port, "GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "loom_http_requests_total{route=\"GET /healthz\",status=\"200\"}"));
    assert_non_null(strstr(r.body, "loom_http_requests_total{route=\"unmatched\",status=\"431\"}"));
    assert_non_null(strstr(r.body, "loom_http_request_duration_seconds_bucket{route=\"GET /healthz\",le=\"+Inf\"}"));
    assert_non_null(strstr(r.body, "loom_pool_workers 2"));
    assert_non_null(strstr(r.body, "loom_db_connections_up 2"));
    h_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_pipelining_in_order),
        cmocka_unit_test(test_headers_too_large_431),
        cmocka_unit_test(test_body_too_large_413_before_body),
        cmocka_unit_test(test_chunked_body_over_limit_413),
        cmocka_unit_test(test_chunked_body_accepted),
        cmocka_unit_test(test_smuggling_rejected),
        cmocka_unit_test(test_slow_headers_408),
        cmocka_unit_test(test_idle_connection_closed),
        cmocka_unit_test(test_slow_reader_does_not_block_others),
        cmocka_unit_test(test_routing_errors),
        cmocka_unit_test(test_request_ids),
        cmocka_unit_test(test_request_log_line),
        cmocka_unit_test(test_http10_closes),
        cmocka_unit_test(test_openapi_served),
        cmocka_unit_test(test_metrics),
    };
    return cmocka_run_group_tests_name("e2e_http", tests, setup, teardown);
}
