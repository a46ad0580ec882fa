/* router.c - segment-wise matching of request paths against route patterns. */
#include "router.h"

#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *url_decode(arena *a, const char *s, size_t n)
{
    char *out = arena_alloc(a, n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n)
                return NULL;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0))
                return NULL;
            *o++ = (char)(h << 4 | l);
            i += 2;
        } else if (s[i] == '+') {
            *o++ = ' ';
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

const char *query_param(arena *a, const char *query, const char *name)
{
    size_t nlen = strlen(name);
    const char *p = query;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        if (klen == nlen && memcmp(p, name, nlen) == 0)
            return eq ? url_decode(a, eq + 1, len - klen - 1) : "";
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

/* Matches one pattern; fills params on success. */
static bool match_one(const char *pat, const char *path, arena *a, route_match *m)
{
    int np = 0;
    while (*pat && *path) {
        if (*pat != '/' || *path != '/')
            return false;
        pat++;
        path++;
        const char *pe = strchr(pat, '/');
        const char *se = strchr(path, '/');
        size_t plen = pe ? (size_t)(pe - pat) : strlen(pat);
        size_t slen = se ? (size_t)(se - path) : strlen(path);
        if (plen >= 2 && pat[0] == '{') {
            if (slen == 0 || np == ROUTE_MAX_PARAMS)
                return false;
            if (a) {
                const char *v = url_decode(a, path, slen);
                if (!v)
                    return false;
                m->params[np] = v;
            }
            np++;
        } else if (plen != slen || memcmp(pat, path, plen) != 0) {
            return false;
        }
        pat += plen;
        path += slen;
    }
    if (*pat || *path)
        return false;
    m->nparams = np;
    return true;
}

bool router_match(const route *routes, int n, const char *method, const char *path, arena *a, route_match *m)
{
    m->index = -1;
    m->wrong_method = false;
    m->nparams = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(routes[i].method, method) != 0) {
            if (!m->wrong_method && match_one(routes[i].pattern, path, NULL, m))
                m->wrong_method = true;
            continue;
        }
        if (match_one(routes[i].pattern, path, a, m)) {
            m->index = i;
            m->wrong_method = false;
            return true;
        }
    }
    m->nparams = 0;
    return false;
}

long long path_id(const char *s)
{
    if (!s || !*s || strlen(s) > 18)
        return 0;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return atoll(s);
}
