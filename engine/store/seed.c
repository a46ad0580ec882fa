/* seed.c - see seed.h. */
#include "store/seed.h"

#include <stdio.h>
#include <string.h>

#include "form/csv.h"
#include "model/bundle.h"

/* The forms of data, each after the forms of data it refers to. */
static json_t *load_order(json_t *bundle, json_t *data)
{
    json_t *order = json_array(), *done = json_object();
    for (bool progress = true; progress;) {
        progress = false;
        const char *form;
        json_t *rows;
        json_object_foreach(data, form, rows)
        {
            if (json_object_get(done, form))
                continue;
            bool ready = true;
            json_t *fields = json_object_get(bundle_item(json_object_get(bundle, "forms"), form), "fields");
            size_t i;
            json_t *f;
            json_array_foreach(fields, i, f)
            {
                json_t *list = field_is(f, "subform") ? json_object_get(f, "fields") : NULL;
                size_t n = list ? json_array_size(list) : 1;
                for (size_t k = 0; k < n; k++) {
                    json_t *x = list ? json_array_get(list, k) : f;
                    const char *target = jstr(json_object_get(x, "form"));
                    if (field_is(x, "ref") && strcmp(target, form) &&
                        json_object_get(data, target) && !json_object_get(done, target))
                        ready = false;
                }
            }
            if (ready) {
                json_array_append_new(order, json_string(form));
                json_object_set_new(done, form, json_true());
                progress = true;
            }
        }
    }
    /* a cycle between forms: the rest in the order given (their refs to one another may be not_found) */
    const char *form;
    json_t *rows;
    json_object_foreach(data, form, rows) if (!json_object_get(done, form)) json_array_append_new(order, json_string(form));
    json_decref(done);
    return order;
}

/* A CSV seed file as records: the header names fields by id or label. */
static json_t *csv_records(json_t *fields, const char *text, json_t *errors, const char *path)
{
    csv_reader r;
    csv_open(&r, text, strlen(text));
    const char *err = NULL;
    json_t *out = json_array();
    if (!csv_next(&r, &err)) {
        csv_close(&r);
        return out;
    }
    int n = r.n;
    json_t *cols = json_array();
    for (int i = 0; i < n; i++) {
        json_t *f = csv_header_field(fields, r.cells[i]);
        json_array_append_new(cols, f ? json_pack("[s, O]", jstr(json_object_get(f, "id")), f)
                                      : json_pack("[s, n]", r.cells[i]));
    }
    while (csv_next(&r, &err)) {
        json_t *rec = json_object();
        for (int i = 0; i < n && i < r.n; i++) {
            if (!*r.cells[i])
                continue;
            json_t *c = json_array_get(cols, (size_t)i);
            json_t *f = json_array_get(c, 1);
            json_object_set_new(rec, jstr(json_array_get(c, 0)), csv_value(json_is_null(f) ? NULL : f, r.cells[i]));
        }
        json_array_append_new(out, rec);
    }
    if (err)
        json_array_append_new(errors, json_pack("{s:s, s:s, s:s}", "path", path, "code", "bad_request", "message", err));
    json_decref(cols);
    csv_close(&r);
    return out;
}

typedef struct seeding {
    const write_ctx *w;
    json_t *keys;     /* "form:key" -> id */
    json_t *errors;
} seeding;

/* Replaces {"$key"} and {"$user"} in the ref and user values of rec (of
 * fields); problems at base. */
static void resolve(seeding *s, json_t *fields, json_t *rec, const char *base)
{
    static db_stmt user = {.sql = "SELECT id FROM loom.users WHERE lower(username) = lower($1)"};
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(rec, tmp, k, v)
    {
        json_t *f = bundle_item(fields, k);
        const char *type = jstr(json_object_get(f, "type"));
        char path[512];
        snprintf(path, sizeof path, "%s/%s", base, k);
        if (!strcmp(type, "subform")) {
            size_t i;
            json_t *row;
            json_array_foreach(v, i, row)
            {
                char rp[600];
                snprintf(rp, sizeof rp, "%s/%zu", path, i);
                if (json_is_object(row))
                    resolve(s, json_object_get(f, "fields"), row, rp);
            }
            continue;
        }
        json_t *key = json_object_get(v, "$key"), *name = json_object_get(v, "$user");
        if (key && !strcmp(type, "ref")) {
            char full[320];
            snprintf(full, sizeof full, "%s:%s", jstr(json_object_get(f, "form")), jstr(key));
            json_t *id = json_object_get(s->keys, full);
            if (!id)
                json_array_append_new(s->errors, json_pack("{s:s, s:s, s:s}", "path", path, "code", "not_found", "message",
                                                           "no seed record has this $key (before this one)"));
            json_object_set(rec, k, id ? id : json_null());
        } else if (name && (!strcmp(type, "user") || !strcmp(k, "_owner"))) {
            const char *p[] = {jstr(name)};
            loom_err e = {0};
            PGresult *r = db_query(s->w->db, s->w->a, &user, 1, p, &e);
            if (!r || PQntuples(r) != 1)
                json_array_append_new(s->errors, json_pack("{s:s, s:s, s:s}", "path", path, "code", "not_found", "message",
                                                           "no such user"));
            json_object_set_new(rec, k, r && PQntuples(r) == 1 ? json_integer(strtoll(PQgetvalue(r, 0, 0), NULL, 10))
                                                               : json_null());
        }
    }
}

long seed_load(const write_ctx *w, json_t *data, json_t *errors, write_result *db_failed)
{
    seeding s = {.w = w, .keys = json_object(), .errors = errors};
    memset(db_failed, 0, sizeof *db_failed);
    json_t *order = load_order(w->fc->bundle, data);
    long written = 0;
    size_t i;
    json_t *form_id;
    json_array_foreach(order, i, form_id)
    {
        const char *form = json_string_value(form_id);
        json_t *fields = json_object_get(bundle_item(json_object_get(w->fc->bundle, "forms"), form), "fields");
        char base[128];
        snprintf(base, sizeof base, "/data/%s", form);
        json_t *rows = json_object_get(data, form);
        json_t *records = json_is_string(rows) ? csv_records(fields, json_string_value(rows), errors, base) : json_incref(rows);
        size_t k;
        json_t *rec;
        json_array_foreach(records, k, rec)
        {
            char rp[160];
            snprintf(rp, sizeof rp, "%s/%zu", base, k);
            if (!json_is_object(rec)) {
                json_array_append_new(errors, json_pack("{s:s, s:s, s:s}", "path", rp, "code", "type", "message",
                                                        "a record is an object"));
                continue;
            }
            json_t *body = json_copy(rec);
            json_t *key = json_object_get(rec, "$key");
            json_object_del(body, "$key");
            size_t before = json_array_size(errors);
            resolve(&s, fields, body, rp);
            write_result out;
            if (json_array_size(errors) == before && write_create(w, form, body, &out)) {
                written++;
                if (json_is_string(key)) {
                    char full[320];
                    snprintf(full, sizeof full, "%s:%s", form, json_string_value(key));
                    json_object_set_new(s.keys, full, json_integer(out.id));
                }
                write_result_free(&out);
            } else if (json_array_size(errors) == before) {
                /* a statement failed (a unique clash, say): the transaction is aborted, so stop here */
                bool stop = out.from_db || out.code == LOOM_NOT_UNIQUE || out.code == LOOM_CONFLICT;
                if (out.from_db && out.code == LOOM_UNAVAILABLE) {
                    *db_failed = out;
                    json_decref(body);
                    json_decref(records);
                    json_decref(order);
                    json_decref(s.keys);
                    return -1;
                }
                size_t e;
                json_t *p;
                json_array_foreach(out.errors, e, p)
                {
                    char full[700];
                    snprintf(full, sizeof full, "%s%s", rp, jstr(json_object_get(p, "path")));
                    json_array_append_new(errors, json_pack("{s:s, s:O, s:O}", "path", full, "code",
                                                            json_object_get(p, "code"), "message",
                                                            json_object_get(p, "message")));
                }
                if (!json_array_size(out.errors))
                    json_array_append_new(errors, json_pack("{s:s, s:s, s:s}", "path", rp, "code",
                                                            loom_code_name(out.code), "message", out.message));
                write_result_free(&out);
                if (stop) {
                    json_decref(body);
                    json_decref(records);
                    json_decref(order);
                    json_decref(s.keys);
                    return -1;
                }
            }
            json_decref(body);
        }
        json_decref(records);
    }
    json_decref(order);
    json_decref(s.keys);
    return json_array_size(errors) ? -1 : written;
}
