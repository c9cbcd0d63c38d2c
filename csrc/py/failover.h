/* failover.h - FailoverMonitor, the native base of DatabaseFailoverManager:
 * type glue over the core's failover route (nc_route.h), which owns the
 * routing decisions, the monitor and its threads. */
#ifndef NPY_FAILOVER_H
#define NPY_FAILOVER_H

#include "state.h"
#include "../core/nc_route.h"

extern PyTypeObject NpyFailover_Type;

/* FAILOVER_DEFAULTS and the names of modes, policies, states, event kinds
 * and roles, from the core's tables. */
int npy_failover_add_constants(PyObject *module);

/* split_hosts(dsn) -> [(name, dsn)]: a multi-host connection string as one
 * per host (the core's nc_pg_split_hosts), for DatabaseFailoverManager.from_dsn. */
PyObject *npy_failover_split_hosts(PyObject *module, PyObject *arg);

/* The core route of a FailoverMonitor (borrowed: valid while obj lives and
 * is not closed), for the Patroni watch's follower; NULL with an exception. */
nc_route *npy_failover_route(PyObject *obj);
/* 1 when obj is a FailoverMonitor that was closed (it has no route to
 * follow, in a forked child neither), else 0. */
int npy_failover_closed(PyObject *obj);

/* The exit hook: close every live FailoverMonitor's route (its monitor
 * threads stopped, joined for at most max_wait seconds each; a probe stuck
 * longer is left to finish on its own, owning what it uses).  With the GIL;
 * releases it while waiting. */
void npy_failovers_close_all(double max_wait);

#endif
