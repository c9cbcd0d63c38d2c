/* sqlite_exec.h - running statements on a SQLite connection: placeholders
 * rewritten by the core, values bound by sqlite_adapt, each step with the
 * GIL released, the result as Python rows or a row count. */
#ifndef NPY_SQLITE_EXEC_H
#define NPY_SQLITE_EXEC_H

#include "sqlite_adapt.h"
#include "../core/nc_pool.h"
#include "../core/nc_sqlite.h"

/* Run query (str) with params (None: as is, several statements allowed)
 * before deadline; waiting on a locked database is bounded by busy_wait
 * seconds even without a deadline.  By shape (enum npy_shape): rows
 * (tuples or dicts) or a row count (-1 none), or the DB-API 4-tuple
 * (description with declared types, rows, rowcount, lastrowid); NULL
 * with the exception set (failures counted in pool and reported). */
PyObject *npy_sqlite_execute(nc_pool *pool, nc_sqlite_conn *sc, PyObject *query, PyObject *params,
                             double deadline, double busy_wait, int shape, sqlite3_stmt **stream);

/* Streams (shape NPY_SHAPE_STREAM, stream not NULL): when the last
 * statement returns rows, only its first is read; the statement is left in
 * *stream (rowcount -1) for npy_sqlite_stream_fetch to step on, up to n
 * rows at a time (*done once it is over: after the last row, or on error,
 * NULL with the exception set); the caller finalizes it. */
PyObject *npy_sqlite_stream_fetch(nc_pool *pool, nc_sqlite_conn *sc, sqlite3_stmt *st, int n, double deadline,
                                  double busy_wait, int *done);

#endif
