/* nc_janitor.c - the pool's maintenance thread.
 *
 * Every validation_interval it takes the idle connections one at a time
 * (oldest idle first is not needed: each gets its turn), retires those past
 * max_lifetime, closes those idle longer than idle_timeout while the pool is
 * above min_connections, pings the rest and replaces the ones that fail.  In
 * between it keeps min_connections open, woken at once when a slot empties.
 * After a drain with NC_DRAIN_HOLD it opens nothing until the next borrow.
 * It never holds the pool mutex across backend I/O, so borrowers are never
 * held up by a check; a connection being checked is simply not idle.
 *
 * With leak_timeout it also wakes when the oldest borrow passes the
 * threshold, counts it as leaked and leaves it for nc_pool_take_leaks (the
 * binding reports it, with the borrower's stack, from a Python thread).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nc_pool_internal.h"
#include "nc_stop.h"
#include "nc_time.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

static int needs_janitor(const nc_pool_config *c)
{
    return c->validate || c->min_connections > 0 || c->idle_timeout > 0 || c->max_lifetime > 0 ||
           c->leak_timeout > 0;
}

/* Mark borrows held past leak_timeout (once per lease); returns when the
 * next one not yet marked will pass it (INFINITY: none).  Under mu. */
static double find_leaks_locked(nc_pool *p, double now)
{
    double next = INFINITY;
    if (!(p->cfg.leak_timeout > 0))
        return next;
    /* A borrow made after now passes the threshold no sooner than this (and
     * a tiny threshold does not make the thread spin: 10 ms at least). */
    next = now + (p->cfg.leak_timeout > 0.01 ? p->cfg.leak_timeout : 0.01);
    for (int i = 0; i < p->cfg.max_connections; i++) {
        nc_conn *c = &p->slots[i];
        if (c->state != NC_SLOT_LENT || c->leak_lease == c->lease)
            continue;
        double due = c->lent_at + p->cfg.leak_timeout;
        if (now >= due) {
            c->leak_lease = c->lease;
            c->leak_held = now - c->lent_at;
            if (!c->leak_pending)
                __atomic_store_n(&p->leaks_pending, p->leaks_pending + 1, __ATOMIC_RELEASE);
            c->leak_pending = 1;
            p->leaked++;
        } else if (due < next) {
            next = due > now + 0.01 ? due : now + 0.01;
        }
    }
    return next;
}

/* Put a connection the janitor opened or checked (state OPENING or
 * CHECKING) back: idle, or closed when the pool was shut down or drained
 * with NC_DRAIN_RETIRE meanwhile (the drain closed the idle ones before we
 * got here, and nothing else ever would).  Called with mu held; returns
 * with it released. */
static void park_unlock(nc_pool *p, nc_conn *c)
{
    if (!p->closed && !nc_pool_retired_locked(p, c)) {
        nc_pool_put_idle_locked(p, c);
        pthread_mutex_unlock(&p->mu);
        return;
    }
    void *raw = c->raw;
    pthread_mutex_unlock(&p->mu);
    p->ops->close(p->ctx, raw);
    pthread_mutex_lock(&p->mu);
    p->closed_count++;
    nc_pool_slot_free_locked(p, c);   /* wakes a shutdown waiting for busy slots */
    pthread_mutex_unlock(&p->mu);
}

/* Open connections until min_connections are there.  Called without mu. */
static void fill_to_min(nc_pool *p, int replacing)
{
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (p->closed || p->janitor_stop || p->refill_held ||
            nc_pool_total_locked(p) >= p->cfg.min_connections) {
            pthread_mutex_unlock(&p->mu);
            return;
        }
        nc_conn *c = nc_pool_reserve_locked(p);
        pthread_mutex_unlock(&p->mu);
        if (!c)
            return;
        nc_error err;
        double deadline = nc_now() + p->cfg.connect_timeout * p->cfg.retry_attempts;
        void *raw = nc_pool_open_raw(p, deadline,
                                     replacing ? NC_E_REPLACE_FAILED : NC_E_NEW_FAILED,
                                     replacing ? NC_E_REPLACE_INVALID : NC_E_NEW_INVALID, &err);
        pthread_mutex_lock(&p->mu);
        if (!raw) {
            nc_pool_slot_free_locked(p, c);
            pthread_mutex_unlock(&p->mu);
            return;   /* try again next round; failures are in the stats */
        }
        nc_pool_slot_fill_locked(p, c, raw);
        if (replacing)
            p->replaced++;
        park_unlock(p, c);
    }
}

/* One pass over the idle connections. */
static void check_idle(nc_pool *p, int validate_round)
{
    int n = p->cfg.max_connections;
    for (int i = 0; i < n; i++) {
        nc_conn *c = &p->slots[i];
        pthread_mutex_lock(&p->mu);
        if (p->closed || p->janitor_stop) {
            pthread_mutex_unlock(&p->mu);
            return;
        }
        if (c->state != NC_SLOT_IDLE) {
            pthread_mutex_unlock(&p->mu);
            continue;
        }
        double now = nc_now();
        int total = nc_pool_total_locked(p);
        int retire = now >= c->expires;
        int idle_out = p->cfg.idle_timeout > 0 && now - c->last_used > p->cfg.idle_timeout &&
                       total > p->cfg.min_connections;
        int ping = validate_round && p->cfg.validate && !retire && !idle_out &&
                   now - c->last_checked >= p->cfg.validation_interval * 0.5;
        if (!retire && !idle_out && !ping) {
            pthread_mutex_unlock(&p->mu);
            continue;
        }
        nc_pool_take_idle_locked(p, c);
        pthread_mutex_unlock(&p->mu);

        int ok = 0;
        if (ping) {
            nc_error err;
            ok = p->ops->looks_alive(p->ctx, c->raw) &&
                 p->ops->ping(p->ctx, c->raw, nc_now() + p->cfg.validation_timeout, &err) == 0;
        }
        if (ok) {
            pthread_mutex_lock(&p->mu);
            c->last_checked = nc_now();
            /* Pinging is not use: keep last_used so idle_timeout still applies. */
            park_unlock(p, c);
            continue;
        }
        p->ops->close(p->ctx, c->raw);
        pthread_mutex_lock(&p->mu);
        p->closed_count++;
        if (ping)
            p->validation_failures++;
        int replace = (ping || retire) && !p->closed && !p->janitor_stop && !p->refill_held;
        nc_pool_slot_free_locked(p, c);   /* hands the place to a waiter if any */
        if (replace && c->state == NC_SLOT_EMPTY) {
            /* Replace what was unhealthy or retired, so the pool keeps its size. */
            nc_conn *r = nc_pool_reserve_locked(p);
            pthread_mutex_unlock(&p->mu);
            if (r) {
                nc_error err;
                void *raw = nc_pool_open_raw(p, nc_now() + p->cfg.connect_timeout * p->cfg.retry_attempts,
                                             NC_E_REPLACE_FAILED, NC_E_REPLACE_INVALID, &err);
                pthread_mutex_lock(&p->mu);
                if (raw) {
                    nc_pool_slot_fill_locked(p, r, raw);
                    p->replaced++;
                    park_unlock(p, r);
                } else {
                    nc_pool_slot_free_locked(p, r);
                    pthread_mutex_unlock(&p->mu);
                }
            }
        } else {
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *janitor_main(void *arg)
{
    nc_pool *p = arg;
    double next_check = nc_now() + p->cfg.validation_interval;
    fill_to_min(p, 0);
    pthread_mutex_lock(&p->mu);
    while (!p->janitor_stop) {
        /* Wake at least every second for idle/lifetime limits that are not
         * tied to the validation interval. */
        double wake = next_check;
        double soon = nc_now() + 1.0;
        if ((p->cfg.idle_timeout > 0 || p->cfg.max_lifetime > 0) && soon < wake)
            wake = soon;
        double leak_due = find_leaks_locked(p, nc_now());
        if (leak_due < wake)
            wake = leak_due;
        struct timespec ts = nc_abstime(wake);
        while (!p->janitor_stop && !p->janitor_kick && nc_now() < wake) {
            if (pthread_cond_timedwait(&p->janitor_cv, &p->mu, &ts) == ETIMEDOUT)
                break;
        }
        if (p->janitor_stop)
            break;
        int kicked = p->janitor_kick;
        p->janitor_kick = 0;
        pthread_mutex_unlock(&p->mu);

        if (kicked)
            fill_to_min(p, 1);
        double now = nc_now();
        int validate_round = now >= next_check;
        if (validate_round)
            next_check = now + p->cfg.validation_interval;
        check_idle(p, validate_round);
        fill_to_min(p, 1);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    nc_pool_unref(p);   /* may free the pool: touch nothing after this */
    return NULL;
}

int nc_janitor_start(nc_pool *p, nc_error *err)
{
    if (!needs_janitor(&p->cfg))
        return 0;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 256 * 1024);
    /* Set before the thread exists: the janitor reads them (under mu). */
    p->janitor_started = 1;
    p->refs++;
    int rc = pthread_create(&p->janitor, &a, janitor_main, p);
    pthread_attr_destroy(&a);
    if (rc) {
        p->janitor_started = 0;
        p->refs--;
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "cannot start the pool maintenance thread");
        return -1;
    }
    return 0;
}

void nc_janitor_stop(nc_pool *p, double max_wait)
{
    pthread_mutex_lock(&p->mu);
    int started = p->janitor_started;
    p->janitor_started = 0;
    p->janitor_stop = 1;
    pthread_cond_signal(&p->janitor_cv);
    pthread_mutex_unlock(&p->mu);
    if (!started)
        return;
    if (pthread_equal(pthread_self(), p->janitor)) {
        pthread_detach(p->janitor);
        return;
    }
    /* Ctrl-C (the stop check) ends the join as its bound does. */
    if (nc_stop_join(p->janitor, nc_now() + (max_wait > 0 ? max_wait : 0)) != 0)
        pthread_detach(p->janitor);   /* it frees what it holds when it ends */
}
