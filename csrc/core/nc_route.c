/* nc_route.c - lending from the current endpoint (see nc_route.h).
 *
 * Counting: refs keeps the struct (owner, the monitor's memory, failure
 * reports in flight); users counts calls inside the monitor (lends, enter/
 * leave pairs, failure reports).  Closing stops the monitor's threads at
 * once, but frees the monitor only when no call is inside it: the last user
 * out does.  The monitor drops its reference when its own memory goes (no
 * thread of it left), and the last reference frees the probers and drops
 * the pools.
 */
#include "nc_route.h"
#include "nc_probe.h"
#include "nc_stop.h"
#include "nc_time.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct route_ep {
    nc_route *r;
    int i;
} route_ep;

/* What read routing knows of one endpoint (under rmu). */
typedef struct route_read {
    int removed;                /* left the topology: never chosen (nc_route_set_removed) */
    int probed, up, standby;
    int have_lsn;
    uint64_t lsn;               /* primary: current; standby: replayed */
    double lsn_at;              /* when it was read */
    uint64_t reads, writes;
} route_read;

struct nc_route {
    pthread_mutex_t mu;         /* guards refs, users, closed, freeing */
    int refs;
    int users;
    int closed;
    int freeing;                /* the monitor is to be freed by the last user */
    int n;                      /* endpoints: grows (nc_route_add), never shrinks; atomic */
    int cap;                    /* room in the arrays below, fixed: they never move */
    pthread_mutex_t grow_mu;    /* serialises nc_route_add/set_removed and close */
    nc_pool **pools;            /* referenced */
    nc_prober **probers;
    route_ep *eps;              /* observer args, one per pool */
    nc_monitor *mon;
    double check_interval;      /* the monitor's health_check_interval */
    pthread_mutex_t rmu;        /* guards what follows: read routing */
    nc_read_config rcfg;
    route_read *rd;             /* one per endpoint */
    nc_lsn_history hist;        /* the primary's WAL positions over time */
    unsigned rr;                /* round-robin cursor among equally busy standbys */
};

/* ---- counting ----------------------------------------------------------------- */

/* The endpoint count now: slots below it are filled before it grows
 * (release), so a reader that sees i < n sees slot i whole (acquire). */
static int count(nc_route *r)
{
    return __atomic_load_n(&r->n, __ATOMIC_ACQUIRE);
}

static void route_destroy(nc_route *r)
{
    for (int i = 0; i < r->n; i++) {
        nc_prober_free(r->probers[i]);
        nc_pool_unref(r->pools[i]);
    }
    free(r->probers);
    free(r->pools);
    free(r->eps);
    free(r->rd);
    pthread_mutex_destroy(&r->grow_mu);
    pthread_mutex_destroy(&r->rmu);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void route_ref(nc_route *r)
{
    pthread_mutex_lock(&r->mu);
    r->refs++;
    pthread_mutex_unlock(&r->mu);
}

static void route_unref(nc_route *r)
{
    pthread_mutex_lock(&r->mu);
    int last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last)
        route_destroy(r);
}

nc_monitor *nc_route_enter(nc_route *r)
{
    pthread_mutex_lock(&r->mu);
    nc_monitor *m = r->closed ? NULL : r->mon;
    if (m) {
        r->users++;
        r->refs++;
    }
    pthread_mutex_unlock(&r->mu);
    return m;
}

void nc_route_leave(nc_route *r)
{
    pthread_mutex_lock(&r->mu);
    int free_monitor = --r->users == 0 && r->freeing;
    if (free_monitor)
        r->freeing = 0;
    pthread_mutex_unlock(&r->mu);
    if (free_monitor)
        nc_monitor_free(r->mon);   /* its memory, when it goes, drops the monitor's reference */
    route_unref(r);
}

/* ---- what the monitor calls (monitor threads or a caller's, no GIL) ------------ */

static int route_probe(void *arg, int i, double deadline, double *latency, int *role, char *errbuf,
                       size_t errlen)
{
    nc_route *r = arg;
    nc_probe_result res;
    /* A primary's position is dated when the probe started: whatever
     * completed before then is at or below it (read your writes). */
    double started = nc_now();
    int rc = nc_prober_probe(r->probers[i], deadline, &res);
    *latency = res.latency;
    *role = res.role;
    if (rc < 0) {
        nc_text_set(errbuf, errlen, "%s", res.error);
    }
    /* The primary's position only from the current endpoint (two writable
     * ones in a split brain would make one history jump back and forth). */
    int cur = rc == 0 && res.role == NC_ROLE_WRITABLE && res.have_lsn ? nc_monitor_current(r->mon, NULL) : -2;
    double now = nc_now();
    pthread_mutex_lock(&r->rmu);
    route_read *d = &r->rd[i];
    d->probed = 1;
    d->up = rc == 0;
    d->standby = rc == 0 && res.role == NC_ROLE_READ_ONLY;
    d->have_lsn = rc == 0 && res.have_lsn;
    if (d->have_lsn) {
        d->lsn = res.lsn;
        d->lsn_at = now;
    }
    if (cur == i || cur == -1)
        nc_lsn_history_add(&r->hist, started, res.lsn);
    pthread_mutex_unlock(&r->rmu);
    return rc;
}

static void route_switched(void *arg, int from, int to)
{
    nc_route *r = arg;
    /* The abandoned endpoint's idle connections go now, lent ones when they
     * come back: no borrower gets one of them again. */
    if (from >= 0 && from < count(r) && from != to)
        nc_pool_drain(r->pools[from], NC_DRAIN_RETIRE);
}

static void route_monitor_gone(void *arg)
{
    route_unref(arg);
}

/* ---- what the pools report (the statement path, no GIL) ------------------------ */

static void mark_down(nc_route *r, int i)
{
    pthread_mutex_lock(&r->rmu);
    r->rd[i].up = 0;
    pthread_mutex_unlock(&r->rmu);
}

static void ep_failure(void *arg, int failure, const nc_error *err)
{
    route_ep *ep = arg;
    nc_monitor *m = nc_route_enter(ep->r);
    if (!m)
        return;
    int kind = failure == NC_FAIL_READ_ONLY ? NC_FO_PASSIVE_READ_ONLY : NC_FO_PASSIVE_LOST;
    if (kind == NC_FO_PASSIVE_LOST)
        mark_down(ep->r, ep->i);   /* no read goes there before a probe says it is back */
    /* May decide and switch right here when no monitor thread runs (within
     * the monitor's own bounds: the observer knows no caller's deadline). */
    nc_monitor_passive(m, ep->i, kind, err->message, NC_NO_DEADLINE);
    nc_route_leave(ep->r);
}

static void ep_ref(void *arg) { route_ref(((route_ep *)arg)->r); }
static void ep_unref(void *arg) { route_unref(((route_ep *)arg)->r); }

static const nc_pool_observer ep_observer = {ep_failure, ep_ref, ep_unref};

/* ---- the API --------------------------------------------------------------------- */

nc_route *nc_route_new(nc_pool *const *pools, int n, const int *priority, int primary,
                       const nc_monitor_config *cfg, nc_error *err)
{
    if (n < 1 || !pools) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "failover: no endpoints");
        return NULL;
    }
    nc_route *r = calloc(1, sizeof *r);
    if (!r || pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&r->rmu, NULL) != 0) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "cannot create a mutex");
        return NULL;
    }
    if (pthread_mutex_init(&r->grow_mu, NULL) != 0) {
        pthread_mutex_destroy(&r->rmu);
        pthread_mutex_destroy(&r->mu);
        free(r);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "cannot create a mutex");
        return NULL;
    }
    r->refs = 1;
    nc_read_config_defaults(&r->rcfg);
    nc_lsn_history_clear(&r->hist);
    r->check_interval = cfg ? cfg->health_check_interval : 1.0;
    /* Room for endpoints that join later, allocated now: the arrays never
     * move, so a borrow reads them without a lock or a reference. */
    r->cap = n > NC_ROUTE_CAPACITY ? n : NC_ROUTE_CAPACITY;
    r->pools = calloc((size_t)r->cap, sizeof *r->pools);
    r->probers = calloc((size_t)r->cap, sizeof *r->probers);
    r->eps = calloc((size_t)r->cap, sizeof *r->eps);
    r->rd = calloc((size_t)r->cap, sizeof *r->rd);
    if (!r->pools || !r->probers || !r->eps || !r->rd) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        route_destroy(r);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        r->probers[i] = nc_prober_new(pools[i], 0, err);
        if (!r->probers[i]) {
            route_destroy(r);   /* r->n covers the probers and pools made so far */
            return NULL;
        }
        nc_pool_ref(pools[i]);
        r->pools[i] = pools[i];
        r->eps[i] = (route_ep){r, i};
        r->n = i + 1;
    }
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < i; k++) {
            if (pools[k] == pools[i]) {
                nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "failover: endpoints %d and %d share a pool", k, i);
                route_destroy(r);
                return NULL;
            }
        }
    }
    r->mon = nc_monitor_new(cfg, n, priority, primary, route_probe, r, route_switched, r, err);
    if (!r->mon) {
        route_destroy(r);
        return NULL;
    }
    r->refs++;   /* the monitor's, dropped when its memory goes */
    nc_monitor_on_free(r->mon, route_monitor_gone, r);
    for (int i = 0; i < n; i++) {
        if (nc_pool_set_observer(r->pools[i], &ep_observer, &r->eps[i]) < 0) {
            /* Another route watches this pool: a pool has one route. */
            for (int k = 0; k < i; k++)
                nc_pool_set_observer(r->pools[k], NULL, NULL);
            nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "failover: endpoint %d's pool already has a route", i);
            nc_monitor_free(r->mon);   /* drops the monitor's reference (no thread runs yet) */
            route_unref(r);
            return NULL;
        }
    }
    return r;
}

nc_pool *nc_route_pool(nc_route *r, int i)
{
    return i >= 0 && i < count(r) ? r->pools[i] : NULL;
}

int nc_route_count(nc_route *r)
{
    return count(r);
}

int nc_route_capacity(nc_route *r)
{
    return r->cap;
}

int nc_route_add(nc_route *r, nc_pool *pool, int priority, nc_error *err)
{
    if (!pool || priority < 1) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "failover: an added endpoint needs a pool and a priority >= 1");
        return -1;
    }
    pthread_mutex_lock(&r->grow_mu);
    /* The monitor is used under nc_route_enter: a close may free it. */
    nc_monitor *m = nc_route_enter(r);
    int i = r->n;
    if (!m) {
        nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "the failover manager is shut down");
        goto fail;
    }
    if (i >= r->cap || i >= NC_MONITOR_ENDPOINTS_MAX) {
        nc_error_set(err, NC_E_FO_CAPACITY, NC_K_OPERATIONAL,
                     "failover: no room for another endpoint (%d endpoints, removed ones included, of %d)", i,
                     r->cap < NC_MONITOR_ENDPOINTS_MAX ? r->cap : NC_MONITOR_ENDPOINTS_MAX);
        goto fail;
    }
    for (int k = 0; k < i; k++) {
        if (r->pools[k] == pool) {
            nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "failover: endpoint %d already has this pool", k);
            goto fail;
        }
    }
    /* All or nothing: everything the add needs is allocated before
     * anything shows it (the prober here, the monitor's room next), so an
     * out-of-memory leaves the route and the monitor with the same count
     * and the pool without a route (the caller may offer it again). */
    nc_prober *pr = nc_prober_new(pool, 0, err);
    if (!pr)
        goto fail;
    if (nc_monitor_reserve(m, i + 1, err) < 0) {
        nc_prober_free(pr);
        goto fail;
    }
    /* Filled before the pool can see it: a connection lent from it already
     * reports through the observer once set (the pool's lock orders it). */
    r->eps[i] = (route_ep){r, i};
    if (nc_pool_set_observer(pool, &ep_observer, &r->eps[i]) < 0) {
        nc_prober_free(pr);
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "failover: the added endpoint's pool already has a route");
        goto fail;
    }
    nc_pool_ref(pool);
    r->pools[i] = pool;
    r->probers[i] = pr;
    pthread_mutex_lock(&r->rmu);
    memset(&r->rd[i], 0, sizeof r->rd[i]);
    pthread_mutex_unlock(&r->rmu);
    /* Published before the monitor knows it: the monitor's probe of i (its
     * thread starts in nc_monitor_add) finds the slot whole. */
    __atomic_store_n(&r->n, i + 1, __ATOMIC_RELEASE);
    /* Cannot fail: room reserved, the limit checked, and the monitor's
     * count follows ours (both grow only here, under grow_mu).  Were it to
     * fail anyway, the slot stays a tombstone: nothing lends from it. */
    if (nc_monitor_add(m, priority, err) != i) {
        pthread_mutex_lock(&r->rmu);
        r->rd[i].removed = 1;
        pthread_mutex_unlock(&r->rmu);
        nc_route_leave(r);
        pthread_mutex_unlock(&r->grow_mu);
        return -1;
    }
    nc_route_leave(r);
    pthread_mutex_unlock(&r->grow_mu);
    return i;
fail:
    if (m)
        nc_route_leave(r);
    pthread_mutex_unlock(&r->grow_mu);
    return -1;
}

int nc_route_set_removed(nc_route *r, int i, int removed)
{
    pthread_mutex_lock(&r->grow_mu);
    nc_monitor *m = nc_route_enter(r);
    if (!m || i < 0 || i >= r->n) {
        if (m)
            nc_route_leave(r);
        pthread_mutex_unlock(&r->grow_mu);
        return -1;
    }
    pthread_mutex_lock(&r->rmu);
    int was = r->rd[i].removed;
    r->rd[i].removed = removed ? 1 : 0;
    if (removed) {
        r->rd[i].up = 0;   /* no read goes there from now on */
    } else if (was) {
        route_read keep = r->rd[i];
        memset(&r->rd[i], 0, sizeof r->rd[i]);   /* known again from its next probe */
        r->rd[i].reads = keep.reads;
        r->rd[i].writes = keep.writes;
    }
    pthread_mutex_unlock(&r->rmu);
    nc_monitor_set_removed(m, i, removed);
    nc_route_leave(r);
    /* Its idle connections go now, lent ones when they come back; and the
     * probe connection (its probes have stopped). */
    if (removed && !was) {
        nc_pool_drain(r->pools[i], NC_DRAIN_RETIRE | NC_DRAIN_HOLD);
        nc_prober_idle(r->probers[i]);
    }
    pthread_mutex_unlock(&r->grow_mu);
    return 0;
}

int nc_route_removed(nc_route *r, int i)
{
    if (i < 0 || i >= count(r))
        return 0;
    pthread_mutex_lock(&r->rmu);
    int v = r->rd[i].removed;
    pthread_mutex_unlock(&r->rmu);
    return v;
}

/* ---- borrowing ------------------------------------------------------------------------ */

void nc_read_config_defaults(nc_read_config *cfg)
{
    cfg->failover_wait = 0.0;
    cfg->max_replica_lag_bytes = 16.0 * 1024 * 1024;
    cfg->max_replica_lag_seconds = 30.0;
}

int nc_route_configure_reads(nc_route *r, const nc_read_config *cfg, nc_error *err)
{
    /* Written so that NaN fails too. */
    if (!(cfg->failover_wait >= 0) || !(cfg->failover_wait < 1e9)) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "failover_wait must be a number of seconds from 0, not %g",
                     cfg->failover_wait);
        return -1;
    }
    if (!(cfg->max_replica_lag_bytes > 0) || !(cfg->max_replica_lag_seconds > 0)) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE,
                     "max_replica_lag_bytes and max_replica_lag_seconds must be > 0, not %g and %g",
                     cfg->max_replica_lag_bytes, cfg->max_replica_lag_seconds);
        return -1;
    }
    pthread_mutex_lock(&r->rmu);
    r->rcfg = *cfg;
    pthread_mutex_unlock(&r->rmu);
    return 0;
}

/* Whether a connection just lent from endpoint i may be handed out, and
 * if so count it (one lock on the borrow path): not when i was removed
 * meanwhile (the borrow chose i from an earlier look).  Why this check
 * suffices: nc_route_set_removed marks removed under rmu before it drains
 * the pool, and the lend marked the slot lent (under the pool's lock)
 * before this reads removed under rmu.  So either this sees removed (the
 * caller closes the connection), or the drain comes after the slot was
 * lent and closes it when it comes back: nothing lent after a removal is
 * ever parked idle in the removed pool. */
static int accept_lend(nc_route *r, int i, int read)
{
    pthread_mutex_lock(&r->rmu);
    int ok = !r->rd[i].removed;
    if (ok && read)
        r->rd[i].reads++;
    else if (ok)
        r->rd[i].writes++;
    pthread_mutex_unlock(&r->rmu);
    return ok;
}

/* Wait, before until, for the monitor to record a change after event
 * `seen` (a switch, a resume, an outage).  Without monitor threads nobody
 * else looks: probe again (nc_monitor_recheck) once per
 * health_check_interval.  0 on a change or at until, -1 with err on
 * Ctrl-C. */
static int wait_change(nc_route *r, nc_monitor *m, uint64_t seen, double until, nc_error *err)
{
    double next_recheck = 0;
    for (;;) {
        double now = nc_now();
        if (now >= until)
            return 0;
        if (nc_stop_check()) {
            nc_error_set(err, NC_E_INTERRUPTED, NC_K_OPERATIONAL, "interrupted while waiting for a primary");
            return -1;
        }
        if (!nc_monitor_running(m) && now >= next_recheck) {
            next_recheck = now + r->check_interval;
            nc_stop_saved stop = nc_stop_pause();   /* probes: never cut short by Ctrl-C */
            int usable = nc_monitor_recheck(m, until);
            nc_stop_resume(stop);
            if (usable == 1 || nc_monitor_last_event(m) > seen)
                return 0;
            continue;
        }
        double slice = nc_stop_slice(until);
        if (!nc_monitor_running(m) && slice > next_recheck)
            slice = next_recheck;
        nc_event ev;
        if (nc_monitor_wait_events(m, seen, &ev, 1, slice - nc_now()) > 0)
            return 0;
    }
}

/* The borrow of the current (writable) endpoint: nc_route_lend's body (read:
 * counted as a read, for a read target that fell back to the primary). */
static int lend_primary(nc_route *r, nc_monitor *m, double timeout, int read, int *endpoint, nc_conn **out,
                        uint64_t *lease, nc_error *err)
{
    /* One deadline for the whole borrow, and every probe it causes (the
     * monitor's own bounds, health_check_timeout and failover_timeout, may
     * be far longer than the caller is prepared to wait). */
    double start = nc_now();
    if (timeout < 0) {
        int cur = nc_monitor_current(m, NULL);
        timeout = nc_pool_config_of(r->pools[cur >= 0 ? cur : 0])->acquire_timeout;
    }
    double deadline = start + timeout;
    pthread_mutex_lock(&r->rmu);
    double wait = r->rcfg.failover_wait;
    pthread_mutex_unlock(&r->rmu);
    /* failover_wait: how long this borrow may wait for a writable endpoint
     * to appear (within its own deadline). */
    double wait_until = start + wait < deadline ? start + wait : deadline;
    int resumed = 0, rc, lost = 0;
    for (int attempt = 0;; attempt++) {
        uint64_t gen;
        uint64_t seen = nc_monitor_last_event(m);
        int idx = nc_monitor_current(m, &gen);
        if (idx < 0 && !resumed && !nc_monitor_running(m)) {
            /* Nobody is watching: look once whether an endpoint came back
             * (the automatic decision, so MANUAL mode only resumes on the
             * same endpoint). */
            resumed = 1;
            nc_stop_saved stop = nc_stop_pause();   /* probes: never cut short by Ctrl-C */
            nc_monitor_recheck(m, deadline);
            nc_stop_resume(stop);
            idx = nc_monitor_current(m, &gen);
        }
        if (idx < 0 && nc_now() < wait_until) {
            /* No writable endpoint: wait for the monitor to find one. */
            if (wait_change(r, m, seen, wait_until, err) < 0) {
                rc = -1;
                break;
            }
            attempt = -1;   /* a new endpoint gets the full set of tries */
            continue;
        }
        if (idx < 0) {
            nc_error_set(err, NC_E_FO_NO_ENDPOINT, NC_K_OPERATIONAL,
                         "no usable database endpoint: every endpoint failed its health check or is "
                         "read-only; service resumes when one comes back%s",
                         wait > 0 ? " (waited failover_wait for one)" : "");
            rc = -1;
            break;
        }
        nc_pool *p = r->pools[idx];
        nc_conn *c;
        uint64_t l;
        double left = deadline - nc_now();
        if (left < 0)
            left = 0;
        /* The pool's fast path first (an idle connection seen alive in the
         * last few ms: no syscall), as a plain pool's borrow does. */
        int got = nc_pool_try_acquire(p, &c, &l, err);
        if (got == 0 && timeout > 0 && left <= 0) {
            /* The probes used up the borrow's time.  Not nc_pool_acquire(0):
             * a zero timeout there means "do not queue" and may still spend
             * connect_timeout opening a connection, which only a caller who
             * asked for timeout=0 gets, as from a plain pool. */
            nc_error_set(err, NC_E_POOL_TIMEOUT, NC_K_OPERATIONAL,
                         "no connection available within the borrow's deadline (spent checking endpoints)");
            rc = -1;
            break;
        }
        if (got == 0) {
            /* With failover_wait, a connect to a current endpoint that is
             * going away should not use up the whole wait: at most what is
             * left of it. */
            got = nc_pool_acquire(p, left, &c, &l, err) == 0 ? 1 : -1;
        }
        if (got < 0) {
            /* Could not even connect: that is a failure of the endpoint (the
             * monitor may switch right away); then try the endpoint it chose
             * instead. */
            if (nc_error_failure(err->code, err->sqlstate) == NC_FAIL_LOST &&
                (attempt < count(r) || nc_now() < wait_until)) {
                uint64_t before = nc_monitor_generation(m);
                nc_stop_saved stop = nc_stop_pause();   /* it may probe here: see nc_stop.h */
                nc_monitor_passive(m, idx, NC_FO_PASSIVE_LOST, err->message, deadline);
                nc_stop_resume(stop);
                if (nc_monitor_generation(m) != before || nc_monitor_current(m, NULL) != idx)
                    continue;
                if (nc_now() < wait_until && lost++ < 1000) {
                    /* Not switched (yet): within failover_wait, wait for
                     * the monitor's verdict instead of failing now. */
                    nc_error keep = *err;
                    if (wait_change(r, m, seen, wait_until, err) < 0) {
                        rc = -1;
                        break;
                    }
                    *err = keep;
                    continue;
                }
            }
            rc = -1;
            break;
        }
        if (nc_monitor_generation(m) == gen && accept_lend(r, idx, read)) {
            *endpoint = idx;
            *out = c;
            *lease = l;
            rc = 0;
            break;
        }
        if (attempt >= 8) {
            /* Never hand out a connection of an abandoned endpoint, not
             * even when the endpoints flap faster than a borrow. */
            nc_pool_release(p, c, 1);
            nc_error_set(err, NC_E_FO_NO_ENDPOINT, NC_K_OPERATIONAL,
                         "no stable database endpoint: the current endpoint changed %d times during one borrow",
                         attempt + 1);
            rc = -1;
            break;
        }
        /* The endpoint changed (or left the topology) while we borrowed:
         * never hand out a connection of the abandoned one.  A removed one
         * stops being current (its health fails), so the next look finds
         * another endpoint, none (failover_wait), or fails. */
        nc_pool_release(p, c, 1);
    }
    return rc;
}

/* Fill eps (n entries) with what read routing knows now, and the limits
 * (with read your writes for a write completed at written_at, > 0). */
static int read_view(nc_route *r, double written_at, nc_read_ep *eps, nc_read_limits *lim)
{
    int lent[NC_MONITOR_ENDPOINTS_MAX];
    int n = count(r);
    for (int i = 0; i < n; i++)
        lent[i] = nc_pool_lent(r->pools[i]);   /* the pool's lock, not under ours */
    double now = nc_now();   /* a stalled replica falls behind with the clock */
    pthread_mutex_lock(&r->rmu);
    for (int i = 0; i < n; i++) {
        const route_read *d = &r->rd[i];
        eps[i].up = d->up && !d->removed;
        eps[i].standby = d->standby;
        eps[i].lag_bytes = d->standby && d->have_lsn ? nc_lag_bytes(&r->hist, d->lsn) : NAN;
        eps[i].lag_seconds = d->standby && d->have_lsn ? nc_lag_seconds(&r->hist, d->lsn, now) : NAN;
        eps[i].in_flight = lent[i];
        eps[i].have_replay = d->standby && d->have_lsn;
        eps[i].replay = d->lsn;
    }
    lim->max_lag_bytes = r->rcfg.max_replica_lag_bytes;
    lim->max_lag_seconds = r->rcfg.max_replica_lag_seconds;
    lim->need_lsn = 0;
    lim->min_lsn = 0;
    if (written_at > 0) {
        /* Read your writes: no standby qualifies before the primary was
         * seen after the write. */
        lim->need_lsn = 1;
        if (nc_lsn_history_seen_after(&r->hist, written_at, &lim->min_lsn) < 0)
            lim->min_lsn = UINT64_MAX;
    }
    pthread_mutex_unlock(&r->rmu);
    return n;
}

static int lend_read(nc_route *r, nc_monitor *m, int target, double written_at, double timeout, int *endpoint,
                     nc_conn **out, uint64_t *lease, nc_error *err)
{
    double start = nc_now();
    if (timeout < 0)
        timeout = nc_pool_config_of(r->pools[0])->acquire_timeout;
    double deadline = start + timeout;
    if (!nc_monitor_running(m)) {
        /* Nobody probes: endpoints never looked at are probed once here
         * (their role and position), within the borrow's deadline. */
        pthread_mutex_lock(&r->rmu);
        int unknown = 0, n = count(r);
        for (int i = 0; i < n; i++)
            unknown |= !r->rd[i].probed && !r->rd[i].removed;
        pthread_mutex_unlock(&r->rmu);
        if (unknown) {
            nc_stop_saved stop = nc_stop_pause();
            nc_monitor_recheck(m, deadline);
            nc_stop_resume(stop);
        }
    }
    nc_read_ep eps[NC_MONITOR_ENDPOINTS_MAX];
    for (int attempt = 0; attempt <= count(r); attempt++) {
        nc_read_limits lim;
        int n = read_view(r, written_at, eps, &lim);
        int primary = nc_monitor_current(m, NULL);
        pthread_mutex_lock(&r->rmu);
        int idx = nc_read_choose(target, eps, n, primary, &lim, &r->rr);
        int fresh = idx < 0 && lim.need_lsn;
        if (fresh) {
            /* None has the session's write yet: is that the only reason? */
            unsigned rr = r->rr;
            lim.need_lsn = 0;
            fresh = nc_read_choose(target, eps, n, primary, &lim, &rr) >= 0;
        }
        pthread_mutex_unlock(&r->rmu);
        if (fresh && target == NC_TARGET_STANDBY)
            idx = -1, target = NC_TARGET_PREFER_STANDBY;   /* read your writes: the primary */
        if (idx < 0 && target == NC_TARGET_STANDBY) {
            nc_error_set(err, NC_E_FO_NO_STANDBY, NC_K_OPERATIONAL,
                         "no standby can serve the read: none is up within max_replica_lag_bytes (%.0f) and "
                         "max_replica_lag_seconds (%g)",
                         lim.max_lag_bytes, lim.max_lag_seconds);
            return -1;
        }
        if (idx < 0 || idx == primary) {
            double left = deadline - nc_now();
            return lend_primary(r, m, left > 0 ? left : 0, 1, endpoint, out, lease, err);
        }
        nc_pool *p = r->pools[idx];
        nc_conn *c;
        uint64_t l;
        double left = deadline - nc_now();
        int got = nc_pool_try_acquire(p, &c, &l, err);
        if (got == 0)
            got = nc_pool_acquire(p, left > 0 ? left : 0, &c, &l, err) == 0 ? 1 : -1;
        if (got > 0 && !accept_lend(r, idx, 1)) {
            /* Removed after read_view looked: closed, not handed out (and
             * not parked idle in a pool nothing lends from); choose again. */
            nc_pool_release(p, c, 1);
            nc_error_set(err, NC_E_FO_NO_STANDBY, NC_K_OPERATIONAL,
                         "the standby chosen for the read (endpoint %d) left the topology during the borrow", idx);
            continue;
        }
        if (got > 0) {
            *endpoint = idx;
            *out = c;
            *lease = l;
            return 0;
        }
        if (nc_error_failure(err->code, err->sqlstate) != NC_FAIL_LOST)
            return -1;
        /* The standby cannot be reached: no reads there until a probe says
         * it is back; the monitor hears of it; choose again. */
        mark_down(r, idx);
        nc_stop_saved stop = nc_stop_pause();
        nc_monitor_passive(m, idx, NC_FO_PASSIVE_LOST, err->message, deadline);
        nc_stop_resume(stop);
        if (nc_now() >= deadline)
            return -1;
    }
    return -1;
}

int nc_route_lend_to(nc_route *r, int target, double timeout, int *endpoint, nc_conn **out, uint64_t *lease,
                     nc_error *err)
{
    return nc_route_lend_after(r, target, 0, timeout, endpoint, out, lease, err);
}

int nc_route_lend_after(nc_route *r, int target, double written_at, double timeout, int *endpoint, nc_conn **out,
                        uint64_t *lease, nc_error *err)
{
    if (target < 0 || target >= NC_TARGET_COUNT) {
        nc_error_set(err, NC_E_FO_BAD_TARGET, NC_K_INTERFACE, "unknown borrow target %d", target);
        return -1;
    }
    nc_monitor *m = nc_route_enter(r);
    if (!m) {
        nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "the failover manager is shut down");
        return -1;
    }
    int rc = target == NC_TARGET_PRIMARY ? lend_primary(r, m, timeout, 0, endpoint, out, lease, err)
                                         : lend_read(r, m, target, written_at, timeout, endpoint, out, lease, err);
    nc_route_leave(r);
    return rc;
}

int nc_route_lend(nc_route *r, double timeout, int *endpoint, nc_conn **out, uint64_t *lease, nc_error *err)
{
    return nc_route_lend_to(r, NC_TARGET_PRIMARY, timeout, endpoint, out, lease, err);
}

int nc_route_read_status(nc_route *r, nc_route_ep_status *out)
{
    nc_read_ep eps[NC_MONITOR_ENDPOINTS_MAX];
    nc_read_limits lim;
    int n = read_view(r, 0, eps, &lim);
    pthread_mutex_lock(&r->rmu);
    for (int i = 0; i < n; i++) {
        const route_read *d = &r->rd[i];
        nc_route_ep_status *o = &out[i];
        o->removed = d->removed;
        o->probed = d->probed;
        o->up = d->up;
        o->standby = d->standby;
        o->have_lsn = d->have_lsn;
        o->lsn = d->lsn;
        o->lag_bytes = eps[i].lag_bytes;
        o->lag_seconds = eps[i].lag_seconds;
        o->eligible = nc_read_eligible(&eps[i], &lim);
        o->in_flight = eps[i].in_flight;
        o->reads = d->reads;
        o->writes = d->writes;
    }
    pthread_mutex_unlock(&r->rmu);
    return n;
}

void nc_route_close(nc_route *r)
{
    nc_route_close_within(r, -1);
}

void nc_route_close_within(nc_route *r, double max_wait)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    int first = !r->closed;
    r->closed = 1;
    pthread_mutex_unlock(&r->mu);
    if (!first)
        return;
    pthread_mutex_lock(&r->grow_mu);   /* an add in progress finishes first; later ones fail */
    int n = r->n;
    pthread_mutex_unlock(&r->grow_mu);
    for (int i = 0; i < n; i++)
        nc_pool_set_observer(r->pools[i], NULL, NULL);
    /* Safe while calls are inside it (bounded); a start still inside one
     * fails from here on, so no thread outlives the close. */
    nc_monitor_close_within(r->mon, max_wait);
    /* The probe connections go now (a probe still running closes its own as
     * it ends); the probers stay until the route's memory goes. */
    for (int i = 0; i < n; i++)
        nc_prober_close(r->probers[i]);
    pthread_mutex_lock(&r->mu);
    int now = r->users == 0;
    if (!now)
        r->freeing = 1;   /* the last user frees it */
    pthread_mutex_unlock(&r->mu);
    if (now)
        nc_monitor_free(r->mon);
}

void nc_route_free(nc_route *r)
{
    if (!r)
        return;
    nc_route_close(r);
    route_unref(r);
}

void nc_route_ref(nc_route *r)
{
    route_ref(r);
}

void nc_route_unref(nc_route *r)
{
    route_unref(r);
}
