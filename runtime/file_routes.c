/* file_routes.c - uploaded files: POST /api/files?name= stores the raw body
 * (the request's own size limit applies) under a random id; GET
 * /api/files/{id} serves it as an attachment with nosniff, to its uploader
 * and to whoever may read a record that holds it in a field they may see
 * (loom.file_links, kept by engine/store/write). A file nobody may get is
 * 404, like one that does not exist. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/secret.h"
#include "handlers.h"
#include "meta.h"
#include "model/bundle.h"
#include "perm/perm.h"
#include "records.h"
#include "store/query.h"

#define FILE_NAME_MAX 255
#define FILE_TYPE_MAX 127

/* The type of a file named name by its extension, for an upload whose
 * client said nothing useful (no type, or a form's or a generic one: what
 * `curl --data-binary` sends); NULL when the extension is not a common one. */
static const char *type_by_name(const char *name)
{
    static const char *const types[][2] = {
        {"pdf", "application/pdf"},   {"png", "image/png"},        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},       {"gif", "image/gif"},        {"webp", "image/webp"},
        {"heic", "image/heic"},       {"svg", "image/svg+xml"},    {"txt", "text/plain"},
        {"csv", "text/csv"},          {"zip", "application/zip"},  {"mp4", "video/mp4"},
        {"mp3", "audio/mpeg"},        {"doc", "application/msword"}, {"xls", "application/vnd.ms-excel"},
        {"ppt", "application/vnd.ms-powerpoint"},
        {"docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
        {"xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
        {"pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (!strcasecmp(dot + 1, types[i][0]))
            return types[i][1];
    return NULL;
}

void files_upload(void *cp)
{
    static db_stmt st = {.sql = "INSERT INTO loom.files (id, name, content_type, size, data, uploaded_by) "
                                "VALUES ($1, $2, $3, $4, $5::bytea, $6)"};
    ctx *c = cp;
    const char *name = query_param(c->a, c->req->query, "name");
    if (!name || !*name || strlen(name) > FILE_NAME_MAX || strpbrk(name, "/\\\r\n")) {
        ctx_problem(c, LOOM_BAD_REQUEST, "name is the file's name: 1 to 255 characters, no slashes",
                    json_pack("[{s:s, s:s, s:s}]", "path", "/name", "code", "bad_request", "message", "a file name"));
        return;
    }
    const char *ct = http_request_header(c->req, "content-type");
    char type[FILE_TYPE_MAX + 1];
    size_t n = ct ? strcspn(ct, ";") : 0;
    while (n && ct[n - 1] == ' ')
        n--;
    if (!n || n > FILE_TYPE_MAX || !memchr(ct, '/', n))
        snprintf(type, sizeof type, "application/octet-stream");
    else
        snprintf(type, sizeof type, "%.*s", (int)n, ct);
    for (char *t = type; *t; t++)
        *t = (char)(*t >= 'A' && *t <= 'Z' ? *t + 32 : *t);
    /* a type that says nothing of the bytes (curl's default, a form's): the name's, else just bytes */
    const char *guess = type_by_name(name);
    if (!strcmp(type, "application/octet-stream") || !strcmp(type, "application/x-www-form-urlencoded") ||
        !strncmp(type, "multipart/", 10))
        snprintf(type, sizeof type, "%s", guess ? guess : "application/octet-stream");
    unsigned char raw[18];
    char id[32], size[24], user[24];
    secret_random(raw, sizeof raw);
    secret_base64url(raw, sizeof raw, id);
    snprintf(size, sizeof size, "%zu", c->req->body_len);
    snprintf(user, sizeof user, "%lld", c->user->id);
    /* bytea's hex input form, as libpq escapes it (parameters here are text) */
    size_t elen;
    unsigned char *hex = PQescapeByteaConn(db_conn(c->db), (const unsigned char *)c->req->body, c->req->body_len, &elen);
    if (!hex) {
        ctx_problem(c, LOOM_INTERNAL, "out of memory", NULL);
        return;
    }
    arena_defer(c->a, PQfreemem, hex);
    const char *p[] = {id, name, type, size, (const char *)hex, user};
    if (!ctx_query(c, &st, 6, p))
        return;
    ctx_json(c, 201, json_pack("{s:s, s:s, s:I, s:s}", "id", id, "name", name, "size", (json_int_t)c->req->body_len,
                               "content_type", type));
}

/* Whether the caller may read a record that holds the file in a field it
 * may see. */
static bool may_read_holder(ctx *c, PGresult *links)
{
    for (int i = 0; i < PQntuples(links); i++) {
        const char *app = PQgetvalue(links, i, 0), *form = PQgetvalue(links, i, 1), *rec = PQgetvalue(links, i, 2),
                   *field = PQgetvalue(links, i, 3);
        json_t *roles = app_caller_roles(c, app);
        if (!c->user->admin && !json_array_size(roles))
            continue;
        app_snapshot *snap = meta_get(server_meta(c->srv), app);
        if (!snap)
            continue;
        perm_decision d;
        perm_decide(snap->bundle, form, roles, c->user->admin, &d);
        bool seen = d.read && perm_field(&d, field) != FIELD_HIDDEN;
        /* a subform's file: the subform itself must be visible too */
        const char *dot = strchr(field, '.');
        if (seen && dot) {
            char sub[80];
            snprintf(sub, sizeof sub, "%.*s", (int)(dot - field), field);
            seen = perm_field(&d, sub) != FIELD_HIDDEN;
        }
        perm_free(&d);
        bool ok = false;
        if (seen) {
            filter_ctx fc = rec_caller(c, snap, roles);
            query q;
            filter_err e;
            if (query_get(&fc, form, rec, NULL, &q, &e)) {
                loom_err le = {0};
                PGresult *r = query_exec(c->db, c->a, q.sql.data, q.args, &le);
                ok = r && PQntuples(r) == 1;
            }
            query_free(&q);
        }
        snapshot_release(snap);
        if (ok)
            return true;
    }
    return false;
}

void files_download(void *cp)
{
    static db_stmt meta = {.sql = "SELECT name, content_type, uploaded_by FROM loom.files WHERE id = $1"};
    static db_stmt links = {.sql = "SELECT app, form, record, field FROM loom.file_links WHERE file = $1 LIMIT 100"};
    static db_stmt data = {.sql = "SELECT data FROM loom.files WHERE id = $1"};
    ctx *c = cp;
    const char *p[] = {c->params[0]};
    PGresult *m = ctx_query(c, &meta, 1, p);
    if (!m)
        return;
    bool ok = PQntuples(m) == 1;
    if (ok && !c->user->admin &&
        (PQgetisnull(m, 0, 2) || strtoll(PQgetvalue(m, 0, 2), NULL, 10) != c->user->id)) {
        PGresult *l = ctx_query(c, &links, 1, p);
        if (!l)
            return;
        ok = may_read_holder(c, l);
    }
    if (!ok) {
        ctx_problem(c, LOOM_NOT_FOUND, "no such file", NULL);
        return;
    }
    PGresult *d = ctx_query(c, &data, 1, p);
    if (!d)
        return;
    size_t len;
    unsigned char *out = PQunescapeBytea((const unsigned char *)PQgetvalue(d, 0, 0), &len);
    if (!out) {
        ctx_problem(c, LOOM_INTERNAL, "out of memory", NULL);
        return;
    }
    arena_defer(c->a, PQfreemem, out);
    /* RFC 6266: a plain ASCII fallback and the UTF-8 name percent-encoded */
    const char *name = PQgetvalue(m, 0, 0);
    buf disp = {0};
    buf_puts(&disp, "attachment; filename=\"");
    for (const unsigned char *s = (const unsigned char *)name; *s; s++)
        buf_printf(&disp, "%c", *s < 0x20 || *s >= 0x7f || *s == '"' || *s == '\\' ? '_' : *s);
    buf_puts(&disp, "\"; filename*=UTF-8''");
    for (const unsigned char *s = (const unsigned char *)name; *s; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || strchr("-._~", *s))
            buf_printf(&disp, "%c", *s);
        else
            buf_printf(&disp, "%%%02X", *s);
    }
    http_response_header(c->res, "Content-Disposition", disp.data);
    http_response_header(c->res, "X-Content-Type-Options", "nosniff");
    http_response_header(c->res, "Cache-Control", "private, no-store");
    buf_free(&disp);
    c->res->status = 200;
    c->res->content_type = arena_strdup(c->a, PQgetvalue(m, 0, 1));
    buf_reset(&c->res->body);
    buf_append(&c->res->body, out, len);
}
