/* nc_patroni_follow.h - keeping a route's endpoints in step with Patroni's
 * members: the watch thread (nc_patroni_watch.c) hands every /cluster answer
 * here, with no Python anywhere.
 *
 * Endpoints are named by member name.  A member that appears gets a pool
 * made here (PostgreSQL, the manager's DSN with the member's host and port:
 * nc_patroni_member_dsn, and the pool settings of endpoint 0) and is
 * appended to the route (nc_route_add): it serves writes only once its own
 * probe finds it writable and the monitor switches to it, reads only once
 * probed a standby within the lag limits.  A member that disappears is
 * marked removed (nc_route_set_removed: a tombstone, never routed to); one
 * that comes back under the same name at the same address gets its slot
 * back.  What cannot be followed (the route is full, a member came back at
 * another address, a pool cannot be made) is refused, logged in the status
 * (refusals, last_refusal) and leaves everything else as it was.
 */
#ifndef NC_PATRONI_FOLLOW_H
#define NC_PATRONI_FOLLOW_H

#include "nc_error.h"
#include "nc_patroni.h"
#include "nc_pool.h"
#include "nc_route.h"

typedef struct nc_patroni_follow nc_patroni_follow;

/* A follower of route r (a reference is taken: nc_route_ref), whose
 * endpoints 0..n-1 are the members names[0..n-1] at hosts/ports; dsn (copied,
 * wiped when freed: it may hold a password) is what new members' DSNs are
 * made from; pool_cfg their pools' settings.  NULL with err. */
nc_patroni_follow *nc_patroni_follow_new(nc_route *r, const char *const *names, const char *const *hosts,
                                         const int *ports, int n, const char *dsn, const nc_pool_config *pool_cfg,
                                         nc_error *err);

/* Bring the route in step with c (one /cluster answer).  Thread-safe. */
void nc_patroni_follow_apply(nc_patroni_follow *f, const nc_patroni_cluster *c);

/* One endpoint as the follower knows it. */
typedef struct nc_follow_endpoint {
    char name[128];
    char host[256];
    int port;
    int removed;
    int added;                  /* joined after the start (its pool is the follower's) */
} nc_follow_endpoint;

typedef struct nc_follow_status {
    int n;                      /* endpoints, by route index */
    nc_follow_endpoint eps[NC_MONITOR_ENDPOINTS_MAX];
    int added, removed, returned;   /* how many times each happened */
    int refusals;
    char last_refusal[NC_ERRMSG_MAX];   /* "" none */
} nc_follow_status;

void nc_patroni_follow_status(nc_patroni_follow *f, nc_follow_status *out);

/* The owner's end: let go of the pools made here (each is freed once the
 * route no longer holds it) and drop the owner's reference; the last
 * reference drops the route's and frees f.  NULL is fine.  No apply may run
 * (stop the watch first); a status read may, in another thread, when it
 * holds a reference: nc_patroni_follow_ref, taken while f is known alive
 * (the binding: with the GIL, before releasing it), then unref. */
void nc_patroni_follow_free(nc_patroni_follow *f);
void nc_patroni_follow_ref(nc_patroni_follow *f);
void nc_patroni_follow_unref(nc_patroni_follow *f);

/* dsn pointed at host:port (a new string, NULL when out of memory).  libpq
 * lets a later host/port override an earlier one in both forms, so nothing
 * of dsn is parsed: the URI form gets them as query parameters (host
 * percent-encoded), the key=value form appended (host quoted). */
char *nc_patroni_member_dsn(const char *dsn, const char *host, int port);

#endif
