/* cli_seed.c - `loom app seed APP --spec FILE [--scale N] [--seed N] [--states N] [--if-empty]`:
 * demo and benchmark data for a published app, from a generator spec that
 * the app ships (apps/4s-template/seed.json); nothing about any app is
 * known here. Records go through the records engine's import (checked like
 * API writes, formulas and autonumbers and history included, written with
 * COPY), in batches committed one by one, as the system actor.
 *
 * The spec (docs/seed.md): {"lists": {name: [...]}, "users": [{username,
 * display_name, password?, roles}], "forms": [{"form", "count" (x scale), "values":
 * {field: generator}}]} in dependency order. Generators: a literal;
 * {"pick": list|name, "weights"}; {"option": true}; {"concat": [...]};
 * {"pattern": "京A#####"} (# digit, @ letter, % VIN character, ? a VIN's
 * check digit); {"int": [lo,
 * hi]}; {"decimal": [lo, hi], "scale"}; {"date": [from, to]} and
 * {"datetime": [from, to]} ("today", "now", "-5y", "+30d", "-6m", "-2w");
 * {"field": id} (the row's value of a field generated before it);
 * {"bool": p}; {"seq": width, "scramble": true?} (the row's number,
 * zero-padded, or a permutation of it: unique either way);
 * {"ref": form, "copy": {field: their_field}}; {"user": [roles]};
 * {"rows": [min, max], "values": {...}} (subform rows); and "null": p on any
 * of them, "split": [fields] on one that gives a text. A form entry's
 * "states" and "transitions" then move its records through its flow
 * (seed_states). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "handlers.h"
#include "core/secret.h"
#include "flow/flow.h"
#include "form/ddl.h"
#include "model/bundle.h"
#include "rule/sandbox.h"
#include "store/migrate.h"
#include "store/query.h"
#include "store/write.h"

#define SEED_BATCH 5000
#define SEED_POOLS 64

typedef struct pool {
    char form[64];
    json_t *cols;       /* the copied columns */
    size_t n, width;    /* rows; values per row (id + cols) */
    long long *vals;
} pool;

typedef struct seed {
    db *d;
    arena *a;
    json_t *bundle, *lists, *roles;   /* roles: role -> [user ids] */
    const char *schema, *app;
    uint64_t rng;
    pool pools[SEED_POOLS];
    int npools;
    time_t now;
    long long row;      /* the number of the row being made, in its form */
    bool bad_spec;      /* the spec names what the app does not have: stop */
} seed;

/* The app's table of form, quoted, appended to sql. */
static void table(buf *sql, const seed *s, const char *form)
{
    ddl_quote(sql, s->schema);
    buf_puts(sql, ".");
    ddl_quote(sql, form);
}

static uint64_t next(seed *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 2685821657736338717ULL;
}

static long long between(seed *s, long long lo, long long hi)
{
    return hi <= lo ? lo : lo + (long long)(next(s) % (uint64_t)(hi - lo + 1));
}

static double unit(seed *s)
{
    return (double)(next(s) >> 11) / 9007199254740992.0;
}

/* "-5y", "+30d", "-6m", "-2w", "today"/"now": seconds from now. */
static long long offset(const char *t)
{
    if (!t || !strcmp(t, "today") || !strcmp(t, "now"))
        return 0;
    char *end;
    long long n = strtoll(t, &end, 10);
    long long unit = *end == 'y' ? 365 * 86400LL : *end == 'm' ? 30 * 86400LL : *end == 'w' ? 7 * 86400LL
                     : *end == 'h' ? 3600LL : 86400LL;
    return n * unit;
}

static pool *pool_of(seed *s, const char *form, json_t *copy)
{
    json_t *cols = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(copy, k, v) json_array_append(cols, v);
    for (int i = 0; i < s->npools; i++)
        if (!strcmp(s->pools[i].form, form) && json_equal(s->pools[i].cols, cols)) {
            json_decref(cols);
            return &s->pools[i];
        }
    if (s->npools == SEED_POOLS) {
        json_decref(cols);
        return NULL;
    }
    /* identifiers only from the published bundle: the spec's names must be its form and fields */
    json_t *fdef = bundle_item(json_object_get(s->bundle, "forms"), form);
    size_t i;
    json_array_foreach(cols, i, v) if (!bundle_item(json_object_get(fdef, "fields"), jstr(v))) fdef = NULL;
    if (!fdef) {
        if (!s->bad_spec)
            fprintf(stderr, "loom: the spec refers to %s (or its fields), which the app does not have\n", form);
        s->bad_spec = true;
        json_decref(cols);
        return NULL;
    }
    pool *p = &s->pools[s->npools++];
    snprintf(p->form, sizeof p->form, "%s", form);
    p->cols = cols;
    p->width = 1 + json_array_size(cols);
    buf sql = {0};
    buf_puts(&sql, "SELECT \"id\"");
    json_array_foreach(cols, i, v)
    {
        buf_puts(&sql, ", ");
        ddl_quote(&sql, jstr(v));
    }
    buf_puts(&sql, " FROM ");
    table(&sql, s, form);
    buf_puts(&sql, " ORDER BY \"id\"");
    loom_err e = {0};
    PGresult *r = db_exec(s->d, s->a, sql.data, &e);
    buf_free(&sql);
    p->n = r ? (size_t)PQntuples(r) : 0;
    p->vals = calloc(p->n * p->width + 1, sizeof *p->vals);
    for (size_t row = 0; row < p->n; row++)
        for (size_t c = 0; c < p->width; c++)
            p->vals[row * p->width + c] =
                PQgetisnull(r, (int)row, (int)c) ? 0 : strtoll(PQgetvalue(r, (int)row, (int)c), NULL, 10);
    return p;
}

/* v, the value generator g gave field k of row: with "split": [fields], a
 * text is cut at its spaces into those fields of row (the last one takes the
 * rest), and k gets its own part (the whole text when it is not one of them). */
static json_t *split(json_t *g, json_t *row, const char *k, json_t *v)
{
    json_t *into = json_object_get(g, "split");
    const char *t = json_string_value(v);
    if (!t || !json_array_size(into))
        return v;
    json_t *own = NULL;
    size_t i, n = json_array_size(into);
    json_t *f;
    json_array_foreach(into, i, f)
    {
        while (*t == ' ')
            t++;
        const char *end = i + 1 < n ? strchr(t, ' ') : NULL;
        json_t *part = json_stringn(t, end ? (size_t)(end - t) : strlen(t));
        t = end ? end : t + strlen(t);
        if (!strcmp(jstr(f), k))
            own = part;
        else
            json_object_set_new(row, jstr(f), part);
    }
    if (!own)
        return v;
    json_decref(v);
    return own;
}

static json_t *gen(seed *s, json_t *g, json_t *field, json_t *row);

static json_t *pick(seed *s, json_t *g, json_t *field, json_t *row)
{
    json_t *list = json_object_get(g, "pick");
    if (json_is_string(list))
        list = json_object_get(s->lists, json_string_value(list));
    size_t n = json_array_size(list);
    if (!n)
        return json_null();
    json_t *w = json_object_get(g, "weights");
    size_t at = (size_t)between(s, 0, (long long)n - 1);
    if (json_array_size(w) == n) {
        double total = 0, x;
        for (size_t i = 0; i < n; i++)
            total += json_number_value(json_array_get(w, i));
        x = unit(s) * total;
        for (at = 0; at + 1 < n && (x -= json_number_value(json_array_get(w, at))) > 0; at++)
            ;
    }
    return gen(s, json_array_get(list, at), field, row);
}

/* The check digit of a 17-character VIN (ISO 3779, position 9; GB 16735). */
static char vin_check(const char *v)
{
    static const int weight[17] = {8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2};
    static const char letters[] = "ABCDEFGHJKLMNPRSTUVWXYZ";
    static const int value[] = {1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9};
    int sum = 0;
    for (int i = 0; i < 17; i++) {
        const char *l = strchr(letters, v[i]);
        sum += weight[i] * (v[i] >= '0' && v[i] <= '9' ? v[i] - '0' : l && v[i] ? value[l - letters] : 0);
    }
    return sum % 11 == 10 ? 'X' : (char)('0' + sum % 11);
}

static json_t *gen_text(seed *s, json_t *g, json_t *field, json_t *row)
{
    buf b = {0};
    json_t *parts = json_object_get(g, "concat");
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p)
    {
        json_t *v = gen(s, p, field, row);
        if (json_is_string(v))
            buf_puts(&b, json_string_value(v));
        else if (json_is_integer(v))
            buf_printf(&b, "%lld", (long long)json_integer_value(v));
        json_decref(v);
    }
    const char *pat = json_string_value(json_object_get(g, "pattern"));
    static const char vin[] = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789";
    size_t check = SIZE_MAX;
    for (const char *c = pat; c && *c; c++) {
        char ch = *c == '#'   ? (char)('0' + between(s, 0, 9))
                  : *c == '@' ? (char)('A' + between(s, 0, 25))
                  : *c == '%' ? vin[between(s, 0, (long long)sizeof vin - 2)]
                              : *c;
        if (*c == '?')
            check = b.len;
        buf_append(&b, &ch, 1);
    }
    if (check != SIZE_MAX && b.len == 17)
        b.data[check] = vin_check(b.data);
    json_t *out = json_string(b.data ? b.data : "");
    buf_free(&b);
    return out;
}

static json_t *gen(seed *s, json_t *g, json_t *field, json_t *row)
{
    if (!json_is_object(g))
        return json_incref(g);
    json_t *pn = json_object_get(g, "null");
    if (pn && unit(s) < json_number_value(pn))
        return json_null();
    json_t *v;
    if (json_object_get(g, "pick"))
        return pick(s, g, field, row);
    if (json_object_get(g, "concat") || json_object_get(g, "pattern"))
        return gen_text(s, g, field, row);
    if ((v = json_object_get(g, "int")))
        return json_integer(between(s, json_integer_value(json_array_get(v, 0)), json_integer_value(json_array_get(v, 1))));
    if ((v = json_object_get(g, "decimal"))) {
        double lo = json_number_value(json_array_get(v, 0)), hi = json_number_value(json_array_get(v, 1));
        int scale = json_is_integer(json_object_get(g, "scale")) ? (int)json_integer_value(json_object_get(g, "scale")) : 2;
        char t[64];
        snprintf(t, sizeof t, "%.*f", scale, lo + unit(s) * (hi - lo));
        return json_string(t);
    }
    if ((v = json_object_get(g, "date")) || (v = json_object_get(g, "datetime"))) {
        time_t t = s->now + (time_t)between(s, offset(json_string_value(json_array_get(v, 0))),
                                            offset(json_string_value(json_array_get(v, 1))));
        struct tm tm;
        gmtime_r(&t, &tm);
        char out[32];
        strftime(out, sizeof out, json_object_get(g, "date") ? "%Y-%m-%d" : "%Y-%m-%dT%H:%M:%SZ", &tm);
        return json_string(out);
    }
    if ((v = json_object_get(g, "field"))) {   /* a value the row already has: generated before this one */
        json_t *got = json_object_get(row, jstr(v));
        return got ? json_incref(got) : json_null();
    }
    if ((v = json_object_get(g, "bool")))
        return json_boolean(unit(s) < json_number_value(v));
    if ((v = json_object_get(g, "seq"))) {   /* unique: the row's number, or a permutation of it */
        int width = (int)json_integer_value(v);
        long long n = s->row;
        if (json_is_true(json_object_get(g, "scramble")) && width > 0 && width < 16) {
            long long mod = 1;
            for (int i = 0; i < width; i++)
                mod *= 10;
            n = (long long)(((__int128)n * 7919 * 48271 + 12345) % mod);   /* coprime to 10: a bijection */
        }
        char t[32];
        snprintf(t, sizeof t, "%0*lld", width, n);
        return json_string(t);
    }
    if (json_object_get(g, "option")) {
        json_t *opts = json_object_get(field, "options");
        size_t n = json_array_size(opts);
        if (!n)
            return json_null();
        if (!field_is(field, "multiselect"))
            return json_incref(json_object_get(json_array_get(opts, (size_t)between(s, 0, (long long)n - 1)), "value"));
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            if (unit(s) < 0.3)
                json_array_append(a, json_object_get(json_array_get(opts, i), "value"));
        return a;
    }
    if ((v = json_object_get(g, "ref"))) {
        json_t *copy = json_object_get(g, "copy");
        pool *p = pool_of(s, jstr(v), copy);
        if (!p || !p->n)
            return json_null();
        size_t at = (size_t)between(s, 0, (long long)p->n - 1);
        const char *k;
        json_t *their;
        size_t c = 1;
        json_object_foreach(copy, k, their)
        {
            long long x = p->vals[at * p->width + c++];
            json_object_set_new(row, k, x ? json_integer(x) : json_null());
        }
        return json_integer(p->vals[at * p->width]);
    }
    if ((v = json_object_get(g, "user"))) {
        json_t *all = json_array();
        size_t i;
        json_t *role;
        json_array_foreach(v, i, role) json_array_extend(all, json_object_get(s->roles, jstr(role)));
        json_t *out = json_array_size(all) ? json_incref(json_array_get(all, (size_t)between(s, 0, (long long)json_array_size(all) - 1)))
                                           : json_null();
        json_decref(all);
        return out;
    }
    if ((v = json_object_get(g, "rows"))) {
        long long n = between(s, json_integer_value(json_array_get(v, 0)), json_integer_value(json_array_get(v, 1)));
        json_t *rows = json_array(), *values = json_object_get(g, "values");
        for (long long i = 0; i < n; i++) {
            json_t *r = json_object();
            const char *k;
            json_t *sg;
            json_object_foreach(values, k, sg)
            {
                if (json_object_get(r, k))
                    continue;   /* set by a copy */
                json_object_set_new(r, k, split(sg, r, k, gen(s, sg, bundle_item(json_object_get(field, "fields"), k), r)));
            }
            json_array_append_new(rows, r);
        }
        return rows;
    }
    return json_null();
}

/* The transitions that take a record of flow from its initial state to
 * each state, fewest first: only those named in only, or when it is NULL
 * any but those with an approval: {state: [ids]}; a state missing cannot
 * be reached so. */
static json_t *state_paths(json_t *flow, json_t *only)
{
    json_t *paths = json_object(), *queue = json_array();
    const char *init = jstr(json_object_get(flow, "initial"));
    json_object_set_new(paths, init, json_array());
    json_array_append_new(queue, json_string(init));
    for (size_t q = 0; q < json_array_size(queue); q++) {
        const char *st = json_string_value(json_array_get(queue, q));
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(flow, "transitions"), i, t)
        {
            const char *to = jstr(json_object_get(t, "to"));
            if (json_object_get(paths, to) || !flow_starts_in(flow, t, st) ||
                (only ? !json_object_get(only, jstr(json_object_get(t, "id"))) : json_object_get(t, "approval") != NULL))
                continue;
            json_t *path = json_copy(json_object_get(paths, st));
            json_array_append(path, json_object_get(t, "id"));
            json_object_set_new(paths, to, path);
            json_array_append_new(queue, json_string(to));
        }
    }
    json_decref(queue);
    return paths;
}

/* Record id of form as it is now, its columns as JSON (refs and users as
 * ids), for an "as" that names one of its fields. */
static json_t *record_now(seed *s, const char *form, const char *id)
{
    buf sql = {0};
    buf_puts(&sql, "SELECT to_jsonb(t)::text FROM ");
    table(&sql, s, form);
    buf_puts(&sql, " AS t WHERE t.\"id\" = $1::bigint");
    json_t *args = json_pack("[s]", id);
    loom_err e = {0};
    PGresult *r = query_exec(s->d, s->a, sql.data, args, &e);
    json_decref(args);
    buf_free(&sql);
    json_t *rec = r && PQntuples(r) ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
    return rec ? rec : json_object();
}

/* The approval a transition started (in out) decided by its approvers, one
 * after the other, each acting as themselves, until it is no longer
 * pending: whether it was approved (the transition then completed); out
 * says why not. */
static bool approved(const write_ctx *w, const char *form, const char *id, write_result *out)
{
    json_t *approvers = json_incref(json_object_get(out->approval, "approvers"));
    char status[16] = "pending";
    size_t i;
    json_t *u;
    json_array_foreach(approvers, i, u)
    {
        filter_ctx fc = *w->fc;
        write_ctx as = *w;
        as.fc = &fc;
        fc.me = (long long)json_integer_value(u);
        write_result_free(out);
        memset(out, 0, sizeof *out);
        if (!write_decide(&as, form, id, "approve", NULL, out))
            break;
        snprintf(status, sizeof status, "%s", jstr(json_object_get(out->approval, "status")));
        if (strcmp(status, "pending"))
            break;
    }
    json_decref(approvers);
    if (!strcmp(status, "approved"))
        return true;
    if (!out->message[0])
        snprintf(out->message, sizeof out->message, "its approval ended %s", status);
    return false;
}

/* Takes the first max records of form this run made (ids above after) to
 * the states entry's "states" weighs, each along its fewest transitions
 * among those "transitions" names ({t: {"values": {field: generator},
 * "as": generator of a user}}; without it, any but those with an approval),
 * taken with those values and as that user (else the system): through the
 * API's transition, so guards, requires, set and timers hold; an approval
 * it starts is approved by its approvers. A transition refused leaves its
 * record where it stopped. */
static bool seed_states(seed *s, const write_ctx *w, json_t *entry, const char *form, long long after, long long max)
{
    json_t *states = json_object_get(entry, "states"), *tspecs = json_object_get(entry, "transitions");
    json_t *flow = bundle_flow(s->bundle, form);
    if (!flow) {
        fprintf(stderr, "loom: the spec gives %s states, and it has no flow\n", form);
        return false;
    }
    json_t *paths = state_paths(flow, tspecs);
    json_t *fields = json_object_get(bundle_item(json_object_get(s->bundle, "forms"), form), "fields");
    double total = 0;
    const char *st;
    json_t *wt;
    bool ok = true;
    json_object_foreach(states, st, wt)
    {
        if (!json_is_number(wt) || json_number_value(wt) < 0) {
            fprintf(stderr, "loom: %s state %s: a weight is a number, 0 or more\n", form, st);
            ok = false;
        } else if (!flow_state(flow, st)) {
            fprintf(stderr, "loom: %s has no state %s\n", form, st);
            ok = false;
        } else if (!json_object_get(paths, st)) {
            fprintf(stderr, "loom: %s state %s cannot be reached from %s by the spec's transitions\n", form, st,
                    jstr(json_object_get(flow, "initial")));
            ok = false;
        }
        total += json_number_value(wt);
    }
    buf sql = {0};
    buf_puts(&sql, "SELECT id FROM ");
    table(&sql, s, form);
    buf_puts(&sql, " WHERE id > $1::bigint ORDER BY id LIMIT $2::bigint");
    char from[24], most[24];   /* parameters are text */
    snprintf(from, sizeof from, "%lld", after);
    snprintf(most, sizeof most, "%lld", max);
    json_t *args = json_pack("[s, s]", from, most);
    loom_err e = {0};
    PGresult *r = ok && total > 0 ? query_exec(s->d, s->a, sql.data, args, &e) : NULL;
    json_decref(args);
    buf_free(&sql);
    int n = r ? PQntuples(r) : 0;
    long long *ids = malloc(((size_t)n + 1) * sizeof *ids);
    for (int i = 0; i < n; i++)
        ids[i] = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    json_t *reached = json_object();
    long long refused = 0;
    for (int i = 0; ok && i < n; i++) {
        if (i % 500 == 0 && !(ok = db_begin(s->d, s->a, &e)))
            break;
        double at = unit(s) * total;
        const char *target = NULL;
        json_object_foreach(states, st, wt)
        {
            target = st;
            if ((at -= json_number_value(wt)) < 0)
                break;
        }
        const char *now = jstr(json_object_get(flow, "initial"));
        size_t k;
        json_t *tid;
        char id[24];
        snprintf(id, sizeof id, "%lld", ids[i]);
        json_array_foreach(json_object_get(paths, target), k, tid)
        {
            json_t *ts = json_object_get(tspecs, jstr(tid)), *values = json_object();
            const char *f;
            json_t *g;
            json_object_foreach(json_object_get(ts, "values"), f, g)
                json_object_set_new(values, f, gen(s, g, bundle_item(fields, f), values));
            filter_ctx fc = *w->fc;
            write_ctx as = *w;
            as.fc = &fc;
            json_t *who = json_object_get(ts, "as"), *rec = who && json_object_get(who, "field") ? record_now(s, form, id) : NULL;
            json_t *u = who ? gen(s, who, NULL, rec ? rec : values) : NULL;   /* {"field": f}: the record's, as it is now */
            fc.me = json_is_integer(u) ? (long long)json_integer_value(u) : 0;
            json_decref(u);
            json_decref(rec);
            write_result out = {0};
            bool moved = write_transition(&as, form, id, jstr(tid), values, NULL, -1, &out) &&
                         (!out.approval || approved(w, form, id, &out));
            json_decref(values);
            if (!moved && out.from_db) {
                fprintf(stderr, "loom: %s %s: %s failed: %s\n", form, id, jstr(tid), out.message);
                ok = false;
            } else if (!moved && !refused++) {
                char *why = json_dumps(out.errors ? out.errors : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
                fprintf(stderr, "loom: %s: some transitions were refused, e.g. %s of record %s: %s %s\n", form,
                        jstr(tid), id, out.message, why);
                free(why);
            }
            write_result_free(&out);
            if (!moved)
                break;
            now = jstr(json_object_get(flow_transition(flow, jstr(tid)), "to"));
        }
        json_object_set_new(reached, now, json_integer(json_integer_value(json_object_get(reached, now)) + 1));
        if (ok && (i % 500 == 499 || i == n - 1)) {
            ok = db_commit(s->d, s->a, &e);
            arena_reset(s->a);
        }
    }
    if (!ok)
        db_rollback(s->d);
    if (ok && n) {   /* in the flow's order */
        printf("seed: %-18s states:", form);
        size_t k;
        json_t *state;
        json_array_foreach(json_object_get(flow, "states"), k, state)
        {
            json_t *c = json_object_get(reached, jstr(json_object_get(state, "id")));
            if (c)
                printf(" %lld %s", (long long)json_integer_value(c), jstr(json_object_get(state, "id")));
        }
        printf(" (%lld transitions refused)\n", refused);
    }
    free(ids);
    json_decref(reached);
    json_decref(paths);
    return ok;
}

static int usage(void)
{
    fprintf(stderr, "usage: loom app seed APP --spec FILE [--scale N] [--seed N] [--states N] [--if-empty] [--db URL] "
                    "[--data-dir DIR]\n");
    return 2;
}

/* Creates the spec's users that do not exist yet, with their roles in app;
 * then maps every role of app to its active users. */
static bool seed_users(seed *s, json_t *users)
{
    static db_stmt add = {.sql = "INSERT INTO loom.users (username, display_name, app_roles, password_hash) "
                                 "VALUES ($1, $2, jsonb_build_object($3::text, $4::jsonb), $5) ON CONFLICT DO NOTHING"};
    static db_stmt list = {.sql = "SELECT u.id, r FROM loom.users u, jsonb_array_elements_text(u.app_roles -> $1) r "
                                  "WHERE u.active ORDER BY u.id"};
    size_t i;
    json_t *u;
    loom_err e = {0};
    json_array_foreach(users, i, u)
    {
        char *roles = json_dumps(json_object_get(u, "roles"), JSON_COMPACT);
        const char *pw = json_string_value(json_object_get(u, "password"));
        char hash[SECRET_PWHASH_LEN];
        if (pw && !secret_password_hash(pw, hash)) {
            free(roles);
            fprintf(stderr, "loom: could not hash the password of %s\n", jstr(json_object_get(u, "username")));
            return false;
        }
        const char *p[] = {jstr(json_object_get(u, "username")), jstr(json_object_get(u, "display_name")), s->app,
                           roles ? roles : "[]", pw ? hash : NULL};
        bool ok = db_query(s->d, s->a, &add, 5, p, &e) != NULL;
        free(roles);
        if (!ok) {
            fprintf(stderr, "loom: could not create user %s: %s\n", p[0], e.message);
            return false;
        }
    }
    const char *p[] = {s->app};
    PGresult *r = db_query(s->d, s->a, &list, 1, p, &e);
    if (!r)
        return false;
    for (int k = 0; k < PQntuples(r); k++) {
        json_t *ids = json_object_get(s->roles, PQgetvalue(r, k, 1));
        if (!ids) {
            ids = json_array();
            json_object_set_new(s->roles, PQgetvalue(r, k, 1), ids);
        }
        json_array_append_new(ids, json_integer(strtoll(PQgetvalue(r, k, 0), NULL, 10)));
    }
    return true;
}

int cli_seed(int argc, char **argv)
{
    if (argc < 1)
        return usage();
    const char *app = argv[0], *spec_path = NULL;
    double scale = 1;
    unsigned long long rng_seed = 20261122;
    bool if_empty = false;
    long long states_max = 5000;   /* records moved through their flow, per form: each transition is a write */
    cli_db_opts o = {0};
    for (int i = 1; i < argc; i++) {
        if (cli_db_option(argc, argv, &i, &o))
            continue;
        if (!strcmp(argv[i], "--spec") && i + 1 < argc)
            spec_path = argv[++i];
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            rng_seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--states") && i + 1 < argc)
            states_max = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--if-empty"))
            if_empty = true;
        else
            return usage();
    }
    if (!spec_path || scale <= 0)
        return usage();
    char err[512];
    json_t *spec = bundle_load(spec_path, err, sizeof err);
    if (!spec) {
        fprintf(stderr, "loom: %s\n", err);
        return 1;
    }
    char conninfo[8192];
    if (!cli_db_connect_info(&o, conninfo, sizeof conninfo)) {
        json_decref(spec);
        return 1;
    }
    int status = 1;
    arena *a = arena_new();
    PGconn *mc = db_connect_once(conninfo, err, sizeof err);
    if (!mc || store_migrate(mc, err, sizeof err) < 0 || !auth_bootstrap_admin(mc, err, sizeof err)) {
        fprintf(stderr, "loom: %s\n", err);
        if (mc)
            PQfinish(mc);
        goto out;
    }
    PQfinish(mc);
    static db_stmt get = {.sql = "SELECT v.version, v.bundle, v.catalog::text FROM loom.apps a JOIN loom.app_versions v "
                                 "ON v.app = a.id AND v.version = a.published_version WHERE a.id = $1"};
    seed s = {.d = db_new(conninfo), .a = a, .lists = json_object_get(spec, "lists"), .roles = json_object(), .app = app,
              .rng = rng_seed * 0x9E3779B97F4A7C15ULL + 1, .now = time(NULL)};
    loom_err e = {0};
    const char *p[] = {app};
    PGresult *r = db_ready(s.d) ? db_query(s.d, a, &get, 1, p, &e) : NULL;
    if (!r || PQntuples(r) != 1) {
        fprintf(stderr, "loom: app %s is not published here\n", app);
        db_free(s.d);
        goto out;
    }
    int version = atoi(PQgetvalue(r, 0, 0));
    s.bundle = json_loads(PQgetvalue(r, 0, 1), 0, NULL);
    json_t *catalog = json_loads(PQgetvalue(r, 0, 2), 0, NULL);
    s.schema = json_string_value(json_object_get(catalog, "schema"));
    json_t *forms = json_object_get(spec, "forms");
    const char *tz = json_string_value(json_object_get(json_object_get(s.bundle, "app"), "timezone"));
    filter_ctx fc = {.bundle = s.bundle, .schema = s.schema, .admin = true, .system = true, .me = 0,
                     .timezone = tz ? tz : "UTC"};
    sandbox *sb = sandbox_new(NULL);
    write_ctx w = {.fc = &fc, .catalog = catalog, .db = s.d, .a = a, .sb = sb, .app = app, .version = version,
                   .locale = "en"};
    bool ok = db_begin(s.d, a, &e) && seed_users(&s, json_object_get(spec, "users")) && db_commit(s.d, a, &e);
    if (ok && if_empty) {
        const char *first = jstr(json_object_get(json_array_get(forms, 0), "form"));
        buf sql = {0};
        buf_puts(&sql, "SELECT EXISTS (SELECT 1 FROM ");
        table(&sql, &s, first);
        buf_puts(&sql, ")");
        PGresult *x = bundle_item(json_object_get(s.bundle, "forms"), first) ? db_exec(s.d, a, sql.data, &e) : NULL;
        buf_free(&sql);
        if (x && *PQgetvalue(x, 0, 0) == 't') {
            printf("seed: %s already has %s records; nothing to do\n", app, first);
            status = 0;
            ok = false;
        }
    }
    size_t i;
    json_t *entry;
    json_array_foreach(ok ? forms : NULL, i, entry)
    {
        const char *form = jstr(json_object_get(entry, "form"));
        json_t *fdef = bundle_item(json_object_get(s.bundle, "forms"), form);
        if (!fdef) {
            fprintf(stderr, "loom: the spec names form %s, which %s does not have\n", form, app);
            ok = false;
            break;
        }
        long long count = llround(json_number_value(json_object_get(entry, "count")) * scale);
        if (count < 1)
            count = 1;
        json_t *values = json_object_get(entry, "values");
        long long after = 0;   /* the records before: seed_states moves only this run's */
        buf sql = {0};
        buf_puts(&sql, "SELECT coalesce(max(id), 0) FROM ");
        table(&sql, &s, form);
        PGresult *mx = db_exec(s.d, a, sql.data, &e);
        buf_free(&sql);
        if (mx)
            after = strtoll(PQgetvalue(mx, 0, 0), NULL, 10);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long long done = 0, bad = 0;
        json_t *batch = json_array();
        write_import_opts io = {.partial = true};
        for (s.row = 1; ok && s.row <= count; s.row++) {
            json_t *row = json_object();
            const char *k;
            json_t *g;
            json_object_foreach(values, k, g)
            {
                if (!json_object_get(row, k))
                    json_object_set_new(row, k, split(g, row, k, gen(&s, g, bundle_item(json_object_get(fdef, "fields"), k), row)));
            }
            json_array_append_new(batch, row);
            if (s.bad_spec) {
                ok = false;
                break;
            }
            if (json_array_size(batch) == SEED_BATCH || s.row == count) {
                write_import_result res = {.errors = json_array()};
                write_result out = {0};
                ok = db_begin(s.d, a, &e) && write_import(&w, form, batch, done + 1, &io, &res, &out) &&
                     db_commit(s.d, a, &e);
                if (!ok) {
                    fprintf(stderr, "loom: seeding %s failed: %s\n", form, out.message[0] ? out.message : e.message);
                    db_rollback(s.d);
                }
                if (json_array_size(res.errors) && !bad) {
                    char *first = json_dumps(json_array_get(res.errors, 0), JSON_COMPACT);
                    fprintf(stderr, "loom: %s: some generated rows were refused, e.g. %s\n", form, first);
                    free(first);
                }
                bad += (long long)json_array_size(res.errors);
                done += (long long)json_array_size(batch);
                json_decref(res.errors);
                write_result_free(&out);
                json_array_clear(batch);
                arena_reset(a);
            }
        }
        json_decref(batch);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("seed: %-18s %8lld rows (%lld refused) in %.1f s\n", form, done - bad, bad,
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
        if (ok && json_object_get(entry, "states") && states_max > 0)
            ok = seed_states(&s, &w, entry, form, after, states_max);
        fflush(stdout);
    }
    if (ok)
        status = 0;
    for (int k = 0; k < s.npools; k++) {
        free(s.pools[k].vals);
        json_decref(s.pools[k].cols);
    }
    sandbox_free(sb);
    db_free(s.d);
    json_decref(s.bundle);
    json_decref(catalog);
    json_decref(s.roles);
out:
    json_decref(spec);
    arena_free(a);
    cli_db_finish();
    return status;
}
