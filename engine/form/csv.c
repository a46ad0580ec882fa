/* csv.c - see csv.h. */
#include "form/csv.h"

#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "form/record.h"
#include "model/bundle.h"

void csv_open(csv_reader *r, const char *text, size_t len)
{
    memset(r, 0, sizeof *r);
    r->p = text;
    r->end = text + len;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3))
        r->p += 3;
    r->next_line = 1;
}

bool csv_is_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        int more = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : -1;
        if (more < 0 || end - p <= more)
            return false;
        unsigned lo = 0x80, hi = 0xBF;   /* the second byte's range: no overlongs, surrogates or > U+10FFFF */
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
        else if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
        if (p[1] < lo || p[1] > hi)
            return false;
        for (int i = 2; i <= more; i++)
            if ((p[i] & 0xC0) != 0x80)
                return false;
        p += more + 1;
    }
    return true;
}

char *csv_from_gb18030(const char *text, size_t n, size_t *out_n)
{
    if (memchr(text, '\0', n))   /* no text file has NULs (UTF-16 has them everywhere) */
        return NULL;
    iconv_t cd = iconv_open("UTF-8", "GB18030");
    if (cd == (iconv_t)-1)
        return NULL;
    size_t cap = n * 2 + 4, left_in = n, left_out = cap - 1;   /* at most 2 bytes of GB18030 for 3 of UTF-8, or 4 for 4 */
    char *out = malloc(cap), *in = (char *)text, *o = out;
    bool ok = out && iconv(cd, &in, &left_in, &o, &left_out) != (size_t)-1 && left_in == 0;
    iconv_close(cd);
    if (!ok || !csv_is_utf8(out, (size_t)(o - out))) {
        free(out);
        return NULL;
    }
    *o = '\0';
    *out_n = (size_t)(o - out);
    return out;
}

void csv_close(csv_reader *r)
{
    buf_free(&r->cell);
}

bool csv_next(csv_reader *r, const char **err)
{
    *err = NULL;
    for (;;) {
        if (r->p >= r->end)
            return false;
        buf_reset(&r->cell);
        size_t starts[CSV_MAX_CELLS];
        int n = 0;
        r->line = r->next_line;
        starts[n++] = 0;
        bool done = false;
        while (!done) {
            if (r->p < r->end && *r->p == '"') {   /* a quoted cell */
                r->p++;
                for (;;) {
                    if (r->p >= r->end) {
                        *err = "unterminated quote";
                        return false;
                    }
                    if (*r->p == '"') {
                        if (r->p + 1 < r->end && r->p[1] == '"') {
                            buf_append(&r->cell, "\"", 1);
                            r->p += 2;
                            continue;
                        }
                        r->p++;
                        break;
                    }
                    if (*r->p == '\n')
                        r->next_line++;
                    buf_append(&r->cell, r->p++, 1);
                }
            }
            /* unquoted text (or what follows a closing quote) up to , or the line's end */
            const char *s = r->p;
            while (r->p < r->end && *r->p != ',' && *r->p != '\n' && *r->p != '\r')
                r->p++;
            buf_append(&r->cell, s, (size_t)(r->p - s));
            if (r->p < r->end && *r->p == ',') {
                r->p++;
                buf_append(&r->cell, "", 1);
                if (n == CSV_MAX_CELLS) {
                    *err = "too many cells in a row";
                    return false;
                }
                starts[n++] = r->cell.len;
                continue;
            }
            if (r->p < r->end && *r->p == '\r')
                r->p++;
            if (r->p < r->end && *r->p == '\n')
                r->p++;
            r->next_line++;
            done = true;
        }
        buf_append(&r->cell, "", 1);
        if (n == 1 && r->cell.len == 1)
            continue;   /* a blank line */
        for (int i = 0; i < n; i++)
            r->cells[i] = r->cell.data + starts[i];
        r->n = n;
        return true;
    }
}

char *csv_neutral(const char *s)
{
    if (*s && strchr("=+-@\t\r", *s)) {
        size_t n = strlen(s);
        char *out = malloc(n + 2);
        out[0] = '\'';
        memcpy(out + 1, s, n + 1);
        return out;
    }
    return strdup(s);
}

void csv_cell(buf *out, const char *s, bool neutralise)
{
    char *v = neutralise ? csv_neutral(s) : NULL;
    const char *t = v ? v : s;
    size_t n = strlen(t);
    bool quote = n && (strpbrk(t, ",\"\r\n") || t[0] == ' ' || t[n - 1] == ' ');
    if (!quote) {
        buf_append(out, t, n);
    } else {
        buf_append(out, "\"", 1);
        for (const char *c = t; *c; c++) {
            if (*c == '"')
                buf_append(out, "\"", 1);
            buf_append(out, c, 1);
        }
        buf_append(out, "\"", 1);
    }
    free(v);
}

/* Whether label (a string, or a map from locale to string) reads text in
 * some locale, case aside. */
static bool labelled(json_t *label, const char *text)
{
    if (json_is_string(label))
        return !strcasecmp(json_string_value(label), text);
    const char *k;
    json_t *v;
    json_object_foreach(label, k, v) if (json_is_string(v) && !strcasecmp(json_string_value(v), text)) return true;
    return false;
}

json_t *csv_header_field(json_t *fields, const char *h)
{
    json_t *f = bundle_item(fields, h);
    if (f)
        return f;
    size_t i;
    json_array_foreach(fields, i, f) if (labelled(json_object_get(f, "label"), h)) return f;
    /* a template's mark of a required column, "*客户名称" or "客户名称*" (or the full-width ＊) */
    static const char *const marks[] = {"*", "\xEF\xBC\x8A"};
    char bare[256];
    snprintf(bare, sizeof bare, "%s", h);
    bool marked = false;
    for (size_t m = 0; m < 2; m++) {
        size_t l = strlen(marks[m]), n = strlen(bare);
        if (!strncmp(bare, marks[m], l))
            memmove(bare, bare + l, n - l + 1), marked = true, n -= l;
        if (n >= l && !strcmp(bare + n - l, marks[m]))
            bare[n - l] = '\0', marked = true;
    }
    return marked && *bare ? csv_header_field(fields, bare) : NULL;
}

static const struct {
    const char *id, *zh, *en;
} system_labels[] = {{"_version", "版本", "Version"},        {"_state", "状态", "State"},
                     {"_owner", "负责人", "Owner"},          {"_created_at", "创建时间", "Created at"},
                     {"_created_by", "创建人", "Created by"}, {"_updated_at", "更新时间", "Updated at"},
                     {"_updated_by", "更新人", "Updated by"}};

const char *csv_system_label(const char *id, const char *locale)
{
    for (size_t i = 0; i < sizeof system_labels / sizeof system_labels[0]; i++)
        if (!strcmp(system_labels[i].id, id))
            return locale && !strncmp(locale, "zh", 2) ? system_labels[i].zh : system_labels[i].en;
    return NULL;
}

const char *csv_system_column(const char *text)
{
    for (size_t i = 0; i < sizeof system_labels / sizeof system_labels[0]; i++)
        if (!strcmp(system_labels[i].zh, text) || !strcasecmp(system_labels[i].en, text))
            return system_labels[i].id;
    return NULL;
}

/* The length of the text at p before the next separator of a multiselect
 * cell (";", ",", and as Chinese text has them "；", "，", "、"), and in
 * *sep the separator's length (0 at the end). */
static size_t separator(const char *p, size_t *sep)
{
    static const char *const seps[] = {";", ",", "\xEF\xBC\x9B", "\xEF\xBC\x8C", "\xE3\x80\x81"};
    for (size_t n = 0;; n++) {
        if (!p[n]) {
            *sep = 0;
            return n;
        }
        for (size_t i = 0; i < sizeof seps / sizeof seps[0]; i++) {
            size_t l = strlen(seps[i]);
            if (!strncmp(p + n, seps[i], l)) {
                *sep = l;
                return n;
            }
        }
    }
}

/* A date as spreadsheets write it, "2026/1/5" (Excel in a Chinese locale),
 * "2026.1.5", "2026-1-5" or "2026年1月5日", as "2026-01-05" in out; false
 * for anything else (validation then reports it as written). */
static bool spreadsheet_date(const char *s, char out[11])
{
    int y = 0, m = 0, d = 0;
    const char *p = s;
    for (int part = 0; part < 3; part++) {
        int v = 0, digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 4)
            v = v * 10 + (*p++ - '0'), digits++;
        if (!digits || (part == 0 && digits != 4) || (part > 0 && digits > 2))
            return false;
        *(part == 0 ? &y : part == 1 ? &m : &d) = v;
        static const char *const after[][4] = {{"/", ".", "-", "年"}, {"/", ".", "-", "月"}, {"", "", "", "日"}};
        size_t l = 0;
        for (int k = 0; k < 4 && !l; k++)
            if (*after[part][k] && !strncmp(p, after[part][k], strlen(after[part][k])))
                l = strlen(after[part][k]);
        if (!l && part < 2)
            return false;
        p += l;
    }
    if (*p || !record_valid_date(y, m, d))
        return false;
    snprintf(out, 11, "%04d-%02d-%02d", y, m, d);
    return true;
}

bool csv_local_datetime(const char *s, char out[20])
{
    /* the date as spreadsheet_date reads it, then a space or "T", then H:MM[:SS]; no offset */
    const char *sep = strpbrk(s, " T");
    char date[64], ymd[11];
    if (!sep || (size_t)(sep - s) >= sizeof date)
        return false;
    memcpy(date, s, (size_t)(sep - s));
    date[sep - s] = '\0';
    if (!spreadsheet_date(date, ymd))
        return false;
    const char *p = sep + 1;
    while (*p == ' ')
        p++;
    int part[3] = {0, 0, 0}, parts = 0;
    while (parts < 3) {
        int v = 0, digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 2)
            v = v * 10 + (*p++ - '0'), digits++;
        if (!digits || (parts > 0 && digits != 2))
            return false;
        part[parts++] = v;
        if (*p != ':')
            break;
        p++;
    }
    if (*p || parts < 2 || part[0] > 23 || part[1] > 59 || part[2] > 59)
        return false;
    snprintf(out, 20, "%s %02d:%02d:%02d", ymd, part[0], part[1], part[2]);
    return true;
}

/* The value of the option of (multi)select f that the n bytes at text name,
 * by value or else by label in any locale (what a person types in a
 * spreadsheet), as a new reference to that option's own string; NULL when
 * they name none. */
static json_t *option_found(json_t *f, const char *text, size_t n)
{
    json_t *opts = json_object_get(f, "options"), *o, *v;
    size_t i;
    json_array_foreach(opts, i, o)
    {
        v = json_object_get(o, "value");
        if (json_string_length(v) == n && !memcmp(json_string_value(v), text, n))
            return json_incref(v);
    }
    char label[256];
    if (n >= sizeof label)
        return NULL;
    memcpy(label, text, n);
    label[n] = '\0';
    json_array_foreach(opts, i, o) if (labelled(json_object_get(o, "label"), label)) return json_incref(json_object_get(o, "value"));
    return NULL;
}

/* The option text names, or the text itself when it names none (validation
 * reports it); a new reference. */
static json_t *option_named(json_t *f, const char *text, size_t n)
{
    json_t *v = option_found(f, text, n);
    return v ? v : json_stringn(text, n);
}

json_t *csv_value(json_t *f, const char *s)
{
    if (*s == '\'' && s[1] && strchr("=+-@", s[1]))
        s++;
    const char *t = f ? jstr(json_object_get(f, "type")) : "integer";   /* looked up once: every cell comes here */
    if (!strcmp(t, "integer") || !strcmp(t, "ref") || !strcmp(t, "user")) {
        if (*s == '#' && t[0] == 'r' && s[1] >= '0' && s[1] <= '9')
            s++;   /* "#42": how a record without a title field is shown */
        char *end;
        long long v = strtoll(s, &end, 10);
        if (*s && !*end && strlen(s) < 19)
            return json_integer(v);
        return json_string(s);
    }
    if (!strcmp(t, "boolean")) {
        static const char *const yes[] = {"true", "1", "yes", "y", "是", "√", "✓", NULL},
                                 *const no[] = {"false", "0", "no", "n", "否", "×", "✗", NULL};
        for (int i = 0; yes[i]; i++) {
            if (!strcasecmp(s, yes[i]))
                return json_true();
            if (!strcasecmp(s, no[i]))
                return json_false();
        }
        return json_string(s);
    }
    if (!strcmp(t, "multiselect")) {
        json_t *a = json_array(), *whole = option_found(f, s, strlen(s));
        if (whole) {
            json_array_append_new(a, whole);   /* the cell names one option, commas and all */
            return a;
        }
        for (const char *p = s; *p;) {
            size_t sep;
            size_t n = separator(p, &sep);
            const char *b = p, *e = p + n;
            while (b < e && *b == ' ')
                b++;
            while (e > b && e[-1] == ' ')
                e--;
            if (e > b)
                json_array_append_new(a, option_named(f, b, (size_t)(e - b)));
            p += n + sep;
        }
        return a;
    }
    if (!strcmp(t, "file"))
        return json_pack("{s:s}", "id", s);
    char ymd[11];
    if (!strcmp(t, "date") && spreadsheet_date(s, ymd))
        return json_string(ymd);
    if (!strcmp(t, "select")) {
        json_t *v = option_named(f, s, strlen(s));
        return v ? v : json_null();
    }
    json_t *v = json_string(s);
    return v ? v : json_null();   /* not UTF-8: validation says "type" */
}
