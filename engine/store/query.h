/* query.h - reading records: a page of a form's records (filter, sort,
 * keyset cursor, projection, count) or one record, as parameterised SQL over
 * the rows and fields the caller may read, and the rows it returns as
 * record JSON (definitions: Records).
 *
 * Pages are keyset-paginated: no OFFSET. The cursor carries the last row's
 * sort values (datetimes as epoch microseconds, so nothing is lost) and its
 * id, bound to the sort it was made for; every value in it is checked by type
 * before it becomes a parameter, so a forged cursor is a clean bad_request.
 * Results are read as a session of db_connect_once() writes them (time zone
 * UTC, ISO dates). */
#ifndef LOOM_QUERY_H
#define LOOM_QUERY_H

#include <libpq-fe.h>

#include "store/db.h"
#include "store/filter.h"

#define QUERY_MAX_LIMIT 1000
#define QUERY_DEFAULT_LIMIT 50
#define QUERY_MAX_SORT 8

typedef struct query_spec {
    json_t *filter;       /* or NULL */
    const char *sort;     /* "-_created_at,name"; NULL or "": "-id" (newest first) */
    const char *fields;   /* "name,level"; NULL: every field the caller may read */
    const char *cursor;   /* a previous page's next_cursor, or NULL */
    const char *expand;   /* "customer,_owner": refs and users as {"id", "title"}; NULL: none */
    long limit;           /* 0: QUERY_DEFAULT_LIMIT */
    bool count;           /* also count every match */
    const char *search;   /* text any searchable field the caller sees contains, or NULL */
} query_spec;

typedef struct query {
    buf sql;              /* the page (limit + 1 rows) or the record */
    json_t *args;
    buf count_sql;        /* with spec.count; empty otherwise */
    json_t *count_args;
    json_t *out;          /* per selected column: [key, decoder] */
    json_t *sort;         /* per sort key: [name, desc, cast, SQL expression, the result column of its value] */
    long limit;
    char sort_text[256];  /* the normalised sort, which a cursor must match */
} query;

/* Builds the page query for form. False with err: LOOM_NOT_FOUND (a form the
 * caller may not read), LOOM_BAD_FILTER, LOOM_UNKNOWN_FIELD, or
 * LOOM_BAD_REQUEST (a bad limit or cursor). Free q with query_free(). */
bool query_list(const filter_ctx *c, const char *form, const query_spec *spec, query *q, filter_err *err);
/* query_list in two steps, so that the first can be cached: the base (the
 * columns, the scope and the filter, the count) depends on the caller and
 * the spec but not on the cursor; the end adds the cursor's keyset, the
 * order and the limit. */
bool query_list_base(const filter_ctx *c, const char *form, const query_spec *spec, query *q, filter_err *err);
bool query_list_end(query *q, const char *cursor, filter_err *err);
/* dst becomes a copy of src (free both). */
void query_copy(const query *src, query *dst);

/* A small least-recently-used cache of query bases by a caller's key (what
 * the base depends on). One per worker thread: not synchronised. */
typedef struct query_cache query_cache;
query_cache *query_cache_new(int n);
void query_cache_free(query_cache *c);
const query *query_cache_get(query_cache *c, const char *key);
void query_cache_put(query_cache *c, const char *key, const query *q);

/* Builds the query of one record by id (digits), inside the read scope,
 * with the fields of expand (or NULL) expanded. */
bool query_get(const filter_ctx *c, const char *form, const char *id, const char *expand, query *q, filter_err *err);
/* For a write: record id (digits, or an array literal "{1,2}": those
 * records, by id) with every field (none hidden, no scope), locked FOR
 * UPDATE when for_update, followed by three boolean columns: whether the
 * caller's read, update and delete scopes admit it. */
bool query_lock(const filter_ctx *c, const char *form, const char *id, bool for_update, query *q, filter_err *err);
/* The rows of r as records (a new array). With next non-NULL: the rows past
 * the page are left out, and *next is the next page's cursor (malloc'd) or
 * NULL on the last page. */
json_t *query_items(const query *q, PGresult *r, char **next);
/* The same rows written straight to out as a JSON array of records (no
 * JSON tree: a page is the hottest path), with *next as above. */
void query_page_json(const query *q, PGresult *r, buf *out, char **next);
void query_free(query *q);
/* args (an array of strings or nulls) as *n text parameters, on a. */
const char **query_params(arena *a, json_t *args, int *n);
/* Runs sql with args (an array of strings or nulls, $1 = args[0]) as
 * run-time SQL (db_query_text): the result, or NULL with *err. */
PGresult *query_exec(db *d, arena *a, const char *sql, json_t *args, loom_err *err);

#endif
