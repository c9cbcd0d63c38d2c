/* test_pool.c - unit tests for the connection pool (csrc/core/nc_pool.c and
 * nc_janitor.c) with a fake backend whose behaviour the tests control.
 *
 * Plain C with check.h: each test function is one test, each CHECK one check;
 * a failed check prints one line, every test function reports its counts, and
 * the exit status is non-zero when anything failed.
 * Checks run on the main thread only; helper threads
 * record what happened and the main thread checks it after joining them.
 *
 * The fake backend (struct fake) counts every call and can be told to fail
 * connects (a number of times or always), to take time connecting (honouring
 * the deadline it is given), to fail pings, to report a connection dead
 * (looks_alive 0), to ask for a reset on return and to fail that reset.  Every
 * field shared between threads is read and written with __atomic builtins so
 * that ThreadSanitizer only reports races inside the pool.
 *
 * Intervals are short (tens of milliseconds) so the program runs in a few
 * seconds, also under ThreadSanitizer.
 */
#include "nc_pool.h"
#include "nc_stop.h"
#include "nc_time.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"


/* Scheduling slack allowed on top of a deadline: the machine is shared and
 * the sanitizers slow things down (check.h). */
#define SLACK (0.1 * nc_time_scale())

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- the fake backend ---------------------------------------------------- */

typedef struct fconn {
    int id;         /* 1, 2, ... in order of opening */
    int dead;       /* looks_alive says 0 */
    int ping_fail;  /* ping fails */
    int in_txn;     /* return_state 1 until reset */
    int in_use;     /* set by the stress test while it holds the connection */
    int owed;       /* a reply owed (the reset of fake_ops_owed sends and does not wait) */
    int owed_fails; /* that reply will be a failure (settle -1) */
    double answer_at; /* nc_now() before which no reply (ping, owed) arrives; 0: at once (main
                       * thread only: the janitor's round never comes in these tests) */
    double opened;  /* nc_now() when connected */
    const char *gave_up;  /* the pool's give_up reason (fake_ops_owed) */
} fconn;

typedef struct fake {
    /* behaviour */
    int connect_fail_next;   /* fail this many connects, then succeed */
    int connect_fail_always;
    int connect_full;        /* connects fail with SQLSTATE 53300 (the server is full) */
    double connect_delay;    /* seconds (written before the pool runs) */
    int *connect_gate;       /* when set: a connect waits until *gate != 0, whatever its deadline */
    int connecting;          /* connects in progress */
    int ping_fail_all;
    int forced_return_state; /* 0: from in_txn; -1 or 1 forced */
    int reset_fail;
    int ping_new;
    int settles_nowait, settles_waited;   /* fake_ops_owed's settle calls */
    int nowait_reads;        /* settle without a wait reads a reply that has come (as libpq's does) */
    /* counts */
    int connect_calls, connects, closes, pings, resets, looks;
    int next_id;
    int last_id;
    fconn *last;             /* the connection opened last (may be closed since) */
    double lifetimes[64];    /* seconds from connect to close, in order of closing */
    int nlifetimes;
} fake;

static int ctx_frees;

static void *f_connect(void *ctx, double deadline, nc_error *err)
{
    fake *f = ctx;
    INC(f->connect_calls);
    INC(f->connecting);
    while (f->connect_gate && !LD(*f->connect_gate))
        sleep_s(0.001);
    DEC(f->connecting);
    double delay = f->connect_delay;
    if (delay > 0) {
        double now = nc_now();
        if (now + delay > deadline) {
            if (deadline > now)
                sleep_s(deadline - now);
            nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "fake connect timed out");
            return NULL;
        }
        sleep_s(delay);
    }
    if (LD(f->connect_fail_always)) {
        nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "fake connect refused");
        return NULL;
    }
    if (LD(f->connect_full)) {
        nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "FATAL:  sorry, too many clients already");
        memcpy(err->sqlstate, "53300", 6);
        return NULL;
    }
    int n = LD(f->connect_fail_next);
    while (n > 0) {
        if (__atomic_compare_exchange_n(&f->connect_fail_next, &n, n - 1, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "fake connect refused (transient)");
            return NULL;
        }
    }
    fconn *c = calloc(1, sizeof *c);
    if (!c) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    c->opened = nc_now();
    c->id = INC(f->next_id);
    INC(f->connects);
    ST(f->last_id, c->id);
    ST(f->last, c);
    return c;
}

static int f_looks_alive(void *ctx, void *conn)
{
    fake *f = ctx;
    fconn *c = conn;
    INC(f->looks);
    return !LD(c->dead);
}

/* A reply that comes at c->answer_at: wait for it until deadline, or until
 * the thread's stop check says stop.  1 it came, 0 not (still owed). */
static int f_await(fconn *c, double deadline)
{
    for (;;) {
        double now = nc_now(), at = c->answer_at;
        if (now >= at)
            return 1;
        if (now >= deadline || nc_stop_check())
            return 0;
        double until = at < deadline ? at : deadline;
        sleep_s(until - now < 0.005 ? until - now : 0.005);
    }
}

static int f_ping(void *ctx, void *conn, double deadline, nc_error *err)
{
    fake *f = ctx;
    fconn *c = conn;
    INC(f->pings);
    if (!f_await(c, deadline)) {
        ST(c->owed, 1);   /* as nc_pg.c: the ping's reply is left owed, not judged */
        return 1;
    }
    if (LD(f->ping_fail_all) || LD(c->ping_fail) || LD(c->dead)) {
        nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "fake ping failed");
        return -1;
    }
    return 0;
}

static int f_return_state(void *ctx, void *conn)
{
    fake *f = ctx;
    fconn *c = conn;
    int forced = LD(f->forced_return_state);
    if (forced)
        return forced;
    return LD(c->in_txn) ? 1 : 0;
}

static int f_reset(void *ctx, void *conn, double deadline, nc_error *err)
{
    (void)deadline;
    fake *f = ctx;
    fconn *c = conn;
    INC(f->resets);
    if (LD(f->reset_fail)) {
        nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "fake rollback failed");
        return -1;
    }
    ST(c->in_txn, 0);
    return 0;
}

/* Like PostgreSQL's return (nc_pg.c): the rollback is sent, its reply owed. */
static int f_reset_owed(void *ctx, void *conn, double deadline, nc_error *err)
{
    int rc = f_reset(ctx, conn, deadline, err);
    if (rc == 0)
        ST(((fconn *)conn)->owed, 1);
    return rc;
}

/* The owed reply never arrives by itself: without a wait it is still owed;
 * a wait reads it (ok, or the failure it is told to be). */
static int f_settle(void *ctx, void *conn, double deadline)
{
    fake *f = ctx;
    fconn *c = conn;
    if (!LD(c->owed))
        return 0;
    if (deadline == 0) {
        INC(f->settles_nowait);
        if (LD(f->nowait_reads) && nc_now() >= c->answer_at) {
            ST(c->owed, 0);
            return LD(c->owed_fails) ? -1 : 0;
        }
        return 1;
    }
    INC(f->settles_waited);
    if (!f_await(c, deadline))
        return 1;   /* late: still owed */
    ST(c->owed, 0);
    return LD(c->owed_fails) ? -1 : 0;
}

/* As nc_pg.c: broken for the pool's reason, returned as -1 (closed). */
static void f_give_up(void *ctx, void *conn, const char *why)
{
    fake *f = ctx;
    fconn *c = conn;
    c->gave_up = why;
    ST(f->forced_return_state, -1);
}

static void f_close(void *ctx, void *conn)
{
    fake *f = ctx;
    fconn *c = conn;
    int k = INC(f->nlifetimes) - 1;
    if (k < 64)
        f->lifetimes[k] = nc_now() - c->opened;
    INC(f->closes);
    free(conn);
}

static void f_ctx_free(void *ctx)
{
    (void)ctx;
    INC(ctx_frees);
}

static const nc_backend_ops fake_ops = {
    .kind = "fake",
    .ping_new = 0,
    .connect = f_connect,
    .looks_alive = f_looks_alive,
    .ping = f_ping,
    .return_state = f_return_state,
    .reset = f_reset,
    .close = f_close,
    .ctx_free = f_ctx_free,
};

static const nc_backend_ops fake_ops_ping_new = {
    .kind = "fake",
    .ping_new = 1,
    .connect = f_connect,
    .looks_alive = f_looks_alive,
    .ping = f_ping,
    .return_state = f_return_state,
    .reset = f_reset,
    .close = f_close,
    .ctx_free = f_ctx_free,
};

static const nc_backend_ops fake_ops_owed = {
    .kind = "fake",
    .ping_new = 0,
    .connect = f_connect,
    .looks_alive = f_looks_alive,
    .ping = f_ping,
    .return_state = f_return_state,
    .reset = f_reset_owed,
    .settle = f_settle,
    .give_up = f_give_up,
    .close = f_close,
    .ctx_free = f_ctx_free,
};

static fconn *raw(nc_conn *c) { return c->raw; }

/* ---- helpers ------------------------------------------------------------- */

/* A configuration where nothing happens in the background unless a test asks:
 * the janitor runs (validate = 1) but its round is far away. */
static void base_cfg(nc_pool_config *cfg, int max)
{
    nc_pool_config_defaults(cfg);
    cfg->max_connections = max;
    cfg->min_connections = 0;
    cfg->acquire_timeout = 2.0;
    cfg->retry_attempts = 1;
    cfg->retry_backoff = 0.01;
    cfg->validate = 1;
    cfg->validation_interval = 30.0;
    cfg->validation_timeout = 1.0;
    cfg->connect_timeout = 1.0;
    cfg->idle_timeout = 0;
    cfg->max_lifetime = 0;
    cfg->lifetime_jitter = 0;
    cfg->ping_after_idle = 30.0;
}

static nc_pool *mkpool(const nc_pool_config *cfg, fake *f)
{
    nc_error err;
    nc_error_clear(&err);
    nc_pool *p = nc_pool_new(cfg, &fake_ops, f, &err);
    if (!p) {
        printf("FATAL: nc_pool_new: %d %s\n", err.code, err.message);
        exit(2);
    }
    return p;
}

static nc_pool_stats stats(nc_pool *p)
{
    nc_pool_stats s;
    nc_pool_get_stats(p, &s);
    return s;
}

/* Poll until pred(p) or timeout seconds; 1 when it came true. */
typedef int (*pred_fn)(nc_pool *p, int arg);

static int wait_for(nc_pool *p, pred_fn pred, int arg, double timeout)
{
    double until = nc_now() + timeout;
    for (;;) {
        if (pred(p, arg))
            return 1;
        if (nc_now() >= until)
            return 0;
        sleep_s(0.001);
    }
}

static int waiting_is(nc_pool *p, int n) { return stats(p).waiting == n; }
static int total_is(nc_pool *p, int n) { return stats(p).total == n; }
static int idle_is(nc_pool *p, int n) { return stats(p).idle == n; }
static int active_is(nc_pool *p, int n) { return stats(p).active == n; }
static int valfail_at_least(nc_pool *p, int n) { return stats(p).validation_failures >= (uint64_t)n; }
static int pings_at_least(nc_pool *p, int n) { return LD(((fake *)nc_pool_ctx(p))->pings) >= n; }

static int get(nc_pool *p, double timeout, nc_conn **c, uint64_t *lease, nc_error *err)
{
    nc_error_clear(err);
    return nc_pool_acquire(p, timeout, c, lease, err);
}

/* A borrower thread: acquires, notes when and what it got, optionally gives
 * the connection back at once (after holding it hold seconds). */
typedef struct borrower {
    pthread_t th;
    nc_pool *p;
    double timeout;
    int release;            /* give it back before returning */
    double hold;
    int *order_counter;     /* shared: order in which borrowers were served */
    int *gate;              /* when set: hold the connection until *gate != 0 */
    /* results */
    int rc;
    nc_error err;
    nc_conn *c;
    uint64_t lease;
    uint64_t serial;
    int order;
    double started, finished;
    double released;        /* when it gave the connection back */
} borrower;

static void *borrower_main(void *arg)
{
    borrower *b = arg;
    b->started = nc_now();
    b->rc = get(b->p, b->timeout, &b->c, &b->lease, &b->err);
    b->finished = nc_now();
    b->order = -1;
    if (b->rc == 0) {
        b->serial = b->c->serial;
        if (b->order_counter)
            b->order = INC(*b->order_counter) - 1;
        if (b->hold > 0)
            sleep_s(b->hold);
        while (b->gate && !LD(*b->gate))
            sleep_s(0.001);
        if (b->release) {
            b->released = nc_now();
            nc_pool_release(b->p, b->c, 0);
        }
    }
    return NULL;
}

static void start_borrower_ex(borrower *b, nc_pool *p, double timeout, int release, double hold,
                              int *order_counter)
{
    memset(b, 0, sizeof *b);
    b->p = p;
    b->timeout = timeout;
    b->release = release;
    b->hold = hold;
    b->order_counter = order_counter;
    if (pthread_create(&b->th, NULL, borrower_main, b)) {
        printf("FATAL: pthread_create\n");
        exit(2);
    }
}

static void start_borrower(borrower *b, nc_pool *p, double timeout, int release)
{
    start_borrower_ex(b, p, timeout, release, 0, NULL);
}

/* ---- tests --------------------------------------------------------------- */

static void test_config(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    cfg.min_connections = 3;
    nc_error err;
    nc_error_clear(&err);
    int before = LD(ctx_frees);
    nc_pool *p = nc_pool_new(&cfg, &fake_ops, &f, &err);
    CHECK(p == NULL, "min > max accepted");
    CHECK(err.code == NC_E_CONFIG, "code %d", err.code);
    CHECK(LD(ctx_frees) == before + 1, "ctx not freed on failure");

    base_cfg(&cfg, 2);
    p = mkpool(&cfg, &f);
    CHECK(nc_pool_ctx(p) == &f, "ctx");
    CHECK(nc_pool_ops(p) == &fake_ops, "ops");
    CHECK(nc_pool_config_of(p)->max_connections == 2, "config_of");
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
    CHECK(LD(ctx_frees) == before + 2, "ctx not freed by nc_pool_free");
    CHECK(f.connect_calls == 0, "connected %d times without a borrow", f.connect_calls);
}

static void test_reuse_lifo(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 3);
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a, *b, *c;
    uint64_t la, lb, lc;

    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    CHECK(get(p, 1, &b, &lb, &err) == 0, "%s", err.message);
    CHECK(a != b && a->serial != b->serial, "two borrows got the same connection");
    uint64_t sa = a->serial, sb = b->serial;
    nc_pool_release(p, a, 0);
    nc_pool_release(p, b, 0);
    nc_pool_stats s = stats(p);
    CHECK(s.idle == 2 && s.active == 0 && s.total == 2, "idle %d active %d total %d", s.idle, s.active, s.total);

    /* LIFO: the one returned last comes out first. */
    CHECK(get(p, 1, &c, &lc, &err) == 0, "%s", err.message);
    CHECK(c->serial == sb, "got serial %llu, want %llu (last returned)", (unsigned long long)c->serial,
          (unsigned long long)sb);
    nc_conn *d;
    uint64_t ld;
    CHECK(get(p, 1, &d, &ld, &err) == 0, "%s", err.message);
    CHECK(d->serial == sa, "got serial %llu, want %llu", (unsigned long long)d->serial, (unsigned long long)sa);
    nc_pool_release(p, d, 0);
    nc_pool_release(p, c, 0);

    /* try_acquire takes the top of the idle stack without blocking. */
    nc_conn *e = NULL;
    uint64_t le = 0;
    nc_error_clear(&err);
    CHECK(nc_pool_try_acquire(p, &e, &le, &err) == 1, "try_acquire: %s", err.message);
    CHECK(e && e->serial == sb, "try_acquire did not take the last returned");
    CHECK(e && nc_pool_lease_valid(p, e, le), "try_acquire lease not valid");
    nc_pool_release(p, e, 0);

    s = stats(p);
    CHECK(s.opened == 2, "opened %llu, want 2", (unsigned long long)s.opened);
    CHECK(s.acquires == 5, "acquires %llu, want 5", (unsigned long long)s.acquires);
    CHECK(s.closed == 0, "closed %llu", (unsigned long long)s.closed);
    CHECK(f.connects == 2, "connects %d", f.connects);
    CHECK(f.pings == 0, "pinged %d times with ping_after_idle 30 s", f.pings);

    nc_error qe;
    nc_error_set(&qe, NC_E_QUERY, NC_K_NONE, "syntax error");
    nc_pool_statement_done(p, NULL);
    nc_pool_statement_done(p, &qe);
    s = stats(p);
    CHECK(s.queries == 2 && s.query_errors == 1, "queries %llu errors %llu", (unsigned long long)s.queries,
          (unsigned long long)s.query_errors);

    CHECK(nc_pool_shutdown(p, 0) == 0, "shutdown with all idle");
    CHECK(f.closes == 2, "closes %d after shutdown", f.closes);
    nc_pool_free(p);
}

static void test_max_and_timeout(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a, *b, *x;
    uint64_t la, lb, lx;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    CHECK(get(p, 1, &b, &lb, &err) == 0, "%s", err.message);

    /* try_acquire does not wait and does not open. */
    nc_error_clear(&err);
    CHECK(nc_pool_try_acquire(p, &x, &lx, &err) == 0, "try_acquire on a full pool");

    /* One other caller queued with a long timeout. */
    borrower w;
    start_borrower(&w, p, 5.0, 1);
    CHECK(wait_for(p, waiting_is, 1, 2.0), "the borrower never queued");

    double t0 = nc_now();
    int rc = get(p, 0.2, &x, &lx, &err);
    double el = nc_now() - t0;
    CHECK(rc == -1, "acquire on a full pool succeeded");
    CHECK(err.code == NC_E_POOL_TIMEOUT, "code %d: %s", err.code, err.message);
    CHECK(el >= 0.2 - 0.002 && el < 0.2 + SLACK, "timed out after %.3f s, want 0.2", el);
    CHECK(strstr(err.message, "2 of 2 connections in use") != NULL, "message: %s", err.message);
    CHECK(strstr(err.message, "2 callers waiting") != NULL, "message: %s", err.message);
    printf("  (2003 message: %s; after %.3f s)\n", err.message, el);

    /* Default timeout (< 0): the configured acquire_timeout.  The waiting count
     * in the message includes the caller that gave up. */
    nc_pool_config cfg2;
    base_cfg(&cfg2, 1);
    cfg2.acquire_timeout = 0.1;
    fake f2 = {0};
    nc_pool *p2 = mkpool(&cfg2, &f2);
    nc_conn *y, *z;
    uint64_t ly, lz;
    CHECK(get(p2, -1, &y, &ly, &err) == 0, "%s", err.message);
    t0 = nc_now();
    rc = get(p2, -1, &z, &lz, &err);
    el = nc_now() - t0;
    CHECK(rc == -1 && err.code == NC_E_POOL_TIMEOUT, "rc %d code %d", rc, err.code);
    CHECK(el >= 0.1 - 0.002 && el < 0.1 + SLACK, "default timeout fired after %.3f s, want 0.1", el);
    CHECK(strstr(err.message, "1 of 1 connections in use") && strstr(err.message, "1 caller waiting"),
          "message: %s", err.message);
    /* timeout 0: fails at once */
    t0 = nc_now();
    rc = get(p2, 0, &z, &lz, &err);
    el = nc_now() - t0;
    CHECK(rc == -1 && err.code == NC_E_POOL_TIMEOUT && el < SLACK, "timeout 0: rc %d code %d after %.3f", rc,
          err.code, el);
    nc_pool_release(p2, y, 0);
    nc_pool_shutdown(p2, 0);
    nc_pool_free(p2);

    nc_pool_stats s = stats(p);
    CHECK(s.total == 2 && s.active == 2 && s.waiting == 1, "total %d active %d waiting %d", s.total, s.active,
          s.waiting);
    CHECK(s.acquire_timeouts == 1, "acquire_timeouts %llu", (unsigned long long)s.acquire_timeouts);
    CHECK(s.opened == 2 && f.connect_calls == 2, "opened %llu connect calls %d (max is 2)",
          (unsigned long long)s.opened, f.connect_calls);

    nc_pool_release(p, a, 0);   /* goes to the queued borrower */
    pthread_join(w.th, NULL);
    CHECK(w.rc == 0, "queued borrower: %s", w.err.message);
    nc_pool_release(p, b, 0);
    s = stats(p);
    CHECK(s.total == 2 && s.idle == 2 && s.opened == 2, "total %d idle %d opened %llu", s.total, s.idle,
          (unsigned long long)s.opened);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

#define NFIFO 6

static void test_fifo(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 1);
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a;
    uint64_t la;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    uint64_t serial = a->serial;

    /* Each borrower keeps the connection until the gate opens, so the state
     * right after a return is known: the connection is with the oldest
     * waiter and the others still queue. */
    int counter = 0, gate = 0;
    borrower w[NFIFO];
    for (int i = 0; i < NFIFO; i++) {
        start_borrower_ex(&w[i], p, 5.0, 1, 0, &counter);
        w[i].gate = &gate;   /* read by the thread only after its acquire returns */
        CHECK(wait_for(p, waiting_is, i + 1, 2.0), "borrower %d never queued", i);
    }
    nc_pool_release(p, a, 0);
    /* A late arrival must not overtake the queue, not even with try_acquire:
     * the returned connection went straight to the oldest waiter. */
    nc_conn *x = NULL;
    uint64_t lx;
    nc_error_clear(&err);
    int r = nc_pool_try_acquire(p, &x, &lx, &err);
    CHECK(r == 0 && err.code == 0, "a late try_acquire overtook %d waiters: rc %d code %d", NFIFO, r, err.code);
    if (r == 1)
        nc_pool_release(p, x, 0);
    CHECK(wait_for(p, active_is, 1, 2.0) && stats(p).waiting == NFIFO - 1,
          "after the return: active %d waiting %d, want 1 and %d", stats(p).active, stats(p).waiting,
          NFIFO - 1);
    CHECK(wait_for(p, waiting_is, NFIFO - 1, 0) && LD(counter) <= 1, "served %d", LD(counter));
    /* A plain acquire with timeout 0 does not overtake either. */
    nc_error_clear(&err);
    CHECK(get(p, 0, &x, &lx, &err) == -1 && err.code == NC_E_POOL_TIMEOUT, "a late acquire(0) overtook: code %d",
          err.code);
    ST(gate, 1);   /* each borrower gives it back: served one by one */
    for (int i = 0; i < NFIFO; i++)
        pthread_join(w[i].th, NULL);
    for (int i = 0; i < NFIFO; i++) {
        CHECK(w[i].rc == 0, "borrower %d: %s", i, w[i].err.message);
        CHECK(w[i].order == i, "borrower %d was served as number %d", i, w[i].order);
        CHECK(w[i].serial == serial, "borrower %d got serial %llu, want the one connection %llu", i,
              (unsigned long long)w[i].serial, (unsigned long long)serial);
    }
    nc_pool_stats s = stats(p);
    CHECK(s.opened == 1, "opened %llu", (unsigned long long)s.opened);
    CHECK(s.acquires == NFIFO + 1, "acquires %llu, want %d", (unsigned long long)s.acquires, NFIFO + 1);
    /* Now nobody waits: try_acquire takes the idle connection. */
    nc_error_clear(&err);
    CHECK(nc_pool_try_acquire(p, &x, &lx, &err) == 1, "try_acquire with nobody waiting: %s", err.message);
    nc_pool_release(p, x, 0);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

static void test_handoff_and_lease(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 1);
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a;
    uint64_t la;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    CHECK(nc_pool_lease_valid(p, a, la), "fresh lease not valid");
    uint64_t serial = a->serial;

    borrower w;
    start_borrower(&w, p, 5.0, 0);
    CHECK(wait_for(p, waiting_is, 1, 2.0), "borrower never queued");
    nc_pool_release(p, a, 0);
    CHECK(!nc_pool_lease_valid(p, a, la), "lease still valid after release");
    pthread_join(w.th, NULL);
    CHECK(w.rc == 0, "%s", w.err.message);
    CHECK(w.c == a && w.serial == serial, "the waiter did not get the returned connection");
    CHECK(w.lease != la, "same lease number for the next borrower");
    CHECK(nc_pool_lease_valid(p, w.c, w.lease), "handed-off lease not valid");
    CHECK(!nc_pool_lease_valid(p, a, la), "old lease valid again after handoff");
    nc_pool_stats s = stats(p);
    CHECK(s.idle == 0 && s.active == 1 && s.opened == 1, "idle %d active %d opened %llu", s.idle, s.active,
          (unsigned long long)s.opened);

    nc_pool_release(p, w.c, 0);
    CHECK(!nc_pool_lease_valid(p, w.c, w.lease), "lease valid after release");
    nc_conn *b;
    uint64_t lb;
    CHECK(get(p, 1, &b, &lb, &err) == 0, "%s", err.message);
    CHECK(b == a, "single slot");
    CHECK(nc_pool_lease_valid(p, b, lb) && !nc_pool_lease_valid(p, a, la) &&
              !nc_pool_lease_valid(p, w.c, w.lease),
          "leases mixed up");
    nc_pool_release(p, b, 1);   /* discard */
    CHECK(!nc_pool_lease_valid(p, b, lb), "lease valid after discard");
    s = stats(p);
    CHECK(s.total == 0 && s.closed == 1 && f.closes == 1, "total %d closed %llu", s.total,
          (unsigned long long)s.closed);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

static void test_discard_frees_place(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 1);
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a;
    uint64_t la;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    uint64_t serial = a->serial;
    borrower w;
    start_borrower(&w, p, 5.0, 0);
    CHECK(wait_for(p, waiting_is, 1, 2.0), "borrower never queued");
    double t0 = nc_now();
    nc_pool_release(p, a, 1);
    pthread_join(w.th, NULL);
    CHECK(w.rc == 0, "waiter: %s", w.err.message);
    CHECK(w.serial != serial, "waiter got the discarded connection");
    CHECK(w.finished - t0 < SLACK, "waiter served %.3f s after the discard", w.finished - t0);
    nc_pool_stats s = stats(p);
    CHECK(s.opened == 2 && s.closed == 1 && s.total == 1 && s.active == 1, "opened %llu closed %llu total %d",
          (unsigned long long)s.opened, (unsigned long long)s.closed, s.total);
    CHECK(f.connects == 2 && f.closes == 1, "connects %d closes %d", f.connects, f.closes);

    /* The waiter's own open fails: the place passes on to the next waiter. */
    ST(f.connect_fail_always, 1);
    borrower w2, w3;
    start_borrower(&w2, p, 5.0, 0);
    CHECK(wait_for(p, waiting_is, 1, 2.0), "w2 never queued");
    start_borrower(&w3, p, 5.0, 0);
    CHECK(wait_for(p, waiting_is, 2, 2.0), "w3 never queued");
    nc_pool_release(p, w.c, 1);
    pthread_join(w2.th, NULL);
    CHECK(w2.rc == -1 && w2.err.code == NC_E_NEW_FAILED, "w2 rc %d code %d", w2.rc, w2.err.code);
    ST(f.connect_fail_always, 0);
    pthread_join(w3.th, NULL);  /* may have failed too if it tried while connects failed */
    if (w3.rc == 0) {
        passed++;
        nc_pool_release(p, w3.c, 0);
    } else {
        CHECK(w3.err.code == NC_E_NEW_FAILED, "w3 code %d: %s", w3.err.code, w3.err.message);
    }
    s = stats(p);
    CHECK(s.waiting == 0 && s.active == 0 && s.opening == 0, "waiting %d active %d opening %d", s.waiting,
          s.active, s.opening);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

static void test_return_state(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a;
    uint64_t la;

    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    uint64_t serial = a->serial;
    CHECK(nc_pool_release_quick(p, a) == 1 && stats(p).idle == 1, "a clean connection goes back at once");
    CHECK(get(p, 1, &a, &la, &err) == 0 && a->serial == serial, "%s", err.message);
    ST(raw(a)->in_txn, 1);
    CHECK(nc_pool_release_quick(p, a) == 0 && stats(p).active == 1, "an open transaction is not given back quick");
    nc_pool_release(p, a, 0);
    CHECK(f.resets == 1, "resets %d", f.resets);
    nc_pool_stats s = stats(p);
    CHECK(s.idle == 1 && s.closed == 0, "a reset connection was not kept: idle %d closed %llu", s.idle,
          (unsigned long long)s.closed);
    CHECK(get(p, 1, &a, &la, &err) == 0 && a->serial == serial, "the reset connection was not reused");

    /* a failing reset discards */
    ST(raw(a)->in_txn, 1);
    ST(f.reset_fail, 1);
    nc_pool_release(p, a, 0);
    ST(f.reset_fail, 0);
    s = stats(p);
    CHECK(f.resets == 2 && s.total == 0 && s.closed == 1, "failed reset: resets %d total %d closed %llu",
          f.resets, s.total, (unsigned long long)s.closed);

    /* return_state -1 (broken) discards without a reset */
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    ST(f.forced_return_state, -1);
    CHECK(nc_pool_release_quick(p, a) == 0 && f.closes == 1, "a broken connection is not closed quick");
    nc_pool_release(p, a, 0);
    ST(f.forced_return_state, 0);
    s = stats(p);
    CHECK(f.resets == 2 && s.total == 0 && s.closed == 2, "broken: resets %d total %d closed %llu", f.resets,
          s.total, (unsigned long long)s.closed);

    /* discard=1 closes without asking */
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    ST(f.forced_return_state, 1);
    nc_pool_release(p, a, 1);
    ST(f.forced_return_state, 0);
    CHECK(f.resets == 2, "discard ran a reset");
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

/* A return that leaves a reply owed (PostgreSQL's ROLLBACK sent without
 * waiting): no borrower gets the connection before the reply is read, the
 * fast path never waits for it, and a failed reply means another
 * connection for the borrower, also when the connection is handed straight
 * to a waiter. */
static void test_owed_reply(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 1);
    nc_error err;
    nc_error_clear(&err);
    nc_pool *p = nc_pool_new(&cfg, &fake_ops_owed, &f, &err);
    CHECK(p != NULL, "%s", err.message);
    if (!p)
        return;
    nc_conn *a, *x;
    uint64_t la, lx;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    uint64_t serial = a->serial;
    ST(raw(a)->in_txn, 1);
    nc_pool_release(p, a, 0);
    CHECK(f.resets == 1 && LD(raw(a)->owed) == 1 && stats(p).idle == 1, "the return did not leave a reply owed");

    /* the fast path (GIL held in the binding) does not wait: it declines */
    nc_error_clear(&err);
    CHECK(nc_pool_try_acquire(p, &x, &lx, &err) == 0, "try_acquire lent a connection that owes a reply");
    CHECK(f.settles_nowait >= 1 && f.settles_waited == 0, "nowait %d waited %d", f.settles_nowait,
          f.settles_waited);
    /* acquire reads the reply, then lends the same connection */
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    CHECK(a->serial == serial && f.settles_waited == 1 && !LD(raw(a)->owed), "serial %llu waited %d",
          (unsigned long long)a->serial, f.settles_waited);

    /* a failed reply: the borrower gets a new connection */
    ST(raw(a)->in_txn, 1);
    ST(raw(a)->owed_fails, 1);
    nc_pool_release(p, a, 0);
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    nc_pool_stats s = stats(p);
    CHECK(a->serial != serial && !LD(raw(a)->owed_fails), "lent the connection whose reply failed");
    CHECK(s.validation_failures == 1 && s.replaced == 1 && s.closed == 1 && s.total == 1,
          "validation_failures %llu replaced %llu closed %llu total %d",
          (unsigned long long)s.validation_failures, (unsigned long long)s.replaced,
          (unsigned long long)s.closed, s.total);
    serial = a->serial;

    /* handed straight to a waiter: the waiter reads the reply first */
    borrower w;
    start_borrower(&w, p, 5.0, 0);
    CHECK(wait_for(p, waiting_is, 1, 2.0), "borrower never queued");
    ST(raw(a)->in_txn, 1);
    nc_pool_release(p, a, 0);
    pthread_join(w.th, NULL);
    CHECK(w.rc == 0 && w.serial == serial, "rc %d: %s", w.rc, w.err.message);
    CHECK(w.rc == 0 && !LD(raw(w.c)->owed) && f.settles_waited == 3, "the waiter did not read the reply "
          "(waited %d)", f.settles_waited);
    CHECK(w.rc == 0 && nc_pool_lease_valid(p, w.c, w.lease), "the waiter's lease is not valid");
    s = stats(p);
    CHECK(s.active == 1 && s.idle == 0 && s.total == 1, "active %d idle %d total %d", s.active, s.idle, s.total);

    /* handed to a waiter, and the reply failed: a new one for the waiter */
    borrower w2;
    start_borrower(&w2, p, 5.0, 0);
    CHECK(wait_for(p, waiting_is, 1, 2.0), "borrower never queued");
    if (w.rc == 0) {
        ST(raw(w.c)->in_txn, 1);
        ST(raw(w.c)->owed_fails, 1);
        nc_pool_release(p, w.c, 0);
    }
    pthread_join(w2.th, NULL);
    CHECK(w2.rc == 0 && w2.serial != serial, "rc %d serial %llu: %s", w2.rc, (unsigned long long)w2.serial,
          w2.err.message);
    s = stats(p);
    CHECK(s.active == 1 && s.idle == 0 && s.total == 1 && s.opening == 0 && s.validation_failures == 2 &&
              s.closed == 2,
          "active %d idle %d total %d opening %d validation_failures %llu closed %llu", s.active, s.idle,
          s.total, s.opening, (unsigned long long)s.validation_failures, (unsigned long long)s.closed);
    if (w2.rc == 0)
        nc_pool_release(p, w2.c, 0);
    CHECK(f.connects == 3 && f.closes == 2, "connects %d closes %d", f.connects, f.closes);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

static void test_dead_on_borrow(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a, *x;
    uint64_t la, lx;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    uint64_t serial = a->serial;
    fconn *fa = raw(a);
    nc_pool_release(p, a, 0);
    ST(fa->dead, 1);
    /* Past the window in which a just-polled connection is lent unpolled. */
    sleep_s(0.006);

    /* The fast path will not lend it ... */
    nc_error_clear(&err);
    CHECK(nc_pool_try_acquire(p, &x, &lx, &err) == 0, "try_acquire lent a dead connection");
    /* ... and acquire replaces it without troubling the caller. */
    nc_error_clear(&err);
    int rc = get(p, 1, &a, &la, &err);
    CHECK(rc == 0, "acquire failed on a dead idle connection: %d %s", err.code, err.message);
    CHECK(err.code == 0, "error left set: %d", err.code);
    CHECK(rc == 0 && a->serial != serial, "the dead connection was lent");
    CHECK(rc == 0 && !LD(raw(a)->dead), "lent a dead connection");
    nc_pool_stats s = stats(p);
    CHECK(s.validation_failures == 1, "validation_failures %llu", (unsigned long long)s.validation_failures);
    CHECK(s.replaced == 1, "replaced %llu", (unsigned long long)s.replaced);
    CHECK(s.closed == 1 && s.opened == 2 && s.total == 1, "closed %llu opened %llu total %d",
          (unsigned long long)s.closed, (unsigned long long)s.opened, s.total);
    CHECK(f.closes == 1, "closes %d", f.closes);
    if (rc == 0)
        nc_pool_release(p, a, 0);

    /* Replacement fails: 2011 (failed to create a replacement). */
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    fa = raw(a);
    nc_pool_release(p, a, 0);
    ST(fa->dead, 1);
    ST(f.connect_fail_always, 1);
    rc = get(p, 1, &a, &la, &err);
    ST(f.connect_fail_always, 0);
    CHECK(rc == -1 && err.code == NC_E_REPLACE_FAILED, "rc %d code %d: %s", rc, err.code, err.message);
    s = stats(p);
    CHECK(s.total == 0 && s.opening == 0, "slot not freed after a failed replacement: total %d", s.total);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

static void test_ping_after_idle(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    cfg.ping_after_idle = 0.05;
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a;
    uint64_t la;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    uint64_t serial = a->serial;
    nc_pool_release(p, a, 0);
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    CHECK(f.pings == 0, "pinged a connection idle for less than ping_after_idle");
    nc_pool_release(p, a, 0);
    sleep_s(0.08);
    /* idle longer than ping_after_idle: the fast path declines, acquire pings */
    nc_conn *x;
    uint64_t lx;
    nc_error_clear(&err);
    CHECK(nc_pool_try_acquire(p, &x, &lx, &err) == 0, "try_acquire lent one that needs a ping");
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    CHECK(f.pings == 1, "pings %d, want 1", f.pings);
    CHECK(a->serial == serial, "a healthy connection was replaced");
    nc_pool_release(p, a, 0);

    /* The ping fails: replaced, no error for the caller. */
    fconn *fa = raw(a);
    ST(fa->ping_fail, 1);
    sleep_s(0.08);
    nc_error_clear(&err);
    int rc = get(p, 1, &a, &la, &err);
    CHECK(rc == 0 && err.code == 0, "rc %d code %d %s", rc, err.code, err.message);
    CHECK(rc == 0 && a->serial != serial, "the connection that failed its ping was lent");
    CHECK(f.pings == 2, "pings %d, want 2", f.pings);
    nc_pool_stats s = stats(p);
    CHECK(s.validation_failures == 1 && s.replaced == 1, "validation_failures %llu replaced %llu",
          (unsigned long long)s.validation_failures, (unsigned long long)s.replaced);
    if (rc == 0)
        nc_pool_release(p, a, 0);

    /* validate = 0: no looks_alive, no ping */
    fake g = {0};
    base_cfg(&cfg, 1);
    cfg.validate = 0;
    cfg.ping_after_idle = 0.0;
    nc_pool *q = mkpool(&cfg, &g);
    CHECK(get(q, 1, &a, &la, &err) == 0, "%s", err.message);
    nc_pool_release(q, a, 0);
    sleep_s(0.01);
    CHECK(get(q, 1, &a, &la, &err) == 0, "%s", err.message);
    CHECK(g.pings == 0 && g.looks == 0, "validate=0 still checked: pings %d looks %d", g.pings, g.looks);
    nc_pool_release(q, a, 0);
    nc_pool_shutdown(q, 0);
    nc_pool_free(q);

    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

static void test_connect_retry(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    cfg.retry_attempts = 3;
    cfg.retry_backoff = 0.01;
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a;
    uint64_t la;

    /* Two transient failures, success on the third attempt. */
    ST(f.connect_fail_next, 2);
    double t0 = nc_now();
    int rc = get(p, 2, &a, &la, &err);
    double el = nc_now() - t0;
    CHECK(rc == 0, "third attempt should succeed: %d %s", err.code, err.message);
    CHECK(f.connect_calls == 3, "connect calls %d, want 3", f.connect_calls);
    nc_pool_stats s = stats(p);
    CHECK(s.connect_failures == 2 && s.opened == 1, "connect_failures %llu opened %llu",
          (unsigned long long)s.connect_failures, (unsigned long long)s.opened);
    /* backoff 0.01 then 0.02 */
    CHECK(el >= 0.03 - 0.002 && el < 0.03 + SLACK, "retries took %.3f s, want about 0.03", el);
    if (rc == 0)
        nc_pool_release(p, a, 0);

    /* Permanent failure: 2009 naming the attempts. */
    ST(f.connect_fail_always, 1);
    nc_conn *b;
    uint64_t lb;
    CHECK(get(p, 2, &a, &la, &err) == 0, "idle one");   /* take the idle one so a new one is needed */
    int calls = f.connect_calls;
    rc = get(p, 2, &b, &lb, &err);
    CHECK(rc == -1 && err.code == NC_E_NEW_FAILED, "rc %d code %d", rc, err.code);
    CHECK(strstr(err.message, "after 3 attempts") != NULL, "message: %s", err.message);
    CHECK(strstr(err.message, "fake connect refused") != NULL, "last error not in message: %s", err.message);
    CHECK(f.connect_calls - calls == 3, "connect calls %d, want 3", f.connect_calls - calls);
    printf("  (2009 message: %s)\n", err.message);
    s = stats(p);
    CHECK(s.connect_failures == 5, "connect_failures %llu", (unsigned long long)s.connect_failures);
    CHECK(s.total == 1 && s.opening == 0, "the failed open kept its slot: total %d opening %d", s.total,
          s.opening);
    ST(f.connect_fail_always, 0);
    rc = get(p, 2, &b, &lb, &err);
    CHECK(rc == 0, "slot not reusable after a failed open: %s", err.message);
    if (rc == 0)
        nc_pool_release(p, b, 0);
    nc_pool_release(p, a, 0);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);

    /* One attempt only: "after 1 attempt". */
    fake g = {0};
    base_cfg(&cfg, 1);
    cfg.retry_attempts = 1;
    nc_pool *q = mkpool(&cfg, &g);
    ST(g.connect_fail_always, 1);
    rc = get(q, 1, &a, &la, &err);
    CHECK(rc == -1 && err.code == NC_E_NEW_FAILED && strstr(err.message, "after 1 attempt:"), "%d %s",
          err.code, err.message);
    nc_pool_shutdown(q, 0);
    nc_pool_free(q);

    /* ping_new backend: a new connection failing its ping is 2008. */
    fake h = {0};
    base_cfg(&cfg, 1);
    nc_error_clear(&err);
    nc_pool *r = nc_pool_new(&cfg, &fake_ops_ping_new, &h, &err);
    CHECK(r != NULL, "%s", err.message);
    if (r) {
        ST(h.ping_fail_all, 1);
        rc = get(r, 1, &a, &la, &err);
        CHECK(rc == -1 && err.code == NC_E_NEW_INVALID, "rc %d code %d %s", rc, err.code, err.message);
        CHECK(h.connects == 1 && h.closes == 1, "connects %d closes %d", h.connects, h.closes);
        ST(h.ping_fail_all, 0);
        rc = get(r, 1, &a, &la, &err);
        CHECK(rc == 0 && h.pings == 2, "rc %d pings %d", rc, h.pings);
        if (rc == 0)
            nc_pool_release(r, a, 0);
        nc_pool_shutdown(r, 0);
        nc_pool_free(r);
    }
}

static void test_retry_deadline(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 1);
    cfg.retry_attempts = 20;
    cfg.retry_backoff = 0.5;
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a;
    uint64_t la;

    /* Failing at once, long backoff: the backoff stops at the deadline. */
    ST(f.connect_fail_always, 1);
    double t0 = nc_now();
    int rc = get(p, 0.25, &a, &la, &err);
    double el = nc_now() - t0;
    CHECK(rc == -1 && err.code == NC_E_NEW_FAILED, "rc %d code %d", rc, err.code);
    CHECK(el < 0.25 + SLACK, "gave up after %.3f s, deadline was 0.25 s", el);
    CHECK(f.connect_calls < 20, "connect calls %d", f.connect_calls);
    printf("  (backoff past the deadline: gave up after %.3f s, %d connect calls: %s)\n", el, f.connect_calls,
           err.message);
    ST(f.connect_fail_always, 0);

    /* Slow connects: each attempt bounded by connect_timeout, all by the deadline. */
    f.connect_delay = 1.0;
    cfg.connect_timeout = 0.1;
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
    cfg.retry_backoff = 0.01;
    p = mkpool(&cfg, &f);
    int calls = f.connect_calls;
    t0 = nc_now();
    rc = get(p, 0.35, &a, &la, &err);
    el = nc_now() - t0;
    CHECK(rc == -1 && err.code == NC_E_NEW_FAILED, "rc %d code %d", rc, err.code);
    CHECK(el >= 0.3 && el < 0.35 + SLACK, "gave up after %.3f s, deadline was 0.35 s", el);
    CHECK(f.connect_calls - calls >= 3, "connect calls %d, want >= 3 of 0.1 s each",
          f.connect_calls - calls);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

static void test_janitor_min(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 4);
    cfg.min_connections = 2;
    cfg.validation_interval = 30;   /* no round during the test: what happens is the kick */
    nc_pool *p = mkpool(&cfg, &f);
    CHECK(wait_for(p, idle_is, 2, 1.0 + SLACK), "min_connections not opened in the background");
    nc_pool_stats s = stats(p);
    CHECK(s.total == 2 && s.opened == 2 && s.acquires == 0, "total %d opened %llu acquires %llu", s.total,
          (unsigned long long)s.opened, (unsigned long long)s.acquires);

    /* A discarded one is refilled at once (the janitor is kicked). */
    nc_error err;
    nc_conn *a;
    uint64_t la;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    double t0 = nc_now();
    nc_pool_release(p, a, 1);
    CHECK(wait_for(p, idle_is, 2, 5.0), "not refilled to min after a discard");
    double el = nc_now() - t0;
    CHECK(el < SLACK, "refill took %.3f s (should not wait for the next round, 30 s away)", el);
    s = stats(p);
    CHECK(s.opened == 3 && s.closed == 1 && s.total == 2, "opened %llu closed %llu total %d",
          (unsigned long long)s.opened, (unsigned long long)s.closed, s.total);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
    CHECK(f.connects == f.closes, "connects %d closes %d", f.connects, f.closes);

    /* Rounds every 0.02 s do not open more than min. */
    fake g = {0};
    cfg.validation_interval = 0.02;
    p = mkpool(&cfg, &g);
    CHECK(wait_for(p, idle_is, 2, 1.0 + SLACK), "min_connections not opened in the background");
    uint64_t pings = (uint64_t)LD(g.pings);
    CHECK(wait_for(p, pings_at_least, (int)pings + 4, 2.0 + SLACK), "no janitor rounds");
    s = stats(p);
    CHECK(s.total == 2 && s.opened == 2, "total %d opened %llu", s.total, (unsigned long long)s.opened);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

/* The janitor finishes a connect after shutdown() gave up waiting for it:
 * the new connection is closed, not parked idle in the closed pool (where
 * nothing would ever close it). */
static void test_janitor_connect_after_shutdown(void)
{
    int gate = 0;
    fake f = {0};
    f.connect_gate = &gate;
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    cfg.min_connections = 1;
    nc_pool *p = mkpool(&cfg, &f);
    double end = nc_now() + 2.0 + SLACK;
    while (LD(f.connecting) == 0 && nc_now() < end)
        sleep_s(0.001);
    CHECK(LD(f.connecting) == 1, "the janitor is connecting");
    nc_pool_shutdown(p, 0);   /* waits 0.1 s for the janitor, then leaves it */
    ST(gate, 1);
    end = nc_now() + 2.0 + SLACK;
    while ((LD(f.connects) == 0 || LD(f.closes) < LD(f.connects)) && nc_now() < end)
        sleep_s(0.001);
    nc_pool_stats s = stats(p);
    CHECK(LD(f.connects) == 1 && LD(f.closes) == 1, "connects %d closes %d: the late connection must be closed",
          LD(f.connects), LD(f.closes));
    CHECK(s.idle == 0 && s.total == 0 && s.opened == s.closed, "idle %d total %d opened %llu closed %llu", s.idle,
          s.total, (unsigned long long)s.opened, (unsigned long long)s.closed);
    nc_pool_free(p);
}

static void test_idle_timeout(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 3);
    cfg.min_connections = 1;
    cfg.validation_interval = 0.05;
    cfg.idle_timeout = 0.15;
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *c[3];
    uint64_t l[3];
    for (int i = 0; i < 3; i++)
        CHECK(get(p, 1, &c[i], &l[i], &err) == 0, "%s", err.message);
    double t0 = nc_now();
    for (int i = 0; i < 3; i++)
        nc_pool_release(p, c[i], 0);
    CHECK(stats(p).idle == 3, "not idle");
    CHECK(wait_for(p, total_is, 1, 1.5), "idle connections above min not closed");
    double el = nc_now() - t0;
    CHECK(el >= 0.15 && el < 0.15 + 0.05 + SLACK, "closed after %.3f s, idle_timeout 0.15", el);
    nc_pool_stats s = stats(p);
    CHECK(s.closed == 2 && s.idle == 1, "closed %llu idle %d", (unsigned long long)s.closed, s.idle);
    /* min stays */
    sleep_s(0.25);
    s = stats(p);
    CHECK(s.total == 1 && s.closed == 2 && s.opened == 3, "total %d closed %llu opened %llu", s.total,
          (unsigned long long)s.closed, (unsigned long long)s.opened);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

static int serial_changed(nc_pool *p, int old_id)
{
    fake *f = nc_pool_ctx(p);
    nc_pool_stats s = stats(p);
    return LD(f->last_id) != old_id && s.idle == 1 && s.total == 1;
}

static void test_max_lifetime(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    cfg.min_connections = 1;
    cfg.validation_interval = 0.05;
    cfg.max_lifetime = 0.2;
    cfg.lifetime_jitter = 0;
    /* The connection opens after `before` and before `t0`: measured from
     * `before`, a retirement can never look early, from t0 never late, even
     * when this thread is descheduled between the two (a loaded machine). */
    double before = nc_now();
    nc_pool *p = mkpool(&cfg, &f);
    CHECK(wait_for(p, idle_is, 1, 1.0), "min not opened");
    double t0 = nc_now();
    int first = LD(f.last_id);
    CHECK(wait_for(p, serial_changed, first, 1.5), "connection not retired after max_lifetime");
    double now = nc_now();
    CHECK(now - before >= 0.2 - 0.01 && now - t0 < 0.2 + 0.05 + SLACK,
          "retired %.3f s after the pool was made, %.3f s after the connection was seen, max_lifetime 0.2",
          now - before, now - t0);
    nc_pool_stats s = stats(p);
    CHECK(s.closed >= 1 && s.replaced >= 1, "closed %llu replaced %llu", (unsigned long long)s.closed,
          (unsigned long long)s.replaced);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);

    /* A lent connection past its lifetime is closed when it comes back. */
    fake g = {0};
    base_cfg(&cfg, 2);
    cfg.max_lifetime = 0.1;
    nc_pool *q = mkpool(&cfg, &g);
    nc_error err;
    nc_conn *a;
    uint64_t la;
    CHECK(get(q, 1, &a, &la, &err) == 0, "%s", err.message);
    sleep_s(0.15);
    nc_pool_release(q, a, 0);
    s = stats(q);
    CHECK(s.total == 0 && s.closed == 1 && g.closes == 1, "expired connection kept: total %d closed %llu",
          s.total, (unsigned long long)s.closed);
    /* and an idle one past its lifetime is not lent */
    CHECK(get(q, 1, &a, &la, &err) == 0, "%s", err.message);
    uint64_t serial = a->serial;
    nc_pool_release(q, a, 0);
    sleep_s(0.15);
    CHECK(get(q, 1, &a, &la, &err) == 0, "%s", err.message);
    CHECK(a->serial != serial, "an expired idle connection was lent");
    nc_pool_release(q, a, 0);
    nc_pool_shutdown(q, 0);
    nc_pool_free(q);
}

/* max_lifetime takes up to lifetime_jitter of the lifetime off at random:
 * connections opened together retire over a spread of janitor rounds, none
 * before max_lifetime * (1 - jitter), none much after max_lifetime. */
#define NJITTER 16

static int closes_at_least(nc_pool *p, int n) { return LD(((fake *)nc_pool_ctx(p))->closes) >= n; }

static void test_lifetime_jitter(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, NJITTER);
    cfg.validation_interval = 0.02;   /* a janitor round every 20 ms retires the expired */
    cfg.max_lifetime = 0.6;
    cfg.lifetime_jitter = 0.5;        /* each lives between 0.3 and 0.6 s */
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *c[NJITTER];
    uint64_t l[NJITTER];
    int got = 0;
    for (int i = 0; i < NJITTER; i++)
        got += get(p, 1, &c[i], &l[i], &err) == 0;
    CHECK(got == NJITTER, "%d of %d borrows: %s", got, NJITTER, err.message);
    for (int i = 0; i < got; i++)
        nc_pool_release(p, c[i], 0);
    CHECK(wait_for(p, closes_at_least, NJITTER, 0.6 + 1.0 + SLACK), "only %d of %d retired", LD(f.closes), NJITTER);
    int n = LD(f.nlifetimes) < NJITTER ? LD(f.nlifetimes) : NJITTER;
    double lo = 1e9, hi = 0;
    int early = 0, late = 0;
    for (int i = 0; i < n; i++) {
        double t = f.lifetimes[i];
        lo = t < lo ? t : lo;
        hi = t > hi ? t : hi;
        early += t < cfg.max_lifetime * (1 - cfg.lifetime_jitter);
        late += t > cfg.max_lifetime + cfg.validation_interval + SLACK;
    }
    printf("  (lifetimes of %d connections opened together: %.3f .. %.3f s)\n", n, lo, hi);
    CHECK(early == 0, "%d retired before max_lifetime * (1 - jitter) = %.2f s (shortest %.3f)", early,
          cfg.max_lifetime * (1 - cfg.lifetime_jitter), lo);
    CHECK(late == 0, "%d retired long after max_lifetime (longest %.3f)", late, hi);
    /* Uniform over 0.3 s: 16 lifetimes within 0.06 s of each other has a
     * chance below 1e-9; without jitter they all fall in one or two rounds. */
    CHECK(hi - lo > 0.06, "all %d retired within %.3f s of each other: no jitter", n, hi - lo);
    nc_pool_stats s = stats(p);
    CHECK(s.closed >= NJITTER && s.validation_failures == 0, "closed %llu validation failures %llu (retired for age)",
          (unsigned long long)s.closed, (unsigned long long)s.validation_failures);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

static void test_background_validation(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    cfg.min_connections = 1;
    cfg.validation_interval = 0.05;
    nc_pool *p = mkpool(&cfg, &f);
    CHECK(wait_for(p, idle_is, 1, 1.0), "min not opened");
    /* healthy: pinged in the background, kept */
    CHECK(wait_for(p, pings_at_least, 2, 1.0 + SLACK), "no background ping with validation_interval 0.05");
    nc_pool_stats s = stats(p);
    CHECK(s.opened == 1 && s.closed == 0, "a healthy connection was replaced");

    int first = LD(f.last_id);
    fconn *fc = LD(f.last);
    ST(fc->ping_fail, 1);   /* fc is freed when the pool closes it: not touched after this */
    double t0 = nc_now();
    CHECK(wait_for(p, valfail_at_least, 1, 1.0), "failing ping not noticed in the background");
    CHECK(wait_for(p, serial_changed, first, 1.0), "the connection failing its ping was not replaced");
    double el = nc_now() - t0;
    CHECK(el < 0.05 + 0.05 + SLACK, "replaced after %.3f s", el);
    s = stats(p);
    CHECK(s.validation_failures == 1 && s.replaced >= 1 && s.closed == 1 && s.acquires == 0,
          "validation_failures %llu replaced %llu closed %llu", (unsigned long long)s.validation_failures,
          (unsigned long long)s.replaced, (unsigned long long)s.closed);

    /* looks_alive 0 in the background: replaced too */
    first = LD(f.last_id);
    fc = LD(f.last);
    ST(fc->dead, 1);
    CHECK(wait_for(p, valfail_at_least, 2, 1.0), "dead connection not noticed in the background");
    CHECK(wait_for(p, serial_changed, first, 1.0), "dead connection not replaced");
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
    CHECK(f.connects == f.closes, "connects %d closes %d", f.connects, f.closes);
}

static void test_shutdown(void)
{
    nc_error err;
    nc_conn *a, *b, *c, *x;
    uint64_t la, lb, lc, lx;
    nc_pool_config cfg;

    /* Waiters are told at once; lent ones are counted and closed on return. */
    {
        fake f = {0};
        base_cfg(&cfg, 2);
        nc_pool *p = mkpool(&cfg, &f);
        CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
        CHECK(get(p, 1, &b, &lb, &err) == 0, "%s", err.message);
        borrower w1, w2;
        start_borrower(&w1, p, 5.0, 0);
        CHECK(wait_for(p, waiting_is, 1, 2.0), "w1 never queued");
        start_borrower(&w2, p, 5.0, 0);
        CHECK(wait_for(p, waiting_is, 2, 2.0), "w2 never queued");
        double t0 = nc_now();
        int left = nc_pool_shutdown(p, 0);
        double el = nc_now() - t0;
        CHECK(left == 2, "shutdown says %d still lent, want 2", left);
        CHECK(el < SLACK, "shutdown(0) took %.3f s", el);
        pthread_join(w1.th, NULL);
        pthread_join(w2.th, NULL);
        CHECK(w1.rc == -1 && w1.err.code == NC_E_POOL_CLOSED, "w1 rc %d code %d", w1.rc, w1.err.code);
        CHECK(w2.rc == -1 && w2.err.code == NC_E_POOL_CLOSED, "w2 rc %d code %d", w2.rc, w2.err.code);
        CHECK(w1.finished - t0 < SLACK && w2.finished - t0 < SLACK, "waiters told after %.3f / %.3f s",
              w1.finished - t0, w2.finished - t0);
        CHECK(nc_pool_is_closed(p), "not closed");
        CHECK(get(p, 1, &x, &lx, &err) == -1 && err.code == NC_E_POOL_CLOSED, "acquire after shutdown: %d",
              err.code);
        nc_error_clear(&err);
        CHECK(nc_pool_try_acquire(p, &x, &lx, &err) == -1 && err.code == NC_E_POOL_CLOSED,
              "try_acquire after shutdown: %d", err.code);
        CHECK(nc_pool_lease_valid(p, a, la), "lent connection's lease died at shutdown");
        CHECK(f.closes == 0, "a lent connection was closed under its borrower");
        nc_pool_release(p, a, 0);
        CHECK(f.closes == 1, "lent connection not closed on return after shutdown");
        CHECK(!nc_pool_lease_valid(p, a, la), "lease valid after return");
        nc_pool_release(p, b, 0);
        nc_pool_stats s = stats(p);
        CHECK(f.closes == 2 && s.total == 0 && s.idle == 0 && s.closed_flag, "closes %d total %d", f.closes,
              s.total);
        CHECK(nc_pool_shutdown(p, 0) == 0, "second shutdown");
        nc_pool_free(p);
        CHECK(f.closes == 2, "closed twice");
    }

    /* Idle ones closed at once, the lent one when it comes back. */
    {
        fake f = {0};
        base_cfg(&cfg, 3);
        nc_pool *p = mkpool(&cfg, &f);
        CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
        CHECK(get(p, 1, &b, &lb, &err) == 0, "%s", err.message);
        CHECK(get(p, 1, &c, &lc, &err) == 0, "%s", err.message);
        nc_pool_release(p, a, 0);
        nc_pool_release(p, b, 0);
        int left = nc_pool_shutdown(p, 0);
        CHECK(left == 1, "left %d", left);
        CHECK(f.closes == 2, "idle not closed at shutdown: closes %d", f.closes);
        nc_pool_release(p, c, 0);
        CHECK(f.closes == 3, "closes %d", f.closes);
        nc_pool_free(p);
    }

    /* shutdown waits for a return within its timeout ... */
    {
        fake f = {0};
        base_cfg(&cfg, 1);
        nc_pool *p = mkpool(&cfg, &f);
        borrower h;
        start_borrower_ex(&h, p, 1.0, 1, 0.15, NULL);
        CHECK(wait_for(p, active_is, 1, 1.0), "holder never borrowed");
        double t0 = nc_now();
        int left = nc_pool_shutdown(p, 2.0);
        double el = nc_now() - t0;
        pthread_join(h.th, NULL);
        CHECK(left == 0, "left %d", left);
        /* It waited for the return (not a fixed time) and came back soon after it. */
        CHECK(t0 + el >= h.released && el < 0.15 + SLACK, "shutdown returned after %.3f s, the return came at %.3f",
              el, h.released - t0);
        CHECK(f.closes == 1, "closes %d", f.closes);
        nc_pool_free(p);
    }

    /* ... also without a limit (timeout INFINITY) */
    {
        fake f = {0};
        base_cfg(&cfg, 1);
        nc_pool *p = mkpool(&cfg, &f);
        borrower h;
        start_borrower_ex(&h, p, 1.0, 1, 0.15, NULL);
        CHECK(wait_for(p, active_is, 1, 1.0), "holder never borrowed");
        double t0 = nc_now();
        int left = nc_pool_shutdown(p, INFINITY);
        double el = nc_now() - t0;
        pthread_join(h.th, NULL);
        CHECK(left == 0, "shutdown(INFINITY) gave up with %d lent after %.3f s", left, el);
        CHECK(t0 + el >= h.released && el < 0.15 + SLACK,
              "shutdown(INFINITY) returned after %.3f s, the return came at %.3f", el, h.released - t0);
        nc_pool_free(p);
    }

    /* ... and gives up at its timeout */
    {
        fake f = {0};
        base_cfg(&cfg, 1);
        nc_pool *p = mkpool(&cfg, &f);
        CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
        double t0 = nc_now();
        int left = nc_pool_shutdown(p, 0.1);
        double el = nc_now() - t0;
        CHECK(left == 1, "left %d", left);
        CHECK(el >= 0.1 - 0.002 && el < 0.1 + SLACK, "shutdown(0.1) took %.3f s", el);
        nc_pool_release(p, a, 0);
        CHECK(f.closes == 1, "closes %d", f.closes);
        nc_pool_free(p);
    }

    /* A still-lent connection is closed by nc_pool_free. */
    {
        fake f = {0};
        base_cfg(&cfg, 1);
        nc_pool *p = mkpool(&cfg, &f);
        CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
        CHECK(nc_pool_shutdown(p, 0) == 1, "left");
        nc_pool_free(p);
        CHECK(f.closes == 1, "lent connection not closed by nc_pool_free");
    }

    /* A connection being opened when shutdown starts is closed, the opener told. */
    {
        fake f = {0};
        base_cfg(&cfg, 1);
        f.connect_delay = 0.15;
        nc_pool *p = mkpool(&cfg, &f);
        borrower w;
        start_borrower(&w, p, 2.0, 0);
        while (LD(f.connect_calls) == 0)
            sleep_s(0.001);
        double t0 = nc_now();
        int left = nc_pool_shutdown(p, 2.0);
        double el = nc_now() - t0;
        pthread_join(w.th, NULL);
        CHECK(left == 0, "left %d", left);
        CHECK(el < 0.15 + SLACK, "shutdown took %.3f s", el);
        CHECK(w.rc == -1 && w.err.code == NC_E_POOL_CLOSED, "opener rc %d code %d", w.rc, w.err.code);
        CHECK(f.connects == 1 && f.closes == 1, "connects %d closes %d", f.connects, f.closes);
        nc_pool_free(p);
    }

    /* drain: idle closed now, lent ones when they come back */
    {
        fake f = {0};
        base_cfg(&cfg, 2);
        nc_pool *p = mkpool(&cfg, &f);
        CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
        CHECK(get(p, 1, &b, &lb, &err) == 0, "%s", err.message);
        nc_pool_release(p, a, 0);
        nc_pool_drain(p, NC_DRAIN_RETIRE);
        CHECK(f.closes == 1 && stats(p).total == 1, "drain: closes %d", f.closes);
        nc_pool_release(p, b, 0);
        CHECK(f.closes == 2 && stats(p).total == 0, "drained lent one kept: closes %d", f.closes);
        CHECK(!nc_pool_is_closed(p), "drain closed the pool");
        CHECK(get(p, 1, &a, &la, &err) == 0, "after drain: %s", err.message);
        nc_pool_release(p, a, 0);
        nc_pool_shutdown(p, 0);
        nc_pool_free(p);
    }
}

static int leaked_at_least(nc_pool *p, int n) { return stats(p).leaked >= (uint64_t)n; }
static int connect_calls_at_least(nc_pool *p, int n) { return LD(((fake *)nc_pool_ctx(p))->connect_calls) >= n; }

/* nc_pool_drain(NC_DRAIN_RETIRE | NC_DRAIN_HOLD), what engine.dispose() asks
 * for: nothing open at the drain is parked idle again, whoever holds it
 * (a borrower, the janitor, an open in progress), and the janitor reopens
 * nothing until the next borrow. */
static void test_drain_retire(void)
{
    nc_pool_config cfg;
    nc_error err;
    nc_conn *a, *b;
    uint64_t la, lb;

    /* The janitor's open for min_connections in progress at the drain: closed
     * when it completes, not parked (it would hold a server session). */
    {
        fake f = {0};
        int gate = 0;
        f.connect_gate = &gate;
        base_cfg(&cfg, 2);
        cfg.min_connections = 1;
        nc_pool *p = mkpool(&cfg, &f);
        CHECK(wait_for(p, connect_calls_at_least, 1, 1.0 + SLACK), "the janitor did not start opening");
        nc_pool_drain(p, NC_DRAIN_RETIRE | NC_DRAIN_HOLD);
        ST(gate, 1);
        CHECK(wait_for(p, closes_at_least, 1, 2.0 + SLACK), "the janitor's open parked after the drain");
        nc_pool_stats s = stats(p);
        CHECK(s.total == 0 && s.idle == 0 && f.connects == 1, "total %d idle %d connects %d", s.total, s.idle,
              f.connects);
        nc_pool_shutdown(p, 0);
        nc_pool_free(p);
    }

    /* A borrower's open in progress at the drain: lent, closed on return. */
    {
        fake f = {0};
        int gate = 0;
        f.connect_gate = &gate;
        base_cfg(&cfg, 2);
        nc_pool *p = mkpool(&cfg, &f);
        borrower w;
        start_borrower(&w, p, 2.0, 0);
        CHECK(wait_for(p, connect_calls_at_least, 1, 1.0 + SLACK), "the borrower did not start opening");
        nc_pool_drain(p, NC_DRAIN_RETIRE);
        ST(gate, 1);
        pthread_join(w.th, NULL);
        CHECK(w.rc == 0, "borrow: %s", w.err.message);
        if (w.rc == 0) {
            CHECK(nc_pool_release_quick(p, w.c) == 0, "a retired connection went back idle (quick)");
            nc_pool_release(p, w.c, 0);
        }
        CHECK(f.closes == 1 && stats(p).total == 0, "closes %d total %d", f.closes, stats(p).total);
        nc_pool_shutdown(p, 0);
        nc_pool_free(p);
    }

    /* HOLD: the pool stays below min_connections until a borrow.  The proof
     * that the janitor ran after the drain is a leak it finds (a borrow made
     * before the drain, held past leak_timeout): its loop refills first. */
    {
        fake f = {0};
        base_cfg(&cfg, 3);
        cfg.min_connections = 2;
        cfg.leak_timeout = 0.3;
        nc_pool *p = mkpool(&cfg, &f);
        CHECK(wait_for(p, idle_is, 2, 1.0 + SLACK), "min_connections not opened");
        CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
        nc_pool_drain(p, NC_DRAIN_RETIRE | NC_DRAIN_HOLD);
        CHECK(f.closes == 1, "idle one not closed: closes %d", f.closes);
        CHECK(wait_for(p, leaked_at_least, 1, 2.0 + SLACK), "the janitor did not run");
        nc_pool_stats s = stats(p);
        CHECK(s.total == 1 && s.opened == 2, "refilled while held: total %d opened %llu", s.total,
              (unsigned long long)s.opened);
        nc_pool_release(p, a, 0);
        CHECK(f.closes == 2 && stats(p).total == 0, "the lent one kept: closes %d", f.closes);
        /* The next borrow ends the hold: min_connections again. */
        CHECK(get(p, 1, &b, &lb, &err) == 0, "%s", err.message);
        CHECK(wait_for(p, total_is, 2, 1.0 + SLACK), "not refilled after the next borrow: total %d",
              stats(p).total);
        nc_pool_release(p, b, 0);
        CHECK(wait_for(p, idle_is, 2, 1.0 + SLACK), "idle %d", stats(p).idle);
        nc_pool_shutdown(p, 0);
        nc_pool_free(p);
    }

    /* Without HOLD (a failover's drain) min_connections come back at once. */
    {
        fake f = {0};
        base_cfg(&cfg, 3);
        cfg.min_connections = 2;
        nc_pool *p = mkpool(&cfg, &f);
        CHECK(wait_for(p, idle_is, 2, 1.0 + SLACK), "min_connections not opened");
        nc_pool_drain(p, NC_DRAIN_RETIRE);
        CHECK(wait_for(p, idle_is, 2, 1.0 + SLACK), "not refilled after a drain without HOLD");
        CHECK(f.closes == 2 && f.connects == 4, "closes %d connects %d", f.closes, f.connects);
        nc_pool_shutdown(p, 0);
        nc_pool_free(p);
    }
}

/* ---- races (meant for ThreadSanitizer; functional checks elsewhere) ------ */

static void *stale_lease_checker(void *arg)
{
    borrower *b = arg;   /* c and lease: a borrow given back before this started */
    int seen_valid = 0;
    for (int i = 0; i < 20000; i++)
        if (nc_pool_lease_valid(b->p, b->c, b->lease))
            seen_valid++;
    b->rc = seen_valid;
    return NULL;
}

static void test_races(void)
{
    nc_pool_config cfg;
    nc_error err;

    /* A stale handle checked from one thread while another borrows and
     * returns the same slot (the binding's lease check on a released
     * PooledConnection). */
    {
        fake f = {0};
        base_cfg(&cfg, 1);
        nc_pool *p = mkpool(&cfg, &f);
        borrower b;
        memset(&b, 0, sizeof b);
        b.p = p;
        CHECK(get(p, 1, &b.c, &b.lease, &err) == 0, "%s", err.message);
        nc_pool_release(p, b.c, 0);
        pthread_t th;
        pthread_create(&th, NULL, stale_lease_checker, &b);
        int bad = 0;
        for (int i = 0; i < 2000; i++) {
            nc_conn *c;
            uint64_t l;
            if (get(p, 1, &c, &l, &err) < 0 || !nc_pool_lease_valid(p, c, l))
                bad++;
            else
                nc_pool_release(p, c, 0);
        }
        pthread_join(th, NULL);
        CHECK(bad == 0, "%d failed borrows", bad);
        CHECK(b.rc == 0, "a stale lease was seen valid %d times", b.rc);
        nc_pool_shutdown(p, 0);
        nc_pool_free(p);
    }

    /* Shutdown while a borrower sleeps between connect attempts. */
    {
        fake f = {0};
        base_cfg(&cfg, 2);
        cfg.retry_attempts = 3;
        cfg.retry_backoff = 0.1;
        f.connect_fail_always = 1;
        nc_pool *p = mkpool(&cfg, &f);
        borrower b;
        start_borrower(&b, p, 2.0, 0);
        while (LD(f.connect_calls) == 0)
            sleep_s(0.001);
        sleep_s(0.02);
        double t0 = nc_now();
        int left = nc_pool_shutdown(p, 1.0);
        pthread_join(b.th, NULL);
        double el = nc_now() - t0;
        CHECK(left == 0, "left %d", left);
        CHECK(b.rc == -1 && (b.err.code == NC_E_POOL_CLOSED || b.err.code == NC_E_NEW_FAILED), "rc %d code %d %s",
              b.rc, b.err.code, b.err.message);
        CHECK(el < 0.1 + SLACK, "the retrying borrower gave up %.3f s after shutdown", el);
        CHECK(LD(f.connect_calls) <= 2, "connect attempted %d times after shutdown", LD(f.connect_calls));
        nc_pool_free(p);
    }

    /* The janitor's first open fails at once (database down at start-up). */
    for (int i = 0; i < 5; i++) {
        fake f = {0};
        base_cfg(&cfg, 2);
        cfg.min_connections = 1;
        f.connect_fail_always = 1;
        nc_pool *p = mkpool(&cfg, &f);
        while (LD(f.connect_calls) == 0)   /* not stats(): its mutex would order the janitor's start */
            sleep_s(0.001);
        sleep_s(0.005);
        CHECK(wait_for(p, total_is, 0, 1.0), "a failed background open kept its slot");
        CHECK(stats(p).connect_failures >= 1, "no connect failure counted");
        nc_pool_shutdown(p, 0);
        nc_pool_free(p);
    }
}

/* ---- bugs found by these tests and since fixed: kept as regression tests -- */

static void *release_after(void *arg)
{
    borrower *b = arg;
    sleep_s(b->hold);
    nc_pool_release(b->p, b->c, 0);
    return NULL;
}

static void known_bugs(void)
{
    nc_pool_config cfg;
    nc_error err;

    /* A huge finite timeout ("forever") must wait, not fail at once:
     * nc_abstime() converts deadlines >= 2^63 s to a negative time_t. */
    {
        fake f = {0};
        base_cfg(&cfg, 1);
        nc_pool *p = mkpool(&cfg, &f);
        borrower h;
        memset(&h, 0, sizeof h);
        h.p = p;
        h.hold = 0.1;
        CHECK(get(p, 1, &h.c, &h.lease, &err) == 0, "%s", err.message);
        pthread_t th;
        pthread_create(&th, NULL, release_after, &h);
        nc_conn *c;
        uint64_t l;
        double t0 = nc_now();
        int rc = get(p, 1e19, &c, &l, &err);
        double el = nc_now() - t0;
        pthread_join(th, NULL);
        CHECK(rc == 0, "acquire(timeout=1e19) failed after %.3f s: %d %s", el, err.code, err.message);
        if (rc == 0)
            nc_pool_release(p, c, 0);
        nc_pool_shutdown(p, 0);
        nc_pool_free(p);
    }

    /* shutdown(0) must not wait for the janitor's connect retries (the
     * database is down, min_connections > 0): it joins the janitor, which
     * sleeps its backoff (and waits its connects) without looking at
     * janitor_stop. */
    {
        fake f = {0};
        base_cfg(&cfg, 2);
        cfg.min_connections = 1;
        cfg.retry_attempts = 5;
        cfg.retry_backoff = 2.0;   /* far above SLACK: waiting for it cannot pass */
        f.connect_fail_always = 1;
        nc_pool *p = mkpool(&cfg, &f);
        while (LD(f.connect_calls) == 0)
            sleep_s(0.001);
        sleep_s(0.01);
        double t0 = nc_now();
        nc_pool_shutdown(p, 0);
        double el = nc_now() - t0;
        CHECK(el < SLACK, "shutdown(0) took %.3f s waiting for the janitor's retry backoff", el);
        nc_pool_free(p);
    }
}

/* ---- stress -------------------------------------------------------------- */

#define STRESS_THREADS 16
#define STRESS_OPS 5000

typedef struct stress_arg {
    pthread_t th;
    nc_pool *p;
    int id;
    int ops_done;
    int errors;
    int double_lent;
    int try_hits;
    nc_error last_err;
} stress_arg;

static void *stress_main(void *arg)
{
    stress_arg *s = arg;
    unsigned seed = (unsigned)s->id * 7919u + 1;
    for (int i = 0; i < STRESS_OPS; i++) {
        nc_conn *c = NULL;
        uint64_t lease = 0;
        nc_error err;
        nc_error_clear(&err);
        int r = 0;
        if ((i & 7) == 0)
            r = nc_pool_try_acquire(s->p, &c, &lease, &err);
        if (r == 1)
            s->try_hits++;
        else if (r == 0)
            r = nc_pool_acquire(s->p, 10.0, &c, &lease, &err) == 0 ? 1 : -1;
        if (r < 0) {
            s->errors++;
            s->last_err = err;
            continue;
        }
        s->ops_done++;
        fconn *fc = c->raw;
        if (__atomic_exchange_n(&fc->in_use, 1, __ATOMIC_SEQ_CST) != 0)
            s->double_lent++;
        if (!nc_pool_lease_valid(s->p, c, lease))
            s->errors++;
        if ((rand_r(&seed) & 3) == 0)
            sched_yield();
        int discard = rand_r(&seed) % 211 == 0;
        if (rand_r(&seed) % 97 == 0)
            ST(fc->in_txn, 1);
        __atomic_store_n(&fc->in_use, 0, __ATOMIC_SEQ_CST);
        nc_pool_release(s->p, c, discard);
    }
    return NULL;
}

static void test_stress(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 4);
    cfg.validation_interval = 0.02;   /* the janitor checks idle ones meanwhile */
    cfg.ping_after_idle = 0.001;
    nc_pool *p = mkpool(&cfg, &f);
    stress_arg a[STRESS_THREADS];
    double t0 = nc_now();
    for (int i = 0; i < STRESS_THREADS; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].p = p;
        a[i].id = i;
        if (pthread_create(&a[i].th, NULL, stress_main, &a[i])) {
            printf("FATAL: pthread_create\n");
            exit(2);
        }
    }
    int done = 0, errors = 0, dbl = 0, tries = 0;
    for (int i = 0; i < STRESS_THREADS; i++) {
        pthread_join(a[i].th, NULL);
        done += a[i].ops_done;
        errors += a[i].errors;
        dbl += a[i].double_lent;
        tries += a[i].try_hits;
        if (a[i].errors)
            printf("  thread %d: %d errors, last: %d %s\n", i, a[i].errors, a[i].last_err.code,
                   a[i].last_err.message);
    }
    double el = nc_now() - t0;
    nc_pool_stats s = stats(p);
    printf("  (stress: %d ops in %.2f s, %d by try_acquire, opened %llu closed %llu, p50 %.1f us p99 %.1f us)\n",
           done, el, tries, (unsigned long long)s.opened, (unsigned long long)s.closed, s.wait_p50 * 1e6,
           s.wait_p99 * 1e6);
    CHECK(dbl == 0, "%d times a connection was lent to two threads at once", dbl);
    CHECK(errors == 0, "%d errors", errors);
    CHECK(done == STRESS_THREADS * STRESS_OPS, "%d ops done", done);
    CHECK(s.acquires == (uint64_t)(STRESS_THREADS * STRESS_OPS), "acquires %llu, want %d",
          (unsigned long long)s.acquires, STRESS_THREADS * STRESS_OPS);
    CHECK(s.active == 0 && s.waiting == 0 && s.opening == 0, "active %d waiting %d opening %d", s.active,
          s.waiting, s.opening);
    CHECK(s.total <= 4, "total %d > max", s.total);
    CHECK(s.opened - s.closed == (uint64_t)s.total, "opened %llu - closed %llu != total %d",
          (unsigned long long)s.opened, (unsigned long long)s.closed, s.total);
    CHECK((int)s.opened == LD(f.connects) && (int)s.closed == LD(f.closes), "pool %llu/%llu fake %d/%d",
          (unsigned long long)s.opened, (unsigned long long)s.closed, f.connects, f.closes);
    CHECK(s.wait_p50 <= s.wait_p99, "p50 %g > p99 %g", s.wait_p50, s.wait_p99);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
    CHECK(f.connects == f.closes, "leaked: connects %d closes %d", f.connects, f.closes);
}


/* Churn: what test_stress does, while the janitor replaces connections all
 * the time (lifetime 20 ms, idle timeout 5 ms, min 2, validation every 2 ms,
 * some pings and liveness checks failing), another thread reads the stats,
 * reports statement ends and drains the pool (as a failover switch does),
 * and the pool is shut down while borrowers are still at work.  Written for
 * ThreadSanitizer (tests/run.sh, stage c-tsan): every path that touches a
 * slot from two threads runs here many times. */
#define CHURN_THREADS 8

typedef struct churn_arg {
    pthread_t th;
    nc_pool *p;
    int id;
    int *stop;
    int ops, closed_errors, other_errors, double_lent;
    nc_error last_err;
} churn_arg;

static void *churn_main(void *arg)
{
    churn_arg *s = arg;
    unsigned seed = (unsigned)s->id * 104729u + 7;
    while (!LD(*s->stop)) {
        nc_conn *c = NULL;
        uint64_t lease = 0;
        nc_error err;
        nc_error_clear(&err);
        int r = (s->ops & 3) == 0 ? nc_pool_try_acquire(s->p, &c, &lease, &err) : 0;
        if (r == 0)
            r = nc_pool_acquire(s->p, 5.0, &c, &lease, &err) == 0 ? 1 : -1;
        if (r < 0) {
            if (err.code == NC_E_POOL_CLOSED)
                s->closed_errors++;
            else
                s->other_errors++, s->last_err = err;
            if (nc_pool_is_closed(s->p))
                break;
            continue;
        }
        s->ops++;
        fconn *fc = c->raw;
        if (__atomic_exchange_n(&fc->in_use, 1, __ATOMIC_SEQ_CST) != 0)
            s->double_lent++;
        if (rand_r(&seed) % 53 == 0)
            ST(fc->dead, 1);            /* the next check finds it dead */
        if (rand_r(&seed) % 61 == 0)
            ST(fc->ping_fail, 1);       /* the janitor's next ping fails */
        if (rand_r(&seed) % 7 == 0)
            ST(fc->in_txn, 1);          /* returned in a transaction: reset */
        if ((rand_r(&seed) & 3) == 0)
            sched_yield();
        int discard = rand_r(&seed) % 101 == 0;
        __atomic_store_n(&fc->in_use, 0, __ATOMIC_SEQ_CST);
        nc_pool_release(s->p, c, discard);
    }
    return NULL;
}

typedef struct churn_side {
    pthread_t th;
    nc_pool *p;
    int *stop;
    int rounds;
} churn_side;

static void *churn_side_main(void *arg)
{
    churn_side *s = arg;
    nc_error lost;
    nc_error_clear(&lost);
    nc_error_set(&lost, NC_E_CONNECTION, NC_K_OPERATIONAL, "churn: connection lost");
    while (!LD(*s->stop)) {
        nc_pool_stats st;
        nc_pool_get_stats(s->p, &st);
        nc_pool_statement_done(s->p, NULL);
        if (s->rounds % 5 == 0)
            nc_pool_statement_done(s->p, &lost);
        if (s->rounds % 50 == 0)
            nc_pool_drain(s->p, 0);
        s->rounds++;
        sched_yield();
    }
    return NULL;
}

static void test_churn(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 4);
    cfg.min_connections = 2;
    cfg.validation_interval = 0.002;
    cfg.idle_timeout = 0.005;
    cfg.max_lifetime = 0.02;
    cfg.lifetime_jitter = 0.5;
    cfg.ping_after_idle = 0.001;
    nc_pool *p = mkpool(&cfg, &f);
    int stop = 0, side_stop = 0;
    churn_arg a[CHURN_THREADS];
    churn_side side = {.p = p, .stop = &side_stop};
    for (int i = 0; i < CHURN_THREADS; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].p = p;
        a[i].id = i;
        a[i].stop = &stop;
        if (pthread_create(&a[i].th, NULL, churn_main, &a[i])) {
            printf("FATAL: pthread_create\n");
            exit(2);
        }
    }
    if (pthread_create(&side.th, NULL, churn_side_main, &side)) {
        printf("FATAL: pthread_create\n");
        exit(2);
    }
    /* Until the janitor has replaced connections many times over (a count,
     * not a time; bounded so a pool that stops replacing fails the check). */
    double until = nc_now() + 30 * nc_time_scale();
    while ((LD(f.closes) < 200 || LD(f.connects) < 200) && nc_now() < until)
        sleep_s(0.005);
    int closes_before = LD(f.closes);
    /* Shut down with the borrowers still running: they see 2002 and stop. */
    int rc = nc_pool_shutdown(p, 2.0 * nc_time_scale());
    ST(stop, 1);
    int ops = 0, closed_errors = 0, other = 0, dbl = 0;
    for (int i = 0; i < CHURN_THREADS; i++) {
        pthread_join(a[i].th, NULL);
        ops += a[i].ops;
        closed_errors += a[i].closed_errors;
        other += a[i].other_errors;
        dbl += a[i].double_lent;
        if (a[i].other_errors)
            printf("  thread %d: %d errors, last: %d %s\n", i, a[i].other_errors, a[i].last_err.code,
                   a[i].last_err.message);
    }
    ST(side_stop, 1);
    pthread_join(side.th, NULL);
    nc_pool_stats st = stats(p);
    printf("  (churn: %d ops, %d borrows refused by the shutdown, %d side rounds, opened %llu closed %llu replaced %llu, validation failures %llu, "
           "shutdown rc %d)\n", ops, closed_errors, side.rounds, (unsigned long long)st.opened, (unsigned long long)st.closed,
           (unsigned long long)st.replaced, (unsigned long long)st.validation_failures, rc);
    CHECK(closes_before >= 200, "the janitor closed only %d connections", closes_before);
    CHECK(dbl == 0, "%d times a connection was lent to two threads at once", dbl);
    CHECK(ops > 0, "no borrow succeeded");
    CHECK(other == 0, "%d borrows failed with something other than 2002", other);
    CHECK(st.active == 0 && st.waiting == 0 && st.opening == 0, "after shutdown: active %d waiting %d opening %d",
          st.active, st.waiting, st.opening);
    CHECK(st.closed_flag, "the pool does not say it is closed");
    nc_pool_free(p);
    CHECK(LD(f.connects) == LD(f.closes), "leaked: connects %d closes %d", f.connects, f.closes);
}

/* ---- the observer and references ------------------------------------------ */

typedef struct obs_log {
    int calls, refs, unrefs;
    int last_failure;
    char last_message[64];
} obs_log;

static void obs_on_failure(void *arg, int failure, const nc_error *err)
{
    obs_log *o = arg;
    o->calls++;
    o->last_failure = failure;
    snprintf(o->last_message, sizeof o->last_message, "%.63s", err->message);
}
static void obs_ref(void *arg) { ((obs_log *)arg)->refs++; }
static void obs_unref(void *arg) { ((obs_log *)arg)->unrefs++; }
static const nc_pool_observer test_observer = {obs_on_failure, obs_ref, obs_unref};

static void test_observer_and_refs(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    nc_pool *p = mkpool(&cfg, &f);
    obs_log o = {0};
    nc_pool_set_observer(p, &test_observer, &o);
    nc_error e;

    /* Failures of the SQL say nothing about the endpoint: not reported. */
    nc_error_set(&e, NC_E_QUERY, NC_K_NONE, "syntax error");
    memcpy(e.sqlstate, "42601", 6);
    nc_pool_statement_done(p, &e);
    nc_error_set(&e, NC_E_QUERY_TIMEOUT, NC_K_OPERATIONAL, "cancelled");
    memcpy(e.sqlstate, "57014", 6);
    nc_pool_statement_done(p, &e);
    nc_pool_statement_done(p, NULL);
    CHECK(o.calls == 0, "observer told of %d non-endpoint failures", o.calls);

    /* A lost connection, a terminated session and a read-only refusal are. */
    nc_error_set(&e, NC_E_CONNECTION, NC_K_OPERATIONAL, "server closed the connection");
    nc_pool_statement_done(p, &e);
    CHECK(o.calls == 1 && o.last_failure == NC_FAIL_LOST && !strcmp(o.last_message, "server closed the connection"),
          "lost: calls %d failure %d", o.calls, o.last_failure);
    nc_error_set(&e, NC_E_QUERY, NC_K_NONE, "terminating connection due to administrator command");
    memcpy(e.sqlstate, "57P01", 6);
    nc_pool_statement_done(p, &e);
    CHECK(o.calls == 2 && o.last_failure == NC_FAIL_LOST, "57P01: calls %d failure %d", o.calls, o.last_failure);
    nc_error_set(&e, NC_E_QUERY, NC_K_NONE, "cannot execute INSERT in a read-only transaction");
    memcpy(e.sqlstate, "25006", 6);
    nc_pool_statement_done(p, &e);
    CHECK(o.calls == 3 && o.last_failure == NC_FAIL_READ_ONLY, "25006: calls %d failure %d", o.calls,
          o.last_failure);
    CHECK(o.refs == 3 && o.unrefs == 3, "arg held around each report: refs %d unrefs %d", o.refs, o.unrefs);

    nc_pool_stats s = stats(p);
    CHECK(s.queries == 6 && s.query_errors == 5, "queries %llu errors %llu", (unsigned long long)s.queries,
          (unsigned long long)s.query_errors);

    /* Removed: no more reports. */
    nc_pool_set_observer(p, NULL, NULL);
    nc_error_set(&e, NC_E_CONNECTION, NC_K_OPERATIONAL, "lost again");
    nc_pool_statement_done(p, &e);
    CHECK(o.calls == 3, "a removed observer was called");

    /* A reference keeps the pool (and its backend context) after the
     * owner let go; the last unref frees it. */
    int frees = LD(ctx_frees);
    nc_pool_ref(p);
    nc_pool_free(p);
    CHECK(LD(ctx_frees) == frees, "the context was freed while a reference was held");
    CHECK(nc_pool_is_closed(p), "nc_pool_free did not close the pool");
    nc_conn *c;
    uint64_t l;
    CHECK(nc_pool_acquire(p, 0, &c, &l, &e) < 0 && e.code == NC_E_POOL_CLOSED, "borrowed from a freed pool");
    nc_pool_unref(p);
    CHECK(LD(ctx_frees) == frees + 1, "the last reference did not free the pool");
}

/* A thread's stop check (nc_stop.h, how Ctrl-C reaches the core) ends its
 * wait in the queue with NC_E_INTERRUPTED, without the mutex held, and
 * leaves the pool as it was. */
static int stop_calls;
static int stop_after_two(void *arg)
{
    (void)arg;
    return ++stop_calls >= 2;
}

static void test_stop_check(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 1);
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a, *x;
    uint64_t la, lx;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    stop_calls = 0;
    nc_stop_install(stop_after_two, NULL);
    double t0 = nc_now();
    int rc = get(p, 10, &x, &lx, &err);
    double el = nc_now() - t0;
    nc_stop_install(NULL, NULL);
    CHECK(rc == -1 && err.code == NC_E_INTERRUPTED, "rc %d code %d: %s", rc, err.code, err.message);
    CHECK(stop_calls == 2, "the check was asked %d times", stop_calls);
    CHECK(el >= NC_STOP_PERIOD && el < 3 * NC_STOP_PERIOD + SLACK, "interrupted after %.3f s", el);
    nc_pool_stats st;
    nc_pool_get_stats(p, &st);
    CHECK(st.waiting == 0 && st.acquire_timeouts == 0, "waiting %d, timeouts %llu", st.waiting,
          (unsigned long long)st.acquire_timeouts);
    nc_pool_release(p, a, 0);
    /* Without a check the same wait is an ordinary timeout. */
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    rc = get(p, 0.1, &x, &lx, &err);
    CHECK(rc == -1 && err.code == NC_E_POOL_TIMEOUT, "rc %d code %d", rc, err.code);
    nc_pool_release(p, a, 0);
    nc_pool_free(p);
}

/* One silent idle connection (a frozen backend) on top of the idle stack and
 * a healthy one under it: the first short borrow (timeout < validation_timeout)
 * is cut short on the silent one, which goes back UNDER the healthy one, so
 * the next short borrows get the healthy one; and the silent one's reply is
 * owed from when it was asked for, so once owed past validation_timeout the
 * next check of it closes it without waiting (found by the review of h-intr:
 * every short borrow failed with 2003, "0 of 2 in use", until the janitor). */
static void test_silent_idle_goes_under(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    cfg.validation_timeout = 0.4;
    cfg.ping_after_idle = 0;
    nc_error err;
    nc_error_clear(&err);
    nc_pool *p = nc_pool_new(&cfg, &fake_ops_owed, &f, &err);
    CHECK(p != NULL, "%s", err.message);
    if (!p)
        return;
    nc_conn *a, *b;
    uint64_t la, lb;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    CHECK(get(p, 1, &b, &lb, &err) == 0, "%s", err.message);
    uint64_t silent = a->serial, healthy = b->serial;
    nc_pool_release(p, b, 0);           /* the healthy one, below */
    raw(a)->answer_at = nc_now() + 1e6; /* silent for ever */
    nc_pool_release(p, a, 0);           /* the silent one, on top */
    sleep_s(0.002);
    int fails = 0, got_healthy = 0;
    for (int i = 0; i < 5; i++) {
        nc_conn *x;
        uint64_t lx;
        if (get(p, 0.05, &x, &lx, &err) == 0) {
            got_healthy += x->serial == healthy;
            nc_pool_release(p, x, 0);
        } else {
            fails++;
            CHECK(err.code == NC_E_POOL_TIMEOUT, "code %d: %s", err.code, err.message);
        }
        sleep_s(0.002);
    }
    nc_pool_stats s = stats(p);
    CHECK(fails <= 1 && got_healthy == 5 - fails, "%d of 5 short borrows failed (%d got the healthy one), "
          "idle %d closed %llu: %s", fails, got_healthy, s.idle, (unsigned long long)s.closed, err.message);
    CHECK(s.closed == 0 && s.idle == 2, "closed %llu idle %d", (unsigned long long)s.closed, s.idle);

    /* Owed past validation_timeout: with the healthy one held, a short
     * borrow checks the silent one, closes it at once and opens another. */
    sleep_s(cfg.validation_timeout + 0.05);
    CHECK(get(p, 1, &b, &lb, &err) == 0 && b->serial == healthy, "the healthy one first: %s", err.message);
    int rc = get(p, 0.05, &a, &la, &err);   /* had it waited, its 0.05 s would have cut it: 2003 */
    CHECK(rc == 0 && a->serial != silent && a->serial != healthy, "rc %d: %s", rc, err.message);
    s = stats(p);
    CHECK(s.validation_failures == 1 && s.closed == 1 && s.replaced == 1,
          "validation_failures %llu closed %llu replaced %llu", (unsigned long long)s.validation_failures,
          (unsigned long long)s.closed, (unsigned long long)s.replaced);
    if (rc == 0)
        nc_pool_release(p, a, 0);
    nc_pool_release(p, b, 0);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

/* A reply owed since a cut-short check, then read by the fast path (which
 * lends without the slow path's check): the connection's next owed reply
 * (the ROLLBACK of its next return) is judged by validation_timeout from its
 * own time, not from that old cut, or a healthy connection answering in
 * time is condemned. */
static void test_owed_since_ends_when_lent(void)
{
    fake f = {0};
    f.nowait_reads = 1;
    nc_pool_config cfg;
    base_cfg(&cfg, 1);
    cfg.validation_timeout = 0.3;
    cfg.ping_after_idle = 600;
    nc_error err;
    nc_error_clear(&err);
    nc_pool *p = nc_pool_new(&cfg, &fake_ops_owed, &f, &err);
    CHECK(p != NULL, "%s", err.message);
    if (!p)
        return;
    nc_conn *a;
    uint64_t la;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    fconn *fc = raw(a);
    uint64_t serial = a->serial;
    fc->answer_at = nc_now() + 1e6;     /* the ROLLBACK's reply is late */
    ST(fc->in_txn, 1);
    nc_pool_release(p, a, 0);
    CHECK(get(p, 0.05, &a, &la, &err) == -1 && err.code == NC_E_POOL_TIMEOUT, "cut short: %s", err.message);
    fc->answer_at = 0;                  /* it comes: the fast path reads it and lends */
    CHECK(nc_pool_try_acquire(p, &a, &la, &err) == 1 && a->serial == serial, "fast path: %s", err.message);
    sleep_s(cfg.validation_timeout + 0.05);   /* the cut is now older than validation_timeout */
    fc->answer_at = nc_now() + 0.1;     /* the next ROLLBACK's reply comes in 0.1 s, in time */
    ST(fc->in_txn, 1);
    nc_pool_release(p, a, 0);
    CHECK(get(p, 2, &a, &la, &err) == 0 && a->serial == serial, "condemned by the old cut: %s", err.message);
    nc_pool_stats s = stats(p);
    CHECK(s.closed == 0 && s.validation_failures == 0, "closed %llu validation_failures %llu",
          (unsigned long long)s.closed, (unsigned long long)s.validation_failures);
    nc_pool_release(p, a, 0);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

/* Only validation_timeout judges a connection: a check (the owed reply, a
 * ping) that the borrower's own shorter deadline, or its stop check, cuts
 * short leaves the connection idle with the reply owed, and the borrow
 * fails with 2003 (2023); the next borrow reads the reply and lends it. */
static void test_late_check_keeps(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 1);
    cfg.validation_timeout = 10.0;
    cfg.ping_after_idle = 0;
    nc_error err;
    nc_error_clear(&err);
    nc_pool *p = nc_pool_new(&cfg, &fake_ops_owed, &f, &err);
    CHECK(p != NULL, "%s", err.message);
    if (!p)
        return;
    nc_conn *a;
    uint64_t la;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    fconn *fc = raw(a);
    uint64_t serial = a->serial;
    nc_pool_release(p, a, 0);
    sleep_s(0.002);   /* idle longer than ping_after_idle: the borrow pings */

    /* the ping answers after the borrower's deadline */
    fc->answer_at = nc_now() + 0.3;
    int rc = get(p, 0.05, &a, &la, &err);
    CHECK(rc == -1 && err.code == NC_E_POOL_TIMEOUT && strstr(err.message, "kept"), "rc %d code %d: %s", rc,
          err.code, err.message);
    nc_pool_stats s = stats(p);
    CHECK(s.idle == 1 && s.total == 1 && s.closed == 0 && s.validation_failures == 0 && LD(fc->owed) == 1,
          "idle %d total %d closed %llu validation_failures %llu owed %d", s.idle, s.total,
          (unsigned long long)s.closed, (unsigned long long)s.validation_failures, LD(fc->owed));
    /* in time: the owed reply is read, then it is pinged and lent */
    CHECK(get(p, 2, &a, &la, &err) == 0 && a->serial == serial, "%s", err.message);
    CHECK(!LD(fc->owed), "the owed reply was not read");
    nc_pool_release(p, a, 0);

    /* the same cut short by the stop check (Ctrl-C) */
    sleep_s(0.002);
    fc->answer_at = nc_now() + 5.0;
    stop_calls = 0;
    nc_stop_install(stop_after_two, NULL);
    double t0 = nc_now();
    rc = get(p, 8, &a, &la, &err);
    double el = nc_now() - t0;
    nc_stop_install(NULL, NULL);
    CHECK(rc == -1 && err.code == NC_E_INTERRUPTED, "rc %d code %d: %s", rc, err.code, err.message);
    CHECK(el < 3 * NC_STOP_PERIOD + SLACK, "interrupted after %.3f s", el);
    s = stats(p);
    CHECK(s.idle == 1 && s.closed == 0 && s.acquire_timeouts == 1, "idle %d closed %llu timeouts %llu", s.idle,
          (unsigned long long)s.closed, (unsigned long long)s.acquire_timeouts);
    fc->answer_at = 0;
    CHECK(get(p, 2, &a, &la, &err) == 0 && a->serial == serial, "%s", err.message);
    nc_pool_release(p, a, 0);

    /* validation_timeout shorter than the borrow's: the late ping condemns it */
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
    fake g = {0};
    cfg.validation_timeout = 0.05;
    p = nc_pool_new(&cfg, &fake_ops_owed, &g, &err);
    CHECK(p != NULL, "%s", err.message);
    if (!p)
        return;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    serial = a->serial;
    raw(a)->answer_at = nc_now() + 5.0;
    nc_pool_release(p, a, 0);
    sleep_s(0.002);
    CHECK(get(p, 2, &a, &la, &err) == 0 && a->serial != serial, "rc/serial: %s", err.message);
    s = stats(p);
    CHECK(s.validation_failures == 1 && s.closed == 1 && s.replaced == 1, "validation_failures %llu closed "
          "%llu replaced %llu", (unsigned long long)s.validation_failures, (unsigned long long)s.closed,
          (unsigned long long)s.replaced);
    nc_pool_release(p, a, 0);

    /* PooledConnection.ping(): no answer within validation_timeout closes it on return */
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    raw(a)->answer_at = nc_now() + 5.0;
    rc = nc_pool_ping(p, a, &err);
    CHECK(rc == -1 && err.code == NC_E_QUERY_TIMEOUT, "rc %d code %d", rc, err.code);
    /* and given up at once: a statement before the return fails saying why
     * instead of waiting on the owed reply (review of h-intr, finding 4) */
    CHECK(raw(a)->gave_up && strstr(raw(a)->gave_up, "no answer to a ping within validation_timeout"),
          "not given up: %s", raw(a)->gave_up ? raw(a)->gave_up : "(null)");
    nc_pool_release(p, a, 0);
    ST(g.forced_return_state, 0);
    s = stats(p);
    CHECK(s.closed == 2 && s.idle == 0, "closed %llu idle %d", (unsigned long long)s.closed, s.idle);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

/* The stop check ends shutdown's wait for a lent connection: the pool stays
 * closed and the connection is closed when it comes back. */
static void test_stop_in_shutdown(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a;
    uint64_t la;
    CHECK(get(p, 1, &a, &la, &err) == 0, "%s", err.message);
    stop_calls = 0;
    nc_stop_install(stop_after_two, NULL);
    double t0 = nc_now();
    int left = nc_pool_shutdown(p, 10.0);
    double el = nc_now() - t0;
    nc_stop_install(NULL, NULL);
    CHECK(left == 1, "left %d", left);
    CHECK(el < 3 * NC_STOP_PERIOD + SLACK, "shutdown interrupted after %.3f s", el);
    CHECK(nc_pool_is_closed(p), "the pool is not closed");
    nc_pool_release(p, a, 0);
    nc_pool_stats s = stats(p);
    CHECK(s.total == 0 && f.closes == 1, "total %d closes %d", s.total, f.closes);
    CHECK(nc_pool_shutdown(p, 10.0) == 0, "a second shutdown");
    nc_pool_free(p);
}

/* A full server (53300): the borrow waits for a slot with capped exponential
 * backoff until its deadline, then times out (2003), whatever retry_attempts
 * says; a slot that frees meanwhile is taken.  retry_backoff 0 still backs off. */
static void test_server_full(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 2);
    cfg.retry_attempts = 2;
    cfg.retry_backoff = 0;
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a;
    uint64_t la;
    ST(f.connect_full, 1);
    double t0 = nc_now();
    int rc = get(p, 0.5, &a, &la, &err);
    double el = nc_now() - t0;
    int calls = LD(f.connect_calls);
    CHECK(rc == -1 && err.code == NC_E_POOL_TIMEOUT && !strcmp(err.sqlstate, "53300"), "rc %d code %d %s", rc,
          err.code, err.sqlstate);
    CHECK(strstr(err.message, "no free connection slot") && strstr(err.message, "too many clients"), "message: %s",
          err.message);
    CHECK(el >= 0.5 - 0.002 && el < 0.5 + SLACK, "timed out after %.3f s, want 0.5", el);
    /* 0.05, 0.1, 0.2 s of backoff fit in 0.5 s: 4 or 5 connects, not a tight loop, and more
     * than retry_attempts */
    CHECK(calls > cfg.retry_attempts && calls <= 6, "connect calls %d", calls);
    nc_pool_stats s = stats(p);
    CHECK(s.acquire_timeouts == 1 && s.connect_failures == (uint64_t)calls && s.total == 0,
          "acquire_timeouts %llu connect_failures %llu total %d", (unsigned long long)s.acquire_timeouts,
          (unsigned long long)s.connect_failures, s.total);
    printf("  (2003 message: %s; %d connects in %.2f s)\n", err.message, calls, el);

    /* The server frees a slot while the borrow waits: it gets the connection. */
    ST(f.connect_calls, 0);
    borrower b;
    start_borrower(&b, p, 5, 1);
    while (LD(f.connect_calls) < 2)
        sleep_s(0.001);
    ST(f.connect_full, 0);
    pthread_join(b.th, NULL);
    CHECK(b.rc == 0, "borrow after the slot freed: rc %d %s", b.rc, b.err.message);

    /* Waiting on the full server, a borrower takes one of the pool's own
     * connections the moment it comes back idle. */
    CHECK(get(p, 1, &a, &la, &err) == 0, "borrow a");
    ST(f.connect_full, 1);
    ST(f.connect_calls, 0);
    start_borrower(&b, p, 5, 0);
    while (LD(f.connect_calls) < 2)
        sleep_s(0.001);
    uint64_t serial = a->serial;
    t0 = nc_now();
    nc_pool_release(p, a, 0);
    pthread_join(b.th, NULL);
    el = nc_now() - t0;
    CHECK(b.rc == 0 && b.serial == serial, "rc %d serial %llu want %llu", b.rc, (unsigned long long)b.serial,
          (unsigned long long)serial);
    CHECK(el < SLACK, "took the returned connection after %.3f s", el);
    if (b.rc == 0)
        nc_pool_release(p, b.c, 0);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

static int leaks_pending(nc_pool *p, int n) { return nc_pool_leaks_pending(p) >= n; }

/* leak_timeout: a borrow held past it is found by the janitor (counted once
 * per lease, kept for nc_pool_take_leaks), one given back in time never. */
static void test_leaks(void)
{
    fake f = {0};
    nc_pool_config cfg;
    base_cfg(&cfg, 3);
    cfg.leak_timeout = 0.1;
    nc_pool *p = mkpool(&cfg, &f);
    nc_error err;
    nc_conn *a, *b;
    uint64_t la, lb;
    nc_leak found[4];
    CHECK(get(p, 1, &b, &lb, &err) == 0, "borrow b");
    nc_pool_release(p, b, 0);   /* back in time: never reported */
    double t0 = nc_now();
    CHECK(get(p, 1, &a, &la, &err) == 0, "borrow a");
    CHECK(wait_for(p, leaks_pending, 1, 5), "leak not found");
    double el = nc_now() - t0;
    CHECK(el >= 0.1 - 0.002 && el < 0.1 + SLACK, "found after %.3f s, want 0.1", el);
    int n = nc_pool_take_leaks(p, found, 4);
    CHECK(n == 1 && found[0].index == a->index && found[0].lease == la && found[0].held >= 0.1,
          "n %d index %d lease %llu held %.3f", n, n ? found[0].index : -1,
          (unsigned long long)(n ? found[0].lease : 0), n ? found[0].held : 0.0);
    CHECK(nc_pool_take_leaks(p, found, 4) == 0 && !nc_pool_leaks_pending(p), "taken twice");
    /* Held on: not found again.  A second borrow held too long is the next one. */
    CHECK(get(p, 1, &b, &lb, &err) == 0, "borrow b again");
    CHECK(wait_for(p, leaks_pending, 1, 5), "second leak not found");
    n = nc_pool_take_leaks(p, found, 4);
    CHECK(n == 1 && found[0].lease == lb, "n %d", n);
    CHECK(stats(p).leaked == 2, "leaked %llu", (unsigned long long)stats(p).leaked);
    nc_pool_release(p, a, 0);
    nc_pool_release(p, b, 0);
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
    /* Off (the default): no janitor needed for it, nothing found. */
    nc_pool_config off;
    nc_pool_config_defaults(&off);
    CHECK(off.leak_timeout == 0, "default leak_timeout %g", off.leak_timeout);
    cfg.leak_timeout = -1;
    nc_pool *bad = nc_pool_new(&cfg, &fake_ops, &f, &err);
    CHECK(!bad && err.code == NC_E_CONFIG, "negative leak_timeout accepted");
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"config", test_config},
        {"reuse_lifo", test_reuse_lifo},
        {"max_and_timeout", test_max_and_timeout},
        {"fifo", test_fifo},
        {"handoff_and_lease", test_handoff_and_lease},
        {"discard_frees_place", test_discard_frees_place},
        {"return_state", test_return_state},
        {"dead_on_borrow", test_dead_on_borrow},
        {"owed_reply", test_owed_reply},
        {"ping_after_idle", test_ping_after_idle},
        {"connect_retry", test_connect_retry},
        {"retry_deadline", test_retry_deadline},
        {"janitor_min", test_janitor_min},
        {"janitor_connect_after_shutdown", test_janitor_connect_after_shutdown},
        {"idle_timeout", test_idle_timeout},
        {"max_lifetime", test_max_lifetime},
        {"lifetime_jitter", test_lifetime_jitter},
        {"background_validation", test_background_validation},
        {"shutdown", test_shutdown},
        {"drain_retire", test_drain_retire},
        {"races", test_races},
        {"stress", test_stress},
        {"churn", test_churn},
        {"observer_and_refs", test_observer_and_refs},
        {"stop_check", test_stop_check},
        {"late_check_keeps", test_late_check_keeps},
        {"silent_idle_goes_under", test_silent_idle_goes_under},
        {"owed_since_ends_when_lent", test_owed_since_ends_when_lent},
        {"stop_in_shutdown", test_stop_in_shutdown},
        {"server_full", test_server_full},
        {"leaks", test_leaks},
        {"former_bugs", known_bugs},   /* bugs found by these tests and since fixed */
    };
    return nc_run_cases("test_pool", cases, NC_NCASES(cases));
}
