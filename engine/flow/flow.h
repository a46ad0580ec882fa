/* flow.h - a form's flow (definitions: Flows) read from a published bundle:
 * which transitions start in a state, what a plain update may change in it,
 * who counts as its assignee, and flow durations. Pure: what needs the
 * database (a user's manager, the holders of a role) is the caller's. */
#ifndef LOOM_FLOW_H
#define LOOM_FLOW_H

#include <jansson.h>
#include <stdbool.h>

/* The state or transition with that id, or NULL (borrowed). */
json_t *flow_state(json_t *flow, const char *id);
json_t *flow_transition(json_t *flow, const char *id);
bool flow_final(json_t *flow, const char *state);
/* Whether transition t may start in state ("*" in from: any non-final state). */
bool flow_starts_in(json_t *flow, json_t *t, const char *state);
/* Whether a plain update may change field in state: the state's editable
 * list, else every field in a non-final state and none in a final one. */
bool flow_editable(json_t *flow, const char *state, const char *field);
/* Whether the array of strings list holds s. */
bool flow_has(json_t *list, const char *s);
/* Whether any state of flow has an SLA or a timeout; any transition an approval. */
bool flow_has_timers(json_t *flow);
bool flow_has_approvals(json_t *flow);
/* Seconds in a duration "<n>m", "<n>h", "<n>d" or "<n>w"; -1 when it is not one. */
long long flow_seconds(const char *duration);

/* What an assignee form ({"role"}, {"field"}, {"manager_of"}, {"users"},
 * {"user"}) says of user me (holding app roles) on record rec, without the
 * database: FLOW_YES, FLOW_NO, or FLOW_MANAGER when it depends on whether me
 * manages the user in *manager_of_user (manager_of). */
typedef enum { FLOW_NO, FLOW_YES, FLOW_MANAGER } flow_match;
flow_match flow_assignee_match(json_t *assignee, json_t *rec, long long me, json_t *roles, long long *manager_of_user);

#endif
