/* test_perm.c - engine/perm: a matrix over role sets x forms x operations x
 * fields, on the contract's own permission example plus a subform field and
 * a "*" entry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perm/perm.h"

static json_t *bundle;

static int setup(void **state)
{
    (void)state;
    bundle = json_loads(
        "{\"forms\": ["
        " {\"id\": \"lead\", \"fields\": [{\"id\": \"name\"}, {\"id\": \"budget\"}, {\"id\": \"internal_note\"}, {\"id\": \"source\"}]},"
        " {\"id\": \"service_ticket\", \"fields\": [{\"id\": \"notes\"}, {\"id\": \"parts\", \"fields\": [{\"id\": \"part\"}, {\"id\": \"unit_cost\"}]}]}],"
        " \"permissions\": {"
        "  \"lead\": {\"sales\": {\"create\": true, \"read\": \"own\", \"update\": \"own\", \"delete\": false,"
        "                        \"fields\": {\"budget\": \"read\", \"internal_note\": \"hidden\"}},"
        "            \"sales_manager\": {\"create\": true, \"read\": \"all\", \"update\": \"all\", \"delete\": \"all\"},"
        "            \"marketing\": {\"read\": {\"filter\": {\"source\": \"campaign\"}}}},"
        "  \"service_ticket\": {\"technician\": {\"read\": \"team\", \"update\": true, \"fields\": {\"parts.unit_cost\": \"hidden\"}}},"
        "  \"*\": {\"auditor\": {\"read\": \"all\"}}}}",
        0, NULL);
    return bundle ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(bundle);
    return 0;
}

/* A scope as text: "-" none, else the alternatives joined by "|". */
static void scope_text(json_t *s, char *out, size_t n)
{
    if (!s) {
        snprintf(out, n, "-");
        return;
    }
    out[0] = '\0';
    size_t i;
    json_t *x;
    json_array_foreach(s, i, x)
    {
        char *t = json_dumps(x, JSON_ENCODE_ANY | JSON_COMPACT);
        size_t len = strlen(out);
        snprintf(out + len, n - len, "%s%s", i ? "|" : "", t);
        free(t);
    }
}

static const struct {
    const char *roles;       /* JSON array */
    bool platform_admin;
    const char *form;
    bool create;
    const char *read, *update, *remove;
    const char *modes;       /* "field=mode,..." for the fields checked */
} matrix[] = {
    {"[]", false, "lead", false, "-", "-", "-", "name=hidden,budget=hidden"},
    {"[\"ghost\"]", false, "lead", false, "-", "-", "-", "name=hidden"},
    {"[\"sales\"]", false, "lead", true, "\"own\"", "\"own\"", "-", "name=write,budget=read,internal_note=hidden,source=write"},
    {"[\"sales_manager\"]", false, "lead", true, "\"all\"", "\"all\"", "\"all\"", "budget=write,internal_note=write"},
    {"[\"marketing\"]", false, "lead", false, "{\"filter\":{\"source\":\"campaign\"}}", "-", "-", "name=write"},
    {"[\"sales\",\"marketing\"]", false, "lead", true, "\"own\"|{\"filter\":{\"source\":\"campaign\"}}", "\"own\"", "-",
     "budget=write,internal_note=write"},   /* the union: marketing restricts no field */
    {"[\"sales\",\"sales_manager\"]", false, "lead", true, "\"all\"", "\"all\"", "\"all\"", "budget=write"},
    {"[\"auditor\"]", false, "lead", false, "\"all\"", "-", "-", "name=write"},
    {"[\"auditor\"]", false, "service_ticket", false, "\"all\"", "-", "-", "parts.unit_cost=write"},
    {"[\"technician\"]", false, "service_ticket", false, "\"team\"", "\"all\"", "-",
     "notes=write,parts=write,parts.part=write,parts.unit_cost=hidden"},
    {"[\"technician\",\"auditor\"]", false, "service_ticket", false, "\"team\"|\"all\"", "\"all\"", "-",
     "parts.unit_cost=write"},
    {"[\"technician\"]", false, "lead", false, "-", "-", "-", "name=hidden"},
    {"[\"admin\"]", false, "lead", true, "\"all\"", "\"all\"", "\"all\"", "internal_note=write"},
    {"[]", true, "service_ticket", true, "\"all\"", "\"all\"", "\"all\"", "parts.unit_cost=write"},
};

static void test_matrix(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof matrix / sizeof matrix[0]; i++) {
        json_t *roles = json_loads(matrix[i].roles, 0, NULL);
        perm_decision d;
        perm_decide(bundle, matrix[i].form, roles, matrix[i].platform_admin, &d);
        char got[256];
        if (d.create != matrix[i].create)
            fail_msg("row %zu %s on %s: create %d", i, matrix[i].roles, matrix[i].form, d.create);
        json_t *scopes[] = {d.read, d.update, d.remove};
        const char *want[] = {matrix[i].read, matrix[i].update, matrix[i].remove};
        const char *names[] = {"read", "update", "delete"};
        for (int k = 0; k < 3; k++) {
            scope_text(scopes[k], got, sizeof got);
            /* "team"|"all" collapses to "all": the union is the widest */
            const char *w = !strcmp(want[k], "\"team\"|\"all\"") ? "\"all\"" : want[k];
            if (strcmp(got, w) != 0)
                fail_msg("row %zu %s on %s: %s is %s, want %s", i, matrix[i].roles, matrix[i].form, names[k], got, w);
        }
        char modes[256];
        snprintf(modes, sizeof modes, "%s", matrix[i].modes);
        for (char *tok = strtok(modes, ","); tok; tok = strtok(NULL, ",")) {
            char *eq = strchr(tok, '=');
            *eq = '\0';
            perm_mode m = perm_field(&d, tok);
            const char *mn = m == FIELD_WRITE ? "write" : m == FIELD_READ ? "read" : "hidden";
            if (strcmp(mn, eq + 1) != 0)
                fail_msg("row %zu %s on %s: field %s is %s, want %s", i, matrix[i].roles, matrix[i].form, tok, mn, eq + 1);
        }
        perm_free(&d);
        json_decref(roles);
    }
}

/* A role that may write a ref (on a form it creates or updates, the field in mode write, subform refs too)
 * but reads no record of the ref's form is warned about, once per field; nobody else is. */
static void test_warnings(void **state)
{
    (void)state;
    json_t *b = json_loads(
        "{\"app\": {\"roles\": [{\"id\": \"clerk\"}, {\"id\": \"boss\"}, {\"id\": \"reader\"}, {\"id\": \"viewer\"}]},"
        " \"forms\": ["
        "  {\"id\": \"order\", \"fields\": [{\"id\": \"customer\", \"type\": \"ref\", \"form\": \"customer\"},"
        "   {\"id\": \"agent\", \"type\": \"ref\", \"form\": \"customer\"}, {\"id\": \"note\", \"type\": \"text\"},"
        "   {\"id\": \"lines\", \"type\": \"subform\", \"fields\": [{\"id\": \"product\", \"type\": \"ref\", \"form\": \"product\"}]}]},"
        "  {\"id\": \"customer\", \"fields\": [{\"id\": \"name\", \"type\": \"text\"}]},"
        "  {\"id\": \"product\", \"fields\": [{\"id\": \"name\", \"type\": \"text\"}]},"
        "  {\"id\": \"ticket\", \"fields\": [{\"id\": \"title\", \"type\": \"text\", \"required\": true},"
        "   {\"id\": \"kind\", \"type\": \"text\", \"required\": true, \"default\": \"x\"},"
        "   {\"id\": \"no\", \"type\": \"autonumber\", \"required\": true},"
        "   {\"id\": \"rows\", \"type\": \"subform\", \"fields\": [{\"id\": \"qty\", \"type\": \"integer\", \"required\": true}]}]}],"
        " \"permissions\": {"
        "  \"order\": {\"clerk\": {\"create\": true, \"read\": \"own\", \"fields\": {\"agent\": \"read\"}},"
        "             \"boss\": {\"read\": \"all\", \"update\": \"all\"}, \"reader\": {\"read\": \"all\"}},"
        "  \"customer\": {\"boss\": {\"read\": \"all\"}},"
        "  \"product\": {\"clerk\": {\"read\": {\"filter\": {\"name\": \"x\"}}}},"
        "  \"ticket\": {\"clerk\": {\"create\": true, \"fields\": {\"title\": \"read\", \"kind\": \"read\", \"no\": \"read\","
        "                                                  \"rows.qty\": \"hidden\"}},"
        "             \"boss\": {\"update\": \"all\", \"fields\": {\"title\": \"read\"}},"
        "             \"reader\": {\"create\": true, \"fields\": {\"rows\": \"read\", \"rows.qty\": \"read\"}}}}}",
        0, NULL);
    assert_non_null(b);
    json_t *w = perm_warnings(b);
    char *got = json_dumps(w, JSON_COMPACT);
    assert_string_equal(got, "[{\"path\":\"/permissions/order/clerk\",\"code\":\"unreadable_ref\",\"message\":\"role \\\"clerk\\\" "
                             "may write order.customer but reads no customer record, so it can never fill it\"},"
                             "{\"path\":\"/permissions/ticket/clerk\",\"code\":\"unwritable_required\",\"message\":\"role \\\"clerk\\\" "
                             "may create ticket but cannot write its required field title, so it can never create one\"},"
                             "{\"path\":\"/permissions/ticket/clerk\",\"code\":\"unwritable_required\",\"message\":\"role \\\"clerk\\\" "
                             "may create ticket but cannot write its required field rows.qty, so it can never add a row\"},"
                             "{\"path\":\"/permissions/order/boss\",\"code\":\"unreadable_ref\",\"message\":\"role \\\"boss\\\" "
                             "may write order.lines.product but reads no product record, so it can never fill it\"}]");
    free(got);
    json_decref(w);
    json_decref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_matrix), cmocka_unit_test(test_warnings)};
    return cmocka_run_group_tests_name("unit_perm", tests, setup, teardown);
}
