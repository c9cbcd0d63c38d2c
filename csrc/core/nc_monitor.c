/* nc_monitor.c - the native health monitor and failover executor (see
 * nc_monitor.h).
 *
 * Threads: one probe thread per endpoint and one decision thread, started by
 * nc_monitor_start.  Everything shared lives under m->mu; the probe callback
 * and on_switch are never called with it held.
 *
 *   probe thread i   probe (bounded by health_check_timeout), report with
 *                    nc_fo_probe, wake the decision thread, sleep
 *                    health_check_interval on probe_cv (stop wakes it).
 *   decision thread  waits for a report (m->kick) or a tick of
 *                    min(interval, 1 s) so that time-based conditions
 *                    (hold-down, recovery_check_interval) are seen, then
 *                    nc_fo_decide and carry the decision out.
 *
 * Carrying out a switch (execute_locked) is serialised by m->busy: one at a
 * time, whoever does it (the decision thread, a passive report before the
 * threads run, a manual trigger).  nc_fo_begin, then a fresh probe of the
 * target bounded by failover_timeout without the mutex, then nc_fo_done and
 * the generation bump under the mutex, the event, and on_switch without the
 * mutex (m->busy stays set until it returns, so switches and their callbacks
 * never overlap or reorder).
 *
 * Lifetime: m->refs counts the owner, every thread started and every
 * nc_monitor_wait_events in progress; whoever drops the last reference
 * frees.  nc_monitor_stop joins the threads for at most
 * health_check_timeout + 0.5 s and detaches the rest: a thread stuck in the
 * probe callback finishes on its own, sees that its run is over (m->run
 * changed), touches nothing outside the monitor and calls no callback again.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nc_monitor.h"
#include "nc_stop.h"
#include "nc_time.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NC_MONITOR_MAX NC_MONITOR_ENDPOINTS_MAX

struct nc_monitor {
    pthread_mutex_t mu;
    pthread_cond_t probe_cv;    /* probe threads sleep here between probes */
    pthread_cond_t decide_cv;   /* the decision thread waits here */
    pthread_cond_t event_cv;    /* nc_monitor_wait_events waits here */
    pthread_cond_t idle_cv;     /* busy went 0 */

    nc_monitor_config cfg;
    int n;
    nc_fo *fo;
    nc_probe_fn probe;
    void *probe_arg;
    nc_switch_fn on_switch;
    void *switch_arg;
    void (*release)(void *arg);  /* nc_monitor_on_free */
    void *release_arg;

    int refs;
    int freed;                  /* nc_monitor_free was called */
    int closed;                 /* nc_monitor_close (or free) was called: no more starts */
    int running;                /* threads started and not stopped */
    uint64_t run;               /* changes at every start and stop: a thread of an older run quits */
    uint64_t stops;             /* number of stops, wakes event waiters */
    pthread_t *threads;         /* this run's threads (probe threads and the decision thread) */
    int nthreads, threads_cap;

    int kick;                   /* something was reported: decide again */
    int busy;                   /* a switch is being carried out */
    int recheck;                /* a report came while busy and no thread runs */
    uint64_t generation;

    unsigned char probe_now[NC_MONITOR_MAX];  /* a passive report asks for a probe now */
    uint64_t probe_gen[NC_MONITOR_MAX];  /* changes when endpoint i is removed or comes back: a
                                            probe begun before is stale (not recorded) */

    uint64_t last_id;           /* id of the newest event, 0 none */
    nc_event ring[NC_EVENT_RING];
};

typedef struct thread_arg {
    nc_monitor *m;
    int i;                      /* endpoint, -1 the decision thread */
    uint64_t run;
} thread_arg;

/* ---- helpers ----------------------------------------------------------------- */

static int cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a))
        return -1;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc ? -1 : 0;
}


static void text_set(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void text_set(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    nc_text_vset(dst, cap, fmt, ap);
    va_end(ap);
}

static void monitor_destroy(nc_monitor *m)
{
    if (m->release)
        m->release(m->release_arg);
    nc_fo_free(m->fo);
    free(m->threads);
    pthread_cond_destroy(&m->probe_cv);
    pthread_cond_destroy(&m->decide_cv);
    pthread_cond_destroy(&m->event_cv);
    pthread_cond_destroy(&m->idle_cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static void unref(nc_monitor *m)
{
    pthread_mutex_lock(&m->mu);
    int last = --m->refs == 0;
    pthread_mutex_unlock(&m->mu);
    if (last)
        monitor_destroy(m);
}

/* Wake the decision thread. */
static void kick_locked(nc_monitor *m)
{
    m->kick = 1;
    pthread_cond_signal(&m->decide_cv);
}

static void record_locked(nc_monitor *m, int kind, const nc_fo_decision *d, int success, double wall,
                          double duration, double detected_at, const char *reason)
{
    nc_event *e = &m->ring[m->last_id % NC_EVENT_RING];
    memset(e, 0, sizeof *e);
    e->id = ++m->last_id;
    e->kind = kind;
    e->from = d->from;
    e->to = d->to;
    e->success = success;
    e->fired = d->fired;
    e->manual = d->manual;
    e->timestamp = wall;
    e->duration = duration;
    e->detected_at = detected_at;
    text_set(e->reason, sizeof e->reason, "%s", reason);
    pthread_cond_broadcast(&m->event_cv);
}

static double earlier(double a, double b)
{
    return a < b ? a : b;
}

/* A probe in a caller's thread that failed at the caller's deadline, which
 * was shorter than the monitor's own bound: it was cut short, so its
 * failure says nothing about the endpoint (it is neither recorded nor
 * acted on; the next look decides). */
static int cut_short(int rc, double deadline, double own_bound, double now)
{
    return rc != 0 && deadline < own_bound && now >= deadline;
}

/* Wait until no switch is being carried out, before deadline.  0 ok, -1 not. */
static int wait_idle_locked(nc_monitor *m, double deadline)
{
    struct timespec ts = nc_abstime(deadline);
    while (m->busy) {
        if (m->freed || nc_now() >= deadline)
            return -1;
        pthread_cond_timedwait(&m->idle_cv, &m->mu, &ts);
    }
    return 0;
}

/* ---- carrying decisions out ----------------------------------------------------- */

/* Carry out a DO_FAILOVER / DO_FAILBACK decision.  Called and returns with
 * m->mu held and m->busy clear; releases the mutex while verifying and
 * while calling on_switch.  run: the calling monitor thread's run (0 for a
 * caller's thread).  until: the caller's deadline (NC_NO_DEADLINE: none), which
 * bounds the verification too; a verification it cuts short decides
 * nothing (no switch, no event: the next look decides again).  Returns 1
 * when the switch happened; otherwise 0 with the reason in why. */
static int execute_locked(nc_monitor *m, const nc_fo_decision *d, uint64_t run, char *why, size_t whylen,
                          double until)
{
    double t0 = nc_now(), wall = nc_wall();
    if (t0 >= until) {
        if (why)
            text_set(why, whylen, "%s; not switched: no time left before the caller's deadline", d->reason);
        return 0;
    }
    double detected = nc_fo_detected_at(m->fo, d);
    int from = d->from, to = d->to;
    int kind = from == to ? NC_EV_RESUMED : d->action == NC_FO_DO_FAILBACK ? NC_EV_FAILBACK : NC_EV_FAILOVER;
    m->busy = 1;
    nc_fo_begin(m->fo, d, t0);
    pthread_mutex_unlock(&m->mu);

    double latency = 0;
    int role = NC_ROLE_UNKNOWN;
    char eb[200];
    eb[0] = '\0';
    double own = t0 + m->cfg.failover_timeout, deadline = earlier(own, until);
    int rc = m->probe(m->probe_arg, to, deadline, &latency, &role, eb, sizeof eb);
    double now = nc_now();

    pthread_mutex_lock(&m->mu);
    if (cut_short(rc, deadline, own, now)) {
        nc_fo_decision none = *d;
        none.action = NC_FO_NONE;   /* back to the state before nc_fo_begin */
        nc_fo_done(m->fo, &none, now, 0, 0);
        if (why)
            text_set(why, whylen, "%s; not switched: endpoint %d was not verified before the caller's deadline",
                     d->reason, to);
        m->busy = 0;
        pthread_cond_broadcast(&m->idle_cv);
        kick_locked(m);
        return 0;
    }
    /* Stopped while verifying: finish the bookkeeping, but the caller of
     * nc_monitor_stop may be tearing down what on_switch uses. */
    int stopped = run && m->run != run;
    if (rc != 0 && !eb[0])
        snprintf(eb, sizeof eb, "probe failed");
    nc_fo_probe(m->fo, to, now, rc == 0, latency, role, rc == 0 ? NULL : eb);
    int read_only = rc == 0 && m->cfg.fo.require_writable && role == NC_ROLE_READ_ONLY;
    /* Removed while we verified it (the lock was released): never switch
     * to it, it would be current and take no borrow until the next
     * decision, the abandoned endpoint drained meanwhile. */
    int gone = nc_fo_removed(m->fo, to);
    int ok = rc == 0 && !read_only && !gone;
    char reason[256];
    if (ok) {
        text_set(reason, sizeof reason, "%s", d->reason);
    } else if (gone) {
        text_set(reason, sizeof reason, "%s; not switched: endpoint %d left the topology", d->reason, to);
    } else if (read_only) {
        text_set(reason, sizeof reason, "%s; not switched: endpoint %d is read-only", d->reason, to);
    } else {
        text_set(reason, sizeof reason, "%s; not switched: endpoint %d failed verification: %s", d->reason, to,
                 eb);
    }
    double duration = now - t0;
    nc_fo_done(m->fo, d, now, duration, ok);
    if (ok)
        m->generation++;
    record_locked(m, kind, d, ok, wall, duration, detected, reason);
    if (ok)
        m->ring[(m->last_id - 1) % NC_EVENT_RING].switched_at = now;
    if (!ok && why)
        text_set(why, whylen, "%s", reason);
    if (ok && from != to && m->on_switch && !stopped) {
        pthread_mutex_unlock(&m->mu);
        m->on_switch(m->switch_arg, from, to);
        pthread_mutex_lock(&m->mu);
    }
    m->busy = 0;
    pthread_cond_broadcast(&m->idle_cv);
    kick_locked(m);   /* the state changed: look again */
    return ok;
}

/* In a caller's thread while no monitor thread runs: probe the endpoints
 * nothing is known about yet (also_failed: and those whose last report was
 * a failure), each within health_check_timeout, all within
 * failover_timeout, and all before until (the caller's deadline, NC_NO_DEADLINE
 * none).  This is how a passive failure reported before nc_monitor_start
 * finds a target, and how a manual trigger without monitoring sees an
 * endpoint that came back.  With m->mu held, m->busy clear; returns the
 * number probed. */
static int probe_unknown_locked(nc_monitor *m, int also_failed, double until)
{
    int count = 0;
    double own_end = nc_now() + m->cfg.failover_timeout, end = earlier(own_end, until);
    m->busy = 1;
    for (int i = 0; i < m->n; i++) {
        const nc_fo_health *h = nc_fo_health_of(m->fo, i);
        if (h->removed || (h->probed && (h->available || !also_failed)))
            continue;
        double now = nc_now();
        if (now >= end)
            break;
        double own = earlier(now + m->cfg.health_check_timeout, own_end);
        double deadline = earlier(own, end);
        pthread_mutex_unlock(&m->mu);
        double latency = 0;
        int role = NC_ROLE_UNKNOWN;
        char eb[256];
        eb[0] = '\0';
        int rc = m->probe(m->probe_arg, i, deadline, &latency, &role, eb, sizeof eb);
        now = nc_now();
        pthread_mutex_lock(&m->mu);
        if (cut_short(rc, deadline, own, now))
            break;
        if (rc != 0 && !eb[0])
            snprintf(eb, sizeof eb, "probe failed");
        nc_fo_probe(m->fo, i, now, rc == 0, latency, role, rc == 0 ? NULL : eb);
        count++;
    }
    m->busy = 0;
    pthread_cond_broadcast(&m->idle_cv);
    return count;
}

/* Ask nc_fo_decide and carry the answer out.  With m->mu held, m->busy
 * clear.  in_caller: in a caller's thread while no monitor thread runs;
 * until: that caller's deadline (NC_NO_DEADLINE none). */
static void decide_and_act_locked(nc_monitor *m, uint64_t run, int in_caller, double until)
{
    double now = nc_now();
    nc_fo_decision d = nc_fo_decide(m->fo, now);
    if (in_caller && (d.action == NC_FO_NO_TARGET || (d.action == NC_FO_NONE && !nc_fo_current_usable(m->fo))) &&
        probe_unknown_locked(m, 0, until) > 0) {
        now = nc_now();
        d = nc_fo_decide(m->fo, now);
    }
    /* The state machine remembers split-brain holds and outages, so each
     * gets one event however often it is decided again. */
    if (nc_fo_note(m->fo, &d, now)) {
        int kind = d.action == NC_FO_SPLIT_BRAIN ? NC_EV_SPLIT_BRAIN : NC_EV_NO_TARGET;
        record_locked(m, kind, &d, 0, nc_wall(), 0, nc_fo_detected_at(m->fo, &d), d.reason);
    }
    if (d.action == NC_FO_DO_FAILOVER || d.action == NC_FO_DO_FAILBACK)
        execute_locked(m, &d, run, NULL, 0, until);
}

/* In a caller's thread while no monitor thread runs: decide again for
 * reports that came in while another caller was carrying out a switch
 * (until: the caller's deadline; past it the next caller decides). */
static void recheck_locked(nc_monitor *m, double until)
{
    for (int k = 0; k < 3 && m->recheck && !m->running && !m->busy && nc_now() < until; k++) {
        m->recheck = 0;
        decide_and_act_locked(m, 0, 1, until);
    }
}

/* ---- threads ---------------------------------------------------------------------- */

static void *probe_main(void *varg)
{
    thread_arg *a = varg;
    nc_monitor *m = a->m;
    int i = a->i;
    uint64_t run = a->run;
    free(a);
    char eb[256];
    pthread_mutex_lock(&m->mu);
    while (m->run == run) {
        if (nc_fo_removed(m->fo, i)) {
            /* Left the topology: no probes, but the thread stays for when
             * it comes back (one thread per endpoint and run, however
             * often it leaves and returns: each is joined at stop). */
            pthread_cond_wait(&m->probe_cv, &m->mu);
            continue;
        }
        uint64_t gen = m->probe_gen[i];
        m->probe_now[i] = 0;
        pthread_mutex_unlock(&m->mu);
        double start = nc_now();
        double latency = 0;
        int role = NC_ROLE_UNKNOWN;
        eb[0] = '\0';
        int rc = m->probe(m->probe_arg, i, start + m->cfg.health_check_timeout, &latency, &role, eb, sizeof eb);
        double now = nc_now();
        pthread_mutex_lock(&m->mu);
        if (m->run != run)
            break;
        if (m->probe_gen[i] != gen)
            continue;   /* removed (or removed and back) meanwhile: a stale answer */
        if (rc != 0 && !eb[0])
            snprintf(eb, sizeof eb, "probe failed");
        nc_fo_probe(m->fo, i, now, rc == 0, latency, role, rc == 0 ? NULL : eb);
        kick_locked(m);
        double wake = start + m->cfg.health_check_interval;
        struct timespec ts = nc_abstime(wake);
        while (m->run == run && m->probe_gen[i] == gen && nc_now() < wake && !m->probe_now[i]) {
            if (pthread_cond_timedwait(&m->probe_cv, &m->mu, &ts) == ETIMEDOUT)
                break;
        }
    }
    pthread_mutex_unlock(&m->mu);
    unref(m);   /* may free the monitor */
    return NULL;
}

static void *decide_main(void *varg)
{
    thread_arg *a = varg;
    nc_monitor *m = a->m;
    uint64_t run = a->run;
    free(a);
    double tick = m->cfg.health_check_interval < 1.0 ? m->cfg.health_check_interval : 1.0;
    pthread_mutex_lock(&m->mu);
    while (m->run == run) {
        if (!m->kick) {
            struct timespec ts = nc_abstime(nc_now() + tick);
            pthread_cond_timedwait(&m->decide_cv, &m->mu, &ts);
            if (m->run != run)
                break;
        }
        m->kick = 0;
        if (m->busy)
            continue;   /* whoever is switching kicks us when done */
        decide_and_act_locked(m, run, 0, NC_NO_DEADLINE);
    }
    pthread_mutex_unlock(&m->mu);
    unref(m);
    return NULL;
}

/* ---- the API ------------------------------------------------------------------------ */

void nc_monitor_config_defaults(nc_monitor_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    nc_fo_config_defaults(&cfg->fo);
    cfg->health_check_interval = 10.0;
    cfg->health_check_timeout = 5.0;
    cfg->failover_timeout = 60.0;
}

const char *nc_event_kind_name(int kind)
{
    static const char *const names[NC_EV_COUNT] = {
        [NC_EV_FAILOVER] = "failover", [NC_EV_FAILBACK] = "failback", [NC_EV_SPLIT_BRAIN] = "split_brain",
        [NC_EV_NO_TARGET] = "no_target", [NC_EV_RESUMED] = "resumed"};
    return kind > 0 && kind < NC_EV_COUNT ? names[kind] : "unknown";
}

void nc_monitor_on_free(nc_monitor *m, void (*release)(void *arg), void *arg)
{
    pthread_mutex_lock(&m->mu);
    m->release = release;
    m->release_arg = arg;
    pthread_mutex_unlock(&m->mu);
}

nc_monitor *nc_monitor_new(const nc_monitor_config *cfg, int n, const int *priority, int primary,
                           nc_probe_fn probe, void *probe_arg, nc_switch_fn on_switch, void *switch_arg,
                           nc_error *err)
{
    if (!cfg || n < 1 || !priority || !probe) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "monitor: no endpoints or no probe function");
        return NULL;
    }
    if (n > NC_MONITOR_MAX) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "monitor: at most %d endpoints", NC_MONITOR_MAX);
        return NULL;
    }
    if (!(cfg->health_check_interval > 0) || !(cfg->health_check_timeout > 0) || !(cfg->failover_timeout > 0)) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE,
                     "monitor: health_check_interval, health_check_timeout and failover_timeout must be > 0");
        return NULL;
    }
    nc_fo *fo = nc_fo_new(&cfg->fo, n, priority, primary);
    if (!fo) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "monitor: invalid failover configuration");
        return NULL;
    }
    nc_monitor *m = calloc(1, sizeof *m);
    if (!m) {
        nc_fo_free(fo);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    int inited = 0;
    if (pthread_mutex_init(&m->mu, NULL) == 0) {
        inited = 1;
        if (cond_init_monotonic(&m->probe_cv) == 0) {
            inited = 2;
            if (cond_init_monotonic(&m->decide_cv) == 0) {
                inited = 3;
                if (cond_init_monotonic(&m->event_cv) == 0) {
                    inited = 4;
                    if (cond_init_monotonic(&m->idle_cv) == 0)
                        inited = 5;
                }
            }
        }
    }
    if (inited < 5) {
        if (inited >= 4)
            pthread_cond_destroy(&m->event_cv);
        if (inited >= 3)
            pthread_cond_destroy(&m->decide_cv);
        if (inited >= 2)
            pthread_cond_destroy(&m->probe_cv);
        if (inited >= 1)
            pthread_mutex_destroy(&m->mu);
        free(m);
        nc_fo_free(fo);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "monitor: cannot create its locks");
        return NULL;
    }
    m->cfg = *cfg;
    m->n = n;
    m->fo = fo;
    m->probe = probe;
    m->probe_arg = probe_arg;
    m->on_switch = on_switch;
    m->switch_arg = switch_arg;
    m->refs = 1;
    return m;
}

/* Start one thread of this run (with m->mu held).  0 ok, -1 failed. */
static int start_thread_locked(nc_monitor *m, int i, uint64_t run)
{
    if (m->nthreads == m->threads_cap) {
        /* Endpoints added (or back) while running get threads too. */
        int cap = m->threads_cap ? 2 * m->threads_cap : m->n + 1;
        pthread_t *t = realloc(m->threads, (size_t)cap * sizeof *t);
        if (!t)
            return -1;
        m->threads = t;
        m->threads_cap = cap;
    }
    thread_arg *a = malloc(sizeof *a);
    if (!a)
        return -1;
    a->m = m;
    a->i = i;
    a->run = run;
    m->refs++;
    if (pthread_create(&m->threads[m->nthreads], NULL, i >= 0 ? probe_main : decide_main, a) != 0) {
        m->refs--;
        free(a);
        return -1;
    }
    m->nthreads++;
    return 0;
}

int nc_monitor_start(nc_monitor *m, nc_error *err)
{
    if (!m) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "no monitor");
        return -1;
    }
    pthread_mutex_lock(&m->mu);
    if (m->running) {
        pthread_mutex_unlock(&m->mu);
        return 0;
    }
    if (m->freed || m->closed) {
        pthread_mutex_unlock(&m->mu);
        nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "the monitor is closed");
        return -1;
    }
    m->threads = NULL;
    m->nthreads = m->threads_cap = 0;
    uint64_t run = ++m->run;
    m->running = 1;
    /* Endpoints get health_check_timeout to answer their first probe. */
    nc_fo_set_grace(m->fo, nc_now() + m->cfg.health_check_timeout + 0.1);
    m->kick = 1;   /* the decision thread looks once at what was reported before */
    int ok = 1;
    for (int i = 0; ok && i < m->n; i++)
        ok = start_thread_locked(m, i, run) == 0;   /* a removed endpoint's idles until it is back */
    if (ok)
        ok = start_thread_locked(m, -1, run) == 0;
    pthread_mutex_unlock(&m->mu);
    if (!ok) {
        nc_monitor_stop(m);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "cannot start the monitor threads");
        return -1;
    }
    return 0;
}

void nc_monitor_stop(nc_monitor *m)
{
    nc_monitor_stop_within(m, -1);
}

void nc_monitor_stop_within(nc_monitor *m, double max_wait)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    if (!m->running) {
        pthread_mutex_unlock(&m->mu);
        return;
    }
    m->running = 0;
    m->run++;
    m->stops++;
    nc_fo_set_grace(m->fo, 0);
    pthread_t *threads = m->threads;
    int nthreads = m->nthreads;
    m->threads = NULL;
    m->nthreads = m->threads_cap = 0;
    pthread_cond_broadcast(&m->probe_cv);
    pthread_cond_broadcast(&m->decide_cv);
    pthread_cond_broadcast(&m->event_cv);
    double bound = max_wait >= 0 ? max_wait : m->cfg.health_check_timeout + 0.5;
    pthread_mutex_unlock(&m->mu);

    /* One bound for all; Ctrl-C (the stop check) ends the joins as it does. */
    double until = nc_now() + bound;
    for (int k = 0; k < nthreads; k++) {
        if (pthread_equal(pthread_self(), threads[k])) {
            pthread_detach(threads[k]);   /* stop() from a callback on a monitor thread */
            continue;
        }
        if (nc_stop_join(threads[k], until) != 0)
            pthread_detach(threads[k]);   /* it frees what it holds when it ends */
    }
    free(threads);
}

void nc_monitor_close(nc_monitor *m)
{
    nc_monitor_close_within(m, -1);
}

void nc_monitor_close_within(nc_monitor *m, double max_wait)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->closed = 1;
    pthread_mutex_unlock(&m->mu);
    nc_monitor_stop_within(m, max_wait);
}

void nc_monitor_free(nc_monitor *m)
{
    if (!m)
        return;
    nc_monitor_close(m);
    pthread_mutex_lock(&m->mu);
    m->freed = 1;
    pthread_cond_broadcast(&m->event_cv);
    pthread_cond_broadcast(&m->idle_cv);
    pthread_mutex_unlock(&m->mu);
    unref(m);
}

int nc_monitor_running(nc_monitor *m)
{
    if (!m)
        return 0;
    pthread_mutex_lock(&m->mu);
    int r = m->running;
    pthread_mutex_unlock(&m->mu);
    return r;
}

int nc_monitor_current(nc_monitor *m, uint64_t *generation)
{
    if (!m) {
        if (generation)
            *generation = 0;
        return -1;
    }
    pthread_mutex_lock(&m->mu);
    int cur = nc_fo_current_usable(m->fo) ? nc_fo_current(m->fo) : -1;
    if (generation)
        *generation = m->generation;
    pthread_mutex_unlock(&m->mu);
    return cur;
}

uint64_t nc_monitor_generation(nc_monitor *m)
{
    if (!m)
        return 0;
    pthread_mutex_lock(&m->mu);
    uint64_t g = m->generation;
    pthread_mutex_unlock(&m->mu);
    return g;
}

void nc_monitor_passive(nc_monitor *m, int i, int kind, const char *error, double until)
{
    if (!m || i < 0)
        return;
    pthread_mutex_lock(&m->mu);
    if (i >= m->n || nc_fo_removed(m->fo, i)) {
        pthread_mutex_unlock(&m->mu);   /* gone from the topology: nothing to decide */
        return;
    }
    double now = nc_now();
    nc_fo_passive(m->fo, i, now, kind, error);
    /* The report is a reason to look now, not a verdict: one terminated
     * session or one READ ONLY transaction must not take a healthy server
     * out of service.  The probe it causes decides. */
    if (m->running) {
        m->probe_now[i] = 1;
        pthread_cond_broadcast(&m->probe_cv);   /* its probe thread probes at once */
    } else if (m->busy || now >= until) {
        m->recheck = 1;   /* the one carrying out a switch (or the next caller) decides again */
    } else {
        /* No monitor thread: probe it here, then decide and act here
         * (bounded by health_check_timeout + failover_timeout, and by the
         * caller's deadline). */
        m->busy = 1;
        pthread_mutex_unlock(&m->mu);
        double latency = 0;
        int role = NC_ROLE_UNKNOWN;
        char eb[256];
        eb[0] = '\0';
        double own = now + m->cfg.health_check_timeout, deadline = earlier(own, until);
        int rc = m->probe(m->probe_arg, i, deadline, &latency, &role, eb, sizeof eb);
        pthread_mutex_lock(&m->mu);
        now = nc_now();
        if (!cut_short(rc, deadline, own, now)) {
            if (rc != 0 && !eb[0])
                snprintf(eb, sizeof eb, "probe failed");
            nc_fo_probe(m->fo, i, now, rc == 0, latency, role, rc == 0 ? NULL : eb);
        }
        m->busy = 0;
        pthread_cond_broadcast(&m->idle_cv);
        m->recheck = 1;
        recheck_locked(m, until);
    }
    pthread_mutex_unlock(&m->mu);
}

/* The manual triggers: d decided under m->mu; carry it out.  Unlocks. */
static int finish_manual_unlock(nc_monitor *m, nc_fo_decision *d, nc_error *err)
{
    int r = 0;
    if (d->action != NC_FO_DO_FAILOVER && d->action != NC_FO_DO_FAILBACK) {
        if (err)
            text_set(err->message, sizeof err->message, "%s", d->reason);
    } else {
        d->manual = 1;
        char why[256];
        r = execute_locked(m, d, 0, why, sizeof why, NC_NO_DEADLINE);
        if (err)
            text_set(err->message, sizeof err->message, "%s", r ? d->reason : why);
    }
    recheck_locked(m, NC_NO_DEADLINE);
    pthread_mutex_unlock(&m->mu);
    return r;
}

/* Take m->mu and wait for a switch in progress (up to failover_timeout,
 * and until the caller's deadline). */
static int lock_idle(nc_monitor *m, double until, nc_error *err)
{
    pthread_mutex_lock(&m->mu);
    if (wait_idle_locked(m, earlier(nc_now() + m->cfg.failover_timeout, until)) < 0) {
        pthread_mutex_unlock(&m->mu);
        if (err)
            text_set(err->message, sizeof err->message, "another switch is in progress");
        return -1;
    }
    return 0;
}

int nc_monitor_trigger_failover(nc_monitor *m, int target, const char *reason, nc_error *err)
{
    nc_error_clear(err);
    if (!m) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "no monitor");
        return -1;
    }
    pthread_mutex_lock(&m->mu);
    int n = m->n;
    pthread_mutex_unlock(&m->mu);
    if (target < -1 || target >= n) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "there is no endpoint %d", target);
        return -1;
    }
    if (lock_idle(m, NC_NO_DEADLINE, err) < 0)
        return 0;
    /* Endpoints nothing is known about yet (just started, or no monitor
     * threads) are probed now, so an operator's request is judged on facts;
     * without monitor threads, failed ones are looked at again too. */
    probe_unknown_locked(m, !m->running, NC_NO_DEADLINE);
    nc_fo_decision d = nc_fo_manual_failover(m->fo, nc_now(), target, reason ? reason : "");
    return finish_manual_unlock(m, &d, err);
}

int nc_monitor_recheck(nc_monitor *m, double until)
{
    if (!m)
        return -1;
    nc_error ignored;
    if (lock_idle(m, until, &ignored) < 0)
        return -1;
    if (!m->running)
        probe_unknown_locked(m, 1, until);
    decide_and_act_locked(m, 0, !m->running, until);
    recheck_locked(m, until);
    int usable = nc_fo_current_usable(m->fo);
    pthread_mutex_unlock(&m->mu);
    return usable;
}

int nc_monitor_trigger_recovery(nc_monitor *m, nc_error *err)
{
    nc_error_clear(err);
    if (!m) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "no monitor");
        return -1;
    }
    if (lock_idle(m, NC_NO_DEADLINE, err) < 0)
        return 0;
    probe_unknown_locked(m, !m->running, NC_NO_DEADLINE);
    nc_fo_decision d = nc_fo_manual_recovery(m->fo, nc_now());
    return finish_manual_unlock(m, &d, err);
}

uint64_t nc_monitor_last_event(nc_monitor *m)
{
    if (!m)
        return 0;
    pthread_mutex_lock(&m->mu);
    uint64_t id = m->last_id;
    pthread_mutex_unlock(&m->mu);
    return id;
}

int nc_monitor_wait_events(nc_monitor *m, uint64_t after, nc_event *out, int cap, double timeout)
{
    if (!m || !out || cap <= 0)
        return 0;
    pthread_mutex_lock(&m->mu);
    if (m->last_id <= after && timeout > 0 && !m->freed) {
        m->refs++;   /* a free() while we wait leaves the monitor to us */
        uint64_t stops = m->stops;
        double deadline = nc_now() + timeout;
        struct timespec ts = nc_abstime(deadline);
        while (m->last_id <= after && !m->freed && m->stops == stops && nc_now() < deadline)
            pthread_cond_timedwait(&m->event_cv, &m->mu, &ts);
        m->refs--;
        if (m->refs == 0) {
            pthread_mutex_unlock(&m->mu);
            monitor_destroy(m);
            return 0;
        }
    }
    int k = 0;
    if (m->last_id > after) {
        uint64_t first = after + 1;
        if (m->last_id > NC_EVENT_RING && first < m->last_id - NC_EVENT_RING + 1)
            first = m->last_id - NC_EVENT_RING + 1;   /* older ones were overwritten */
        for (uint64_t id = first; id <= m->last_id && k < cap; id++)
            out[k++] = m->ring[(id - 1) % NC_EVENT_RING];
    }
    pthread_mutex_unlock(&m->mu);
    return k;
}

int nc_monitor_add(nc_monitor *m, int priority, nc_error *err)
{
    pthread_mutex_lock(&m->mu);
    if (m->n >= NC_MONITOR_MAX) {
        pthread_mutex_unlock(&m->mu);
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "monitor: at most %d endpoints", NC_MONITOR_MAX);
        return -1;
    }
    int i = nc_fo_add(m->fo, priority);
    if (i < 0) {
        pthread_mutex_unlock(&m->mu);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "monitor: cannot add an endpoint (out of memory)");
        return -1;
    }
    m->n = i + 1;
    m->probe_now[i] = 0;
    m->probe_gen[i]++;
    /* No probe thread (out of threads): it is probed as a target would be,
     * by a caller's recheck; not fatal to the others. */
    if (m->running)
        (void)start_thread_locked(m, i, m->run);
    kick_locked(m);
    pthread_mutex_unlock(&m->mu);
    return i;
}

int nc_monitor_reserve(nc_monitor *m, int n, nc_error *err)
{
    if (n > NC_MONITOR_MAX) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "monitor: at most %d endpoints", NC_MONITOR_MAX);
        return -1;
    }
    pthread_mutex_lock(&m->mu);
    int rc = nc_fo_reserve(m->fo, n);
    pthread_mutex_unlock(&m->mu);
    if (rc < 0)
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "monitor: cannot make room for an endpoint (out of memory)");
    return rc;
}

void nc_monitor_set_removed(nc_monitor *m, int i, int removed)
{
    pthread_mutex_lock(&m->mu);
    if (i < 0 || i >= m->n || nc_fo_removed(m->fo, i) == !!removed) {
        pthread_mutex_unlock(&m->mu);
        return;
    }
    nc_fo_set_removed(m->fo, i, removed, nc_now());
    m->probe_gen[i]++;   /* a probe in flight is stale */
    m->probe_now[i] = 0;
    pthread_cond_broadcast(&m->probe_cv);   /* its thread idles now, or probes at once when back */
    kick_locked(m);   /* the current endpoint may have gone: decide now */
    pthread_mutex_unlock(&m->mu);
}

int nc_monitor_count(nc_monitor *m)
{
    pthread_mutex_lock(&m->mu);
    int n = m->n;
    pthread_mutex_unlock(&m->mu);
    return n;
}

void nc_monitor_get_status(nc_monitor *m, nc_monitor_status *st, nc_fo_health *health)
{
    if (!m || !st)
        return;
    pthread_mutex_lock(&m->mu);
    st->state = nc_fo_state(m->fo);
    st->current = nc_fo_current(m->fo);
    st->preferred = nc_fo_preferred(m->fo);
    st->n = m->n;
    nc_fo_get_stats(m->fo, &st->stats);
    st->generation = m->generation;
    st->running = m->running;
    if (health)
        for (int i = 0; i < m->n; i++)
            health[i] = *nc_fo_health_of(m->fo, i);
    pthread_mutex_unlock(&m->mu);
}
