/* xlsx.h - reading a spreadsheet for an import: the first worksheet of an
 * Office Open XML workbook (.xlsx) as CSV text, so that it goes through the
 * CSV import's every rule (headers by id or label, cells as people type
 * them). Strings come from the shared or inline strings, booleans as
 * true/false, numbers as Excel shows them (15 significant digits), and a
 * number in a date style as a date ("2026-11-22") or a local datetime
 * ("2026-11-22 09:30:00"; "...Z" when the style says UTC, as Loom's own raw
 * export writes them). Parsed with libzip and expat. */
#ifndef LOOM_XLSX_H
#define LOOM_XLSX_H

#include <stdbool.h>
#include <stddef.h>

/* Whether data looks like a ZIP archive (an .xlsx is one). */
bool xlsx_is(const char *data, size_t len);
/* The first worksheet of the workbook in data as CSV (malloc'd, *out_len
 * bytes, NUL-terminated), or NULL with a message in err. */
char *xlsx_to_csv(const char *data, size_t len, size_t *out_len, char *err, size_t errlen);

#endif
