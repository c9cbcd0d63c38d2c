/* test_sqlite.c - unit tests for the SQLite backend (csrc/core/nc_sqlite.c),
 * through nc_sqlite_ops as the pool calls it, plus nc_sqlite_begin /
 * nc_sqlite_error / nc_sqlite_command with plain sqlite3 calls as the binding
 * uses them.  Databases live in a fresh temporary directory, removed at the end.
 *
 * Plain C with check.h: each test function is one test, each CHECK one check;
 * a failed check prints one line, every test function reports its counts, and
 * the exit status is non-zero when anything failed.
 */
#include "nc_sqlite.h"
#include "nc_time.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

/* Scheduling slack on top of a deadline, scaled under the sanitizers (check.h). */
#define SLACK (0.1 * nc_time_scale())

static const nc_backend_ops *ops = &nc_sqlite_ops;
static char tmpdir[64];

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void *new_ctx(const char *url)
{
    nc_error err;
    nc_error_clear(&err);
    void *ctx = nc_sqlite_ctx_new(url, &err);
    if (!ctx) {
        printf("FATAL: nc_sqlite_ctx_new(%s): %d %s\n", url, err.code, err.message);
        exit(2);
    }
    return ctx;
}

static nc_sqlite_conn *open_conn(void *ctx)
{
    nc_error err;
    nc_error_clear(&err);
    nc_sqlite_conn *c = ops->connect(ctx, nc_now() + 2.0, &err);
    if (!c) {
        printf("FATAL: connect: %d %s\n", err.code, err.message);
        exit(2);
    }
    return c;
}

/* One integer from a query, run with plain sqlite3 calls; -1 on error. */
static long long scalar(nc_sqlite_conn *c, const char *sql)
{
    sqlite3_stmt *st = NULL;
    long long v = -1;
    nc_sqlite_begin(c, nc_now() + 2.0, nc_now() + 2.0);
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int cmd(nc_sqlite_conn *c, const char *sql, double timeout, nc_error *err)
{
    nc_error_clear(err);
    return nc_sqlite_command(c, sql, nc_now() + timeout, err);
}

/* ---- tests --------------------------------------------------------------- */

static void test_urls(void)
{
    const char *bad[] = {"", "sqlite:///", "sqlite://", "sqlite://x.db", "postgresql://h/db", "sqlite:x.db",
                         "SQLITE:///x.db", "file:///x.db"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nc_error err;
        nc_error_clear(&err);
        void *ctx = nc_sqlite_ctx_new(bad[i], &err);
        CHECK(ctx == NULL, "bad URL '%s' accepted", bad[i]);
        CHECK(err.code == NC_E_CONFIG && err.kind == NC_K_INTERFACE, "'%s': code %d kind %d", bad[i], err.code,
              err.kind);
        CHECK(strstr(err.message, "sqlite:///") != NULL, "message does not show the forms: %s", err.message);
        if (ctx)
            ops->ctx_free(ctx);
    }

    /* A path that cannot be opened is accepted as a URL; connect fails (2004). */
    void *ctx = new_ctx("sqlite:////nonexistent-dir-for-noodlecore-tests/sub/x.db");
    CHECK(strcmp(nc_sqlite_ctx_display(ctx), "sqlite:/nonexistent-dir-for-noodlecore-tests/sub/x.db") == 0,
          "display %s", nc_sqlite_ctx_display(ctx));
    nc_error err;
    nc_error_clear(&err);
    void *c = ops->connect(ctx, nc_now() + 1.0, &err);
    CHECK(c == NULL, "connected to a file in a missing directory");
    CHECK(err.code == NC_E_CONNECTION, "code %d: %s", err.code, err.message);
    CHECK(strstr(err.message, "nonexistent-dir-for-noodlecore-tests") != NULL, "message does not name the db: %s",
          err.message);
    if (c)
        ops->close(ctx, c);
    ops->ctx_free(ctx);
    ops->ctx_free(NULL);   /* allowed */

    /* A relative path is relative to the working directory. */
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) {
        printf("FATAL: getcwd\n");
        exit(2);
    }
    if (chdir(tmpdir) == 0) {
        ctx = new_ctx("sqlite:///relative.db");
        CHECK(strcmp(nc_sqlite_ctx_display(ctx), "sqlite:relative.db") == 0, "display %s",
              nc_sqlite_ctx_display(ctx));
        nc_sqlite_conn *rc = open_conn(ctx);
        CHECK(cmd(rc, "CREATE TABLE r(x)", 1, &err) == 0, "%s", err.message);
        struct stat sb;
        CHECK(stat("relative.db", &sb) == 0, "relative.db not created in the working directory");
        ops->close(ctx, rc);
        ops->ctx_free(ctx);
        unlink("relative.db");
        if (chdir(cwd) != 0) {
            printf("FATAL: chdir back\n");
            exit(2);
        }
    } else {
        CHECK(0, "chdir %s", tmpdir);
    }
}

static void test_connect_ping_reset(const char *url)
{
    void *ctx = new_ctx(url);
    nc_sqlite_conn *a = open_conn(ctx);
    nc_error err;
    CHECK(ops->looks_alive(ctx, a) == 1, "new connection does not look alive");
    nc_error_clear(&err);
    CHECK(ops->ping(ctx, a, nc_now() + 1.0, &err) == 0, "ping: %s", err.message);
    CHECK(ops->return_state(ctx, a) == 0, "clean connection: return_state %d", ops->return_state(ctx, a));
    CHECK(ops->ping_new == 0, "sqlite validates in connect");
    CHECK(strcmp(ops->kind, "sqlite") == 0, "kind %s", ops->kind);

    CHECK(cmd(a, "CREATE TABLE t(x INTEGER PRIMARY KEY, y TEXT NOT NULL)", 1, &err) == 0, "%s", err.message);
    CHECK(cmd(a, "INSERT INTO t VALUES (1, 'one')", 1, &err) == 0, "%s", err.message);

    /* BEGIN: return_state asks for a reset; reset rolls back */
    CHECK(cmd(a, "BEGIN", 1, &err) == 0, "%s", err.message);
    CHECK(cmd(a, "INSERT INTO t VALUES (2, 'two')", 1, &err) == 0, "%s", err.message);
    CHECK(ops->return_state(ctx, a) == 1, "open transaction: return_state %d", ops->return_state(ctx, a));
    nc_error_clear(&err);
    CHECK(ops->reset(ctx, a, nc_now() + 1.0, &err) == 0, "reset: %s", err.message);
    CHECK(ops->return_state(ctx, a) == 0, "after reset: return_state %d", ops->return_state(ctx, a));
    CHECK(scalar(a, "SELECT count(*) FROM t") == 1, "reset did not roll back: %lld rows",
          scalar(a, "SELECT count(*) FROM t"));

    /* reset with nothing open is an error from SQLite: the pool discards */
    nc_error_clear(&err);
    int r = ops->reset(ctx, a, nc_now() + 1.0, &err);
    CHECK(r == -1 && err.code == NC_E_QUERY, "ROLLBACK without a transaction: rc %d code %d", r, err.code);

    /* errors: kinds */
    CHECK(cmd(a, "SELEC 1", 1, &err) == -1 && err.code == NC_E_QUERY && err.kind == NC_K_PROGRAMMING,
          "syntax error: code %d kind %d %s", err.code, err.kind, err.message);
    CHECK(strstr(err.message, "syntax error") != NULL, "message: %s", err.message);
    CHECK(cmd(a, "INSERT INTO t VALUES (1, 'dup')", 1, &err) == -1 && err.code == NC_E_QUERY &&
              err.kind == NC_K_INTEGRITY,
          "constraint: code %d kind %d %s", err.code, err.kind, err.message);
    CHECK(cmd(a, "INSERT INTO t VALUES (3, NULL)", 1, &err) == -1 && err.kind == NC_K_INTEGRITY,
          "NOT NULL: kind %d", err.kind);
    CHECK(ops->looks_alive(ctx, a) == 1 && ops->return_state(ctx, a) == 0, "an ordinary error broke it");

    /* a corrupt-database error marks the connection broken */
    nc_sqlite_conn *b = open_conn(ctx);
    nc_error_clear(&err);
    nc_sqlite_error(b, SQLITE_CORRUPT, &err);
    CHECK(err.code == NC_E_QUERY, "code %d", err.code);
    CHECK(b->broken && ops->looks_alive(ctx, b) == 0 && ops->return_state(ctx, b) == -1,
          "SQLITE_CORRUPT did not mark the connection broken");
    ops->close(ctx, b);

    /* the statement deadline: a long statement is interrupted (progress handler) */
    double t0 = nc_now();
    int rc = cmd(a,
                 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
                 "SELECT count(*) FROM n",
                 0.2, &err);
    double el = nc_now() - t0;
    CHECK(rc == -1 && err.code == NC_E_QUERY_TIMEOUT, "long statement: rc %d code %d %s", rc, err.code,
          err.message);
    CHECK(el >= 0.2 - 0.002 && el < 0.2 + SLACK, "interrupted after %.3f s, deadline 0.2", el);
    CHECK(ops->looks_alive(ctx, a) == 1 && ops->return_state(ctx, a) == 0, "a timeout broke the connection");
    nc_error_clear(&err);
    CHECK(ops->ping(ctx, a, nc_now() + 1.0, &err) == 0, "ping after a timeout: %s", err.message);
    /* a deadline already passed: nothing long runs */
    rc = cmd(a,
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
             "SELECT count(*) FROM n",
             -1.0, &err);
    CHECK(rc == -1 && err.code == NC_E_QUERY_TIMEOUT, "past deadline: rc %d code %d", rc, err.code);
    /* no deadline: runs to completion */
    nc_error_clear(&err);
    CHECK(nc_sqlite_command(a, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) "
                               "SELECT count(*) FROM n",
                            NC_NO_DEADLINE, &err) == 0,
          "no deadline: %s", err.message);

    ops->close(ctx, a);
    ops->ctx_free(ctx);
}

typedef struct committer {
    nc_sqlite_conn *c;
    double after;
    int rc;
    nc_error err;
} committer;

static void *commit_later(void *arg)
{
    committer *k = arg;
    sleep_s(k->after);
    k->rc = nc_sqlite_command(k->c, "COMMIT", nc_now() + 1.0, &k->err);
    return NULL;
}

static void test_lock_deadline(const char *url)
{
    void *ctx = new_ctx(url);
    nc_sqlite_conn *a = open_conn(ctx);
    nc_sqlite_conn *b = open_conn(ctx);
    nc_error err;
    CHECK(cmd(a, "CREATE TABLE w(x)", 1, &err) == 0, "%s", err.message);

    /* a holds the write lock */
    CHECK(cmd(a, "BEGIN IMMEDIATE", 1, &err) == 0, "%s", err.message);
    CHECK(cmd(a, "INSERT INTO w VALUES (1)", 1, &err) == 0, "%s", err.message);

    /* b through nc_sqlite_command: waits, then 2012 at its deadline */
    double t0 = nc_now();
    int rc = cmd(b, "INSERT INTO w VALUES (2)", 0.3, &err);
    double el = nc_now() - t0;
    CHECK(rc == -1 && err.code == NC_E_QUERY_TIMEOUT, "blocked writer: rc %d code %d %s", rc, err.code,
          err.message);
    CHECK(err.kind == NC_K_OPERATIONAL, "kind %d", err.kind);
    CHECK(el >= 0.3 - 0.002 && el < 0.3 + SLACK, "blocked writer gave up after %.3f s, deadline 0.3", el);
    printf("  (2012 message: %s; after %.3f s)\n", err.message, el);
    CHECK(ops->return_state(ctx, b) == 0 && ops->looks_alive(ctx, b), "a lock timeout broke b");

    /* b through nc_sqlite_begin and plain sqlite3 calls, as the binding runs statements */
    sqlite3_stmt *st = NULL;
    nc_sqlite_begin(b, nc_now() + 0.2, nc_now() + 0.2);
    t0 = nc_now();
    rc = sqlite3_prepare_v2(b->db, "INSERT INTO w VALUES (3)", -1, &st, NULL);
    CHECK(rc == SQLITE_OK, "prepare: %s", sqlite3_errmsg(b->db));
    rc = sqlite3_step(st);
    el = nc_now() - t0;
    CHECK((rc & 0xff) == SQLITE_BUSY, "step rc %d, want SQLITE_BUSY", rc);
    nc_error_clear(&err);
    nc_sqlite_error(b, rc, &err);
    CHECK(err.code == NC_E_QUERY_TIMEOUT, "code %d %s", err.code, err.message);
    CHECK(el >= 0.2 - 0.002 && el < 0.2 + SLACK, "step gave up after %.3f s, deadline 0.2", el);
    sqlite3_finalize(st);

    /* the same SQLite BUSY without the deadline having passed is a plain 2005 */
    nc_sqlite_begin(b, nc_now() + 5.0, nc_now() + 5.0);
    nc_error_clear(&err);
    nc_sqlite_error(b, SQLITE_BUSY, &err);
    CHECK(err.code == NC_E_QUERY, "BUSY before the deadline: code %d", err.code);

    /* b waits while a finishes within b's deadline, then succeeds */
    committer k = {.c = a, .after = 0.1};
    pthread_t th;
    pthread_create(&th, NULL, commit_later, &k);
    t0 = nc_now();
    rc = cmd(b, "INSERT INTO w VALUES (4)", 2.0, &err);
    el = nc_now() - t0;
    pthread_join(th, NULL);
    CHECK(k.rc == 0, "commit: %s", k.err.message);
    CHECK(rc == 0, "writer after the commit: %d %s", err.code, err.message);
    /* Woken by the release, not by its 2 s deadline.  The upper bound is
     * loose on purpose: under load the committer itself may run late. */
    CHECK(el >= 0.09 && el < 1.0, "writer waited %.3f s for a lock held 0.1 s (deadline 2 s)", el);
    CHECK(scalar(a, "SELECT count(*) FROM w") == 2, "rows %lld", scalar(a, "SELECT count(*) FROM w"));

    /* reset (the pool's rollback) under a deadline: nothing to wait for, quick */
    CHECK(cmd(b, "BEGIN", 1, &err) == 0, "%s", err.message);
    CHECK(cmd(b, "INSERT INTO w VALUES (5)", 1, &err) == 0, "%s", err.message);
    CHECK(ops->return_state(ctx, b) == 1, "open transaction");
    nc_error_clear(&err);
    CHECK(ops->reset(ctx, b, nc_now() + 0.5, &err) == 0, "reset: %s", err.message);
    CHECK(scalar(a, "SELECT count(*) FROM w") == 2, "rolled-back row visible");

    ops->close(ctx, a);
    ops->close(ctx, b);
    ops->ctx_free(ctx);
}

static void test_memory(void)
{
    void *ctx = new_ctx("sqlite:///:memory:");
    CHECK(strcmp(nc_sqlite_ctx_display(ctx), "sqlite::memory:") == 0, "display %s", nc_sqlite_ctx_display(ctx));
    nc_sqlite_conn *a = open_conn(ctx);
    nc_sqlite_conn *b = open_conn(ctx);
    nc_error err;
    CHECK(cmd(a, "CREATE TABLE m(x)", 1, &err) == 0, "%s", err.message);
    CHECK(cmd(a, "INSERT INTO m VALUES (42)", 1, &err) == 0, "%s", err.message);
    CHECK(scalar(b, "SELECT x FROM m") == 42, "the second connection does not see the first one's data");
    CHECK(cmd(b, "INSERT INTO m VALUES (43)", 1, &err) == 0, "%s", err.message);
    CHECK(scalar(a, "SELECT count(*) FROM m") == 2, "count %lld", scalar(a, "SELECT count(*) FROM m"));
    nc_error_clear(&err);
    CHECK(ops->ping(ctx, b, nc_now() + 1.0, &err) == 0, "ping: %s", err.message);

    /* the database outlives its connections while the ctx lives */
    ops->close(ctx, a);
    ops->close(ctx, b);
    nc_sqlite_conn *c = open_conn(ctx);
    CHECK(scalar(c, "SELECT count(*) FROM m") == 2, "in-memory database lost when its connections closed");

    /* another ctx is another database */
    void *ctx2 = new_ctx("sqlite:///:memory:");
    nc_sqlite_conn *d = open_conn(ctx2);
    CHECK(cmd(d, "SELECT * FROM m", 1, &err) == -1 && err.code == NC_E_QUERY,
          "a second :memory: pool sees the first one's table");
    ops->close(ctx2, d);
    ops->ctx_free(ctx2);

    ops->close(ctx, c);
    ops->ctx_free(ctx);
}

/* A fixed bug, kept as a regression test: the shared
 * in-memory database uses shared-cache table locks, which SQLite reports as
 * SQLITE_LOCKED_SHAREDCACHE at once without calling the busy handler, so a
 * blocked writer fails immediately with 2005 instead of waiting for its
 * deadline (2012).  The pool now uses the memdb VFS instead. */
static void known_bugs(void)
{
    void *ctx = new_ctx("sqlite:///:memory:");
    nc_sqlite_conn *a = open_conn(ctx);
    nc_sqlite_conn *b = open_conn(ctx);
    nc_error err;
    CHECK(cmd(a, "CREATE TABLE w(x)", 1, &err) == 0, "%s", err.message);
    CHECK(cmd(a, "BEGIN IMMEDIATE", 1, &err) == 0, "%s", err.message);
    CHECK(cmd(a, "INSERT INTO w VALUES (1)", 1, &err) == 0, "%s", err.message);
    double t0 = nc_now();
    int rc = cmd(b, "INSERT INTO w VALUES (2)", 0.3, &err);
    double el = nc_now() - t0;
    CHECK(rc == -1 && err.code == NC_E_QUERY_TIMEOUT && el >= 0.3 - 0.002,
          ":memory: writer blocked by another connection: code %d after %.3f s (want 2012 after 0.3 s): %s",
          err.code, el, err.message);
    cmd(a, "ROLLBACK", 1, &err);
    ops->close(ctx, a);
    ops->close(ctx, b);
    ops->ctx_free(ctx);
}

static void rm_tmp(void)
{
    const char *names[] = {"t.db", "t.db-journal", "l.db", "l.db-journal", "relative.db"};
    char path[256];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
}

static char url1[256], url2[256];
static void case_connect_ping_reset(void) { test_connect_ping_reset(url1); }
static void case_lock_deadline(void) { test_lock_deadline(url2); }

/* REGEXP: POSIX extended, searched anywhere, NULL in NULL out, a bad
 * pattern an error (SQLAlchemy's regexp_match on SQLite). */
static void test_regexp(void)
{
    void *ctx = new_ctx(url1);
    nc_sqlite_conn *c = open_conn(ctx);
    CHECK(scalar(c, "SELECT 'abcde' REGEXP 'a.cde'") == 1, "a.cde matches abcde");
    CHECK(scalar(c, "SELECT 'acde' REGEXP 'a.cde'") == 0, "a.cde does not match acde");
    CHECK(scalar(c, "SELECT 'xabcde' REGEXP 'abc'") == 1, "found anywhere");
    CHECK(scalar(c, "SELECT 'xabc' REGEXP '^abc'") == 0, "anchored");
    CHECK(scalar(c, "SELECT 'b' REGEXP '^(b|c)$'") == 1, "alternation");
    CHECK(scalar(c, "SELECT count(*) FROM (SELECT 'a1' AS v UNION ALL SELECT 'b2' UNION ALL SELECT 'a3') "
                    "WHERE v REGEXP '^a[0-9]'") == 2, "per row, the pattern kept");
    CHECK(scalar(c, "SELECT (NULL REGEXP 'a') IS NULL AND ('a' REGEXP NULL) IS NULL") == 1, "NULL");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(c->db, "SELECT 'a' REGEXP '('", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    CHECK(rc == SQLITE_ERROR && strstr(sqlite3_errmsg(c->db), "REGEXP: invalid pattern"), "bad pattern: %d %s", rc,
          sqlite3_errmsg(c->db));
    sqlite3_finalize(st);
    ops->close(ctx, c);
    ops->ctx_free(ctx);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nc_test_sqlite.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(url1, sizeof url1, "sqlite:///%s/t.db", tmpdir);   /* sqlite:////tmp/... */
    snprintf(url2, sizeof url2, "sqlite:///%s/l.db", tmpdir);
    static const nc_test_case cases[] = {
        {"urls", test_urls},
        {"connect_ping_reset", case_connect_ping_reset},
        {"lock_deadline", case_lock_deadline},
        {"memory", test_memory},
        {"regexp", test_regexp},
        {"former_bugs", known_bugs},   /* regression tests of a fixed bug */
    };
    int rc = nc_run_cases("test_sqlite", cases, NC_NCASES(cases));
    rm_tmp();
    return rc;
}
