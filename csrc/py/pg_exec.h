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
 * the connection is counted in pool and reported to its observer.  begin
 * (with params, not a stream): BEGIN goes first in the same round trip. */
PyObject *npy_pg_execute(nc_pool *pool, nc_pg_conn *pc, PyObject *query, PyObject *params, double deadline,
                         int shape, int begin);

/* With shape NPY_SHAPE_STREAM npy_pg_execute starts the statement in
 * single-row mode and gives the DB-API 4-tuple of its first result: the
 * first row (rowcount -1) while more follow (the session's transaction
 * status is then PQTRANS_ACTIVE), else the whole (empty) result.  This
 * gives up to n more rows (a list of tuples); *done is set when the
 * statement is over (after the last row, or on error: NULL with the
 * exception set, KeyboardInterrupt on Ctrl-C). */
PyObject *npy_pg_stream_fetch(nc_pool *pool, nc_pg_conn *pc, int n, double deadline, int *done);

/* Read a stream's remaining rows and drop them (the statement runs to its
 * end, so an open transaction stays as it would be).  0, or -1 with the
 * exception set (the stream is over either way). */
int npy_pg_stream_drain(nc_pool *pool, nc_pg_conn *pc, double deadline);

/* Run query once per parameter set of seq (an iterable of sequences or
 * mappings) in pipelines of up to 1000 rows, one round trip each
 * (nc_pg_exec_many), all before deadline.  own_txn: wrap the whole run in
 * BEGIN ... COMMIT, sent in the first and last pipelines.  The total
 * affected-row count, or NULL with the exception set; when a parameter set
 * is to blame, the exception's row_index is its index in seq.  On failure
 * a transaction may be left open (aborted or not): the caller rolls back
 * its own.  *committing is set when the pipeline that failed carried
 * own_txn's COMMIT (before it, a lost connection certainly rolled the batch
 * back; with it, the batch may have committed). */
PyObject *npy_pg_execute_many(nc_pool *pool, nc_pg_conn *pc, PyObject *query, PyObject *seq, double deadline,
                              int own_txn, int *committing);

#endif
