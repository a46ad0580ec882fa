/* sandbox.h - the Lua sandbox for rules and expressions (shared/spec/lua.md).
 *
 * One sandbox per thread, reused for every run. Each run gets a fresh
 * environment: its globals are its own, and everything else it can reach
 * (the allowed functions, read-only copies of string, table, math, utf8) is
 * shared read-only, so no run can change what the next one sees. Chunks are
 * text only, compiled once and cached by key (e.g. app version + form +
 * field). A run stops with LOOM_RULE_LIMIT past its instruction or memory
 * budget; pcall cannot catch that, nor a memory error. */
#ifndef LOOM_SANDBOX_H
#define LOOM_SANDBOX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

typedef struct sandbox sandbox;

typedef struct sandbox_limits {
    long instructions;   /* per run; default 1,000,000 */
    size_t memory;       /* bytes a run may allocate beyond the state's own; default 16 MiB */
} sandbox_limits;

/* A new sandbox (limits may be NULL: the defaults). Never NULL. */
sandbox *sandbox_new(const sandbox_limits *limits);
void sandbox_free(sandbox *sb);

/* The global names a chunk of Lua may read: every name token that is not in
 * a string or comment, does not follow a single "." or ":" (a field, a
 * method) and is not followed by a single "=" (a table's key, a variable
 * written), as a new object name -> true. Never too few; keywords, locals and
 * labels may be among them. */
json_t *sandbox_names(const char *code, size_t len);

/* Compiles code (an expression when expression, else a script), caching the
 * chunk under key. Returns a chunk id >= 0, or -1 with the message in err. */
int sandbox_compile(sandbox *sb, const char *key, const char *code, size_t len, bool expression, char *err,
                    size_t errlen);

/* Pushes on L the function that code compiles to, text only (a binary chunk
 * is never loaded); an expression is wrapped as `return (<code>)`. Returns
 * LUA_OK, or an error status with the message pushed instead. The one way
 * Loom turns Lua source into a function (the sandbox and bundle checks). */
typedef struct lua_State lua_State;
int sandbox_load(lua_State *L, const char *code, size_t len, bool expression);

/* Runs a chunk with vars (a JSON object, may be NULL) as variables of its
 * environment. On success *out is its first result as JSON (new reference;
 * null for nil) and the answer LOOM_OK; else LOOM_RULE_LIMIT (budget) or
 * LOOM_RULE_ERROR (an error, message with line in err), or
 * LOOM_RULE_REJECTED (reject() was called; its message in err).
 * Helpers every run sees: now(), today(), date_add(d, n, unit),
 * days_between(a, b), hours_between(a, b), sum_rows(rows, field), and
 * reject(message [, field]). */
loom_code sandbox_run(sandbox *sb, int chunk, json_t *vars, json_t **out, char *err, size_t errlen);

/* Sets what now() and today() answer in the runs that follow: now as
 * "YYYY-MM-DDTHH:MM:SSZ" (UTC) and today as "YYYY-MM-DD" in the app's time
 * zone (the caller knows it; PostgreSQL computes it). NULL: the system clock
 * in UTC. */
void sandbox_set_clock(sandbox *sb, const char *now, const char *today);

/* reject(message [, field]) ends a run with LOOM_RULE_REJECTED; pcall cannot
 * catch it. After such a run, the field it named (or NULL). */
const char *sandbox_rejected_field(const sandbox *sb);

/* Chunks cached; the cache is dropped whole past SANDBOX_MAX_CHUNKS. */
int sandbox_cached(const sandbox *sb);
#define SANDBOX_MAX_CHUNKS 10000

#endif
