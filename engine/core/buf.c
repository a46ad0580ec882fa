/* buf.c - growable byte buffer. */
#include "buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_grow(buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        abort();
    b->data = p;
    b->cap = cap;
}

void buf_puts(buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < (int)sizeof tmp) {
        buf_append(b, tmp, (size_t)n);
    } else {
        buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void buf_consume(buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = '\0';
}

void buf_reset(buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_free(buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void buf_json_string(buf *b, const char *s, bool in_copy)
{
    buf_json_stringn(b, s, strlen(s), in_copy);
}

/* Bytes a JSON string must escape: control characters, quote, backslash. */
#define CTL16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const unsigned char needs_escape[256] = {CTL16(1), CTL16(1), ['"'] = 1, ['\\'] = 1};

/* Whether one of the 8 bytes at s needs escaping (bit tricks on a word:
 * a byte below 0x20, or equal to '"' or '\\'). */
static inline bool word_needs_escape(const char *s)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t w;
    memcpy(&w, s, 8);
    uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
    uint64_t below = (w - ones * 0x20) & ~w;
    uint64_t zero = ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash);
    return ((below | zero) & highs) != 0;
}

/* Whether one of the n bytes at s needs escaping: a word at a time (the
 * last word overlapping the one before), byte by byte under eight. */
static inline bool any_needs_escape(const char *s, size_t n)
{
    if (n < 8) {
        for (size_t i = 0; i < n; i++)
            if (needs_escape[(unsigned char)s[i]])
                return true;
        return false;
    }
    for (size_t i = 0; i + 8 <= n; i += 8)
        if (word_needs_escape(s + i))
            return true;
    return n % 8 && word_needs_escape(s + n - 8);
}

void buf_json_stringn(buf *b, const char *s, size_t n, bool in_copy)
{
    if (!any_needs_escape(s, n)) {   /* most strings: quoted as they are */
        buf_reserve(b, n + 2);
        char *d = b->data + b->len;
        d[0] = '"';
        memcpy(d + 1, s, n);
        d[n + 1] = '"';
        d[n + 2] = '\0';
        b->len += n + 2;
        return;
    }
    static const char hex[] = "0123456789abcdef";
    const char *bs = in_copy ? "\\\\" : "\\";
    size_t nbs = in_copy ? 2 : 1;
    buf_reserve(b, n + 2);
    b->data[b->len++] = '"';
    const char *end = s + n, *run = s;
    for (; s < end; s++) {
        while (end - s >= 8 && !word_needs_escape(s))   /* eight bytes at a time while there is nothing to do */
            s += 8;
        if (s == end)
            break;
        unsigned char ch = (unsigned char)*s;
        if (!needs_escape[ch])
            continue;
        buf_append(b, run, (size_t)(s - run));
        run = s + 1;
        buf_append(b, bs, nbs);
        switch (ch) {
        case '"': buf_append(b, "\"", 1); break;
        case '\\': buf_append(b, bs, nbs); break;
        case '\n': buf_append(b, "n", 1); break;
        case '\r': buf_append(b, "r", 1); break;
        case '\t': buf_append(b, "t", 1); break;
        default: {
            char u[5] = {'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            buf_append(b, u, 5);
        }
        }
    }
    buf_append(b, run, (size_t)(s - run));
    buf_append(b, "\"", 1);
}

void buf_json_compact(buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    char *o = b->data + b->len;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_string) {
            *o++ = c;
            if (c == '\\' && i + 1 < n)
                *o++ = s[++i];   /* an escaped character, quote or backslash included */
            else if (c == '"')
                in_string = false;
        } else if (c != ' ' && c != '\n' && c != '\t' && c != '\r') {
            *o++ = c;
            in_string = c == '"';
        }
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}
