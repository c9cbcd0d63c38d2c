/* pybackend.h - a backend made of Python objects: backend_factory() returns
 * an object with execute_query(sql, params), optionally ping(), begin(),
 * commit(), rollback(), and close() or disconnect().  The core calls its ops
 * from any thread (the janitor, the monitor's probes): each op takes the GIL
 * itself and does nothing once the interpreter is going away. */
#ifndef NPY_PYBACKEND_H
#define NPY_PYBACKEND_H

#include "state.h"
#include "../core/nc_backend.h"
#include "../core/nc_pool.h"

extern const nc_backend_ops npy_py_ops;

/* The ops' context for a factory (a reference is kept).  NULL: no memory. */
void *npy_py_ctx_new(PyObject *factory);
/* The garbage collector's view of a Python-backend pool (GIL held):
 * traverse visits the factory and its connections' backend objects; clear
 * drops the factory, after which connecting fails with PoolClosedError (the
 * Pool is being collected). */
int npy_py_ctx_traverse(void *ctx, visitproc visit, void *arg);
void npy_py_ctx_clear(void *ctx);
/* The backend object of a raw connection (borrowed). */
PyObject *npy_py_conn_object(void *raw);

/* Run a statement on the backend object (GIL held): its result, or NULL
 * with its exception, which is counted and reported to the pool's observer
 * when it is a connection failure (and marked with connection_failure). */
PyObject *npy_py_execute(nc_pool *pool, void *raw, PyObject *query, PyObject *params);
/* commit() / rollback() outside begin() (sql "COMMIT" or "ROLLBACK"): 1 when
 * statements ran since the last one and the backend has that method (a
 * DB-API connection outside autocommit has a transaction open), else 0. */
int npy_py_pending(void *raw, const char *sql);
/* BEGIN / COMMIT / ROLLBACK through begin()/commit()/rollback() when the
 * backend has them, else as SQL.  0, or -1 with the exception set. */
int npy_py_command(nc_pool *pool, void *raw, const char *sql);

#endif
