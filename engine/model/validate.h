/* validate.h - whole-app validation of a bundle.
 *
 * model_validate() checks a bundle completely and reports every problem at
 * once, each as {"path", "code", "message"}: path is a JSON Pointer into the
 * bundle (/forms/2/fields/3/type), code one of the stable codes below. It never
 * stops at the first problem; it stops descending into a collection that is
 * over its size limit (too_many), so hostile bundles stay cheap.
 *
 * Codes: unknown_key, required, type, bad_id, duplicate_id, unknown_type,
 * bad_value, bad_label, unknown_form, unknown_field, unknown_role,
 * unknown_state, unknown_transition, unknown_report, invalid_default,
 * bad_pattern, bad_expression, bad_script, formula_cycle, unreachable_state,
 * no_one_allowed, bad_duration, bad_filter, bad_format, too_many. */
#ifndef LOOM_VALIDATE_H
#define LOOM_VALIDATE_H

#include <jansson.h>
#include <stdbool.h>

#define MODEL_MAX_FORMS 500
#define MODEL_MAX_FIELDS 1000   /* per form or subform */
#define MODEL_MAX_ITEMS 2000    /* flows, rules, reports, dashboards, states, options... */

/* True when s is a valid id: ^[a-z][a-z0-9_]{0,47}$. */
bool model_is_id(const char *s);

/* Returns a new array of problems; empty when the bundle is valid. */
json_t *model_validate(json_t *bundle);

#endif
