/* nc_fork.h - fork(): what a child process inherits and may not touch.
 *
 * After fork() the child has one thread and a copy of the parent's memory:
 * every pool, its connections (sockets and SQLite handles shared with the
 * parent), and mutexes possibly held by parent threads that do not exist in
 * the child.  Using any of them would either wait forever on such a mutex
 * or speak on the parent's sessions (a rollback, a Terminate, a SQLite
 * checkpoint on close).
 *
 * So the core keeps a process-wide fork generation, bumped in the child by a
 * pthread_atfork handler (an atomic increment: nothing else is safe there).
 * A pool remembers the generation it was made in; in a later generation it
 * is inherited: never lock it, never free it, never close its connections.
 * nc_pool_respawn makes the child's own pool from its configuration; the
 * inherited one is abandoned (memory only, deliberately leaked).  The same
 * holds for what is built on pools (probers, a failover route and its
 * monitor): a child makes new ones over its respawned pools (the binding
 * does, csrc/py/failover.c) and keeps the inherited ones (nc_fork_keep).
 * Threads of the parent do not exist in the child: nothing joins them.
 */
#ifndef NC_FORK_H
#define NC_FORK_H

#include <stdint.h>
#include "nc_error.h"
#include "nc_pool.h"

/* The current fork generation: 0 in the process that first asked, one more
 * in each child forked since (the atfork handler is installed on first
 * call; nc_pool_new calls it).  Lock-free, cheap: one atomic load. */
uint64_t nc_fork_generation(void);

/* 1 when p was made in an earlier generation (by a parent process). */
int nc_pool_inherited(const nc_pool *p);

/* A fresh pool for this process with old's configuration and backend (old's
 * context moves to the new pool: it is immutable configuration, such as the
 * conninfo).  old is abandoned without being touched: no lock taken, no
 * connection closed or rolled back, nothing freed.  When old had been shut
 * down, the new pool is shut down too.  Only for an inherited pool, and the
 * caller makes sure nobody else respawns the same one.  NULL with err set
 * on failure (then old's context is gone too: old must not be respawned
 * again). */
nc_pool *nc_pool_respawn(nc_pool *old, nc_error *err);

/* Keep obj (an abandoned inherited object: a pool, a route, a prober)
 * reachable from a process-wide list, so that leak checkers do not report
 * what is left unfreed on purpose.  Memory only; obj is never used again. */
void nc_fork_keep(void *obj);

#endif
