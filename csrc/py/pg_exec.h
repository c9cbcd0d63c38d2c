/* pg_exec.h - running statements on a PostgreSQL connection: placeholders
 * rewritten by the core, values converted by pg_adapt, the round trip with
 * the GIL released, the result as Python rows or a row count. */
#ifndef NPY_PG_EXEC_H
#define NPY_PG_EXEC_H

#include "pg_adapt.h"
#include "../core/nc_pg.h"
#include "../core/nc_pool.h"

/* Run query (str) with params (None: sent as is, several statements
 * allowed) before deadline.  By shape (enum npy_shape): rows (tuples or
 * dicts) or the affected row count (-1 none), or the DB-API 4-tuple
 * (description with type OIDs, rows, rowcount, None); NULL with the
 * exception set.  A failure of the server or
 * the connection is counted in pool and reported to its observer. */
PyObject *npy_pg_execute(nc_pool *pool, nc_pg_conn *pc, PyObject *query, PyObject *params, double deadline,
                         int shape);

#endif
