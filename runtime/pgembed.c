/* pgembed.c - initdb, pg_ctl and the root-to-account switch. */
#include "pgembed.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/secret.h"
#include "store/db.h"

#define PG_PORT "5432"
#define SOCK_NAME_LEN 20 /* "/.s.PGSQL.5432.lock" + NUL */
#define SUN_PATH_MAX 107

static void fail(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

static bool mkdir_p(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return false;
            *p = '/';
        }
    }
    return mkdir(tmp, mode) == 0 || errno == EEXIST;
}

static void drop_to_account(const pgembed *pg)
{
    if (!pg->drop_privs)
        return;
    if (setgroups(0, NULL) != 0 || setgid(pg->gid) != 0 || setuid(pg->uid) != 0)
        _exit(126);
}

/* Runs argv (as the account when root), capturing its output into out.
 * Returns the exit status, or -1 if it could not run. */
static int run(const pgembed *pg, char *const argv[], char *out, size_t outlen)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        drop_to_account(pg);
        if (chdir(pg->drop_privs ? "/" : ".") != 0)
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    char tmp[4096];
    ssize_t r;
    while ((r = read(fds[0], tmp, sizeof tmp)) > 0 || (r < 0 && errno == EINTR)) {
        if (r <= 0)
            continue;
        /* keep the last outlen-1 bytes: the end says what went wrong */
        for (ssize_t i = 0; i < r && outlen > 1; i++) {
            if (used == outlen - 1) {
                memmove(out, out + 1, outlen - 2);
                used--;
            }
            out[used++] = tmp[i];
        }
    }
    if (outlen)
        out[used < outlen ? used : outlen - 1] = '\0';
    close(fds[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Returns the first prefix of path the account cannot traverse, into bad;
 * false when every one is traversable. */
static bool untraversable(const pgembed *pg, const char *path, char *bad, size_t badlen)
{
    if (!pg->drop_privs)
        return false;
    int fds[2];
    if (pipe(fds) != 0)
        return false;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return false;   /* cannot tell: let initdb report what it finds */
    }
    if (pid == 0) {
        close(fds[0]);
        drop_to_account(pg);
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", path);
        for (char *p = tmp + 1;; p++) {
            if (*p == '/' || *p == '\0') {
                char c = *p;
                *p = '\0';
                if (access(tmp, X_OK) != 0) {
                    ssize_t w = write(fds[1], tmp, strlen(tmp));
                    (void)w;
                    _exit(1);
                }
                if (c == '\0')
                    break;
                *p = c;
            }
        }
        _exit(0);
    }
    close(fds[1]);
    ssize_t n = read(fds[0], bad, badlen - 1);
    bad[n > 0 ? n : 0] = '\0';
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 1;
}

static bool find_bindir(pgembed *pg, char *err, size_t errlen)
{
    const char *env = getenv("LOOM_PG_BINDIR");
    if (env) {
        snprintf(pg->bindir, sizeof pg->bindir, "%s", env);
    } else {
        glob_t g;
        if (glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &g) != 0) {
            fail(err, errlen, "no PostgreSQL server found under /usr/lib/postgresql (install postgresql-15, "
                              "or set LOOM_PG_BINDIR)");
            return false;
        }
        /* the highest major version: glob sorts, but "9" > "15" as text */
        const char *best = NULL;
        long bestv = -1;
        for (size_t i = 0; i < g.gl_pathc; i++) {
            long v = strtol(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"), NULL, 10);
            if (v > bestv) {
                bestv = v;
                best = g.gl_pathv[i];
            }
        }
        snprintf(pg->bindir, sizeof pg->bindir, "%.*s", (int)(strlen(best) - strlen("/postgres")), best);
        globfree(&g);
    }
    char probe[PATH_MAX + 16];
    snprintf(probe, sizeof probe, "%s/pg_ctl", pg->bindir);
    if (access(probe, X_OK) != 0) {
        fail(err, errlen, "%s is not executable", probe);
        return false;
    }
    return true;
}

static bool find_account(pgembed *pg, char *err, size_t errlen)
{
    if (geteuid() != 0)
        return true;
    const char *names[] = {getenv("LOOM_PG_USER"), "postgres", "nobody"};
    for (size_t i = 0; i < 3; i++) {
        if (!names[i])
            continue;
        struct passwd *pw = getpwnam(names[i]);
        if (pw && pw->pw_uid != 0) {
            pg->drop_privs = true;
            pg->uid = pw->pw_uid;
            pg->gid = pw->pw_gid;
            snprintf(pg->account, sizeof pg->account, "%s", names[i]);
            return true;
        }
        if (i == 0) {
            fail(err, errlen, "LOOM_PG_USER=%s is not an unprivileged account", names[i]);
            return false;
        }
    }
    fail(err, errlen, "running as root and no unprivileged account (postgres, nobody) to run PostgreSQL");
    return false;
}

static void hash_path(const char *path, char out[17])
{
    char hex[SECRET_HASH_HEX];
    secret_sha256_hex(path, strlen(path), hex);
    memcpy(out, hex, 16);
    out[16] = '\0';
}

/* Creates dir (mode) owned by the account. */
static bool own_dir(const pgembed *pg, const char *dir, mode_t mode, char *err, size_t errlen)
{
    if (!mkdir_p(dir, mode)) {
        fail(err, errlen, "could not create %s: %s", dir, strerror(errno));
        return false;
    }
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fail(err, errlen, "%s is not a directory", dir);
        return false;
    }
    uid_t want = pg->drop_privs ? pg->uid : geteuid();
    if (st.st_uid != want) {
        if (geteuid() != 0 || chown(dir, pg->uid, pg->gid) != 0) {
            fail(err, errlen, "%s belongs to another user", dir);
            return false;
        }
    }
    if ((st.st_mode & 0777) != mode && chmod(dir, mode) != 0) {
        fail(err, errlen, "could not chmod %s: %s", dir, strerror(errno));
        return false;
    }
    return true;
}

bool pgembed_init(pgembed *pg, const char *data_dir, char *err, size_t errlen)
{
    memset(pg, 0, sizeof *pg);
    if (!find_bindir(pg, err, errlen) || !find_account(pg, err, errlen))
        return false;
    if (!mkdir_p(data_dir, 0755) || !realpath(data_dir, pg->data_dir)) {
        fail(err, errlen, "could not create the data directory %s: %s", data_dir, strerror(errno));
        return false;
    }
    char h[17];
    hash_path(pg->data_dir, h);
    char bad[PATH_MAX];
    if (untraversable(pg, pg->data_dir, bad, sizeof bad)) {
        /* the account cannot reach data_dir: keep the cluster where it can */
        snprintf(pg->cluster, sizeof pg->cluster, "/var/lib/loom/clusters/%s/pg", h);
        snprintf(pg->log_path, sizeof pg->log_path, "/var/lib/loom/clusters/%s/pg.log", h);
        snprintf(pg->sock_dir, sizeof pg->sock_dir, "/var/lib/loom/clusters/%s/run", h);
        snprintf(pg->note, sizeof pg->note,
                 "account %s cannot traverse %s; the cluster is kept in %s instead", pg->account, bad,
                 pg->cluster);
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "/var/lib/loom/clusters/%s", h);
        if (!mkdir_p(parent, 0755)) {
            fail(err, errlen, "%s, and %s could not be created: %s", pg->note, parent, strerror(errno));
            return false;
        }
    } else {
        snprintf(pg->cluster, sizeof pg->cluster, "%s/pg", pg->data_dir);
        snprintf(pg->log_path, sizeof pg->log_path, "%s/pg.log", pg->data_dir);
        snprintf(pg->sock_dir, sizeof pg->sock_dir, "%s/run", pg->data_dir);
    }
    if (strlen(pg->sock_dir) + SOCK_NAME_LEN > SUN_PATH_MAX)
        snprintf(pg->sock_dir, sizeof pg->sock_dir, "/tmp/loom-%s", h);
    return true;
}

int pgembed_lock(pgembed *pg, char *err, size_t errlen)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/serve.lock", pg->data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        fail(err, errlen, "could not open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        fail(err, errlen, "another loom serve owns the embedded database in %s", pg->data_dir);
        close(fd);
        return -1;
    }
    return fd;
}

/* True when pid is a live PostgreSQL process. */
static bool pid_is_postgres(long pid)
{
    if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH))
        return false;
    char path[64], comm[64] = "";
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fgets(comm, sizeof comm, f) && (strncmp(comm, "postgres", 8) == 0 || strncmp(comm, "postmaster", 10) == 0);
    fclose(f);
    return ok;
}

/* Removes lock files whose process is gone (after a crash or a kill -9;
 * in a container the old pid may even belong to another process now). */
static void remove_stale_locks(const pgembed *pg)
{
    char path[PATH_MAX + 32];
    const char *files[2][2] = {{pg->cluster, "postmaster.pid"}, {pg->sock_dir, ".s.PGSQL." PG_PORT ".lock"}};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", files[i][0], files[i][1]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        long pid = 0;
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
        if (!pid_is_postgres(pid))
            unlink(path);
    }
}

static bool write_conf(const pgembed *pg, char *err, size_t errlen)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/loom.conf", pg->cluster);
    FILE *f = fopen(path, "w");
    if (!f) {
        fail(err, errlen, "could not write %s: %s", path, strerror(errno));
        return false;
    }
    fputs("# written by loom at every start; edit postgresql.conf instead\n"
          "listen_addresses = ''\nunix_socket_permissions = 0700\n"
          "max_connections = 200\ntimezone = 'UTC'\nunix_socket_directories = '", f);
    for (const char *p = pg->sock_dir; *p; p++) {
        if (*p == '\'' || *p == '\\')
            fputc(*p, f);
        fputc(*p, f);
    }
    fputs("'\n", f);
    fclose(f);
    if (pg->drop_privs && chown(path, pg->uid, pg->gid) != 0) {
        fail(err, errlen, "could not chown %s: %s", path, strerror(errno));
        return false;
    }
    return true;
}

static bool cluster_exists(const pgembed *pg)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/PG_VERSION", pg->cluster);
    return access(path, F_OK) == 0;
}

static bool initdb(pgembed *pg, char *err, size_t errlen)
{
    if (!own_dir(pg, pg->cluster, 0700, err, errlen))
        return false;
    char prog[PATH_MAX + 16], out[2048];
    snprintf(prog, sizeof prog, "%s/initdb", pg->bindir);
    char *argv[] = {prog, "-D", pg->cluster, "-U", "loom", "-E", "UTF8", "--locale=C.UTF-8",
                    "--auth=trust", "--no-instructions", NULL};
    if (run(pg, argv, out, sizeof out) != 0) {
        fail(err, errlen, "initdb failed: %s", out);
        return false;
    }
    char conf[PATH_MAX + 32];
    snprintf(conf, sizeof conf, "%s/postgresql.conf", pg->cluster);
    FILE *f = fopen(conf, "a");
    if (!f) {
        fail(err, errlen, "could not open %s: %s", conf, strerror(errno));
        return false;
    }
    fputs("\n# Loom's settings (socket directory, no TCP)\ninclude 'loom.conf'\n", f);
    fclose(f);
    return true;
}

bool pgembed_running(pgembed *pg)
{
    char prog[PATH_MAX + 16], out[512];
    snprintf(prog, sizeof prog, "%s/pg_ctl", pg->bindir);
    char *argv[] = {prog, "-D", pg->cluster, "status", NULL};
    return cluster_exists(pg) && run(pg, argv, out, sizeof out) == 0;
}

static bool create_database(const pgembed *pg, char *err, size_t errlen)
{
    char conninfo[PATH_MAX + 128];
    pgembed_conninfo(pg, conninfo, sizeof conninfo);
    char *db = strstr(conninfo, "dbname=loom");
    memcpy(db, "dbname=postgres", strlen("dbname=postgres") + 1);
    PGconn *c = db_connect_once(conninfo, err, errlen);
    if (!c)
        return false;
    PGresult *r = PQexec(c, "SELECT 1 FROM pg_database WHERE datname = 'loom'");
    bool exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    bool ok = true;
    if (!exists) {
        r = PQexec(c, "CREATE DATABASE loom");
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            fail(err, errlen, "could not create database loom: %s", PQerrorMessage(c));
        PQclear(r);
    }
    PQfinish(c);
    return ok;
}

int pgembed_start(pgembed *pg, char *err, size_t errlen)
{
    if (!cluster_exists(pg) && !initdb(pg, err, errlen))
        return -1;
    if (!own_dir(pg, pg->sock_dir, 0700, err, errlen) || !write_conf(pg, err, errlen))
        return -1;
    if (pgembed_running(pg))
        return create_database(pg, err, errlen) ? 0 : -1;
    remove_stale_locks(pg);
    /* the log file is written by the account */
    int fd = open(pg->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 || (pg->drop_privs && fchown(fd, pg->uid, pg->gid) != 0)) {
        fail(err, errlen, "could not prepare %s: %s", pg->log_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    char prog[PATH_MAX + 16], out[2048];
    snprintf(prog, sizeof prog, "%s/pg_ctl", pg->bindir);
    char *argv[] = {prog, "-D", pg->cluster, "-l", pg->log_path, "-w", "-t", "120", "-s", "start", NULL};
    if (run(pg, argv, out, sizeof out) != 0) {
        char tail[1024] = "";
        FILE *f = fopen(pg->log_path, "r");
        if (f) {
            fseek(f, 0, SEEK_END);
            long size = ftell(f);
            fseek(f, size > (long)sizeof tail - 1 ? size - (long)sizeof tail + 1 : 0, SEEK_SET);
            size_t n = fread(tail, 1, sizeof tail - 1, f);
            tail[n] = '\0';
            fclose(f);
        }
        fail(err, errlen, "pg_ctl start failed: %s; log: %s", out, tail);
        return -1;
    }
    return create_database(pg, err, errlen) ? 1 : -1;
}

bool pgembed_stop(pgembed *pg, char *err, size_t errlen)
{
    if (!pgembed_running(pg))
        return true;
    char prog[PATH_MAX + 16], out[1024];
    snprintf(prog, sizeof prog, "%s/pg_ctl", pg->bindir);
    char *argv[] = {prog, "-D", pg->cluster, "-m", "fast", "-w", "-t", "60", "-s", "stop", NULL};
    if (run(pg, argv, out, sizeof out) != 0) {
        fail(err, errlen, "pg_ctl stop failed: %s", out);
        return false;
    }
    return true;
}

void pgembed_conninfo(const pgembed *pg, char *out, size_t n)
{
    size_t o = 0;
    o += (size_t)snprintf(out + o, n - o, "host='");
    for (const char *p = pg->sock_dir; *p && o + 4 < n; p++) {
        if (*p == '\'' || *p == '\\')
            out[o++] = '\\';
        out[o++] = *p;
    }
    snprintf(out + o, n - o, "' port=" PG_PORT " user=loom dbname=loom");
}
