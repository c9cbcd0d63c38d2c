/* nc_pool_internal.h - the pool's insides, shared by nc_pool.c (borrowing and
 * returning) and nc_janitor.c (the maintenance thread).  Not for the binding. */
#ifndef NC_POOL_INTERNAL_H
#define NC_POOL_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include "nc_pool.h"

#define NC_HIST_BUCKETS 128     /* acquire-wait histogram, 4 buckets per octave from 1 us */

enum nc_wait_result { NC_WAIT_PENDING = 0, NC_WAIT_GOT, NC_WAIT_MAY_OPEN, NC_WAIT_CLOSED };

typedef struct nc_waiter {
    struct nc_waiter *next, *prev;
    pthread_cond_t cv;
    int result;                 /* enum nc_wait_result */
    nc_conn *conn;              /* GOT: lent to the waiter; MAY_OPEN: slot reserved */
} nc_waiter;

struct nc_pool {
    nc_pool_config cfg;
    const nc_backend_ops *ops;
    void *ctx;

    pthread_mutex_t mu;
    pthread_cond_t changed;     /* a connection came back / closed: shutdown waits on it */
    nc_conn *slots;
    int idle_top;               /* LIFO stack of idle slots; -1 when empty */
    int nidle, nlent, nbusy;    /* nbusy: OPENING or CHECKING */
    nc_waiter *wait_head, *wait_tail;
    int nwaiting;
    int closed;
    unsigned rng;               /* lifetime jitter */
    uint64_t serial;
    uint64_t drains;            /* nc_pool_drain calls: an open in progress gives up its retries */
    uint64_t retire_epoch;      /* NC_DRAIN_RETIRE drains: a connection of an older epoch is never parked */
    int refill_held;            /* NC_DRAIN_HOLD: no min_connections refill until the next borrow */

    /* janitor */
    pthread_t janitor;
    pthread_cond_t janitor_cv;
    int janitor_started;
    int janitor_stop;
    int janitor_kick;           /* a slot emptied below min: refill now */
    /* Who still uses this struct: the owner, the janitor thread while it
     * runs, probers and the failover route.  The last one out frees it, so a
     * janitor stuck in a slow connect never holds up shutdown or interpreter
     * exit. */
    int refs;

    /* who hears of endpoint failures (nc_pool_set_observer), under mu */
    const nc_pool_observer *observer;
    void *observer_arg;

    /* the fork generation it was made in (nc_fork.h): in a later one the
     * pool is inherited from a parent process and must not be touched */
    uint64_t fork_gen;

    /* stats, under mu */
    uint64_t acquires, acquire_timeouts, opened, closed_count, replaced;
    uint64_t connect_failures, validation_failures;
    uint64_t leaked;
    int leaks_pending;          /* slots with leak_pending set; read atomically too */
    double wait_total;
    uint64_t hist[NC_HIST_BUCKETS];
    /* counted without the mutex */
    uint64_t queries, query_errors;
};

/* Open one connection with retries and backoff, within deadline.
 * Returns the raw connection or NULL with err set (code is fail_code). */
void *nc_pool_open_raw(nc_pool *p, double deadline, int fail_code, int invalid_code, nc_error *err);
/* Fill a reserved slot (state OPENING) with a new raw connection; under mu. */
void nc_pool_slot_fill_locked(nc_pool *p, nc_conn *c, void *raw);
/* Make c idle, or hand it to the oldest waiter; under mu. */
void nc_pool_put_idle_locked(nc_pool *p, nc_conn *c);
/* Empty slot c (its raw connection already closed); under mu. */
void nc_pool_slot_free_locked(nc_pool *p, nc_conn *c);
/* Reserve an empty slot as OPENING; under mu.  NULL when the pool is full. */
nc_conn *nc_pool_reserve_locked(nc_pool *p);
/* Remove slot index i from the idle stack; under mu.  0 if it was not idle. */
int nc_pool_take_idle_locked(nc_pool *p, nc_conn *c);
int nc_pool_total_locked(nc_pool *p);
/* 1 when c was open (or being opened) at an NC_DRAIN_RETIRE drain since:
 * it is closed where it would be parked idle.  Under mu. */
static inline int nc_pool_retired_locked(const nc_pool *p, const nc_conn *c)
{
    return c->epoch != p->retire_epoch;
}

int nc_janitor_start(nc_pool *p, nc_error *err);
/* Tell the janitor to stop and wait up to max_wait seconds for it; past that
 * it is detached and frees the pool itself if it is the last user.  Call
 * without mu held. */
void nc_janitor_stop(nc_pool *p, double max_wait);

#endif
