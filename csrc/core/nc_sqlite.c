/* nc_sqlite.c - the SQLite backend.
 *
 * Connections are opened with SQLITE_OPEN_NOMUTEX: the pool lends each one
 * to one thread at a time, so SQLite's own per-connection mutex is not
 * needed.  Waiting on a locked database is bounded by the statement's
 * deadline through a busy handler of our own (sqlite3_busy_timeout knows no
 * absolute deadline), and a long statement is interrupted by a progress
 * handler once the deadline has passed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nc_sqlite.h"
#include "nc_stop.h"
#include "nc_time.h"

#include <regex.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct nc_sqlite_ctx {
    char *path;         /* what sqlite3_open_v2 gets (a file: URI for memory) */
    char display[256];
    sqlite3 *keeper;    /* keeps a shared in-memory database alive */
} nc_sqlite_ctx;

static unsigned long memory_counter;

void *nc_sqlite_ctx_new(const char *url, nc_error *err)
{
    const char *prefix = "sqlite:///";
    size_t plen = strlen(prefix);
    if (strncmp(url, prefix, plen) != 0 || url[plen] == '\0') {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE,
                     "invalid SQLite URL (expected sqlite:///relative.db, sqlite:////abs/path.db "
                     "or sqlite:///:memory:)");
        return NULL;
    }
    const char *path = url + plen;
    nc_sqlite_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    char buf[128];
    if (!strcmp(path, ":memory:")) {
        /* Every pooled connection must see the same database, so a plain
         * :memory: (one database per handle) would not do. */
        unsigned long n = __atomic_add_fetch(&memory_counter, 1, __ATOMIC_RELAXED);
        /* The memdb VFS shares one database between connections with
         * ordinary file locking, so the busy handler (and with it the
         * statement deadline) works; a shared-cache :memory: database
         * uses table locks that fail at once with SQLITE_LOCKED. */
        snprintf(buf, sizeof buf, "file:/noodlecore-mem-%ld-%lu?vfs=memdb", (long)getpid(), n);
        path = buf;
    }
    ctx->path = strdup(path);
    nc_text_set(ctx->display, sizeof ctx->display, "sqlite:%s", url + plen);
    if (!ctx->path) {
        free(ctx);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    if (path == buf) {
        if (sqlite3_open_v2(ctx->path, &ctx->keeper,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL) != SQLITE_OK) {
            nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "%s: %s", ctx->display,
                         ctx->keeper ? sqlite3_errmsg(ctx->keeper) : "out of memory");
            sqlite3_close_v2(ctx->keeper);
            free(ctx->path);
            free(ctx);
            return NULL;
        }
    }
    return ctx;
}

const char *nc_sqlite_ctx_display(void *vctx)
{
    return ((nc_sqlite_ctx *)vctx)->display;
}

static void sq_ctx_free(void *vctx)
{
    nc_sqlite_ctx *ctx = vctx;
    if (!ctx)
        return;
    if (ctx->keeper)
        sqlite3_close_v2(ctx->keeper);
    free(ctx->path);
    free(ctx);
}

static int busy_handler(void *arg, int count)
{
    nc_sqlite_conn *c = arg;
    if (nc_stop_check()) {
        c->interrupted = 1;
        return 0;   /* gives up: SQLITE_BUSY */
    }
    double left = c->busy_deadline - nc_now();
    if (left <= 0) {
        c->timed_out = 1;
        return 0;
    }
    /* Back off from 1 ms to 20 ms, never past the deadline. */
    double step = 0.001 * (double)(1 << (count < 5 ? count : 5));
    if (step > 0.02)
        step = 0.02;
    if (step > left)
        step = left;
    struct timespec ts = {0, (long)(step * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    return 1;
}

static int progress_handler(void *arg)
{
    nc_sqlite_conn *c = arg;
    if (nc_now() >= c->deadline) {
        c->timed_out = 1;
        return 1;   /* interrupts the statement */
    }
    /* Ctrl-C (rate-limited inside: this runs every thousand instructions). */
    if (nc_stop_check()) {
        c->interrupted = 1;
        return 1;
    }
    return 0;
}

/* X REGEXP Y calls regexp(Y, X).  SQLite has no such function of its own
 * (pysqlite's users get one written in Python, which we never run inside a
 * statement): POSIX extended regular expressions (regex.h) in the process's
 * locale, searched anywhere in the text (as Python's re.search), NULL when
 * either side is NULL.  Python-only syntax (\d, (?i), lazy quantifiers) is
 * not understood.  The compiled pattern is kept for the statement. */
static void regexp_free(void *p)
{
    regfree(p);
    free(p);
}

static void sq_regexp(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL || sqlite3_value_type(argv[1]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    regex_t *re = sqlite3_get_auxdata(ctx, 0);
    int fresh = 0;
    if (!re) {
        const char *pattern = (const char *)sqlite3_value_text(argv[0]);
        re = malloc(sizeof *re);
        if (!pattern || !re) {
            free(re);
            sqlite3_result_error_nomem(ctx);
            return;
        }
        int rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char why[200], msg[256];
            regerror(rc, re, why, sizeof why);
            free(re);
            snprintf(msg, sizeof msg, "REGEXP: invalid pattern: %s", why);
            sqlite3_result_error(ctx, msg, -1);
            return;
        }
        fresh = 1;
    }
    const char *text = (const char *)sqlite3_value_text(argv[1]);
    if (!text)
        sqlite3_result_error_nomem(ctx);
    else
        sqlite3_result_int(ctx, regexec(re, text, 0, NULL, 0) == 0);
    /* Last: SQLite may free it at once (then it is gone for the next row). */
    if (fresh)
        sqlite3_set_auxdata(ctx, 0, re, regexp_free);
}

static void *sq_connect(void *vctx, double deadline, nc_error *err)
{
    nc_sqlite_ctx *ctx = vctx;
    nc_sqlite_conn *c = calloc(1, sizeof *c);
    if (!c) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    int rc = sqlite3_open_v2(ctx->path, &c->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                 SQLITE_OPEN_URI, NULL);
    if (rc != SQLITE_OK) {
        nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "%s: %s", ctx->display,
                     c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sqlite3_close_v2(c->db);
        free(c);
        return NULL;
    }
    sqlite3_extended_result_codes(c->db, 1);
    /* A misspelled "column" must be an error, not a string literal (SQLite's
     * legacy double-quoted-string behaviour turns WHERE "nope" = 'nope' into
     * a condition that matches every row). */
    sqlite3_db_config(c->db, SQLITE_DBCONFIG_DQS_DML, 0, (int *)0);
    sqlite3_db_config(c->db, SQLITE_DBCONFIG_DQS_DDL, 0, (int *)0);
    c->deadline = deadline;
    c->busy_deadline = deadline;
    sqlite3_busy_handler(c->db, busy_handler, c);
    sqlite3_progress_handler(c->db, 1000, progress_handler, c);
    sqlite3_create_function_v2(c->db, "regexp", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sq_regexp, NULL, NULL,
                               NULL);
    return c;
}

void nc_sqlite_begin(nc_sqlite_conn *c, double deadline, double busy_deadline)
{
    c->deadline = deadline;
    c->busy_deadline = busy_deadline;
    c->timed_out = 0;
    c->interrupted = 0;
}

void nc_sqlite_error(nc_sqlite_conn *c, int rc, nc_error *err)
{
    int primary = rc & 0xff;
    const char *msg = sqlite3_errmsg(c->db);
    if (c->interrupted && (primary == SQLITE_INTERRUPT || primary == SQLITE_BUSY || primary == SQLITE_LOCKED)) {
        nc_error_set(err, NC_E_INTERRUPTED, NC_K_OPERATIONAL, "interrupted (%s); the statement was stopped",
                     primary == SQLITE_INTERRUPT ? "while running" : "while waiting for a lock");
        return;
    }
    if (c->timed_out && (primary == SQLITE_INTERRUPT || primary == SQLITE_BUSY || primary == SQLITE_LOCKED)) {
        nc_error_set(err, NC_E_QUERY_TIMEOUT, NC_K_OPERATIONAL,
                     "statement deadline passed (%s); the statement was stopped",
                     primary == SQLITE_INTERRUPT ? "interrupted" : msg);
        return;
    }
    int kind;
    switch (primary) {
    case SQLITE_CONSTRAINT:
        kind = NC_K_INTEGRITY;
        break;
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
        kind = NC_K_DATA;
        break;
    case SQLITE_ERROR:
        kind = NC_K_PROGRAMMING;
        break;
    case SQLITE_INTERNAL:
    case SQLITE_NOMEM:
        kind = NC_K_INTERNAL;
        break;
    default:
        kind = NC_K_OPERATIONAL;
    }
    nc_error_set(err, NC_E_QUERY, kind, "%s (SQLite error %d)", msg, rc);
    if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB || primary == SQLITE_IOERR)
        c->broken = 1;
}

int nc_sqlite_command(nc_sqlite_conn *c, const char *sql, double deadline, nc_error *err)
{
    return nc_sqlite_command_busy(c, sql, deadline, deadline, err);
}

int nc_sqlite_command_busy(nc_sqlite_conn *c, const char *sql, double deadline, double busy_deadline,
                           nc_error *err)
{
    nc_sqlite_begin(c, deadline, busy_deadline);
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        nc_sqlite_error(c, rc, err);
        return -1;
    }
    return 0;
}

static int sq_looks_alive(void *vctx, void *vconn)
{
    (void)vctx;
    nc_sqlite_conn *c = vconn;
    return !c->broken;
}

static int sq_ping(void *vctx, void *vconn, double deadline, nc_error *err)
{
    (void)vctx;
    /* Reads the schema cookie: touches the file, so a deleted or corrupt
     * database shows up. */
    nc_sqlite_conn *c = vconn;
    if (nc_sqlite_command(c, "PRAGMA schema_version", deadline, err) == 0)
        return 0;
    /* Busy until the deadline (another connection holds a lock) or Ctrl-C:
     * that says nothing of this connection, so "not answered in time" (1),
     * judged by whoever set the deadline, as a late reply of PostgreSQL's;
     * nothing is left owed. */
    return c->timed_out || c->interrupted ? 1 : -1;
}

static int sq_return_state(void *vctx, void *vconn)
{
    (void)vctx;
    nc_sqlite_conn *c = vconn;
    if (c->broken || c->session_dirty)
        return -1;
    return sqlite3_get_autocommit(c->db) ? 0 : 1;
}

static int sq_reset(void *vctx, void *vconn, double deadline, nc_error *err)
{
    (void)vctx;
    nc_sqlite_conn *c = vconn;
    if (nc_sqlite_command(c, "ROLLBACK", deadline, err) < 0)
        return -1;
    return sqlite3_get_autocommit(c->db) ? 0 : -1;
}

static void sq_close(void *vctx, void *vconn)
{
    (void)vctx;
    nc_sqlite_conn *c = vconn;
    if (!c)
        return;
    sqlite3_close_v2(c->db);
    free(c);
}

const nc_backend_ops nc_sqlite_ops = {
    .kind = "sqlite",
    .ping_new = 0,
    .connect = sq_connect,
    .looks_alive = sq_looks_alive,
    .ping = sq_ping,
    .return_state = sq_return_state,
    .reset = sq_reset,
    .close = sq_close,
    .ctx_free = sq_ctx_free,
};
