/* test_sandbox.c - engine/rule/sandbox: expressions and scripts run with
 * their variables and nothing else; a battery of escape attempts fails
 * cleanly; and the run after each one sees a pristine environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rule/sandbox.h"

static sandbox *sb;

static int setup(void **state)
{
    (void)state;
    sandbox_limits lim = {.instructions = 1000000, .memory = 16u << 20};
    sb = sandbox_new(&lim);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sandbox_free(sb);
    return 0;
}

/* Compiles and runs code; returns the code, *out the result (caller frees). */
static loom_code run(const char *code, bool expression, json_t *vars, json_t **out, char *err)
{
    char key[64];
    static int seq;
    snprintf(key, sizeof key, "k%d", ++seq);
    int id = sandbox_compile(sb, key, code, strlen(code), expression, err, 512);
    if (id < 0)
        return LOOM_INVALID_DEFINITION;
    return sandbox_run(sb, id, vars, out, err, 512);
}

/* The environment is what it should be: a probe that a poisoned run would fail. */
static void assert_pristine(void)
{
    json_t *out = NULL;
    char err[512];
    const char *probe = "string.format('%d-%s', math.floor(2.5), table.concat({'a','b'})) .. tostring(pairs ~= nil) .."
                        " tostring(x == nil) .. type(os) .. ('ab'):upper() .. utf8.char(72)";
    loom_code c = run(probe, true, NULL, &out, err);
    if (c != LOOM_OK)
        fail_msg("probe failed: %s", err);
    assert_string_equal(json_string_value(out), "2-abtruetruenilABH");
    json_decref(out);
}

static void test_expressions(void **state)
{
    (void)state;
    json_t *vars = json_pack("{s:i, s:f, s:s, s:[{s:i}, {s:i}]}", "mileage", 12345, "price", 9.5, "name", "张三",
                             "parts", "qty", 2, "qty", 3);
    json_t *out;
    char err[512];
    assert_int_equal(run("mileage - mileage % 5000 + 5000", true, vars, &out, err), LOOM_OK);
    assert_int_equal(json_integer_value(out), 15000);
    json_decref(out);
    assert_int_equal(run("#parts > 0 and parts[2].qty * price", true, vars, &out, err), LOOM_OK);
    assert_true(json_real_value(out) == 28.5);
    json_decref(out);
    assert_int_equal(run("utf8.len(name)", true, vars, &out, err), LOOM_OK);
    assert_int_equal(json_integer_value(out), 2);
    json_decref(out);
    assert_int_equal(run("missing == nil", true, vars, &out, err), LOOM_OK);
    assert_true(json_is_true(out));
    json_decref(out);
    /* a script returns tables as JSON */
    assert_int_equal(run("local t = {} for i = 1, 3 do t[i] = i * i end return {squares = t, ok = true}", false,
                         NULL, &out, err),
                     LOOM_OK);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(out, "squares"), 2)), 9);
    json_decref(out);
    /* errors carry their line */
    assert_int_equal(run("local a = 1\nlocal b = nil\nreturn a + b", false, NULL, &out, err), LOOM_RULE_ERROR);
    assert_non_null(strstr(err, "script:3:"));
    /* does not compile */
    assert_int_equal(run("mileage +", true, vars, &out, err), LOOM_INVALID_DEFINITION);
    json_decref(vars);
}

/* A run's _ENV holds only the variables its chunk names: every way of naming one must still reach it,
 * and _ENV itself reaches them all. */
static void test_variables_a_chunk_names(void **state)
{
    (void)state;
    json_t *vars = json_pack("{s:s, s:s, s:i, s:s, s:i}", "a", "A", "b", "B", "n", 7, "s", "str", "x", 3);
    struct {
        const char *code;
        bool expression;
        const char *want;
    } cases[] = {
        {"a..b", true, "AB"},                                      /* concatenation without spaces */
        {"a .. b", true, "AB"},
        {"(\"q\\\"\" .. a) .. '\\'' .. b", true, "q\"A'B"},     /* escaped quotes in strings */
        {"[[it's]] .. a .. [==[ \"]] ]==] .. b", true, "it'sA \"]] B"},   /* long strings with quotes */
        {"-- don't\nreturn a .. b", false, "AB"},               /* a quote in a comment */
        {"--[==[ it's\n ]] ]==] return a .. b", false, "AB"},   /* a long comment */
        {"tostring(0x1e-x) .. tostring(1e-2 + x) .. tostring(3 ..x)", true, "273.0133"},   /* numerals */
        {"s:upper() .. s.len(s)", true, "STR3"},                  /* a method, a field of a variable */
        {"({n = 1}).n + n", true, "8"},                              /* a field named like a variable */
        {"({n = n}).n + ({x=1}).x", true, "8"},                     /* a key, then the variable */
        {"x = x + 1 return x", false, "4"},                          /* written, and read */
        {"_ENV['a'] .. rawget(_ENV, 'b')", true, "AB"},           /* _ENV: every variable */
        {"local t = {} for k, v in pairs(_ENV) do t[#t + 1] = k end table.sort(t) return table.concat(t, ',')", false,
         "a,b,n,s,x"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *out = NULL;
        char err[512];
        if (run(cases[i].code, cases[i].expression, vars, &out, err) != LOOM_OK)
            fail_msg("%s: %s", cases[i].code, err);
        char *got = json_is_string(out) ? strdup(json_string_value(out)) : json_dumps(out, JSON_ENCODE_ANY);
        if (strcmp(got, cases[i].want))
            fail_msg("%s: %s, not %s", cases[i].code, got, cases[i].want);
        free(got);
        json_decref(out);
    }
    json_decref(vars);
    assert_pristine();
}

static void test_globals_do_not_leak(void **state)
{
    (void)state;
    json_t *out;
    char err[512];
    assert_int_equal(run("x = 42 return x", false, NULL, &out, err), LOOM_OK);
    json_decref(out);
    assert_int_equal(run("return x", false, NULL, &out, err), LOOM_OK);
    assert_true(json_is_null(out));
    json_decref(out);
    assert_pristine();
}

/* Each attempt must fail (or do nothing), and leave the next run pristine. */
static void test_escapes(void **state)
{
    (void)state;
    const char *attempts[] = {
        /* the first ones answer true only if the escape hatch is there */
        "return os ~= nil",
        "return io ~= nil",
        "return require ~= nil",
        "return package ~= nil",
        "return load ~= nil",
        "return loadstring ~= nil",
        "return dofile ~= nil",
        "return loadfile ~= nil",
        "return collectgarbage ~= nil",
        "return debug ~= nil",
        "return string.dump ~= nil or ('').dump ~= nil",
        "return _G ~= nil",
        "setmetatable(_G, {__index = function() return 1 end})",
        "setmetatable(_ENV, {__index = {os = 1}})",
        "getmetatable(_ENV).__index.pairs = nil",
        "string.format = nil",
        "rawset(string, 'format', function() return 'x' end)",
        "rawset(math, 'floor', nil)",
        "getmetatable('').__index.upper = function() return 'x' end",
        "getmetatable(string).__index.format = nil",
        "local mt = getmetatable('') mt.__index = {}",
        "table.concat = nil",
        "setmetatable({}, {__gc = function() while true do end end})",
        "pairs = nil tostring = nil x = 1",                      /* only this run's globals */
        "return ('\\27Lua'):byte()",                             /* harmless: a string, not a chunk */
    };
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        json_t *out = NULL;
        char err[512] = "";
        loom_code c = run(attempts[i], false, NULL, &out, err);
        assert_true(c == LOOM_OK || c == LOOM_RULE_ERROR);
        if (c == LOOM_OK && i < 12 && !json_is_false(out))
            fail_msg("escape %zu is open: %s", i, attempts[i]);
        json_decref(out);
        assert_pristine();
    }
    /* binary chunks are never loaded, even when compiled by the host */
    char err[512];
    const char bytecode[] = "\x1bLua\x54\x00";
    assert_true(sandbox_compile(sb, "bytecode", bytecode, sizeof bytecode - 1, false, err, sizeof err) < 0);
}

static void test_budgets(void **state)
{
    (void)state;
    const char *bombs[] = {
        "while true do end",
        "while true do pcall(function() while true do end end) end",
        "local ok = pcall(function() while true do end end) return ok",   /* caught? no: the run ends */
        "xpcall(function() while true do end end, function() return 1 end) while true do end",
        "local s = 'x' for i = 1, 40 do s = s .. s end",
        "local ok = pcall(function() local s = 'x' for i = 1, 40 do s = s .. s end end) return ok",
        "local t = {} for i = 1, 1e9 do t[i] = i end",
    };
    for (size_t i = 0; i < sizeof bombs / sizeof bombs[0]; i++) {
        json_t *out = NULL;
        char err[512] = "";
        loom_code c = run(bombs[i], false, NULL, &out, err);
        if (c != LOOM_RULE_LIMIT)
            fail_msg("bomb %zu: %s ended with %d (%s)", i, bombs[i], (int)c, err);
        json_decref(out);
        assert_pristine();
    }
    /* caps inside C: string.rep and patterns fail fast with an error */
    const char *caps[] = {
        "return string.rep('x', 1e9)",
        "return ('x'):rep(1e8, ',')",
        "return string.find(string.rep('a', 50000), '.-.-.-.-.-b')",
        "return string.match(string.rep('a', 5000), '(.-)(.-)b')",
        "return string.gsub(string.rep('a', 1000), string.rep('a?', 150), '')",
    };
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        json_t *out = NULL;
        char err[512] = "";
        loom_code c = run(caps[i], false, NULL, &out, err);
        if (c != LOOM_RULE_ERROR && c != LOOM_RULE_LIMIT)
            fail_msg("cap %zu: %s ended with %d", i, caps[i], (int)c);
        json_decref(out);
        assert_pristine();
    }
    /* and ordinary patterns still work */
    json_t *out;
    char err[512];
    assert_int_equal(run("return ('粤A12345'):match('%d+') .. string.find('abc', 'b', 1, true)", false, NULL, &out, err),
                     LOOM_OK);
    assert_string_equal(json_string_value(out), "123452");
    json_decref(out);
}

static void test_helpers(void **state)
{
    (void)state;
    sandbox_set_clock(sb, "2026-11-22T09:30:00Z", "2026-11-22");
    json_t *out;
    char err[512];
    struct {
        const char *expr, *want;
    } cases[] = {
        {"now()", "2026-11-22T09:30:00Z"},
        {"today()", "2026-11-22"},
        {"date_add(today(), 10, 'days')", "2026-12-02"},
        {"date_add('2026-01-31', 1, 'month')", "2026-02-28"},
        {"date_add('2024-02-29', 1, 'year')", "2025-02-28"},
        {"date_add(now(), 2, 'hours')", "2026-11-22T11:30:00Z"},
        {"date_add('2026-12-30', 1, 'week')", "2027-01-06"},
        {"tostring(days_between('2026-11-01', today()))", "21"},
        {"tostring(hours_between('2026-11-22T07:00:00Z', now()))", "2.5"},
        {"tostring(sum_rows({{qty = 2}, {qty = 3}, {}}, 'qty'))", "5"},
        {"tostring(sum_rows({{amount = 1.5}, {amount = 2}}, 'amount'))", "3.5"},
        {"insurance_expiry < date_add(today(), 30) and 'due' or 'ok'", "due"},
    };
    json_t *vars = json_pack("{s:s}", "insurance_expiry", "2026-12-01");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        loom_code c = run(cases[i].expr, true, vars, &out, err);
        if (c != LOOM_OK)
            fail_msg("%s: %s", cases[i].expr, err);
        if (strcmp(json_string_value(out), cases[i].want) != 0)
            fail_msg("%s = %s, want %s", cases[i].expr, json_string_value(out), cases[i].want);
        json_decref(out);
    }
    json_decref(vars);
    assert_int_equal(run("date_add('not a date', 1)", true, NULL, &out, err), LOOM_RULE_ERROR);
    sandbox_set_clock(sb, NULL, NULL);
}

static void test_reject_is_final(void **state)
{
    (void)state;
    json_t *out = NULL;
    char err[512];
    assert_int_equal(run("reject('too expensive', 'price')", false, NULL, &out, err), LOOM_RULE_REJECTED);
    assert_string_equal(err, "too expensive");
    assert_string_equal(sandbox_rejected_field(sb), "price");
    /* pcall cannot catch it: the script does not go on */
    assert_int_equal(run("pcall(reject, 'no') return 'went on'", false, NULL, &out, err), LOOM_RULE_REJECTED);
    assert_int_equal(run("xpcall(function() reject('no') end, function() return 1 end) return 'went on'", false,
                         NULL, &out, err),
                     LOOM_RULE_REJECTED);
    assert_null(out);
    assert_int_equal(run("return 1", false, NULL, &out, err), LOOM_OK);   /* and the next run is normal */
    json_decref(out);
    assert_pristine();
}

static void test_cache(void **state)
{
    (void)state;
    char err[512];
    int a = sandbox_compile(sb, "same-key", "1 + 1", 5, true, err, sizeof err);
    int b = sandbox_compile(sb, "same-key", "1 + 1", 5, true, err, sizeof err);
    assert_true(a > 0);
    assert_int_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expressions),
        cmocka_unit_test(test_variables_a_chunk_names),
        cmocka_unit_test(test_globals_do_not_leak),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_budgets),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_reject_is_final),
        cmocka_unit_test(test_cache),
    };
    return cmocka_run_group_tests_name("unit_sandbox", tests, setup, teardown);
}
