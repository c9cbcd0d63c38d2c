/* test_monitor.c - unit tests for the health monitor and failover executor
 * (csrc/core/nc_monitor.c, with the real decision logic of nc_failover.c)
 * driven by a fake probe callback whose answers the tests control.
 *
 * Plain C with check.h: each test function is one test, each CHECK one check;
 * a failed check prints one line, every test function reports its counts, and
 * the exit status is non-zero when anything failed.
 * Checks run on the main thread; callbacks record what
 * they saw and the main thread checks it.
 *
 * The fake (struct fake) has one struct fep per endpoint: answer or fail,
 * the latency and role to report, a delay (honouring the deadline), "hang
 * until the deadline", and "ignore the deadline" (sleep regardless: a
 * misbehaving backend).  It counts calls and calls in flight, and notes when
 * two probes of one endpoint ran at once.  Every probe also calls
 * nc_monitor_current(), which would deadlock if the monitor held its mutex
 * across the callback.  on_switch records its calls and the generation it
 * sees.  Shared fields are read and written with __atomic builtins.
 *
 * Intervals are tens of milliseconds so the program runs in a few seconds,
 * also under ThreadSanitizer.
 */
#include "nc_monitor.h"
#include "nc_time.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"


/* Scheduling slack allowed on top of a bound: the machine is shared and the
 * sanitizers slow things down (check.h). */
#define SLACK (0.15 * nc_time_scale())

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- the fake probe ------------------------------------------------------- */

#define MAXEP 4

typedef struct fep {
    int fail;           /* 1: answer -1 */
    int latency_us;     /* reported latency */
    int role;           /* reported role */
    int delay_ms;       /* take this long (up to the deadline) */
    int hang;           /* wait for the deadline, then fail */
    int ignore_ms;      /* sleep this long whatever the deadline (misbehaving) */
    int gate;           /* 1: wait (up to the deadline) until the test sets it to 0 */
    int calls;
    int in_flight;
    int overlaps;       /* two probes of this endpoint at once */
    pthread_t probers[16];  /* the distinct threads (not the test's) that probed it, under probers_mu */
    int nprobers;
} fep;

static pthread_mutex_t probers_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct fake {
    fep ep[MAXEP];
    nc_monitor *m;      /* set after nc_monitor_new (then probes call nc_monitor_current) */
    int switches;
    int sw_from, sw_to;
    uint64_t sw_gen;    /* generation seen inside on_switch */
    int sw_cur;         /* current seen inside on_switch */
    double sw_time;     /* monotonic time of the last on_switch */
    pthread_t sw_thread;
    int sw_stop;        /* on_switch calls nc_monitor_stop */
    int in_callbacks;
    pthread_t main_thread;
    int probes_on_main; /* probes run in the test's own thread (a caller acting itself) */
} fake;

static void fake_init(fake *f, int role)
{
    memset(f, 0, sizeof *f);
    f->main_thread = pthread_self();
    for (int i = 0; i < MAXEP; i++) {
        f->ep[i].role = role;
        f->ep[i].latency_us = 1000;
    }
}

static int fake_probe(void *arg, int i, double deadline, double *latency, int *role, char *errbuf, size_t errlen)
{
    fake *f = arg;
    fep *e = &f->ep[i];
    INC(f->in_callbacks);
    INC(e->calls);
    if (pthread_equal(pthread_self(), f->main_thread)) {
        INC(f->probes_on_main);
    } else {
        pthread_mutex_lock(&probers_mu);
        int seen = 0;
        for (int k = 0; k < e->nprobers && !seen; k++)
            seen = pthread_equal(e->probers[k], pthread_self());
        if (!seen && e->nprobers < 16)
            e->probers[e->nprobers++] = pthread_self();
        pthread_mutex_unlock(&probers_mu);
    }
    if (INC(e->in_flight) > 1)
        INC(e->overlaps);
    nc_monitor *m = LD(f->m);
    if (m) {
        uint64_t g;
        (void)nc_monitor_current(m, &g);   /* deadlocks if the monitor mutex is held */
    }
    while (LD(e->gate) && nc_now() < deadline)
        sleep_s(0.001);
    int rc = 0;
    int ign = LD(e->ignore_ms);
    if (ign > 0) {
        sleep_s(ign / 1000.0);
    } else if (LD(e->hang)) {
        sleep_s(deadline - nc_now());
        rc = -1;
        snprintf(errbuf, errlen, "probe timed out");
    } else {
        int d = LD(e->delay_ms);
        if (d > 0) {
            double until = nc_now() + d / 1000.0;
            if (until > deadline) {
                sleep_s(deadline - nc_now());
                rc = -1;
                snprintf(errbuf, errlen, "probe timed out");
            } else {
                sleep_s(until - nc_now());
            }
        }
    }
    if (rc == 0 && LD(e->fail)) {
        rc = -1;
        snprintf(errbuf, errlen, "connection refused (fake %d)", i);
    }
    if (rc == 0) {
        *latency = LD(e->latency_us) / 1e6;
        *role = LD(e->role);
    }
    DEC(e->in_flight);
    DEC(f->in_callbacks);
    return rc;
}

static void fake_switch(void *arg, int from, int to)
{
    fake *f = arg;
    INC(f->in_callbacks);
    nc_monitor *m = LD(f->m);
    if (m) {
        uint64_t g;
        ST(f->sw_cur, nc_monitor_current(m, &g));
        ST(f->sw_gen, g);
    }
    ST(f->sw_from, from);
    ST(f->sw_to, to);
    double now = nc_now();
    __atomic_store(&f->sw_time, &now, __ATOMIC_SEQ_CST);
    f->sw_thread = pthread_self();   /* read by the main thread only after it saw switches change */
    INC(f->switches);
    if (m && LD(f->sw_stop))
        nc_monitor_stop(m);
    DEC(f->in_callbacks);
}

/* Wait until every callback returned (a detached straggler may still run). */
static void fake_quiesce(fake *f, double max)
{
    double end = nc_now() + max;
    while (LD(f->in_callbacks) > 0 && nc_now() < end)
        sleep_s(0.005);
}

static nc_monitor_config fast_config(void)
{
    nc_monitor_config c;
    nc_fo_config_defaults(&c.fo);
    c.fo.mode = NC_FO_AUTOMATIC;
    c.fo.policy = NC_FO_COMBINED;
    c.fo.max_failure_count = 3;
    c.fo.failure_timeout = 10;
    c.fo.response_time_threshold = 0.05;
    c.fo.slow_probe_count = 2;
    c.fo.recovery_check_interval = 0.2;
    c.fo.max_recovery_attempts = 3;
    c.fo.auto_recovery = 1;
    c.fo.require_writable = 1;
    c.fo.hold_down = 0.1;
    c.health_check_interval = 0.02;
    c.health_check_timeout = 0.1;
    c.failover_timeout = 0.3;
    return c;
}

static nc_monitor *make(fake *f, const nc_monitor_config *c, int n)
{
    int prio[MAXEP] = {1, 2, 3, 4};
    nc_error err;
    nc_error_clear(&err);
    nc_monitor *m = nc_monitor_new(c, n, prio, -1, fake_probe, f, fake_switch, f, &err);
    if (!m) {
        printf("FATAL: nc_monitor_new: %s\n", err.message);
        exit(2);
    }
    ST(f->m, m);
    return m;
}

static void done(fake *f, nc_monitor *m)
{
    nc_monitor_stop(m);
    ST(f->m, NULL);
    nc_monitor_free(m);
    fake_quiesce(f, 3.0);
}

/* Wait up to max seconds for all n endpoints to have been probed. */
static int wait_probed(nc_monitor *m, int n, double max)
{
    nc_fo_health h[MAXEP];
    nc_monitor_status st;
    double end = nc_now() + max;
    for (;;) {
        nc_monitor_get_status(m, &st, h);
        int all = 1;
        for (int i = 0; i < n; i++)
            if (!h[i].probed)
                all = 0;
        if (all)
            return 1;
        if (nc_now() >= end)
            return 0;
        sleep_s(0.002);
    }
}

static int wait_current(nc_monitor *m, int want, double max)
{
    double end = nc_now() + max;
    while (nc_monitor_current(m, NULL) != want) {
        if (nc_now() >= end)
            return 0;
        sleep_s(0.001);
    }
    return 1;
}

static int wait_int(int *p, int want, double max)
{
    double end = nc_now() + max;
    while (LD(*p) < want) {
        if (nc_now() >= end)
            return 0;
        sleep_s(0.001);
    }
    return 1;
}

/* All events so far (id > 0) into out. */
static int all_events(nc_monitor *m, nc_event *out, int cap)
{
    return nc_monitor_wait_events(m, 0, out, cap, 0);
}

static int count_kind(const nc_event *ev, int k, int kind)
{
    int c = 0;
    for (int i = 0; i < k; i++)
        if (ev[i].kind == kind)
            c++;
    return c;
}

/* Wait for an event of kind (after id after) and copy it. */
static int wait_kind(nc_monitor *m, uint64_t after, int kind, double max, nc_event *out)
{
    double end = nc_now() + max;
    nc_event buf[64];
    for (;;) {
        double left = end - nc_now();
        if (left <= 0)
            return 0;
        int k = nc_monitor_wait_events(m, after, buf, 64, left);
        for (int i = 0; i < k; i++) {
            if (buf[i].kind == kind) {
                *out = buf[i];
                return 1;
            }
            after = buf[i].id;
        }
    }
}

/* ---- tests ------------------------------------------------------------------ */

static void test_config(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    nc_monitor_config c = fast_config();
    int prio[2] = {1, 2};
    nc_error err;
    nc_error_clear(&err);
    CHECK(!nc_monitor_new(&c, 0, prio, -1, fake_probe, &f, NULL, NULL, &err) && err.code == NC_E_CONFIG,
          "n=0 code %d", err.code);
    CHECK(!nc_monitor_new(&c, 2, prio, -1, NULL, &f, NULL, NULL, &err) && err.code == NC_E_CONFIG, "no probe");
    nc_monitor_config bad = c;
    bad.health_check_interval = 0;
    CHECK(!nc_monitor_new(&bad, 2, prio, -1, fake_probe, &f, NULL, NULL, &err) && err.code == NC_E_CONFIG,
          "interval 0");
    bad = c;
    bad.fo.max_failure_count = 0;
    CHECK(!nc_monitor_new(&bad, 2, prio, -1, fake_probe, &f, NULL, NULL, &err) && err.code == NC_E_CONFIG,
          "bad fo config");
    nc_monitor *m = nc_monitor_new(&c, 2, prio, 1, fake_probe, &f, NULL, NULL, &err);
    CHECK(m != NULL, "%s", err.message);
    if (!m)
        return;
    uint64_t g = 99;
    CHECK(nc_monitor_current(m, &g) == 1 && g == 0, "primary=1 -> current 1, gen %llu", (unsigned long long)g);
    CHECK(!nc_monitor_running(m), "not running before start");
    nc_event ev[2];
    double t = nc_now();
    CHECK(nc_monitor_wait_events(m, 0, ev, 2, 0.1) == 0, "no events");
    double el = nc_now() - t;
    CHECK(el >= 0.095 && el < 0.1 + SLACK, "wait_events timeout took %.3f s", el);
    nc_monitor_stop(m);   /* never started: nothing to do */
    nc_monitor_free(m);
    nc_monitor_free(NULL);
}

static void test_probing(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    nc_monitor_config c = fast_config();
    nc_monitor *m = make(&f, &c, 3);
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(nc_monitor_start(m, &err) == 0, "second start: %s", err.message);
    CHECK(nc_monitor_running(m), "running");
    CHECK(wait_probed(m, 3, 1.0), "all probed");
    /* Keeps probing, and not faster than health_check_interval (0.02 s). */
    int c0[3];
    double t0 = nc_now();
    for (int i = 0; i < 3; i++)
        c0[i] = LD(f.ep[i].calls);
    for (int i = 0; i < 3; i++)
        CHECK(wait_int(&f.ep[i].calls, c0[i] + 3, 1.0 + SLACK), "endpoint %d: not probed again", i);
    sleep_s(0.1);
    double span = nc_now() - t0;
    for (int i = 0; i < 3; i++) {
        int calls = LD(f.ep[i].calls) - c0[i];
        CHECK(calls <= span / c.health_check_interval + 2, "endpoint %d probed %d times in %.3f s at 0.02 s", i,
              calls, span);
    }
    nc_monitor_status st;
    nc_fo_health h[3];
    nc_monitor_get_status(m, &st, h);
    CHECK(st.state == NC_FO_PRIMARY && st.current == 0 && st.preferred == 0 && st.n == 3 && st.running,
          "state %d current %d", st.state, st.current);
    CHECK(h[1].available && h[1].role == NC_ROLE_WRITABLE && h[1].response_time > 0.0009 &&
              h[1].response_time < 0.0011,
          "health of 1: avail %d role %d rt %g", h[1].available, h[1].role, h[1].response_time);
    /* All three writable and all fine: no split-brain event while nothing needs a switch. */
    nc_event ev[8];
    CHECK(all_events(m, ev, 8) == 0, "no events while healthy");
    CHECK(nc_monitor_generation(m) == 0, "generation 0");
    nc_monitor_stop(m);
    CHECK(!nc_monitor_running(m), "stopped");
    int calls = LD(f.ep[0].calls);
    sleep_s(0.1);
    CHECK(LD(f.ep[0].calls) == calls, "no probes after stop (%d -> %d)", calls, LD(f.ep[0].calls));
    /* Start again after a stop. */
    CHECK(nc_monitor_start(m, &err) == 0, "restart: %s", err.message);
    CHECK(wait_int(&f.ep[0].calls, calls + 2, 1.0), "probing again after restart");
    int over = 0;
    for (int i = 0; i < 3; i++)
        over += LD(f.ep[i].overlaps);
    CHECK(over == 0, "%d overlapping probes of one endpoint by the probe threads", over);
    done(&f, m);
}

/* An endpoint that leaves and comes back, again and again, while running:
 * no probes while it is away, probed again when back, and by the one
 * thread it had (a thread per return would pile up unjoined until stop,
 * its stack with it, until thread creation fails and a returning endpoint
 * goes unprobed). */
static void test_leave_and_return_keep_one_thread(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    nc_monitor_config c = fast_config();
    nc_monitor *m = make(&f, &c, 2);
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_probed(m, 2, 1.0), "all probed");
    for (int k = 0; k < 6; k++) {
        nc_monitor_set_removed(m, 1, 1);
        double end = nc_now() + 1.0 + SLACK;
        while (LD(f.ep[1].in_flight) > 0 && nc_now() < end)
            sleep_s(0.001);   /* a probe in flight ends (stale: not recorded) */
        int calls = LD(f.ep[1].calls);
        sleep_s(5 * c.health_check_interval);
        CHECK(LD(f.ep[1].calls) == calls, "cycle %d: probed while removed (%d -> %d)", k, calls,
              LD(f.ep[1].calls));
        nc_monitor_set_removed(m, 1, 0);
        CHECK(wait_int(&f.ep[1].calls, calls + 2, 1.0 + SLACK), "cycle %d: not probed again once back", k);
    }
    pthread_mutex_lock(&probers_mu);
    int threads = f.ep[1].nprobers;
    pthread_mutex_unlock(&probers_mu);
    CHECK(threads == 1, "endpoint 1 was probed by %d threads over 6 returns", threads);
    done(&f, m);
}

typedef struct trigger {
    nc_monitor *m;
    int target;
    int r;
    char msg[NC_ERRMSG_MAX];
} trigger;

static void *trigger_main(void *arg)
{
    trigger *t = arg;
    nc_error err;
    nc_error_clear(&err);
    t->r = nc_monitor_trigger_failover(t->m, t->target, "operator", &err);
    snprintf(t->msg, sizeof t->msg, "%s", err.message);
    return NULL;
}

/* The target of a switch leaves the topology while it is being verified
 * (the monitor's lock is released then): no switch to it, the current
 * endpoint stays and is not drained (no on_switch). */
static void test_target_removed_while_verified(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    nc_monitor_config c = fast_config();
    c.fo.mode = NC_FO_MANUAL;
    c.failover_timeout = 10;   /* the verification waits for the gate, not for its deadline */
    nc_monitor *m = make(&f, &c, 2);
    nc_error err;
    CHECK(nc_monitor_trigger_failover(m, 0, "probe", &err) == 0, "already on 0 (both probed): %s", err.message);
    ST(f.ep[1].gate, 1);
    int calls = LD(f.ep[1].calls);
    trigger t = {m, 1, -9, ""};
    pthread_t th;
    pthread_create(&th, NULL, trigger_main, &t);
    CHECK(wait_int(&f.ep[1].calls, calls + 1, 1.0 + SLACK), "the verification of 1 began");
    nc_monitor_set_removed(m, 1, 1);
    ST(f.ep[1].gate, 0);   /* it answers: writable */
    pthread_join(th, NULL);
    CHECK(t.r == 0 && strstr(t.msg, "left the topology"), "switched to a removed endpoint: %d %s", t.r, t.msg);
    CHECK(nc_monitor_current(m, NULL) == 0, "current %d", nc_monitor_current(m, NULL));
    CHECK(LD(f.switches) == 0, "on_switch called %d times", LD(f.switches));
    done(&f, m);
}

static void test_auto_failover(void)
{
    fake f;
    /* Roles unknown (a backend that cannot tell): never a split brain. */
    fake_init(&f, NC_ROLE_UNKNOWN);
    nc_monitor_config c = fast_config();
    nc_monitor *m = make(&f, &c, 3);
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_probed(m, 3, 1.0), "probed");
    ST(f.ep[0].fail, 1);   /* the primary dies */
    double t_fail = nc_now();
    double w0 = nc_wall();
    nc_event e;
    int got = wait_kind(m, 0, NC_EV_FAILOVER, 2.0, &e);
    CHECK(got, "failover event");
    if (got) {
        CHECK(e.id == 1 && e.from == 0 && e.to == 1 && e.success == 1 && e.manual == 0,
              "id %llu from %d to %d success %d manual %d", (unsigned long long)e.id, e.from, e.to, e.success,
              e.manual);
        CHECK(e.fired == NC_FO_HEALTH_CHECK, "fired %d", e.fired);
        CHECK(e.duration > 0 && e.duration < 0.1 + SLACK, "duration %g", e.duration);
        CHECK(e.detected_at >= t_fail && e.detected_at <= nc_now(), "detected_at %.3f vs fail %.3f",
              e.detected_at, t_fail);
        CHECK(e.timestamp >= w0 - 0.01 && e.timestamp <= nc_wall(), "timestamp %.3f vs %.3f", e.timestamp, w0);
        CHECK(strstr(e.reason, "endpoint 0") && strstr(e.reason, "endpoint 1") && strstr(e.reason, "fake 0"),
              "reason: %s", e.reason);
        CHECK(nc_now() - t_fail < 0.5 + SLACK, "switched %.3f s after the failure", nc_now() - t_fail);
    }
    CHECK(wait_int(&f.switches, 1, 1.0), "on_switch called");
    CHECK(LD(f.sw_from) == 0 && LD(f.sw_to) == 1, "on_switch(%d, %d)", LD(f.sw_from), LD(f.sw_to));
    CHECK(LD(f.sw_cur) == 1 && LD(f.sw_gen) == 1, "inside on_switch: current %d gen %llu", LD(f.sw_cur),
          (unsigned long long)LD(f.sw_gen));
    uint64_t g;
    CHECK(nc_monitor_current(m, &g) == 1 && g == 1, "current 1 gen %llu", (unsigned long long)g);
    sleep_s(0.3);   /* several hold-downs: nothing else happens while 0 stays down */
    CHECK(LD(f.switches) == 1, "on_switch called %d times", LD(f.switches));
    nc_event ev[16];
    int k = all_events(m, ev, 16);
    CHECK(k == 1, "%d events", k);
    nc_monitor_status st;
    nc_monitor_get_status(m, &st, NULL);
    CHECK(st.state == NC_FO_SECONDARY && st.stats.successful_failovers == 1 && st.stats.total_failovers == 1,
          "state %d stats %d/%d", st.state, st.stats.successful_failovers, st.stats.total_failovers);
    CHECK(st.stats.failover_time_total > 0, "failover_time_total %g", st.stats.failover_time_total);

    /* 0 comes back: failback once it has been healthy for recovery_check_interval. */
    ST(f.ep[0].fail, 0);
    double t_back = nc_now();
    got = wait_kind(m, 1, NC_EV_FAILBACK, 2.0, &e);
    CHECK(got, "failback event");
    if (got) {
        double after = nc_now() - t_back;
        CHECK(e.from == 1 && e.to == 0 && e.success && !e.manual && e.fired == 0 && e.detected_at == 0,
              "from %d to %d ok %d fired %d", e.from, e.to, e.success, e.fired);
        CHECK(after >= c.fo.recovery_check_interval - 0.01, "failback after %.3f s (< recovery_check_interval)",
              after);
    }
    CHECK(wait_current(m, 0, 1.0), "back on 0");
    CHECK(wait_int(&f.switches, 2, 1.0) && LD(f.sw_from) == 1 && LD(f.sw_to) == 0, "on_switch(1, 0)");
    CHECK(nc_monitor_generation(m) == 2, "generation %llu", (unsigned long long)nc_monitor_generation(m));
    k = all_events(m, ev, 16);
    CHECK(k == 2, "%d events", k);
    done(&f, m);
}

static void test_primary_down_at_start(void)
{
    /* 0 is down when monitoring starts and answers at once; 1 takes a
     * moment for its first probe: no NO_TARGET in between, just a failover. */
    fake f;
    fake_init(&f, NC_ROLE_UNKNOWN);
    ST(f.ep[0].fail, 1);
    ST(f.ep[1].delay_ms, 40);
    nc_monitor_config c = fast_config();
    nc_monitor *m = make(&f, &c, 2);
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    nc_event ev[4];
    int k = nc_monitor_wait_events(m, 0, ev, 4, 2.0);
    CHECK(k >= 1 && ev[0].kind == NC_EV_FAILOVER && ev[0].success && ev[0].to == 1, "k %d first kind %d: %s", k,
          k ? ev[0].kind : -1, k ? ev[0].reason : "");
    CHECK(wait_current(m, 1, 1.0), "on 1");
    done(&f, m);
}

static void test_response_time(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    nc_monitor_config c = fast_config();
    ST(f.ep[1].role, NC_ROLE_READ_ONLY);
    c.fo.require_writable = 0;   /* a read-only replica may take over */
    nc_monitor *m = make(&f, &c, 2);
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_probed(m, 2, 1.0), "probed");
    ST(f.ep[0].latency_us, 200000);   /* 0.2 s > 0.05 s threshold */
    nc_event e;
    int got = wait_kind(m, 0, NC_EV_FAILOVER, 2.0, &e);
    CHECK(got && e.fired == NC_FO_RESPONSE_TIME && e.from == 0 && e.to == 1 && e.success, "got %d fired %d", got,
          got ? e.fired : -1);
    CHECK(got && e.detected_at > 0, "detected_at %g", got ? e.detected_at : -1);
    done(&f, m);
}

static void test_passive_before_start(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    ST(f.ep[2].role, NC_ROLE_READ_ONLY);
    nc_monitor_config c = fast_config();
    nc_monitor *m = make(&f, &c, 3);
    /* Never started: nothing probed.  Endpoint 0 is down and the query path
     * sees it fail: the report makes the caller probe 0, which confirms it. */
    ST(f.ep[0].fail, 1);
    double t = nc_now();
    nc_monitor_passive(m, 0, NC_FO_PASSIVE_LOST, "server closed the connection unexpectedly", NC_NO_DEADLINE);
    double el = nc_now() - t;
    uint64_t g;
    CHECK(nc_monitor_current(m, &g) == 1 && g == 1, "current %d gen %llu", nc_monitor_current(m, NULL),
          (unsigned long long)g);
    CHECK(el < c.failover_timeout + SLACK, "took %.3f s", el);
    CHECK(LD(f.switches) == 1 && LD(f.sw_from) == 0 && LD(f.sw_to) == 1, "on_switch %d (%d,%d)", LD(f.switches),
          LD(f.sw_from), LD(f.sw_to));
    CHECK(LD(f.switches) == 1 && pthread_equal(f.sw_thread, pthread_self()), "on_switch in the calling thread");
    CHECK(LD(f.ep[0].calls) == 1, "the reported endpoint is probed once to confirm (%d)", LD(f.ep[0].calls));
    nc_event ev[8];
    int k = all_events(m, ev, 8);
    CHECK(k == 1 && ev[0].kind == NC_EV_FAILOVER && ev[0].success && ev[0].from == 0 && ev[0].to == 1 &&
              ev[0].detected_at > 0 && ev[0].detected_at <= t + el,
          "k %d kind %d", k, k ? ev[0].kind : -1);
    CHECK(k >= 1 && strstr(ev[0].reason, "connection refused"), "reason: %s", k ? ev[0].reason : "");
    /* A passive report on a non-current endpoint changes nothing. */
    nc_monitor_passive(m, 2, NC_FO_PASSIVE_LOST, "gone", NC_NO_DEADLINE);
    CHECK(nc_monitor_current(m, NULL) == 1 && LD(f.switches) == 1, "still on 1");
    /* Out-of-range index: ignored. */
    nc_monitor_passive(m, 7, NC_FO_PASSIVE_LOST, "x", NC_NO_DEADLINE);
    nc_monitor_passive(m, -1, NC_FO_PASSIVE_LOST, "x", NC_NO_DEADLINE);
    /* Nothing usable left: 1 fails too (hold-down does not protect an
     * unusable endpoint forever: NO_TARGET once hold-down is over). */
    ST(f.ep[1].fail, 1);
    sleep_s(c.fo.hold_down + 0.02);
    nc_monitor_passive(m, 1, NC_FO_PASSIVE_LOST, "gone too", NC_NO_DEADLINE);
    CHECK(nc_monitor_current(m, NULL) == -1, "no endpoint: current %d", nc_monitor_current(m, NULL));
    k = all_events(m, ev, 8);
    CHECK(count_kind(ev, k, NC_EV_NO_TARGET) == 1, "%d NO_TARGET events", count_kind(ev, k, NC_EV_NO_TARGET));
    nc_monitor_passive(m, 1, NC_FO_PASSIVE_LOST, "gone again", NC_NO_DEADLINE);
    k = all_events(m, ev, 8);
    CHECK(count_kind(ev, k, NC_EV_NO_TARGET) == 1, "still one NO_TARGET: %d", count_kind(ev, k, NC_EV_NO_TARGET));
    done(&f, m);
}

static void test_passive_fast(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    ST(f.ep[0].role, NC_ROLE_WRITABLE);
    ST(f.ep[1].role, NC_ROLE_READ_ONLY);
    nc_monitor_config c = fast_config();
    /* Probes are 10 s apart: a switch within a second can only come from the
     * passive report waking the decision thread. */
    c.health_check_interval = 10.0;
    c.health_check_timeout = 0.5;
    c.fo.require_writable = 0;
    nc_monitor *m = make(&f, &c, 2);
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_probed(m, 2, 1.0 + SLACK), "probed");
    sleep_s(0.05);   /* the decision thread has looked at the first reports */
    ST(f.ep[0].fail, 1);   /* the server went away: the probe the report causes confirms it */
    double t = nc_now();
    nc_monitor_passive(m, 0, NC_FO_PASSIVE_LOST, "terminating connection due to administrator command", NC_NO_DEADLINE);
    double back = nc_now() - t;
    /* While monitoring runs the caller only reports: no probe, no switch in its thread. */
    CHECK(LD(f.probes_on_main) == 0, "the reporting thread probed %d times itself", LD(f.probes_on_main));
    CHECK(back < SLACK, "passive returned after %.4f s (it must not act in the caller while running)", back);
    CHECK(wait_current(m, 1, 5.0), "switched");
    double el = nc_now() - t;
    CHECK(el < 0.05 + SLACK, "switch %.4f s after the passive report", el);
    int sw = wait_int(&f.switches, 1, 1.0);
    double sw_time;
    __atomic_load(&f.sw_time, &sw_time, __ATOMIC_SEQ_CST);
    CHECK(sw && sw_time - t < 0.05 + SLACK, "on_switch %.4f s after", sw_time - t);
    CHECK(LD(f.probes_on_main) == 0, "the reporting thread probed %d times itself", LD(f.probes_on_main));
    CHECK(!pthread_equal(f.sw_thread, pthread_self()), "on_switch on the decision thread");
    done(&f, m);
}

/* Without monitor threads a borrow's report is probed and decided in the
 * borrower's thread: within the borrower's deadline, however long the
 * monitor's own bounds are, and a probe that deadline cuts short is no
 * evidence (nothing recorded, no switch, no event). */
static void test_passive_caller_deadline(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    nc_monitor_config c = fast_config();
    c.health_check_timeout = 2.0;
    c.failover_timeout = 4.0;
    nc_monitor *m = make(&f, &c, 3);
    nc_fo_health h[MAXEP];
    nc_monitor_status st;

    /* 0 refuses at once, 1 and 2 hang until the deadline. */
    ST(f.ep[0].fail, 1);
    ST(f.ep[1].hang, 1);
    ST(f.ep[2].hang, 1);
    double t = nc_now();
    nc_monitor_passive(m, 0, NC_FO_PASSIVE_LOST, "refused", t + 0.1);
    double el = nc_now() - t;
    CHECK(el < 0.1 + SLACK, "passive took %.3f s past a 0.1 s deadline", el);
    nc_monitor_get_status(m, &st, h);
    CHECK(h[0].probed && !h[0].available, "the refusal is evidence");
    CHECK(!h[1].probed && !h[2].probed, "probes cut short are not: %d %d", h[1].probed, h[2].probed);
    CHECK(nc_monitor_generation(m) == 0 && LD(f.switches) == 0, "no switch");

    /* Recheck too. */
    t = nc_now();
    nc_monitor_recheck(m, t + 0.1);
    el = nc_now() - t;
    CHECK(el < 0.1 + SLACK, "recheck took %.3f s past a 0.1 s deadline", el);
    nc_monitor_get_status(m, &st, h);
    CHECK(!h[1].probed && !h[2].probed, "still unknown: %d %d", h[1].probed, h[2].probed);

    /* 1 answers (known healthy), then hangs: the switch's verification is
     * cut short by the caller, which leaves the state as it was. */
    ST(f.ep[1].hang, 0);
    ST(f.ep[2].hang, 0);
    ST(f.ep[2].fail, 1);
    nc_monitor_recheck(m, nc_now() + 1.0);
    CHECK(wait_current(m, 1, 0.01), "with time to verify it switches to 1 (current %d)", nc_monitor_current(m, NULL));
    nc_event ev[16];
    int before = all_events(m, ev, 16);
    ST(f.ep[0].fail, 0);
    sleep_s(c.fo.hold_down + 0.02);
    nc_monitor_recheck(m, nc_now() + 1.0);   /* 0 is back and healthy (failback needs recovery_check_interval) */
    ST(f.ep[0].hang, 1);
    ST(f.ep[1].fail, 1);
    sleep_s(c.fo.recovery_check_interval + 0.05);
    t = nc_now();
    nc_monitor_passive(m, 1, NC_FO_PASSIVE_LOST, "gone", t + 0.1);
    el = nc_now() - t;
    CHECK(el < 0.1 + SLACK, "passive with a switch to verify took %.3f s", el);
    CHECK(nc_monitor_current(m, NULL) == 1 || nc_monitor_current(m, NULL) == -1, "not switched to 0 unverified");
    nc_monitor_get_status(m, &st, h);
    CHECK(st.state != NC_FO_FAILING_OVER && st.state != NC_FO_FAILING_BACK, "not left mid-switch (state %d)",
          st.state);
    CHECK(h[0].available, "0 is not marked failed by a cut-short verification");
    int k = all_events(m, ev, 16);
    CHECK(count_kind(ev, k, NC_EV_FAILOVER) + count_kind(ev, k, NC_EV_FAILBACK) ==
              count_kind(ev, before, NC_EV_FAILOVER) + count_kind(ev, before, NC_EV_FAILBACK),
          "no switch event for an unverified switch");
    done(&f, m);
}

static void test_no_target_and_resume(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    ST(f.ep[1].role, NC_ROLE_READ_ONLY);
    nc_monitor_config c = fast_config();
    nc_monitor *m = make(&f, &c, 2);   /* require_writable: 1 (read-only) can never take over */
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_probed(m, 2, 1.0), "probed");
    ST(f.ep[0].fail, 1);
    CHECK(wait_current(m, -1, 1.0), "current -1");
    nc_event e;
    CHECK(wait_kind(m, 0, NC_EV_NO_TARGET, 1.0, &e) && e.from == 0 && e.to == -1 && !e.success &&
              e.detected_at > 0,
          "NO_TARGET event");
    sleep_s(0.3);   /* many probes and decisions later */
    nc_event ev[16];
    int k = all_events(m, ev, 16);
    CHECK(k == 1 && count_kind(ev, k, NC_EV_NO_TARGET) == 1, "%d events, %d NO_TARGET", k,
          count_kind(ev, k, NC_EV_NO_TARGET));
    nc_monitor_status st;
    nc_monitor_get_status(m, &st, NULL);
    CHECK(st.state == NC_FO_UNAVAILABLE && st.stats.failed_failovers == 1, "state %d failed %d", st.state,
          st.stats.failed_failovers);
    uint64_t g0 = nc_monitor_generation(m);
    /* 0 comes back: service resumes on it. */
    ST(f.ep[0].fail, 0);
    CHECK(wait_kind(m, ev[k - 1].id, NC_EV_RESUMED, 1.0, &e), "RESUMED event");
    CHECK(e.from == 0 && e.to == 0 && e.success, "resumed %d -> %d ok %d", e.from, e.to, e.success);
    CHECK(wait_current(m, 0, 1.0), "current 0 again");
    CHECK(nc_monitor_generation(m) == g0 + 1, "generation %llu -> %llu", (unsigned long long)g0,
          (unsigned long long)nc_monitor_generation(m));
    sleep_s(0.05);
    CHECK(LD(f.switches) == 0, "on_switch not called for a resume (%d)", LD(f.switches));
    /* A second outage is a second NO_TARGET event. */
    sleep_s(0.1);
    ST(f.ep[0].fail, 1);
    CHECK(wait_current(m, -1, 1.0), "current -1 again");
    sleep_s(0.1);
    k = all_events(m, ev, 16);
    CHECK(count_kind(ev, k, NC_EV_NO_TARGET) == 2, "%d NO_TARGET events", count_kind(ev, k, NC_EV_NO_TARGET));
    /* Now the replica is promoted: service resumes there (a failover). */
    ST(f.ep[1].role, NC_ROLE_WRITABLE);
    CHECK(wait_current(m, 1, 1.0), "current 1");
    k = all_events(m, ev, 16);
    CHECK(k >= 1 && ev[k - 1].kind == NC_EV_FAILOVER && ev[k - 1].from == 0 && ev[k - 1].to == 1 &&
              ev[k - 1].success,
          "last event kind %d %d->%d", k ? ev[k - 1].kind : -1, k ? ev[k - 1].from : -9, k ? ev[k - 1].to : -9);
    CHECK(wait_int(&f.switches, 1, 1.0) && LD(f.sw_from) == 0 && LD(f.sw_to) == 1, "on_switch(0,1)");
    done(&f, m);
}

static void test_manual(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    ST(f.ep[2].role, NC_ROLE_READ_ONLY);
    nc_monitor_config c = fast_config();
    c.fo.mode = NC_FO_MANUAL;
    nc_monitor *m = make(&f, &c, 3);
    nc_error err;
    /* Never started: the triggers probe what they need in this thread. */
    CHECK(nc_monitor_trigger_failover(m, 5, "x", &err) == -1 && err.code == NC_E_CONFIG, "bad target: %d",
          err.code);
    CHECK(nc_monitor_trigger_failover(m, -2, "x", &err) == -1 && err.code == NC_E_CONFIG, "bad target -2");
    CHECK(nc_monitor_trigger_failover(m, 0, "x", &err) == 0 && err.code == 0 && strstr(err.message, "already"),
          "to current: %s", err.message);
    CHECK(LD(f.ep[1].calls) == 1 && LD(f.ep[2].calls) == 1, "unprobed endpoints probed once (%d, %d)",
          LD(f.ep[1].calls), LD(f.ep[2].calls));
    CHECK(nc_monitor_trigger_failover(m, 2, "x", &err) == 0 && strstr(err.message, "read-only"),
          "to read-only: %s", err.message);
    int r = nc_monitor_trigger_failover(m, -1, "maintenance window", &err);
    CHECK(r == 1 && err.code == 0, "best other: %d %s", r, err.message);
    uint64_t g;
    CHECK(nc_monitor_current(m, &g) == 1 && g == 1, "current 1 gen %llu", (unsigned long long)g);
    CHECK(LD(f.switches) == 1 && LD(f.sw_from) == 0 && LD(f.sw_to) == 1, "on_switch");
    CHECK(LD(f.switches) == 1 && pthread_equal(f.sw_thread, pthread_self()), "on_switch in the calling thread");
    nc_event ev[16];
    int k = all_events(m, ev, 16);
    CHECK(k == 1 && ev[0].kind == NC_EV_FAILOVER && ev[0].manual && ev[0].success && ev[0].from == 0 &&
              ev[0].to == 1 && ev[0].detected_at == 0 && strstr(ev[0].reason, "maintenance window"),
          "k %d: %s", k, k ? ev[0].reason : "");
    /* Verification failure: 0 looks fine from its last probe but does not answer now. */
    ST(f.ep[0].fail, 1);
    r = nc_monitor_trigger_failover(m, 0, "back", &err);
    CHECK(r == 0 && err.code == 0 && strstr(err.message, "verification") && strstr(err.message, "fake 0"),
          "verify fail: %d %s", r, err.message);
    CHECK(nc_monitor_current(m, &g) == 1 && g == 1, "unchanged: gen %llu", (unsigned long long)g);
    k = all_events(m, ev, 16);
    CHECK(k == 2 && ev[1].kind == NC_EV_FAILBACK && !ev[1].success && ev[1].manual, "k %d kind %d", k,
          k > 1 ? ev[1].kind : -1);
    /* Recovery refused while 0 is down (probed again: still down). */
    int calls0 = LD(f.ep[0].calls);
    r = nc_monitor_trigger_recovery(m, &err);
    CHECK(r == 0 && err.code == 0 && strstr(err.message, "endpoint 0"), "recovery refused: %d %s", r,
          err.message);
    CHECK(LD(f.ep[0].calls) == calls0 + 1, "failed endpoint probed again");
    /* 0 is back: trigger_recovery sees it (it probes failed endpoints when not monitoring). */
    ST(f.ep[0].fail, 0);
    r = nc_monitor_trigger_recovery(m, &err);
    CHECK(r == 1, "recovery: %d %s", r, err.message);
    CHECK(nc_monitor_current(m, &g) == 0 && g == 2, "current 0 gen %llu", (unsigned long long)g);
    k = all_events(m, ev, 16);
    CHECK(k == 3 && ev[2].kind == NC_EV_FAILBACK && ev[2].success && ev[2].manual && ev[2].from == 1 &&
              ev[2].to == 0,
          "k %d", k);
    CHECK(LD(f.switches) == 2 && LD(f.sw_from) == 1 && LD(f.sw_to) == 0, "on_switch(1,0)");
    r = nc_monitor_trigger_recovery(m, &err);
    CHECK(r == 0 && strstr(err.message, "already"), "already: %s", err.message);
    /* Read-only at verification time with require_writable: refused. */
    ST(f.ep[1].role, NC_ROLE_READ_ONLY);
    r = nc_monitor_trigger_failover(m, 1, "x", &err);
    CHECK(r == 0 && strstr(err.message, "read-only"), "read-only target: %d %s", r, err.message);
    CHECK(nc_monitor_current(m, NULL) == 0, "still 0");
    nc_monitor_status st;
    nc_monitor_get_status(m, &st, NULL);
    CHECK(st.stats.successful_failovers == 1 && st.stats.successful_recoveries == 1 &&
              st.stats.failed_recoveries == 1 && st.stats.failed_failovers == 1,
          "stats %d %d %d %d", st.stats.successful_failovers, st.stats.successful_recoveries,
          st.stats.failed_recoveries, st.stats.failed_failovers);
    /* While the monitor runs, a trigger acts in the caller too. */
    ST(f.ep[1].role, NC_ROLE_WRITABLE);
    ST(f.ep[2].fail, 1);   /* not a split brain: 0 and 1 writable, but manual mode never switches itself */
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_probed(m, 3, 1.0), "probed");
    sleep_s(0.05);
    r = nc_monitor_trigger_failover(m, 1, "while running", &err);
    CHECK(r == 1 && nc_monitor_current(m, NULL) == 1, "running trigger: %d %s", r, err.message);
    done(&f, m);
}

static void test_split_brain(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);   /* all three accept writes */
    nc_monitor_config c = fast_config();
    nc_monitor *m = make(&f, &c, 3);
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_probed(m, 3, 1.0), "probed");
    ST(f.ep[0].fail, 1);
    nc_event e;
    CHECK(wait_kind(m, 0, NC_EV_SPLIT_BRAIN, 1.0, &e), "split brain event");
    CHECK(e.from == 0 && !e.success && strstr(e.reason, "split brain"), "from %d: %s", e.from, e.reason);
    sleep_s(0.3);
    nc_event ev[16];
    int k = all_events(m, ev, 16);
    CHECK(k == 1 && count_kind(ev, k, NC_EV_SPLIT_BRAIN) == 1, "%d events, %d split brain", k,
          count_kind(ev, k, NC_EV_SPLIT_BRAIN));
    CHECK(LD(f.switches) == 0 && nc_monitor_generation(m) == 0, "no switch");
    /* 2 is demoted: the hold ends and 1 takes over. */
    ST(f.ep[2].role, NC_ROLE_READ_ONLY);
    CHECK(wait_current(m, 1, 1.0), "switched to 1");
    k = all_events(m, ev, 16);
    CHECK(k == 2 && ev[1].kind == NC_EV_FAILOVER && ev[1].to == 1 && ev[1].success, "k %d", k);
    done(&f, m);
}

static void test_stop_bounds(void)
{
    /* A probe that waits for its deadline: stop() within the bound. */
    static fake f;   /* static: outlives a detached straggler */
    fake_init(&f, NC_ROLE_WRITABLE);
    nc_monitor_config c = fast_config();
    c.health_check_timeout = 0.3;
    nc_monitor *m = make(&f, &c, 2);
    ST(f.ep[1].hang, 1);
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_int(&f.ep[1].in_flight, 1, 1.0), "hanging probe started");
    double t = nc_now();
    nc_monitor_stop(m);
    double el = nc_now() - t;
    CHECK(el < c.health_check_timeout + 0.5 + SLACK, "stop took %.3f s", el);
    CHECK(!nc_monitor_running(m), "not running");
    t = nc_now();
    nc_monitor_stop(m);
    nc_monitor_stop(m);
    CHECK(nc_now() - t < SLACK, "stop again is immediate");
    done(&f, m);

    /* A probe that ignores its deadline (1.5 s): stop() still returns within
     * health_check_timeout + 0.5 s; the straggler finishes later and the
     * monitor is freed by whoever is last (ASan checks). */
    fake_init(&f, NC_ROLE_WRITABLE);
    c.health_check_timeout = 0.1;
    m = make(&f, &c, 2);
    ST(f.ep[1].ignore_ms, 1500);
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_int(&f.ep[1].in_flight, 1, 1.0), "stuck probe started");
    t = nc_now();
    nc_monitor_stop(m);
    el = nc_now() - t;
    CHECK(el < c.health_check_timeout + 0.5 + SLACK, "stop with a stuck probe took %.3f s", el);
    CHECK(LD(f.ep[1].in_flight) == 1, "the straggler is still in the probe");
    ST(f.m, NULL);
    nc_monitor_free(m);   /* the straggler holds the last reference */
    fake_quiesce(&f, 3.0);
    CHECK(LD(f.in_callbacks) == 0, "straggler finished");
    sleep_s(0.02);   /* let it unref and exit */

    /* start/stop/free right away, many times: every start works, and once
     * freed no callback is left running or starts later. */
    int started = 0, quiet = 0;
    for (int i = 0; i < 20; i++) {
        fake_init(&f, NC_ROLE_WRITABLE);
        m = make(&f, &c, 3);
        started += nc_monitor_start(m, &err) == 0 && nc_monitor_running(m);
        if (i % 2)
            nc_monitor_stop(m);
        ST(f.m, NULL);
        nc_monitor_free(m);
        fake_quiesce(&f, 1.0 + SLACK);
        int calls = LD(f.ep[0].calls) + LD(f.ep[1].calls) + LD(f.ep[2].calls);
        sleep_s(3 * c.health_check_interval);
        quiet += LD(f.in_callbacks) == 0 &&
                 LD(f.ep[0].calls) + LD(f.ep[1].calls) + LD(f.ep[2].calls) == calls;
    }
    CHECK(started == 20, "%d of 20 starts", started);
    CHECK(quiet == 20, "probes went on after free in %d of 20 rounds", 20 - quiet);
}

static void test_stop_from_switch(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    ST(f.ep[1].role, NC_ROLE_READ_ONLY);
    nc_monitor_config c = fast_config();
    nc_monitor *m = make(&f, &c, 2);
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_probed(m, 2, 1.0), "probed");
    ST(f.sw_stop, 1);
    ST(f.ep[1].role, NC_ROLE_WRITABLE);
    ST(f.ep[0].fail, 1);
    CHECK(wait_int(&f.switches, 1, 1.0), "switched");
    double end = nc_now() + 1.0;
    while (nc_monitor_running(m) && nc_now() < end)
        sleep_s(0.002);
    CHECK(!nc_monitor_running(m), "stopped from on_switch");
    done(&f, m);
}

typedef struct waiter {
    nc_monitor *m;
    uint64_t after;
    double timeout;
    int k;
    double took;
    nc_event ev[4];
} waiter;

static void *waiter_main(void *arg)
{
    waiter *w = arg;
    double t = nc_now();
    w->k = nc_monitor_wait_events(w->m, w->after, w->ev, 4, w->timeout);
    w->took = nc_now() - t;
    return NULL;
}

static void test_wait_events(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    ST(f.ep[1].role, NC_ROLE_READ_ONLY);
    nc_monitor_config c = fast_config();
    c.fo.require_writable = 0;
    nc_monitor *m = make(&f, &c, 2);
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_probed(m, 2, 1.0), "probed");
    /* An event wakes a waiter. */
    waiter w = {m, 0, 5.0, 0, 0, {{0}}};
    pthread_t t;
    pthread_create(&t, NULL, waiter_main, &w);
    sleep_s(0.05);
    ST(f.ep[0].fail, 1);
    pthread_join(t, NULL);
    CHECK(w.k == 1 && w.ev[0].kind == NC_EV_FAILOVER && w.took < 1.0, "k %d took %.3f", w.k, w.took);
    /* Timeout with nothing new. */
    double t0 = nc_now();
    int k = nc_monitor_wait_events(m, 1, w.ev, 4, 0.1);
    double el = nc_now() - t0;
    CHECK(k == 0 && el >= 0.095 && el < 0.1 + SLACK, "k %d el %.3f", k, el);
    /* Events already there: no wait; after beyond the last: none. */
    t0 = nc_now();
    CHECK(nc_monitor_wait_events(m, 0, w.ev, 4, 5.0) == 1 && nc_now() - t0 < SLACK, "immediate");
    /* stop() wakes a waiter. */
    waiter w2 = {m, 1, 5.0, 0, 0, {{0}}};
    pthread_create(&t, NULL, waiter_main, &w2);
    sleep_s(0.05);
    nc_monitor_stop(m);
    pthread_join(t, NULL);
    CHECK(w2.k == 0 && w2.took < 1.0, "woken by stop: k %d took %.3f", w2.k, w2.took);
    /* free() wakes a waiter, which then frees the monitor (ASan checks). */
    waiter w3 = {m, 1, 5.0, 0, 0, {{0}}};
    pthread_create(&t, NULL, waiter_main, &w3);
    sleep_s(0.05);
    ST(f.m, NULL);
    nc_monitor_free(m);
    pthread_join(t, NULL);
    CHECK(w3.k == 0 && w3.took < 1.0, "woken by free: k %d took %.3f", w3.k, w3.took);
    fake_quiesce(&f, 3.0);
}

static void test_ring(void)
{
    /* More events than the ring holds: the oldest are gone, ids keep counting. */
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    nc_monitor_config c = fast_config();
    c.fo.mode = NC_FO_MANUAL;
    c.fo.require_writable = 0;
    nc_monitor *m = make(&f, &c, 2);
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    CHECK(wait_probed(m, 2, 1.0), "probed");
    nc_monitor_stop(m);
    int total = NC_EVENT_RING + 10, ok = 0;
    for (int i = 0; i < total; i++)
        ok += nc_monitor_trigger_failover(m, -1, "flip", &err) == 1;
    CHECK(ok == total, "%d of %d flips", ok, total);
    static nc_event ev[NC_EVENT_RING + 20];
    int k = nc_monitor_wait_events(m, 0, ev, NC_EVENT_RING + 20, 0);
    CHECK(k == NC_EVENT_RING, "k %d", k);
    CHECK(k > 0 && ev[0].id == 11 && ev[k - 1].id == (uint64_t)total, "ids %llu..%llu",
          (unsigned long long)(k ? ev[0].id : 0), (unsigned long long)(k ? ev[k - 1].id : 0));
    k = nc_monitor_wait_events(m, (uint64_t)total - 3, ev, 2, 0);
    CHECK(k == 2 && ev[0].id == (uint64_t)total - 2 && ev[1].id == (uint64_t)total - 1, "partial copy");
    CHECK(nc_monitor_generation(m) == (uint64_t)total, "generation %llu",
          (unsigned long long)nc_monitor_generation(m));
    done(&f, m);
}

/* Many threads report passive failures before start: exactly one switch. */
typedef struct reporter {
    nc_monitor *m;
    int idx;
} reporter;

static void *reporter_main(void *arg)
{
    reporter *r = arg;
    for (int i = 0; i < 20; i++)
        nc_monitor_passive(r->m, r->idx, NC_FO_PASSIVE_LOST, "lost", NC_NO_DEADLINE);
    return NULL;
}

static void test_passive_concurrent(void)
{
    fake f;
    fake_init(&f, NC_ROLE_WRITABLE);
    ST(f.ep[2].role, NC_ROLE_READ_ONLY);
    nc_monitor_config c = fast_config();
    c.fo.hold_down = 10;
    nc_monitor *m = make(&f, &c, 3);
    ST(f.ep[0].fail, 1);
    pthread_t t[8];
    reporter r = {m, 0};
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, reporter_main, &r);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    CHECK(nc_monitor_current(m, NULL) == 1, "current %d", nc_monitor_current(m, NULL));
    CHECK(LD(f.switches) == 1, "%d switches", LD(f.switches));
    nc_event ev[16];
    int k = all_events(m, ev, 16);
    CHECK(k == 1, "%d events", k);
    /* Start while monitoring reports, then hammer current() and passive. */
    nc_error err;
    CHECK(nc_monitor_start(m, &err) == 0, "%s", err.message);
    reporter r2 = {m, 2};
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, reporter_main, &r2);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(nc_monitor_current(m, NULL) == 1, "still 1");
    done(&f, m);
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"config", test_config},
        {"probing", test_probing},
        {"leave_and_return_keep_one_thread", test_leave_and_return_keep_one_thread},
        {"target_removed_while_verified", test_target_removed_while_verified},
        {"auto_failover", test_auto_failover},
        {"primary_down_at_start", test_primary_down_at_start},
        {"response_time", test_response_time},
        {"passive_before_start", test_passive_before_start},
        {"passive_fast", test_passive_fast},
        {"passive_caller_deadline", test_passive_caller_deadline},
        {"no_target_and_resume", test_no_target_and_resume},
        {"manual", test_manual},
        {"split_brain", test_split_brain},
        {"stop_bounds", test_stop_bounds},
        {"stop_from_switch", test_stop_from_switch},
        {"wait_events", test_wait_events},
        {"ring", test_ring},
        {"passive_concurrent", test_passive_concurrent},
    };
    return nc_run_cases("test_monitor", cases, NC_NCASES(cases));
}
