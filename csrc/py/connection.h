/* connection.h - PooledConnection: a borrowed connection, and what it needs
 * of the pool that lent it.
 *
 * A PooledConnection is a (slot, lease) pair plus a strong reference to the
 * Python object that owns the pool (a Pool): after the connection went back
 * the object is dead (InterfaceError 2016) and can never reach a connection
 * now lent to someone else.
 */
#ifndef NPY_CONNECTION_H
#define NPY_CONNECTION_H

#include <stdint.h>
#include "leak.h"
#include "state.h"
#include "../core/nc_pool.h"

enum npy_backend { NPY_BACKEND_PG = 1, NPY_BACKEND_SQLITE = 2, NPY_BACKEND_PY = 3 };

/* What a connection reads of its pool; filled by pool.c, lives in the Pool
 * object (which every PooledConnection of it keeps alive). */
typedef struct npy_pool_settings {
    nc_pool *pool;          /* the core pool; NULL until the Pool is initialised */
    int kind;               /* enum npy_backend */
    int row_tuple;          /* default row format: 1 tuple, 0 dict */
    double query_timeout;   /* seconds, < 0 none */
    double busy_wait;       /* SQLite: how long to wait on a lock without a query timeout */
    PyObject *display;      /* where it connects, no password (owned by the Pool) */
    uint64_t fork_gen;      /* the fork generation pool was made in (nc_fork.h) */
    double leak_timeout;    /* > 0: borrows record their stack for the leak warning */
    PyObject **borrow_stacks;   /* leak_timeout > 0: per slot, (lease, frames) of its borrow */
    int nstacks;
} npy_pool_settings;

typedef struct NpyConnection {
    PyObject_HEAD
    PyObject *owner;                /* strong: the Pool whose settings ps points into */
    const npy_pool_settings *ps;
    nc_conn *c;
    uint64_t lease;
    uint64_t fork_gen;      /* the fork generation it was borrowed in: in another, it is the parent's */
    int released;
    int in_txn;             /* inside begin()/transaction() */
    int busy;               /* a method is running (maybe with the GIL released) */
    int pending_release;    /* release asked for while busy: 1 return, 2 discard */
    int streaming;          /* a DB-API stream's rows are still coming (PostgreSQL single-row mode, or
                             * SQLite's statement in stream_stmt) */
    void *stream_stmt;      /* SQLite: the streaming statement (a sqlite3_stmt), else NULL */
    int row_tuple;
    int outcome_errors;     /* a failover manager's: a statement lost in flight whose outcome cannot be
                             * known raises OutcomeUnknownError (3039; npy_outcome_check) */
    int stream_effect;      /* PostgreSQL stream: its statement's enum nc_effect, and whether the session */
    int stream_in_txn;      /* was in a transaction when it was sent (for a stream lost midway) */
} NpyConnection;

extern PyTypeObject NpyConnection_Type;

/* Borrow from ps->pool (waiting up to timeout, < 0 the pool's own), as a new
 * PooledConnection.  The non-waiting fast path runs with the GIL held; a
 * wait, a round trip or a connect runs without it.  NULL with the exception
 * set. */
NpyConnection *npy_connection_lend(PyObject *owner, const npy_pool_settings *ps, double timeout);

/* For a lender of its own (the failover route): a PooledConnection holding
 * nothing yet (allocate it before borrowing, so that nothing can fail after
 * the borrow), then attach the borrow to it. */
NpyConnection *npy_connection_alloc(void);
/* (A lender sets conn->outcome_errors after attaching, for 3039 instead of
 * 2004 when a statement's outcome cannot be known.) */
void npy_connection_attach(NpyConnection *conn, PyObject *owner, const npy_pool_settings *ps, nc_conn *c,
                           uint64_t lease);

/* After fork(): when ps->pool was made in the parent (an earlier fork
 * generation), replace it with this process's own pool (nc_pool_respawn),
 * leaving the inherited one untouched.  Every use of a pool calls this
 * first; 0, or -1 with the exception set. */
int npy_settings_fresh(npy_pool_settings *ps);
/* 1 when ps->pool was made in the parent and not used here yet: teardown
 * (the exit hook, dealloc) then leaves it alone. */
int npy_settings_inherited(const npy_pool_settings *ps);

/* Give conn back (idempotent).  discard closes it instead.  A connection
 * borrowed before a fork() is only marked returned in the child. */
void npy_connection_release(NpyConnection *conn, int discard);

#endif
