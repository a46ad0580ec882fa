/* log.c - JSON lines on stderr, each written with a single write(2) so that
 * lines from several threads never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static log_level min_level = LOG_INFO;
static const char *level_names[] = {"debug", "info", "warn", "error"};

void log_init(void)
{
    const char *s = getenv("LOOM_LOG_LEVEL");
    if (!s)
        return;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            min_level = (log_level)i;
}

bool log_enabled(log_level lv)
{
    return lv >= min_level;
}

void log_time_now(char out[64])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
}

void log_json(log_level lv, const char *msg, json_t *fields)
{
    if (!log_enabled(lv)) {
        json_decref(fields);
        return;
    }
    char now[64];
    log_time_now(now);
    json_t *line = json_pack("{s:s, s:s, s:s}", "time", now, "level", level_names[lv], "msg", msg);
    if (fields)
        json_object_update(line, fields);
    json_decref(fields);
    char *s = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (!s)
        return;
    size_t n = strlen(s);
    s[n] = '\n';   /* replaces the terminator; write() takes the length */
    ssize_t w = write(STDERR_FILENO, s, n + 1);
    (void)w;
    free(s);
}

void log_msg(log_level lv, const char *fmt, ...)
{
    if (!log_enabled(lv))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_json(lv, msg, NULL);
}

void log_append_json_string(buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    buf_append(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        buf_append(b, run, (size_t)(s - run));
        char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
        if (ch == '"' || ch == '\\') {
            esc[1] = (char)ch;
            buf_append(b, esc, 2);
        } else {
            buf_append(b, esc, 6);
        }
        run = s + 1;
    }
    buf_append(b, run, (size_t)(s - run));
    buf_append(b, "\"", 1);
}

void log_flush(buf *b)
{
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(STDERR_FILENO, b->data + off, b->len - off);
        if (w <= 0)
            break;   /* nowhere to log to: drop rather than block the loop */
        off += (size_t)w;
    }
    buf_reset(b);
}
