/* error.h - the one table of error codes.
 *
 * Every failure that reaches a client is one of these codes. The table gives
 * each its stable string (the "code" of a problem+json body, and the tail of
 * its "type" URN), its HTTP status and its default title. SQLSTATEs map onto
 * codes in loom_code_from_sqlstate() and nowhere else. */
#ifndef LOOM_ERROR_H
#define LOOM_ERROR_H

#include <stddef.h>

/*        enum name            string                 status title */
#define LOOM_ERRORS(X)                                                                   \
    X(OK,                   "ok",                   200, "ok")                           \
    X(BAD_REQUEST,          "bad_request",          400, "bad request")                  \
    X(BAD_JSON,             "bad_json",             400, "body is not valid JSON")       \
    X(UNKNOWN_FIELD,        "unknown_field",        400, "unknown field")                \
    X(BAD_FILTER,           "bad_filter",           400, "filter is not valid")          \
    X(UNAUTHENTICATED,      "unauthenticated",      401, "authentication required")      \
    X(FORBIDDEN,            "forbidden",            403, "not allowed")                  \
    X(NOT_FOUND,            "not_found",            404, "not found")                    \
    X(METHOD_NOT_ALLOWED,   "method_not_allowed",   405, "method not allowed")           \
    X(REQUEST_TIMEOUT,      "request_timeout",      408, "request not received in time") \
    X(CONFLICT,             "conflict",             409, "conflict")                     \
    X(NOT_UNIQUE,           "not_unique",           409, "value is not unique")          \
    X(STATE_CHANGED,        "state_changed",        409, "record state has changed")     \
    X(APPROVAL_PENDING,     "approval_pending",     409, "an approval is pending")       \
    X(DESTRUCTIVE_CHANGE,   "destructive_change",   409, "change would lose data")       \
    X(VERSION_MISMATCH,     "version_mismatch",     412, "version does not match")       \
    X(PAYLOAD_TOO_LARGE,    "payload_too_large",    413, "body is too large")            \
    X(UNSUPPORTED_MEDIA,    "unsupported_media_type", 415, "unsupported content type")   \
    X(VALIDATION_FAILED,    "validation_failed",    422, "input is not valid")           \
    X(RULE_REJECTED,        "rule_rejected",        422, "rejected by a rule")           \
    X(RULE_ERROR,           "rule_error",           422, "rule failed")                  \
    X(RULE_LIMIT,           "rule_limit",           422, "rule exceeded a limit")        \
    X(RULE_LOOP,            "rule_loop",            422, "rules triggered each other too deeply") \
    X(FORMULA_ERROR,        "formula_error",        422, "formula failed")               \
    X(TRANSITION_NOT_ALLOWED, "transition_not_allowed", 422, "transition not allowed")   \
    X(INVALID_DEFINITION,   "invalid_definition",   422, "definition is not valid")      \
    X(IDEMPOTENCY_MISMATCH, "idempotency_mismatch", 422, "idempotency key reused with another body") \
    X(RATE_LIMITED,         "rate_limited",         429, "too many requests")            \
    X(HEADERS_TOO_LARGE,    "headers_too_large",    431, "request headers are too large") \
    X(INTERNAL,             "internal",             500, "internal error")               \
    X(NOT_IMPLEMENTED,      "not_implemented",      501, "not implemented yet")          \
    X(UNAVAILABLE,          "unavailable",          503, "service unavailable")

typedef enum loom_code {
#define LOOM_ERR_ENUM(name, str, status, title) LOOM_##name,
    LOOM_ERRORS(LOOM_ERR_ENUM)
#undef LOOM_ERR_ENUM
    LOOM_CODE_COUNT
} loom_code;

/* A failure travelling through an out-parameter. message and path are
 * borrowed: they point to static text or to memory of the caller's arena. */
typedef struct loom_err {
    loom_code code;
    const char *message;   /* NULL: the code's title */
    const char *path;      /* JSON Pointer into the input, or NULL */
} loom_err;

const char *loom_code_name(loom_code c);
int loom_code_status(loom_code c);
const char *loom_code_title(loom_code c);
/* Returns the code whose name is s, or LOOM_CODE_COUNT. */
loom_code loom_code_lookup(const char *s);
/* Maps a PostgreSQL SQLSTATE (5 characters; NULL when the connection broke)
 * to the code a client sees. */
loom_code loom_code_from_sqlstate(const char *sqlstate);
/* Reason phrase for an HTTP status. */
const char *loom_http_reason(int status);

#endif
