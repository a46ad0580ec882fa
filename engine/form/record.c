/* record.c - field types as a table of coercers, and whole-record checks
 * (see record.h). Each coercer takes any JSON value and returns the
 * canonical value or NULL with a value error code. */
#include "form/record.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "model/bundle.h"

#define PATTERN_MATCH_LIMIT 100000

static const char *const system_fields[] = {"id", "_version", "_state", "_created_at", "_created_by",
                                            "_updated_at", "_updated_by", NULL};

typedef json_t *(*coerce_fn)(json_t *field, json_t *v, const char **code, char *msg, size_t n);

static json_t *bad(const char **code, const char *c, char *msg, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static json_t *bad(const char **code, const char *c, char *msg, size_t n, const char *fmt, ...)
{
    *code = c;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, n, fmt, ap);
    va_end(ap);
    return NULL;
}

static long long prop_int(json_t *field, const char *key, long long dflt)
{
    json_t *v = json_object_get(field, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

size_t record_text_length(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

/* ---- text and its kin ---- */

static bool pattern_matches(const char *pattern, const char *s, size_t len, bool *ok)
{
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &err, &off, NULL);
    *ok = re != NULL;
    if (!re)
        return false;
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(mc, PATTERN_MATCH_LIMIT);   /* no pattern runs away on a hostile value */
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = pcre2_match(re, (PCRE2_SPTR)s, len, 0, 0, md, mc);
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    pcre2_code_free(re);
    return rc >= 0;
}

static json_t *text_like(json_t *field, json_t *v, const char **code, char *msg, size_t n, long long dflt_max)
{
    const char *s = json_string_value(v);
    if (!s)
        return bad(code, "type", msg, n, "must be text");
    size_t len = record_text_length(s);
    long long mn = prop_int(field, "min_length", 0), mx = prop_int(field, "max_length", dflt_max);
    if ((long long)len < mn)
        return bad(code, "too_short", msg, n, "must be at least %lld characters", mn);
    if ((long long)len > mx)
        return bad(code, "too_long", msg, n, "must be at most %lld characters", mx);
    const char *pattern = json_string_value(json_object_get(field, "pattern"));
    bool compiled;
    if (pattern && !pattern_matches(pattern, s, json_string_length(v), &compiled))
        return bad(code, "pattern", msg, n, "does not match the required pattern");
    return json_incref(v);
}

/* The max_length of each text kind when the field sets none. */
enum { MAX_TEXT = 200, MAX_LONGTEXT = 100000, MAX_EMAIL = 254, MAX_PHONE = 32, MAX_URL = 2000 };

long long field_max_length(json_t *f)
{
    static const struct {
        const char *type;
        long long max;
    } kinds[] = {{"text", MAX_TEXT}, {"longtext", MAX_LONGTEXT}, {"email", MAX_EMAIL}, {"phone", MAX_PHONE}, {"url", MAX_URL}};
    const char *t = json_string_value(json_object_get(f, "type"));
    for (size_t i = 0; t && i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(t, kinds[i].type))
            return prop_int(f, "max_length", kinds[i].max);
    return 0;
}

static json_t *c_text(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    return text_like(f, v, c, m, n, MAX_TEXT);
}

static json_t *c_longtext(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    return text_like(f, v, c, m, n, MAX_LONGTEXT);
}

static json_t *c_email(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    json_t *r = text_like(f, v, c, m, n, MAX_EMAIL);
    const char *s = json_string_value(r);
    const char *at = s ? strchr(s, '@') : NULL;
    if (r && (!at || at == s || strchr(at + 1, '@') || !strchr(at + 1, '.') || strpbrk(s, " \t\r\n<>,;\"") ||
              at[1] == '.' || s[strlen(s) - 1] == '.')) {
        json_decref(r);
        return bad(c, "pattern", m, n, "must be an email address");
    }
    return r;
}

static json_t *c_phone(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    json_t *r = text_like(f, v, c, m, n, MAX_PHONE);
    const char *s = json_string_value(r);
    int digits = 0;
    bool ok = r != NULL;
    for (const char *p = s; ok && *p; p++) {
        if (isdigit((unsigned char)*p))
            digits++;
        else if (!strchr(" -().", *p) && !(*p == '+' && p == s))
            ok = false;
    }
    if (r && (!ok || digits < 5 || digits > 20)) {
        json_decref(r);
        return bad(c, "pattern", m, n, "must be a phone number");
    }
    return r;
}

static json_t *c_url(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    json_t *r = text_like(f, v, c, m, n, MAX_URL);
    const char *s = json_string_value(r);
    if (r && ((strncmp(s, "http://", 7) && strncmp(s, "https://", 8)) || strpbrk(s, " \t\r\n") ||
              strlen(s) <= (size_t)(s[4] == 's' ? 8 : 7))) {
        json_decref(r);
        return bad(c, "pattern", m, n, "must be an http or https address");
    }
    return r;
}

/* ---- numbers ---- */

static json_t *c_integer(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    json_int_t x;
    if (json_is_integer(v))
        x = json_integer_value(v);
    else if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v) && fabs(json_real_value(v)) < 9e15)
        x = (json_int_t)json_real_value(v);
    else
        return bad(c, "type", m, n, "must be a whole number");
    json_t *mn = json_object_get(f, "min"), *mx = json_object_get(f, "max");
    if (json_is_integer(mn) && x < json_integer_value(mn))
        return bad(c, "too_small", m, n, "must be at least %lld", (long long)json_integer_value(mn));
    if (json_is_integer(mx) && x > json_integer_value(mx))
        return bad(c, "too_large", m, n, "must be at most %lld", (long long)json_integer_value(mx));
    return json_integer(x);
}

/* A decimal bound (a number or a numeric string) as a double. */
static bool bound(json_t *b, double *out)
{
    if (json_is_number(b)) {
        *out = json_number_value(b);
        return true;
    }
    const char *s = json_string_value(b);
    char *end;
    if (!s)
        return false;
    *out = strtod(s, &end);
    return *end == '\0';
}

/* Decimals never pass through a double: the text is checked and padded
 * digit by digit. A JSON number is taken only when it has at most 15
 * significant digits (what a double keeps exactly). */
static json_t *decimal(json_t *f, json_t *v, const char **c, char *m, size_t n, long long prec, long long scale)
{
    char text[64];
    if (json_is_integer(v)) {
        snprintf(text, sizeof text, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        snprintf(text, sizeof text, "%.15g", d);
        if (!isfinite(d) || strtod(text, NULL) != d || strchr(text, 'e'))
            return bad(c, "type", m, n, "send decimals of more than 15 digits as a string");
    } else if (json_is_string(v) && json_string_length(v) < sizeof text) {
        memcpy(text, json_string_value(v), json_string_length(v) + 1);
    } else {
        return bad(c, "type", m, n, "must be a decimal number");
    }
    const char *p = text;
    bool neg = *p == '-';
    if (*p == '-' || *p == '+')
        p++;
    const char *int_start = p;
    while (isdigit((unsigned char)*p))
        p++;
    size_t int_len = (size_t)(p - int_start);
    const char *frac = "";
    size_t frac_len = 0;
    if (*p == '.') {
        frac = ++p;
        while (isdigit((unsigned char)*p))
            p++;
        frac_len = (size_t)(p - frac);
    }
    if (*p || (int_len == 0 && frac_len == 0))
        return bad(c, "type", m, n, "must be a decimal number");
    while (int_len > 1 && *int_start == '0') {   /* leading zeros do not count */
        int_start++;
        int_len--;
    }
    if ((long long)frac_len > scale)
        return bad(c, "type", m, n, "at most %lld decimal places", scale);
    if (!(int_len == 1 && *int_start == '0') && (long long)int_len > prec - scale)
        return bad(c, "too_large", m, n, "at most %lld digits before the decimal point", prec - scale);
    char out[80];
    size_t o = 0;
    bool zero = true;
    for (size_t i = 0; i < int_len; i++)
        zero = zero && int_start[i] == '0';
    for (size_t i = 0; i < frac_len; i++)
        zero = zero && frac[i] == '0';
    if (neg && !zero)
        out[o++] = '-';
    if (int_len == 0)
        out[o++] = '0';
    memcpy(out + o, int_start, int_len);
    o += int_len;
    if (scale > 0) {
        out[o++] = '.';
        for (long long i = 0; i < scale; i++)
            out[o++] = i < (long long)frac_len ? frac[i] : '0';
    }
    out[o] = '\0';
    json_t *min = json_object_get(f, "min"), *max = json_object_get(f, "max");
    double x = min || max ? strtod(out, NULL) : 0, lim;
    if (bound(min, &lim) && x < lim)
        return bad(c, "too_small", m, n, "must be at least %s",
                   json_is_string(min) ? json_string_value(min) : "the minimum");
    if (bound(max, &lim) && x > lim)
        return bad(c, "too_large", m, n, "must be at most %s",
                   json_is_string(max) ? json_string_value(max) : "the maximum");
    return json_string(out);
}

static json_t *c_decimal(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    return decimal(f, v, c, m, n, prop_int(f, "precision", 18), prop_int(f, "scale", 2));
}

static json_t *c_money(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    return decimal(f, v, c, m, n, 18, 2);
}

static json_t *c_boolean(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    (void)f;
    return json_is_boolean(v) ? json_incref(v) : bad(c, "type", m, n, "must be true or false");
}

/* ---- dates ---- */

bool record_valid_date(int y, int mo, int d)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || y > 9999 || mo < 1 || mo > 12 || d < 1)
        return false;
    int dim = days[mo - 1] + (mo == 2 && ((y % 4 == 0 && y % 100) || y % 400 == 0));
    return d <= dim;
}

static bool date_in_bounds(json_t *f, const char *s, const char **c, char *m, size_t n)
{
    const char *mn = json_string_value(json_object_get(f, "min")), *mx = json_string_value(json_object_get(f, "max"));
    if (mn && strcmp(s, mn) < 0) {
        bad(c, "too_small", m, n, "must be on or after %s", mn);
        return false;
    }
    if (mx && strcmp(s, mx) > 0) {
        bad(c, "too_large", m, n, "must be on or before %s", mx);
        return false;
    }
    return true;
}

static json_t *c_date(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    const char *s = json_string_value(v);
    int y, mo, d;
    char tail;
    if (!s || strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%c", &y, &mo, &d, &tail) != 3 || s[4] != '-' || s[7] != '-' ||
        !record_valid_date(y, mo, d))
        return bad(c, "type", m, n, "must be a date YYYY-MM-DD");
    return date_in_bounds(f, s, c, m, n) ? json_incref(v) : NULL;
}

/* RFC 3339, any offset, fraction dropped -> UTC "YYYY-MM-DDTHH:MM:SSZ". */
/* The number written by the n digits at s, or -1. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static json_t *c_datetime(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    const char *s = json_string_value(v);
    int y = -1, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
    if (s && json_string_length(v) >= 19 && s[4] == '-' && s[7] == '-' && (s[10] == 'T' || s[10] == 't') &&
        s[13] == ':' && s[16] == ':') {
        y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
        h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    }
    if (y < 0 || mo < 0 || d < 0 || h < 0 || mi < 0 || sec < 0 || !record_valid_date(y, mo, d) || h > 23 || mi > 59 ||
        sec > 60)
        return bad(c, "type", m, n, "must be a date-time such as 2026-11-22T09:30:00Z");
    if (s[10] == 'T' && sec < 60 && s[19] == 'Z' && !s[20])   /* already as it is kept */
        return date_in_bounds(f, s, c, m, n) ? json_incref(v) : NULL;
    const char *z = s + 19;
    if (*z == '.')
        while (isdigit((unsigned char)*++z))
            ;
    int off = 0;
    if (*z == 'Z' || *z == 'z') {
        z++;
    } else if ((*z == '+' || *z == '-') && isdigit((unsigned char)z[1]) && isdigit((unsigned char)z[2]) && z[3] == ':' &&
               isdigit((unsigned char)z[4]) && isdigit((unsigned char)z[5])) {
        off = ((z[1] - '0') * 10 + (z[2] - '0')) * 60 + (z[4] - '0') * 10 + (z[5] - '0');
        if (*z == '-')
            off = -off;
        z += 6;
    } else {
        return bad(c, "type", m, n, "a date-time needs Z or an offset such as +08:00");
    }
    if (*z)
        return bad(c, "type", m, n, "must be a date-time such as 2026-11-22T09:30:00Z");
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi,
                    .tm_sec = sec > 59 ? 59 : sec};
    time_t t = timegm(&tm) - (time_t)off * 60;
    gmtime_r(&t, &tm);
    if (tm.tm_year + 1900 < 1 || tm.tm_year + 1900 > 9999)   /* an offset past the years written with 4 digits */
        return bad(c, "type", m, n, "must be a date-time such as 2026-11-22T09:30:00Z");
    char out[24];
    snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
    return date_in_bounds(f, out, c, m, n) ? json_string(out) : NULL;
}

/* ---- choices, links, files ---- */

static bool is_option(json_t *f, const char *s)
{
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(f, "options"), i, o)
    {
        const char *val = json_string_value(json_object_get(o, "value"));
        if (val && !strcmp(val, s))
            return true;
    }
    return false;
}

static json_t *c_select(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    const char *s = json_string_value(v);
    if (!s)
        return bad(c, "type", m, n, "must be one of the options");
    return is_option(f, s) ? json_incref(v) : bad(c, "not_an_option", m, n, "\"%.64s\" is not an option", s);
}

static json_t *c_multiselect(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    if (!json_is_array(v))
        return bad(c, "type", m, n, "must be a list of options");
    size_t i, k;
    json_t *x, *y;
    json_array_foreach(v, i, x)
    {
        const char *s = json_string_value(x);
        if (!s)
            return bad(c, "type", m, n, "must be a list of options");
        if (!is_option(f, s))
            return bad(c, "not_an_option", m, n, "\"%.64s\" is not an option", s);
        json_array_foreach(v, k, y) if (k < i && json_equal(x, y)) return bad(c, "type", m, n, "\"%.64s\" is given twice", s);
    }
    long long mn = prop_int(f, "min_items", 0), mx = prop_int(f, "max_items", RECORD_MAX_ITEMS);
    if ((long long)json_array_size(v) < mn)
        return bad(c, "too_short", m, n, "choose at least %lld", mn);
    if ((long long)json_array_size(v) > mx)
        return bad(c, "too_long", m, n, "choose at most %lld", mx);
    return json_incref(v);
}

/* A link: an id, or {"id": n} as an expanded link comes back. */
static json_t *c_link(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    (void)f;
    json_t *id = json_is_object(v) ? json_object_get(v, "id") : v;
    if (!json_is_integer(id) || json_integer_value(id) <= 0)
        return bad(c, "type", m, n, "must be a record id");
    return json_integer(json_integer_value(id));
}

static json_t *one_file(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    const char *id = json_string_value(json_object_get(v, "id"));
    if (!json_is_object(v) || !id || !*id)
        return bad(c, "type", m, n, "must be an uploaded file {\"id\", ...}");
    json_t *size = json_object_get(v, "size");
    long long max = prop_int(f, "max_size", 0);
    if (max > 0 && json_is_integer(size) && json_integer_value(size) > max)
        return bad(c, "too_large", m, n, "files may be at most %lld bytes", max);
    return json_pack("{s:s, s:O?, s:O?, s:O?}", "id", id, "name", json_object_get(v, "name"), "size", size,
                     "content_type", json_object_get(v, "content_type"));
}

static json_t *c_file(json_t *f, json_t *v, const char **c, char *m, size_t n)
{
    if (!json_is_true(json_object_get(f, "multiple")))
        return one_file(f, v, c, m, n);
    if (!json_is_array(v))
        return bad(c, "type", m, n, "must be a list of uploaded files");
    json_t *out = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
        json_t *one = one_file(f, x, c, m, n);
        if (!one) {
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, one);
    }
    return out;
}

static const struct {
    const char *type;
    coerce_fn coerce;
} types[] = {
    {"text", c_text},         {"longtext", c_longtext}, {"email", c_email},   {"phone", c_phone},
    {"url", c_url},           {"integer", c_integer},   {"decimal", c_decimal}, {"money", c_money},
    {"boolean", c_boolean},   {"date", c_date},         {"datetime", c_datetime}, {"select", c_select},
    {"multiselect", c_multiselect}, {"ref", c_link},    {"user", c_link},     {"file", c_file},
};

/* The coercer of field's type, or NULL when values of it are not coerced. */
static coerce_fn coercer(json_t *field)
{
    const char *t = json_string_value(json_object_get(field, "type"));
    for (size_t i = 0; t && i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(types[i].type, t))
            return types[i].coerce;
    return NULL;
}

json_t *field_coerce(json_t *field, json_t *value, const char **code, char *message, size_t n)
{
    coerce_fn c = coercer(field);
    if (c)
        return c(field, value, code, message, n);
    const char *t = json_string_value(json_object_get(field, "type"));
    return bad(code, "type", message, n, "a %s field takes no value here", t ? t : "?");
}

/* ---- records ---- */

static void problem(json_t *errors, const char *path, const char *code, const char *message)
{
    json_array_append_new(errors, json_pack("{s:s, s:s, s:s}", "path", path, "code", code, "message", message));
}

bool record_system_field(const char *name)
{
    for (const char *const *s = system_fields; *s; s++)
        if (!strcmp(*s, name))
            return true;
    return false;
}

bool field_computed(json_t *f)
{
    const char *t = json_string_value(json_object_get(f, "type"));
    return json_is_true(json_object_get(f, "readonly")) || json_object_get(f, "formula") || (t && !strcmp(t, "autonumber"));
}

field_table *field_table_new(json_t *fields)
{
    field_table *t = calloc(1, sizeof *t);
    t->fields = json_incref(fields);
    t->n = json_array_size(fields);
    t->f = calloc(t->n + 1, sizeof *t->f);
    for (size_t i = 0; i < t->n; i++) {
        field_info *fi = &t->f[i];
        fi->def = json_array_get(fields, i);
        fi->id = json_string_value(json_object_get(fi->def, "id"));
        fi->coerce = coercer(fi->def);
        fi->computed = field_computed(fi->def);
        fi->required = json_is_true(json_object_get(fi->def, "required"));
        fi->subform = field_is(fi->def, "subform");
        fi->number = field_is(fi->def, "decimal") || field_is(fi->def, "money");
        if (fi->subform)
            fi->rows = field_table_new(json_object_get(fi->def, "fields"));
    }
    return t;
}

void field_table_free(field_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        field_table_free(t->f[i].rows);
    json_decref(t->fields);
    free(t->f);
    free(t);
}

struct form_tables {
    size_t n;
    const char **ids;
    field_table **tables;
};

form_tables *form_tables_new(json_t *forms)
{
    form_tables *t = calloc(1, sizeof *t);
    t->n = json_array_size(forms);
    t->ids = calloc(t->n + 1, sizeof *t->ids);
    t->tables = calloc(t->n + 1, sizeof *t->tables);
    for (size_t i = 0; i < t->n; i++) {
        json_t *form = json_array_get(forms, i);
        t->tables[i] = field_table_new(json_object_get(form, "fields"));
        t->ids[i] = json_string_value(json_object_get(form, "id"));   /* the bundle outlives the tables */
    }
    return t;
}

const field_table *form_tables_get(const form_tables *t, const char *form)
{
    for (size_t i = 0; t && form && i < t->n; i++)
        if (t->ids[i] && !strcmp(t->ids[i], form))
            return t->tables[i];
    return NULL;
}

void form_tables_free(form_tables *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        field_table_free(t->tables[i]);
    free(t->ids);
    free(t->tables);
    free(t);
}

static void check_fields(const field_table *t, json_t *body, bool create, const char *base, bool row, json_t *values,
                         json_t *errors, json_t *system);

/* out = base + "/" + key (cut to fit): done for every key of every body, so no printf. */
static void pointer_join(char *out, size_t n, const char *base, const char *key)
{
    size_t b = strlen(base), k = strlen(key);
    if (b > n / 2)
        b = n / 2;
    if (b + 1 + k >= n)
        k = n - b - 2;
    memcpy(out, base, b);
    out[b] = '/';
    memcpy(out + b + 1, key, k);
    out[b + 1 + k] = '\0';
}

/* A subform: rows of objects, each checked like a record (rows carry "id"). */
static json_t *check_rows(const field_info *fi, json_t *v, const char *path, json_t *errors)
{
    json_t *f = fi->def;
    if (!json_is_array(v)) {
        problem(errors, path, "type", "must be a list of rows");
        return NULL;
    }
    long long mn = prop_int(f, "min_rows", 0), mx = prop_int(f, "max_rows", RECORD_MAX_ROWS);
    char msg[64];
    if ((long long)json_array_size(v) < mn) {
        snprintf(msg, sizeof msg, "needs at least %lld rows", mn);
        problem(errors, path, "too_few_rows", msg);
    }
    if ((long long)json_array_size(v) > mx) {
        snprintf(msg, sizeof msg, "takes at most %lld rows", mx);
        problem(errors, path, "too_many_rows", msg);
        return NULL;
    }
    json_t *rows = json_array(), *seen = json_object();   /* row ids given so far */
    size_t i;
    json_t *r;
    json_array_foreach(v, i, r)
    {
        char rp[512];
        snprintf(rp, sizeof rp, "%s/%zu", path, i);
        if (!json_is_object(r)) {
            problem(errors, rp, "type", "a row is an object");
            continue;
        }
        json_t *out = json_object();
        json_t *id = json_object_get(r, "id");
        char ip[520], key[24];
        snprintf(ip, sizeof ip, "%s/id", rp);
        if (id && json_is_integer(id))
            snprintf(key, sizeof key, "%lld", (long long)json_integer_value(id));
        if (id && !(json_is_integer(id) && json_integer_value(id) > 0)) {
            problem(errors, ip, "type", "a row id is a whole number");
        } else if (id && json_object_get(seen, key)) {   /* one row, two values: which would be stored? */
            problem(errors, ip, "type", "this row is given twice");
        } else if (id) {
            json_object_set(out, "id", id);
            json_object_set_new(seen, key, json_true());
        }
        /* a row is complete: its required fields hold for inserted and updated rows alike */
        check_fields(fi->rows, r, true, rp, true, out, errors, NULL);
        json_array_append_new(rows, out);
    }
    json_decref(seen);
    return rows;
}

/* Whether s is empty or only spaces (ASCII, no-break, ideographic): an empty value. */
static bool blank(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        else if (p[0] == 0xC2 && p[1] == 0xA0)   /* no-break space */
            p += 2;
        else if (p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80)   /* ideographic space, as Chinese input methods type it */
            p += 3;
        else
            return false;
    }
    return true;
}

/* The value v of field fi at path: its canonical form into values, or a problem. */
static void check_value(const field_info *fi, json_t *v, const char *path, json_t *values, json_t *errors)
{
    char msg[256];
    if (fi->computed) {
        problem(errors, path, "readonly", "this field cannot be set");
    } else if (json_is_null(v) || (json_is_string(v) && blank(json_string_value(v)))) {   /* "" is empty */
        if (fi->required)
            problem(errors, path, "required", "a value is required");
        else
            json_object_set_new(values, fi->id, json_null());
    } else if (fi->subform) {
        json_t *rows = check_rows(fi, v, path, errors);
        if (rows)
            json_object_set_new(values, fi->id, rows);
    } else {
        const char *code;
        json_t *canon = fi->coerce ? fi->coerce(fi->def, v, &code, msg, sizeof msg) : field_coerce(fi->def, v, &code, msg, sizeof msg);
        if (canon)
            json_object_set_new(values, fi->id, canon);
        else
            problem(errors, path, code, msg);
    }
}

static void check_fields(const field_table *t, json_t *body, bool create, const char *base, bool row, json_t *values,
                         json_t *errors, json_t *system)
{
    const char *key;
    json_t *v, *fields = t->fields;
    char path[512];
    size_t i, known = 0;
    /* the fields, each found in the body by its id */
    for (i = 0; i < t->n; i++) {
        const field_info *fi = &t->f[i];
        if (!fi->id || !(v = json_object_get(body, fi->id)))
            continue;
        known++;
        pointer_join(path, sizeof path, base, fi->id);
        check_value(fi, v, path, values, errors);
    }
    /* then the keys that are no field: a row's id, system fields, the owner, unknown ones */
    json_object_foreach(known < json_object_size(body) ? body : NULL, key, v)
    {
        if (bundle_item(fields, key) || (row && !strcmp(key, "id")))
            continue;
        pointer_join(path, sizeof path, base, key);
        if (record_system_field(key) && !row) {
            json_array_append_new(system, json_string(key));
        } else if (!row && !strcmp(key, "_owner")) {   /* writable with update scope "all": permissions decide */
            if (!json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) > 0))   /* null: no owner */
                problem(errors, path, "type", "must be a user id or null");
            else
                json_object_set(values, key, v);
        } else {
            problem(errors, path, "unknown_field", "no such field");
        }
    }
    if (!create)
        return;
    for (i = 0; i < t->n; i++) {
        const field_info *fi = &t->f[i];
        if (!fi->id || !fi->required || fi->computed)
            continue;
        if (!json_object_get(body, fi->id) && !json_object_get(fi->def, "default")) {   /* a default fills it */
            snprintf(path, sizeof path, "%s/%s", base, fi->id);
            problem(errors, path, "required", "a value is required");
        }
    }
}

void record_check_fields(const field_table *t, json_t *body, bool create, record_result *out)
{
    out->values = json_object();
    out->errors = json_array();
    out->system = json_array();
    if (!json_is_object(body)) {
        problem(out->errors, "", "type", "a record is an object");
        return;
    }
    check_fields(t, body, create, "", false, out->values, out->errors, out->system);
}

void record_check(json_t *form, json_t *body, bool create, record_result *out)
{
    field_table *t = field_table_new(json_object_get(form, "fields"));
    record_check_fields(t, body, create, out);
    field_table_free(t);
}

void record_result_free(record_result *r)
{
    json_decref(r->values);
    json_decref(r->errors);
    json_decref(r->system);
    r->values = r->errors = r->system = NULL;
}
