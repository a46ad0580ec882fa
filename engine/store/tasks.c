/* tasks.c - see tasks.h. */
#include "store/tasks.h"

#include <stdio.h>
#include <string.h>

#include "flow/flow.h"
#include "form/ddl.h"
#include "model/bundle.h"
#include "perm/perm.h"

/* "$n" of a new argument v. */
static const char *param(json_t *args, const char *v, char out[16])
{
    json_array_append_new(args, v ? json_string(v) : json_null());
    snprintf(out, 16, "$%zu", json_array_size(args));
    return out;
}

/* SELECT <app>, <form>, t.id, <title>, t._state, <since>, <due>, <kind> FROM <form table> AS t */
static void head(const filter_ctx *c, const char *app, const char *form, json_t *fdef, const perm_decision *d,
                 const char *since, const char *due, const char *kind, buf *sql, json_t *args, int *parts)
{
    char pa[16], pf[16], pk[16];
    buf_puts(sql, *parts ? " UNION ALL " : "");
    (*parts)++;
    buf_printf(sql, "SELECT %s::text AS app, ", param(args, app, pa));
    buf_printf(sql, "%s::text AS form, t.\"id\" AS record, ", param(args, form, pf));
    const char *title = json_string_value(json_object_get(fdef, "title"));
    json_t *tf = title ? bundle_item(json_object_get(fdef, "fields"), title) : NULL;
    if (tf && !field_is(tf, "subform") && perm_field(d, title) != FIELD_HIDDEN) {
        buf_puts(sql, "coalesce(t.");
        ddl_quote(sql, title);
        buf_puts(sql, "::text, '#' || t.\"id\")");
    } else {
        buf_puts(sql, "'#' || t.\"id\"");
    }
    buf_printf(sql, " AS title, t.\"_state\" AS state, %s AS since, %s AS due_at, ", since, due);
    buf_printf(sql, "%s::text AS kind FROM ", param(args, kind, pk));
    ddl_quote(sql, c->schema);
    buf_puts(sql, ".");
    ddl_quote(sql, form);
    buf_puts(sql, " AS t");
}

/* The condition that the caller is assignee of the record t in state s
 * (assignee a), or false when it never is; appended to cond. */
static bool assignee_cond(const filter_ctx *c, const char *s, json_t *a, buf *cond, json_t *args)
{
    char ps[16], pm[16];
    char me[24];
    snprintf(me, sizeof me, "%lld", c->me);
    json_t *x;
    bool yes = false;
    if ((x = json_object_get(a, "role")))
        yes = flow_has(c->roles, json_string_value(x));
    else if ((x = json_object_get(a, "user")))
        yes = json_integer_value(x) == c->me;
    else if ((x = json_object_get(a, "users"))) {
        size_t i;
        json_t *u;
        json_array_foreach(x, i, u) yes = yes || json_integer_value(u) == c->me;
    }
    if (yes) {
        buf_printf(cond, "%s(t.\"_state\" = %s)", cond->len ? " OR " : "", param(args, s, ps));
        return true;
    }
    const char *f = NULL;
    bool manager = false;
    if ((x = json_object_get(a, "field")))
        f = json_string_value(x);
    else if ((x = json_object_get(a, "manager_of")))
        f = json_string_value(x), manager = true;
    if (!f || !c->me)
        return false;
    buf_printf(cond, "%s(t.\"_state\" = %s AND t.", cond->len ? " OR " : "", param(args, s, ps));
    ddl_quote(cond, f);
    if (manager)
        buf_printf(cond, " IN (SELECT u.id FROM loom.users u WHERE u.manager = %s::bigint))", param(args, me, pm));
    else
        buf_printf(cond, " = %s::bigint)", param(args, me, pm));
    return true;
}

bool tasks_sql(const filter_ctx *c, const char *app, buf *sql, json_t *args, int *parts, filter_err *err)
{
    size_t i;
    json_t *flow;
    char pme[16], me[24];
    snprintf(me, sizeof me, "%lld", c->me);
    json_array_foreach(json_object_get(c->bundle, "flows"), i, flow)
    {
        const char *form = json_string_value(json_object_get(flow, "form"));
        json_t *fdef = bundle_item(json_object_get(c->bundle, "forms"), form);
        perm_decision d;
        perm_decide(c->bundle, form, c->roles, c->admin, &d);
        bool ok = true;
        if (!fdef || !d.read) {
            perm_free(&d);
            continue;
        }
        /* assignee: per non-final state, with its SLA as due_at */
        buf cond = {0}, due = {0};
        buf_puts(&due, "CASE t.\"_state\"");
        size_t k;
        json_t *st;
        int slas = 0;
        json_array_foreach(json_object_get(flow, "states"), k, st)
        {
            const char *s = json_string_value(json_object_get(st, "id"));
            json_t *a = json_object_get(st, "assignee");
            if (!a || json_is_true(json_object_get(st, "final")) || !assignee_cond(c, s, a, &cond, args))
                continue;
            long long within = flow_seconds(json_string_value(json_object_get(json_object_get(st, "sla"), "within")));
            if (within > 0) {
                char ps[16];
                buf_printf(&due, " WHEN %s THEN t.\"_state_at\" + interval '%lld seconds'", param(args, s, ps), within);
                slas++;
            }
        }
        buf_puts(&due, " END");
        if (cond.len) {
            head(c, app, form, fdef, &d, "t.\"_state_at\"", slas ? due.data : "NULL::timestamptz", "assignee", sql, args,
                 parts);
            buf_printf(sql, " WHERE (%s)", cond.data);
            if (!c->system && !perm_scope_all(d.read)) {
                buf_puts(sql, " AND ");
                ok = filter_scope_sql(c, form, "t", d.read, sql, args, err);
            }
        }
        buf_free(&cond);
        buf_free(&due);
        /* approvals waiting for my decision */
        if (ok && c->me && flow_has_approvals(flow)) {
            head(c, app, form, fdef, &d, "a.requested_at", "NULL::timestamptz", "approval", sql, args, parts);
            char pa[16], pf[16];
            buf_printf(sql, " JOIN loom.approvals a ON a.record = t.\"id\" AND a.app = %s AND a.form = %s",
                       param(args, app, pa), param(args, form, pf));
            param(args, me, pme);
            buf_printf(sql, " AND a.status = 'pending' AND a.approvers @> ARRAY[%s::bigint] AND NOT a.decisions @> "
                            "jsonb_build_array(jsonb_build_object('user', %s::bigint))", pme, pme);
            if (!c->system && !perm_scope_all(d.read)) {
                buf_puts(sql, " WHERE ");
                ok = filter_scope_sql(c, form, "t", d.read, sql, args, err);
            }
        }
        perm_free(&d);
        if (!ok)
            return false;
    }
    return true;
}
