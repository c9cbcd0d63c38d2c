/* pg_exec.c - statements on a PostgreSQL connection (see pg_exec.h). */
#include "pg_exec.h"
#include "interrupt.h"
#include "../core/nc_sqltext.h"

#include <stdlib.h>

static PyObject *pg_rows(PGresult *res, int tuple)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    npy_pg_decoder dec[ncols > 0 ? ncols : 1];
    PyObject *names = NULL;
    PyObject *rows = PyList_New(nrows);
    if (!rows)
        return NULL;
    for (int j = 0; j < ncols; j++)
        dec[j] = npy_pg_decoder_for(PQftype(res, j));
    if (!tuple) {
        names = PyTuple_New(ncols);
        if (!names)
            goto fail;
        for (int j = 0; j < ncols; j++) {
            PyObject *s = PyUnicode_FromString(PQfname(res, j));
            if (!s)
                goto fail;
            PyUnicode_InternInPlace(&s);
            PyTuple_SET_ITEM(names, j, s);
        }
    }
    for (int i = 0; i < nrows; i++) {
        PyObject *row = tuple ? PyTuple_New(ncols) : PyDict_New();
        if (!row)
            goto fail;
        PyList_SET_ITEM(rows, i, row);
        for (int j = 0; j < ncols; j++) {
            PyObject *v;
            if (PQgetisnull(res, i, j))
                v = Py_NewRef(Py_None);
            else
                v = dec[j](PQgetvalue(res, i, j), PQgetlength(res, i, j));
            if (!v)
                goto fail;
            if (tuple) {
                PyTuple_SET_ITEM(row, j, v);
            } else {
                int rc = PyDict_SetItem(row, PyTuple_GET_ITEM(names, j), v);
                Py_DECREF(v);
                if (rc < 0)
                    goto fail;
            }
        }
    }
    Py_XDECREF(names);
    return rows;
fail:
    Py_XDECREF(names);
    Py_DECREF(rows);
    return NULL;
}

/* The affected (or returned) row count libpq reports, -1 when there is none
 * (DDL, SET ...). */
static long long pg_rowcount(PGresult *res)
{
    const char *n = PQcmdTuples(res);
    if (n && *n)
        return strtoll(n, NULL, 10);
    return PQresultStatus(res) == PGRES_TUPLES_OK ? PQntuples(res) : -1;
}

static PyObject *pg_result_value(PGresult *res, int tuple)
{
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        return pg_rows(res, tuple);
    return PyLong_FromLongLong(pg_rowcount(res));
}

/* PEP 249's description: per column (name, type_code, display_size,
 * internal_size, precision, scale, null_ok); the type code is the column's
 * type OID (compare it with noodlecore.dbapi.STRING ...).  Precision and
 * scale only for numeric(p, s) (libpq gives the typmod, not the sizes of
 * other types); null_ok is not known from a result. */
static PyObject *pg_description(PGresult *res)
{
    int ncols = PQnfields(res);
    PyObject *desc = PyList_New(ncols);
    if (!desc)
        return NULL;
    for (int j = 0; j < ncols; j++) {
        Oid oid = PQftype(res, j);
        int mod = PQfmod(res, j), size = PQfsize(res, j);
        PyObject *prec = Py_None, *scale = Py_None, *isize = Py_None;
        PyObject *owned[3] = {NULL, NULL, NULL};
        if (oid == 1700 && mod >= 4) {   /* numeric: typmod is ((p << 16) | s) + 4 */
            prec = owned[0] = PyLong_FromLong(((mod - 4) >> 16) & 0xffff);
            scale = owned[1] = PyLong_FromLong((mod - 4) & 0xffff);
        }
        if (size > 0)
            isize = owned[2] = PyLong_FromLong(size);
        PyObject *item = NULL;
        if ((oid != 1700 || mod < 4 || (prec && scale)) && (size <= 0 || isize))
            item = Py_BuildValue("(sIOOOOO)", PQfname(res, j), (unsigned)oid, Py_None, isize, prec, scale,
                                 Py_None);
        for (int k = 0; k < 3; k++)
            Py_XDECREF(owned[k]);
        if (!item) {
            Py_DECREF(desc);
            return NULL;
        }
        PyList_SET_ITEM(desc, j, item);
    }
    return desc;
}

/* The DB-API cursor's view: (description, rows, rowcount, lastrowid). */
static PyObject *pg_result_dbapi(PGresult *res)
{
    /* SINGLE_TUPLE: a stream's first row (its count comes at the end). */
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_SINGLE_TUPLE)
        return Py_BuildValue("(OOLO)", Py_None, Py_None, pg_rowcount(res), Py_None);
    PyObject *desc = pg_description(res);
    if (!desc)
        return NULL;
    PyObject *rows = pg_rows(res, 1);
    if (!rows) {
        Py_DECREF(desc);
        return NULL;
    }
    return Py_BuildValue("(NNLO)", desc, rows, pg_rowcount(res), Py_None);
}

/* The round trip (GIL released): the whole result, or for a stream
 * (single-row mode) its first result. */
static PGresult *pg_send(nc_pg_conn *pc, const char *sql, int n, const Oid *types, const char *const *values,
                         const int *lengths, const int *formats, double deadline, int stream, int begin,
                         nc_error *err)
{
    if (begin)   /* PEP 249's implicit BEGIN in the same round trip (n >= 0, not a stream) */
        return nc_pg_exec_begin(pc, "BEGIN", sql, n, types, values, lengths, formats, deadline, err);
    if (!stream)
        return nc_pg_exec(pc, sql, n, types, values, lengths, formats, deadline, err);
    if (nc_pg_stream_send(pc, sql, n, types, values, lengths, formats, deadline, err) < 0)
        return NULL;
    return nc_pg_stream_next(pc, deadline, err);
}

/* Run one statement; returns a new PGresult or NULL with the exception set. */
static PGresult *pg_run(nc_pool *pool, nc_pg_conn *pc, const char *sql, Py_ssize_t sqllen, PyObject *params,
                        double deadline, int stream, int begin)
{
    nc_error err;
    nc_error_clear(&err);
    PGresult *res = NULL;
    npy_interrupt it;
    int interrupted;
    if (params == Py_None) {
        npy_interrupt_arm(&it);
        Py_BEGIN_ALLOW_THREADS
        res = pg_send(pc, sql, -1, NULL, NULL, NULL, NULL, deadline, stream, 0, &err);
        Py_END_ALLOW_THREADS
        interrupted = npy_interrupt_disarm(&it);
    } else {
        nc_sql q;
        if (nc_sql_translate(sql, (size_t)sqllen, NC_DIALECT_PG, &q, &err) < 0) {
            npy_raise_error(&err);
            return NULL;
        }
        PyObject *vals = npy_params_ordered(&q, params);
        if (!vals) {
            nc_sql_free(&q);
            return NULL;
        }
        npy_pg_params pp;
        if (npy_pg_params_init(&pp, q.nslots) < 0) {
            Py_DECREF(vals);
            nc_sql_free(&q);
            return NULL;
        }
        for (int i = 0; i < q.nslots; i++) {
            char what[160];
            npy_param_name(&q, i, what, sizeof what);
            if (npy_pg_params_set(&pp, i, PyList_GET_ITEM(vals, i), what) < 0) {
                npy_pg_params_free(&pp);
                Py_DECREF(vals);
                nc_sql_free(&q);
                return NULL;
            }
        }
        npy_interrupt_arm(&it);
        Py_BEGIN_ALLOW_THREADS
        res = pg_send(pc, q.sql, q.nslots, pp.types, (const char *const *)pp.values, pp.lengths, pp.formats,
                      deadline, stream, begin, &err);
        Py_END_ALLOW_THREADS
        interrupted = npy_interrupt_disarm(&it);
        npy_pg_params_free(&pp);
        Py_DECREF(vals);
        nc_sql_free(&q);
    }
    if (interrupted) {
        /* Ctrl-C: the statement was cancelled on the server (or its
         * connection is marked broken); KeyboardInterrupt is set. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        Py_BEGIN_ALLOW_THREADS
        nc_pool_statement_done(pool, res ? NULL : &err);
        Py_END_ALLOW_THREADS
        PyErr_Restore(et, ev, tb);
        PQclear(res);
        return NULL;
    }
    if (!res) {
        /* Counted, and told to the pool's observer: a failover decision may
         * follow, so not with the GIL held. */
        Py_BEGIN_ALLOW_THREADS
        nc_pool_statement_done(pool, &err);
        Py_END_ALLOW_THREADS
        npy_raise_error(&err);
        return NULL;
    }
    nc_pool_statement_done(pool, NULL);
    return res;
}

PyObject *npy_pg_execute(nc_pool *pool, nc_pg_conn *pc, PyObject *query, PyObject *params, double deadline,
                         int shape, int begin)
{
    Py_ssize_t len;
    const char *sql = PyUnicode_AsUTF8AndSize(query, &len);
    if (!sql)
        return NULL;
    /* a SET (or the like) makes the return reset the session: one lexer
     * pass here, a DISCARD ALL only after such a statement */
    if (!pc->session_dirty)
        pc->session_dirty = nc_sql_changes_session(sql, (size_t)len, NC_DIALECT_PG);
    PGresult *res = pg_run(pool, pc, sql, len, params, deadline, shape == NPY_SHAPE_STREAM,
                           begin && params != Py_None && shape != NPY_SHAPE_STREAM);
    if (!res)
        return NULL;
    PyObject *out = shape >= NPY_SHAPE_DBAPI ? pg_result_dbapi(res) : pg_result_value(res, shape == NPY_SHAPE_TUPLE);
    PQclear(res);
    return out;
}

/* Up to n more rows of a stream: the results come with the GIL released,
 * the rows are made with it.  An error ends the stream (told to the pool
 * as a failed statement). */
PyObject *npy_pg_stream_fetch(nc_pool *pool, nc_pg_conn *pc, int n, double deadline, int *done)
{
    PGresult **got = PyMem_Malloc(sizeof(PGresult *) * (size_t)(n > 0 ? n : 1));
    if (!got)
        return PyErr_NoMemory();
    nc_error err;
    nc_error_clear(&err);
    int k = 0, failed = 0;
    *done = 0;
    npy_interrupt it;
    npy_interrupt_arm(&it);
    Py_BEGIN_ALLOW_THREADS
    while (k < n) {
        PGresult *r = nc_pg_stream_next(pc, deadline, &err);
        if (!r) {
            failed = 1;
            break;
        }
        if (PQresultStatus(r) != PGRES_SINGLE_TUPLE) {
            PQclear(r);   /* the end: TUPLES_OK with no rows */
            *done = 1;
            break;
        }
        got[k++] = r;
    }
    if (failed)
        nc_pool_statement_done(pool, &err);   /* maybe a failover decision: not with the GIL */
    Py_END_ALLOW_THREADS
    int interrupted = npy_interrupt_disarm(&it);
    PyObject *rows = NULL;
    if (failed) {
        *done = 1;
        if (!interrupted)
            npy_raise_error(&err);
    } else {
        rows = PyList_New(k);
        for (int i = 0; rows && i < k; i++) {
            PyObject *one = pg_rows(got[i], 1);   /* a list of one tuple */
            if (!one) {
                Py_CLEAR(rows);
                break;
            }
            PyList_SET_ITEM(rows, i, Py_NewRef(PyList_GET_ITEM(one, 0)));
            Py_DECREF(one);
        }
    }
    for (int i = 0; i < k; i++)
        PQclear(got[i]);
    PyMem_Free(got);
    return rows;
}

int npy_pg_stream_drain(nc_pool *pool, nc_pg_conn *pc, double deadline)
{
    nc_error err;
    nc_error_clear(&err);
    int failed = 0;
    npy_interrupt it;
    npy_interrupt_arm(&it);
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        PGresult *r = nc_pg_stream_next(pc, deadline, &err);
        if (!r) {
            failed = 1;
            nc_pool_statement_done(pool, &err);
            break;
        }
        int row = PQresultStatus(r) == PGRES_SINGLE_TUPLE;
        PQclear(r);
        if (!row)
            break;
    }
    Py_END_ALLOW_THREADS
    if (npy_interrupt_disarm(&it))
        return -1;
    if (failed) {
        npy_raise_error(&err);
        return -1;
    }
    return 0;
}

/* ---- execute_many ------------------------------------------------------- */

/* Rows per pipeline: a batch's converted parameters and libpq's output
 * buffer are held in memory until its results are read, so a long sequence
 * goes in pipelines of this many rows (one round trip each). */
#define NPY_PG_BATCH 1000

typedef struct {
    npy_pg_params pp[NPY_PG_BATCH];
    nc_pg_params rows[NPY_PG_BATCH];
    int n;
} pg_batch;

static void batch_clear(pg_batch *b)
{
    for (int i = 0; i < b->n; i++)
        npy_pg_params_free(&b->pp[i]);
    b->n = 0;
}

/* Each slot's name for error messages ("parameter 2", "parameter 'k'"),
 * made once per batch instead of once per row and slot. */
typedef char npy_slot_name[160];

/* Convert one parameter set into the batch's next slot.  -1 raised. */
static int batch_add(pg_batch *b, const nc_sql *q, const npy_slot_name *names, PyObject *params)
{
    PyObject *vals = npy_params_ordered(q, params);
    if (!vals)
        return -1;
    npy_pg_params *pp = &b->pp[b->n];
    if (npy_pg_params_init(pp, q->nslots) < 0) {
        Py_DECREF(vals);
        return -1;
    }
    for (int i = 0; i < q->nslots; i++) {
        if (npy_pg_params_set(pp, i, PyList_GET_ITEM(vals, i), names[i]) < 0) {
            npy_pg_params_free(pp);
            Py_DECREF(vals);
            return -1;
        }
    }
    Py_DECREF(vals);
    b->rows[b->n] = (nc_pg_params){pp->types, (const char *const *)pp->values, pp->lengths, pp->formats};
    b->n++;
    return 0;
}

PyObject *npy_pg_execute_many(nc_pool *pool, nc_pg_conn *pc, PyObject *query, PyObject *seq, double deadline,
                              int own_txn, int *committing)
{
    *committing = 0;
    Py_ssize_t len;
    const char *sql = PyUnicode_AsUTF8AndSize(query, &len);
    if (!sql)
        return NULL;
    PyObject *it = PyObject_GetIter(seq);
    if (!it)
        return NULL;
    if (!pc->session_dirty)
        pc->session_dirty = nc_sql_changes_session(sql, (size_t)len, NC_DIALECT_PG);
    nc_error err;
    nc_error_clear(&err);
    nc_sql q;
    if (nc_sql_translate(sql, (size_t)len, NC_DIALECT_PG, &q, &err) < 0) {
        Py_DECREF(it);
        npy_raise_error(&err);
        return NULL;
    }
    pg_batch *b = calloc(1, sizeof *b);
    npy_slot_name *names = malloc(sizeof *names * (size_t)(q.nslots > 0 ? q.nslots : 1));
    if (!b || !names) {
        free(b);
        free(names);
        nc_sql_free(&q);
        Py_DECREF(it);
        return PyErr_NoMemory();
    }
    for (int i = 0; i < q.nslots; i++)
        npy_param_name(&q, i, names[i], sizeof names[i]);
    long long total = 0;
    Py_ssize_t base = 0;            /* the sequence index of the batch's first row */
    int began = 0, last = 0;
    PyObject *next = PyIter_Next(it);   /* one ahead: the last pipeline carries the COMMIT */
    while (!last) {
        while (next && b->n < NPY_PG_BATCH) {
            int rc = batch_add(b, &q, (const npy_slot_name *)names, next);
            Py_DECREF(next);
            next = NULL;
            if (rc < 0) {
                npy_note_row(base + b->n);
                goto fail;
            }
            next = PyIter_Next(it);
        }
        if (PyErr_Occurred())
            goto fail;
        last = next == NULL;
        if (last && !began && b->n == 0)
            break;                  /* an empty sequence: nothing to run */
        const char *before = own_txn && !began ? "BEGIN" : NULL;
        const char *after = own_txn && last ? "COMMIT" : NULL;
        int failed = -1;
        long long n;
        npy_interrupt ir;
        npy_interrupt_arm(&ir);
        Py_BEGIN_ALLOW_THREADS
        n = nc_pg_exec_many(pc, q.sql, q.nslots, b->rows, b->n, before, after, deadline, &failed, &err);
        if (n < 0)
            nc_pool_statement_done(pool, &err);   /* the observer: a failover decision may follow */
        Py_END_ALLOW_THREADS
        int interrupted = npy_interrupt_disarm(&ir);
        began = 1;
        if (n >= 0)
            nc_pool_statement_done(pool, NULL);
        if (interrupted)
            goto fail;
        if (n < 0) {
            *committing = after != NULL;
            npy_raise_error(&err);
            if (failed >= 0)
                npy_note_row(base + failed);
            goto fail;
        }
        total += n;
        base += b->n;
        batch_clear(b);
    }
    batch_clear(b);
    free(b);
    free(names);
    nc_sql_free(&q);
    Py_DECREF(it);
    return PyLong_FromLongLong(total);
fail:
    Py_XDECREF(next);
    batch_clear(b);
    free(b);
    free(names);
    nc_sql_free(&q);
    Py_DECREF(it);
    return NULL;
}
