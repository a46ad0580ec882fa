/* schema.h - what a client needs to draw a form for one caller: the render
 * schema (fields it may see, each with its mode, localized labels and
 * options, the layout without hidden fields, the flow's states), and the
 * JSON Schema (2020-12) of a record body it may write.
 *
 * Hidden fields are simply absent, in both, as everywhere else. */
#ifndef LOOM_SCHEMA_H
#define LOOM_SCHEMA_H

#include <jansson.h>

#include "perm/perm.h"

/* A label as text: the locale's, else the app's first locale's, else any,
 * else fallback. label is a string or a {locale: text} map (or NULL). */
json_t *schema_label(json_t *label, const char *locale, json_t *locales, const char *fallback);

/* The render schema of form (an item of bundle's forms) for a caller with
 * decision d, labels in locale. A new reference. */
json_t *schema_render(json_t *bundle, json_t *form, const perm_decision *d, const char *locale);

/* The JSON Schema of a create body for a caller with decision d: the fields
 * it may write (not read-only, formula or autonumber), typed as the API
 * accepts them, no other keys. A new reference. */
json_t *schema_json(json_t *bundle, json_t *form, const perm_decision *d, const char *locale);

#endif
