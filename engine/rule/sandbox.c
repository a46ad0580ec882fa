/* sandbox.c - see sandbox.h.
 *
 * Construction of the one Lua state:
 * - the standard libraries are opened into the state's own globals, which no
 *   run ever sees; string.dump is removed; string.rep and the pattern
 *   functions are wrapped with size caps; the string metatable is protected;
 * - "base" is a table of the allowed functions and of read-only proxies of
 *   string, table, math, utf8 (empty tables whose __index is the library and
 *   whose __newindex fails; rawset refuses them);
 * - every run's _ENV is a new table whose protected metatable reads through
 *   to base, so a run's globals die with it and base cannot be reached.
 * Budgets: a count hook every HOOK_EVERY instructions; once over budget it
 * fires on every instruction and raises again, and pcall/xpcall re-raise, so
 * a script cannot swallow it. The allocator refuses memory past the run's
 * budget; a memory error is likewise not catchable. setmetatable refuses
 * __gc, so no code runs outside a run's budget. */
#include "rule/sandbox.h"

#include <ctype.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"

#define HOOK_EVERY 1000
#define REP_MAX (1u << 20)      /* string.rep result, bytes */
#define PATTERN_MAX 200         /* pattern length */
#define CONVERT_DEPTH 32

struct sandbox {
    lua_State *L;
    sandbox_limits lim;
    size_t used, run_base;
    bool in_run, tripped, mem_hit, rejected;
    long count;
    int nchunks;
    char **names;              /* per chunk id: the names it reads from its _ENV, or NULL: any */
    int names_cap;
    char now[24], today[12];   /* "" = the system clock */
    char reject_msg[256], reject_field[64];
};

static char limit_sentinel;     /* the error value of a budget overrun */
static char protected_key;      /* registry: set of read-only tables */
static char base_key;           /* registry: the shared base */
static char env_mt_key;         /* registry: metatable of every run's _ENV */
static char chunks_key;         /* registry: id -> function */
static char ids_key;            /* registry: cache key -> id */

static sandbox *sb_of(lua_State *L)
{
    return *(sandbox **)lua_getextraspace(L);
}

/* ---- budgets ---- */

static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    sandbox *sb = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        sb->used -= old;
        free(ptr);
        return NULL;
    }
    if (sb->in_run && nsize > old && sb->used + (nsize - old) > sb->run_base + sb->lim.memory) {
        sb->mem_hit = true;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p)
        sb->used = sb->used - old + nsize;
    return p;
}

static int raise_limit(lua_State *L)
{
    lua_pushlightuserdata(L, &limit_sentinel);
    return lua_error(L);
}

static void sb_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    sandbox *sb = sb_of(L);
    sb->count += sb->tripped ? 1 : HOOK_EVERY;
    if (sb->tripped || sb->count > sb->lim.instructions) {
        if (!sb->tripped) {
            sb->tripped = true;
            lua_sethook(L, sb_hook, LUA_MASKCOUNT, 1);   /* from now on, every instruction raises */
        }
        raise_limit(L);
    }
}

/* True when the run must end whatever the script does. */
static bool fatal(sandbox *sb)
{
    return sb->tripped || sb->mem_hit || sb->rejected;
}

/* ---- guarded functions ---- */

static int sb_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    if (status != LUA_OK) {
        if (fatal(sb_of(L)))
            return raise_limit(L);
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    return lua_gettop(L);
}

static int sb_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);   /* f, msgh, true, f, args... */
    int status = lua_pcall(L, n - 2, LUA_MULTRET, 2);
    if (status != LUA_OK) {
        if (fatal(sb_of(L)))
            return raise_limit(L);
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - 2;
}

static bool is_protected(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &protected_key);
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    bool p = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return p;
}

static int sb_rawset(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    if (is_protected(L, 1))
        return luaL_error(L, "attempt to modify a read-only table");
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

static int sb_setmetatable(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_type(L, 2) == LUA_TTABLE && lua_getfield(L, 2, "__gc") != LUA_TNIL)
        return luaL_error(L, "__gc metamethods are not allowed");
    lua_settop(L, 2);
    lua_getglobal(L, "setmetatable");   /* the state's own globals: never seen by a run */
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

static int read_only(lua_State *L)
{
    return luaL_error(L, "attempt to modify a read-only table");
}

static int sb_rep(lua_State *L)
{
    size_t len, seplen = 0;
    luaL_checklstring(L, 1, &len);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &seplen);
    if (n > 0 && (double)n * (double)(len + seplen) > REP_MAX)
        return luaL_error(L, "string.rep result is larger than %d bytes", (int)REP_MAX);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* find, match, gmatch, gsub: a pattern is backtracking C code that no
 * instruction hook interrupts, so the subject a pattern may run over shrinks
 * with the number of its unbounded repetitions. */
static int sb_pattern(lua_State *L)
{
    size_t sl, pl;
    luaL_checklstring(L, 1, &sl);
    const char *p = luaL_checklstring(L, 2, &pl);
    bool plain = lua_toboolean(L, 4) && lua_tointeger(L, lua_upvalueindex(2)) == 1;   /* find(s, p, init, true) */
    if (!plain) {
        if (pl > PATTERN_MAX)
            return luaL_error(L, "pattern is longer than %d characters", PATTERN_MAX);
        int q = 0;
        for (size_t i = 0; i < pl; i++) {
            if (p[i] == '%')
                i++;
            else if (p[i] == '*' || p[i] == '+' || p[i] == '-')
                q++;
        }
        size_t max = q <= 1 ? 100000 : q == 2 ? 3000 : 200;
        if (sl > max)
            return luaL_error(L, "subject of %d characters is too long for a pattern with %d repetitions", (int)sl, q);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* ---- helpers ---- */

static int sb_reject(lua_State *L)
{
    sandbox *sb = sb_of(L);
    snprintf(sb->reject_msg, sizeof sb->reject_msg, "%s", luaL_optstring(L, 1, "rejected"));
    snprintf(sb->reject_field, sizeof sb->reject_field, "%s", luaL_optstring(L, 2, ""));
    sb->rejected = true;
    return raise_limit(L);   /* the same uncatchable exit as a budget */
}

static void clock_now(sandbox *sb, char out[24], char today[12])
{
    if (sb->now[0]) {
        snprintf(out, 24, "%s", sb->now);
        snprintf(today, 12, "%s", sb->today[0] ? sb->today : sb->now);
        today[10] = '\0';
        return;
    }
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 24, "%Y-%m-%dT%H:%M:%SZ", &tm);
    strftime(today, 12, "%Y-%m-%d", &tm);
}

static int sb_now(lua_State *L)
{
    char now[24], today[12];
    clock_now(sb_of(L), now, today);
    lua_pushstring(L, now);
    return 1;
}

static int sb_today(lua_State *L)
{
    char now[24], today[12];
    clock_now(sb_of(L), now, today);
    lua_pushstring(L, today);
    return 1;
}

/* Parses "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SSZ" into UTC seconds; *has_time
 * tells which. */
static bool parse_when(const char *s, time_t *out, bool *has_time)
{
    struct tm tm = {0};
    int y, mo, d, h = 0, mi = 0, sec = 0;
    if (!s || sscanf(s, "%4d-%2d-%2d", &y, &mo, &d) != 3 || strlen(s) < 10)
        return false;
    *has_time = strlen(s) > 10;
    if (*has_time && sscanf(s + 11, "%2d:%2d:%2d", &h, &mi, &sec) != 3)
        return false;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = timegm(&tm);
    return true;
}

static time_t check_when(lua_State *L, int arg, bool *has_time)
{
    time_t t = 0;
    if (!parse_when(luaL_checkstring(L, arg), &t, has_time))
        luaL_argerror(L, arg, "a date YYYY-MM-DD or a datetime YYYY-MM-DDTHH:MM:SSZ");
    return t;
}

static int sb_date_add(lua_State *L)
{
    bool has_time;
    time_t t = check_when(L, 1, &has_time);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *unit = luaL_optstring(L, 3, "days");
    struct tm tm;
    gmtime_r(&t, &tm);
    if (!strncmp(unit, "day", 3) || !strcmp(unit, "d"))
        tm.tm_mday += (int)n;
    else if (!strncmp(unit, "week", 4) || !strcmp(unit, "w"))
        tm.tm_mday += 7 * (int)n;
    else if (!strncmp(unit, "month", 5)) {
        int mday = tm.tm_mday;
        tm.tm_mday = 1;
        tm.tm_mon += (int)n;
        time_t first = timegm(&tm);   /* clamp 31 Jan + 1 month to 28/29 Feb */
        gmtime_r(&first, &tm);
        static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int y = tm.tm_year + 1900, dim = days[tm.tm_mon] + (tm.tm_mon == 1 && ((y % 4 == 0 && y % 100) || y % 400 == 0));
        tm.tm_mday = mday < dim ? mday : dim;
    } else if (!strncmp(unit, "year", 4)) {
        tm.tm_year += (int)n;
        if (tm.tm_mon == 1 && tm.tm_mday == 29) {
            int y = tm.tm_year + 1900;
            if (!((y % 4 == 0 && y % 100) || y % 400 == 0))
                tm.tm_mday = 28;
        }
    } else if (!strncmp(unit, "hour", 4) || !strcmp(unit, "h"))
        tm.tm_hour += (int)n;
    else if (!strncmp(unit, "minute", 6) || !strcmp(unit, "m"))
        tm.tm_min += (int)n;
    else
        return luaL_argerror(L, 3, "days, weeks, months, years, hours or minutes");
    time_t r = timegm(&tm);
    gmtime_r(&r, &tm);
    char out[24];
    strftime(out, sizeof out, has_time ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d", &tm);
    lua_pushstring(L, out);
    return 1;
}

static int sb_days_between(lua_State *L)
{
    bool ta, tb;
    time_t a = check_when(L, 1, &ta), b = check_when(L, 2, &tb);
    lua_pushinteger(L, (lua_Integer)floor(difftime(b, a) / 86400.0));
    return 1;
}

static int sb_hours_between(lua_State *L)
{
    bool ta, tb;
    time_t a = check_when(L, 1, &ta), b = check_when(L, 2, &tb);
    lua_pushnumber(L, difftime(b, a) / 3600.0);
    return 1;
}

static int sb_sum_rows(lua_State *L)
{
    if (lua_isnil(L, 1)) {   /* no rows */
        lua_pushinteger(L, 0);
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *field = luaL_checkstring(L, 2);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    lua_Number sum = 0;
    bool all_int = true;
    lua_Integer isum = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 1, i) == LUA_TTABLE && lua_getfield(L, -1, field) == LUA_TNUMBER) {
            if (lua_isinteger(L, -1))
                isum += lua_tointeger(L, -1);
            else
                all_int = false;
            sum += lua_tonumber(L, -1);
        }
        lua_settop(L, 2);
    }
    if (all_int)
        lua_pushinteger(L, isum);
    else
        lua_pushnumber(L, sum);
    return 1;
}

/* ---- construction ---- */

static void mark_protected(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &protected_key);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Pushes a read-only proxy of the table at idx. */
static void push_proxy(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    lua_newtable(L);
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, read_only);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    mark_protected(L, -1);
}

static void wrap_string(lua_State *L)
{
    lua_getglobal(L, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_getfield(L, -1, "rep");
    lua_pushcclosure(L, sb_rep, 1);
    lua_setfield(L, -2, "rep");
    const char *pat[] = {"find", "match", "gmatch", "gsub"};
    for (int i = 0; i < 4; i++) {
        lua_getfield(L, -1, pat[i]);
        lua_pushinteger(L, i == 0);   /* find knows "plain" */
        lua_pushcclosure(L, sb_pattern, 2);
        lua_setfield(L, -2, pat[i]);
    }
    /* the metatable of strings: its __index is this table; nobody may reach it */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 3);
}

static void build_base(lua_State *L)
{
    lua_newtable(L);   /* base */
    static const char *const plain[] = {"pairs", "ipairs", "next", "select", "type", "tostring", "tonumber",
                                        "error", "assert", "rawget", "rawequal", "rawlen", "getmetatable", NULL};
    for (const char *const *n = plain; *n; n++) {
        lua_getglobal(L, *n);
        lua_setfield(L, -2, *n);
    }
    lua_pushcfunction(L, sb_pcall);
    lua_setfield(L, -2, "pcall");
    lua_pushcfunction(L, sb_xpcall);
    lua_setfield(L, -2, "xpcall");
    lua_pushcfunction(L, sb_rawset);
    lua_setfield(L, -2, "rawset");
    lua_pushcfunction(L, sb_setmetatable);
    lua_setfield(L, -2, "setmetatable");
    static const luaL_Reg helpers[] = {{"now", sb_now}, {"today", sb_today}, {"date_add", sb_date_add},
                                       {"days_between", sb_days_between}, {"hours_between", sb_hours_between},
                                       {"sum_rows", sb_sum_rows}, {"reject", sb_reject}, {NULL, NULL}};
    luaL_setfuncs(L, helpers, 0);
    static const char *const libs[] = {"string", "table", "math", "utf8", NULL};
    for (const char *const *n = libs; *n; n++) {
        lua_getglobal(L, *n);
        push_proxy(L, -1);
        lua_setfield(L, -3, *n);
        lua_pop(L, 1);
    }
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "unpack");
    lua_setfield(L, -3, "unpack");
    lua_pop(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &base_key);

    lua_newtable(L);   /* the metatable of every run's _ENV */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &base_key);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &env_mt_key);
}

sandbox *sandbox_new(const sandbox_limits *limits)
{
    sandbox *sb = calloc(1, sizeof *sb);
    if (!sb)
        abort();
    sb->lim.instructions = limits && limits->instructions > 0 ? limits->instructions : 1000000;
    sb->lim.memory = limits && limits->memory > 0 ? limits->memory : 16u << 20;
    sb->L = lua_newstate(sb_alloc, sb);
    if (!sb->L)
        abort();
    *(sandbox **)lua_getextraspace(sb->L) = sb;
    luaL_openlibs(sb->L);
    lua_newtable(sb->L);
    lua_rawsetp(sb->L, LUA_REGISTRYINDEX, &protected_key);
    lua_newtable(sb->L);
    lua_rawsetp(sb->L, LUA_REGISTRYINDEX, &chunks_key);
    lua_newtable(sb->L);
    lua_rawsetp(sb->L, LUA_REGISTRYINDEX, &ids_key);
    wrap_string(sb->L);
    build_base(sb->L);
    return sb;
}

static void names_forget(sandbox *sb)
{
    for (int i = 0; i < sb->names_cap; i++) {
        free(sb->names[i]);
        sb->names[i] = NULL;
    }
}

void sandbox_free(sandbox *sb)
{
    if (!sb)
        return;
    lua_close(sb->L);
    names_forget(sb);
    free(sb->names);
    free(sb);
}

void sandbox_set_clock(sandbox *sb, const char *now, const char *today)
{
    snprintf(sb->now, sizeof sb->now, "%s", now ? now : "");
    snprintf(sb->today, sizeof sb->today, "%s", today ? today : "");
}

const char *sandbox_rejected_field(const sandbox *sb)
{
    return sb->reject_field[0] ? sb->reject_field : NULL;
}

int sandbox_cached(const sandbox *sb)
{
    return sb->nchunks;
}

int sandbox_load(lua_State *L, const char *code, size_t len, bool expression)
{
    int top = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (expression)
        luaL_addstring(&b, "return (");
    luaL_addlstring(&b, code, len);
    if (expression)
        luaL_addstring(&b, "\n)");
    luaL_pushresult(&b);
    size_t n;
    const char *text = lua_tolstring(L, -1, &n);
    int st = luaL_loadbufferx(L, text, n, expression ? "=expr" : "=script", "t");
    lua_remove(L, top + 1);   /* the source text */
    return st;
}

static bool name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

/* The level of a long bracket at s ("[[" 0, "[==[" 2), or -1 when s does not
 * open one. */
static int long_bracket(const char *s, const char *end)
{
    if (s >= end || *s != '[')
        return -1;
    int level = 0;
    for (s++; s < end && *s == '='; s++)
        level++;
    return s < end && *s == '[' ? level : -1;
}

/* Past the long bracket of level opened at s (its end, or end). */
static const char *skip_long(const char *s, const char *end, int level)
{
    for (s += level + 2; s < end; s++) {
        if (*s != ']')
            continue;
        const char *e = s + 1;
        int n = 0;
        while (e < end && *e == '=')
            e++, n++;
        if (n == level && e < end && *e == ']')
            return e + 1;
    }
    return end;
}

json_t *sandbox_names(const char *code, size_t len)
{
    json_t *names = json_object();
    const char *s = code, *end = code + len;
    int prev_dots = 0;   /* the last token was "." or ":" (1), or anything else ("..", "...", "::": 0) */
    while (s < end) {
        char c = *s;
        if (c == '-' && s + 1 < end && s[1] == '-') {   /* a comment */
            int level = long_bracket(s + 2, end);
            if (level >= 0) {
                s = skip_long(s + 2, end, level);
            } else {
                while (s < end && *s != '\n')
                    s++;
            }
        } else if (c == '[' && long_bracket(s, end) >= 0) {
            s = skip_long(s, end, long_bracket(s, end));
            prev_dots = 0;
        } else if (c == '"' || c == '\'') {
            for (s++; s < end && *s != c; s++)
                if (*s == '\\' && s + 1 < end)
                    s++;
            if (s < end)   /* past the closing quote */
                s++;
            prev_dots = 0;
        } else if (c >= '0' && c <= '9') {   /* a numeral, read as Lua's lexer reads one */
            const char *expo = "Ee";
            if (c == '0' && s + 1 < end && (s[1] == 'x' || s[1] == 'X')) {
                expo = "Pp";
                s += 2;
            }
            for (;;) {
                if (s < end && (*s == expo[0] || *s == expo[1])) {
                    s++;
                    if (s < end && (*s == '+' || *s == '-'))
                        s++;
                } else if (s < end && (isxdigit((unsigned char)*s) || *s == '.')) {
                    s++;
                } else {
                    break;
                }
            }
            prev_dots = 0;   /* a name glued to a numeral is a malformed number: no such chunk compiles */
        } else if (name_start(c)) {
            const char *start = s;
            while (s < end && name_char(*s))
                s++;
            const char *next = s;
            while (next < end && (*next == ' ' || *next == '\t' || *next == '\n' || *next == '\r'))
                next++;
            bool assigned = next < end && *next == '=' && (next + 1 >= end || next[1] != '=');
            if (prev_dots != 1 && !assigned) {   /* "name =": a table's key, or a variable written */
                char *name = strndup(start, (size_t)(s - start));
                if (!name)
                    abort();
                json_object_set_new(names, name, json_true());
                free(name);
            }
            prev_dots = 0;
        } else if (c == '.' || c == ':') {
            int n = 0;
            while (s < end && *s == c)
                s++, n++;
            prev_dots = n == 1 ? 1 : 0;
        } else {
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
                prev_dots = 0;
            s++;
        }
    }
    return names;
}

/* The variables a run of code gets: its names packed as "a\0b\0\0", or
 * NULL (all of them) when it names _ENV, which reaches any name. */
static char *env_names(const char *code, size_t len)
{
    json_t *names = sandbox_names(code, len);
    buf out = {0};
    const char *k;
    json_t *v;
    json_object_foreach(names, k, v) buf_append(&out, k, strlen(k) + 1);
    buf_append(&out, "", 1);
    bool all = json_object_get(names, "_ENV") != NULL;
    json_decref(names);
    if (all)
        buf_free(&out);
    return all ? NULL : out.data;
}

int sandbox_compile(sandbox *sb, const char *key, const char *code, size_t len, bool expression, char *err,
                    size_t errlen)
{
    lua_State *L = sb->L;
    lua_settop(L, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ids_key);
    if (lua_getfield(L, 1, key) == LUA_TNUMBER) {
        int id = (int)lua_tointeger(L, -1);
        lua_settop(L, 0);
        return id;
    }
    lua_pop(L, 1);
    if (sb->nchunks >= SANDBOX_MAX_CHUNKS) {   /* drop the cache whole: simple, and rare */
        lua_newtable(L);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &chunks_key);
        lua_newtable(L);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &ids_key);
        lua_settop(L, 0);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &ids_key);
        sb->nchunks = 0;
        names_forget(sb);
    }
    if (sandbox_load(L, code, len, expression) != LUA_OK) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_settop(L, 0);
        return -1;
    }
    int id = ++sb->nchunks;
    if (id >= sb->names_cap) {
        int cap = sb->names_cap ? 2 * sb->names_cap : 64;
        while (cap <= id)
            cap *= 2;
        char **names = realloc(sb->names, sizeof *names * (size_t)cap);
        if (!names)
            abort();
        memset(names + sb->names_cap, 0, sizeof *names * (size_t)(cap - sb->names_cap));
        sb->names = names;
        sb->names_cap = cap;
    }
    sb->names[id] = env_names(code, len);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &chunks_key);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, id);
    lua_pop(L, 1);
    lua_pushinteger(L, id);
    lua_setfield(L, 1, key);
    lua_settop(L, 0);
    return id;
}

/* ---- values ---- */

static void push_json(lua_State *L, json_t *v, int depth)
{
    if (depth > CONVERT_DEPTH) {
        lua_pushnil(L);
        return;
    }
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        break;
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        lua_pushboolean(L, json_is_true(v));
        break;
    case JSON_ARRAY: {
        lua_createtable(L, (int)json_array_size(v), 0);
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            push_json(L, x, depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(v));
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            push_json(L, x, depth + 1);
            lua_setfield(L, -2, k);
        }
        break;
    }
    default:
        lua_pushnil(L);
    }
}

static json_t *to_json(lua_State *L, int idx, int depth)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return json_integer((json_int_t)lua_tointeger(L, idx));
        return isfinite(lua_tonumber(L, idx)) ? json_real(lua_tonumber(L, idx)) : json_null();
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        json_t *j = json_stringn(s, n);
        return j ? j : json_null();   /* not UTF-8 */
    }
    case LUA_TTABLE: {
        if (depth > CONVERT_DEPTH)
            return json_null();
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
        bool array = true;
        lua_pushnil(L);
        lua_Integer count = 0;
        while (lua_next(L, idx)) {
            count++;
            if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 || lua_tointeger(L, -2) > n)
                array = false;
            lua_pop(L, 1);
        }
        if (array && count == n && n > 0) {
            json_t *a = json_array();
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, i);
                json_array_append_new(a, to_json(L, -1, depth + 1));
                lua_pop(L, 1);
            }
            return a;
        }
        json_t *o = json_object();
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pushvalue(L, -2);
            const char *k = lua_tostring(L, -1);   /* on the copy: lua_next keeps its key */
            if (k)
                json_object_set_new(o, k, to_json(L, -2, depth + 1));
            lua_pop(L, 2);
        }
        return o;
    }
    default:
        return json_null();
    }
}

/* ---- runs ---- */

loom_code sandbox_run(sandbox *sb, int chunk, json_t *vars, json_t **out, char *err, size_t errlen)
{
    lua_State *L = sb->L;
    *out = NULL;
    lua_settop(L, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &chunks_key);
    if (lua_rawgeti(L, -1, chunk) != LUA_TFUNCTION) {
        lua_settop(L, 0);
        snprintf(err, errlen, "no such chunk");
        return LOOM_INTERNAL;
    }
    lua_remove(L, 1);
    /* a fresh _ENV: the variables the chunk names (all when it names _ENV), then everything else read
     * through base */
    const char *names = chunk < sb->names_cap ? sb->names[chunk] : NULL;
    if (names) {
        lua_createtable(L, 0, 4);
        for (const char *k = names; *k; k += strlen(k) + 1) {
            json_t *x = json_object_get(vars, k);
            if (x) {
                push_json(L, x, 0);
                lua_setfield(L, -2, k);
            }
        }
    } else {
        lua_createtable(L, 0, vars ? (int)json_object_size(vars) : 0);
        const char *k;
        json_t *x;
        json_object_foreach(vars, k, x)
        {
            push_json(L, x, 0);
            lua_setfield(L, -2, k);
        }
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &env_mt_key);
    lua_setmetatable(L, -2);
    lua_setupvalue(L, 1, 1);

    sb->count = 0;
    sb->tripped = sb->mem_hit = sb->rejected = false;
    sb->reject_msg[0] = sb->reject_field[0] = '\0';
    sb->run_base = sb->used;
    sb->in_run = true;
    lua_sethook(L, sb_hook, LUA_MASKCOUNT, HOOK_EVERY);
    int status = lua_pcall(L, 0, 1, 0);
    lua_sethook(L, NULL, 0, 0);
    sb->in_run = false;

    loom_code code = LOOM_OK;
    if (sb->rejected) {
        snprintf(err, errlen, "%s", sb->reject_msg);
        code = LOOM_RULE_REJECTED;
    } else if (fatal(sb)) {
        snprintf(err, errlen, "%s", sb->tripped ? "the rule ran past its instruction budget"
                                                : "the rule ran past its memory budget");
        code = LOOM_RULE_LIMIT;
    } else if (status != LUA_OK) {
        const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error (not a string)";
        snprintf(err, errlen, "%s", msg);
        code = LOOM_RULE_ERROR;
    } else {
        *out = to_json(L, -1, 0);
    }
    lua_settop(L, 0);   /* a run's garbage goes with Lua's incremental collector, as later runs allocate */
    return code;
}
