/* log.h - one JSON object per line on stderr.
 *
 * Every line has "time" (RFC 3339, UTC, milliseconds), "level" and "msg";
 * callers add fields. Lines below the level set by LOOM_LOG_LEVEL
 * (debug, info, warn, error; default info) are dropped. */
#ifndef LOOM_LOG_H
#define LOOM_LOG_H

#include <jansson.h>
#include <stdbool.h>

#include "core/buf.h"

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* Reads LOOM_LOG_LEVEL; call once at start. */
void log_init(void);
bool log_enabled(log_level lv);
/* Writes one line. fields (may be NULL) is stolen. */
void log_json(log_level lv, const char *msg, json_t *fields);
/* Convenience: a line with a printf-formatted message and no other fields. */
void log_msg(log_level lv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends s as a JSON string literal, quotes included, to b. */
void log_append_json_string(buf *b, const char *s);
/* Writes the complete lines in b to stderr in one write and empties b (for
 * callers that batch lines, such as the request log of the loop thread). */
void log_flush(buf *b);

/* Formats the current UTC time as 2026-11-22T09:30:00.123Z into out[64]. */
void log_time_now(char out[64]);

#endif
