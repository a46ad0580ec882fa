/* buf.h - a growable byte buffer owned by its holder (malloc'd).
 * Used where data outlives a request arena: connection input, response bytes. */
#ifndef LOOM_BUF_H
#define LOOM_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

typedef struct buf {
    char *data;     /* NUL-terminated after every append; NULL while empty */
    size_t len, cap;
} buf;

/* Grows b to hold extra more bytes and the NUL (buf_reserve's slow path). */
void buf_grow(buf *b, size_t extra);

/* Makes room for extra more bytes (and the NUL) without writing them. */
static inline void buf_reserve(buf *b, size_t extra)
{
    if (b->len + extra + 1 > b->cap)
        buf_grow(b, extra);
}

static inline void buf_append(buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_puts(buf *b, const char *s);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string: quoted, with quotes, backslashes and control
 * characters escaped. in_copy: for COPY's text format, where every
 * backslash of the JSON text is itself doubled. */
void buf_json_string(buf *b, const char *s, bool in_copy);
/* The same for the n bytes at s. */
void buf_json_stringn(buf *b, const char *s, size_t n, bool in_copy);
/* Appends the JSON text s (n bytes, valid JSON) without the whitespace
 * between its tokens, as PostgreSQL's json and jsonb output has it. */
void buf_json_compact(buf *b, const char *s, size_t n);
/* Drops the first n bytes. */
void buf_consume(buf *b, size_t n);
void buf_reset(buf *b);
void buf_free(buf *b);

#endif
