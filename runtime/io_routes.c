/* io_routes.c - records in and out as spreadsheets.
 *
 * POST .../forms/{form}/import?mode=insert|upsert&key=<field>&partial=true:
 * a CSV body (UTF-8, a byte order mark accepted; the header names fields by
 * id or by label in any of the app's locales) read in batches of
 * IMPORT_BATCH rows through engine/store/write's import (checked like
 * API writes, written with COPY). All or nothing unless partial=true.
 *
 * GET .../forms/{form}/export?format=csv|xlsx&filter=&sort=&fields=&header=id:
 * every record the caller may read that matches, with the fields it may
 * see, read page by page on the keyset (the query built once) and written
 * as it is read (CSV into the response, XLSX streamed to a temporary file);
 * cells that a spreadsheet would run as a formula are neutralised with a
 * leading apostrophe. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <xlsxwriter.h>

#include "form/csv.h"
#include "form/ddl.h"
#include "form/record.h"
#include "form/schema.h"
#include "form/xlsx.h"
#include "model/bundle.h"
#include "perm/perm.h"
#include "records.h"
#include "rule/sandbox.h"
#include "store/query.h"

#define IMPORT_BATCH 5000
#define IMPORT_MAX_ERRORS 1000
#define EXPORT_PAGE 1000
#define STREAM_AT 65536   /* an export goes out in parts of this size (a smaller one in one answer) */

/* Text kinds: what a user typed, so what an export neutralises. */
static bool texty(json_t *f)
{
    const char *t = jstr(json_object_get(f, "type"));
    return !f || !strcmp(t, "text") || !strcmp(t, "longtext") || !strcmp(t, "select") || !strcmp(t, "multiselect") ||
           !strcmp(t, "email") || !strcmp(t, "phone") || !strcmp(t, "url") || !strcmp(t, "autonumber") ||
           !strcmp(t, "file");
}

static void decref_cb(void *p)
{
    json_decref(p);
}

static void perm_free_cb(void *p)
{
    perm_free(p);
}


/* ---- import ---- */

/* The CSV being imported, read a batch at a time (by one thread at a time). */
typedef struct import_reader {
    csv_reader *rd;
    int ncols;
    const char **names;   /* per column: its field id, or "id" / "_owner" */
    json_t **col;         /* per column: its field, or NULL */
    const bool *skip;     /* per column: one the caller cannot write, left out (the answer's "ignored") */
    bool upsert;          /* an empty cell clears the field (else it is absent, so a default applies) */
    const char *form;
    long row;             /* data rows read so far */
    json_t *users;        /* username and unique display name -> id, when a column holds users; or NULL */
    json_t **titles;      /* per ref column: title -> id (null: two records have it), or NULL */
    json_t **times;       /* per datetime column: local time ("2026-01-05 09:30:00") -> UTC, or NULL */
} import_reader;

/* When a column (of cols, n; ids: their names) is a user field or _owner:
 * every active user by username, and by display name where no one else has
 * it, to their id. */
static json_t *import_users(ctx *c, json_t **cols, const char **ids, int n)
{
    static db_stmt all = {.sql = "SELECT id, username, display_name FROM loom.users WHERE active"};
    int k = 0;
    while (k < n && !field_is(cols[k], "user") && strcmp(ids[k], "_owner"))
        k++;
    loom_err e = {0};
    PGresult *r = k < n ? db_query(c->db, c->a, &all, 0, NULL, &e) : NULL;
    if (!r)
        return NULL;   /* no user column; or the database failed, which the import's writes then report */
    json_t *names = json_object(), *twice = json_object(), *v;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *dn = PQgetvalue(r, i, 2);
        if (*dn && json_object_get(names, dn))
            json_object_set_new(twice, dn, json_true());
        else if (*dn)
            json_object_set_new(names, dn, json_integer(strtoll(PQgetvalue(r, i, 0), NULL, 10)));
    }
    const char *dn;
    json_object_foreach(twice, dn, v) json_object_del(names, dn);   /* a name two people have names neither */
    for (int i = 0; i < PQntuples(r); i++)   /* usernames are unique, and win */
        json_object_set_new(names, PQgetvalue(r, i, 1), json_integer(strtoll(PQgetvalue(r, i, 0), NULL, 10)));
    json_decref(twice);
    return names;
}

/* The keys of set as a JSON array's text, a parameter (malloc'd). */
static char *keys_text(json_t *set)
{
    json_t *list = json_array(), *v;
    const char *t;
    json_object_foreach(set, t, v) json_array_append_new(list, json_string(t));
    char *text = json_dumps(list, JSON_COMPACT);
    json_decref(list);
    return text;
}

/* The titles the ref cells of column k (field f) hold instead of ids, in
 * titles (a set), looked up among the target's records the caller may read
 * (by its title field, when the caller sees it): title -> id, or -> null
 * when two records have it. NULL when none can be (or the database failed:
 * the import's writes then report it). */
static json_t *ref_titles(ctx *c, rec_req *r, json_t *f, json_t *titles)
{
    json_t *bundle = r->snap->bundle;
    const char *target = jstr(json_object_get(f, "form"));
    json_t *tdef = bundle_item(json_object_get(bundle, "forms"), target);
    const char *title = jstr(json_object_get(tdef, "title"));
    perm_decision td;
    perm_decide(bundle, target, r->fc.roles, r->fc.admin, &td);
    json_t *tf = bundle_item(json_object_get(tdef, "fields"), title);
    if (!td.read || !tf || perm_field(&td, title) == FIELD_HIDDEN) {
        perm_free(&td);
        return NULL;
    }
    char *text = keys_text(titles);
    json_t *args = json_pack("[s]", text);
    free(text);
    buf sql = {0};
    buf_puts(&sql, "SELECT n.v, min(e.\"id\"), count(*) FROM json_array_elements_text($1::json) AS n(v) JOIN ");
    ddl_quote(&sql, r->fc.schema);
    buf_puts(&sql, ".");
    ddl_quote(&sql, target);
    buf_puts(&sql, " AS e ON e.");
    ddl_quote(&sql, title);   /* a field id of the published bundle */
    buf_printf(&sql, "%s = n.v", field_is(tf, "text") || field_is(tf, "autonumber") ? "" : "::text");
    filter_err fe;
    bool ok = true;
    if (!perm_scope_all(td.read)) {
        buf_puts(&sql, " AND ");
        ok = filter_scope_sql(&r->fc, target, "e", td.read, &sql, args, &fe);
    }
    buf_puts(&sql, " GROUP BY n.v");
    loom_err e = {0};
    PGresult *res = ok ? query_exec(c->db, c->a, sql.data, args, &e) : NULL;
    buf_free(&sql);
    json_decref(args);
    perm_free(&td);
    if (!res)
        return NULL;
    json_t *ids = json_object();
    for (int i = 0; i < PQntuples(res); i++)
        json_object_set_new(ids, PQgetvalue(res, i, 0),
                            atoll(PQgetvalue(res, i, 2)) > 1 ? json_null() : json_integer(atoll(PQgetvalue(res, i, 1))));
    return ids;
}

/* The times of set placed by the app's timezone: with to_utc, local times
 * ("2026-01-05 09:30:00") -> UTC ("2026-01-05T01:30:00Z"); else the other
 * way. NULL when the database failed (an import's writes, an export's next
 * page, then report it). */
static json_t *local_times(ctx *c, rec_req *r, json_t *set, bool to_utc)
{
    char *text = keys_text(set);
    json_t *args = json_pack("[s, s]", text, r->fc.timezone && *r->fc.timezone ? r->fc.timezone : "UTC");
    free(text);
    loom_err e = {0};
    PGresult *res = query_exec(c->db, c->a,
                               to_utc ? "SELECT v, to_char((v::timestamp AT TIME ZONE $2) AT TIME ZONE 'UTC', "
                                        "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM json_array_elements_text($1::json) AS v"
                                      : "SELECT v, to_char(v::timestamptz AT TIME ZONE $2, 'YYYY-MM-DD HH24:MI:SS') "
                                        "FROM json_array_elements_text($1::json) AS v",
                               args, &e);
    json_decref(args);
    if (!res)
        return NULL;
    json_t *utc = json_object();
    for (int i = 0; i < PQntuples(res); i++)
        json_object_set_new(utc, PQgetvalue(res, i, 0), json_string(PQgetvalue(res, i, 1)));
    return utc;
}

/* What cells name by what people write, looked up for the whole file
 * before the import: per ref column, the titles its cells hold instead of
 * ids (ref_titles); per datetime column, the local times written without an
 * offset, placed in the app's timezone (local_times). A column is taken to
 * be written as its first filled cell is: one whose first cell is an id, or
 * a time with its offset, is left as it is (and the file is read only as
 * far as that first row when no column needs more). */
static void import_lookups(ctx *c, rec_req *r, const char *text, size_t len, import_reader *in)
{
    int n = in->ncols, open = 0;
    json_t **sets = arena_calloc(c->a, (size_t)n * sizeof *sets);
    bool *seen = arena_calloc(c->a, (size_t)n * sizeof *seen);   /* the column's first filled cell read */
    for (int k = 0; k < n; k++)
        if (!in->skip[k] && (field_is(in->col[k], "ref") || field_is(in->col[k], "datetime")))
            sets[k] = json_object(), open++;
    csv_reader rd;
    csv_open(&rd, text, len);
    const char *err;
    bool header = true;
    while (open && csv_next(&rd, &err)) {
        for (int k = 0; !header && k < n && k < rd.n; k++) {
            const char *cell = rd.cells[k];
            char *end, local[20];
            if (!sets[k] || !*cell)
                continue;
            bool named = field_is(in->col[k], "datetime") ? csv_local_datetime(cell, local)
                                                           : ((void)strtoll(cell, &end, 10), *end != '\0');
            if (named) {
                json_object_set_new(sets[k], field_is(in->col[k], "datetime") ? local : cell, json_true());
            } else if (!seen[k]) {   /* written as stored: nothing to look up */
                json_decref(sets[k]);
                sets[k] = NULL;
                open--;
            }
            seen[k] = true;
        }
        header = false;
    }
    csv_close(&rd);
    if (!open)
        return;
    in->titles = arena_calloc(c->a, (size_t)n * sizeof *in->titles);
    in->times = arena_calloc(c->a, (size_t)n * sizeof *in->times);
    for (int k = 0; k < n; k++) {
        if (!sets[k] || !json_object_size(sets[k])) {
            json_decref(sets[k]);
            continue;
        }
        json_t *found = field_is(in->col[k], "datetime") ? (in->times[k] = local_times(c, r, sets[k], true))
                                                          : (in->titles[k] = ref_titles(c, r, in->col[k], sets[k]));
        json_decref(sets[k]);
        if (found)
            arena_defer(c->a, decref_cb, found);
    }
}

/* One batch: its rows as JSON objects, the problems of reading them, and
 * with w, the rows checked (write_import_check). */
typedef struct import_batch {
    import_reader *in;
    const write_ctx *w;   /* check with it while reading, or NULL */
    long first;           /* the data row of the first row */
    json_t *bodies, *errors;
    bool more;            /* rows follow */
    bool checked;         /* b holds the check (false: not done, or it failed with b.out) */
    write_import_batch b;
    struct import_batch *drop;   /* a batch written already, freed by the thread that reads this one */
} import_batch;

static void read_batch(import_batch *t)
{
    import_reader *in = t->in;
    csv_reader *rd = in->rd;
    t->first = in->row + 1;
    t->bodies = json_array();
    t->errors = json_array();
    const char *err = NULL;
    while (json_array_size(t->bodies) < IMPORT_BATCH && (t->more = csv_next(rd, &err))) {
        in->row++;
        if (rd->n > in->ncols) {   /* the row's problem; a null in its place keeps the rows' numbers */
            write_import_problem(t->errors, in->row, "", "bad_request", "more cells than the header has");
            json_array_append_new(t->bodies, json_null());
            continue;
        }
        json_t *body = json_object();
        for (int i = 0; body && i < in->ncols && i < rd->n; i++) {
            if (in->skip[i] || (!*rd->cells[i] && !in->upsert))
                continue;   /* empty: absent, so a default applies */
            char local[20];
            json_t *utc = in->times && in->times[i] && csv_local_datetime(rd->cells[i], local)
                              ? json_object_get(in->times[i], local)
                              : NULL;   /* a local time, placed in the app's timezone */
            json_t *v = utc ? json_incref(utc) : *rd->cells[i] ? csv_value(in->col[i], rd->cells[i]) : json_null(), *user;
            if (in->users && json_is_string(v) && (field_is(in->col[i], "user") || !strcmp(in->names[i], "_owner")) &&
                (user = json_object_get(in->users, json_string_value(v))))
                json_decref(v), v = json_incref(user);   /* a user by name, as people write them */
            if (in->titles && in->titles[i] && json_is_string(v)) {   /* a record by its title: one record's, or the row's problem */
                json_t *id = json_object_get(in->titles[i], json_string_value(v));
                if (id && !json_is_null(id)) {
                    json_decref(v), v = json_incref(id);
                } else {
                    char msg[200];
                    snprintf(msg, sizeof msg, id ? "more than one record is titled \"%.64s\": write its id"
                                                 : "no record is titled \"%.64s\"", json_string_value(v));
                    write_import_problem(t->errors, in->row, in->names[i], id ? "not_unique" : "not_found", msg);
                    json_decref(v);
                    json_decref(body);
                    body = NULL;   /* the row is not written: a null in its place keeps the rows' numbers */
                    break;
                }
            }
            json_object_set_new(body, in->names[i], v);
        }
        json_array_append_new(t->bodies, body ? body : json_null());
    }
    if (!t->more && err)
        write_import_problem(t->errors, in->row + 1, "", "bad_request", err);
    if (t->w && json_array_size(t->bodies))
        t->checked = write_import_check(t->w, in->form, t->bodies, t->first, &t->b);
}

static void batch_free(import_batch *t)
{
    json_decref(t->bodies);
    json_decref(t->errors);
    write_import_batch_free(&t->b);
}

/* A batch written already, malloc'd: gone. */
static void batch_drop(import_batch *t)
{
    if (t)
        batch_free(t);
    free(t);
}

/* Frees the batch the writing thread hands over (5,000 rows of JSON take a
 * third of its time to free), then reads and checks the next one. */
static void *read_batch_thread(void *arg)
{
    import_batch *t = arg;
    batch_drop(t->drop);
    t->drop = NULL;
    read_batch(t);
    return NULL;
}

void records_import(void *cp)
{
    ctx *c = cp;
    rec_req r;
    if (!rec_begin(c, &r))
        return;
    const char *q = c->req->query;
    const char *mode = query_param(c->a, q, "mode"), *key = query_param(c->a, q, "key"),
               *partial = query_param(c->a, q, "partial"), *dry = query_param(c->a, q, "dry_run");
    bool dry_run = dry && !strcmp(dry, "true");
    write_import_opts o = {.upsert = mode && !strcmp(mode, "upsert"), .key = key,
                           .partial = partial && !strcmp(partial, "true")};
    json_t *fdef = bundle_item(json_object_get(r.snap->bundle, "forms"), r.form);
    json_t *fields = json_object_get(fdef, "fields");
    perm_decision *d = arena_alloc(c->a, sizeof *d);   /* the request's: the header's columns are weighed with it */
    perm_decide(r.snap->bundle, r.form, r.fc.roles, r.fc.admin, d);
    arena_defer(c->a, perm_free_cb, d);
    bool known = fdef && (d->read || d->create);
    if (!known) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such form", NULL);
        return;
    }
    if (mode && strcmp(mode, "insert") && strcmp(mode, "upsert")) {
        ctx_problem(c, LOOM_BAD_REQUEST, "mode is insert or upsert", NULL);
        return;
    }
    if (o.upsert) {
        json_t *kf = key && strcmp(key, "id") ? csv_header_field(fields, key) : NULL;   /* by id or by label */
        if (kf)
            key = o.key = jstr(json_object_get(kf, "id"));
        bool unique = key && (!strcmp(key, "id") || json_is_true(json_object_get(kf, "unique")) || field_is(kf, "autonumber"));
        if (!unique) {
            ctx_problem(c, LOOM_BAD_REQUEST, "an upsert needs key=id or key=<a unique field>",
                        json_pack("[{s:s, s:s, s:s}]", "path", "/key", "code", "bad_request", "message",
                                  "not a unique field"));
            return;
        }
    }
    const char *text = c->req->body;
    size_t len = c->req->body_len;
    if (xlsx_is(text, len)) {   /* an Excel workbook: its first sheet, as CSV */
        char why[160];
        char *csv = xlsx_to_csv(text, len, &len, why, sizeof why);
        if (!csv) {
            ctx_problem(c, LOOM_BAD_REQUEST, why,
                        json_pack("[{s:s, s:s, s:s}]", "path", "", "code", "bad_request", "message", why));
            return;
        }
        arena_defer(c->a, free, csv);
        text = csv;
    } else if (!csv_is_utf8(text, len) || memchr(text, '\0', len)) {   /* Excel on a Chinese Windows saves GB18030 */
        char *utf8 = csv_from_gb18030(text, len, &len);
        if (!utf8) {
            ctx_problem(c, LOOM_BAD_REQUEST, "the file is neither UTF-8 nor GB18030 text",
                        json_pack("[{s:s, s:s, s:s}]", "path", "", "code", "bad_request", "message",
                                  "save it as CSV UTF-8"));
            return;
        }
        arena_defer(c->a, free, utf8);
        text = utf8;
    }
    csv_reader rd;
    csv_open(&rd, text, len);
    const char *err = NULL;
    json_t *errors = json_array();
    arena_defer(c->a, decref_cb, errors);
    if (!csv_next(&rd, &err)) {
        csv_close(&rd);
        ctx_problem(c, LOOM_BAD_REQUEST, err ? err : "the CSV has no header row", NULL);
        return;
    }
    /* the header: each column a field (NULL: id or _owner, kept by name) */
    int ncols = rd.n;
    json_t **col = arena_calloc(c->a, (size_t)ncols * sizeof *col);
    const char **names = arena_calloc(c->a, (size_t)ncols * sizeof *names);
    bool *skip = arena_calloc(c->a, (size_t)ncols * sizeof *skip);
    json_t *ignored = json_array();
    arena_defer(c->a, decref_cb, ignored);
    for (int i = 0; i < ncols; i++) {
        char h[256];
        snprintf(h, sizeof h, "%s", rd.cells[i]);
        char *b = h, *e = h + strlen(h);
        while (*b == ' ')
            b++;
        while (e > b && e[-1] == ' ')
            *--e = '\0';
        json_t *f = csv_header_field(fields, b);
        const char *sys = csv_system_column(b);   /* 状态, Created at: what an export heads them with */
        if (f && sys && perm_field(d, jstr(json_object_get(f, "id"))) == FIELD_HIDDEN)
            f = NULL;   /* a hidden field's label is no field's for this caller (as the export heads it) */
        else if (f)
            sys = NULL;
        if (sys)
            b = strcpy(h, sys);
        names[i] = arena_strdup(c->a, f ? jstr(json_object_get(f, "id")) : b);
        col[i] = f;
        for (int k = 0; k < i; k++)
            if (!strcmp(names[k], names[i]))
                write_import_problem(errors, 0, names[i], "bad_request", "this column appears twice");
        /* what an export holds and no one writes (system columns, computed fields, fields the caller may
         * only read) is left out and named in the answer, so an exported file imports back as it is */
        bool key_col = o.upsert && key && !strcmp(names[i], key);
        skip[i] = f ? !key_col && (field_computed(f) || perm_field(d, names[i]) == FIELD_READ)
                    : (record_system_field(b) && (strcmp(b, "id") || !key_col)) ||   /* id is the key or Loom's */
                          (!strcmp(b, "_owner") && !perm_scope_all(d->update));   /* owners: with update scope all */
        if (skip[i])
            json_array_append_new(ignored, json_string(names[i]));
        else if ((!f && strcmp(b, "id") && strcmp(b, "_owner")) || field_is(f, "subform") ||
                 (f && perm_field(d, names[i]) == FIELD_HIDDEN))
            write_import_problem(errors, 0, b, "unknown_field", "no such field");
    }
    if (json_array_size(errors)) {
        csv_close(&rd);
        ctx_problem(c, LOOM_VALIDATION_FAILED, "the header names fields this form does not have", json_incref(errors));
        return;
    }
    write_ctx w = rec_write_ctx(c, &r);
    write_import_result res = {.errors = errors};
    write_result out = {0};
    bool ok = true;
    /* inserts whose checks need no database: batch N+1 is read and checked on a thread of its own (with a
     * sandbox of its own) while batch N is written, so that Loom and PostgreSQL work at the same time */
    bool offload = !o.upsert && write_fix_clock(&w, &out) && write_import_check_offloadable(&w, r.form);
    if (!o.upsert && out.code) {
        rec_write_failed(c, &out);
        write_result_free(&out);
        csv_close(&rd);
        return;
    }
    write_ctx wc = w;
    if (offload) {
        wc.db = NULL;   /* never touched by a check: see write_import_check_offloadable */
        wc.a = NULL;
        wc.sb = sandbox_new(NULL);
    }
    import_reader in = {.rd = &rd, .ncols = ncols, .names = names, .col = col, .skip = skip, .upsert = o.upsert, .form = r.form,
                        .users = import_users(c, col, names, ncols)};
    import_lookups(c, &r, text, len, &in);
    arena_defer(c->a, decref_cb, in.users);
    import_batch cur = {.in = &in, .w = offload ? &wc : NULL}, *written = NULL;
    read_batch(&cur);
    for (;;) {
        import_batch next = {.in = &in, .w = cur.w, .drop = written};
        pthread_t th;
        bool ahead = offload && cur.more && json_array_size(errors) < IMPORT_MAX_ERRORS &&
                     pthread_create(&th, NULL, read_batch_thread, &next) == 0;
        if (!ahead) {
            next.drop = NULL;
            batch_drop(written);
        }
        written = NULL;
        json_array_extend(errors, cur.errors);
        if (json_array_size(cur.bodies)) {
            o.validate_only = !o.partial && json_array_size(errors) > 0;
            if (o.upsert) {
                ok = write_import(&w, r.form, cur.bodies, cur.first, &o, &res, &out);
            } else {
                if (!cur.w)
                    cur.checked = write_import_check(&w, r.form, cur.bodies, cur.first, &cur.b);
                ok = cur.checked && write_import_store(&w, r.form, &cur.b, &o, &res, &out);
                if (!cur.checked)
                    out = cur.b.out, memset(&cur.b.out, 0, sizeof cur.b.out);
            }
        }
        bool go = ok && cur.more && json_array_size(errors) < IMPORT_MAX_ERRORS;
        if (ahead && go && (written = malloc(sizeof *written)))
            *written = cur;   /* for the next reading thread to free */
        else
            batch_free(&cur);
        if (ahead)
            pthread_join(th, NULL);
        else if (go)
            read_batch(&next);
        if (!go) {
            batch_free(&next);
            break;
        }
        cur = next;
    }
    if (offload)
        sandbox_free(wc.sb);
    csv_close(&rd);
    if (!ok) {
        if (out.from_db)
            ctx_db_fail(c, &out.db);
        else
            ctx_problem(c, out.code, out.message, json_incref(out.errors));
        write_result_free(&out);
        return;
    }
    write_import_sort_errors(errors);   /* found by step (checks, links, unique keys, updates), answered by row */
    if (json_array_size(errors) && !o.partial) {
        ctx_problem(c, LOOM_VALIDATION_FAILED, "some rows are not valid: nothing was imported", json_incref(errors));
        return;
    }
    if (dry_run)
        db_rollback(c->db);   /* everything checked and written as it would be, then undone */
    ctx_json(c, 200, json_pack("{s:I, s:I, s:I, s:O, s:O, s:b}", "inserted", (json_int_t)res.inserted, "updated",
                               (json_int_t)res.updated, "unchanged", (json_int_t)res.unchanged, "errors", errors, "ignored",
                               ignored, "dry_run", dry_run));
}

/* ---- export ---- */

/* The text of a record value for a spreadsheet cell (malloc'd). */
static char *cell_text(json_t *f, json_t *v)
{
    if (!v || json_is_null(v))
        return strdup("");
    if (json_is_string(v))
        return strdup(json_string_value(v));
    if (json_is_integer(v)) {
        char t[24];
        snprintf(t, sizeof t, "%lld", (long long)json_integer_value(v));
        return strdup(t);
    }
    if (json_is_boolean(v))
        return strdup(json_is_true(v) ? "true" : "false");
    buf b = {0};
    json_t *list = json_is_array(v) ? v : NULL;
    size_t n = list ? json_array_size(list) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *x = list ? json_array_get(list, i) : v;
        const char *s = field_is(f, "file") ? jstr(json_object_get(x, "name")) : jstr(x);
        buf_printf(&b, "%s%s", i ? "; " : "", s);
    }
    return b.data ? b.data : strdup("");
}

/* Where an export's rows go, page by page: CSV text into the response, or
 * a worksheet libxlsxwriter streams to a temporary file (constant memory). */
typedef struct sheet {
    bool xlsx;
    buf *csv;
    http_exchange *ex;   /* where a CSV goes once it outgrows STREAM_AT, and a finished XLSX */
    char path[32];
    lxw_workbook *wb;
    lxw_worksheet *ws;
    lxw_format *date, *datetime_format;   /* how date cells show (datetimes: UTC, or local with display) */
    lxw_row_t row;
    json_t *cols, *fields;   /* the column names; the form's fields */
    json_t *colf[CSV_MAX_CELLS];   /* per column, found once: its field (NULL: a system field) */
    bool neutral[CSV_MAX_CELLS];   /* ... and whether what a user typed in it is neutralised */
    bool display;                  /* values as people read them (values=labels), not as stored (values=raw) */
    json_t *labels[CSV_MAX_CELLS]; /* per column, with display: option or state value -> its label, or NULL */
    bool datetime[CSV_MAX_CELLS];  /* per column: it holds datetimes */
    json_t *local;                 /* with display, the page's datetimes: UTC -> local time in the app's timezone */
    const char *yes, *no;          /* with display, a CSV's booleans in the caller's language (XLSX: boolean cells) */
} sheet;

/* What cell k shows of v (a new reference): with display, an option's or a
 * state's label, and an expanded ref's or user's title (its id when the
 * caller may not read the record). */
static json_t *shown(const sheet *sh, size_t k, json_t *v)
{
    if (!sh->display || !v)
        return json_incref(v);
    json_t *local = sh->datetime[k] && json_is_string(v) ? json_object_get(sh->local, json_string_value(v)) : NULL;
    if (local)
        return json_incref(local);
    if (json_is_object(v) && json_object_get(v, "id")) {
        json_t *title = json_object_get(v, "title");
        return json_incref(title ? title : json_object_get(v, "id"));
    }
    json_t *labels = sh->labels[k], *l;
    if (labels && json_is_string(v))
        return json_incref((l = json_object_get(labels, json_string_value(v))) ? l : v);
    if (!labels || !json_is_array(v))
        return json_incref(v);
    json_t *out = json_array(), *x;
    size_t i;
    json_array_foreach(v, i, x) json_array_append(out, json_is_string(x) && (l = json_object_get(labels, json_string_value(x))) ? l : x);
    return out;
}

/* Value -> label (in locale) of items, each {"value" or "id", "label"}. */
static json_t *label_map(json_t *items, const char *key, const char *locale, json_t *locales)
{
    json_t *m = json_object(), *it;
    size_t i;
    json_array_foreach(items, i, it)
    {
        const char *v = jstr(json_object_get(it, key));
        json_object_set_new(m, v, schema_label(json_object_get(it, "label"), locale, locales, v));
    }
    return m;
}

static bool sheet_open(sheet *sh, json_t *heads)
{
    size_t ncols = json_array_size(heads);
    if (!sh->xlsx) {
        buf_reset(sh->csv);
        buf_puts(sh->csv, "\xEF\xBB\xBF");   /* so spreadsheets read UTF-8 */
        for (size_t k = 0; k < ncols; k++) {
            if (k)
                buf_puts(sh->csv, ",");
            csv_cell(sh->csv, jstr(json_array_get(heads, k)), true);
        }
        buf_puts(sh->csv, "\r\n");
        return true;
    }
    snprintf(sh->path, sizeof sh->path, "/tmp/loom-export-XXXXXX");
    int fd = mkstemp(sh->path);
    if (fd < 0)
        return false;
    close(fd);
    lxw_workbook_options wo = {.constant_memory = LXW_TRUE, .tmpdir = "/tmp"};
    sh->wb = workbook_new_opt(sh->path, &wo);
    sh->ws = sh->wb ? workbook_add_worksheet(sh->wb, NULL) : NULL;
    if (sh->ws) {   /* dates as dates, so a spreadsheet sorts and filters them as such; datetimes are UTC */
        format_set_num_format(sh->date = workbook_add_format(sh->wb), "yyyy-mm-dd");
        format_set_num_format(sh->datetime_format = workbook_add_format(sh->wb),
                              sh->display ? "yyyy-mm-dd hh:mm:ss" : "yyyy-mm-dd hh:mm:ss \"UTC\"");
    }
    for (size_t k = 0; sh->ws && k < ncols; k++)
        worksheet_write_string(sh->ws, 0, (lxw_col_t)k, jstr(json_array_get(heads, k)), NULL);
    return sh->ws != NULL;
}

/* Writes v as a date cell when field f (or system field name) holds dates
 * or datetimes and v is one Excel can show (from 1900 on); false otherwise. */
static bool date_cell(sheet *sh, json_t *f, const char *name, json_t *v, lxw_col_t col)
{
    bool dt = field_is(f, "datetime") || (!f && (!strcmp(name, "_created_at") || !strcmp(name, "_updated_at")));
    if (!json_is_string(v) || (!dt && !field_is(f, "date")))
        return false;
    lxw_datetime d = {0};
    const char *t = json_string_value(v);   /* "2026-11-22T09:30:00Z", or with display "2026-11-22 17:30:00" */
    int n = sscanf(t, t[10] == ' ' ? "%4d-%2d-%2d %2d:%2d:%lf" : "%4d-%2d-%2dT%2d:%2d:%lfZ", &d.year, &d.month, &d.day,
                   &d.hour, &d.min, &d.sec);
    if (n != (dt ? 6 : 3) || d.year < 1900)
        return false;
    return worksheet_write_datetime(sh->ws, sh->row, col, &d, dt ? sh->datetime_format : sh->date) == LXW_NO_ERROR;
}

static void sheet_record(sheet *sh, json_t *rec)
{
    size_t ncols = json_array_size(sh->cols);
    sh->row++;
    for (size_t k = 0; k < ncols; k++) {
        const char *name = jstr(json_array_get(sh->cols, k));
        json_t *f = sh->colf[k], *v = json_object_get(rec, name);
        bool neutral = sh->neutral[k];
        if (sh->display && (sh->labels[k] || json_is_object(v) || sh->datetime[k])) {   /* a title, a label, a local time */
            json_t *s = shown(sh, k, v);
            json_object_set_new(rec, name, s);   /* the page's record: written once, so changed in place */
            v = s;
            neutral = true;
        }
        if (!sh->xlsx) {
            if (k)
                buf_puts(sh->csv, ",");
            if (json_is_string(v)) {   /* most cells: as they are */
                csv_cell(sh->csv, json_string_value(v), neutral);
                continue;
            }
            if (sh->display && json_is_boolean(v)) {
                csv_cell(sh->csv, json_is_true(v) ? sh->yes : sh->no, false);
                continue;
            }
            char *t = cell_text(f, v);
            csv_cell(sh->csv, t, neutral);
            free(t);
            continue;
        }
        lxw_col_t col = (lxw_col_t)k;
        if (json_is_integer(v)) {
            worksheet_write_number(sh->ws, sh->row, col, (double)json_integer_value(v), NULL);
        } else if ((field_is(f, "decimal") || field_is(f, "money")) && json_is_string(v)) {
            worksheet_write_number(sh->ws, sh->row, col, strtod(json_string_value(v), NULL), NULL);
        } else if (json_is_boolean(v)) {
            worksheet_write_boolean(sh->ws, sh->row, col, json_is_true(v), NULL);
        } else if (date_cell(sh, f, name, v, col)) {
        } else if (v && !json_is_null(v)) {
            char *t = cell_text(f, v);
            char *n = neutral ? csv_neutral(t) : strdup(t);
            worksheet_write_string(sh->ws, sh->row, col, n, NULL);
            free(n);
            free(t);
        }
    }
    if (!sh->xlsx) {
        buf_puts(sh->csv, "\r\n");
        if (sh->csv->len >= STREAM_AT) {
            http_exchange_stream(sh->ex, sh->csv->data, sh->csv->len);
            buf_reset(sh->csv);   /* sent, or dropped with a client that is gone */
        }
    }
}

/* Ends the sheet: a CSV's last part, or the XLSX file, streamed (from the
 * file, a chunk at a time); false when the workbook could not be written.
 * Removes the temporary file. */
static bool sheet_close(sheet *sh, bool ok)
{
    if (!sh->xlsx) {
        if (sh->ex->streaming) {
            ok = ok && http_exchange_stream(sh->ex, sh->csv->data, sh->csv->len);
            buf_reset(sh->csv);
        }
        return ok;
    }
    ok = sh->wb && workbook_close(sh->wb) == LXW_NO_ERROR && ok;
    FILE *fp = ok ? fopen(sh->path, "rb") : NULL;
    char chunk[STREAM_AT];
    size_t n;
    while (fp && (n = fread(chunk, 1, sizeof chunk, fp)) > 0 && http_exchange_stream(sh->ex, chunk, n))
        ;
    if (fp)
        fclose(fp);
    if (*sh->path)
        unlink(sh->path);
    return ok && fp;
}

/* The datetimes of a page's records (items) in its datetime columns, as
 * local times in the app's timezone: UTC text -> "2026-11-22 17:30:00"
 * (PostgreSQL's time zone rules), or NULL when there are none. */
static json_t *page_local_times(ctx *c, rec_req *r, const sheet *sh, json_t *items)
{
    json_t *set = json_object(), *rec, *v;
    size_t i;
    json_array_foreach(items, i, rec)
    {
        for (size_t k = 0; k < json_array_size(sh->cols); k++)
            if (sh->datetime[k] && json_is_string(v = json_object_get(rec, jstr(json_array_get(sh->cols, k)))))
                json_object_set_new(set, json_string_value(v), json_true());
    }
    json_t *local = json_object_size(set) ? local_times(c, r, set, false) : NULL;
    json_decref(set);
    return local;
}

void records_export(void *cp)
{
    ctx *c = cp;
    rec_req r;
    if (!rec_begin(c, &r))
        return;
    const char *q = c->req->query;
    const char *format = query_param(c->a, q, "format"), *filter = query_param(c->a, q, "filter"),
               *header = query_param(c->a, q, "header"), *values = query_param(c->a, q, "values");
    bool xlsx = format && !strcmp(format, "xlsx");
    if (format && !xlsx && strcmp(format, "csv")) {
        ctx_problem(c, LOOM_BAD_REQUEST, "format is csv or xlsx", NULL);
        return;
    }
    bool display = values && !strcmp(values, "labels");
    if (values && !display && strcmp(values, "raw")) {
        ctx_problem(c, LOOM_BAD_REQUEST, "values is labels or raw",
                    json_pack("[{s:s, s:s, s:s}]", "path", "/values", "code", "bad_request", "message", "labels or raw"));
        return;
    }
    json_t *fdef = bundle_item(json_object_get(r.snap->bundle, "forms"), r.form);
    query_spec spec = {.sort = query_param(c->a, q, "sort"), .fields = query_param(c->a, q, "fields"), .limit = EXPORT_PAGE,
                       .search = query_param(c->a, q, "search")};
    perm_decision d;
    perm_decide(r.snap->bundle, r.form, r.fc.roles, r.fc.admin, &d);
    json_t *seen = json_array();   /* the fields the caller may see: their labels head columns */
    arena_defer(c->a, decref_cb, seen);
    buf ex = {0};
    buf_puts(&ex, "_owner,_created_by,_updated_by");
    size_t fi;
    json_t *ff;
    json_array_foreach(json_object_get(fdef, "fields"), fi, ff)
    {
        const char *id = jstr(json_object_get(ff, "id"));
        if (perm_field(&d, id) == FIELD_HIDDEN)
            continue;
        json_array_append(seen, ff);
        if (field_is(ff, "ref") || field_is(ff, "user"))
            buf_printf(&ex, ",%s", id);
    }
    perm_free(&d);
    if (display)   /* refs and users as their titles: expanded, those the caller sees */
        spec.expand = arena_strdup(c->a, ex.data);
    buf_free(&ex);
    if (!spec.sort)
        spec.sort = "id";
    if (filter && *filter) {
        char e[200];
        spec.filter = bundle_parse(filter, strlen(filter), e, sizeof e);
        if (!spec.filter) {
            filter_err fe = {.code = LOOM_BAD_FILTER};
            snprintf(fe.path, sizeof fe.path, "/filter");
            snprintf(fe.message, sizeof fe.message, "%s", e);
            rec_problem(c, &fe);
            return;
        }
        arena_defer(c->a, decref_cb, spec.filter);
    }
    /* the query is built once; each page adds its cursor */
    query base;
    filter_err fe;
    if (!query_list_base(&r.fc, r.form, &spec, &base, &fe)) {
        rec_problem(c, &fe);
        query_free(&base);
        return;
    }
    json_t *app = json_object_get(r.snap->bundle, "app");
    const char *locale = app_locale(c, json_object_get(app, "locales"));
    /* the answer is streamed: its status and headers first */
    char disp[160];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s.%s\"", r.form, xlsx ? "xlsx" : "csv");
    c->res->status = 200;
    c->res->content_type = xlsx ? "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                                : "text/csv; charset=utf-8";
    http_response_header(c->res, "Content-Disposition", disp);
    http_response_header(c->res, "X-Content-Type-Options", "nosniff");
    sheet sh = {.xlsx = xlsx, .csv = &c->res->body, .ex = c->ex, .cols = json_array(),
                .fields = json_object_get(fdef, "fields"), .display = display};
    bool zh = locale && !strncmp(locale, "zh", 2);   /* what the import reads back as booleans */
    sh.yes = zh ? "是" : "Yes";
    sh.no = zh ? "否" : "No";
    json_t *flow = bundle_flow(r.snap->bundle, r.form);
    json_t *heads = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(base.out, i, o)   /* the columns: what the query selects, subforms left out */
    {
        const char *name = jstr(json_array_get(o, 0));
        json_t *f = bundle_item(sh.fields, name);
        if (field_is(f, "subform"))
            continue;
        if (json_array_size(sh.cols) == CSV_MAX_CELLS)
            break;
        size_t k = json_array_size(sh.cols);
        sh.colf[k] = f;
        sh.datetime[k] = field_is(f, "datetime") || (!f && (!strcmp(name, "_created_at") || !strcmp(name, "_updated_at")));
        sh.neutral[k] = f && texty(f);
        if (display && f && json_object_get(f, "options"))
            sh.labels[k] = label_map(json_object_get(f, "options"), "value", locale, json_object_get(app, "locales"));
        else if (display && flow && !strcmp(name, "_state"))
            sh.labels[k] = label_map(json_object_get(flow, "states"), "id", locale, json_object_get(app, "locales"));
        json_array_append_new(sh.cols, json_string(name));
        /* labels in the caller's language; a system column's too, unless a field the caller sees has that label */
        const char *sys = f ? NULL : csv_system_label(name, locale);
        if (header && !strcmp(header, "id"))
            json_array_append_new(heads, json_string(name));
        else if (f)
            json_array_append_new(heads, schema_label(json_object_get(f, "label"), locale, json_object_get(app, "locales"), name));
        else
            json_array_append_new(heads, json_string(sys && !csv_header_field(seen, sys) ? sys : name));
    }
    bool ok = sheet_open(&sh, heads);
    char *cursor = NULL;
    bool failed = false;   /* responded already */
    do {
        query page;
        query_copy(&base, &page);
        PGresult *res = NULL;
        arena *pa = arena_new();   /* the page's result goes with it: an export holds one page at a time */
        loom_err e = {0};
        if (!query_list_end(&page, cursor, &fe))
            ok = false;
        else if (!(res = query_exec(c->db, pa, page.sql.data, page.args, &e)))
            failed = true, ctx_db_fail(c, &e);
        free(cursor);
        cursor = NULL;
        if (res) {
            json_t *items = query_items(&page, res, &cursor);
            json_t *rec;
            if (display)
                sh.local = page_local_times(c, &r, &sh, items);
            json_array_foreach(items, i, rec) sheet_record(&sh, rec);
            json_decref(items);
            json_decref(sh.local);
            sh.local = NULL;
        }
        arena_free(pa);
        query_free(&page);
    } while (ok && !failed && cursor && !c->ex->stream_failed);
    free(cursor);
    query_free(&base);
    json_decref(heads);
    json_decref(sh.cols);
    for (size_t k = 0; k < CSV_MAX_CELLS; k++)
        json_decref(sh.labels[k]);
    ok = sheet_close(&sh, ok && !failed);
    if (c->ex->streaming && (failed || !ok)) {
        http_exchange_abort(c->ex);   /* half sent: the client must see it cut short, not complete */
    } else if (failed || !ok) {
        buf_reset(&c->res->headers);   /* no attachment: a problem */
        if (!failed)
            ctx_problem(c, LOOM_INTERNAL, "could not write the export", NULL);
    }
}
