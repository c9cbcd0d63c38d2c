/* test_route.c - unit tests for the failover route (csrc/core/nc_route.c):
 * endpoint pools, their probers and the monitor as one unit, over a fake
 * backend whose endpoints can be taken down.
 *
 * No monitor threads are started (except where said): decisions are taken
 * in the calling thread, as before start_monitoring(), so every step is
 * deterministic and nothing waits on a clock.
 */
#include "nc_route.h"
#include "nc_probe.h"
#include "nc_time.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

/* Scheduling slack on top of a deadline (check.h). */
#define SLACK (0.15 * nc_time_scale())

/* ---- a fake backend: one per endpoint ---------------------------------------- */

typedef struct endpoint {
    int id;
    int down;           /* connects refused, pings fail */
    int silent;         /* connects wait for their deadline, then fail (a server that never answers) */
    int connects, closes, pings;
    int gate;           /* 1: pings wait (up to their deadline) until it is 0 */
    int hold;           /* 1: connects wait (up to their deadline) until it is 0 ... */
    int held;           /* ... counted here as they begin to wait */
    int role;           /* what its probes answer (NC_ROLE_UNKNOWN: as a non-PostgreSQL backend) */
    uint64_t lsn;       /* and the WAL position they report with a role */
} endpoint;

/* The endpoint the calling thread's probe pinged last (f_ping sets it). */
static __thread endpoint *pinged;

typedef struct fconn {
    endpoint *ep;
} fconn;

static void sleep_until(double deadline)
{
    while (nc_now() < deadline) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void *f_connect(void *ctx, double deadline, nc_error *err)
{
    endpoint *ep = ctx;
    if (LD(ep->silent)) {
        sleep_until(deadline < nc_now() + 30 ? deadline : nc_now() + 30);
        nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "endpoint %d: timeout expired", ep->id);
        return NULL;
    }
    if (LD(ep->down)) {
        nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "endpoint %d: connection refused", ep->id);
        return NULL;
    }
    if (LD(ep->hold)) {
        INC(ep->held);
        while (LD(ep->hold) && nc_now() < deadline)
            sleep_until(nc_now() + 0.001);
    }
    fconn *c = calloc(1, sizeof *c);
    c->ep = ep;
    INC(ep->connects);
    return c;
}

static int f_looks_alive(void *ctx, void *conn)
{
    (void)conn;
    return !LD(((endpoint *)ctx)->down);
}

static int f_ping(void *ctx, void *conn, double deadline, nc_error *err)
{
    (void)conn;
    endpoint *ep = ctx;
    INC(ep->pings);
    pinged = ep;
    while (LD(ep->gate) && nc_now() < deadline)
        sleep_until(nc_now() + 0.001);
    if (LD(ep->down)) {
        nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "endpoint %d: no answer", ep->id);
        return -1;
    }
    return 0;
}

static int f_return_state(void *ctx, void *conn)
{
    (void)ctx;
    (void)conn;
    return 0;
}

static int f_reset(void *ctx, void *conn, double deadline, nc_error *err)
{
    (void)ctx;
    (void)conn;
    (void)deadline;
    (void)err;
    return 0;
}

static void f_close(void *ctx, void *conn)
{
    INC(((endpoint *)ctx)->closes);
    free(conn);
}

/* The probes of a fake endpoint answer its role and WAL position, as a
 * PostgreSQL server's would (the Makefile links this test with
 * --wrap=nc_prober_probe): read routing over standbys without a server. */
int __real_nc_prober_probe(nc_prober *p, double deadline, nc_probe_result *out);
int __wrap_nc_prober_probe(nc_prober *p, double deadline, nc_probe_result *out)
{
    pinged = NULL;
    int rc = __real_nc_prober_probe(p, deadline, out);
    if (rc == 0 && pinged && LD(pinged->role) != NC_ROLE_UNKNOWN) {
        out->role = LD(pinged->role);
        out->have_lsn = 1;
        out->lsn = LD(pinged->lsn);
    }
    return rc;
}

static const nc_backend_ops fake_ops = {
    .kind = "fake",
    .connect = f_connect,
    .looks_alive = f_looks_alive,
    .ping = f_ping,
    .return_state = f_return_state,
    .reset = f_reset,
    .close = f_close,
    .ctx_free = NULL,
};

typedef struct setup {
    endpoint eps[3];
    nc_pool *pools[3];
    nc_route *r;
    int n;
} setup;

static void make(setup *s, int n, int mode)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    nc_pool_config pc;
    nc_pool_config_defaults(&pc);
    pc.max_connections = 2;
    pc.retry_attempts = 1;
    pc.validate = 0;          /* no janitor thread */
    pc.max_lifetime = 0;
    nc_error err;
    int prio[3];
    for (int i = 0; i < n; i++) {
        s->eps[i].id = i;
        s->pools[i] = nc_pool_new(&pc, &fake_ops, &s->eps[i], &err);
        prio[i] = i + 1;
        if (!s->pools[i]) {
            printf("FATAL: nc_pool_new: %s\n", err.message);
            exit(2);
        }
    }
    nc_monitor_config mc;
    nc_monitor_config_defaults(&mc);
    mc.fo.mode = mode;
    mc.fo.hold_down = 0;
    mc.health_check_interval = 0.05;
    mc.health_check_timeout = 1;
    mc.failover_timeout = 2;
    s->r = nc_route_new(s->pools, n, prio, -1, &mc, &err);
    if (!s->r) {
        printf("FATAL: nc_route_new: %s\n", err.message);
        exit(2);
    }
}

static void finish(setup *s)
{
    nc_route_free(s->r);
    for (int i = 0; i < s->n; i++) {
        nc_pool_shutdown(s->pools[i], 0);
        nc_pool_free(s->pools[i]);
    }
}

static int current(setup *s)
{
    nc_monitor *m = nc_route_enter(s->r);
    int c = m ? nc_monitor_current(m, NULL) : -2;
    if (m)
        nc_route_leave(s->r);
    return c;
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_lend_current(void)
{
    setup s;
    make(&s, 2, NC_FO_AUTOMATIC);
    CHECK(nc_route_count(s.r) == 2 && nc_route_pool(s.r, 1) == s.pools[1] && !nc_route_pool(s.r, 2), "pools");
    int ep = -1;
    nc_conn *c;
    uint64_t l;
    nc_error err;
    CHECK(nc_route_lend(s.r, 1, &ep, &c, &l, &err) == 0 && ep == 0, "lend: %d %s", ep, err.message);
    uint64_t serial = c->serial;
    nc_pool_release(s.pools[0], c, 0);
    /* the idle one is lent again */
    CHECK(nc_route_lend(s.r, 1, &ep, &c, &l, &err) == 0 && ep == 0 && c->serial == serial, "again: %d", ep);
    nc_pool_release(s.pools[0], c, 0);
    CHECK(s.eps[1].connects == 0, "endpoint 1 was connected to");
    finish(&s);
}

static void test_connect_failure_switches_in_one_call(void)
{
    setup s;
    make(&s, 2, NC_FO_AUTOMATIC);
    ST(s.eps[0].down, 1);
    int ep = -1;
    nc_conn *c;
    uint64_t l;
    nc_error err;
    /* One call: endpoint 0 refuses, the monitor probes it, switches to 1
     * (verified by a probe) and the borrow is served there. */
    int rc = nc_route_lend(s.r, 5, &ep, &c, &l, &err);
    CHECK(rc == 0 && ep == 1, "lend after a refused connect: rc %d ep %d (%s)", rc, ep, err.message);
    if (rc == 0)
        nc_pool_release(s.pools[ep], c, 0);
    CHECK(current(&s) == 1, "current %d", current(&s));
    nc_monitor *m = nc_route_enter(s.r);
    nc_event e[4];
    int k = nc_monitor_wait_events(m, 0, e, 4, 0);
    nc_route_leave(s.r);
    CHECK(k == 1 && e[0].kind == NC_EV_FAILOVER && e[0].from == 0 && e[0].to == 1 && e[0].success,
          "events %d kind %d", k, k ? e[0].kind : 0);
    CHECK(!strcmp(nc_event_kind_name(e[0].kind), "failover"), "event name %s", nc_event_kind_name(e[0].kind));

    /* everything down: no usable endpoint, at once */
    ST(s.eps[1].down, 1);
    nc_pool_drain(s.pools[1], NC_DRAIN_RETIRE);
    rc = nc_route_lend(s.r, 5, &ep, &c, &l, &err);
    CHECK(rc == -1 && err.code == NC_E_FO_NO_ENDPOINT, "all down: rc %d code %d (%s)", rc, err.code, err.message);
    /* endpoint 0 comes back: the next borrow rechecks and resumes there */
    ST(s.eps[0].down, 0);
    rc = nc_route_lend(s.r, 5, &ep, &c, &l, &err);
    CHECK(rc == 0 && ep == 0, "resume: rc %d ep %d (%s)", rc, ep, err.message);
    if (rc == 0)
        nc_pool_release(s.pools[ep], c, 0);
    finish(&s);
}

/* Without monitor threads a borrow probes and may switch in its own thread:
 * all of it ends by the borrow's deadline, though the monitor's own bounds
 * (health_check_timeout 1 s, failover_timeout 2 s) are far longer. */
static void test_lend_keeps_the_callers_deadline(void)
{
    for (int silent_first = 0; silent_first < 2; silent_first++) {
        setup s;
        make(&s, 2, NC_FO_AUTOMATIC);
        ST(s.eps[silent_first ? 0 : 1].silent, 1);
        ST(s.eps[silent_first ? 1 : 0].down, 1);
        int ep = -1;
        nc_conn *c;
        uint64_t l;
        nc_error err;
        for (int k = 0; k < 2; k++) {
            double t0 = nc_now();
            int rc = nc_route_lend(s.r, 0.2, &ep, &c, &l, &err);
            double el = nc_now() - t0;
            CHECK(rc < 0, "lent from a dead pair of endpoints");
            CHECK(el < 0.2 + SLACK, "silent_first %d borrow %d took %.3f s with a 0.2 s timeout", silent_first, k,
                  el);
        }
        finish(&s);
    }
}

static void test_statement_failure_reaches_the_monitor(void)
{
    setup s;
    make(&s, 2, NC_FO_AUTOMATIC);
    int ep = -1;
    nc_conn *c;
    uint64_t l;
    nc_error err;
    CHECK(nc_route_lend(s.r, 5, &ep, &c, &l, &err) == 0 && ep == 0, "lend");
    /* the server goes away under a borrowed connection: the statement path
     * makes one call, and the route's monitor probes, decides and switches */
    ST(s.eps[0].down, 1);
    nc_error lost;
    nc_error_set(&lost, NC_E_CONNECTION, NC_K_OPERATIONAL, "server closed the connection unexpectedly");
    nc_pool_statement_done(s.pools[0], &lost);
    CHECK(current(&s) == 1, "no switch after a lost connection: current %d", current(&s));
    /* the abandoned endpoint's borrowed connection is closed when it comes back */
    int closes = LD(s.eps[0].closes);
    nc_pool_release(s.pools[0], c, 0);
    CHECK(LD(s.eps[0].closes) == closes + 1, "the abandoned connection was kept");
    /* a SQL error says nothing about the endpoint */
    nc_error syntax;
    nc_error_set(&syntax, NC_E_QUERY, NC_K_NONE, "syntax error");
    memcpy(syntax.sqlstate, "42601", 6);
    nc_pool_statement_done(s.pools[1], &syntax);
    CHECK(current(&s) == 1, "a syntax error moved the route");
    finish(&s);
}

static void test_closed(void)
{
    setup s;
    make(&s, 2, NC_FO_AUTOMATIC);
    nc_monitor *m = nc_route_enter(s.r);
    nc_error err;
    CHECK(m && nc_monitor_start(m, &err) == 0, "start");
    nc_route_leave(s.r);
    /* let each endpoint's probe connection open (a manual trigger probes them) */
    m = nc_route_enter(s.r);
    nc_monitor_trigger_failover(m, -1, "open the probe connections", &err);
    nc_route_leave(s.r);
    int open_before = LD(s.eps[0].connects) - LD(s.eps[0].closes);
    nc_route_close(s.r);
    nc_route_close(s.r);   /* idempotent */
    /* nothing is borrowed: what was open is the probe connection, and it goes
     * with the close, not with the route's memory */
    CHECK(open_before == 1, "endpoint 0 had %d connections open", open_before);
    for (int i = 0; i < 2; i++)
        CHECK(LD(s.eps[i].connects) == LD(s.eps[i].closes), "endpoint %d: %d connections open after close", i,
              LD(s.eps[i].connects) - LD(s.eps[i].closes));
    int ep;
    nc_conn *c;
    uint64_t l;
    CHECK(nc_route_lend(s.r, 1, &ep, &c, &l, &err) == -1 && err.code == NC_E_POOL_CLOSED,
          "lend after close: code %d", err.code);
    CHECK(nc_route_enter(s.r) == NULL, "enter after close");
    /* a failure reported after close goes nowhere (the observer is gone) */
    nc_error lost;
    nc_error_set(&lost, NC_E_CONNECTION, NC_K_OPERATIONAL, "lost");
    nc_pool_statement_done(s.pools[0], &lost);
    finish(&s);
}

/* A start that races the owner's close fails; a pool has one route. */
static void test_close_refuses_a_late_start_and_pools_are_not_shared(void)
{
    setup s;
    make(&s, 2, NC_FO_AUTOMATIC);
    nc_error err;
    /* a second route over the same pools is refused (and leaves them be) */
    nc_monitor_config mc;
    nc_monitor_config_defaults(&mc);
    int prio[2] = {1, 2};
    nc_route *other = nc_route_new(s.pools, 2, prio, -1, &mc, &err);
    CHECK(other == NULL && err.code == NC_E_CONFIG, "a second route over a watched pool");
    nc_pool *twice[2] = {s.pools[1], s.pools[1]};
    other = nc_route_new(twice, 2, prio, -1, &mc, &err);
    CHECK(other == NULL && err.code == NC_E_CONFIG && strstr(err.message, "share a pool"), "one pool twice: %s",
          err.message);
    /* the first route still hears its pools' failures */
    ST(s.eps[0].down, 1);
    nc_error lost;
    nc_error_set(&lost, NC_E_CONNECTION, NC_K_OPERATIONAL, "lost");
    nc_pool_statement_done(s.pools[0], &lost);
    CHECK(current(&s) == 1, "the refused route took the observer: current %d", current(&s));

    nc_monitor *m = nc_route_enter(s.r);   /* a start is on its way ... */
    nc_route_close(s.r);                   /* ... when the owner closes */
    CHECK(m && nc_monitor_start(m, &err) < 0 && err.code == NC_E_POOL_CLOSED, "a start after close ran");
    CHECK(!nc_monitor_running(m), "threads left running after close");
    nc_route_leave(s.r);
    finish(&s);
}

/* A probe that outlives close: the prober and pool it uses stay alive. */
typedef struct slow_arg {
    setup *s;
    int done;
} slow_arg;

static void *report_in_thread(void *arg)
{
    slow_arg *a = arg;
    nc_error lost;
    nc_error_set(&lost, NC_E_CONNECTION, NC_K_OPERATIONAL, "lost");
    nc_pool_statement_done(a->s->pools[0], &lost);   /* probes and may switch, in this thread */
    ST(a->done, 1);
    return NULL;
}

static void test_close_during_report(void)
{
    setup s;
    make(&s, 2, NC_FO_AUTOMATIC);
    ST(s.eps[0].down, 1);
    slow_arg a = {&s, 0};
    pthread_t t;
    pthread_create(&t, NULL, report_in_thread, &a);
    nc_route_free(s.r);   /* whenever the report runs: no use after free (ASan) */
    pthread_join(t, NULL);
    CHECK(LD(a.done) == 1, "report thread");
    for (int i = 0; i < s.n; i++) {
        nc_pool_shutdown(s.pools[i], 0);
        nc_pool_free(s.pools[i]);
    }
}

/* Read targets over endpoints whose role nobody can tell (a fake backend,
 * as SQLite or a Python backend): no standby, so "standby" fails at once
 * with NC_E_FO_NO_STANDBY and the others borrow from the current endpoint,
 * counted as reads. */
static void test_read_targets_without_standbys(void)
{
    setup s;
    make(&s, 2, NC_FO_AUTOMATIC);
    int ep = -1;
    nc_conn *c;
    uint64_t l;
    nc_error err;
    double t0 = nc_now();
    int rc = nc_route_lend_to(s.r, NC_TARGET_STANDBY, 5, &ep, &c, &l, &err);
    CHECK(rc == -1 && err.code == NC_E_FO_NO_STANDBY && nc_now() - t0 < 5, "standby: rc %d code %d (%s)", rc,
          err.code, err.message);
    for (int t = NC_TARGET_PREFER_STANDBY; t <= NC_TARGET_ANY; t++) {
        rc = nc_route_lend_to(s.r, t, 5, &ep, &c, &l, &err);
        CHECK(rc == 0 && ep == 0, "%s: rc %d ep %d (%s)", nc_target_name(t), rc, ep, err.message);
        if (rc == 0)
            nc_pool_release(s.pools[ep], c, 0);
    }
    rc = nc_route_lend_to(s.r, NC_TARGET_COUNT, 5, &ep, &c, &l, &err);
    CHECK(rc == -1 && err.code == NC_E_FO_BAD_TARGET, "bad target: %d", err.code);
    CHECK(nc_route_lend(s.r, 5, &ep, &c, &l, &err) == 0 && ep == 0, "primary");
    nc_pool_release(s.pools[0], c, 0);
    nc_route_ep_status st[NC_MONITOR_ENDPOINTS_MAX];
    nc_route_read_status(s.r, st);
    CHECK(st[0].reads == 2 && st[0].writes == 1 && st[1].reads == 0 && st[1].writes == 0,
          "counted: %llu reads %llu writes", (unsigned long long)st[0].reads, (unsigned long long)st[0].writes);
    CHECK(st[0].probed && st[0].up && !st[0].standby && !st[0].eligible && !st[0].have_lsn, "endpoint 0's view");
    nc_read_config rc_bad;
    nc_read_config_defaults(&rc_bad);
    CHECK(rc_bad.failover_wait == 0 && rc_bad.max_replica_lag_bytes == 16.0 * 1024 * 1024 &&
              rc_bad.max_replica_lag_seconds == 30.0,
          "defaults");
    rc_bad.failover_wait = -1;
    CHECK(nc_route_configure_reads(s.r, &rc_bad, &err) == -1 && err.code == NC_E_CONFIG, "failover_wait < 0");
    rc_bad.failover_wait = 0;
    rc_bad.max_replica_lag_seconds = 0;
    CHECK(nc_route_configure_reads(s.r, &rc_bad, &err) == -1 && err.code == NC_E_CONFIG, "lag 0");
    finish(&s);
}

typedef struct waiter {
    setup *s;
    int rc, ep, code;
    double waited;
    int done;
} waiter;

static void *wait_borrow(void *arg)
{
    waiter *w = arg;
    nc_conn *c;
    uint64_t l;
    nc_error err;
    nc_error_clear(&err);
    double t0 = nc_now();
    w->rc = nc_route_lend(w->s->r, 20, &w->ep, &c, &l, &err);
    w->waited = nc_now() - t0;
    w->code = err.code;
    if (w->rc == 0)
        nc_pool_release(w->s->pools[w->ep], c, 0);
    ST(w->done, 1);
    return NULL;
}

/* failover_wait, with monitor threads: while every endpoint is down a
 * borrow for the primary waits (on the monitor's events) instead of
 * failing; one whose own timeout is shorter fails at it; when an endpoint
 * comes back the monitor switches and the waiting borrow is served. */
static void test_failover_wait(void)
{
    setup s;
    make(&s, 2, NC_FO_AUTOMATIC);
    nc_error err;
    nc_read_config rcfg;
    nc_read_config_defaults(&rcfg);
    rcfg.failover_wait = 20;
    CHECK(nc_route_configure_reads(s.r, &rcfg, &err) == 0, "configure");
    ST(s.eps[0].down, 1);
    ST(s.eps[1].down, 1);
    nc_monitor *m = nc_route_enter(s.r);
    CHECK(m && nc_monitor_start(m, &err) == 0, "start");
    /* the outage seen: the monitor's no_target event (its probes run every 0.05 s) */
    uint64_t seen = 0;
    nc_event e;
    while (nc_monitor_current(m, NULL) >= 0 && nc_monitor_wait_events(m, seen, &e, 1, 10 * nc_time_scale()) == 1)
        seen = e.id;
    CHECK(nc_monitor_current(m, NULL) == -1, "unavailable");
    waiter w = {&s, -2, -1, 0, 0, 0};
    pthread_t t;
    pthread_create(&t, NULL, wait_borrow, &w);
    int ep;
    nc_conn *c;
    uint64_t l;
    double t0 = nc_now();
    int rc = nc_route_lend(s.r, 0.3, &ep, &c, &l, &err);
    double took = nc_now() - t0;
    CHECK(rc == -1 && err.code == NC_E_FO_NO_ENDPOINT && took >= 0.3 && took < 0.3 + SLACK * 4,
          "a short borrow waits its own timeout: rc %d code %d took %.3f", rc, err.code, took);
    CHECK(!LD(w.done), "the long borrow still waits");
    ST(s.eps[1].down, 0);
    pthread_join(t, NULL);
    CHECK(w.rc == 0 && w.ep == 1, "served by the endpoint that came back: rc %d ep %d code %d after %.3f s", w.rc,
          w.ep, w.code, w.waited);
    nc_route_leave(s.r);
    finish(&s);
}

/* ---- endpoints that join and leave (grow in place, never shrink) ---------------- */

static nc_pool *fake_pool(endpoint *ep, int id)
{
    nc_pool_config pc;
    nc_pool_config_defaults(&pc);
    pc.max_connections = 2;
    pc.retry_attempts = 1;
    pc.validate = 0;
    pc.max_lifetime = 0;
    memset(ep, 0, sizeof *ep);
    ep->id = id;
    nc_error err;
    nc_pool *p = nc_pool_new(&pc, &fake_ops, ep, &err);
    if (!p) {
        printf("FATAL: nc_pool_new: %s\n", err.message);
        exit(2);
    }
    return p;
}

static void drop_pool(nc_pool *p)
{
    nc_pool_shutdown(p, 0);
    nc_pool_free(p);
}

/* An endpoint appended takes over when the current one is removed; a
 * removed endpoint is never lent from, its idle connections are closed,
 * a lent one is closed when it comes back; back under the same slot it is
 * probed again and serves again. */
static void test_add_remove_readd(void)
{
    setup s;
    make(&s, 1, NC_FO_AUTOMATIC);
    endpoint extra;
    nc_pool *px = fake_pool(&extra, 7);
    nc_error err;
    int ep = -1;
    nc_conn *c, *c2;
    uint64_t l, l2;
    CHECK(nc_route_lend(s.r, 1, &ep, &c, &l, &err) == 0 && ep == 0, "lend from 0: %s", err.message);
    CHECK(nc_route_lend(s.r, 1, &ep, &c2, &l2, &err) == 0 && ep == 0, "a second from 0: %s", err.message);
    nc_pool_release(s.pools[0], c2, 0);   /* one idle, one lent */
    int i = nc_route_add(s.r, px, 2, &err);
    CHECK(i == 1 && nc_route_count(s.r) == 2 && nc_route_pool(s.r, 1) == px, "added as 1: %d %s", i, err.message);
    CHECK(nc_route_add(s.r, px, 3, &err) < 0 && err.code == NC_E_CONFIG, "the same pool twice: %d", err.code);
    CHECK(current(&s) == 0, "still on 0");

    /* probed once (a manual failover probes what is unknown): its prober keeps a connection */
    nc_monitor *m = nc_route_enter(s.r);
    CHECK(nc_monitor_trigger_failover(m, 0, "probe", &err) == 0, "already on 0");
    nc_route_leave(s.r);
    /* 0 leaves: its idle connection and its probe connection close now, no borrow goes there */
    int closes = LD(s.eps[0].closes);
    CHECK(nc_route_set_removed(s.r, 0, 1) == 0 && nc_route_removed(s.r, 0), "removed");
    CHECK(LD(s.eps[0].closes) == closes + 2, "the idle and probe connections closed: %d",
          LD(s.eps[0].closes) - closes);
    CHECK(current(&s) == -1, "a removed current endpoint takes no borrow");
    CHECK(nc_route_lend(s.r, 2, &ep, &c2, &l2, &err) == 0 && ep == 1, "lent from the new one: ep %d (%s)", ep,
          err.message);
    nc_pool_release(px, c2, 0);
    CHECK(current(&s) == 1, "switched to 1: %d", current(&s));
    nc_pool_release(s.pools[0], c, 0);   /* the one lent before: closed on return */
    CHECK(LD(s.eps[0].closes) == closes + 3, "the lent one closed on return");
    nc_route_ep_status st[NC_MONITOR_ENDPOINTS_MAX];
    CHECK(nc_route_read_status(s.r, st) == 2 && st[0].removed && !st[1].removed, "status shows it removed");
    nc_monitor_status ms;
    nc_fo_health h[NC_MONITOR_ENDPOINTS_MAX];
    m = nc_route_enter(s.r);
    nc_monitor_get_status(m, &ms, h);
    CHECK(ms.n == 2 && h[0].removed && !h[0].available && strstr(h[0].last_error, "removed"), "health: %s",
          h[0].last_error);
    /* a manual failover to it is refused */
    CHECK(nc_monitor_trigger_failover(m, 0, "back", &err) == 0, "no manual switch to a removed endpoint");
    nc_route_leave(s.r);
    for (int k = 0; k < 5; k++) {
        CHECK(nc_route_lend(s.r, 1, &ep, &c2, &l2, &err) == 0 && ep == 1, "never 0 again: %d", ep);
        nc_pool_release(px, c2, 0);
    }

    /* back under the same slot: probed again, a target again */
    CHECK(nc_route_set_removed(s.r, 0, 0) == 0 && !nc_route_removed(s.r, 0), "back");
    m = nc_route_enter(s.r);
    CHECK(nc_monitor_trigger_failover(m, 0, "back", &err) == 1, "switch to it: %s", err.message);
    nc_route_leave(s.r);
    CHECK(nc_route_lend(s.r, 1, &ep, &c2, &l2, &err) == 0 && ep == 0, "lent from 0 again: %d", ep);
    nc_pool_release(s.pools[0], c2, 0);
    CHECK(nc_route_set_removed(s.r, 5, 1) == -1, "no endpoint 5");
    finish(&s);
    drop_pool(px);
}

static int pool_until(nc_pool *p, int (*pred)(const nc_pool_stats *, int), int arg, double timeout)
{
    double until = nc_now() + timeout;
    for (;;) {
        nc_pool_stats st;
        nc_pool_get_stats(p, &st);
        if (pred(&st, arg))
            return 1;
        if (nc_now() > until)
            return 0;
        sleep_until(nc_now() + 0.005);
    }
}
static int idle_at(const nc_pool_stats *st, int n) { return st->idle == n; }
static int total_at(const nc_pool_stats *st, int n) { return st->total == n; }
static int leaked_from(const nc_pool_stats *st, int n) { return st->leaked >= (uint64_t)n; }

/* A removed endpoint whose pool keeps min_connections holds no session of
 * its server: its idle ones close and its janitor does not open them again
 * (the drain holds the refill) until it is back and borrowed from.  The
 * proof that the janitor ran after the removal is a leak it finds (a
 * borrow held past leak_timeout): its loop refills first. */
static void test_removed_pool_is_not_refilled(void)
{
    setup s;
    make(&s, 1, NC_FO_AUTOMATIC);
    endpoint extra;
    memset(&extra, 0, sizeof extra);
    extra.id = 7;
    nc_pool_config pc;
    nc_pool_config_defaults(&pc);
    pc.max_connections = 3;
    pc.min_connections = 2;
    pc.retry_attempts = 1;
    pc.validate = 0;
    pc.max_lifetime = 0;
    pc.leak_timeout = 0.3;
    nc_error err;
    nc_pool *px = nc_pool_new(&pc, &fake_ops, &extra, &err);
    CHECK(px != NULL, "%s", err.message);
    if (!px) {
        finish(&s);
        return;
    }
    CHECK(nc_route_add(s.r, px, 2, &err) == 1, "added: %s", err.message);
    CHECK(pool_until(px, idle_at, 2, 1.0 + SLACK * 4), "min_connections not opened");
    nc_conn *held;
    uint64_t lh;
    CHECK(nc_pool_acquire(px, 1.0, &held, &lh, &err) == 0, "borrow: %s", err.message);
    int closes = LD(extra.closes);
    CHECK(nc_route_set_removed(s.r, 1, 1) == 0, "removed");
    CHECK(LD(extra.closes) == closes + 1, "the idle one closed: %d", LD(extra.closes) - closes);
    CHECK(pool_until(px, leaked_from, 1, 2.0 + SLACK * 4), "the janitor did not run");
    nc_pool_stats st;
    nc_pool_get_stats(px, &st);
    CHECK(st.total == 1, "refilled while removed: total %d", st.total);
    nc_pool_release(px, held, 0);
    CHECK(LD(extra.closes) == closes + 2, "the lent one closed on return");
    CHECK(pool_until(px, total_at, 0, 0.5 + SLACK), "total %d", (nc_pool_get_stats(px, &st), st.total));
    /* back, and borrowed from: min_connections again */
    CHECK(nc_route_set_removed(s.r, 1, 0) == 0, "back");
    CHECK(nc_pool_acquire(px, 1.0, &held, &lh, &err) == 0, "borrow: %s", err.message);
    nc_pool_release(px, held, 0);
    CHECK(pool_until(px, total_at, 2, 1.0 + SLACK * 4), "not refilled once back and borrowed from");
    finish(&s);
    drop_pool(px);
}

/* Endpoints past the capacity are refused with their own code; the route
 * works on. */
static void test_capacity(void)
{
    setup s;
    make(&s, 1, NC_FO_AUTOMATIC);
    CHECK(nc_route_capacity(s.r) == NC_ROUTE_CAPACITY, "capacity %d", nc_route_capacity(s.r));
    static endpoint more[NC_ROUTE_CAPACITY + 1];
    nc_pool *pools[NC_ROUTE_CAPACITY + 1];
    nc_error err;
    int added = 0;
    for (int k = 0; k < NC_ROUTE_CAPACITY; k++) {
        pools[k] = fake_pool(&more[k], 10 + k);
        int i = nc_route_add(s.r, pools[k], 2 + k, &err);
        if (i == k + 1)
            added++;
        else
            CHECK(k == NC_ROUTE_CAPACITY - 1 && err.code == NC_E_FO_CAPACITY, "add %d: %d (%s)", k, err.code,
                  err.message);
    }
    CHECK(added == NC_ROUTE_CAPACITY - 1 && nc_route_count(s.r) == NC_ROUTE_CAPACITY, "filled: %d", added);
    CHECK(strstr(err.message, "no room") != NULL, "message: %s", err.message);
    int ep;
    nc_conn *c;
    uint64_t l;
    CHECK(nc_route_lend(s.r, 1, &ep, &c, &l, &err) == 0 && ep == 0, "lends on");
    nc_pool_release(s.pools[0], c, 0);
    finish(&s);
    for (int k = 0; k < NC_ROUTE_CAPACITY; k++)
        drop_pool(pools[k]);
    CHECK(nc_error_describe(NC_E_FO_CAPACITY) != NULL, "4020 in the table");
}

typedef struct reporter {
    nc_pool *pool;
    int stop;
    int reports;
} reporter;

/* The statement path of a connection lent from the pool before it joined
 * the route: lost connections reported over and over. */
static void *report_loop(void *arg)
{
    reporter *w = arg;
    nc_error lost;
    nc_error_set(&lost, NC_E_CONNECTION, NC_K_OPERATIONAL, "server closed the connection unexpectedly");
    while (!LD(w->stop)) {
        nc_pool_report(w->pool, &lost);
        INC(w->reports);
    }
    return NULL;
}

/* A pool already in use when it is added: its failure reports reach the
 * route's observer as soon as the observer is set, so the observer's
 * argument must be filled before (the pool's lock orders the two; the TSan
 * stage sees a race otherwise, a plain build may crash on a NULL route). */
static void test_add_a_pool_in_use(void)
{
    setup s;
    make(&s, 1, NC_FO_AUTOMATIC);
    endpoint extra;
    nc_pool *px = fake_pool(&extra, 7);
    reporter w;
    memset(&w, 0, sizeof w);
    w.pool = px;
    pthread_t t;
    pthread_create(&t, NULL, report_loop, &w);
    while (LD(w.reports) < 10)
        usleep(100);
    nc_error err;
    int i = nc_route_add(s.r, px, 2, &err);
    CHECK(i == 1, "added: %d %s", i, err.message);
    int before = LD(w.reports);
    while (LD(w.reports) < before + 10)
        usleep(100);
    ST(w.stop, 1);
    pthread_join(t, NULL);
    CHECK(current(&s) == 0, "reports on the new endpoint left the current one alone: %d", current(&s));
    finish(&s);
    drop_pool(px);
}

static void *recheck_main(void *arg)
{
    nc_route *r = arg;
    nc_monitor *m = nc_route_enter(r);
    if (m) {
        (void)nc_monitor_recheck(m, nc_now() + 5 * nc_time_scale());
        nc_route_leave(r);
    }
    return NULL;
}

/* An endpoint removed while its probe runs: the probe connection, which
 * nc_route_set_removed could not close then, is closed as the probe ends
 * (nothing probes it again, so it would stay open until the route closes). */
static void test_removed_during_its_probe(void)
{
    setup s;
    make(&s, 1, NC_FO_AUTOMATIC);
    endpoint extra;
    nc_pool *px = fake_pool(&extra, 7);
    nc_error err;
    CHECK(nc_route_add(s.r, px, 2, &err) == 1, "added: %s", err.message);
    ST(extra.gate, 1);
    pthread_t t;
    pthread_create(&t, NULL, recheck_main, s.r);   /* probes the unknown endpoints, 1 among them */
    double end = nc_now() + 5 * nc_time_scale();
    while (LD(extra.pings) < 1 && nc_now() < end)
        usleep(1000);
    CHECK(LD(extra.pings) == 1, "the probe of 1 runs");
    CHECK(nc_route_set_removed(s.r, 1, 1) == 0, "removed");
    ST(extra.gate, 0);
    pthread_join(t, NULL);
    CHECK(LD(extra.connects) == 1 && LD(extra.closes) == 1,
          "the probe connection closed as its probe ended: %d opened, %d closed", LD(extra.connects),
          LD(extra.closes));
    finish(&s);
    drop_pool(px);
}

typedef struct lender {
    setup *s;
    nc_pool **extra;
    int stop;
    int lends, failures;
    double removed_at;          /* set by the main thread once 0 is removed */
    int late_from_removed;      /* a borrow begun after the removal was served by 0 */
} lender;

static void *lend_loop(void *arg)
{
    lender *w = arg;
    while (!LD(w->stop)) {
        double t0 = nc_now();
        double removed_at;
        __atomic_load(&w->removed_at, &removed_at, __ATOMIC_SEQ_CST);
        int ep;
        nc_conn *c;
        uint64_t l;
        nc_error err;
        if (nc_route_lend_to(w->s->r, NC_TARGET_PRIMARY, 2, &ep, &c, &l, &err) == 0) {
            INC(w->lends);
            if (ep == 0 && removed_at > 0 && t0 > removed_at)
                INC(w->late_from_removed);
            nc_pool_release(nc_route_pool(w->s->r, ep), c, 0);
        } else {
            INC(w->failures);
        }
        nc_route_ep_status st[NC_MONITOR_ENDPOINTS_MAX];
        (void)nc_route_read_status(w->s->r, st);
    }
    return NULL;
}

/* Borrows (and status reads) on four threads while endpoints are added,
 * the current one removed and brought back, with the monitor running:
 * nothing crashes or races (the TSan stage runs this), no borrow begun
 * after the removal is served by the removed endpoint. */
static void test_concurrent_lend_during_add_remove(void)
{
    setup s;
    make(&s, 1, NC_FO_AUTOMATIC);
    nc_error err;
    nc_monitor *m = nc_route_enter(s.r);
    CHECK(m && nc_monitor_start(m, &err) == 0, "start");
    static endpoint more[6];
    nc_pool *pools[6];
    lender w;
    memset(&w, 0, sizeof w);
    w.s = &s;
    pthread_t t[4];
    for (int k = 0; k < 4; k++)
        pthread_create(&t[k], NULL, lend_loop, &w);
    for (int k = 0; k < 6; k++) {
        pools[k] = fake_pool(&more[k], 20 + k);
        CHECK(nc_route_add(s.r, pools[k], 2 + k, &err) == k + 1, "add %d: %s", k, err.message);
    }
    while (LD(w.lends) < 50)
        usleep(1000);
    CHECK(nc_route_set_removed(s.r, 0, 1) == 0, "remove the current one");
    double now = nc_now();
    __atomic_store(&w.removed_at, &now, __ATOMIC_SEQ_CST);
    /* the monitor switches to a new endpoint (probed writable by its thread) */
    double end = nc_now() + 10 * nc_time_scale();
    while (nc_monitor_current(m, NULL) <= 0 && nc_now() < end)
        usleep(1000);
    CHECK(nc_monitor_current(m, NULL) > 0, "switched to an added endpoint: %d", nc_monitor_current(m, NULL));
    int before = LD(w.lends);
    while (LD(w.lends) < before + 50 && nc_now() < end)
        usleep(1000);
    CHECK(nc_route_set_removed(s.r, 3, 1) == 0 && nc_route_set_removed(s.r, 0, 0) == 0, "remove 3, 0 back");
    before = LD(w.lends);
    while (LD(w.lends) < before + 50 && nc_now() < end)
        usleep(1000);
    ST(w.stop, 1);
    for (int k = 0; k < 4; k++)
        pthread_join(t[k], NULL);
    CHECK(LD(w.late_from_removed) == 0, "borrows begun after the removal served by it: %d", w.late_from_removed);
    CHECK(LD(w.lends) >= 150, "borrows went on: %d (failures %d)", w.lends, w.failures);
    nc_route_leave(s.r);
    finish(&s);
    for (int k = 0; k < 6; k++)
        drop_pool(pools[k]);
}

/* ---- out of memory while adding an endpoint ---------------------------------- */

/* The Makefile links this test with --wrap=malloc,calloc,realloc: the core's
 * allocations come here.  Armed on one thread only (the monitor's and the
 * pools' threads allocate as they like): the allocation after `fail_after`
 * more fails, once. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
static __thread long fail_after = -1;
static __thread int failed_one;

static int inject(void)
{
    if (fail_after >= 0 && fail_after-- == 0) {
        failed_one = 1;
        return 1;
    }
    return 0;
}

void *__wrap_malloc(size_t n) { return inject() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t k, size_t n) { return inject() ? NULL : __real_calloc(k, n); }
void *__wrap_realloc(void *p, size_t n) { return inject() ? NULL : __real_realloc(p, n); }

static int monitor_count(setup *s)
{
    nc_monitor *m = nc_route_enter(s->r);
    int n = m ? nc_monitor_count(m) : -1;
    if (m)
        nc_route_leave(s->r);
    return n;
}

/* An add is all or nothing: each of its allocations in turn fails (a sweep
 * until one add needs none to fail), and each failure leaves the route and
 * its monitor with the same count as before and the pool without a route,
 * so the same pool is added at the end; indices stay in step after (before
 * the fix the monitor's arrays failed to grow after the route published the
 * slot: the counts parted for good and the pool stayed taken). */
static void test_add_is_all_or_nothing_out_of_memory(void)
{
    for (int running = 0; running < 2; running++) {
        setup s;
        make(&s, 2, NC_FO_AUTOMATIC);
        nc_error err;
        if (running) {
            nc_monitor *m = nc_route_enter(s.r);
            CHECK(m && nc_monitor_start(m, &err) == 0, "start");
            nc_route_leave(s.r);
        }
        endpoint extra[2];
        nc_pool *px = fake_pool(&extra[0], 7), *py = fake_pool(&extra[1], 8);
        int injected = 0, i = -1;
        for (long k = 0; k < 100; k++) {
            nc_error_clear(&err);
            failed_one = 0;
            fail_after = k;
            i = nc_route_add(s.r, px, 3, &err);
            fail_after = -1;
            if (!failed_one)
                break;   /* no allocation left to fail */
            injected++;
            if (i >= 0) {
                /* an allocation the add does without (a probe thread that
                 * could not start is probed otherwise): in step all the same */
                CHECK(running, "an add succeeded though one of its allocations failed (k %ld)", k);
                break;
            }
            CHECK(err.code == NC_E_INTERNAL, "k %ld: code %d (%s)", k, err.code, err.message);
            CHECK(nc_route_count(s.r) == 2 && monitor_count(&s) == 2 && !nc_route_pool(s.r, 2),
                  "k %ld: route %d endpoints, monitor %d", k, nc_route_count(s.r), monitor_count(&s));
        }
        CHECK(injected >= 2, "allocations failed in the add: %d", injected);
        CHECK(i == 2 && nc_route_pool(s.r, 2) == px, "the same pool added at last: %d (%s)", i, err.message);
        CHECK(nc_route_add(s.r, py, 4, &err) == 3, "the next add: %s", err.message);
        CHECK(nc_route_count(s.r) == 4 && monitor_count(&s) == 4, "in step: route %d, monitor %d",
              nc_route_count(s.r), monitor_count(&s));
        nc_route_ep_status st[NC_MONITOR_ENDPOINTS_MAX];
        CHECK(nc_route_read_status(s.r, st) == 4 && !st[2].removed && !st[3].removed, "none a tombstone");
        /* and they serve: the two first leave, the monitor switches to an added one */
        CHECK(nc_route_set_removed(s.r, 0, 1) == 0 && nc_route_set_removed(s.r, 1, 1) == 0, "0 and 1 leave");
        int ep = -1;
        nc_conn *c;
        uint64_t l;
        int rc = nc_route_lend(s.r, 5, &ep, &c, &l, &err);
        if (running && rc < 0) {
            /* the monitor's threads decide: wait for the switch */
            double end = nc_now() + 5 * nc_time_scale();
            while (rc < 0 && nc_now() < end) {
                usleep(1000);
                rc = nc_route_lend(s.r, 5, &ep, &c, &l, &err);
            }
        }
        /* (with threads, whichever of the two was probed first) */
        CHECK(rc == 0 && (ep == 2 || (running && ep == 3)), "running %d: rc %d, lent from %d (%s)", running, rc, ep,
              err.message);
        if (rc == 0)
            nc_pool_release(nc_route_pool(s.r, ep), c, 0);
        finish(&s);
        drop_pool(px);
        drop_pool(py);
    }
}

/* ---- a borrow racing a removal ----------------------------------------------- */

typedef struct racer {
    setup *s;
    int target;
    int rc, ep, code;
    nc_conn *c;
    char message[NC_ERRMSG_MAX];
} racer;

static void *lend_racer(void *arg)
{
    racer *b = arg;
    uint64_t l;
    nc_error err;
    nc_error_clear(&err);
    b->rc = nc_route_lend_to(b->s->r, b->target, 5 * nc_time_scale(), &b->ep, &b->c, &l, &err);
    b->code = err.code;
    memcpy(b->message, err.message, sizeof b->message);
    return NULL;
}

static int open_count(const endpoint *ep)
{
    return LD(ep->connects) - LD(ep->closes);
}

/* Endpoint `victim` is removed while a borrow that already chose it is
 * opening a connection there (its connect held): the borrow must not hand
 * that connection out, and nothing may stay open in the removed pool (the
 * drain at the removal found the slot still opening, so before the check
 * the connection was lent and then parked idle there for good).  Reads
 * (0: "standby", which then has no standby left; 1: "prefer-standby",
 * which goes to the primary) and a primary borrow (2: the current endpoint
 * removed, no monitor thread to switch yet). */
static void test_no_lend_from_an_endpoint_removed_during_the_borrow(void)
{
    for (int k = 0; k < 3; k++) {
        setup s;
        make(&s, 2, NC_FO_AUTOMATIC);
        ST(s.eps[0].role, NC_ROLE_WRITABLE);
        ST(s.eps[0].lsn, 5000);
        ST(s.eps[1].role, k < 2 ? NC_ROLE_READ_ONLY : NC_ROLE_WRITABLE);
        ST(s.eps[1].lsn, 5000);
        /* both probed: roles and positions known, 0 current */
        nc_monitor *m = nc_route_enter(s.r);
        CHECK(nc_monitor_recheck(m, nc_now() + 5) == 1, "recheck");
        nc_route_leave(s.r);
        nc_route_ep_status st[NC_MONITOR_ENDPOINTS_MAX];
        nc_route_read_status(s.r, st);
        CHECK(k == 2 || st[1].eligible, "case %d: endpoint 1 serves reads", k);
        int victim = k < 2 ? 1 : 0;
        endpoint *v = &s.eps[victim];
        ST(v->hold, 1);
        racer b;
        memset(&b, 0, sizeof b);
        b.s = &s;
        b.target = k == 0 ? NC_TARGET_STANDBY : k == 1 ? NC_TARGET_PREFER_STANDBY : NC_TARGET_PRIMARY;
        pthread_t t;
        pthread_create(&t, NULL, lend_racer, &b);
        double end = nc_now() + 5 * nc_time_scale();
        while (LD(v->held) < 1 && nc_now() < end)
            usleep(1000);
        CHECK(LD(v->held) == 1, "case %d: the borrow connects to endpoint %d", k, victim);
        CHECK(nc_route_set_removed(s.r, victim, 1) == 0, "removed");
        ST(v->hold, 0);
        pthread_join(t, NULL);
        if (k == 0)
            CHECK(b.rc == -1 && b.code == NC_E_FO_NO_STANDBY, "standby: rc %d ep %d code %d (%s)", b.rc, b.ep,
                  b.code, b.message);
        else
            CHECK(b.rc == 0 && b.ep == 1 - victim, "case %d: rc %d ep %d code %d (%s)", k, b.rc, b.ep, b.code,
                  b.message);
        if (b.rc == 0)
            nc_pool_release(s.pools[b.ep], b.c, 0);
        CHECK(open_count(v) == 0, "case %d: %d connection(s) left open in the removed endpoint's pool", k,
              open_count(v));
        finish(&s);
    }
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"lend_current", test_lend_current},
        {"connect_failure_switches", test_connect_failure_switches_in_one_call},
        {"lend_keeps_the_callers_deadline", test_lend_keeps_the_callers_deadline},
        {"statement_failure", test_statement_failure_reaches_the_monitor},
        {"closed", test_closed},
        {"close_during_report", test_close_during_report},
        {"late_start_and_shared_pools", test_close_refuses_a_late_start_and_pools_are_not_shared},
        {"read_targets_without_standbys", test_read_targets_without_standbys},
        {"failover_wait", test_failover_wait},
        {"add_remove_readd", test_add_remove_readd},
        {"capacity", test_capacity},
        {"add_a_pool_in_use", test_add_a_pool_in_use},
        {"removed_during_its_probe", test_removed_during_its_probe},
        {"concurrent_lend_during_add_remove", test_concurrent_lend_during_add_remove},
        {"no_lend_from_an_endpoint_removed_during_the_borrow", test_no_lend_from_an_endpoint_removed_during_the_borrow},
        {"add_is_all_or_nothing_out_of_memory", test_add_is_all_or_nothing_out_of_memory},
        {"removed_pool_is_not_refilled", test_removed_pool_is_not_refilled},
    };
    return nc_run_cases("test_route", cases, NC_NCASES(cases));
}
