/* nc_patroni_watch.c - re-reading Patroni while running (see nc_patroni_watch.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* pthread_setname_np */
#endif
#include "nc_patroni_watch.h"
#include "nc_patroni_follow.h"
#include "nc_fork.h"
#include "nc_stop.h"
#include "nc_time.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct nc_patroni_watch {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* wakes the thread's wait between fetches (stop) */
    char *urls[NC_PATRONI_MAX_URLS];
    int nurls;
    double interval, timeout;
    uint64_t fork_gen;
    int started, stop;          /* under mu; stop is also read by the thread's stop check */
    int joining;                /* a stop is joining the thread: other stops (a free) wait for it */
    int refs;                   /* the owner and callers inside a stop (nc_patroni_watch_ref), under mu */
    pthread_t thread;
    /* what status reports, under mu */
    uint64_t fetches, failures;
    int consecutive;
    double last_ok;             /* nc_now() of the last answer, 0 none */
    char last_error[NC_ERRMSG_MAX];
    int have_cluster;
    nc_patroni_cluster cluster;
    nc_patroni_cluster scratch; /* the thread's own buffer: fetched into without the lock */
    nc_patroni_follow *follow;  /* applies each answer to a route (nc_patroni_watch_follow), or NULL */
};

/* The thread's stop check: nc_patroni_fetch consults it, so a stop ends a
 * fetch that waits on a silent API. */
static int stop_requested(void *arg)
{
    nc_patroni_watch *w = arg;
    return __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE);
}

static void *run(void *arg)
{
    nc_patroni_watch *w = arg;
    nc_stop_install(stop_requested, w);
    for (;;) {
        nc_error err;
        nc_error_clear(&err);
        int rc = nc_patroni_fetch((const char *const *)w->urls, w->nurls, w->timeout, &w->scratch, &err);
        pthread_mutex_lock(&w->mu);
        if (w->stop) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        if (rc == 0) {
            w->fetches++;
            w->consecutive = 0;
            w->last_ok = nc_now();
            memcpy(&w->cluster, &w->scratch, sizeof w->cluster);
            w->have_cluster = 1;
            nc_patroni_follow *f = w->follow;
            if (f) {
                /* Outside the lock: making a pool, adding or removing an
                 * endpoint takes the route's and monitor's locks (and the
                 * owner's stop waits for this thread). */
                pthread_mutex_unlock(&w->mu);
                nc_patroni_follow_apply(f, &w->scratch);
                pthread_mutex_lock(&w->mu);
            }
        } else {
            /* counted and shown; the last answer stays (a Patroni API that is
             * down does not change what we know of the members) */
            w->failures++;
            w->consecutive++;
            nc_text_set(w->last_error, sizeof w->last_error, "%s", err.message);
        }
        double until = nc_now() + w->interval;
        while (!w->stop) {
            struct timespec ts = nc_abstime(until);
            if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) != 0 && nc_now() >= until)
                break;
        }
        int stop = w->stop;
        pthread_mutex_unlock(&w->mu);
        if (stop)
            break;
    }
    nc_stop_install(NULL, NULL);
    return NULL;
}

nc_patroni_watch *nc_patroni_watch_new(const char *const *urls, int nurls, double interval, double timeout,
                                       nc_error *err)
{
    if (nurls < 1 || nurls > NC_PATRONI_MAX_URLS) {
        nc_error_set(err, NC_E_PATRONI_URL, NC_K_INTERFACE, "Patroni: %d URLs given (1 to %d)", nurls,
                     NC_PATRONI_MAX_URLS);
        return NULL;
    }
    if (!(interval > 0) || !isfinite(interval) || !(timeout > 0) || !isfinite(timeout)) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE,
                     "Patroni watch: interval and timeout must be positive seconds (got %g, %g)", interval, timeout);
        return NULL;
    }
    for (int i = 0; i < nurls; i++) {
        char host[256];
        int port;
        if (nc_patroni_parse_url(urls[i], host, sizeof host, &port, err) < 0)
            return NULL;
    }
    nc_patroni_watch *w = calloc(1, sizeof *w);
    if (!w) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory making a Patroni watch");
        return NULL;
    }
    pthread_condattr_t a;
    int cv_ok = 0, mu_ok = pthread_mutex_init(&w->mu, NULL) == 0;
    if (pthread_condattr_init(&a) == 0) {
        pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
        cv_ok = pthread_cond_init(&w->cv, &a) == 0;
        pthread_condattr_destroy(&a);
    }
    for (int i = 0; i < nurls && mu_ok && cv_ok; i++) {
        w->urls[i] = strdup(urls[i]);
        if (!w->urls[i])
            break;
        w->nurls = i + 1;
    }
    if (!mu_ok || !cv_ok || w->nurls != nurls) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory making a Patroni watch");
        for (int i = 0; i < w->nurls; i++)
            free(w->urls[i]);
        if (mu_ok)
            pthread_mutex_destroy(&w->mu);
        if (cv_ok)
            pthread_cond_destroy(&w->cv);
        free(w);
        return NULL;
    }
    w->interval = interval;
    w->timeout = timeout;
    w->fork_gen = nc_fork_generation();
    w->refs = 1;
    return w;
}

/* Wait, under mu, for a stop in another thread to finish joining (the
 * thread ends within about NC_STOP_PERIOD of its stop flag). */
static void wait_joined_locked(nc_patroni_watch *w)
{
    while (w->joining)
        pthread_cond_wait(&w->cv, &w->mu);
}

int nc_patroni_watch_start(nc_patroni_watch *w, nc_error *err)
{
    pthread_mutex_lock(&w->mu);
    /* Not while an old thread is being joined: clearing stop now would keep
     * it running, and its join would never return. */
    wait_joined_locked(w);
    int rc = 0;
    if (!w->started) {
        w->stop = 0;
        if (pthread_create(&w->thread, NULL, run, w) != 0) {
            nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "could not start the Patroni watch thread");
            rc = -1;
        } else {
            /* Named (before start returns), so a debugger, top -H or a test
             * tells it from the others. */
            (void)pthread_setname_np(w->thread, NC_PATRONI_WATCH_THREAD_NAME);
            w->started = 1;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void nc_patroni_watch_stop(nc_patroni_watch *w)
{
    pthread_mutex_lock(&w->mu);
    if (!w->started) {
        /* Another caller's stop may be joining the thread: returning now
         * would let a free (or the follower's) pull memory from under the
         * thread still running.  Wait for that join. */
        wait_joined_locked(w);
        pthread_mutex_unlock(&w->mu);
        return;
    }
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&w->cv);
    pthread_t t = w->thread;
    w->started = 0;
    w->joining = 1;   /* one joiner: a second pthread_join of t is undefined */
    pthread_mutex_unlock(&w->mu);
    pthread_join(t, NULL);
    pthread_mutex_lock(&w->mu);
    w->joining = 0;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void nc_patroni_watch_ref(nc_patroni_watch *w)
{
    pthread_mutex_lock(&w->mu);
    w->refs++;
    pthread_mutex_unlock(&w->mu);
}

static void watch_destroy(nc_patroni_watch *w)
{
    for (int i = 0; i < w->nurls; i++)
        free(w->urls[i]);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void nc_patroni_watch_unref(nc_patroni_watch *w)
{
    pthread_mutex_lock(&w->mu);
    int last = --w->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (last)
        watch_destroy(w);
}

void nc_patroni_watch_status_get(nc_patroni_watch *w, nc_patroni_watch_status *out)
{
    pthread_mutex_lock(&w->mu);
    out->running = w->started;
    out->fetches = w->fetches;
    out->failures = w->failures;
    out->consecutive_failures = w->consecutive;
    out->last_ok_age = w->last_ok > 0 ? nc_now() - w->last_ok : -1.0;
    memcpy(out->last_error, w->last_error, sizeof out->last_error);
    out->have_cluster = w->have_cluster;
    if (w->have_cluster)
        memcpy(&out->cluster, &w->cluster, sizeof out->cluster);
    else
        out->cluster.n = 0;
    pthread_mutex_unlock(&w->mu);
}

void nc_patroni_watch_follow(nc_patroni_watch *w, nc_patroni_follow *f)
{
    pthread_mutex_lock(&w->mu);
    w->follow = f;
    pthread_mutex_unlock(&w->mu);
}

int nc_patroni_watch_inherited(const nc_patroni_watch *w)
{
    return w->fork_gen != nc_fork_generation();
}

void nc_patroni_watch_free(nc_patroni_watch *w)
{
    if (!w)
        return;
    nc_patroni_watch_stop(w);   /* the thread has ended when it returns, whoever joined it */
    nc_patroni_watch_unref(w);
}

void nc_patroni_diff(const nc_patroni_cluster *c, const char *const *known, int nknown, int *joined, int *njoined,
                     int *gone, int *ngone)
{
    /* n <= 64 on both sides: the quadratic scan is the simple one */
    *njoined = 0;
    *ngone = 0;
    for (int i = 0; i < c->n; i++) {
        int found = 0;
        for (int k = 0; k < nknown && !found; k++)
            found = strcmp(c->members[i].name, known[k]) == 0;
        if (!found)
            joined[(*njoined)++] = i;
    }
    for (int k = 0; k < nknown; k++) {
        int found = 0;
        for (int i = 0; i < c->n && !found; i++)
            found = strcmp(c->members[i].name, known[k]) == 0;
        if (!found)
            gone[(*ngone)++] = k;
    }
}
