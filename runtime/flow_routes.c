/* flow_routes.c - a record's flow: what the caller may do now
 * (GET .../records/{id}/actions), taking a transition
 * (POST .../records/{id}/actions/{transition}) and deciding its approval
 * (POST .../records/{id}/approval), over engine/store/write; and what waits
 * for the caller: GET /api/tasks, GET /api/notifications and marking one
 * read. */
#include <string.h>

#include "form/record.h"
#include "handlers.h"
#include "records.h"
#include "store/tasks.h"

#define COMMENT_MAX 4000   /* characters of a transition's comment */

static void body_problem(ctx *c, const char *path, const char *message)
{
    ctx_problem(c, LOOM_BAD_REQUEST, message, json_pack("[{s:s, s:s, s:s}]", "path", path, "code", "bad_request",
                                                         "message", message));
}

void records_actions(void *cp)
{
    ctx *c = cp;
    rec_req r;
    long long im;
    if (!rec_target(c, &r, &im))
        return;
    write_ctx w = rec_write_ctx(c, &r);
    write_result out;
    json_t *actions = NULL;
    bool may_update, may_delete;
    if (!write_actions(&w, r.form, c->params[2], &actions, &may_update, &may_delete, &out)) {
        json_decref(actions);
        rec_write_failed(c, &out);
        return;
    }
    ctx_json(c, 200, json_pack("{s:o, s:O?, s:b, s:b}", "actions", actions, "approval", out.approval, "update", may_update,
                               "delete", may_delete));
    write_result_free(&out);
}

/* Checks body holds only keys (NULL-ended) and an optional comment string;
 * false after responding. */
static bool body_keys(ctx *c, json_t *body, const char *const *keys, const char *what)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        bool known = false;
        for (const char *const *x = keys; *x; x++)
            known = known || !strcmp(*x, k);
        if (!known) {
            char path[80];
            snprintf(path, sizeof path, "/%.60s", k);
            body_problem(c, path, what);
            return false;
        }
    }
    json_t *comment = json_object_get(body, "comment");
    if (comment && !json_is_null(comment) &&
        !(json_is_string(comment) && record_text_length(json_string_value(comment)) <= COMMENT_MAX)) {
        body_problem(c, "/comment", "a comment is a string of at most 4000 characters");
        return false;
    }
    return true;
}

void records_transition(void *cp)
{
    ctx *c = cp;
    rec_req r;
    long long im;
    if (!rec_target(c, &r, &im))
        return;
    json_t *body = NULL;   /* no body: no values, no comment */
    if (c->req->body_len && !(body = ctx_body_object(c)))
        return;
    static const char *const keys[] = {"values", "comment", NULL};
    if (!body_keys(c, body, keys, "a transition takes values and comment"))
        return;
    json_t *values = json_object_get(body, "values");
    if (values && !json_is_object(values) && !json_is_null(values)) {
        body_problem(c, "/values", "values is an object of fields");
        return;
    }
    write_ctx w = rec_write_ctx(c, &r);
    w.last = !query_param(c->a, c->req->query, "expand");   /* else the answer is read in the transaction */
    write_result out;
    if (!write_transition(&w, r.form, c->params[2], c->params[3], json_is_object(values) ? values : NULL,
                          json_string_value(json_object_get(body, "comment")), im, &out)) {
        rec_write_failed(c, &out);
        return;
    }
    if (out.approval) {   /* it waits for the approvers */
        ctx_json(c, 202, json_pack("{s:O}", "approval", out.approval));
        write_result_free(&out);
    } else {
        rec_respond_written(c, &r, &out, 200);
    }
}

void records_approval(void *cp)
{
    ctx *c = cp;
    rec_req r;
    long long im;
    if (!rec_target(c, &r, &im))
        return;
    json_t *body = ctx_body_object(c);
    if (!body)
        return;
    static const char *const keys[] = {"decision", "comment", NULL};
    if (!body_keys(c, body, keys, "a decision takes decision and comment"))
        return;
    const char *d = json_string_value(json_object_get(body, "decision"));
    if (!d || (strcmp(d, "approve") && strcmp(d, "reject"))) {
        body_problem(c, "/decision", "decision is \"approve\" or \"reject\"");
        return;
    }
    write_ctx w = rec_write_ctx(c, &r);
    write_result out;
    if (!write_decide(&w, r.form, c->params[2], d, json_string_value(json_object_get(body, "comment")), &out)) {
        rec_write_failed(c, &out);
        return;
    }
    json_t *rec = rec_read(c, &r, out.id, -1);
    if (rec)
        ctx_json(c, 200, json_pack("{s:O, s:o}", "approval", out.approval, "record", rec));
    write_result_free(&out);
}

static void release_cb(void *p)
{
    snapshot_release(p);
}

/* A cursor of the task list: "<since to the microsecond> <app> <form>
 * <record> <kind>"; its five parts into p, false when it is not one. */
static bool task_cursor(ctx *c, const char *cursor, const char *p[5])
{
    char *s = arena_strdup(c->a, cursor);
    for (int i = 0; i < 5; i++) {
        p[i] = s;
        size_t n = strcspn(s, " ");
        if (!n || (i < 4 && !s[n]) || (i == 4 && s[n]))
            return false;
        s[n] = '\0';
        s += n + (i < 4);
    }
    return strlen(p[0]) == 26 && strspn(p[0], "0123456789-:.T") == 26 && strspn(p[1], "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(p[1]) &&
           strspn(p[2], "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(p[2]) && path_id(p[3]) &&
           (!strcmp(p[4], "assignee") || !strcmp(p[4], "approval"));
}

void tasks_list(void *cp)
{
    ctx *c = cp;
    const char *only = query_param(c->a, c->req->query, "app"), *cursor = query_param(c->a, c->req->query, "cursor");
    long limit;
    if (!rec_parse_limit(c, query_param(c->a, c->req->query, "limit"), &limit))
        return;
    const char *cur[5];
    if (cursor && *cursor && !task_cursor(c, cursor, cur)) {
        body_problem(c, "/cursor", "not a cursor of this list");
        return;
    }
    meta *m = server_meta(c->srv);
    json_t *ids = meta_ids(m), *args = json_array(), *id;
    buf parts = {0};
    int n = 0;
    size_t i;
    bool ok = true;
    json_array_foreach(ids, i, id)
    {
        const char *app = json_string_value(id);
        json_t *roles = app_caller_roles(c, app);
        if ((only && *only && strcmp(only, app)) || (!c->user->admin && !json_array_size(roles)))
            continue;
        app_snapshot *snap = meta_get(m, app);
        if (!snap)
            continue;
        arena_defer(c->a, release_cb, snap);
        filter_ctx fc = rec_caller(c, snap, roles);
        filter_err e;
        if (!(ok = tasks_sql(&fc, app, &parts, args, &n, &e))) {
            rec_problem(c, &e);
            break;
        }
    }
    json_decref(ids);
    json_t *items = json_array();
    PGresult *r = NULL;
    if (ok && n) {
        buf sql = {0};
        buf_printf(&sql, "SELECT x.app, x.form, x.record, x.title, x.state, to_char(x.since AT TIME ZONE 'UTC', "
                         "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), to_char(x.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                         "x.kind, to_char(x.since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || ' ' || x.app || ' ' || "
                         "x.form || ' ' || x.record || ' ' || x.kind FROM (%s) AS x", parts.data);
        if (cursor && *cursor) {
            size_t b = json_array_size(args);
            for (int k = 0; k < 5; k++)
                json_array_append_new(args, json_string(cur[k]));
            buf_printf(&sql, " WHERE (x.since, x.app, x.form, x.record, x.kind) > ($%zu::timestamp AT TIME ZONE 'UTC', $%zu, "
                             "$%zu, $%zu::bigint, $%zu)", b + 1, b + 2, b + 3, b + 4, b + 5);
        }
        buf_printf(&sql, " ORDER BY x.since, x.app, x.form, x.record, x.kind LIMIT %ld", limit + 1);
        r = rec_run(c, &sql, args);
        buf_free(&sql);
        ok = r != NULL;
    }
    buf_free(&parts);
    json_decref(args);
    if (!ok) {
        json_decref(items);
        return;
    }
    int rows = r ? PQntuples(r) : 0, shown = rows > limit ? (int)limit : rows;
    for (int k = 0; k < shown; k++)
        json_array_append_new(items, json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:o, s:s}", "app", PQgetvalue(r, k, 0), "form",
                                               PQgetvalue(r, k, 1), "record", (json_int_t)strtoll(PQgetvalue(r, k, 2), NULL, 10),
                                               "title", PQgetvalue(r, k, 3), "state", PQgetvalue(r, k, 4), "since",
                                               PQgetvalue(r, k, 5), "due_at",
                                               PQgetisnull(r, k, 6) ? json_null() : json_string(PQgetvalue(r, k, 6)), "kind",
                                               PQgetvalue(r, k, 7)));
    json_t *body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
    if (rows > limit)
        json_object_set_new(body, "next_cursor", json_string(PQgetvalue(r, (int)limit - 1, 8)));
    ctx_json(c, 200, body);
}

#define NOTIFICATION_COLUMNS                                                                                   \
    "SELECT id, app, form, record, kind, title, body, to_char(created_at AT TIME ZONE 'UTC', "                 \
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), to_char(read_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') " \
    "FROM loom.notifications "

static json_t *text_or_null(PGresult *r, int i, int col)
{
    return PQgetisnull(r, i, col) ? json_null() : json_string(PQgetvalue(r, i, col));
}

static json_t *notification_json(PGresult *r, int i)
{
    return json_pack("{s:I, s:o, s:o, s:o, s:s, s:s, s:o, s:s, s:o}", "id", (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10),
                     "app", text_or_null(r, i, 1), "form", text_or_null(r, i, 2), "record",
                     PQgetisnull(r, i, 3) ? json_null() : json_integer(strtoll(PQgetvalue(r, i, 3), NULL, 10)), "kind",
                     PQgetvalue(r, i, 4), "title", PQgetvalue(r, i, 5), "body", text_or_null(r, i, 6), "created_at",
                     PQgetvalue(r, i, 7), "read_at", text_or_null(r, i, 8));
}

void notifications_list(void *cp)
{
    static db_stmt st = {.sql = NOTIFICATION_COLUMNS "WHERE user_id = $1::bigint AND id < $2::bigint AND "
                                "($3::bool IS NOT TRUE OR read_at IS NULL) ORDER BY id DESC LIMIT $4::int"};
    ctx *c = cp;
    long limit;
    if (!rec_parse_limit(c, query_param(c->a, c->req->query, "limit"), &limit))
        return;
    const char *cursor = query_param(c->a, c->req->query, "cursor"), *unread = query_param(c->a, c->req->query, "unread");
    if (cursor && *cursor && !path_id(cursor)) {
        body_problem(c, "/cursor", "not a cursor of this list");
        return;
    }
    if (unread && strcmp(unread, "true") && strcmp(unread, "false")) {
        body_problem(c, "/unread", "unread is true or false");
        return;
    }
    char me[24], lim[24];
    snprintf(me, sizeof me, "%lld", c->user->id);
    snprintf(lim, sizeof lim, "%ld", limit + 1);
    const char *p[] = {me, cursor && *cursor ? cursor : "9223372036854775807", unread ? unread : "false", lim};
    PGresult *r = ctx_query(c, &st, 4, p);
    if (!r)
        return;
    json_t *items = json_array();
    int n = PQntuples(r) > limit ? (int)limit : PQntuples(r);
    for (int i = 0; i < n; i++)
        json_array_append_new(items, notification_json(r, i));
    json_t *body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
    if (PQntuples(r) > limit)
        json_object_set_new(body, "next_cursor", json_string(PQgetvalue(r, (int)limit - 1, 0)));
    ctx_json(c, 200, body);
}

void notifications_read(void *cp)
{
    static db_stmt st = {.sql = "WITH u AS (UPDATE loom.notifications SET read_at = coalesce(read_at, now()) "
                                "WHERE id = $1::bigint AND user_id = $2::bigint RETURNING *) "
                                "SELECT id, app, form, record, kind, title, body, to_char(created_at AT TIME ZONE 'UTC', "
                                "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), to_char(read_at AT TIME ZONE 'UTC', "
                                "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM u"};
    ctx *c = cp;
    char me[24];
    snprintf(me, sizeof me, "%lld", c->user->id);
    const char *p[] = {c->params[0], me};
    PGresult *r = path_id(c->params[0]) ? ctx_query(c, &st, 2, p) : NULL;
    if (path_id(c->params[0]) && !r)
        return;
    if (!r || PQntuples(r) == 0) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such notification", NULL);
        return;
    }
    ctx_json(c, 200, notification_json(r, 0));
}
