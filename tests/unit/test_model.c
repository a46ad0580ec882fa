/* test_model.c - engine/model: every fixture folder under tests/fixtures/model
 * ({bundle.json, expected.json}: the exact set of [path, code] problems),
 * hostile bundles, and the directory layout. No database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "model/bundle.h"
#include "model/validate.h"

#ifndef FIXTURES_DIR
#error FIXTURES_DIR must name tests/fixtures
#endif

/* "path code" strings of problems, as a sorted, newline-joined text. */
static char *problem_set(json_t *list, bool pairs)
{
    size_t n = json_array_size(list), i;
    char **lines = calloc(n + 1, sizeof *lines);
    json_t *p;
    json_array_foreach(list, i, p)
    {
        const char *path = pairs ? json_string_value(json_array_get(p, 0)) : json_string_value(json_object_get(p, "path"));
        const char *code = pairs ? json_string_value(json_array_get(p, 1)) : json_string_value(json_object_get(p, "code"));
        if (asprintf(&lines[i], "%s %s", path ? path : "?", code ? code : "?") < 0)
            abort();
    }
    for (size_t a = 0; a < n; a++)
        for (size_t b = a + 1; b < n; b++)
            if (strcmp(lines[b], lines[a]) < 0) {
                char *t = lines[a];
                lines[a] = lines[b];
                lines[b] = t;
            }
    buf out = {0};
    for (size_t a = 0; a < n; a++) {
        buf_puts(&out, lines[a]);
        buf_puts(&out, "\n");
        free(lines[a]);
    }
    free(lines);
    return out.data ? out.data : strdup("");
}

static void test_fixtures(void **state)
{
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/model", FIXTURES_DIR);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    int cases = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char bpath[2048], epath[2048], err[512];
        snprintf(bpath, sizeof bpath, "%s/%s/bundle.json", dir, e->d_name);
        snprintf(epath, sizeof epath, "%s/%s/expected.json", dir, e->d_name);
        json_t *bundle = bundle_load(bpath, err, sizeof err);
        if (!bundle)
            fail_msg("%s: %s", e->d_name, err);
        json_t *expected = json_load_file(epath, 0, NULL);
        assert_non_null(expected);
        json_t *got = model_validate(bundle);
        char *want_s = problem_set(expected, true), *got_s = problem_set(got, false);
        if (strcmp(want_s, got_s) != 0)
            fail_msg("fixture %s\nexpected:\n%s\ngot:\n%s", e->d_name, want_s, got_s);
        /* every problem carries a message */
        size_t i;
        json_t *p;
        json_array_foreach(got, i, p) assert_true(strlen(json_string_value(json_object_get(p, "message"))) > 0);
        free(want_s);
        free(got_s);
        json_decref(got);
        json_decref(expected);
        json_decref(bundle);
        cases++;
    }
    closedir(d);
    assert_true(cases >= 7);
}

static json_t *minimal_app(void)
{
    return json_pack("{s:s, s:{s:s, s:s}, s:[]}", "format", "loom.app/1", "app", "id", "t", "label", "T", "forms");
}

static void test_hostile_many_fields(void **state)
{
    (void)state;
    json_t *b = minimal_app();
    json_t *fields = json_array();
    for (int i = 0; i < 100000; i++) {
        char id[32];
        snprintf(id, sizeof id, "f%d", i);
        json_array_append_new(fields, json_pack("{s:s, s:s}", "id", id, "type", "text"));
    }
    json_array_append_new(json_object_get(b, "forms"), json_pack("{s:s, s:o}", "id", "big", "fields", fields));
    json_t *got = model_validate(b);
    assert_int_equal(json_array_size(got), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(got, 0), "code")), "too_many");
    assert_string_equal(json_string_value(json_object_get(json_array_get(got, 0), "path")), "/forms/0/fields");
    json_decref(got);
    json_decref(b);
}

/* Formulas that depend on each other in a circle, however the names are written */
static void test_formula_cycles(void **state)
{
    (void)state;
    const char *pairs[][2] = {
        {"b .. 'x'", "'y' .. a"},
        {"b..'x'", "'y'..a"},                         /* no spaces around the concatenation */
        {"[[it's]] .. b", "-- don't\n a"},          /* quotes in a long string and a comment */
        {"({b = 1}).b + b", "a"},                     /* a field named like a formula, and the formula */
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        json_t *b = minimal_app();
        json_t *fields = json_pack("[{s:s, s:s, s:s}, {s:s, s:s, s:s}, {s:s, s:s}]", "id", "a", "type", "text", "formula",
                                   pairs[i][0], "id", "b", "type", "text", "formula", pairs[i][1], "id", "c", "type", "text");
        json_array_append_new(json_object_get(b, "forms"), json_pack("{s:s, s:o}", "id", "f", "fields", fields));
        json_t *got = model_validate(b);
        bool cycle = false;
        size_t k;
        json_t *p;
        json_array_foreach(got, k, p) cycle = cycle || !strcmp(json_string_value(json_object_get(p, "code")), "formula_cycle");
        if (!cycle)
            fail_msg("no cycle found in a = %s, b = %s", pairs[i][0], pairs[i][1]);
        json_decref(got);
        json_decref(b);
    }
    /* a field of a table is not a dependency: no cycle */
    json_t *b = minimal_app();
    json_array_append_new(json_object_get(b, "forms"),
                          json_pack("{s:s, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}]}", "id", "f", "fields", "id", "a", "type",
                                    "text", "formula", "({b = 'x'}).b", "id", "b", "type", "text", "formula", "a"));
    json_t *got = model_validate(b);
    assert_int_equal(json_array_size(got), 0);
    json_decref(got);
    json_decref(b);
}

static void test_hostile_text(void **state)
{
    (void)state;
    char err[256];
    /* nesting far deeper than any bundle needs */
    buf deep = {0};
    for (int i = 0; i < 100000; i++)
        buf_puts(&deep, "[");
    for (int i = 0; i < 100000; i++)
        buf_puts(&deep, "]");
    assert_null(bundle_parse(deep.data, deep.len, err, sizeof err));
    assert_non_null(strstr(err, "nested deeper"));
    buf_free(&deep);
    /* duplicate keys */
    const char *dup = "{\"format\": \"loom.app/1\", \"format\": \"loom.app/1\"}";
    assert_null(bundle_parse(dup, strlen(dup), err, sizeof err));
    assert_non_null(strstr(err, "duplicate"));
    /* a NUL inside an identifier is not even JSON we accept */
    const char *nul = "{\"id\": \"a\\u0000b\"}";
    assert_null(bundle_parse(nul, strlen(nul), err, sizeof err));
    /* brackets inside strings do not count as nesting */
    const char *str = "{\"x\": \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}";
    json_t *ok = bundle_parse(str, strlen(str), err, sizeof err);
    assert_non_null(ok);
    json_decref(ok);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_directory_layout(void **state)
{
    (void)state;
    char dir[] = "/tmp/loom-bundle.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[512];
    const char *subs[] = {"forms", "rules", "data"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, subs[i]);
        mkdir(p, 0755);
    }
    snprintf(p, sizeof p, "%s/app.json", dir);
    write_file(p, "{\"format\": \"loom.app/1\", \"app\": {\"id\": \"d\", \"label\": \"D\"}}");
    snprintf(p, sizeof p, "%s/forms/b.json", dir);
    write_file(p, "{\"id\": \"b\", \"fields\": [{\"id\": \"a\", \"type\": \"ref\", \"form\": \"a\"}]}");
    snprintf(p, sizeof p, "%s/forms/a.json", dir);
    write_file(p, "{\"id\": \"a\", \"fields\": [{\"id\": \"name\", \"type\": \"text\"}]}");
    snprintf(p, sizeof p, "%s/rules/greet.json", dir);
    write_file(p, "{\"id\": \"greet\", \"form\": \"a\", \"on\": \"create\", \"script_file\": \"greet.lua\"}");
    snprintf(p, sizeof p, "%s/rules/greet.lua", dir);
    write_file(p, "record.name = record.name or 'x'\n");
    snprintf(p, sizeof p, "%s/data/a.csv", dir);
    write_file(p, "name\nAlice\n");
    char err[512];
    json_t *b = bundle_load(dir, err, sizeof err);
    if (!b)
        fail_msg("%s", err);
    /* files load in name order; the script is read in */
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(b, "forms"), 0), "id")), "a");
    json_t *rule = json_array_get(json_object_get(b, "rules"), 0);
    assert_string_equal(json_string_value(json_object_get(rule, "script")), "record.name = record.name or 'x'\n");
    assert_string_equal(json_string_value(json_object_get(rule, "script_file")), "greet.lua");
    assert_string_equal(json_string_value(json_object_get(json_object_get(b, "data"), "a")), "name\nAlice\n");
    json_t *problems = model_validate(b);
    assert_int_equal(json_array_size(problems), 0);
    json_decref(problems);
    json_decref(b);

    /* a broken file names itself */
    snprintf(p, sizeof p, "%s/forms/c.json", dir);
    write_file(p, "{\"id\": \"c\",");
    assert_null(bundle_load(dir, err, sizeof err));
    assert_non_null(strstr(err, "forms/c.json"));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_hostile_many_fields),
        cmocka_unit_test(test_formula_cycles),
        cmocka_unit_test(test_hostile_text),
        cmocka_unit_test(test_directory_layout),
    };
    return cmocka_run_group_tests_name("unit_model", tests, NULL, NULL);
}
