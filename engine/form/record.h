/* record.h - a record body checked against its form: every field type's
 * coercion and validation, all problems at once.
 *
 * record_check() takes a request body (create or partial update) and gives
 * back the values in their canonical JSON form (decimals as strings with the
 * field's scale, datetimes in UTC "YYYY-MM-DDTHH:MM:SSZ", ...) and a list of
 * {path, code, message} problems with the value codes of the contract:
 * required, type, too_short, too_long, too_small, too_large, pattern,
 * not_an_option, unknown_field, readonly, too_few_rows, too_many_rows.
 * What needs the database (a ref's target exists, uniqueness), Lua
 * (conditional required, checks, formulas) or the caller (defaults) is done
 * elsewhere; system fields in a body are reported apart, since the API
 * refuses them with 400 rather than 422. */
#ifndef LOOM_RECORD_H
#define LOOM_RECORD_H

#include <jansson.h>
#include <stdbool.h>

typedef struct record_result {
    json_t *values;    /* field id -> canonical value (new reference) */
    json_t *errors;    /* [{path, code, message}] (new reference) */
    json_t *system;    /* system field names found in the body (new reference) */
} record_result;

/* Checks body (a JSON object) against form. create: required fields must be
 * present (non-null); otherwise only the fields given are checked. Fields
 * computed by a formula, autonumbers and readonly fields may not be given.
 * The caller frees the three members with record_result_free(). */
void record_check(json_t *form, json_t *body, bool create, record_result *out);
void record_result_free(record_result *r);

/* A form's fields read once (ids, types, what is required or computed), for
 * checking many records with record_check_fields() as record_check() does
 * (an import checks thousands with one), and for whatever else walks a
 * record's fields per record. */
typedef struct field_info {
    json_t *def;                 /* the definition (borrowed from the table's fields) */
    const char *id;
    json_t *(*coerce)(json_t *field, json_t *v, const char **code, char *msg, size_t n);   /* NULL: not coerced */
    bool computed;               /* field_computed() */
    bool required;               /* "required": true (an expression is not) */
    bool subform;
    bool number;                 /* a decimal or money: a number to Lua */
    struct field_table *rows;    /* a subform's fields, or NULL */
} field_info;

typedef struct field_table {
    json_t *fields;              /* the definitions (a reference) */
    size_t n;
    field_info *f;               /* n of them, in the fields' order */
} field_table;

/* The table of fields (a JSON array of field definitions). Holds a reference
 * to fields; freed with field_table_free() (NULL is fine). */
field_table *field_table_new(json_t *fields);
void field_table_free(field_table *t);

/* Every form's field table (forms: a bundle's "forms" array), built once for
 * an app snapshot and read by every write to it (read only: any thread). */
typedef struct form_tables form_tables;
form_tables *form_tables_new(json_t *forms);
/* The table of form's fields, or NULL when the app has no such form. */
const field_table *form_tables_get(const form_tables *t, const char *form);
void form_tables_free(form_tables *t);
void record_check_fields(const field_table *t, json_t *body, bool create, record_result *out);

/* The canonical form of one value for field, or NULL with *code and
 * message set (both static). Exposed for filters and defaults. */
json_t *field_coerce(json_t *field, json_t *value, const char **code, char *message, size_t n);
/* Length in Unicode characters of valid UTF-8 (what max_length counts). */
size_t record_text_length(const char *s);
/* Whether year y (1-9999), month mo and day d make a date of the calendar. */
bool record_valid_date(int y, int mo, int d);
/* True for the system fields Loom alone writes: id, _version, _state,
 * _created_at, _created_by, _updated_at, _updated_by (not _owner). */
bool record_system_field(const char *name);
/* True when no caller writes the field: readonly, a formula, an autonumber. */
bool field_computed(json_t *field);
/* The max_length in force for a text kind (text, longtext, email, phone,
 * url): the field's own, else its type's default; 0 for other types. */
long long field_max_length(json_t *field);
/* A multiselect's max_items and a subform's max_rows when the field sets none. */
#define RECORD_MAX_ITEMS 1000
#define RECORD_MAX_ROWS 1000

#endif
