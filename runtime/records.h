/* records.h - what the record routes share (record_routes.c, io_routes.c, file_routes.c):
 * the app and form a request names, resolved for its caller. */
#ifndef LOOM_RECORDS_H
#define LOOM_RECORDS_H

#include "handlers.h"
#include "meta.h"
#include "store/filter.h"
#include "store/write.h"

typedef struct rec_req {
    app_snapshot *snap;   /* released with the request */
    filter_ctx fc;        /* the caller */
    const char *form;
} rec_req;

/* The caller in snap as a filter context. */
filter_ctx rec_caller(ctx *c, app_snapshot *snap, json_t *roles);
/* Resolves {app}/{form} for the caller; false after responding 404. */
bool rec_begin(ctx *c, rec_req *r);
/* Responds with a filter or query problem. */
void rec_problem(ctx *c, const filter_err *e);
/* limit as text (NULL: the default): digits only, 1 to 1000; false after
 * responding. */
bool rec_parse_limit(ctx *c, const char *s, long *out);
/* Runs run-time SQL with text arguments; NULL after responding. */
PGresult *rec_run(ctx *c, const buf *sql, json_t *args);
/* The write context of the request. */
write_ctx rec_write_ctx(ctx *c, rec_req *r);
/* Resolves {app}/{form}/{id} and If-Match (*im: -1 when absent); false
 * after responding. */
bool rec_target(ctx *c, rec_req *r, long long *im);
/* Responds with a failed write's problem (and frees it). */
void rec_write_failed(ctx *c, write_result *w);
/* Record id as the caller may read it now (inside the write's transaction),
 * or NULL after responding with a problem; a record the caller may write
 * but not read is its id and version (version < 0: unknown, left out). */
json_t *rec_read(ctx *c, rec_req *r, long long id, long long version);
/* Responds with a successful write's record (built by the write when it
 * could be, else read) and its ETag, and frees out. */
void rec_respond_written(ctx *c, rec_req *r, write_result *out, int status);
/* Responds with rec_read() and its ETag. */
void rec_respond(ctx *c, rec_req *r, int status, long long id, long long version);

#endif
