/* failover.h - FailoverMonitor, the native base of DatabaseFailoverManager:
 * type glue over the core's failover route (nc_route.h), which owns the
 * routing decisions, the monitor and its threads. */
#ifndef NPY_FAILOVER_H
#define NPY_FAILOVER_H

#include "state.h"

extern PyTypeObject NpyFailover_Type;

/* FAILOVER_DEFAULTS and the names of modes, policies, states, event kinds
 * and roles, from the core's tables. */
int npy_failover_add_constants(PyObject *module);

#endif
