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

typedef struct nc_route nc_route;

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

/* The pool of endpoint i (valid as long as the route). */
nc_pool *nc_route_pool(nc_route *r, int i);
int nc_route_count(nc_route *r);

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
