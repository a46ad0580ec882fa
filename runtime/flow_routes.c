/* flow_routes.c - a record's flow: what the caller may do now
 * (GET .../records/{id}/actions), taking a transition
 * (POST .../records/{id}/actions/{transition}) and deciding its approval
 * (POST .../records/{id}/approval), over engine/store/write. */
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
    ctx_json(c, 200, json_pack("{s:o, s:O?}", "actions", actions, "approval", out.approval));
    write_result_free(&out);
}

/* Checks body holds only keys (NULL-ended) and an optional comment string;
 * false after responding. */
static bool body_keys(ctx *c, json_t *body, const char *const *keys, const char *what)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        bool known = false;
        for (const char *const *x = keys; *x; x++)
            known = known || !strcmp(*x, k);
        if (!known) {
            char path[80];
            snprintf(path, sizeof path, "/%.60s", k);
            body_problem(c, path, what);
            return false;
        }
    }
    json_t *comment = json_object_get(body, "comment");
    if (comment && !json_is_null(comment) &&
        !(json_is_string(comment) && record_text_length(json_string_value(comment)) <= COMMENT_MAX)) {
        body_problem(c, "/comment", "a comment is a string of at most 4000 characters");
        return false;
    }
    return true;
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
    static const char *const keys[] = {"values", "comment", NULL};
    if (!body_keys(c, body, keys, "a transition takes values and comment"))
        return;
    json_t *values = json_object_get(body, "values");
    if (values && !json_is_object(values) && !json_is_null(values))
        return body_problem(c, "/values", "values is an object of fields");
    write_ctx w = rec_write_ctx(c, &r);
    write_result out;
    if (!write_transition(&w, r.form, c->params[2], c->params[3], json_is_object(values) ? values : NULL,
                          json_string_value(json_object_get(body, "comment")), &out)) {
        rec_write_failed(c, &out);
        return;
    }
    if (out.approval)   /* it waits for the approvers */
        ctx_json(c, 202, json_pack("{s:O}", "approval", out.approval));
    else
        rec_respond(c, &r, 200, out.id, out.version);
    write_result_free(&out);
}

void records_approval(void *cp)
{
    ctx *c = cp;
    rec_req r;
    long long im;
    if (!rec_target(c, &r, &im))
        return;
    json_t *body = ctx_body_object(c);
    if (!body)
        return;
    static const char *const keys[] = {"decision", "comment", NULL};
    if (!body_keys(c, body, keys, "a decision takes decision and comment"))
        return;
    const char *d = json_string_value(json_object_get(body, "decision"));
    if (!d || (strcmp(d, "approve") && strcmp(d, "reject")))
        return body_problem(c, "/decision", "decision is \"approve\" or \"reject\"");
    write_ctx w = rec_write_ctx(c, &r);
    write_result out;
    if (!write_decide(&w, r.form, c->params[2], d, json_string_value(json_object_get(body, "comment")), &out)) {
        rec_write_failed(c, &out);
        return;
    }
    json_t *rec = rec_read(c, &r, out.id, -1);
    if (rec)
        ctx_json(c, 200, json_pack("{s:O, s:o}", "approval", out.approval, "record", rec));
    write_result_free(&out);
}
