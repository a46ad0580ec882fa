/* bundle.c - JSON with limits, and the directory layout of a bundle. */
#include "model/bundle.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Deepest nesting of arrays and objects in text, outside strings. */
static int json_depth(const char *s, size_t n)
{
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return max;
}

json_t *bundle_parse(const char *text, size_t len, char *err, size_t errlen)
{
    if (len > BUNDLE_MAX_BYTES) {
        snprintf(err, errlen, "larger than %u bytes", BUNDLE_MAX_BYTES);
        return NULL;
    }
    if (json_depth(text, len) > BUNDLE_MAX_DEPTH) {
        snprintf(err, errlen, "nested deeper than %d levels", BUNDLE_MAX_DEPTH);
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!v)
        snprintf(err, errlen, "line %d, column %d: %s", je.line, je.column, je.text);
    return v;
}

/* Reads a whole file (NUL-terminated, malloc'd) or returns NULL. */
static char *read_file(const char *path, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size > (off_t)BUNDLE_MAX_BYTES) {
        fclose(f);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = '\0';
    *out_len = n;
    return buf;
}

static json_t *load_json_file(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *text = read_file(path, &len);
    if (!text) {
        snprintf(err, errlen, "%s: cannot read the file", path);
        return NULL;
    }
    char msg[512];
    json_t *v = bundle_parse(text, len, msg, sizeof msg);
    free(text);
    if (!v)
        snprintf(err, errlen, "%s: %s", path, msg);
    return v;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the regular files in dir ending in ext; NULL-terminated,
 * malloc'd (free with free_names). A missing directory is an empty list. */
static char **list_files(const char *dir, const char *ext)
{
    size_t n = 0, cap = 16;
    char **names = malloc(cap * sizeof *names);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name), el = strlen(ext);
        if (e->d_name[0] == '.' || len <= el || strcmp(e->d_name + len - el, ext) != 0)
            continue;
        if (n + 1 >= cap)
            names = realloc(names, (cap *= 2) * sizeof *names);
        names[n++] = strdup(e->d_name);
    }
    if (d)
        closedir(d);
    qsort(names, n, sizeof *names, cmp_names);
    names[n] = NULL;
    return names;
}

static void free_names(char **names)
{
    for (char **p = names; *p; p++)
        free(*p);
    free(names);
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Loads the .json files of dir/<kind> into the array bundle[kind]; no folder,
 * no key (nothing is filled in that the bundle did not have). */
static bool load_kind(json_t *bundle, const char *dir, const char *kind, char *err, size_t errlen)
{
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/%s", dir, kind);
    if (!is_dir(sub))
        return true;
    char **names = list_files(sub, ".json");
    json_t *arr = json_array();
    bool ok = true;
    for (char **p = names; *p && ok; p++) {
        char file[4352];
        snprintf(file, sizeof file, "%s/%s", sub, *p);
        json_t *item = load_json_file(file, err, errlen);
        if (!item) {
            ok = false;
            break;
        }
        /* a rule's script file is read next to it */
        const char *sf = json_string_value(json_object_get(item, "script_file"));
        if (strcmp(kind, "rules") == 0 && sf && !strstr(sf, "..") && sf[0] != '/') {
            char spath[4352];
            snprintf(spath, sizeof spath, "%s/%s", sub, sf);
            size_t len;
            char *script = read_file(spath, &len);
            if (!script) {
                snprintf(err, errlen, "%s: cannot read script_file %s", file, sf);
                json_decref(item);
                ok = false;
                break;
            }
            json_object_set_new(item, "script", json_stringn(script, len));
            free(script);
        }
        json_array_append_new(arr, item);
    }
    free_names(names);
    if (ok)
        json_object_set_new(bundle, kind, arr);
    else
        json_decref(arr);
    return ok;
}

static bool load_data(json_t *bundle, const char *dir, char *err, size_t errlen)
{
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/data", dir);
    if (!is_dir(sub))
        return true;
    json_t *data = json_object();
    const char *exts[] = {".json", ".csv"};
    for (int k = 0; k < 2; k++) {
        char **names = list_files(sub, exts[k]);
        for (char **p = names; *p; p++) {
            char file[4352], form[256];
            snprintf(file, sizeof file, "%s/%s", sub, *p);
            snprintf(form, sizeof form, "%.*s", (int)(strlen(*p) - strlen(exts[k])), *p);
            json_t *v;
            if (k == 0) {
                v = load_json_file(file, err, errlen);
            } else {
                size_t len;
                char *text = read_file(file, &len);
                v = text ? json_stringn(text, len) : NULL;   /* CSV stays text until it is loaded */
                free(text);
                if (!v)
                    snprintf(err, errlen, "%s: cannot read the file", file);
            }
            if (!v || json_object_get(data, form)) {
                if (v)
                    snprintf(err, errlen, "%s: data for %s given twice", file, form);
                json_decref(v);
                free_names(names);
                json_decref(data);
                return false;
            }
            json_object_set_new(data, form, v);
        }
        free_names(names);
    }
    json_object_set_new(bundle, "data", data);
    return true;
}

json_t *bundle_load(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: no such file or directory", path);
        return NULL;
    }
    if (!S_ISDIR(st.st_mode))
        return load_json_file(path, err, errlen);
    char app[4096];
    snprintf(app, sizeof app, "%s/app.json", path);
    json_t *bundle = load_json_file(app, err, errlen);
    if (!bundle)
        return NULL;
    if (!json_is_object(bundle)) {
        snprintf(err, errlen, "%s: must be a JSON object", app);
        json_decref(bundle);
        return NULL;
    }
    const char *kinds[] = {"forms", "flows", "rules", "reports", "dashboards"};
    for (int i = 0; i < 5; i++) {
        if (json_object_get(bundle, kinds[i])) {
            snprintf(err, errlen, "%s: \"%s\" belongs in %s/%s/", app, kinds[i], path, kinds[i]);
            json_decref(bundle);
            return NULL;
        }
        if (!load_kind(bundle, path, kinds[i], err, errlen)) {
            json_decref(bundle);
            return NULL;
        }
    }
    if (!load_data(bundle, path, err, errlen)) {
        json_decref(bundle);
        return NULL;
    }
    return bundle;
}

/* ---- writing the directory layout ---- */

static bool write_text(const char *path, const char *text, size_t len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
        snprintf(err, errlen, "%s: cannot write the file", path);
        return false;
    }
    return true;
}

static bool write_json(const char *path, json_t *v, char *err, size_t errlen)
{
    char *text = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (!text) {
        snprintf(err, errlen, "%s: cannot encode", path);
        return false;
    }
    size_t n = strlen(text);
    text[n] = '\n';   /* replaces the NUL; the length below includes it */
    bool ok = write_text(path, text, n + 1, err, errlen);
    free(text);
    return ok;
}

/* A name that is safe as a file name inside its folder. */
static bool safe_name(const char *s)
{
    return s && *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..") && strlen(s) < 200;
}

bool bundle_write_dir(json_t *bundle, const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create the directory", dir);
        return false;
    }
    DIR *d = opendir(dir);
    struct dirent *e;
    bool empty = true;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = false;
    if (d)
        closedir(d);
    if (!empty) {
        snprintf(err, errlen, "%s: the directory is not empty", dir);
        return false;
    }
    /* app.json: everything that is not one file per item */
    json_t *top = json_object();
    const char *key;
    json_t *val;
    const char *kinds[] = {"forms", "flows", "rules", "reports", "dashboards"};
    json_object_foreach(bundle, key, val)
    {
        bool split = !strcmp(key, "data");
        for (int i = 0; i < 5; i++)
            split = split || !strcmp(key, kinds[i]);
        if (!split)
            json_object_set(top, key, val);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/app.json", dir);
    bool ok = write_json(path, top, err, errlen);
    json_decref(top);
    for (int k = 0; k < 5 && ok; k++) {
        json_t *items = json_object_get(bundle, kinds[k]);
        if (!items)
            continue;   /* an empty list still gets its folder: loading gives it back */
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", dir, kinds[k]);
        mkdir(sub, 0755);
        /* files load in name order: plain <id>.json when the ids are in that
         * order already (as in any bundle read from a directory), numbered
         * otherwise, so that the order survives */
        bool sorted = true;
        size_t i;
        json_t *item;
        for (i = 1; i < json_array_size(items) && sorted; i++) {
            const char *a = json_string_value(json_object_get(json_array_get(items, i - 1), "id"));
            const char *b = json_string_value(json_object_get(json_array_get(items, i), "id"));
            sorted = a && b && strcmp(a, b) < 0;
        }
        json_array_foreach(items, i, item)
        {
            const char *id = json_string_value(json_object_get(item, "id"));
            if (!safe_name(id)) {
                snprintf(err, errlen, "%s/%zu: an item without a usable id", kinds[k], i);
                ok = false;
                break;
            }
            if (sorted)
                snprintf(path, sizeof path, "%s/%s.json", sub, id);
            else
                snprintf(path, sizeof path, "%s/%04zu_%s.json", sub, i, id);
            json_t *copy = json_copy(item);
            const char *sf = json_string_value(json_object_get(item, "script_file"));
            json_t *script = json_object_get(item, "script");
            if (k == 2 && sf && json_is_string(script)) {
                if (!safe_name(sf)) {
                    snprintf(err, errlen, "rules/%s: script_file is not a plain file name", id);
                    json_decref(copy);
                    ok = false;
                    break;
                }
                char spath[4352];
                snprintf(spath, sizeof spath, "%s/%s", sub, sf);
                ok = write_text(spath, json_string_value(script), json_string_length(script), err, errlen);
                json_object_del(copy, "script");
            }
            ok = ok && write_json(path, copy, err, errlen);
            json_decref(copy);
            if (!ok)
                break;
        }
    }
    json_t *data = json_object_get(bundle, "data");
    if (ok && data) {
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/data", dir);
        mkdir(sub, 0755);
        const char *form;
        json_t *rows;
        json_object_foreach(data, form, rows)
        {
            if (!safe_name(form)) {
                snprintf(err, errlen, "data/%s: not a usable form id", form);
                ok = false;
                break;
            }
            snprintf(path, sizeof path, "%s/%s.%s", sub, form, json_is_string(rows) ? "csv" : "json");
            ok = json_is_string(rows) ? write_text(path, json_string_value(rows), json_string_length(rows), err, errlen)
                                      : write_json(path, rows, err, errlen);
            if (!ok)
                break;
        }
    }
    return ok;
}

json_t *bundle_item(json_t *list, const char *id)
{
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x)
    {
        const char *xid = json_string_value(json_object_get(x, "id"));
        if (xid && !strcmp(xid, id))
            return x;
    }
    return NULL;
}

json_t *bundle_flow(json_t *bundle, const char *form)
{
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(bundle, "flows"), i, x)
    {
        const char *f = json_string_value(json_object_get(x, "form"));
        if (f && !strcmp(f, form))
            return x;
    }
    return NULL;
}
