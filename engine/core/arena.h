/* arena.h - region allocator for request- and run-scoped memory.
 *
 * An arena hands out memory that lives until arena_reset() or arena_free().
 * Resources that are not plain memory (PGresult, json_t) are registered with
 * arena_defer() and released, last registered first, at the same moment.
 * Allocation never returns NULL: running out of memory aborts the process. */
#ifndef LOOM_ARENA_H
#define LOOM_ARENA_H

#include <stddef.h>

typedef struct arena arena;

/* Returns a new arena; free it with arena_free(). */
arena *arena_new(void);
/* Runs the deferred cleanups, then frees the arena and all its memory. */
void arena_free(arena *a);
/* Runs the deferred cleanups and forgets every allocation, keeping the first
 * block for reuse (a worker resets its arena between requests). */
void arena_reset(arena *a);

/* Returns n bytes aligned for any type, owned by the arena. */
void *arena_alloc(arena *a, size_t n);
/* Same, zero-filled. */
void *arena_calloc(arena *a, size_t n);
char *arena_strdup(arena *a, const char *s);
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Calls fn(p) when the arena is reset or freed. */
void arena_defer(arena *a, void (*fn)(void *), void *p);

/* Bytes currently handed out (for tests and metrics). */
size_t arena_used(const arena *a);

#endif
