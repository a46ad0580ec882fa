/* tasks.h - "my tasks" (api: GET /api/tasks) of one app as SQL: the records
 * whose current state names the caller as assignee (a role it holds, a user
 * field holding it, the manager of the user in a field, a list), and the
 * pending approvals waiting for its decision, each only inside the
 * caller's read scope. */
#ifndef LOOM_TASKS_H
#define LOOM_TASKS_H

#include "store/filter.h"

/* Appends to sql one SELECT per kind of task of the caller's app (joined
 * with UNION ALL, also to what sql already holds when *parts > 0), each row
 * (app, form, record, title, state, since, due_at, kind) with since and
 * due_at timestamptz; values go to args. *parts counts the SELECTs
 * appended. False only when a permission filter does not compile. */
bool tasks_sql(const filter_ctx *c, const char *app, buf *sql, json_t *args, int *parts, filter_err *err);

#endif
