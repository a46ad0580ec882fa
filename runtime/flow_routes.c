/* flow_routes.c - a record's flow: what the caller may do now
 * (GET .../records/{id}/actions) and taking a transition
 * (POST .../records/{id}/actions/{transition}), over engine/store/write. */
#include <string.h>

#include "form/record.h"
#include "handlers.h"
#include "records.h"

#define COMMENT_MAX 4000   /* characters of a transition's comment */

static void body_problem(ctx *c, const char *path, const char *message)
{
    ctx_problem(c, LOOM_BAD_REQUEST, message, json_pack("[{s:s, s:s, s:s}]", "path", path, "code", "bad_request",
                                                         "message", message));
}

void records_actions(void *cp)
{
    ctx *c = cp;
    rec_req r;
    long long im;
    if (!rec_target(c, &r, &im))
        return;
    write_ctx w = rec_write_ctx(c, &r);
    write_result out;
    json_t *actions = NULL;
    if (!write_actions(&w, r.form, c->params[2], &actions, &out)) {
        json_decref(actions);
        rec_write_failed(c, &out);
        return;
    }
    write_result_free(&out);
    ctx_json(c, 200, json_pack("{s:o, s:n}", "actions", actions, "approval"));
}

void records_transition(void *cp)
{
    ctx *c = cp;
    rec_req r;
    long long im;
    if (!rec_target(c, &r, &im))
        return;
    json_t *body = NULL;   /* no body: no values, no comment */
    if (c->req->body_len && !(body = ctx_body_object(c)))
        return;
    const char *k;
    json_t *v, *values = json_object_get(body, "values"), *comment = json_object_get(body, "comment");
    json_object_foreach(body, k, v) if (strcmp(k, "values") && strcmp(k, "comment"))
    {
        char path[80];
        snprintf(path, sizeof path, "/%.60s", k);
        return body_problem(c, path, "a transition takes values and comment");
    }
    if (values && !json_is_object(values) && !json_is_null(values))
        return body_problem(c, "/values", "values is an object of fields");
    if (comment && !json_is_null(comment) &&
        !(json_is_string(comment) && record_text_length(json_string_value(comment)) <= COMMENT_MAX))
        return body_problem(c, "/comment", "a comment is a string of at most 4000 characters");
    write_ctx w = rec_write_ctx(c, &r);
    write_result out;
    if (!write_transition(&w, r.form, c->params[2], c->params[3], json_is_object(values) ? values : NULL,
                          json_string_value(comment), &out)) {
        rec_write_failed(c, &out);
        return;
    }
    write_result_free(&out);
    rec_respond(c, &r, 200, out.id, out.version);
}
