/* csv.h - CSV as spreadsheets write it (RFC 4180): a reader that walks a
 * text row by row (quoted cells with commas, quotes and line breaks, CRLF or
 * LF, a UTF-8 byte order mark skipped), a check for UTF-8 and a conversion
 * from GB18030, and a writer of cells that neutralises what a spreadsheet
 * would run as a formula. */
#ifndef LOOM_CSV_H
#define LOOM_CSV_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

#define CSV_MAX_CELLS 1024

typedef struct csv_reader {
    const char *p, *end;
    buf cell;                        /* the current row's cells, NUL-separated */
    const char *cells[CSV_MAX_CELLS];
    int n;                           /* cells in the current row */
    long line;                       /* the line the current row starts on (1-based) */
    long next_line;
} csv_reader;

void csv_open(csv_reader *r, const char *text, size_t len);
/* Whether the n bytes at s are UTF-8 (no overlong forms, surrogates or
 * code points past U+10FFFF). */
bool csv_is_utf8(const char *s, size_t n);
/* text (n bytes that are not UTF-8, and no NUL) read as GB18030, which is what Excel on
 * a Chinese Windows saves a CSV as: the same text in UTF-8 (malloc'd, NUL
 * terminated, *out_n its length), or NULL when it is not GB18030 either. */
char *csv_from_gb18030(const char *text, size_t n, size_t *out_n);
/* Reads the next row into r->cells / r->n. False at the end of the text,
 * or with *err set ("unterminated quote", "too many cells"). A row whose
 * only cell is empty (a blank line) is skipped. */
bool csv_next(csv_reader *r, const char **err);
void csv_close(csv_reader *r);

/* Appends one cell: quoted when it holds a comma, quote, line break or
 * edge space; with neutralise, a cell starting with = + - @ (or a tab or
 * CR) gets a leading apostrophe so no spreadsheet evaluates it. */
void csv_cell(buf *out, const char *s, bool neutralise);
/* The text a spreadsheet cell should hold instead of s when s would be
 * evaluated as a formula, or s itself (malloc'd either way). */
char *csv_neutral(const char *s);

/* The field (of fields) a header cell names: an id, or a label in any
 * locale (case-insensitive); NULL when none. */
json_t *csv_header_field(json_t *fields, const char *text);
/* The header of system column id ("_state", "_created_at", ...) in an
 * export for locale ("zh..." Chinese, else English: 状态 / State), or NULL
 * when it has none (id). */
const char *csv_system_label(const char *id, const char *locale);
/* The system column a header cell names by such a label (any locale,
 * case-insensitive), or NULL. */
const char *csv_system_column(const char *text);
/* A cell as the JSON value of field f (NULL: id or _owner): numbers and
 * booleans (true/false, 1/0, yes/no, y/n, 是/否) parsed when they are ones,
 * otherwise the text (validation reports it); multiselect values split on
 * ";"; an option named by its value or else by its label in any locale; a
 * file as {"id"}; an apostrophe that neutralised a formula dropped.
 * A new reference. */
json_t *csv_value(json_t *f, const char *cell);
/* A date and time without an offset, as spreadsheets write them ("2026/1/5
 * 9:30", "2026-01-05 09:30:00", "2026-01-05T09:30"), as "2026-01-05
 * 09:30:00" in out (a local time, for the app's timezone to place); false
 * for anything else, an RFC 3339 time with its offset included. */
bool csv_local_datetime(const char *cell, char out[20]);

#endif
