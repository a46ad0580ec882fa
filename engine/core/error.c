/* error.c - lookups into the error table of error.h. */
#include "error.h"

#include <string.h>

static const struct {
    const char *name;
    int status;
    const char *title;
} codes[] = {
#define LOOM_ERR_ROW(name, str, status, title) {str, status, title},
    LOOM_ERRORS(LOOM_ERR_ROW)
#undef LOOM_ERR_ROW
};

const char *loom_code_name(loom_code c)
{
    return c < LOOM_CODE_COUNT ? codes[c].name : "internal";
}

int loom_code_status(loom_code c)
{
    return c < LOOM_CODE_COUNT ? codes[c].status : 500;
}

const char *loom_code_title(loom_code c)
{
    return c < LOOM_CODE_COUNT ? codes[c].title : "internal error";
}

loom_code loom_code_lookup(const char *s)
{
    for (int i = 0; i < LOOM_CODE_COUNT; i++)
        if (strcmp(codes[i].name, s) == 0)
            return (loom_code)i;
    return LOOM_CODE_COUNT;
}

loom_code loom_code_from_sqlstate(const char *st)
{
    if (!st || strlen(st) != 5)
        return LOOM_UNAVAILABLE;             /* no SQLSTATE: the connection broke */
    if (strcmp(st, "23505") == 0)
        return LOOM_NOT_UNIQUE;              /* unique_violation */
    if (strcmp(st, "23503") == 0 || strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 ||
        strcmp(st, "55P03") == 0)
        return LOOM_CONFLICT;                /* foreign key, serialization, deadlock, lock timeout */
    if (strcmp(st, "23502") == 0 || strcmp(st, "23514") == 0 || strncmp(st, "22", 2) == 0)
        return LOOM_VALIDATION_FAILED;       /* not null, check, data exception */
    if ((strncmp(st, "08", 2) == 0 && strcmp(st, "08P01") != 0) || strcmp(st, "57014") == 0 || strcmp(st, "57P01") == 0 ||
        strcmp(st, "57P02") == 0 || strcmp(st, "57P03") == 0 || strcmp(st, "53300") == 0)
        return LOOM_UNAVAILABLE;             /* connection exception (not a protocol violation: ours), a statement
                                                timeout, shutdown, too many clients */
    return LOOM_INTERNAL;
}

const char *loom_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}
