/* flow.c - see flow.h. */
#include "flow/flow.h"

#include <stdlib.h>
#include <string.h>

static json_t *by_id(json_t *list, const char *id)
{
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x)
    {
        const char *xid = json_string_value(json_object_get(x, "id"));
        if (id && xid && !strcmp(xid, id))
            return x;
    }
    return NULL;
}

json_t *flow_state(json_t *flow, const char *id)
{
    return by_id(json_object_get(flow, "states"), id);
}

json_t *flow_transition(json_t *flow, const char *id)
{
    return by_id(json_object_get(flow, "transitions"), id);
}

bool flow_final(json_t *flow, const char *state)
{
    return json_is_true(json_object_get(flow_state(flow, state), "final"));
}

bool flow_has(json_t *list, const char *s)
{
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x) if (s && json_is_string(x) && !strcmp(json_string_value(x), s)) return true;
    return false;
}

bool flow_starts_in(json_t *flow, json_t *t, const char *state)
{
    json_t *from = json_object_get(t, "from");
    return flow_state(flow, state) && (flow_has(from, state) || (flow_has(from, "*") && !flow_final(flow, state)));
}

bool flow_editable(json_t *flow, const char *state, const char *field)
{
    json_t *editable = json_object_get(flow_state(flow, state), "editable");
    if (json_is_array(editable))
        return flow_has(editable, field);
    return !flow_final(flow, state);
}

bool flow_has_timers(json_t *flow)
{
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(flow, "states"), i, s) if (json_object_get(s, "sla") || json_object_get(s, "timeout"))
        return true;
    return false;
}

bool flow_has_approvals(json_t *flow)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(flow, "transitions"), i, t) if (json_object_get(t, "approval")) return true;
    return false;
}

long long flow_seconds(const char *d)
{
    size_t n = d ? strlen(d) : 0;
    if (n < 2 || n > 12 || strspn(d, "0123456789") != n - 1)
        return -1;
    long long v = strtoll(d, NULL, 10);
    switch (d[n - 1]) {
    case 'm': return v * 60;
    case 'h': return v * 3600;
    case 'd': return v * 86400;
    case 'w': return v * 7 * 86400;
    default: return -1;
    }
}

/* The user id in field f of rec (_owner included), or 0. */
static long long user_in(json_t *rec, const char *f)
{
    json_t *v = f ? json_object_get(rec, f) : NULL;
    if (json_is_object(v))   /* expanded */
        v = json_object_get(v, "id");
    return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

flow_match flow_assignee_match(json_t *a, json_t *rec, long long me, json_t *roles, long long *manager_of_user)
{
    json_t *x;
    if ((x = json_object_get(a, "role")))
        return flow_has(roles, json_string_value(x)) ? FLOW_YES : FLOW_NO;
    if ((x = json_object_get(a, "field")))
        return me && user_in(rec, json_string_value(x)) == me ? FLOW_YES : FLOW_NO;
    if ((x = json_object_get(a, "user")))
        return json_is_integer(x) && json_integer_value(x) == me ? FLOW_YES : FLOW_NO;
    if ((x = json_object_get(a, "users"))) {
        size_t i;
        json_t *u;
        json_array_foreach(x, i, u) if (json_is_integer(u) && json_integer_value(u) == me) return FLOW_YES;
        return FLOW_NO;
    }
    if ((x = json_object_get(a, "manager_of"))) {
        *manager_of_user = user_in(rec, json_string_value(x));
        return *manager_of_user ? FLOW_MANAGER : FLOW_NO;
    }
    return FLOW_NO;
}
