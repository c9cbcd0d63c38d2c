/* pool.h - the Python objects around a core pool: Pool, the lease that
 * get_connection() returns, PooledConnection and Transaction. */
#ifndef NC_PY_POOL_H
#define NC_PY_POOL_H

#include "module.h"
#include "../core/nc_pool.h"
#include "../core/nc_params.h"

enum nc_kind_py { NC_BACKEND_PG = 1, NC_BACKEND_SQLITE = 2, NC_BACKEND_PY = 3 };

typedef struct NcPool {
    PyObject_HEAD
    nc_pool *pool;
    int kind;               /* enum nc_kind_py */
    int row_tuple;          /* default row format: 1 tuple, 0 dict */
    double query_timeout;   /* seconds, < 0 none */
    double busy_wait;       /* SQLite: how long to wait on a lock without a query timeout */
    PyObject *display;      /* where it connects, no password */
    PyObject *weakreflist;
    PyObject *dict;         /* instance __dict__, for the Python subclass */
    struct NcPool *reg_next, *reg_prev;
    int registered;
    PyObject *failover;     /* borrowed: the FailoverMonitor watching this endpoint, or NULL */
    int monitor_index;
} NcPool;

typedef struct NcConnection {
    PyObject_HEAD
    NcPool *pool;           /* strong reference: the slot lives as long as the pool */
    nc_conn *c;
    uint64_t lease;
    int released;
    int in_txn;             /* inside begin()/transaction() */
    int suspect;            /* a Python backend raised: ping before reuse */
    int busy;               /* a method is running (maybe with the GIL released) */
    int pending_release;    /* release asked for while busy: 1 return, 2 discard */
    int row_tuple;
} NcConnection;

typedef struct NcLease {
    PyObject_HEAD
    NcPool *pool;
    double timeout;
    NcConnection *conn;
} NcLease;

typedef struct NcTransaction {
    PyObject_HEAD
    NcConnection *conn;
    int started;
} NcTransaction;

extern PyTypeObject NcTransaction_Type;

/* Lend a connection (waiting up to timeout, < 0 the pool's), as a new
 * PooledConnection.  NULL with the exception set. */
NcConnection *nc_pool_lend(NcPool *self, double timeout);
/* Give conn back (idempotent).  discard closes it instead. */
void nc_connection_release(NcConnection *conn, int discard);
/* Shut down every live pool (the atexit hook). */
void nc_pools_shutdown_all(void);

/* Passive failure detection (failover.c): report an error seen on pool's
 * connection to its failover monitor, if any.  Keeps any pending exception. */
void nc_failover_report(NcPool *pool, const nc_error *err);
void nc_failover_report_exception(NcPool *pool);
extern PyTypeObject NcFailover_Type;

/* The Python-object backend (pybackend.c). */
extern const nc_backend_ops nc_py_ops;
void *nc_py_ctx_new(PyObject *factory);
PyObject *nc_py_conn_object(void *raw);   /* borrowed */
void nc_py_conn_mark_broken(void *raw);

#endif
