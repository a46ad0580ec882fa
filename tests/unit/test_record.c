/* test_record.c - engine/form/record: every field type's coercion as a
 * table of {field, input, canonical value or error code}, then whole
 * records: all problems at once, paths into subform rows, system fields
 * apart, readonly and computed fields, required on create and update. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "form/csv.h"
#include "form/record.h"

static const struct {
    const char *field, *input, *want;   /* want: canonical JSON, or "!code" */
} cases[] = {
    {"{\"type\":\"text\",\"max_length\":5}", "\"abc\"", "\"abc\""},
    {"{\"type\":\"text\",\"max_length\":5}", "\"张三李四王五\"", "!too_long"},
    {"{\"type\":\"text\",\"max_length\":6}", "\"张三李四王五\"", "\"张三李四王五\""},   /* characters, not bytes */
    {"{\"type\":\"text\",\"min_length\":2}", "\"a\"", "!too_short"},
    {"{\"type\":\"text\"}", "12", "!type"},
    {"{\"type\":\"text\",\"pattern\":\"^[A-HJ-NPR-Z0-9]{17}$\"}", "\"LSVAB4182E2123456\"", "\"LSVAB4182E2123456\""},
    {"{\"type\":\"text\",\"pattern\":\"^[A-HJ-NPR-Z0-9]{17}$\"}", "\"LSVAB4182E212345O\"", "!pattern"},
    {"{\"type\":\"text\",\"pattern\":\"^(a+)+$\"}", "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!\"", "!pattern"},   /* catastrophic, capped */
    {"{\"type\":\"email\"}", "\"ana@example.com\"", "\"ana@example.com\""},
    {"{\"type\":\"email\"}", "\"ana@example\"", "!pattern"},
    {"{\"type\":\"email\"}", "\"a b@example.com\"", "!pattern"},
    {"{\"type\":\"phone\"}", "\"+86 138-0013-8000\"", "\"+86 138-0013-8000\""},
    {"{\"type\":\"phone\"}", "\"call me\"", "!pattern"},
    {"{\"type\":\"url\"}", "\"https://loom.example/x\"", "\"https://loom.example/x\""},
    {"{\"type\":\"url\"}", "\"javascript:alert(1)\"", "!pattern"},
    {"{\"type\":\"integer\",\"min\":0}", "42", "42"},
    {"{\"type\":\"integer\",\"min\":0}", "-1", "!too_small"},
    {"{\"type\":\"integer\",\"max\":10}", "11", "!too_large"},
    {"{\"type\":\"integer\"}", "3.0", "3"},
    {"{\"type\":\"integer\"}", "3.5", "!type"},
    {"{\"type\":\"integer\"}", "\"3\"", "!type"},
    {"{\"type\":\"decimal\",\"scale\":2}", "\"1234.5\"", "\"1234.50\""},
    {"{\"type\":\"decimal\",\"scale\":2}", "1234.5", "\"1234.50\""},
    {"{\"type\":\"decimal\",\"scale\":2}", "7", "\"7.00\""},
    {"{\"type\":\"decimal\",\"scale\":2}", "\"0.125\"", "!type"},
    {"{\"type\":\"decimal\",\"precision\":5,\"scale\":2}", "\"1234.5\"", "!too_large"},
    {"{\"type\":\"decimal\",\"precision\":5,\"scale\":2}", "\"-999.99\"", "\"-999.99\""},
    {"{\"type\":\"decimal\",\"scale\":2}", "\"-0\"", "\"0.00\""},
    {"{\"type\":\"decimal\",\"scale\":2}", "\"007.10\"", "\"7.10\""},
    {"{\"type\":\"decimal\",\"scale\":2}", "\"1e5\"", "!type"},
    {"{\"type\":\"decimal\",\"precision\":38,\"scale\":0}", "\"12345678901234567890\"", "\"12345678901234567890\""},
    {"{\"type\":\"decimal\",\"precision\":38,\"scale\":2}", "\"12345678901234567890.12\"", "\"12345678901234567890.12\""},
    {"{\"type\":\"decimal\",\"scale\":10,\"precision\":20}", "0.1234567890123456789", "!type"},   /* > 15 digits as a number */
    {"{\"type\":\"money\",\"min\":\"0\"}", "\"-1\"", "!too_small"},
    {"{\"type\":\"money\"}", "\"12800\"", "\"12800.00\""},
    {"{\"type\":\"boolean\"}", "true", "true"},
    {"{\"type\":\"boolean\"}", "\"yes\"", "!type"},
    {"{\"type\":\"date\"}", "\"2026-02-28\"", "\"2026-02-28\""},
    {"{\"type\":\"date\"}", "\"2026-02-29\"", "!type"},
    {"{\"type\":\"date\"}", "\"2024-02-29\"", "\"2024-02-29\""},
    {"{\"type\":\"date\",\"min\":\"2026-01-01\"}", "\"2025-12-31\"", "!too_small"},
    {"{\"type\":\"date\"}", "\"22/11/2026\"", "!type"},
    {"{\"type\":\"datetime\"}", "\"2026-11-22T09:30:00Z\"", "\"2026-11-22T09:30:00Z\""},
    {"{\"type\":\"datetime\"}", "\"2026-11-22T17:30:00+08:00\"", "\"2026-11-22T09:30:00Z\""},
    {"{\"type\":\"datetime\"}", "\"2026-11-22T01:30:00.123-03:00\"", "\"2026-11-22T04:30:00Z\""},
    {"{\"type\":\"datetime\"}", "\"2026-11-22T09:30:00\"", "!type"},
    {"{\"type\":\"datetime\"}", "\"2026-11-22 09:30\"", "!type"},
    {"{\"type\":\"datetime\"}", "\"2026-11-22t09:30:00z\"", "\"2026-11-22T09:30:00Z\""},
    {"{\"type\":\"datetime\"}", "\"2026-12-31T23:59:60Z\"", "\"2026-12-31T23:59:59Z\""},
    {"{\"type\":\"datetime\"}", "\"2026-11-22T00:30:00+01:00\"", "\"2026-11-21T23:30:00Z\""},
    {"{\"type\":\"datetime\"}", "\"0999-01-02T03:04:05Z\"", "\"0999-01-02T03:04:05Z\""},
    {"{\"type\":\"datetime\"}", "\"0999-01-02T03:04:05+01:00\"", "\"0999-01-02T02:04:05Z\""},
    {"{\"type\":\"datetime\"}", "\"0001-01-01T00:30:00+01:00\"", "!type"},
    {"{\"type\":\"datetime\"}", "\"2026-02-29T09:30:00Z\"", "!type"},
    {"{\"type\":\"datetime\"}", "\"2026-11-22T24:00:00Z\"", "!type"},
    {"{\"type\":\"datetime\"}", "\"+202-11-22T09:30:00Z\"", "!type"},
    {"{\"type\":\"datetime\"}", "\"2026-11-22T09:30:00Zjunk\"", "!type"},
    {"{\"type\":\"datetime\"}", "\"2026-1-22T09:30:00Z\"", "!type"},
    {"{\"type\":\"select\",\"options\":[{\"value\":\"vip\"},{\"value\":\"gold\"}]}", "\"gold\"", "\"gold\""},
    {"{\"type\":\"select\",\"options\":[{\"value\":\"vip\"}]}", "\"platinum\"", "!not_an_option"},
    {"{\"type\":\"multiselect\",\"options\":[{\"value\":\"a\"},{\"value\":\"b\"}]}", "[\"b\",\"a\"]", "[\"b\",\"a\"]"},
    {"{\"type\":\"multiselect\",\"options\":[{\"value\":\"a\"}]}", "[\"a\",\"a\"]", "!type"},
    {"{\"type\":\"multiselect\",\"options\":[{\"value\":\"a\"}]}", "[\"z\"]", "!not_an_option"},
    {"{\"type\":\"multiselect\",\"options\":[{\"value\":\"a\"},{\"value\":\"b\"}],\"max_items\":1}", "[\"a\",\"b\"]", "!too_long"},
    {"{\"type\":\"ref\",\"form\":\"customer\"}", "7", "7"},
    {"{\"type\":\"ref\",\"form\":\"customer\"}", "{\"id\":7,\"title\":\"x\"}", "7"},
    {"{\"type\":\"ref\",\"form\":\"customer\"}", "0", "!type"},
    {"{\"type\":\"ref\",\"form\":\"customer\"}", "\"7\"", "!type"},
    {"{\"type\":\"user\"}", "3", "3"},
    {"{\"type\":\"file\"}", "{\"id\":\"f1\",\"name\":\"a.pdf\",\"size\":10}",
     "{\"id\":\"f1\",\"name\":\"a.pdf\",\"size\":10,\"content_type\":null}"},
    {"{\"type\":\"file\",\"max_size\":5}", "{\"id\":\"f1\",\"size\":10}", "!too_large"},
    {"{\"type\":\"file\",\"multiple\":true}", "[{\"id\":\"f1\"},{\"id\":\"f2\"}]",
     "[{\"id\":\"f1\",\"name\":null,\"size\":null,\"content_type\":null},"
     "{\"id\":\"f2\",\"name\":null,\"size\":null,\"content_type\":null}]"},
    {"{\"type\":\"file\"}", "\"f1\"", "!type"},
};

static void test_field_types(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *field = json_loads(cases[i].field, 0, NULL);
        json_t *in = json_loads(cases[i].input, JSON_DECODE_ANY, NULL);
        assert_non_null(field);
        assert_non_null(in);
        const char *code = NULL;
        char msg[256] = "";
        json_t *out = field_coerce(field, in, &code, msg, sizeof msg);
        if (cases[i].want[0] == '!') {
            if (out || strcmp(code, cases[i].want + 1) != 0)
                fail_msg("case %zu %s <- %s: want %s, got %s", i, cases[i].field, cases[i].input, cases[i].want,
                         out ? json_dumps(out, JSON_ENCODE_ANY) : code);
            assert_true(strlen(msg) > 0);
        } else {
            json_t *want = json_loads(cases[i].want, JSON_DECODE_ANY, NULL);
            if (!out || !json_equal(out, want))
                fail_msg("case %zu %s <- %s: want %s, got %s (%s)", i, cases[i].field, cases[i].input, cases[i].want,
                         out ? json_dumps(out, JSON_ENCODE_ANY) : code, msg);
            json_decref(want);
        }
        json_decref(out);
        json_decref(field);
        json_decref(in);
    }
}

static void test_text_default_length(void **state)
{
    (void)state;
    json_t *field = json_pack("{s:s}", "type", "text");
    char s[202];
    memset(s, 'x', 201);
    s[201] = '\0';
    const char *code;
    char msg[128];
    json_t *v = json_string(s);
    assert_null(field_coerce(field, v, &code, msg, sizeof msg));   /* 201 > the default 200 */
    assert_string_equal(code, "too_long");
    json_decref(v);
    s[200] = '\0';
    v = json_string(s);
    json_t *ok = field_coerce(field, v, &code, msg, sizeof msg);
    assert_non_null(ok);
    json_decref(ok);
    json_decref(v);
    json_decref(field);
}

static json_t *ticket_form(void)
{
    return json_loads(
        "{\"id\":\"service_ticket\",\"fields\":["
        "{\"id\":\"number\",\"type\":\"autonumber\"},"
        "{\"id\":\"customer\",\"type\":\"ref\",\"form\":\"customer\",\"required\":true},"
        "{\"id\":\"kind\",\"type\":\"select\",\"required\":true,\"options\":[{\"value\":\"repair\"}]},"
        "{\"id\":\"mileage_in\",\"type\":\"integer\",\"min\":0},"
        "{\"id\":\"total\",\"type\":\"money\",\"readonly\":true},"
        "{\"id\":\"amount\",\"type\":\"money\",\"formula\":\"1\"},"
        "{\"id\":\"parts\",\"type\":\"subform\",\"max_rows\":2,\"fields\":["
        "  {\"id\":\"part\",\"type\":\"ref\",\"form\":\"product\",\"required\":true},"
        "  {\"id\":\"qty\",\"type\":\"integer\",\"min\":1}]}]}",
        0, NULL);
}

static bool has(json_t *errors, const char *path, const char *code)
{
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e) if (!strcmp(json_string_value(json_object_get(e, "path")), path) &&
                                         !strcmp(json_string_value(json_object_get(e, "code")), code)) return true;
    return false;
}

/* What a CSV import takes as text: UTF-8, or GB18030 converted. */
static void test_csv_encodings(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool utf8;
    } cases[] = {
        {"plain", true},          {"张三 €", true},       {"\xF0\x9F\x9A\x97", true},   /* 🚗 */
        {"\xC0\xAF", false},      /* overlong "/" */    {"\xED\xA0\x80", false},      /* a surrogate */
        {"\xF4\x90\x80\x80", false}, /* past U+10FFFF */ {"\xE5\xBC", false},            /* cut short */
        {"\x80", false},           {"\xD5\xC5\xC8\xFD", false},                           /* 张三 in GB18030 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(csv_is_utf8(cases[i].s, strlen(cases[i].s)), cases[i].utf8);
    size_t n = 0;
    char *u = csv_from_gb18030("name\n\xD5\xC5\xC8\xFD,\x81\x30\x81\x30\n", 15, &n);   /* 2- and 4-byte forms */
    assert_non_null(u);
    assert_string_equal(u, "name\n张三,\xC2\x80\n");
    assert_int_equal(n, strlen(u));
    free(u);
    assert_null(csv_from_gb18030("\xFF\xFF", 2, &n));   /* neither */
    assert_null(csv_from_gb18030("\xFF\xFEn\0a\0m\0e\0", 10, &n));   /* UTF-16, as Excel's "Unicode text" */
}

/* A (multi)select cell names an option by its value, or else by its label in
 * any locale; what names none stays as written, for validation to report. */
static void test_csv_options(void **state)
{
    (void)state;
    json_t *f = json_loads("{\"id\": \"kind\", \"type\": \"select\", \"options\": [{\"value\": \"personal\", \"label\": "
                           "{\"zh-CN\": \"个人\", \"en\": \"Personal\"}}, {\"value\": \"fleet\", \"label\": \"车队\"}, "
                           "{\"value\": \"Fleet\"}]}", 0, NULL);
    static const char *const cases[][2] = {{"personal", "personal"}, {"个人", "personal"}, {"PERSONAL", "personal"},
                                           {"车队", "fleet"}, {"Fleet", "Fleet"}, {"团购", "团购"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *v = csv_value(f, cases[i][0]);
        assert_string_equal(json_string_value(v), cases[i][1]);
        json_decref(v);
    }
    json_object_set_new(f, "type", json_string("multiselect"));
    json_array_append_new(json_object_get(f, "options"), json_pack("{s:s, s:s}", "value", "big", "label", "Big, bold"));
    /* separated as people type them, in Chinese text too; a cell that names one option is that option */
    static const char *const lists[][2] = {
        {"个人; fleet ;车队;x", "[\"personal\",\"fleet\",\"fleet\",\"x\"]"},
        {"个人；车队", "[\"personal\",\"fleet\"]"},
        {"个人、车队，personal", "[\"personal\",\"fleet\",\"personal\"]"},
        {"个人, 车队", "[\"personal\",\"fleet\"]"},
        {"Big, bold", "[\"big\"]"},
        {"big;个人", "[\"big\",\"personal\"]"},
    };
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        json_t *v = csv_value(f, lists[i][0]);
        char *got = json_dumps(v, JSON_COMPACT);
        assert_string_equal(got, lists[i][1]);
        free(got);
        json_decref(v);
    }
    json_decref(f);
}

/* A header names a field by id or by label in any locale, with or without a template's "*". */
static void test_csv_headers(void **state)
{
    (void)state;
    json_t *fields = json_loads("[{\"id\": \"name\", \"type\": \"text\", \"label\": {\"zh-CN\": \"客户名称\", \"en\": "
                                "\"Name\"}}, {\"id\": \"star\", \"type\": \"text\", \"label\": \"*\"}]",
                                0, NULL);
    static const char *const cases[][2] = {{"name", "name"},   {"客户名称", "name"}, {"NAME", "name"},   {"*客户名称", "name"},
                                           {"客户名称*", "name"}, {"＊客户名称", "name"}, {"*name*", "name"}, {"*", "star"},
                                           {"**", ""},         {"*nope", ""},        {"客户", ""}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *f = csv_header_field(fields, cases[i][0]);
        assert_string_equal(f ? json_string_value(json_object_get(f, "id")) : "", cases[i][1]);
    }
    json_decref(fields);
}

/* Dates and booleans as spreadsheets write them. */
static void test_csv_spreadsheet_values(void **state)
{
    (void)state;
    json_t *date = json_pack("{s:s, s:s}", "id", "d", "type", "date"), *flag = json_pack("{s:s, s:s}", "id", "b", "type", "boolean");
    static const char *const dates[][2] = {{"2026/1/5", "2026-01-05"},     {"2026/11/22", "2026-11-22"},
                                           {"2026.1.5", "2026-01-05"},     {"2026-1-5", "2026-01-05"},
                                           {"2026年1月5日", "2026-01-05"}, {"2026-01-05", "2026-01-05"},
                                           {"1/5/2026", "1/5/2026"},       {"2026/13/1", "2026/13/1"},
                                           {"2026/1/5 9:30", "2026/1/5 9:30"}, {"26/1/5", "26/1/5"}};
    for (size_t i = 0; i < sizeof dates / sizeof dates[0]; i++) {
        json_t *v = csv_value(date, dates[i][0]);
        assert_string_equal(json_string_value(v), dates[i][1]);
        json_decref(v);
    }
    static const char *const local[][2] = {{"2026/1/5 9:30", "2026-01-05 09:30:00"},
                                           {"2026-01-05 23:30:15", "2026-01-05 23:30:15"},
                                           {"2026-01-05T09:30", "2026-01-05 09:30:00"},
                                           {"2026年1月5日 8:05", "2026-01-05 08:05:00"},
                                           {"2026-01-05T09:30:00Z", ""},
                                           {"2026-01-05T09:30:00+08:00", ""},
                                           {"2026/2/29 9:30", ""},
                                           {"2026/1/5 24:00", ""},
                                           {"2026/1/5", ""}};
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++) {
        char out[20] = "";
        bool ok = csv_local_datetime(local[i][0], out);
        assert_int_equal(ok, *local[i][1] != '\0');
        if (ok)
            assert_string_equal(out, local[i][1]);
    }
    static const char *const yes[] = {"是", "√", "✓", "TRUE", "y"}, *const no[] = {"否", "×", "✗", "False", "0"};
    for (size_t i = 0; i < 5; i++) {
        json_t *a = csv_value(flag, yes[i]), *b = csv_value(flag, no[i]);
        assert_true(json_is_true(a));
        assert_true(json_is_false(b));
        json_decref(a);
        json_decref(b);
    }
    json_decref(date);
    json_decref(flag);
}

static void test_records(void **state)
{
    (void)state;
    json_t *form = ticket_form();
    record_result r;

    /* everything wrong at once */
    json_t *body = json_loads("{\"id\": 5, \"_version\": 2, \"number\": \"ST-1\", \"total\": \"1\", \"amount\": \"2\","
                              " \"kind\": \"wash\", \"mileage_in\": -5, \"colour\": \"red\","
                              " \"parts\": [{\"part\": 3, \"qty\": 0}, {\"qty\": 1}, {\"part\": \"x\"}]}",
                              0, NULL);
    record_check(form, body, true, &r);
    assert_int_equal(json_array_size(r.system), 2);   /* id, _version: 400 by the API */
    const char *want[][2] = {{"/number", "readonly"}, {"/total", "readonly"}, {"/amount", "readonly"},
                             {"/kind", "not_an_option"}, {"/mileage_in", "too_small"}, {"/colour", "unknown_field"},
                             {"/parts", "too_many_rows"}, {"/customer", "required"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!has(r.errors, want[i][0], want[i][1]))
            fail_msg("missing %s %s in %s", want[i][0], want[i][1], json_dumps(r.errors, 0));
    assert_int_equal(json_array_size(r.errors), sizeof want / sizeof want[0]);
    record_result_free(&r);
    json_decref(body);

    /* rows are checked with their own paths */
    body = json_loads("{\"customer\": {\"id\": 9}, \"kind\": \"repair\", \"_owner\": 4,"
                      " \"parts\": [{\"id\": 11, \"part\": 3, \"qty\": 0}, {\"qty\": 1}]}",
                      0, NULL);
    record_check(form, body, true, &r);
    assert_true(has(r.errors, "/parts/0/qty", "too_small"));
    assert_true(has(r.errors, "/parts/1/part", "required"));
    assert_int_equal(json_array_size(r.errors), 2);
    assert_int_equal(json_integer_value(json_object_get(r.values, "customer")), 9);
    assert_int_equal(json_integer_value(json_object_get(r.values, "_owner")), 4);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(r.values, "parts"), 0), "id")), 11);
    record_result_free(&r);
    json_decref(body);

    /* an update checks only what it changes; null clears, except a required field */
    body = json_loads("{\"mileage_in\": null, \"kind\": null}", 0, NULL);
    record_check(form, body, false, &r);
    assert_int_equal(json_array_size(r.errors), 1);
    assert_true(has(r.errors, "/kind", "required"));
    assert_true(json_is_null(json_object_get(r.values, "mileage_in")));
    record_result_free(&r);
    json_decref(body);

    /* a clean create */
    body = json_loads("{\"customer\": 1, \"kind\": \"repair\", \"mileage_in\": 12000}", 0, NULL);
    record_check(form, body, true, &r);
    assert_int_equal(json_array_size(r.errors), 0);
    assert_int_equal(json_object_size(r.values), 3);
    record_result_free(&r);
    json_decref(body);

    json_t *not_object = json_array();
    record_check(form, not_object, true, &r);
    assert_int_equal(json_array_size(r.errors), 1);
    record_result_free(&r);
    json_decref(not_object);
    json_decref(form);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_types),
        cmocka_unit_test(test_text_default_length),
        cmocka_unit_test(test_csv_encodings),
        cmocka_unit_test(test_csv_options),
        cmocka_unit_test(test_csv_spreadsheet_values),
        cmocka_unit_test(test_csv_headers),
        cmocka_unit_test(test_records),
    };
    return cmocka_run_group_tests_name("unit_record", tests, NULL, NULL);
}
