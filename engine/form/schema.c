/* schema.c - see schema.h. */
#include "form/schema.h"

#include <stdio.h>
#include <string.h>

#include "form/record.h"
#include "model/bundle.h"

json_t *schema_label(json_t *label, const char *locale, json_t *locales, const char *fallback)
{
    if (json_is_string(label))
        return json_incref(label);
    json_t *v = locale ? json_object_get(label, locale) : NULL;
    if (!v)
        v = json_object_get(label, jstr(json_array_get(locales, 0)));
    if (!v && json_object_size(label))
        v = json_object_iter_value(json_object_iter(label));
    return v ? json_incref(v) : json_string(fallback);
}

typedef struct sctx {
    json_t *locales;
    const char *locale;
    const perm_decision *d;
} sctx;

static perm_mode mode_of(const sctx *c, const char *prefix, const char *id)
{
    char name[160];
    snprintf(name, sizeof name, "%s%s%s", prefix ? prefix : "", prefix ? "." : "", id);
    return perm_field(c->d, name);
}

/* Properties copied as they are, when present. */
static const char *const passthrough[] = {"required", "default", "min", "max", "min_length", "pattern", "precision",
                                          "scale", "multiple", "max_size", "content_types", "min_items", "max_items",
                                          "min_rows", "max_rows", "visible_when", "form", "filter", "roles",
                                          "unique", "formula", NULL};

static json_t *render_fields(const sctx *c, json_t *fields, const char *prefix)
{
    json_t *out = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        perm_mode m = mode_of(c, prefix, id);
        if (m == FIELD_HIDDEN)
            continue;
        bool computed = field_computed(f);
        json_t *r = json_pack("{s:s, s:O, s:o, s:s}", "id", id, "type", json_object_get(f, "type"), "label",
                              schema_label(json_object_get(f, "label"), c->locale, c->locales, id), "mode",
                              m == FIELD_WRITE && !computed ? "write" : "read");
        if (json_object_get(f, "help"))
            json_object_set_new(r, "help", schema_label(json_object_get(f, "help"), c->locale, c->locales, ""));
        for (const char *const *k = passthrough; *k; k++)
            if (json_object_get(f, *k))
                json_object_set(r, *k, json_object_get(f, *k));
        if (field_max_length(f))   /* the limit in force, the type's default when the field sets none */
            json_object_set_new(r, "max_length", json_integer(field_max_length(f)));
        json_t *opts = json_object_get(f, "options");
        if (opts) {
            json_t *ro = json_array();
            size_t j;
            json_t *o;
            json_array_foreach(opts, j, o)
            {
                const char *v = jstr(json_object_get(o, "value"));
                json_array_append_new(ro, json_pack("{s:s, s:o}", "value", v, "label",
                                                    schema_label(json_object_get(o, "label"), c->locale, c->locales, v)));
            }
            json_object_set_new(r, "options", ro);
        }
        if (!strcmp(jstr(json_object_get(f, "type")), "subform"))
            json_object_set_new(r, "fields", render_fields(c, json_object_get(f, "fields"), id));
        json_array_append_new(out, r);
    }
    return out;
}

/* The layout with hidden fields left out (and sections left empty dropped). */
static json_t *render_layout(const sctx *c, json_t *layout)
{
    json_t *out = json_array();
    size_t i;
    json_t *sec;
    json_array_foreach(layout, i, sec)
    {
        json_t *fields = json_array();
        size_t j;
        json_t *f;
        json_array_foreach(json_object_get(sec, "fields"), j, f) if (mode_of(c, NULL, jstr(f)) != FIELD_HIDDEN)
            json_array_append(fields, f);
        if (!json_array_size(fields)) {
            json_decref(fields);
            continue;
        }
        json_t *s = json_deep_copy(sec);
        json_object_set_new(s, "fields", fields);
        if (json_object_get(sec, "section"))
            json_object_set_new(s, "section", schema_label(json_object_get(sec, "section"), c->locale, c->locales, ""));
        json_array_append_new(out, s);
    }
    return out;
}

json_t *schema_render(json_t *bundle, json_t *form, const perm_decision *d, const char *locale)
{
    sctx c = {.locales = json_object_get(json_object_get(bundle, "app"), "locales"), .locale = locale, .d = d};
    const char *id = jstr(json_object_get(form, "id"));
    json_t *r = json_pack("{s:s, s:o, s:o, s:b}", "id", id, "label",
                          schema_label(json_object_get(form, "label"), locale, c.locales, id), "fields",
                          render_fields(&c, json_object_get(form, "fields"), NULL), "create", d->create);
    json_object_set_new(r, "permissions", perm_summary(d));
    const char *title = json_string_value(json_object_get(form, "title"));
    if (title && mode_of(&c, NULL, title) != FIELD_HIDDEN)
        json_object_set_new(r, "title", json_string(title));
    if (json_object_get(form, "layout"))
        json_object_set_new(r, "layout", render_layout(&c, json_object_get(form, "layout")));
    json_t *flow = bundle_flow(bundle, id);
    if (flow) {
        json_t *states = json_array();
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(flow, "states"), i, s)
        {
            const char *sid = jstr(json_object_get(s, "id"));
            json_array_append_new(states, json_pack("{s:s, s:o, s:b}", "id", sid, "label",
                                                    schema_label(json_object_get(s, "label"), locale, c.locales, sid),
                                                    "final", json_is_true(json_object_get(s, "final"))));
        }
        json_object_set_new(r, "flow", json_pack("{s:O, s:o}", "initial", json_object_get(flow, "initial"), "states", states));
    }
    return r;
}

/* ---- JSON Schema ---- */

static json_t *json_fields(const sctx *c, json_t *fields, const char *prefix, bool row);

static json_t *value_schema(const sctx *c, json_t *f)
{
    const char *t = jstr(json_object_get(f, "type"));
    json_t *s = json_object();
    if (!strcmp(t, "integer")) {
        json_object_set_new(s, "type", json_string("integer"));
        if (json_object_get(f, "min"))
            json_object_set(s, "minimum", json_object_get(f, "min"));
        if (json_object_get(f, "max"))
            json_object_set(s, "maximum", json_object_get(f, "max"));
    } else if (!strcmp(t, "decimal") || !strcmp(t, "money")) {
        /* a string of digits, or a JSON number of at most 15 significant digits */
        json_object_set_new(s, "type", json_pack("[s, s]", "string", "number"));
        json_object_set_new(s, "pattern", json_string("^-?[0-9]+(\\.[0-9]+)?$"));
    } else if (!strcmp(t, "boolean")) {
        json_object_set_new(s, "type", json_string("boolean"));
    } else if (!strcmp(t, "date") || !strcmp(t, "datetime")) {
        json_object_set_new(s, "type", json_string("string"));
        json_object_set_new(s, "format", json_string(!strcmp(t, "date") ? "date" : "date-time"));
    } else if (!strcmp(t, "select") || !strcmp(t, "multiselect")) {
        json_t *e = json_array();
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(f, "options"), i, o) json_array_append(e, json_object_get(o, "value"));
        if (!strcmp(t, "select")) {
            json_object_set_new(s, "enum", e);
        } else {
            json_object_set_new(s, "type", json_string("array"));
            json_object_set_new(s, "items", json_pack("{s:o}", "enum", e));
            json_object_set_new(s, "uniqueItems", json_true());
            if (json_object_get(f, "min_items"))
                json_object_set(s, "minItems", json_object_get(f, "min_items"));
            json_t *mx = json_object_get(f, "max_items");
            json_object_set_new(s, "maxItems", json_is_integer(mx) ? json_incref(mx) : json_integer(RECORD_MAX_ITEMS));
        }
    } else if (!strcmp(t, "ref") || !strcmp(t, "user")) {
        json_object_set_new(s, "oneOf", json_pack("[{s:s, s:i}, {s:s, s:[s], s:{s:{s:s, s:i}}}]", "type", "integer",
                                                  "minimum", 1, "type", "object", "required", "id", "properties",
                                                  "id", "type", "integer", "minimum", 1));
    } else if (!strcmp(t, "subform")) {
        json_object_set_new(s, "type", json_string("array"));
        json_object_set_new(s, "items", json_fields(c, json_object_get(f, "fields"), jstr(json_object_get(f, "id")), true));
        if (json_object_get(f, "min_rows"))
            json_object_set(s, "minItems", json_object_get(f, "min_rows"));
        json_t *mx = json_object_get(f, "max_rows");
        json_object_set_new(s, "maxItems", json_is_integer(mx) ? json_incref(mx) : json_integer(RECORD_MAX_ROWS));
    } else if (!strcmp(t, "file")) {
        json_t *one = json_pack("{s:s, s:[s]}", "type", "object", "required", "id");
        if (json_is_true(json_object_get(f, "multiple"))) {
            json_object_set_new(s, "type", json_string("array"));
            json_object_set_new(s, "items", one);
        } else {
            json_decref(s);
            s = one;
        }
    } else {   /* text kinds */
        json_object_set_new(s, "type", json_string("string"));
        if (json_object_get(f, "min_length"))
            json_object_set(s, "minLength", json_object_get(f, "min_length"));
        if (field_max_length(f))
            json_object_set_new(s, "maxLength", json_integer(field_max_length(f)));
        if (json_object_get(f, "pattern"))
            json_object_set(s, "pattern", json_object_get(f, "pattern"));
        if (!strcmp(t, "email") || !strcmp(t, "url"))
            json_object_set_new(s, "format", json_string(!strcmp(t, "email") ? "email" : "uri"));
    }
    /* an empty value is null (what a write accepts for a field not always required), except for lists */
    json_t *type = json_object_get(s, "type"), *e = json_object_get(s, "enum"), *one = json_object_get(s, "oneOf");
    if (json_is_true(json_object_get(f, "required"))) {
        if (json_is_string(type) && !strcmp(json_string_value(type), "string")) {   /* "" or spaces are no value */
            if (json_object_get(s, "pattern"))
                json_object_set_new(s, "allOf", json_pack("[{s:s}]", "pattern", "\\S"));
            else
                json_object_set_new(s, "pattern", json_string("\\S"));
        }
        return s;
    }
    if (json_is_string(type) && strcmp(json_string_value(type), "array"))
        json_object_set_new(s, "type", json_pack("[O, s]", type, "null"));
    else if (json_is_array(type))
        json_array_append_new(type, json_string("null"));
    else if (e)
        json_array_append_new(e, json_null());
    else if (one)
        json_array_append_new(one, json_pack("{s:s}", "type", "null"));
    return s;
}

static json_t *json_fields(const sctx *c, json_t *fields, const char *prefix, bool row)
{
    json_t *props = json_object(), *required = json_array();
    if (row)
        json_object_set_new(props, "id", json_pack("{s:s, s:i}", "type", "integer", "minimum", 1));
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *id = jstr(json_object_get(f, "id"));
        if (mode_of(c, prefix, id) != FIELD_WRITE || field_computed(f))
            continue;
        json_t *s = value_schema(c, f);
        json_object_set_new(s, "title", schema_label(json_object_get(f, "label"), c->locale, c->locales, id));
        json_object_set_new(props, id, s);
        if (json_is_true(json_object_get(f, "required")) && !json_object_get(f, "default"))
            json_array_append_new(required, json_string(id));
    }
    return json_pack("{s:s, s:o, s:o, s:b}", "type", "object", "properties", props, "required", required,
                     "additionalProperties", 0);
}

json_t *schema_json(json_t *bundle, json_t *form, const perm_decision *d, const char *locale)
{
    sctx c = {.locales = json_object_get(json_object_get(bundle, "app"), "locales"), .locale = locale, .d = d};
    json_t *s = json_fields(&c, json_object_get(form, "fields"), NULL, false);
    const char *id = jstr(json_object_get(form, "id"));
    json_object_set_new(s, "$schema", json_string("https://json-schema.org/draft/2020-12/schema"));
    json_object_set_new(s, "title", schema_label(json_object_get(form, "label"), locale, c.locales, id));
    if (d->update && perm_scope_all(d->update))   /* _owner is writable with update scope all */
        json_object_set_new(json_object_get(s, "properties"), "_owner",
                            json_pack("{s:[s, s], s:i}", "type", "integer", "null", "minimum", 1));
    return s;
}
