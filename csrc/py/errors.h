/* errors.h - turning the core's error records into Python exceptions.
 *
 * The classes are defined in noodlecore/database/errors.py, which hands
 * them to the binding at import (_set_error_classes); which class an error
 * gets, and what it says about the endpoint, is decided by the core's tables
 * (nc_error.h).  Every exception raised from here carries error_code,
 * sqlstate, server_message, and the attributes statement_sent (True, False
 * or None), connection_failure and not_applied.
 */
#ifndef NPY_ERRORS_H
#define NPY_ERRORS_H

#include "state.h"
#include "../core/nc_error.h"

/* Raise the exception for code (kind and sqlstate pick the class when the
 * code alone does not).  Always returns NULL. */
PyObject *npy_raise(int code, int kind, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Raise from a filled core record.  Always returns NULL. */
PyObject *npy_raise_error(const nc_error *err);
/* exc.row_index = row on the pending exception: the index, in an
 * execute_many's sequence, of the parameter set that failed. */
void npy_note_row(Py_ssize_t row);
/* The exception object itself (new reference), for errors.py's
 * error_from_native(); NULL with an exception set on failure. */
PyObject *npy_error_new(int code, int kind, const char *sqlstate, const char *message, int sent);

/* A Python backend raised exc: describe it in the core's terms for the
 * failure report (a ConnectionError/OSError, error_code 2004, a
 * lost-connection SQLSTATE, or its own connection_failure=True is a lost
 * connection; its own connection_failure=False says it is not; its own
 * statement_sent is taken as said) and mark exc with connection_failure and
 * not_applied, so that callers read the same verdict. */
void npy_error_from_backend(PyObject *exc, nc_error *out);

/* After a failed statement, on a connection whose errors say so (a failover
 * manager's, connection.c): when the pending exception is a noodlecore
 * error that the core's rule (nc_outcome_unknown: its connection_failure
 * and not_applied, the statement's effect, whether the session was in a
 * transaction when it was sent) calls an unknown outcome, replace it with
 * OutcomeUnknownError (3039): the same statement_sent, sqlstate and
 * server_message, connection_failure true, a message naming where (the
 * pool's display) and the old exception as __cause__.  Anything else is
 * left pending as it is. */
void npy_outcome_check(int effect, int in_txn, PyObject *where);

/* _set_error_classes(mapping): the classes by name (errors.py). */
PyObject *npy_set_error_classes(PyObject *mapping);
/* ERROR_TABLE, ERROR_CLASSES: the core's tables as module constants. */
int npy_add_error_tables(PyObject *module);

#endif
