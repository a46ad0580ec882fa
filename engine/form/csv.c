/* csv.c - see csv.h. */
#include "form/csv.h"

#include <stdlib.h>
#include <string.h>

void csv_open(csv_reader *r, const char *text, size_t len)
{
    memset(r, 0, sizeof *r);
    r->p = text;
    r->end = text + len;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3))
        r->p += 3;
    r->next_line = 1;
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
