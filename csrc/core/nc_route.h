/* nc_route.h - lending from whichever endpoint is current: the failover
 * unit.
 *
 * A route owns (a reference to) one pool per endpoint, a prober per
 * endpoint and the health monitor (nc_monitor.h) that decides which endpoint
 * is current.  A borrow is one call, nc_route_lend: it asks the monitor for
 * the current endpoint, lends from its pool, tells the monitor when that
 * endpoint could not even be connected to (and then tries the endpoint the
 * monitor switched to), and never hands out a connection of an endpoint
 * that was abandoned while it borrowed.  Statement failures reach the
 * monitor through the pools' observer hook (nc_pool_statement_done).
 *
 * Lifetime: the route lives while its owner, a call inside it, a failure
 * report in flight, or its monitor's memory exists; nc_route_close stops the
 * monitor threads at once and the last user frees the rest.  So a probe that
 * outlives the monitor's bounded join still finds its prober and pool.
 */
#ifndef NC_ROUTE_H
#define NC_ROUTE_H

#include <stdint.h>
#include "nc_error.h"
#include "nc_monitor.h"
#include "nc_pool.h"
#include "nc_replica.h"

typedef struct nc_route nc_route;

/* Read routing and waiting for a primary (nc_route_lend_to). */
typedef struct nc_read_config {
    double failover_wait;           /* seconds a primary borrow waits while no writable endpoint
                                       exists (0: fail at once, NC_E_FO_NO_ENDPOINT) */
    double max_replica_lag_bytes;   /* a standby further behind serves no reads */
    double max_replica_lag_seconds; /* likewise, measured (nc_replica.h) */
} nc_read_config;

/* failover_wait 0, 16 MB, 30 s. */
void nc_read_config_defaults(nc_read_config *cfg);

/* The endpoint set grows in place and never shrinks.  Roles come from the
 * probes, so a list of endpoints with the leader marked is_primary
 * (priority) is all a topology source (Patroni's members) needs to build
 * a route; members that join later are appended (nc_route_add) and members
 * that leave become tombstones (nc_route_set_removed), under the route's
 * and the monitor's locks.  Why not a new route swapped in: a borrow reads
 * the route without a reference, a pool has one route at a time (a gap
 * in which borrows fail), and a new monitor would number its events from
 * 1 again.  So the arrays are made once with room for NC_ROUTE_CAPACITY
 * endpoints (more: NC_E_FO_CAPACITY, the others unaffected) and never
 * move; the count is published after the slot is filled; an index, once
 * given, names one endpoint for the route's life (events, status). */
#define NC_ROUTE_CAPACITY 32

/* pools[i] is endpoint i's pool (a reference is taken to each); priority
 * and primary as for nc_monitor_new.  NULL with err on failure. */
nc_route *nc_route_new(nc_pool *const *pools, int n, const int *priority, int primary,
                       const nc_monitor_config *cfg, nc_error *err);

/* Borrow a connection of the current endpoint, waiting up to timeout
 * seconds in all, probes included (< 0: the current endpoint's pool's
 * acquire timeout).  0: lent, with
 * *endpoint, *c and *lease (give it back with nc_pool_release on
 * nc_route_pool(r, *endpoint)); -1: err (NC_E_FO_NO_ENDPOINT when no
 * endpoint is usable, the pool's error otherwise, NC_E_POOL_CLOSED after
 * nc_route_close).  May wait and probe: call it without locks (and from
 * the binding without the GIL). */
int nc_route_lend(nc_route *r, double timeout, int *endpoint, nc_conn **c, uint64_t *lease, nc_error *err);

/* Set the read configuration (before use or between borrows).  -1 with
 * err (NC_E_CONFIG) when a value is out of range. */
int nc_route_configure_reads(nc_route *r, const nc_read_config *cfg, nc_error *err);

/* nc_route_lend for a target (enum nc_target): PRIMARY is nc_route_lend
 * (with failover_wait: while no writable endpoint exists, it waits for the
 * monitor to find one, up to failover_wait and its own timeout; Ctrl-C
 * ends the wait); the others pick a standby (nc_read_choose) from what the
 * probes saw, lend from its pool, and on a standby that cannot be connected
 * to mark it down, report it and choose again.  No eligible standby:
 * STANDBY fails at once with NC_E_FO_NO_STANDBY, PREFER_STANDBY and ANY
 * borrow as PRIMARY does. */
int nc_route_lend_to(nc_route *r, int target, double timeout, int *endpoint, nc_conn **c, uint64_t *lease,
                     nc_error *err);

/* nc_route_lend_to for a session that wrote: a write completed at
 * written_at (nc_now() seconds; <= 0 none) is read from a standby only once
 * that standby has replayed the primary's position first seen after it
 * (probes date a position by their start), else from the primary, also for
 * STANDBY (which still fails when no standby is within the lag limits).
 * No round trip on the write path: the monitor's probes carry the
 * positions, so a standby serves the session again one probe after its
 * write has been replayed. */
int nc_route_lend_after(nc_route *r, int target, double written_at, double timeout, int *endpoint, nc_conn **c,
                        uint64_t *lease, nc_error *err);

/* What read routing knows of one endpoint. */
typedef struct nc_route_ep_status {
    int removed;                /* left the topology (nc_route_set_removed) */
    int probed;                 /* a probe result was seen */
    int up;                     /* answered its last probe, no lost connection since */
    int standby;                /* answered read-only */
    int have_lsn;
    uint64_t lsn;               /* primary: current WAL position; standby: replayed */
    double lag_bytes;           /* standby: NAN unknown (and for a primary) */
    double lag_seconds;         /* standby: NAN unknown */
    int eligible;               /* a standby within the lag limits */
    int in_flight;              /* connections lent now */
    uint64_t reads;             /* borrows for a read target served here */
    uint64_t writes;            /* borrows for the primary target served here */
} nc_route_ep_status;

/* out must have room for NC_MONITOR_ENDPOINTS_MAX entries (endpoints may
 * be added meanwhile); returns how many it filled. */
int nc_route_read_status(nc_route *r, nc_route_ep_status *out);

/* The pool of endpoint i (valid as long as the route). */
nc_pool *nc_route_pool(nc_route *r, int i);
int nc_route_count(nc_route *r);
/* How many endpoints the route can ever hold (removed ones included). */
int nc_route_capacity(nc_route *r);

/* Append an endpoint over pool (a reference is taken; the pool must have no
 * route) with that priority: it is probed at once when monitoring, becomes
 * a failover target once probed writable, serves reads once probed a
 * standby within the lag limits.  Its index, or -1 with err:
 * NC_E_FO_CAPACITY when the route is full, NC_E_POOL_CLOSED after close,
 * NC_E_CONFIG for a pool already used. */
int nc_route_add(nc_route *r, nc_pool *pool, int priority, nc_error *err);

/* Endpoint i left the topology (removed 1): no borrow goes to it any more
 * (a current endpoint that left is failed over from, and while none can
 * take over primary borrows fail with NC_E_FO_NO_ENDPOINT), its probes
 * stop, its idle connections are closed now and lent ones when they come
 * back; the slot stays.  removed 0: it came back (same pool), known again
 * from its next probe.  0, or -1 for no such endpoint. */
int nc_route_set_removed(nc_route *r, int i, int removed);
int nc_route_removed(nc_route *r, int i);

/* Use the monitor (start, stop, triggers, events, status): NULL once the
 * route is closed; otherwise pair with nc_route_leave.  The monitor is not
 * freed while it is in use. */
nc_monitor *nc_route_enter(nc_route *r);
void nc_route_leave(nc_route *r);

/* Stop the monitor threads (bounded, as nc_monitor_stop) and unhook the
 * pools; later calls fail with NC_E_POOL_CLOSED (nc_route_enter: NULL).  The
 * pools stay the owner's to shut down.  Idempotent. */
void nc_route_close(nc_route *r);
/* The same, joining the monitor threads for at most max_wait seconds (< 0:
 * as nc_monitor_stop); the interpreter's exit hook uses a short one. */
void nc_route_close_within(nc_route *r, double max_wait);

/* nc_route_close, and the owner lets go: r must not be used afterwards. */
void nc_route_free(nc_route *r);

/* Keep r's memory (not its monitor) for a holder outside any call: the
 * binding's event waiter, which must not keep the owner's Python objects
 * alive.  nc_route_enter on a closed route returns NULL as ever.  The last
 * nc_route_unref frees the route (it may free pools: call it without locks). */
void nc_route_ref(nc_route *r);
void nc_route_unref(nc_route *r);

#endif
