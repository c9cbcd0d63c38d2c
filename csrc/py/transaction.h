/* transaction.h - Transaction, the context manager of
 * PooledConnection.transaction(): begin() on entry, commit() at the end,
 * rollback() when the block raised.  It drives the connection through its
 * methods, so it needs nothing of the connection's insides. */
#ifndef NPY_TRANSACTION_H
#define NPY_TRANSACTION_H

#include "state.h"

extern PyTypeObject NpyTransaction_Type;

/* A Transaction over conn (a reference is kept).  NULL on failure. */
PyObject *npy_transaction_new(PyObject *conn);

#endif
