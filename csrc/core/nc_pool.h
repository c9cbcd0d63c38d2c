/* nc_pool.h - the connection pool.
 *
 * A fixed array of max_connections slots; each slot is empty, idle or lent.
 * Borrowers that find nothing wait in a FIFO queue and are served in order:
 * a returned connection is handed straight to the oldest waiter.  A lease
 * number in every slot changes on each borrow and return, so a handle kept
 * after its return can be recognised (nc_pool_lease_valid) and can never reach
 * the connection lent to the next caller.  Slots live as long as the pool.
 *
 * Threads: every function may be called from any thread.  nc_pool_acquire,
 * nc_pool_release (unless nc_pool_release_quick did it) and nc_pool_shutdown
 * may wait: the binding layer calls them with the GIL released.
 */
#ifndef NC_POOL_H
#define NC_POOL_H

#include <stdint.h>
#include "nc_error.h"
#include "nc_backend.h"

typedef struct nc_pool_config {
    int max_connections;        /* >= 1 */
    int min_connections;        /* 0..max, kept open by the janitor */
    double acquire_timeout;     /* seconds, default wait in acquire */
    int retry_attempts;         /* attempts to open one connection (>= 1) */
    double retry_backoff;       /* first backoff in seconds; doubles, capped at 2 s */
    int validate;               /* validate on borrow and in the background */
    double validation_interval; /* janitor period, seconds */
    double validation_timeout;  /* deadline of one ping, seconds */
    double connect_timeout;     /* deadline of one connect attempt, seconds */
    double idle_timeout;        /* close idle connections above min after this */
    double max_lifetime;        /* retire connections after this (0 = never) */
    double lifetime_jitter;     /* fraction of max_lifetime taken off at random */
    double ping_after_idle;     /* borrow pings when idle longer than this */
    double leak_timeout;        /* a borrow held longer than this is reported once (0 = off) */
} nc_pool_config;

void nc_pool_config_defaults(nc_pool_config *cfg);

enum nc_slot_state { NC_SLOT_EMPTY = 0, NC_SLOT_OPENING, NC_SLOT_IDLE, NC_SLOT_LENT, NC_SLOT_CHECKING };

typedef struct nc_conn {
    void *raw;                  /* the backend's connection */
    int index;                  /* slot number */
    int state;                  /* enum nc_slot_state, under the pool mutex */
    uint64_t lease;             /* changes on every borrow and return */
    uint64_t serial;            /* which connection (counts opens) */
    double created;             /* monotonic */
    double expires;             /* monotonic, created + lifetime - jitter */
    double last_used;           /* monotonic, when it went idle */
    double last_checked;        /* monotonic, last successful ping */
    double last_polled;         /* monotonic, last no-round-trip liveness check */
    double owed_since;          /* monotonic, when the reply a cut-short check left owed was asked
                                 * for (0: none); judged by validation_timeout from then */
    int next_idle;              /* idle stack link (slot index, -1 end) */
    double lent_at;             /* monotonic, when the current lease began */
    uint64_t leak_lease;        /* the last lease found held past leak_timeout */
    double leak_held;           /* how long it had been held when found */
    int leak_pending;           /* found, not yet taken by nc_pool_take_leaks */
    uint64_t epoch;             /* the pool's retire epoch when its open began (nc_pool_drain) */
} nc_conn;

typedef struct nc_pool_stats {
    int max_connections, min_connections;
    int total, active, idle, opening, waiting;
    int closed_flag;
    uint64_t acquires, acquire_timeouts;
    uint64_t opened, closed, replaced, connect_failures, validation_failures;
    uint64_t leaked;            /* borrows found held past leak_timeout */
    uint64_t queries, query_errors;
    double wait_total;          /* seconds spent waiting in acquire, all borrows */
    double wait_p50, wait_p99;  /* seconds */
} nc_pool_stats;

typedef struct nc_pool nc_pool;

/* Takes ownership of ctx (freed with ops->ctx_free when the pool is freed,
 * also on failure here).  Starts the janitor thread when validate or min > 0
 * or idle/lifetime limits apply.  NULL with err set on failure. */
nc_pool *nc_pool_new(const nc_pool_config *cfg, const nc_backend_ops *ops, void *ctx, nc_error *err);

/* Fast path: an idle connection that needs no round trip, without blocking
 * and without backend I/O other than a zero-timeout socket poll.
 * 1: *out is lent to the caller; 0: nothing (use nc_pool_acquire); -1: err set. */
int nc_pool_try_acquire(nc_pool *p, nc_conn **out, uint64_t *lease, nc_error *err);

/* Borrow a connection, waiting up to timeout seconds (< 0: the configured
 * acquire_timeout).  Validates, replaces dead connections, opens new ones
 * with retries.  0 ok; -1 with err: NC_E_POOL_CLOSED, NC_E_POOL_TIMEOUT
 * (message says how many are in use and how many wait), NC_E_NEW_FAILED ... */
int nc_pool_acquire(nc_pool *p, double timeout, nc_conn **out, uint64_t *lease, nc_error *err);

/* Give c back if that needs no I/O: 1 done (idle again or handed to a
 * waiter); 0 nothing done, because it must be rolled back or closed (an open
 * transaction, broken, past its lifetime, the pool shut down or drained):
 * then call nc_pool_release, which may wait (from the binding without the
 * GIL).  Decided under the pool mutex, so a shutdown racing it cannot make
 * it close anything. */
int nc_pool_release_quick(nc_pool *p, nc_conn *c);

/* Give c back.  discard != 0 closes it instead (broken, or the caller knows
 * better).  An open transaction is rolled back; a failing rollback discards. */
void nc_pool_release(nc_pool *p, nc_conn *c, int discard);

/* A round trip on the borrowed c (PooledConnection.ping()), bounded by
 * validation_timeout, honouring the thread's stop check.  0 it answered;
 * -1 err: it failed (dead), or no answer within validation_timeout
 * (NC_E_QUERY_TIMEOUT; c is closed when given back), or the stop check said
 * stop (NC_E_INTERRUPTED; c is kept, its reply read before its next use).
 * Call without the pool mutex, with the GIL released for native kinds. */
int nc_pool_ping(nc_pool *p, nc_conn *c, nc_error *err);

/* 1 when (c, lease) is still the caller's borrow. */
int nc_pool_lease_valid(nc_pool *p, nc_conn *c, uint64_t lease);

/* Stop the janitor, refuse new borrows (NC_E_POOL_CLOSED), close idle
 * connections, wait up to timeout for lent ones to come back, then close
 * those not yet back when they are returned (or at nc_pool_free).  The
 * thread's stop check (nc_stop.h: Ctrl-C) ends the waits early, with the
 * pool in the same state as after the timeout.
 * Returns the number still lent when it gave up waiting.  Idempotent: a
 * second call waits again for those still lent. */
int nc_pool_shutdown(nc_pool *p, double timeout);

/* nc_pool_drain's flags.  RETIRE: every connection open or being opened now
 * is retired: one lent is closed when it comes back, one being checked or
 * opened is closed instead of parked idle (what HikariCP calls a soft evict,
 * pgbouncer RECONNECT; after a failover, engine.dispose()).  HOLD: the
 * janitor does not reopen min_connections until the next borrow, so a
 * drained pool holds no server session until it is used again (a DROP
 * DATABASE right after engine.dispose() works with min_connections > 0). */
enum { NC_DRAIN_RETIRE = 1, NC_DRAIN_HOLD = 2 };

/* Close every idle connection now, taken all at once under the mutex (no
 * borrower gets one of them afterwards); the pool stays open and the next
 * borrow opens a fresh one.  flags: NC_DRAIN_* (0: idle ones only). */
void nc_pool_drain(nc_pool *p, int flags);

int nc_pool_is_closed(nc_pool *p);

/* Leak detection (leak_timeout > 0): the janitor finds a borrow held longer
 * than leak_timeout, counts it (stats.leaked) and keeps it for the binding,
 * which takes it here from a thread that may report it (the core never
 * calls out).  Each lease is reported once.  nc_pool_leaks_pending is one
 * atomic load, for the borrow path. */
typedef struct nc_leak {
    int index;                  /* slot */
    uint64_t lease;             /* the borrow found leaked */
    double held;                /* seconds it had been held when found */
} nc_leak;
int nc_pool_leaks_pending(nc_pool *p);
/* Up to max found leaks into out (taken: not reported again); how many. */
int nc_pool_take_leaks(nc_pool *p, nc_leak *out, int max);
void nc_pool_get_stats(nc_pool *p, nc_pool_stats *out);
/* Connections lent now (the stats' active, without the rest): read
 * routing's "least in flight". */
int nc_pool_lent(nc_pool *p);
/* Whoever runs a statement on a borrowed connection reports its end here,
 * once: err NULL when it succeeded.  It is counted, and a failure that says
 * something about the endpoint (nc_error_failure: a lost connection, a
 * read-only server) goes to the pool's observer, if any, in the calling
 * thread: it may wait (a failover decision), so call it without locks and,
 * from the binding, with the GIL released when err is not NULL. */
void nc_pool_statement_done(nc_pool *p, const nc_error *err);
/* The same report without counting a statement (BEGIN, COMMIT, ROLLBACK). */
void nc_pool_report(nc_pool *p, const nc_error *err);

/* Who hears of a pool's endpoint failures (the failover route).  ref/unref
 * keep arg alive while a report is delivered, so that clearing the observer
 * never waits for one in flight. */
typedef struct nc_pool_observer {
    void (*on_failure)(void *arg, int failure, const nc_error *err);   /* failure: enum nc_failure */
    void (*ref)(void *arg);
    void (*unref)(void *arg);
} nc_pool_observer;

/* Install (obs != NULL) or remove (obs NULL) the observer.  A pool has one
 * observer at most: installing a second fails (-1); 0 otherwise. */
int nc_pool_set_observer(nc_pool *p, const nc_pool_observer *obs, void *arg);
const nc_pool_config *nc_pool_config_of(nc_pool *p);
void *nc_pool_ctx(nc_pool *p);
const nc_backend_ops *nc_pool_ops(nc_pool *p);

/* Give up the owner's use: the pool is closed (as by nc_pool_shutdown with
 * no wait) and freed when its last reference goes (see nc_pool_ref).  Any
 * connection still lent is closed then, so no borrower may use one after
 * the owner let go. */
void nc_pool_free(nc_pool *p);

/* More users of the pool's memory: a prober, the failover route, the
 * janitor thread.  The last nc_pool_unref frees it (after nc_pool_free). */
void nc_pool_ref(nc_pool *p);
void nc_pool_unref(nc_pool *p);

#endif
