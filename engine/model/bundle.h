/* bundle.h - reading an app bundle (format loom.app/1) into one JSON value.
 *
 * A bundle is one JSON file, or a directory: app.json {"format", "app",
 * "permissions", "webhooks"}, forms/<id>.json, flows/<id>.json,
 * rules/<id>.json (+ the .lua file a rule's "script_file" names, relative to
 * rules/), reports/<id>.json, dashboards/<id>.json, data/<form>.json or
 * data/<form>.csv. A directory loads into the same shape as the single file,
 * files in name order; a rule's script file is read into "script" and its
 * "script_file" is kept, so the directory can be written back as it was.
 *
 * JSON is parsed with duplicate keys rejected and nesting limited to
 * BUNDLE_MAX_DEPTH, so hostile input fails before it costs anything. */
#ifndef LOOM_BUNDLE_H
#define LOOM_BUNDLE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#define BUNDLE_MAX_DEPTH 32
#define BUNDLE_MAX_BYTES (32u << 20)

/* Parses text as JSON with the rules above. Returns a new reference, or NULL
 * with a message ("line 3, column 7: ...") in err. */
json_t *bundle_parse(const char *text, size_t len, char *err, size_t errlen);
/* Loads a bundle file or directory. Returns a new reference, or NULL with
 * "path: message" in err. */
json_t *bundle_load(const char *path, char *err, size_t errlen);
/* Writes bundle in the directory layout under dir (created; must be empty or
 * absent), the inverse of bundle_load: loading dir gives back a JSON-equal
 * bundle. A rule with a script_file gets its script written to that file.
 * Returns false with "path: message" in err. */
bool bundle_write_dir(json_t *bundle, const char *dir, char *err, size_t errlen);

/* The text of a JSON string; "" for anything else (NULL included). */
static inline const char *jstr(json_t *v)
{
    const char *s = json_string_value(v);
    return s ? s : "";
}

/* Whether field (a field definition, may be NULL) is of type. */
static inline bool field_is(json_t *field, const char *type)
{
    return field && !strcmp(jstr(json_object_get(field, "type")), type);
}

/* The item of a list of objects (forms, fields, flows...) whose "id" is id
 * (borrowed), or NULL. */
json_t *bundle_item(json_t *list, const char *id);
/* The flow attached to form (borrowed), or NULL. */
json_t *bundle_flow(json_t *bundle, const char *form);

#endif
