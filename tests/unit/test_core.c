/* test_core.c - engine/core: arena, buf, the error table, secrets, metrics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/secret.h"
#include "metrics.h"

static int order[8], norder;
static void record_cb(void *p)
{
    order[norder++] = (int)(intptr_t)p;
}

static void test_arena_alignment_and_growth(void **state)
{
    (void)state;
    arena *a = arena_new();
    for (int i = 1; i < 200; i++) {
        void *p = arena_alloc(a, (size_t)i * 7);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xAB, (size_t)i * 7);
    }
    char *big = arena_alloc(a, 1 << 20);   /* larger than a block */
    memset(big, 1, 1 << 20);
    assert_true(arena_used(a) >= (1 << 20));
    assert_string_equal(arena_printf(a, "%s-%d", "x", 42), "x-42");
    assert_string_equal(arena_strndup(a, "abcdef", 3), "abc");
    char *z = arena_calloc(a, 64);
    for (int i = 0; i < 64; i++)
        assert_int_equal(z[i], 0);
    arena_reset(a);
    assert_int_equal(arena_used(a), 0);
    arena_free(a);
}

static void test_arena_defer_runs_in_reverse(void **state)
{
    (void)state;
    arena *a = arena_new();
    norder = 0;
    for (int i = 1; i <= 3; i++)
        arena_defer(a, record_cb, (void *)(intptr_t)i);
    arena_reset(a);
    assert_int_equal(norder, 3);
    assert_int_equal(order[0], 3);
    assert_int_equal(order[2], 1);
    arena_reset(a);   /* nothing runs twice */
    assert_int_equal(norder, 3);
    arena_defer(a, record_cb, (void *)(intptr_t)9);
    arena_free(a);
    assert_int_equal(order[3], 9);
}

/* JSON strings, plain and inside COPY text (every backslash doubled again) */
static void test_buf_json_string(void **state)
{
    (void)state;
    buf b = {0};
    buf_json_string(&b, "a\"b\\c\nd\te\x01" "f 引号", false);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\nd\\te\\u0001f 引号\"");
    json_t *back = json_loads(b.data, JSON_DECODE_ANY, NULL);
    assert_string_equal(json_string_value(back), "a\"b\\c\nd\te\x01" "f 引号");
    json_decref(back);
    buf_reset(&b);
    buf_json_string(&b, "a\"b\\c\n", true);
    assert_string_equal(b.data, "\"a\\\\\"b\\\\\\\\c\\\\n\"");
    buf_free(&b);
}

/* Every byte value at every place of strings of 3 to 21 bytes (the escaper
 * looks at eight bytes at a time, then at what is left) comes back from a
 * JSON parser as it went in. */
/* PostgreSQL's spaced-out JSON made compact; strings (escapes included) kept. */
static void test_buf_json_compact(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"[{\"id\" : 1, \"a b\" : \"x , y : z\"}, \n {\"id\" : 2}]", "[{\"id\":1,\"a b\":\"x , y : z\"},{\"id\":2}]"},
        {"{\"q\": \"say \\\" hi \\\\\", \"n\": null}", "{\"q\":\"say \\\" hi \\\\\",\"n\":null}"},
        {"\t[ ]\r\n", "[]"},
        {"\"\\u0020 \"", "\"\\u0020 \""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf b = {0};
        buf_puts(&b, "<");
        buf_json_compact(&b, cases[i].in, strlen(cases[i].in));
        buf_puts(&b, ">");
        char want[256];
        snprintf(want, sizeof want, "<%s>", cases[i].out);
        assert_string_equal(b.data, want);
        buf_free(&b);
    }
}

static void test_buf_json_string_every_byte(void **state)
{
    (void)state;
    buf b = {0};
    char s[22];
    for (size_t n = 3; n <= 21; n++) {
        for (int c = 1; c < 256; c++) {
            for (size_t at = 0; at < n; at++) {
                memset(s, 'x', n);
                s[n] = '\0';
                s[at] = (char)c;
                if (c >= 0x80)   /* a whole UTF-8 character: the parser checks it */
                    memcpy(s + (at < n - 3 ? at : n - 3), "\xe5\xbc\x95", 3);
                buf_reset(&b);
                buf_puts(&b, "x");   /* appended to what is there */
                buf_json_stringn(&b, s, n, false);
                assert_int_equal(b.len, strlen(b.data));
                json_t *back = json_loads(b.data + 1, JSON_DECODE_ANY, NULL);
                assert_non_null(back);
                assert_string_equal(json_string_value(back), s);
                json_decref(back);
                bool special = c < 0x20 || c == '"' || c == '\\';
                assert_int_equal(b.len,
                                 n + 3 + (special ? (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' ? 1 : 5) : 0));
            }
        }
    }
    buf_reset(&b);
    buf_json_stringn(&b, "", 0, false);
    assert_string_equal(b.data, "\"\"");
    buf_free(&b);
}

static void test_buf(void **state)
{
    (void)state;
    buf b = {0};
    for (int i = 0; i < 1000; i++)
        buf_printf(&b, "%d,", i);
    assert_int_equal(b.len, strlen(b.data));
    assert_memory_equal(b.data, "0,1,2,", 6);
    buf_consume(&b, 2);
    assert_memory_equal(b.data, "1,2,", 4);
    char longer[600];
    memset(longer, 'q', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    buf_reset(&b);
    buf_printf(&b, "<%s>", longer);   /* longer than the stack buffer */
    assert_int_equal(b.len, 601);
    buf_free(&b);
}

static void test_error_table(void **state)
{
    (void)state;
    for (int i = 0; i < LOOM_CODE_COUNT; i++) {
        const char *name = loom_code_name((loom_code)i);
        assert_int_equal(loom_code_lookup(name), i);   /* names are unique */
        int st = loom_code_status((loom_code)i);
        assert_true(i == LOOM_OK ? st == 200 : (st >= 400 && st < 600));
        assert_string_not_equal(loom_http_reason(st), "Unknown");
        const char *t = loom_code_title((loom_code)i);
        assert_true(t[0] >= 'a' && t[0] <= 'z');   /* house style: lower case, no period */
        assert_int_not_equal(t[strlen(t) - 1], '.');
    }
    assert_int_equal(loom_code_lookup("no_such_code"), LOOM_CODE_COUNT);
    assert_int_equal(loom_code_status(LOOM_VALIDATION_FAILED), 422);
    assert_int_equal(loom_code_status(LOOM_HEADERS_TOO_LARGE), 431);
    assert_int_equal(loom_code_from_sqlstate("23505"), LOOM_NOT_UNIQUE);
    assert_int_equal(loom_code_from_sqlstate("23503"), LOOM_CONFLICT);
    assert_int_equal(loom_code_from_sqlstate("40001"), LOOM_CONFLICT);
    assert_int_equal(loom_code_from_sqlstate("08006"), LOOM_UNAVAILABLE);
    assert_int_equal(loom_code_from_sqlstate("08P01"), LOOM_INTERNAL);   /* a protocol violation is a bug of ours */
    assert_int_equal(loom_code_from_sqlstate("57P01"), LOOM_UNAVAILABLE);
    assert_int_equal(loom_code_from_sqlstate(NULL), LOOM_UNAVAILABLE);
    assert_int_equal(loom_code_from_sqlstate("42P01"), LOOM_INTERNAL);
}

static void test_sha256_and_base64url(void **state)
{
    (void)state;
    char hex[SECRET_HASH_HEX];
    secret_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    char out[16];
    secret_base64url((const unsigned char *)"\xfb\xff", 2, out);
    assert_string_equal(out, "-_8");
    secret_base64url((const unsigned char *)"foobar", 6, out);
    assert_string_equal(out, "Zm9vYmFy");
    secret_base64url((const unsigned char *)"f", 1, out);
    assert_string_equal(out, "Zg");
    /* and back */
    unsigned char raw[16];
    assert_int_equal(secret_base64url_decode("Zm9vYmFy", raw), 6);
    assert_memory_equal(raw, "foobar", 6);
    assert_int_equal(secret_base64url_decode("-_8", raw), 2);
    assert_memory_equal(raw, "\xfb\xff", 2);
    assert_int_equal(secret_base64url_decode("Zg", raw), 1);
    assert_int_equal(raw[0], 'f');
    assert_int_equal(secret_base64url_decode("", raw), 0);
    assert_int_equal(secret_base64url_decode("Zm9v=", raw), -1);   /* padding is not base64url */
    assert_int_equal(secret_base64url_decode("Z", raw), -1);
    assert_int_equal(secret_base64url_decode("Zm+v", raw), -1);
}

static void test_tokens(void **state)
{
    (void)state;
    char a[SECRET_TOKEN_LEN], b[SECRET_TOKEN_LEN];
    secret_token_new("lt_", a);
    secret_token_new("lt_", b);
    assert_int_equal(strlen(a), 46);   /* "lt_" + 43 characters = 256 bits */
    assert_string_not_equal(a, b);
    for (const char *p = a + 3; *p; p++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *p));
}

static void test_passwords(void **state)
{
    (void)state;
    char h[SECRET_PWHASH_LEN], h2[SECRET_PWHASH_LEN];
    assert_true(secret_password_hash("correct horse", h));
    assert_true(secret_password_hash("correct horse", h2));
    assert_string_not_equal(h, h2);   /* salted */
    assert_non_null(strstr(h, "$argon2id$v=19$m=19456,t=2,p=1$"));
    assert_true(secret_password_verify(h, "correct horse"));
    assert_false(secret_password_verify(h, "correct horsf"));
    assert_false(secret_password_verify(NULL, "anything"));
    assert_false(secret_password_verify("not a hash", "loom-dummy-password"));
}

static void test_metrics_render(void **state)
{
    (void)state;
    const char *names[] = {"GET /a", "POST /b"};
    metrics *m = metrics_new(2, names);
    metrics_observe(m, 0, 200, 0.0001);
    metrics_observe(m, 0, 200, 0.003);
    metrics_observe(m, 1, 422, 2.0);
    metrics_observe(m, -1, 404, 0.0001);
    metrics_observe(m, 1, 299, 0.0001);   /* a status without a slot */
    metrics_gauges g = {.workers = 4, .workers_busy = 1, .queued = 0, .connections = 3, .db_connections_up = 4};
    buf out = {0};
    metrics_render(m, &g, &out);
    assert_non_null(strstr(out.data, "loom_http_requests_total{route=\"GET /a\",status=\"200\"} 2\n"));
    assert_non_null(strstr(out.data, "loom_http_requests_total{route=\"POST /b\",status=\"422\"} 1\n"));
    assert_non_null(strstr(out.data, "loom_http_requests_total{route=\"POST /b\",status=\"other0\"} 1\n") ||
                    strstr(out.data, "route=\"POST /b\",status=\"other"));
    assert_non_null(strstr(out.data, "loom_http_requests_total{route=\"unmatched\",status=\"404\"} 1\n"));
    /* cumulative buckets */
    assert_non_null(strstr(out.data, "loom_http_request_duration_seconds_bucket{route=\"GET /a\",le=\"0.0005\"} 1\n"));
    assert_non_null(strstr(out.data, "loom_http_request_duration_seconds_bucket{route=\"GET /a\",le=\"0.005\"} 2\n"));
    assert_non_null(strstr(out.data, "loom_http_request_duration_seconds_count{route=\"GET /a\"} 2\n"));
    assert_non_null(strstr(out.data, "loom_pool_workers 4\n"));
    buf_free(&out);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alignment_and_growth),
        cmocka_unit_test(test_arena_defer_runs_in_reverse),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_buf_json_string),
        cmocka_unit_test(test_buf_json_string_every_byte),
        cmocka_unit_test(test_buf_json_compact),
        cmocka_unit_test(test_error_table),
        cmocka_unit_test(test_sha256_and_base64url),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_passwords),
        cmocka_unit_test(test_metrics_render),
    };
    return cmocka_run_group_tests_name("unit_core", tests, NULL, NULL);
}
