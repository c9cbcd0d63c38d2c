/* nc_pool.c - borrowing and returning connections.
 *
 * One mutex guards the slots, the idle stack and the FIFO of waiters.  No
 * backend call (connect, ping, rollback, close) is made with the mutex held:
 * a slot being worked on is marked OPENING or CHECKING, which reserves it.
 * A connection coming back, or a slot freed, is handed straight to the oldest
 * waiter so waiters are served first come, first served and a late arrival
 * cannot overtake them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nc_pool_internal.h"
#include "nc_fork.h"
#include "nc_stop.h"
#include "nc_time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nc_pool_config_defaults(nc_pool_config *c)
{
    memset(c, 0, sizeof *c);
    c->max_connections = 20;
    c->min_connections = 0;
    c->acquire_timeout = 30.0;
    c->retry_attempts = 3;
    c->retry_backoff = 0.05;
    c->validate = 1;
    c->validation_interval = 30.0;
    c->validation_timeout = 5.0;
    c->connect_timeout = 10.0;
    c->idle_timeout = 600.0;
    c->max_lifetime = 3600.0;
    c->lifetime_jitter = 0.1;
    c->ping_after_idle = 1.0;
    c->leak_timeout = 0.0;
}

static void lock(nc_pool *p) { pthread_mutex_lock(&p->mu); }

/* A borrow begins (under mu): leak_timeout counts from here. */
static void mark_lent(nc_pool *p, nc_conn *c)
{
    /* Whatever was owed has been read (by the check, or by the fast path's
     * settle): a reply owed after the next return counts from its own time. */
    c->owed_since = 0;
    if (p->cfg.leak_timeout > 0)
        c->lent_at = nc_now();
}
static void unlock(nc_pool *p) { pthread_mutex_unlock(&p->mu); }

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

nc_pool *nc_pool_new(const nc_pool_config *cfg, const nc_backend_ops *ops, void *ctx, nc_error *err)
{
    if (cfg->max_connections < 1 || cfg->min_connections < 0 ||
        cfg->min_connections > cfg->max_connections || cfg->retry_attempts < 1 || !(cfg->leak_timeout >= 0) ||
        !(cfg->validation_interval > 0) || !(cfg->validation_timeout > 0) || !(cfg->connect_timeout > 0)) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "invalid pool configuration");
        if (ops->ctx_free)
            ops->ctx_free(ctx);
        return NULL;
    }
    nc_pool *p = calloc(1, sizeof *p);
    nc_conn *slots = calloc((size_t)cfg->max_connections, sizeof *slots);
    if (!p || !slots) {
        free(p);
        free(slots);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory creating the pool");
        if (ops->ctx_free)
            ops->ctx_free(ctx);
        return NULL;
    }
    p->cfg = *cfg;
    p->ops = ops;
    p->ctx = ctx;
    p->slots = slots;
    p->idle_top = -1;
    p->rng = (unsigned)((uintptr_t)p ^ (unsigned)(nc_now() * 1e6));
    p->refs = 1;
    p->fork_gen = nc_fork_generation();
    for (int i = 0; i < cfg->max_connections; i++) {
        slots[i].index = i;
        slots[i].next_idle = -1;
    }
    pthread_mutex_init(&p->mu, NULL);
    int changed_ok = cond_init_monotonic(&p->changed) == 0;
    if (!changed_ok || cond_init_monotonic(&p->janitor_cv)) {
        /* Undo only what was made (pool_destroy would destroy both). */
        if (changed_ok)
            pthread_cond_destroy(&p->changed);
        pthread_mutex_destroy(&p->mu);
        free(slots);
        free(p);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "cannot create condition variables");
        if (ops->ctx_free)
            ops->ctx_free(ctx);
        return NULL;
    }
    if (nc_janitor_start(p, err) < 0) {
        nc_pool_free(p);
        return NULL;
    }
    return p;
}

int nc_pool_total_locked(nc_pool *p)
{
    return p->nidle + p->nlent + p->nbusy;
}

/* ---- slots ------------------------------------------------------------- */

nc_conn *nc_pool_reserve_locked(nc_pool *p)
{
    if (nc_pool_total_locked(p) >= p->cfg.max_connections)
        return NULL;
    for (int i = 0; i < p->cfg.max_connections; i++) {
        nc_conn *c = &p->slots[i];
        if (c->state == NC_SLOT_EMPTY) {
            c->state = NC_SLOT_OPENING;
            c->epoch = p->retire_epoch;
            p->nbusy++;
            return c;
        }
    }
    return NULL;
}

static double lifetime_for(nc_pool *p)
{
    if (p->cfg.max_lifetime <= 0)
        return INFINITY;
    /* Take up to jitter of the lifetime off at random, so that connections
     * opened together do not all expire in the same janitor round. */
    double r = (double)rand_r(&p->rng) / (double)RAND_MAX;
    return p->cfg.max_lifetime * (1.0 - p->cfg.lifetime_jitter * r);
}

void nc_pool_slot_fill_locked(nc_pool *p, nc_conn *c, void *raw)
{
    double now = nc_now();
    c->raw = raw;
    c->serial = ++p->serial;
    c->created = now;
    c->expires = now + lifetime_for(p);
    c->last_used = now;
    c->last_checked = now;
    c->last_polled = now;
    c->owed_since = 0;
    p->opened++;
}

static void dequeue_waiter_locked(nc_pool *p, nc_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        p->wait_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        p->wait_tail = w->prev;
    w->next = w->prev = NULL;
    p->nwaiting--;
}

void nc_pool_put_idle_locked(nc_pool *p, nc_conn *c)
{
    /* c is OPENING, CHECKING or LENT here; it leaves that count. */
    if (c->state == NC_SLOT_LENT)
        p->nlent--;
    else
        p->nbusy--;
    if (p->wait_head && !p->closed) {
        nc_waiter *w = p->wait_head;
        dequeue_waiter_locked(p, w);
        c->state = NC_SLOT_LENT;
        c->lease++;
        mark_lent(p, c);
        p->nlent++;
        w->conn = c;
        w->result = NC_WAIT_GOT;
        pthread_cond_signal(&w->cv);
        return;
    }
    c->state = NC_SLOT_IDLE;
    c->next_idle = p->idle_top;
    p->idle_top = c->index;
    p->nidle++;
    pthread_cond_broadcast(&p->changed);
}

void nc_pool_slot_free_locked(nc_pool *p, nc_conn *c)
{
    if (c->state == NC_SLOT_LENT)
        p->nlent--;
    else if (c->state == NC_SLOT_IDLE)
        p->nidle--;   /* callers take it off the idle stack first */
    else if (c->state != NC_SLOT_EMPTY)
        p->nbusy--;
    c->state = NC_SLOT_EMPTY;
    c->raw = NULL;
    c->lease++;
    pthread_cond_broadcast(&p->changed);
    if (p->closed)
        return;
    if (p->wait_head) {
        /* A place became free: the oldest waiter may open a connection. */
        nc_waiter *w = p->wait_head;
        dequeue_waiter_locked(p, w);
        c->state = NC_SLOT_OPENING;
        c->epoch = p->retire_epoch;
        p->nbusy++;
        w->conn = c;
        w->result = NC_WAIT_MAY_OPEN;
        pthread_cond_signal(&w->cv);
    } else if (nc_pool_total_locked(p) < p->cfg.min_connections && p->janitor_started && !p->refill_held) {
        p->janitor_kick = 1;
        pthread_cond_signal(&p->janitor_cv);
    }
}

int nc_pool_take_idle_locked(nc_pool *p, nc_conn *c)
{
    int *link = &p->idle_top;
    while (*link >= 0) {
        if (*link == c->index) {
            *link = c->next_idle;
            c->next_idle = -1;
            c->state = NC_SLOT_CHECKING;
            p->nidle--;
            p->nbusy++;
            return 1;
        }
        link = &p->slots[*link].next_idle;
    }
    return 0;
}

static nc_conn *pop_idle_locked(nc_pool *p)
{
    if (p->idle_top < 0)
        return NULL;
    nc_conn *c = &p->slots[p->idle_top];
    nc_pool_take_idle_locked(p, c);
    return c;
}

/* Close c's raw connection (no lock held) and free its slot. */
static void close_slot(nc_pool *p, nc_conn *c)
{
    void *raw = c->raw;
    if (raw)
        p->ops->close(p->ctx, raw);
    lock(p);
    if (raw)
        p->closed_count++;
    nc_pool_slot_free_locked(p, c);
    unlock(p);
}

/* ---- opening ----------------------------------------------------------- */

/* One wait on p->changed (mu held), at most until `until`, in slices when
 * the thread has a stop check (Ctrl-C; asked without the mutex, it may run
 * a signal handler).  WAIT_AGAIN: woken, or a slice passed: look at your
 * condition again; WAIT_DONE: `until` passed, or the stop check said stop. */
enum { WAIT_AGAIN = 0, WAIT_DONE = 1 };
static int wait_changed_locked(nc_pool *p, double until)
{
    double slice = nc_stop_slice(until);
    if (isinf(slice)) {
        pthread_cond_wait(&p->changed, &p->mu);
        return WAIT_AGAIN;
    }
    struct timespec ts = nc_abstime(slice);
    if (pthread_cond_timedwait(&p->changed, &p->mu, &ts) != ETIMEDOUT)
        return WAIT_AGAIN;
    if (slice >= until)
        return WAIT_DONE;
    unlock(p);
    int stop = nc_stop_check();
    lock(p);
    return stop ? WAIT_DONE : WAIT_AGAIN;
}

/* Sleep until `until`, or less if the pool is shut down or drained
 * meanwhile, or (for_idle) a connection comes back idle.  Returns 1 in the
 * last case. */
static int backoff_wait(nc_pool *p, double until, uint64_t drains, int for_idle)
{
    lock(p);
    while (!p->closed && p->drains == drains && nc_now() < until && !(for_idle && p->nidle > 0)) {
        if (wait_changed_locked(p, until) == WAIT_DONE)
            break;
    }
    int idle = for_idle && p->nidle > 0;
    unlock(p);
    return idle;
}

/* The server refused for want of a free connection slot (53300: others
 * hold all of max_connections). */
static int server_full(const nc_error *e)
{
    return !strcmp(e->sqlstate, "53300");
}

/* Waits between connects to a full server start here when retry_backoff is
 * smaller (even 0), so that a full server is never hammered. */
#define NC_FULL_BACKOFF_MIN 0.05
#define NC_BACKOFF_CAP 2.0

/* open_raw's answer to a borrower that waits on a full server when one of
 * the pool's own connections comes back idle: take that one instead. */
#define NC_OPEN_YIELDED (-1)

static void *open_raw(nc_pool *p, double deadline, int fail_code, int invalid_code, int borrow, nc_error *err);

void *nc_pool_open_raw(nc_pool *p, double deadline, int fail_code, int invalid_code, nc_error *err)
{
    return open_raw(p, deadline, fail_code, invalid_code, 0, err);
}

static void *open_raw(nc_pool *p, double deadline, int fail_code, int invalid_code, int borrow, nc_error *err)
{
    double backoff = p->cfg.retry_backoff;
    nc_error last;
    nc_error_clear(&last);
    int attempts = 0, full = 0;
    lock(p);
    uint64_t drains = p->drains;
    unlock(p);
    /* A refused or failed connect uses up one of retry_attempts.  A full
     * server does not: it is up, and a slot frees when another client
     * leaves, as in a full pool, so the borrow waits for one until its
     * deadline (capped exponential backoff between attempts) and then times
     * out (2003), never a tight loop and never a failure before the deadline. */
    for (int attempt = 1; attempt <= p->cfg.retry_attempts; attempt++) {
        if (nc_pool_is_closed(p))   /* under mu: shutdown writes it concurrently */
            break;
        if (full && nc_now() >= deadline)
            break;   /* the backoff ran to the deadline: a connect now could only time out */
        if (attempt > 1 || full) {
            /* Drained meanwhile (a failover left this endpoint): stop
             * retrying a server that has been given up on. */
            lock(p);
            int drained = p->drains != drains;
            unlock(p);
            if (drained)
                break;
        }
        attempts++;
        double now = nc_now();
        double cdl = now + p->cfg.connect_timeout;
        if (deadline < cdl)
            cdl = deadline;
        void *raw = p->ops->connect(p->ctx, cdl, &last);
        if (raw) {
            if (p->ops->ping_new && p->cfg.validate) {
                double pdl = nc_now() + p->cfg.validation_timeout;
                if (p->ops->ping(p->ctx, raw, pdl < deadline ? pdl : deadline, &last) == 0)
                    return raw;
                p->ops->close(p->ctx, raw);
                lock(p);
                p->validation_failures++;
                unlock(p);
                nc_error_set(err, invalid_code, NC_K_OPERATIONAL, "%s: %s",
                             nc_error_describe(invalid_code), last.message);
                return NULL;
            }
            return raw;
        }
        if (last.code == NC_E_INTERRUPTED) {
            *err = last;   /* Ctrl-C: not a failed attempt, and no retry */
            return NULL;
        }
        lock(p);
        p->connect_failures++;
        unlock(p);
        if (server_full(&last)) {
            if (!full)
                backoff = backoff > NC_FULL_BACKOFF_MIN ? backoff : NC_FULL_BACKOFF_MIN;
            full = 1;
            attempt--;   /* not a failed attempt: wait for a free slot */
        } else {
            full = 0;
        }
        if (attempt == p->cfg.retry_attempts || nc_now() >= deadline)
            break;
        double until = nc_now() + backoff;
        if (backoff_wait(p, until < deadline ? until : deadline, drains, borrow && full)) {
            nc_error_clear(err);
            err->code = NC_OPEN_YIELDED;
            return NULL;
        }
        backoff = backoff * 2 > NC_BACKOFF_CAP ? NC_BACKOFF_CAP : backoff * 2;
        if (nc_stop_seen()) {
            nc_error_set(err, NC_E_INTERRUPTED, NC_K_OPERATIONAL, "interrupted while opening a connection");
            return NULL;
        }
    }
    if (!last.code && nc_pool_is_closed(p)) {
        nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "pool is shut down");
        return NULL;
    }
    if (full) {
        nc_error_set(err, NC_E_POOL_TIMEOUT, NC_K_OPERATIONAL,
                     "no connection available in time: the server has no free connection slot "
                     "(%d connect attempt%s with backoff): %s",
                     attempts, attempts == 1 ? "" : "s", last.message);
        memcpy(err->sqlstate, "53300", 6);
        return NULL;
    }
    nc_error_set(err, fail_code, NC_K_OPERATIONAL, "%s after %d attempt%s: %s",
                 nc_error_describe(fail_code), attempts, attempts == 1 ? "" : "s",
                 last.code ? last.message : "no time left");
    return NULL;
}

/* Open a connection into reserved slot c and lend it: 0 ok, -1 err set,
 * 1 when the server was full and one of the pool's own connections came
 * back idle meanwhile (the slot is freed: go round and take that one). */
static int open_into(nc_pool *p, nc_conn *c, double deadline, int fail_code, int invalid_code,
                     nc_error *err)
{
    void *raw = open_raw(p, deadline, fail_code, invalid_code, 1, err);
    lock(p);
    if (!raw) {
        nc_pool_slot_free_locked(p, c);
        if (err->code == NC_E_POOL_TIMEOUT)
            p->acquire_timeouts++;   /* a full server until the borrow's deadline */
        unlock(p);
        return err->code == NC_OPEN_YIELDED ? 1 : -1;
    }
    nc_pool_slot_fill_locked(p, c, raw);
    if (p->closed) {
        unlock(p);
        close_slot(p, c);
        nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "pool is shut down");
        return -1;
    }
    c->state = NC_SLOT_LENT;
    c->lease++;
    mark_lent(p, c);
    p->nbusy--;
    p->nlent++;
    unlock(p);
    return 0;
}

/* ---- borrowing --------------------------------------------------------- */

/* A borrow ends an NC_DRAIN_HOLD: the janitor keeps min_connections again
 * (woken now when the pool is below it).  Under mu. */
static void borrow_resumes_refill_locked(nc_pool *p)
{
    p->refill_held = 0;
    if (p->janitor_started && nc_pool_total_locked(p) < p->cfg.min_connections) {
        p->janitor_kick = 1;
        pthread_cond_signal(&p->janitor_cv);
    }
}

static void record_wait_locked(nc_pool *p, double waited)
{
    p->acquires++;
    p->wait_total += waited;
    double us = waited * 1e6;
    int b = 0;
    if (us > 1.0) {
        b = (int)(4.0 * log2(us));
        if (b >= NC_HIST_BUCKETS)
            b = NC_HIST_BUCKETS - 1;
    }
    p->hist[b]++;
}

/* A connection whose socket was found quiet this recently is lent without
 * polling it again: a tight borrow loop polls once per window instead of on
 * every borrow (the poll is a syscall, half the cost of a borrow).  The
 * window is measured from the last poll, not the last use, so a connection
 * that is reused back to back is still polled every few milliseconds. */
#define NC_ALIVE_WINDOW 0.005

/* 1 when an idle connection can be lent without a round trip.  Under mu. */
static int fresh_enough(nc_pool *p, nc_conn *c, double now)
{
    if (now >= c->expires)
        return 0;
    if (p->ops->settle && p->ops->settle(p->ctx, c->raw, 0) != 0)
        return 0;   /* a reply still owed (or failed): the slow path waits for it */
    if (!p->cfg.validate)
        return 1;
    if (now - c->last_used > p->cfg.ping_after_idle)
        return 0;
    if (now - c->last_polled < NC_ALIVE_WINDOW)
        return 1;
    if (!p->ops->looks_alive(p->ctx, c->raw))
        return 0;
    c->last_polled = now;
    return 1;
}

int nc_pool_try_acquire(nc_pool *p, nc_conn **out, uint64_t *lease, nc_error *err)
{
    lock(p);
    if (p->closed) {
        unlock(p);
        nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "pool is shut down");
        return -1;
    }
    if (p->refill_held)
        borrow_resumes_refill_locked(p);
    if (p->wait_head || p->idle_top < 0) {
        unlock(p);
        return 0;
    }
    nc_conn *c = &p->slots[p->idle_top];
    /* looks_alive is a zero-timeout poll(): cheap enough under the mutex. */
    if (!fresh_enough(p, c, nc_now())) {
        unlock(p);
        return 0;
    }
    nc_pool_take_idle_locked(p, c);
    p->nbusy--;
    p->nlent++;
    c->state = NC_SLOT_LENT;
    c->lease++;
    mark_lent(p, c);
    record_wait_locked(p, 0.0);
    *out = c;
    *lease = c->lease;
    unlock(p);
    return 1;
}

static void timeout_message(nc_pool *p, double timeout, nc_error *err);

/* What check_for_borrow found. */
enum { CHECK_DEAD = 0, CHECK_OK, CHECK_CUT };

/* A check's answer (settle or ping: 0 ok, 1 not answered in time, -1
 * dead) as check_for_borrow's.  Only validation_timeout judges a
 * connection: a check the borrower's own deadline (by_caller) or Ctrl-C
 * ended proves nothing, and the connection is kept with its reply owed. */
static int judge(int rc, int by_caller)
{
    if (rc == 0)
        return CHECK_OK;
    if (rc > 0 && (by_caller || nc_stop_seen()))
        return CHECK_CUT;
    return CHECK_DEAD;
}

/* The deadline of a check that may be cut short: validation_timeout from
 * since (when the reply it waits for was asked), or the borrower's own when
 * sooner (*by_caller then). */
static double check_deadline(nc_pool *p, double since, double deadline, int *by_caller)
{
    double vdl = since + p->cfg.validation_timeout;
    *by_caller = deadline < vdl;
    return *by_caller ? deadline : vdl;
}

/* Check an idle connection taken for a borrower (state CHECKING, no lock).
 * A check cut short records in c->owed_since when its reply was asked for:
 * the reply is owed from then, whoever waits for it next, so a silent
 * connection is judged dead once owed longer than validation_timeout (a
 * check that starts past that only reads what arrived, without waiting)
 * instead of every short borrow waiting its own time on it again. */
static int check_for_borrow(nc_pool *p, nc_conn *c, double deadline)
{
    double now = nc_now();
    if (now >= c->expires)
        return CHECK_DEAD;
    int by_caller;
    if (p->ops->settle) {
        /* The reply to the ROLLBACK its return sent (or to a ping cut
         * short): before anything of this borrower is sent, or the
         * connection is replaced. */
        double since = c->owed_since > 0 ? c->owed_since : now;
        double dl = check_deadline(p, since, deadline, &by_caller);
        int rc = judge(p->ops->settle(p->ctx, c->raw, dl), by_caller);
        if (rc == CHECK_CUT)
            c->owed_since = since;
        if (rc != CHECK_OK)
            return rc;
        c->owed_since = 0;
    }
    if (!p->cfg.validate)
        return CHECK_OK;
    if (!p->ops->looks_alive(p->ctx, c->raw))
        return CHECK_DEAD;
    if (now - c->last_used > p->cfg.ping_after_idle) {
        nc_error ignored;
        nc_error_clear(&ignored);
        double sent = nc_now();
        double dl = check_deadline(p, sent, deadline, &by_caller);
        int rc = judge(p->ops->ping(p->ctx, c->raw, dl, &ignored), by_caller);
        if (rc == CHECK_CUT && p->ops->settle)
            c->owed_since = sent;   /* a backend without settle owes nothing */
        if (rc != CHECK_OK)
            return rc;
        c->last_checked = nc_now();
    }
    return CHECK_OK;
}

/* Put c idle UNDER the other idle connections: a connection whose check was
 * cut short is the one least likely to answer, so borrowers (who take the
 * top of the stack) try the others first. */
static void put_idle_under_locked(nc_pool *p, nc_conn *c)
{
    nc_pool_put_idle_locked(p, c);   /* or to the oldest waiter */
    if (c->state != NC_SLOT_IDLE || p->idle_top != c->index || c->next_idle < 0)
        return;
    p->idle_top = c->next_idle;
    nc_conn *last = &p->slots[p->idle_top];
    while (last->next_idle >= 0)
        last = &p->slots[last->next_idle];
    last->next_idle = c->index;
    c->next_idle = -1;
}

/* The borrower's deadline (or Ctrl-C) ended the check of c: c goes back
 * idle under the others (or to the oldest waiter, whose borrow reads the
 * owed reply first),
 * unless the pool was shut down meanwhile; the borrow fails. */
static void check_cut(nc_pool *p, nc_conn *c, double timeout, nc_error *err)
{
    int stopped = nc_stop_seen();
    lock(p);
    if (p->closed) {
        unlock(p);
        close_slot(p, c);
        nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "pool is shut down");
        return;
    }
    put_idle_under_locked(p, c);
    if (stopped) {
        nc_error_set(err, NC_E_INTERRUPTED, NC_K_OPERATIONAL,
                     "interrupted while checking a connection (kept: its reply is read by the next borrow)");
    } else {
        timeout_message(p, timeout, err);
        size_t n = strlen(err->message);
        snprintf(err->message + n, sizeof err->message - n,
                 "; an idle connection's check did not answer within the borrow's time (kept: not "
                 "proven dead, its reply is read by the next borrow)");
        p->acquire_timeouts++;
    }
    unlock(p);
}

static void timeout_message(nc_pool *p, double timeout, nc_error *err)
{
    nc_error_set(err, NC_E_POOL_TIMEOUT, NC_K_OPERATIONAL,
                 "no connection available within %.3g s: %d of %d connections in use, "
                 "%d caller%s waiting",
                 timeout, p->nlent + p->nbusy, p->cfg.max_connections, p->nwaiting,
                 p->nwaiting == 1 ? "" : "s");
}

int nc_pool_acquire(nc_pool *p, double timeout, nc_conn **out, uint64_t *lease, nc_error *err)
{
    double start = nc_now();
    if (timeout < 0)
        timeout = p->cfg.acquire_timeout;
    double deadline = start + timeout;
    /* A zero timeout means "do not wait for a connection to come free", not
     * "do not validate or open one": that work then has its own bounds
     * (validation_timeout for the ping, connect_timeout for opening), and a
     * healthy idle connection is lent. */
    double check_by = timeout == 0 ? NC_NO_DEADLINE : deadline;
    double open_by = timeout == 0 ? start + p->cfg.connect_timeout : deadline;
    int replacing = 0;   /* a dead connection was dropped on the way: codes 2010/2011 */

    lock(p);
    if (p->refill_held && !p->closed)
        borrow_resumes_refill_locked(p);
    for (;;) {
        if (p->closed) {
            unlock(p);
            nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "pool is shut down");
            return -1;
        }
        nc_conn *c = NULL;
        int may_open = 0;
        if (!p->wait_head) {
            c = pop_idle_locked(p);
            if (!c) {
                c = nc_pool_reserve_locked(p);
                may_open = c != NULL;
            }
        }
        if (!c) {
            /* Queue up, oldest first. */
            nc_waiter w;
            memset(&w, 0, sizeof w);
            if (cond_init_monotonic(&w.cv)) {
                unlock(p);
                nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "cannot create a condition variable");
                return -1;
            }
            w.prev = p->wait_tail;
            if (p->wait_tail)
                p->wait_tail->next = &w;
            else
                p->wait_head = &w;
            p->wait_tail = &w;
            p->nwaiting++;
            int stop = 0;
            while (w.result == NC_WAIT_PENDING && !p->closed) {
                /* In slices when the thread has a stop check (Ctrl-C),
                 * asked without the mutex (it may run a signal handler). */
                double until = nc_stop_slice(deadline);
                struct timespec ts = nc_abstime(until);
                if (isinf(until)) {
                    pthread_cond_wait(&w.cv, &p->mu);
                } else if (pthread_cond_timedwait(&w.cv, &p->mu, &ts) == ETIMEDOUT) {
                    if (until >= deadline)
                        break;
                    unlock(p);
                    stop = nc_stop_check();
                    lock(p);
                    if (stop)
                        break;
                }
            }
            pthread_cond_destroy(&w.cv);
            if (w.result == NC_WAIT_PENDING && stop && !p->closed) {
                dequeue_waiter_locked(p, &w);
                unlock(p);
                nc_error_set(err, NC_E_INTERRUPTED, NC_K_OPERATIONAL, "interrupted while waiting for a connection");
                return -1;
            }
            if (w.result == NC_WAIT_PENDING) {
                if (!p->closed)
                    timeout_message(p, timeout, err);   /* counts us among the waiters */
                dequeue_waiter_locked(p, &w);
                if (p->closed)
                    continue;
                p->acquire_timeouts++;
                unlock(p);
                return -1;
            }
            if (w.result == NC_WAIT_CLOSED)
                continue;
            if (w.result == NC_WAIT_GOT &&
                (!p->ops->settle || p->ops->settle(p->ctx, w.conn->raw, 0) == 0)) {
                /* Straight from another borrower: it was in use a moment ago. */
                record_wait_locked(p, nc_now() - start);
                *out = w.conn;
                *lease = w.conn->lease;
                unlock(p);
                return 0;
            }
            c = w.conn;
            if (w.result == NC_WAIT_GOT) {
                /* Its return's ROLLBACK has not answered yet (or failed):
                 * checked like an idle one, which waits for the reply or
                 * drops and replaces it. */
                c->state = NC_SLOT_CHECKING;
                p->nlent--;
                p->nbusy++;
            } else {
                may_open = 1;    /* NC_WAIT_MAY_OPEN: a reserved slot */
            }
        }
        unlock(p);

        if (may_open) {
            int fail = replacing ? NC_E_REPLACE_FAILED : NC_E_NEW_FAILED;
            int invalid = replacing ? NC_E_REPLACE_INVALID : NC_E_NEW_INVALID;
            int rc = open_into(p, c, open_by, fail, invalid, err);
            if (rc < 0)
                return -1;
            if (rc > 0) {
                lock(p);
                continue;
            }
            lock(p);
            if (replacing)
                p->replaced++;
            record_wait_locked(p, nc_now() - start);
            *out = c;
            *lease = c->lease;
            unlock(p);
            return 0;
        }

        /* An idle connection, now CHECKING. */
        int checked = check_for_borrow(p, c, check_by);
        if (checked == CHECK_CUT) {
            check_cut(p, c, timeout, err);
            return -1;
        }
        if (checked == CHECK_OK) {
            lock(p);
            p->nbusy--;
            p->nlent++;
            c->state = NC_SLOT_LENT;
            c->lease++;
            mark_lent(p, c);
            record_wait_locked(p, nc_now() - start);
            *out = c;
            *lease = c->lease;
            unlock(p);
            return 0;
        }
        /* Dead or expired: drop it and go round again (another idle one, or
         * open a replacement in its place). */
        int expired = nc_now() >= c->expires;
        void *raw = c->raw;
        p->ops->close(p->ctx, raw);
        lock(p);
        p->closed_count++;
        if (!expired)
            p->validation_failures++;
        replacing = 1;
        /* Reuse the slot ourselves rather than passing it to a waiter: we are
         * older than anyone who queued while we were checking. */
        c->raw = NULL;
        c->lease++;
        c->state = NC_SLOT_OPENING;   /* stays counted in nbusy */
        c->epoch = p->retire_epoch;
        unlock(p);
        int rc = open_into(p, c, open_by, NC_E_REPLACE_FAILED, NC_E_REPLACE_INVALID, err);
        if (rc < 0)
            return -1;
        if (rc > 0) {
            lock(p);
            continue;
        }
        lock(p);
        p->replaced++;
        record_wait_locked(p, nc_now() - start);
        *out = c;
        *lease = c->lease;
        unlock(p);
        return 0;
    }
}

/* ---- returning --------------------------------------------------------- */

int nc_pool_release_quick(nc_pool *p, nc_conn *c)
{
    if (p->ops->return_state(p->ctx, c->raw) != 0)
        return 0;
    double now = nc_now();
    lock(p);
    int quick = !p->closed && now < c->expires && !nc_pool_retired_locked(p, c);
    if (quick) {
        c->lease++;   /* the borrower's handle is dead from here on */
        c->last_used = now;
        nc_pool_put_idle_locked(p, c);
    }
    unlock(p);
    return quick;
}

int nc_pool_lease_valid(nc_pool *p, nc_conn *c, uint64_t lease)
{
    /* Under the mutex: a stale handle's slot may be being lent or returned
     * by another thread right now (that is what this check is for). */
    lock(p);
    int ok = c->lease == lease && c->state == NC_SLOT_LENT;
    unlock(p);
    return ok;
}

void nc_pool_release(nc_pool *p, nc_conn *c, int discard)
{
    if (!discard) {
        int st = p->ops->return_state(p->ctx, c->raw);
        if (st < 0) {
            discard = 1;
        } else if (st == 1) {
            nc_error ignored;
            if (p->ops->reset(p->ctx, c->raw, nc_now() + p->cfg.validation_timeout, &ignored) < 0)
                discard = 1;
        }
    }
    double now = nc_now();
    lock(p);
    c->lease++;   /* the borrower's handle is dead from here on */
    if (discard || p->closed || now >= c->expires || nc_pool_retired_locked(p, c)) {
        c->state = NC_SLOT_CHECKING;
        p->nlent--;
        p->nbusy++;
        unlock(p);
        close_slot(p, c);
        return;
    }
    c->last_used = now;
    nc_pool_put_idle_locked(p, c);
    unlock(p);
}

int nc_pool_ping(nc_pool *p, nc_conn *c, nc_error *err)
{
    nc_error_clear(err);
    int rc = p->ops->ping(p->ctx, c->raw, nc_now() + p->cfg.validation_timeout, err);
    if (rc <= 0)
        return rc;
    if (nc_stop_seen()) {
        nc_error_set(err, NC_E_INTERRUPTED, NC_K_OPERATIONAL,
                     "interrupted while pinging (the connection is kept: its reply is read before its next use)");
        return -1;
    }
    /* No answer within validation_timeout: a dead connection by the
     * pool's rule, closed when given back; given up now, so that a
     * statement before that fails at once instead of waiting on the reply
     * still owed (no deadline of its own: for ever). */
    if (p->ops->give_up)
        p->ops->give_up(p->ctx, c->raw, "no answer to a ping within validation_timeout");
    lock(p);
    c->expires = 0;
    unlock(p);
    nc_error_set(err, NC_E_QUERY_TIMEOUT, NC_K_OPERATIONAL, "no answer to the ping within %.3g s (validation_timeout)",
                 p->cfg.validation_timeout);
    return -1;
}

/* ---- shutting down ----------------------------------------------------- */

static void close_idle(nc_pool *p)
{
    for (;;) {
        lock(p);
        nc_conn *c = pop_idle_locked(p);
        unlock(p);
        if (!c)
            return;
        close_slot(p, c);
    }
}

void nc_pool_drain(nc_pool *p, int flags)
{
    lock(p);
    p->drains++;
    pthread_cond_broadcast(&p->changed);   /* wakes connect backoffs */
    if (flags & NC_DRAIN_RETIRE)
        p->retire_epoch++;   /* what is lent, checked or opening now is never parked again */
    if (flags & NC_DRAIN_HOLD)
        p->refill_held = 1;
    /* Every idle connection taken in this one critical section (CHECKING,
     * linked through next_idle), so that no borrow gets one of them after
     * the drain: a borrow after it gets a connection opened after it. */
    int taken = -1;
    nc_conn *c;
    while ((c = pop_idle_locked(p)) != NULL) {
        c->next_idle = taken;
        taken = c->index;
    }
    unlock(p);
    while (taken >= 0) {
        c = &p->slots[taken];
        taken = c->next_idle;
        c->next_idle = -1;
        close_slot(p, c);
    }
}

int nc_pool_shutdown(nc_pool *p, double timeout)
{
    lock(p);
    if (!p->closed) {
        p->closed = 1;
        pthread_cond_broadcast(&p->changed);   /* wakes connect backoffs */
        while (p->wait_head) {
            nc_waiter *w = p->wait_head;
            dequeue_waiter_locked(p, w);
            w->result = NC_WAIT_CLOSED;
            pthread_cond_signal(&w->cv);
        }
    }
    unlock(p);
    /* Wait a little for the janitor; one stuck in a connect is left to
     * finish on its own (it holds a reference). */
    nc_janitor_stop(p, timeout < 0.1 ? 0.1 : timeout > 1.0 ? 1.0 : timeout);
    close_idle(p);

    double deadline = nc_now() + (timeout > 0 ? timeout : 0);
    lock(p);
    while ((p->nlent > 0 || p->nbusy > 0) && nc_now() < deadline) {
        /* Ctrl-C ends the wait as the timeout would: the pool stays closed,
         * and what is still lent is closed when it comes back. */
        if (wait_changed_locked(p, deadline) == WAIT_DONE)
            break;
    }
    int left = p->nlent + p->nbusy;
    unlock(p);
    /* A connection that went idle while we waited (an open finishing) */
    close_idle(p);
    return left;
}

int nc_pool_is_closed(nc_pool *p)
{
    lock(p);
    int c = p->closed;
    unlock(p);
    return c;
}

int nc_pool_leaks_pending(nc_pool *p)
{
    return __atomic_load_n(&p->leaks_pending, __ATOMIC_ACQUIRE);
}

int nc_pool_take_leaks(nc_pool *p, nc_leak *out, int max)
{
    int n = 0;
    if (!nc_pool_leaks_pending(p))
        return 0;
    lock(p);
    for (int i = 0; i < p->cfg.max_connections && n < max; i++) {
        nc_conn *c = &p->slots[i];
        if (!c->leak_pending)
            continue;
        c->leak_pending = 0;
        out[n].index = i;
        out[n].lease = c->leak_lease;
        out[n].held = c->leak_held;
        n++;
    }
    __atomic_store_n(&p->leaks_pending, p->leaks_pending - n, __ATOMIC_RELEASE);
    unlock(p);
    return n;
}

static double hist_quantile(const uint64_t *h, uint64_t n, double q)
{
    if (n == 0)
        return 0.0;
    uint64_t want = (uint64_t)ceil(q * (double)n), seen = 0;
    for (int b = 0; b < NC_HIST_BUCKETS; b++) {
        seen += h[b];
        if (seen >= want && h[b]) {
            if (b == 0)
                return 0.0;
            /* the geometric middle of the bucket [2^(b/4), 2^((b+1)/4)) us */
            return pow(2.0, ((double)b + 0.5) / 4.0) * 1e-6;
        }
    }
    return 0.0;
}

int nc_pool_lent(nc_pool *p)
{
    lock(p);
    int n = p->nlent;
    unlock(p);
    return n;
}

void nc_pool_get_stats(nc_pool *p, nc_pool_stats *s)
{
    memset(s, 0, sizeof *s);
    lock(p);
    s->max_connections = p->cfg.max_connections;
    s->min_connections = p->cfg.min_connections;
    s->idle = p->nidle;
    s->active = p->nlent;
    s->opening = p->nbusy;
    s->total = p->nidle + p->nlent + p->nbusy;
    s->waiting = p->nwaiting;
    s->closed_flag = p->closed;
    s->acquires = p->acquires;
    s->acquire_timeouts = p->acquire_timeouts;
    s->opened = p->opened;
    s->closed = p->closed_count;
    s->replaced = p->replaced;
    s->connect_failures = p->connect_failures;
    s->validation_failures = p->validation_failures;
    s->leaked = p->leaked;
    s->wait_total = p->wait_total;
    s->wait_p50 = hist_quantile(p->hist, p->acquires, 0.50);
    s->wait_p99 = hist_quantile(p->hist, p->acquires, 0.99);
    unlock(p);
    s->queries = __atomic_load_n(&p->queries, __ATOMIC_RELAXED);
    s->query_errors = __atomic_load_n(&p->query_errors, __ATOMIC_RELAXED);
}

void nc_pool_statement_done(nc_pool *p, const nc_error *err)
{
    __atomic_fetch_add(&p->queries, 1, __ATOMIC_RELAXED);
    if (!err)
        return;
    __atomic_fetch_add(&p->query_errors, 1, __ATOMIC_RELAXED);
    nc_pool_report(p, err);
}

void nc_pool_report(nc_pool *p, const nc_error *err)
{
    int failure = nc_error_failure(err->code, err->sqlstate);
    if (failure != NC_FAIL_LOST && failure != NC_FAIL_READ_ONLY)
        return;
    lock(p);
    const nc_pool_observer *obs = p->observer;
    void *arg = p->observer_arg;
    if (obs)
        obs->ref(arg);
    unlock(p);
    if (obs) {
        obs->on_failure(arg, failure, err);
        obs->unref(arg);
    }
}

int nc_pool_set_observer(nc_pool *p, const nc_pool_observer *obs, void *arg)
{
    lock(p);
    int taken = obs && p->observer;
    if (!taken) {
        p->observer = obs;
        p->observer_arg = obs ? arg : NULL;
    }
    unlock(p);
    return taken ? -1 : 0;
}

const nc_pool_config *nc_pool_config_of(nc_pool *p) { return &p->cfg; }
void *nc_pool_ctx(nc_pool *p) { return p->ctx; }
const nc_backend_ops *nc_pool_ops(nc_pool *p) { return p->ops; }

static void pool_destroy(nc_pool *p)
{
    for (int i = 0; i < p->cfg.max_connections; i++) {
        nc_conn *c = &p->slots[i];
        if (c->raw && c->state != NC_SLOT_EMPTY)
            p->ops->close(p->ctx, c->raw);
        c->raw = NULL;
    }
    if (p->ops->ctx_free)
        p->ops->ctx_free(p->ctx);
    pthread_cond_destroy(&p->changed);
    pthread_cond_destroy(&p->janitor_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->slots);
    free(p);
}

void nc_pool_ref(nc_pool *p)
{
    lock(p);
    p->refs++;
    unlock(p);
}

void nc_pool_unref(nc_pool *p)
{
    lock(p);
    int last = --p->refs == 0;
    unlock(p);
    if (last)
        pool_destroy(p);
}

void nc_pool_free(nc_pool *p)
{
    if (!p)
        return;
    lock(p);
    p->closed = 1;
    pthread_cond_broadcast(&p->changed);
    unlock(p);
    nc_janitor_stop(p, 0.1);
    /* The borrowers are gone (the caller guarantees it); the janitor may not
     * be, in which case it frees the pool when it ends. */
    nc_pool_unref(p);
}
