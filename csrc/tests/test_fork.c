/* test_fork.c - fork() and the pool (csrc/core/nc_fork.c): a child process
 * sees a new fork generation, never touches the pool it inherited (no lock,
 * no rollback, no close) and gets a working pool of its own from
 * nc_pool_respawn, also when a parent thread held the pool's mutex at the
 * moment of the fork.
 *
 * A child reports through its exit status (its CHECK failures); every child
 * runs under alarm() so that a deadlock fails the test instead of hanging it.
 */
#include "nc_fork.h"
#include "nc_pool.h"
#include "nc_pool_internal.h"   /* to hold the pool mutex from a test thread */
#include "nc_time.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

/* ThreadSanitizer cannot follow a child that starts threads after a fork of
 * a threaded parent (it ends it, or confuses the new thread with one of the
 * parent's): built with it, the children here make pools without a janitor
 * and the case whose pool needs one (to check idle connections under the
 * mutex) is left out. */
#if defined(__SANITIZE_THREAD__)
#define NC_TEST_TSAN 1
#else
#define NC_TEST_TSAN 0
#endif

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- a fake backend that counts what is done to its connections ---------- */

typedef struct fake {
    int connects, closes, resets, ctx_frees;
    int block_looks;        /* looks_alive waits (under the pool mutex) until cleared */
    int in_looks;           /* a thread is inside looks_alive */
} fake;

typedef struct fconn {
    int id;
    int in_txn;
} fconn;

static void *f_connect(void *ctx, double deadline, nc_error *err)
{
    (void)deadline;
    fake *f = ctx;
    fconn *c = calloc(1, sizeof *c);
    if (!c) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    c->id = INC(f->connects);
    return c;
}

static int f_looks_alive(void *ctx, void *conn)
{
    (void)conn;
    fake *f = ctx;
    if (LD(f->block_looks)) {
        ST(f->in_looks, 1);
        while (LD(f->block_looks))
            sleep_s(0.001);
        ST(f->in_looks, 0);
    }
    return 1;
}

static int f_ping(void *ctx, void *conn, double deadline, nc_error *err)
{
    (void)ctx, (void)conn, (void)deadline, (void)err;
    return 0;
}

static int f_return_state(void *ctx, void *conn)
{
    (void)ctx;
    return LD(((fconn *)conn)->in_txn) ? 1 : 0;
}

static int f_reset(void *ctx, void *conn, double deadline, nc_error *err)
{
    (void)deadline, (void)err;
    fake *f = ctx;
    INC(f->resets);
    ST(((fconn *)conn)->in_txn, 0);
    return 0;
}

static void f_close(void *ctx, void *conn)
{
    fake *f = ctx;
    INC(f->closes);
    free(conn);
}

static void f_ctx_free(void *ctx)
{
    INC(((fake *)ctx)->ctx_frees);
}

static const nc_backend_ops fake_ops = {
    .kind = "fake",
    .connect = f_connect,
    .looks_alive = f_looks_alive,
    .ping = f_ping,
    .return_state = f_return_state,
    .reset = f_reset,
    .close = f_close,
    .ctx_free = f_ctx_free,
};

/* janitor 0: nothing that needs the maintenance thread (no thread starts). */
static nc_pool *mkpool(fake *f, int janitor)
{
    nc_pool_config cfg;
    nc_pool_config_defaults(&cfg);
    if (!janitor) {
        cfg.validate = 0;
        cfg.idle_timeout = 0;
        cfg.max_lifetime = 0;
    }
    cfg.max_connections = 3;
    cfg.acquire_timeout = 2.0;
    cfg.retry_attempts = 1;
    cfg.ping_after_idle = 30.0;
    nc_error err;
    nc_pool *p = nc_pool_new(&cfg, &fake_ops, f, &err);
    if (!p) {
        printf("FATAL: nc_pool_new: %s\n", err.message);
        exit(2);
    }
    return p;
}

/* Run child() in a forked child under alarm(secs); returns its exit status
 * (0: every check passed; 128 + signal when it died, e.g. SIGALRM on a hang). */
static int in_child(int (*child)(void *), void *arg, unsigned secs)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        alarm(secs);
        int f0 = failed;
        int rc = child(arg);
        fflush(stdout);
        _exit(rc ? rc : failed != f0 ? 1 : 0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* ---- cases ------------------------------------------------------------------ */

static uint64_t parent_gen;

static int child_generation(void *arg)
{
    (void)arg;
    CHECK(nc_fork_generation() == parent_gen + 1, "child generation %llu, parent %llu",
          (unsigned long long)nc_fork_generation(), (unsigned long long)parent_gen);
    return 0;
}

static void test_generation(void)
{
    parent_gen = nc_fork_generation();
    CHECK(in_child(child_generation, NULL, 10) == 0, "the child saw the next generation");
    CHECK(nc_fork_generation() == parent_gen, "the parent's generation does not change");
}

typedef struct scene {
    fake *f;
    nc_pool *p;
    int closes_at_fork, resets_at_fork, connects_at_fork;
} scene;

/* In the child: the inherited pool's mutex is held by a thread that does
 * not exist here.  Respawning must not touch it; the new pool works; none of
 * the inherited connections is rolled back or closed. */
static int child_respawn(void *arg)
{
    scene *s = arg;
    CHECK(nc_pool_inherited(s->p), "the pool is inherited in the child");
    nc_error err;
    ST(s->f->block_looks, 0);   /* this process's own connections may be checked */
    nc_pool *q = nc_pool_respawn(s->p, &err);
    CHECK(q != NULL, "respawn: %s", q ? "" : err.message);
    if (!q)
        return 1;
    CHECK(!nc_pool_inherited(q), "the new pool is this process's");
    nc_conn *c = NULL;
    uint64_t lease = 0;
    CHECK(nc_pool_acquire(q, 1.0, &c, &lease, &err) == 0, "borrow from the new pool: %s", err.message);
    if (c) {
        CHECK(((fconn *)c->raw)->id == s->connects_at_fork + 1, "a connection opened in the child");
        ((fconn *)c->raw)->in_txn = 1;
        nc_pool_release(q, c, 0);
    }
    nc_pool_stats st;
    nc_pool_get_stats(q, &st);
    CHECK(st.total == 1 && st.active == 0 && st.opened == 1, "the new pool counts only its own");
    CHECK(nc_pool_shutdown(q, 1.0) == 0, "shutdown of the new pool");
    nc_pool_free(q);
    CHECK(LD(s->f->closes) == s->closes_at_fork + 1, "only the child's connection was closed (%d closes)",
          LD(s->f->closes) - s->closes_at_fork);
    CHECK(LD(s->f->resets) == s->resets_at_fork + 1, "only the child's connection was rolled back");
    CHECK(LD(s->f->ctx_frees) == 1, "the new pool owned the context");
    return 0;
}

static void *hold_mutex(void *arg)
{
    /* nc_pool_try_acquire calls looks_alive under the pool mutex. */
    scene *s = arg;
    nc_conn *c;
    uint64_t lease;
    nc_error err;
    if (nc_pool_try_acquire(s->p, &c, &lease, &err) == 1)
        nc_pool_release(s->p, c, 0);
    return NULL;
}

static void test_child_respawns_while_mutex_held(void)
{
    if (NC_TEST_TSAN)
        return;
    fake f;
    memset(&f, 0, sizeof f);
    nc_pool *p = mkpool(&f, 1);
    scene s = {&f, p, 0, 0, 0};
    nc_conn *a, *b;
    uint64_t la, lb;
    nc_error err;
    CHECK(nc_pool_acquire(p, 1.0, &a, &la, &err) == 0, "borrow a");
    CHECK(nc_pool_acquire(p, 1.0, &b, &lb, &err) == 0, "borrow b");
    ((fconn *)a->raw)->in_txn = 1;   /* the parent's open transaction */
    nc_pool_release(p, b, 0);        /* b idle */
    sleep_s(0.02);                   /* past the window in which b is lent without a look */

    ST(f.block_looks, 1);
    pthread_t t;
    pthread_create(&t, NULL, hold_mutex, &s);
    double until = nc_now() + 5.0;
    while (!LD(f.in_looks) && nc_now() < until)
        sleep_s(0.001);
    CHECK(LD(f.in_looks), "a thread holds the pool mutex");
    s.closes_at_fork = LD(f.closes);
    s.resets_at_fork = LD(f.resets);
    s.connects_at_fork = LD(f.connects);
    int rc = in_child(child_respawn, &s, 10);
    CHECK(rc == 0, "child status %d (%s)", rc, rc == 128 + SIGALRM ? "hung" : "checks failed");
    ST(f.block_looks, 0);
    pthread_join(t, NULL);

    /* The parent never noticed. */
    CHECK(!nc_pool_inherited(p), "the parent's pool is its own");
    CHECK(nc_pool_lease_valid(p, a, la), "the parent's borrow is intact");
    CHECK(((fconn *)a->raw)->in_txn == 1, "its transaction is open");
    nc_pool_release(p, a, 0);
    CHECK(f.resets == 1 && f.closes == 0, "the parent rolled back its own, once");
    nc_pool_shutdown(p, 1.0);
    nc_pool_free(p);
    CHECK(f.ctx_frees == 1 && f.closes == 2, "the parent frees its pool as usual");
}

static int held, release_held;

static void *hold_mutex_directly(void *arg)
{
    nc_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    ST(held, 1);
    while (!LD(release_held))
        sleep_s(0.001);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* The same with the mutex taken by a plain thread (a janitor or a borrower
 * between two instructions), and a pool without a janitor. */
static void test_child_respawns_while_mutex_locked(void)
{
    fake f;
    memset(&f, 0, sizeof f);
    nc_pool *p = mkpool(&f, 0);
    scene s = {&f, p, 0, 0, 0};
    nc_conn *a;
    uint64_t la;
    nc_error err;
    CHECK(nc_pool_acquire(p, 1.0, &a, &la, &err) == 0, "borrow a");
    ((fconn *)a->raw)->in_txn = 1;
    ST(held, 0);
    ST(release_held, 0);
    pthread_t t;
    pthread_create(&t, NULL, hold_mutex_directly, p);
    double until = nc_now() + 5.0;
    while (!LD(held) && nc_now() < until)
        sleep_s(0.001);
    CHECK(LD(held), "a thread holds the pool mutex");
    s.closes_at_fork = LD(f.closes);
    s.resets_at_fork = LD(f.resets);
    s.connects_at_fork = LD(f.connects);
    int rc = in_child(child_respawn, &s, 10);
    CHECK(rc == 0, "child status %d (%s)", rc, rc == 128 + SIGALRM ? "hung" : "checks failed");
    ST(release_held, 1);
    pthread_join(t, NULL);
    CHECK(nc_pool_lease_valid(p, a, la) && ((fconn *)a->raw)->in_txn == 1, "the parent's borrow is intact");
    nc_pool_release(p, a, 0);
    CHECK(f.resets == 1 && f.closes == 0, "the parent rolled back its own, once");
    nc_pool_free(p);
}

static int child_closed(void *arg)
{
    scene *s = arg;
    nc_error err;
    nc_pool *q = nc_pool_respawn(s->p, &err);
    CHECK(q != NULL, "respawn");
    if (!q)
        return 1;
    nc_conn *c;
    uint64_t lease;
    CHECK(nc_pool_acquire(q, 0.5, &c, &lease, &err) < 0 && err.code == NC_E_POOL_CLOSED,
          "a pool shut down in the parent is shut down in the child");
    nc_pool_free(q);
    return 0;
}

static void test_closed_pool_stays_closed(void)
{
    fake f;
    memset(&f, 0, sizeof f);
    nc_pool *p = mkpool(&f, !NC_TEST_TSAN);
    nc_pool_shutdown(p, 0.0);
    scene s = {&f, p, 0, 0, 0};
    CHECK(in_child(child_closed, &s, 10) == 0, "child");
    nc_pool_free(p);
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"generation", test_generation},
        {"child_respawns_while_mutex_held", test_child_respawns_while_mutex_held},
        {"child_respawns_while_mutex_locked", test_child_respawns_while_mutex_locked},
        {"closed_pool_stays_closed", test_closed_pool_stays_closed},
    };
    return nc_run_cases("test_fork", cases, NC_NCASES(cases));
}
