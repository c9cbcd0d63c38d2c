/* sqlite_adapt.h - Python values to SQLite parameters and back, by SQLite's
 * storage classes. */
#ifndef NPY_SQLITE_ADAPT_H
#define NPY_SQLITE_ADAPT_H

#include "adapt.h"
#include <sqlite3.h>

/* Bind value to parameter i (1-based) of stmt.  -1 with ProgrammingError
 * (2015) for an unsupported type, or another exception. */
int npy_sqlite_bind(sqlite3_stmt *stmt, int i, PyObject *value, const char *what);
/* Column j of the current row as a Python value (new reference). */
PyObject *npy_sqlite_value(sqlite3_stmt *st, int j);

#endif
