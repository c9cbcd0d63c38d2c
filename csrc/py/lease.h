/* lease.h - ConnectionLease, what Pool.get_connection() returns: a context
 * manager that borrows on entry and gives the connection back on exit. */
#ifndef NPY_LEASE_H
#define NPY_LEASE_H

#include "connection.h"

extern PyTypeObject NpyLease_Type;

/* A lease over owner's pool (a reference to owner is kept). */
PyObject *npy_lease_new(PyObject *owner, const npy_pool_settings *ps, double timeout);

#endif
