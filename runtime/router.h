/* router.h - method + path pattern -> handler, with path parameters.
 *
 * Patterns are literal segments and `{name}` segments that match one
 * non-empty segment; a matched parameter is percent-decoded. Routes are tried
 * in table order. */
#ifndef LOOM_ROUTER_H
#define LOOM_ROUTER_H

#include <stdbool.h>

#include "core/arena.h"

#define ROUTE_MAX_PARAMS 6

typedef struct route {
    const char *method;
    const char *pattern;
    void (*fn)(void *ctx);
    int flags;           /* meaning given by the server */
} route;

typedef struct route_match {
    int index;           /* -1: no route */
    bool wrong_method;   /* the path exists under another method */
    int nparams;
    const char *params[ROUTE_MAX_PARAMS];
} route_match;

/* Finds the route for method and path. Parameters are allocated on a.
 * Returns false (m->index = -1) when none matches. */
bool router_match(const route *routes, int n, const char *method, const char *path, arena *a, route_match *m);

/* Percent-decodes s into a new string on a; NULL when s has a bad escape or
 * decodes to a NUL byte. */
char *url_decode(arena *a, const char *s, size_t n);
/* The decoded value of a query parameter, or NULL when absent. */
const char *query_param(arena *a, const char *query, const char *name);
/* A positive id (digits only, at most 18) from a path parameter, or 0. */
long long path_id(const char *s);

#endif
