/* xlsx.c - see xlsx.h. */
#include "form/xlsx.h"

#include <expat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "core/buf.h"

enum { XLSX_MAX_PART = 512 << 20 };   /* an uncompressed part, at most: no zip bomb fills the memory */
enum { NOT_DATE, DATE, DATETIME, DATETIME_UTC };

/* One part of the archive, NUL-terminated (malloc'd), or NULL when absent or too large (*big set). */
static char *part(zip_t *z, const char *name, size_t *len, bool *big)
{
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat(z, name, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
        return NULL;
    if (st.size > XLSX_MAX_PART) {
        *big = true;
        return NULL;
    }
    zip_file_t *f = zip_fopen(z, name, 0);
    char *b = f ? malloc(st.size + 1) : NULL;
    bool ok = b && zip_fread(f, b, st.size) == (zip_int64_t)st.size;
    if (f)
        zip_fclose(f);
    if (!ok) {
        free(b);
        return NULL;
    }
    b[st.size] = '\0';
    *len = st.size;
    return b;
}

/* An element's name without its namespace prefix ("x:c" -> "c"). */
static const char *local(const char *name)
{
    const char *c = strrchr(name, ':');
    return c ? c + 1 : name;
}

static const char *attr(const char **atts, const char *name)
{
    for (int i = 0; atts[i]; i += 2)
        if (!strcmp(local(atts[i]), name) && (strcmp(name, "id") || strchr(atts[i], ':')))   /* r:id, not sheetId */
            return atts[i + 1];
    return NULL;
}

/* Runs expat over text with the given handlers and state; false on malformed XML. */
static bool parse(const char *text, size_t len, void *state, XML_StartElementHandler start, XML_EndElementHandler end,
                  XML_CharacterDataHandler chars)
{
    XML_Parser p = XML_ParserCreate("UTF-8");
    XML_SetUserData(p, state);
    XML_SetElementHandler(p, start, end);
    if (chars)
        XML_SetCharacterDataHandler(p, chars);
    bool ok = XML_Parse(p, text, (int)len, 1) == XML_STATUS_OK;
    XML_ParserFree(p);
    return ok;
}

/* ---- the workbook: its first sheet and its date system ---- */

typedef struct book {
    char rid[64];
    bool date1904;
    char target[256];
} book;

static void book_start(void *u, const char *name, const char **atts)
{
    book *b = u;
    const char *n = local(name), *v;
    if (!strcmp(n, "sheet") && !b->rid[0] && (v = attr(atts, "id")))
        snprintf(b->rid, sizeof b->rid, "%s", v);
    else if (!strcmp(n, "workbookPr") && (v = attr(atts, "date1904")))
        b->date1904 = !strcmp(v, "1") || !strcmp(v, "true");
}

static void rels_start(void *u, const char *name, const char **atts)
{
    book *b = u;
    const char *id = NULL, *target = NULL;
    if (strcmp(local(name), "Relationship"))
        return;
    for (int i = 0; atts[i]; i += 2) {
        if (!strcmp(atts[i], "Id"))
            id = atts[i + 1];
        else if (!strcmp(atts[i], "Target"))
            target = atts[i + 1];
    }
    if (id && target && !strcmp(id, b->rid))
        snprintf(b->target, sizeof b->target, "%s%s", target[0] == '/' ? "" : "xl/", target + (target[0] == '/'));
}

static void no_end(void *u, const char *name)
{
    (void)u;
    (void)name;
}

/* ---- shared strings: every <si>'s text, its phonetic runs left out ---- */

typedef struct sst {
    char **v;
    size_t n, cap;
    buf cur;
    int in_t, in_rph;
} sst;

static void sst_start(void *u, const char *name, const char **atts)
{
    (void)atts;
    sst *s = u;
    const char *n = local(name);
    if (!strcmp(n, "si"))
        buf_reset(&s->cur);
    else if (!strcmp(n, "t"))
        s->in_t++;
    else if (!strcmp(n, "rPh"))
        s->in_rph++;
}

static void sst_end(void *u, const char *name)
{
    sst *s = u;
    const char *n = local(name);
    if (!strcmp(n, "t")) {
        s->in_t--;
    } else if (!strcmp(n, "rPh")) {
        s->in_rph--;
    } else if (!strcmp(n, "si")) {
        if (s->n == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 256;
            s->v = realloc(s->v, s->cap * sizeof *s->v);
        }
        s->v[s->n++] = strdup(s->cur.data ? s->cur.data : "");
    }
}

static void sst_chars(void *u, const char *text, int len)
{
    sst *s = u;
    if (s->in_t && !s->in_rph)
        buf_append(&s->cur, text, (size_t)len);
}

/* ---- styles: which cell styles show numbers as dates ---- */

typedef struct styles {
    int fmt_ids[4096];   /* numFmtId -> kind, for the custom ones */
    char kinds[65536];   /* per cellXfs index */
    size_t nxf;
    int in_xfs;
} styles;

static int builtin_kind(int id)
{
    if ((id >= 14 && id <= 17) || (id >= 27 && id <= 31) || (id >= 34 && id <= 36) || (id >= 50 && id <= 58))
        return DATE;   /* 27-36, 50-58: the dates of Chinese, Japanese and Korean Excel */
    if ((id >= 18 && id <= 22) || id == 32 || id == 33 || (id >= 45 && id <= 47))
        return DATETIME;
    return NOT_DATE;
}

/* The kind of a custom number format: its letters outside quotes and brackets. */
static int format_kind(const char *code)
{
    bool date = false, time = false, utc = strstr(code, "UTC") != NULL;
    for (const char *p = code; *p; p++) {
        if (*p == '"') {
            const char *q = strchr(p + 1, '"');
            if (!q)
                break;
            p = q;
        } else if (*p == '[') {
            const char *q = strchr(p + 1, ']');
            if (!q)
                break;
            p = q;
        } else if (*p == '\\' && p[1]) {
            p++;
        } else if (*p == 'y' || *p == 'Y' || *p == 'd' || *p == 'D') {
            date = true;
        } else if (*p == 'h' || *p == 'H' || *p == 's' || *p == 'S') {
            time = true;
        }
    }
    return !date && !time ? NOT_DATE : !time ? DATE : utc ? DATETIME_UTC : DATETIME;
}

static void styles_start(void *u, const char *name, const char **atts)
{
    styles *s = u;
    const char *n = local(name), *id = attr(atts, "numFmtId");
    if (!strcmp(n, "numFmt") && id) {
        const char *code = attr(atts, "formatCode");
        int i = atoi(id);
        if (i >= 0 && i < 4096 && code)
            s->fmt_ids[i] = format_kind(code) + 1;   /* 0: not custom */
    } else if (!strcmp(n, "cellXfs")) {
        s->in_xfs = 1;
    } else if (!strcmp(n, "xf") && s->in_xfs && s->nxf < sizeof s->kinds) {
        int i = id ? atoi(id) : 0;
        s->kinds[s->nxf++] = (char)(i >= 0 && i < 4096 && s->fmt_ids[i] ? s->fmt_ids[i] - 1 : builtin_kind(i));
    }
}

static void styles_end(void *u, const char *name)
{
    styles *s = u;
    if (!strcmp(local(name), "cellXfs"))
        s->in_xfs = 0;
}

/* ---- the sheet, row by row into CSV ---- */

typedef struct sheet_state {
    buf *out;
    const sst *strings;
    const styles *st;
    bool date1904;
    buf val, row;          /* the cell's text; the row's cells so far, as CSV */
    char type[16];
    int style, col, next_col, in_v, in_t, row_cells;
} sheet_state;

static void csv_field(buf *out, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        buf_puts(out, s);
        return;
    }
    buf_puts(out, "\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            buf_puts(out, "\"");
        buf_append(out, p, 1);
    }
    buf_puts(out, "\"");
}

/* Days since 1970-01-01 -> y, m, d (proleptic Gregorian). */
static void civil(long z, int *y, int *m, int *d)
{
    z += 719468;
    long era = (z >= 0 ? z : z - 146096) / 146097;
    long doe = z - era * 146097;
    long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* A cell's value as CSV text into out. */
static void cell_text(sheet_state *s, buf *out)
{
    const char *v = s->val.data ? s->val.data : "";
    if (!strcmp(s->type, "s")) {
        long i = strtol(v, NULL, 10);
        buf_puts(out, i >= 0 && (size_t)i < s->strings->n ? s->strings->v[i] : "");
    } else if (!strcmp(s->type, "b")) {
        buf_puts(out, !strcmp(v, "1") ? "true" : "false");
    } else if (!strcmp(s->type, "e")) {
        /* an error (#N/A, ...): no value */
    } else if (!strcmp(s->type, "str") || !strcmp(s->type, "inlineStr")) {
        buf_puts(out, v);
    } else if (*v) {   /* a number, maybe in a date style */
        int kind = s->style >= 0 && (size_t)s->style < s->st->nxf ? s->st->kinds[s->style] : NOT_DATE;
        double x = strtod(v, NULL);
        if (kind != NOT_DATE && isfinite(x) && x >= 0 && x < 2958466) {
            long days = (long)floor(x), secs = lround((x - (double)days) * 86400.0);
            days += secs / 86400;
            secs %= 86400;
            int y, m, d;
            civil(days - (s->date1904 ? 24107 : 25569), &y, &m, &d);   /* 1904-01-01 / 1899-12-30 */
            char t[40];
            if (kind == DATE)
                snprintf(t, sizeof t, "%04d-%02d-%02d", y, m, d);
            else
                snprintf(t, sizeof t, "%04d-%02d-%02d%c%02ld:%02ld:%02ld%s", y, m, d, kind == DATETIME_UTC ? 'T' : ' ',
                         secs / 3600, secs / 60 % 60, secs % 60, kind == DATETIME_UTC ? "Z" : "");
            buf_puts(out, t);
        } else if (strlen(v) > 15 && isfinite(x)) {   /* as Excel shows it: 0.30000000000000004 is 0.3 */
            char t[40];
            snprintf(t, sizeof t, "%.15g", x);
            buf_puts(out, t);
        } else {
            buf_puts(out, v);
        }
    }
}

/* The column of a reference ("AB12" -> 27), or -1. */
static int column_of(const char *r)
{
    int c = 0;
    const char *p = r;
    for (; *p >= 'A' && *p <= 'Z'; p++)
        c = c * 26 + (*p - 'A' + 1);
    return p == r || c > 16384 ? -1 : c - 1;
}

static void sheet_start(void *u, const char *name, const char **atts)
{
    sheet_state *s = u;
    const char *n = local(name);
    if (!strcmp(n, "row")) {
        buf_reset(&s->row);
        s->next_col = 0;
        s->row_cells = 0;
    } else if (!strcmp(n, "c")) {
        const char *r = attr(atts, "r"), *t = attr(atts, "t"), *st = attr(atts, "s");
        s->col = r ? column_of(r) : s->next_col;
        if (s->col < 0)
            s->col = s->next_col;
        snprintf(s->type, sizeof s->type, "%s", t ? t : "n");
        s->style = st ? atoi(st) : -1;
        buf_reset(&s->val);
    } else if (!strcmp(n, "v")) {
        s->in_v = 1;
    } else if (!strcmp(n, "t")) {
        s->in_t = 1;
    }
}

static void sheet_end(void *u, const char *name)
{
    sheet_state *s = u;
    const char *n = local(name);
    if (!strcmp(n, "v")) {
        s->in_v = 0;
    } else if (!strcmp(n, "t")) {
        s->in_t = 0;
    } else if (!strcmp(n, "c")) {
        buf text = {0};
        cell_text(s, &text);
        if (text.len) {   /* the empty cells before it, then it */
            for (; s->next_col < s->col; s->next_col++)
                buf_puts(&s->row, s->next_col ? "," : "");
            if (s->next_col)
                buf_puts(&s->row, ",");
            csv_field(&s->row, text.data);
            s->next_col = s->col + 1;
            s->row_cells++;
        }
        buf_free(&text);
    } else if (!strcmp(n, "row")) {
        if (s->row_cells) {   /* an empty row is no line */
            buf_append(s->out, s->row.data, s->row.len);
            buf_puts(s->out, "\r\n");
        }
    }
}

static void sheet_chars(void *u, const char *text, int len)
{
    sheet_state *s = u;
    if (s->in_v || s->in_t)
        buf_append(&s->val, text, (size_t)len);
}

bool xlsx_is(const char *data, size_t len)
{
    return len >= 4 && !memcmp(data, "PK\x03\x04", 4);
}

char *xlsx_to_csv(const char *data, size_t len, size_t *out_len, char *err, size_t errlen)
{
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(data, len, 0, &ze);
    zip_t *z = src ? zip_open_from_source(src, ZIP_RDONLY, &ze) : NULL;
    zip_error_fini(&ze);
    if (!z) {
        if (src)
            zip_source_free(src);
        snprintf(err, errlen, "the file is not an .xlsx workbook (not a readable ZIP archive)");
        return NULL;
    }
    book b = {0};
    sst strings = {0};
    styles *st = calloc(1, sizeof *st);
    buf out = {0};
    bool big = false, ok = false;
    size_t n;
    char *wb = part(z, "xl/workbook.xml", &n, &big), *text;
    if (wb && parse(wb, n, &b, book_start, no_end, NULL) && b.rid[0] &&
        (text = part(z, "xl/_rels/workbook.xml.rels", &n, &big))) {
        parse(text, n, &b, rels_start, no_end, NULL);
        free(text);
    }
    free(wb);
    if (!b.target[0])
        snprintf(b.target, sizeof b.target, "xl/worksheets/sheet1.xml");
    if ((text = part(z, "xl/sharedStrings.xml", &n, &big))) {
        parse(text, n, &strings, sst_start, sst_end, sst_chars);
        free(text);
    }
    if ((text = part(z, "xl/styles.xml", &n, &big))) {
        parse(text, n, st, styles_start, styles_end, NULL);
        free(text);
    }
    if ((text = part(z, b.target, &n, &big))) {
        sheet_state s = {.out = &out, .strings = &strings, .st = st, .date1904 = b.date1904};
        ok = parse(text, n, &s, sheet_start, sheet_end, sheet_chars);
        buf_free(&s.val);
        buf_free(&s.row);
        free(text);
    }
    if (!ok)
        snprintf(err, errlen, big ? "the workbook's sheet is over 512 MiB unpacked"
                                  : "the workbook has no readable first sheet");
    for (size_t i = 0; i < strings.n; i++)
        free(strings.v[i]);
    free(strings.v);
    buf_free(&strings.cur);
    free(st);
    zip_discard(z);
    if (!ok) {
        buf_free(&out);
        return NULL;
    }
    *out_len = out.len;
    return out.data ? out.data : strdup("");
}
