/* connection.c - PooledConnection: running statements on a borrowed
 * connection, and the Transaction context.
 *
 * A PooledConnection is a (slot, lease) pair.  Every method first checks that
 * the lease is still the one it was given: after the connection went back to
 * the pool the object is dead (InterfaceError 2016) and can never reach a
 * connection now lent to someone else.  Statements run with the GIL
 * released; values are converted with it held.
 */
#include "pool.h"
#include "adapt.h"
#include "../core/nc_pg.h"
#include "../core/nc_sqlite.h"
#include "../core/nc_time.h"

static int check_live(NcConnection *self)
{
    if (self->released || !self->pool->pool || !nc_pool_lease_valid(self->pool->pool, self->c, self->lease)) {
        nc_raise(NC_E_RELEASED, NC_K_INTERFACE, NULL,
                 "this connection was returned to the pool; borrow a new one");
        return -1;
    }
    return 0;
}

/* One operation at a time per PooledConnection.  A statement runs with the
 * GIL released, so without this a second thread using (or releasing) the
 * same object could reach a connection that is in use or being closed. */
static int op_begin(NcConnection *self)
{
    if (check_live(self) < 0)
        return -1;
    if (self->busy) {
        nc_raise(NC_E_IN_USE, NC_K_INTERFACE, NULL,
                 "this connection is in use by another thread; borrow one per thread");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static void op_end(NcConnection *self)
{
    self->busy = 0;
    if (self->pending_release) {
        int discard = self->pending_release == 2;
        self->pending_release = 0;
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        nc_connection_release(self, discard);
        PyErr_Restore(et, ev, tb);
    }
}

void nc_connection_release(NcConnection *self, int discard)
{
    if (self->released)
        return;
    if (self->busy) {
        /* Another thread is inside a method: it gives the connection back
         * when it finishes. */
        if (discard || !self->pending_release)
            self->pending_release = discard ? 2 : 1;
        return;
    }
    self->released = 1;
    self->in_txn = 0;
    NcPool *pool = self->pool;
    nc_conn *c = self->c;
    if (!pool->pool || !nc_pool_lease_valid(pool->pool, c, self->lease))
        return;
    if (!discard && self->suspect) {
        /* A Python backend raised while we had it: check it before reuse. */
        const nc_backend_ops *ops = nc_pool_ops(pool->pool);
        nc_error err;
        if (ops->ping(nc_pool_ctx(pool->pool), c->raw,
                      nc_now() + nc_pool_config_of(pool->pool)->validation_timeout, &err) < 0)
            discard = 1;
    }
    /* Rolling back or closing is I/O: not with the GIL held.  A clean
     * return is a few instructions under the pool mutex. */
    if (pool->kind != NC_BACKEND_PY && (discard || nc_pool_release_blocks(pool->pool, c))) {
        nc_pool *p = pool->pool;
        Py_BEGIN_ALLOW_THREADS
        nc_pool_release(p, c, discard);
        Py_END_ALLOW_THREADS
    } else {
        nc_pool_release(pool->pool, c, discard);
    }
}

static void conn_dealloc(NcConnection *self)
{
    /* Dropped without release(): give it back rather than leak the slot. */
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    nc_connection_release(self, 0);
    PyErr_Restore(et, ev, tb);
    Py_CLEAR(self->pool);
    PyObject_Free(self);
}

static double deadline_for(NcConnection *self, PyObject *timeout, int *bad)
{
    double t = self->pool->query_timeout;
    if (timeout && timeout != Py_None) {
        if (PyBool_Check(timeout) || !(PyLong_Check(timeout) || PyFloat_Check(timeout))) {
            nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout must be a number of seconds or None, not %s",
                     Py_TYPE(timeout)->tp_name);
            *bad = 1;
            return 0;
        }
        t = PyFloat_AsDouble(timeout);
        if (t == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout is too large");
            *bad = 1;
            return 0;
        }
        if (!(t > 0)) {
            nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout must be a positive number of seconds");
            *bad = 1;
            return 0;
        }
    }
    return t < 0 ? NC_NO_DEADLINE : nc_now() + t;
}

static int row_format_arg(NcConnection *self, PyObject *rf, int *tuple)
{
    *tuple = self->row_tuple;
    if (!rf || rf == Py_None)
        return 0;
    if (PyUnicode_Check(rf)) {
        if (PyUnicode_CompareWithASCIIString(rf, "tuple") == 0) {
            *tuple = 1;
            return 0;
        }
        if (PyUnicode_CompareWithASCIIString(rf, "dict") == 0) {
            *tuple = 0;
            return 0;
        }
    }
    nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "row_format must be 'dict' or 'tuple'");
    return -1;
}

/* ---- parameters ---------------------------------------------------------- */

/* Resolve params against the placeholders found in sql.  Returns a new list
 * of values in slot order, or NULL with ProgrammingError (2014). */
static PyObject *ordered_params(const nc_sql *q, PyObject *params)
{
    int is_map = PyDict_Check(params) || (!PyList_Check(params) && !PyTuple_Check(params) &&
                                          PyMapping_Check(params) && !PyUnicode_Check(params) &&
                                          !PyBytes_Check(params));
    if (q->style == NC_STYLE_NAMED) {
        if (!is_map)
            return nc_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                            "the query uses %%(name)s placeholders, so params must be a mapping, not %s",
                            Py_TYPE(params)->tp_name);
        PyObject *out = PyList_New(q->nslots);
        if (!out)
            return NULL;
        for (int i = 0; i < q->nslots; i++) {
            PyObject *key = PyUnicode_FromString(q->names[i]);
            if (!key) {
                Py_DECREF(out);
                return NULL;
            }
            PyObject *v = PyObject_GetItem(params, key);
            Py_DECREF(key);
            if (!v) {
                if (PyErr_ExceptionMatches(PyExc_KeyError)) {
                    PyErr_Clear();
                    nc_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                             "query parameter '%s' is missing from params", q->names[i]);
                }
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(out, i, v);
        }
        return out;
    }
    if (is_map) {
        if (q->style == NC_STYLE_NONE) {
            Py_ssize_t len = PyObject_Length(params);
            if (len < 0)
                return NULL;
            if (len == 0)
                return PyList_New(0);
        }
        return nc_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                        q->style == NC_STYLE_NONE
                            ? "params were given but the query has no placeholders"
                            : "the query uses %%s placeholders, so params must be a sequence, not a mapping");
    }
    if (PyUnicode_Check(params) || PyBytes_Check(params) || PyByteArray_Check(params) ||
        !PySequence_Check(params))
        return nc_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                        "params must be a sequence or a mapping, not %s (wrap one value as (value,))",
                        Py_TYPE(params)->tp_name);
    PyObject *seq = PySequence_Fast(params, "params must be a sequence or a mapping");
    if (!seq) {
        PyErr_Clear();
        return nc_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL, "params must be a sequence or a mapping, not %s",
                        Py_TYPE(params)->tp_name);
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n != q->nslots) {
        Py_DECREF(seq);
        return nc_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                        "the query has %d placeholder%s but %zd parameter%s given", q->nslots,
                        q->nslots == 1 ? "" : "s", n, n == 1 ? " was" : "s were");
    }
    PyObject *out = PySequence_List(seq);
    Py_DECREF(seq);
    return out;
}

static void param_name(const nc_sql *q, int i, char *buf, size_t cap)
{
    if (q->style == NC_STYLE_NAMED)
        snprintf(buf, cap, "parameter '%s'", q->names[i]);
    else
        snprintf(buf, cap, "parameter %d", i + 1);
}

/* ---- PostgreSQL -------------------------------------------------------- */

static PyObject *pg_rows(PGresult *res, int tuple)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    nc_pg_decoder dec[ncols > 0 ? ncols : 1];
    PyObject *names = NULL;
    PyObject *rows = PyList_New(nrows);
    if (!rows)
        return NULL;
    for (int j = 0; j < ncols; j++)
        dec[j] = nc_pg_decoder_for(PQftype(res, j));
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

static PyObject *pg_result_value(PGresult *res, int tuple)
{
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        return pg_rows(res, tuple);
    const char *n = PQcmdTuples(res);
    if (n && *n)
        return PyLong_FromString(n, NULL, 10);
    return PyLong_FromLong(-1);
}

/* Run one statement; returns a new PGresult or NULL with the exception set. */
static PGresult *pg_run(NcConnection *self, const char *sql, Py_ssize_t sqllen, PyObject *params,
                        double deadline)
{
    nc_pg_conn *pc = self->c->raw;
    nc_error err;
    nc_error_clear(&err);
    PGresult *res = NULL;
    if (params == Py_None) {
        Py_BEGIN_ALLOW_THREADS
        res = nc_pg_exec(pc, sql, -1, NULL, NULL, NULL, NULL, deadline, &err);
        Py_END_ALLOW_THREADS
    } else {
        nc_sql q;
        if (nc_sql_translate(sql, (size_t)sqllen, NC_DIALECT_PG, &q, &err) < 0) {
            nc_raise_error(&err);
            return NULL;
        }
        PyObject *vals = ordered_params(&q, params);
        if (!vals) {
            nc_sql_free(&q);
            return NULL;
        }
        nc_pg_params pp;
        if (nc_pg_params_init(&pp, q.nslots) < 0) {
            Py_DECREF(vals);
            nc_sql_free(&q);
            return NULL;
        }
        for (int i = 0; i < q.nslots; i++) {
            char what[160];
            param_name(&q, i, what, sizeof what);
            if (nc_pg_params_set(&pp, i, PyList_GET_ITEM(vals, i), what) < 0) {
                nc_pg_params_free(&pp);
                Py_DECREF(vals);
                nc_sql_free(&q);
                return NULL;
            }
        }
        Py_BEGIN_ALLOW_THREADS
        res = nc_pg_exec(pc, q.sql, q.nslots, pp.types, (const char *const *)pp.values, pp.lengths,
                         pp.formats, deadline, &err);
        Py_END_ALLOW_THREADS
        nc_pg_params_free(&pp);
        Py_DECREF(vals);
        nc_sql_free(&q);
    }
    if (!res) {
        nc_pool_count_query(self->pool->pool, 1);
        nc_failover_report(self->pool, &err);
        nc_raise_error(&err);
        return NULL;
    }
    nc_pool_count_query(self->pool->pool, 0);
    return res;
}

static PyObject *pg_execute(NcConnection *self, PyObject *query, PyObject *params, double deadline, int tuple)
{
    Py_ssize_t len;
    const char *sql = PyUnicode_AsUTF8AndSize(query, &len);
    if (!sql)
        return NULL;
    PGresult *res = pg_run(self, sql, len, params, deadline);
    if (!res)
        return NULL;
    PyObject *out = pg_result_value(res, tuple);
    PQclear(res);
    return out;
}

/* ---- SQLite ------------------------------------------------------------ */

static PyObject *sqlite_value(sqlite3_stmt *st, int j)
{
    switch (sqlite3_column_type(st, j)) {
    case SQLITE_INTEGER:
        return PyLong_FromLongLong(sqlite3_column_int64(st, j));
    case SQLITE_FLOAT:
        return PyFloat_FromDouble(sqlite3_column_double(st, j));
    case SQLITE_TEXT: {
        const char *t = (const char *)sqlite3_column_text(st, j);
        int n = sqlite3_column_bytes(st, j);
        return PyUnicode_DecodeUTF8(t ? t : "", n, "replace");
    }
    case SQLITE_BLOB: {
        const void *b = sqlite3_column_blob(st, j);
        int n = sqlite3_column_bytes(st, j);
        return PyBytes_FromStringAndSize(b ? b : "", n);
    }
    default:
        Py_RETURN_NONE;
    }
}

static int blank(const char *s)
{
    for (; *s; s++) {
        if (*s == '-' && s[1] == '-') {
            while (*s && *s != '\n')
                s++;
            if (!*s)
                break;
        } else if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != ';') {
            return 0;
        }
    }
    return 1;
}

static PyObject *sqlite_execute(NcConnection *self, PyObject *query, PyObject *params, double deadline,
                                int tuple)
{
    nc_sqlite_conn *sc = self->c->raw;
    Py_ssize_t len;
    const char *sql = PyUnicode_AsUTF8AndSize(query, &len);
    if (!sql)
        return NULL;
    nc_error err;
    nc_error_clear(&err);
    nc_sql q;
    memset(&q, 0, sizeof q);
    PyObject *vals = NULL;
    if (params != Py_None) {
        if (nc_sql_translate(sql, (size_t)len, NC_DIALECT_SQLITE, &q, &err) < 0)
            return nc_raise_error(&err);
        vals = ordered_params(&q, params);
        if (!vals) {
            nc_sql_free(&q);
            return NULL;
        }
        sql = q.sql;
    }
    /* Waiting on a lock is bounded by busy_timeout even without a statement
     * deadline; running is bounded by the statement deadline alone. */
    double busy_until = nc_now() + self->pool->busy_wait;
    nc_sqlite_begin(sc, deadline, busy_until < deadline ? busy_until : deadline);

    PyObject *result = NULL;
    const char *tail = sql;
    int first = 1;
    while (tail && *tail) {
        if (!first && blank(tail))
            break;
        sqlite3_stmt *st = NULL;
        const char *next = NULL;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = sqlite3_prepare_v2(sc->db, tail, -1, &st, &next);
        Py_END_ALLOW_THREADS
        if (rc != SQLITE_OK) {
            nc_sqlite_error(sc, rc, &err);
            goto error;
        }
        if (!st) {   /* only whitespace or a comment */
            tail = next;
            continue;
        }
        if (vals) {
            if (!blank(next)) {
                sqlite3_finalize(st);
                nc_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                         "only one statement can run when params are given");
                goto error_raised;
            }
            if (sqlite3_bind_parameter_count(st) > q.nslots) {
                sqlite3_finalize(st);
                nc_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                         "the statement has SQLite parameters of its own (?, :name); use %%s placeholders");
                goto error_raised;
            }
            for (int i = 0; i < q.nslots; i++) {
                char what[160];
                param_name(&q, i, what, sizeof what);
                if (nc_sqlite_bind(st, i + 1, PyList_GET_ITEM(vals, i), what) < 0) {
                    sqlite3_finalize(st);
                    goto error_raised;
                }
            }
        }
        int ncols = sqlite3_column_count(st);
        PyObject *rows = NULL, *names = NULL;
        if (ncols > 0) {
            rows = PyList_New(0);
            if (!tuple) {
                names = PyTuple_New(ncols);
                for (int j = 0; names && j < ncols; j++) {
                    const char *nm = sqlite3_column_name(st, j);
                    PyObject *s = PyUnicode_FromString(nm ? nm : "?column?");
                    if (!s) {
                        Py_CLEAR(names);
                        break;
                    }
                    PyTuple_SET_ITEM(names, j, s);
                }
            }
            if (!rows || (!tuple && !names)) {
                Py_XDECREF(rows);
                Py_XDECREF(names);
                sqlite3_finalize(st);
                goto error_raised;
            }
        }
        sqlite3_int64 before = sqlite3_total_changes64(sc->db);
        for (;;) {
            Py_BEGIN_ALLOW_THREADS
            rc = sqlite3_step(st);
            Py_END_ALLOW_THREADS
            if (rc != SQLITE_ROW)
                break;
            if (!rows)
                continue;
            PyObject *row = tuple ? PyTuple_New(ncols) : PyDict_New();
            if (!row || PyList_Append(rows, row) < 0) {
                Py_XDECREF(row);
                rc = -1;
                break;
            }
            Py_DECREF(row);
            for (int j = 0; j < ncols; j++) {
                PyObject *v = sqlite_value(st, j);
                if (!v) {
                    rc = -1;
                    break;
                }
                if (tuple) {
                    PyTuple_SET_ITEM(row, j, v);
                } else {
                    int r2 = PyDict_SetItem(row, PyTuple_GET_ITEM(names, j), v);
                    Py_DECREF(v);
                    if (r2 < 0) {
                        rc = -1;
                        break;
                    }
                }
            }
            if (rc == -1)
                break;
        }
        Py_XDECREF(names);
        if (rc == -1) {
            Py_XDECREF(rows);
            sqlite3_finalize(st);
            goto error_raised;
        }
        if (rc != SQLITE_DONE) {
            Py_XDECREF(rows);
            nc_sqlite_error(sc, rc, &err);
            sqlite3_finalize(st);
            goto error;
        }
        Py_XSETREF(result, rows);
        if (!rows) {
            sqlite3_int64 delta = sqlite3_total_changes64(sc->db) - before;
            int dml = !sqlite3_stmt_readonly(st) && delta > 0;
            result = PyLong_FromLongLong(dml ? sqlite3_changes64(sc->db) : (delta == 0 && !sqlite3_stmt_readonly(st) ? 0 : -1));
        }
        sqlite3_finalize(st);
        if (!result)
            goto error_raised;
        first = 0;
        tail = next;
    }
    Py_XDECREF(vals);
    nc_sql_free(&q);
    nc_pool_count_query(self->pool->pool, 0);
    if (!result)
        return PyLong_FromLong(-1);
    return result;
error:
    nc_failover_report(self->pool, &err);
    nc_raise_error(&err);
error_raised:
    Py_XDECREF(result);
    Py_XDECREF(vals);
    nc_sql_free(&q);
    nc_pool_count_query(self->pool->pool, 1);
    return NULL;
}

/* ---- Python backend ------------------------------------------------------ */

static PyObject *py_execute(NcConnection *self, PyObject *query, PyObject *params)
{
    PyObject *backend = nc_py_conn_object(self->c->raw);
    PyObject *res = PyObject_CallMethod(backend, "execute_query", "OO", query, params);
    if (!res) {
        self->suspect = 1;
        nc_pool_count_query(self->pool->pool, 1);
        nc_failover_report_exception(self->pool);
        return NULL;
    }
    nc_pool_count_query(self->pool->pool, 0);
    return res;
}

/* ---- methods ------------------------------------------------------------- */

static PyObject *execute_one(NcConnection *self, PyObject *query, PyObject *params, PyObject *timeout,
                             PyObject *row_format)
{
    if (!PyUnicode_Check(query))
        return nc_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL, "query must be a str, not %s",
                        Py_TYPE(query)->tp_name);
    Py_ssize_t qlen;
    const char *qtext = PyUnicode_AsUTF8AndSize(query, &qlen);
    if (!qtext)
        return NULL;
    /* Both libpq and SQLite stop reading at a NUL: the server would run a
     * cut-down statement. */
    if (memchr(qtext, '\0', (size_t)qlen))
        return nc_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL, "the query contains a NUL character");
    int bad = 0, tuple;
    double deadline = deadline_for(self, timeout, &bad);
    if (bad || row_format_arg(self, row_format, &tuple) < 0)
        return NULL;
    switch (self->pool->kind) {
    case NC_BACKEND_PG:
        return pg_execute(self, query, params, deadline, tuple);
    case NC_BACKEND_SQLITE:
        return sqlite_execute(self, query, params, deadline, tuple);
    default:
        return py_execute(self, query, params);
    }
}

/* Vectorcall argument parsing by hand: execute_query is the hot path, and
 * PyArg_ParseTupleAndKeywords costs a noticeable share of a local round trip. */
static int parse_execute_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    static const char *const names[] = {"query", "params", "timeout", "row_format"};
    const Py_ssize_t nnames = 4;
    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError, "execute_query() takes at most 4 arguments (%zd given)", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nnames; i++)
        out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        for (; i < nnames; i++)
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0)
                break;
        if (i == nnames) {
            PyErr_Format(PyExc_TypeError, "execute_query() got an unexpected keyword argument '%U'", key);
            return -1;
        }
        if (out[i]) {
            PyErr_Format(PyExc_TypeError, "execute_query() got multiple values for argument '%s'", names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    if (!out[0]) {
        PyErr_SetString(PyExc_TypeError, "execute_query() missing required argument 'query'");
        return -1;
    }
    for (Py_ssize_t i = 1; i < nnames; i++)
        if (!out[i])
            out[i] = Py_None;
    return 0;
}

static PyObject *conn_execute_query(NcConnection *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    PyObject *a[4];
    if (parse_execute_args(args, nargs, kwnames, a) < 0)
        return NULL;
    PyObject *query = a[0], *params = a[1], *timeout = a[2], *rf = a[3];
    if (op_begin(self) < 0)
        return NULL;
    PyObject *r = execute_one(self, query, params, timeout, rf);
    op_end(self);
    return r;
}

static int run_command(NcConnection *self, const char *sql)
{
    nc_error err;
    nc_error_clear(&err);
    int rc;
    double deadline = self->pool->query_timeout < 0 ? nc_now() + 30.0 : nc_now() + self->pool->query_timeout;
    if (self->pool->kind == NC_BACKEND_PG) {
        nc_pg_conn *pc = self->c->raw;
        Py_BEGIN_ALLOW_THREADS
        rc = nc_pg_command(pc, sql, deadline, &err);
        Py_END_ALLOW_THREADS
    } else if (self->pool->kind == NC_BACKEND_SQLITE) {
        nc_sqlite_conn *sc = self->c->raw;
        Py_BEGIN_ALLOW_THREADS
        rc = nc_sqlite_command(sc, sql, deadline, &err);
        Py_END_ALLOW_THREADS
    } else {
        /* Python backends: use begin()/commit()/rollback() methods if the
         * backend has them, else send the SQL. */
        PyObject *backend = nc_py_conn_object(self->c->raw);
        const char *meth = !strcmp(sql, "BEGIN") ? "begin" : !strcmp(sql, "COMMIT") ? "commit" : "rollback";
        PyObject *res = PyObject_HasAttrString(backend, meth)
                            ? PyObject_CallMethod(backend, meth, NULL)
                            : PyObject_CallMethod(backend, "execute_query", "sO", sql, Py_None);
        if (!res) {
            self->suspect = 1;
            return -1;
        }
        Py_DECREF(res);
        return 0;
    }
    if (rc < 0) {
        nc_failover_report(self->pool, &err);
        nc_raise_error(&err);
        return -1;
    }
    return 0;
}

static PyObject *begin_impl(NcConnection *self)
{
    if (self->in_txn)
        return nc_raise(NC_E_TXN_STATE, NC_K_PROGRAMMING, NULL, "a transaction is already open on this connection");
    if (run_command(self, "BEGIN") < 0)
        return NULL;
    self->in_txn = 1;
    Py_RETURN_NONE;
}

static PyObject *conn_begin(NcConnection *self, PyObject *unused)
{
    (void)unused;
    if (op_begin(self) < 0)
        return NULL;
    PyObject *r = begin_impl(self);
    op_end(self);
    return r;
}

static PyObject *end_impl(NcConnection *self, const char *sql)
{
    /* Outside begin() every statement has already committed: nothing to do,
     * as with DB-API drivers in autocommit mode. */
    int open = self->in_txn;
    if (!open && self->pool->kind == NC_BACKEND_PG)
        open = PQtransactionStatus(((nc_pg_conn *)self->c->raw)->pg) != PQTRANS_IDLE;
    if (!open && self->pool->kind == NC_BACKEND_SQLITE)
        open = !sqlite3_get_autocommit(((nc_sqlite_conn *)self->c->raw)->db);
    self->in_txn = 0;
    if (!open)
        Py_RETURN_NONE;
    if (run_command(self, sql) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *conn_end(NcConnection *self, const char *sql)
{
    if (op_begin(self) < 0)
        return NULL;
    PyObject *r = end_impl(self, sql);
    op_end(self);
    return r;
}

static PyObject *conn_commit(NcConnection *self, PyObject *unused)
{
    (void)unused;
    return conn_end(self, "COMMIT");
}

static PyObject *conn_rollback(NcConnection *self, PyObject *unused)
{
    (void)unused;
    return conn_end(self, "ROLLBACK");
}

static PyObject *execute_many_impl(NcConnection *self, PyObject *query, PyObject *seq, PyObject *timeout);

static PyObject *conn_execute_many(NcConnection *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"query", "seq_of_params", "timeout", NULL};
    PyObject *query, *seq, *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O:execute_many", kwlist, &query, &seq, &timeout))
        return NULL;
    if (op_begin(self) < 0)
        return NULL;
    PyObject *r = execute_many_impl(self, query, seq, timeout);
    op_end(self);
    return r;
}

static PyObject *execute_many_impl(NcConnection *self, PyObject *query, PyObject *seq, PyObject *timeout)
{
    PyObject *it = PyObject_GetIter(seq);
    if (!it)
        return NULL;
    /* All or nothing: outside a transaction the batch gets its own. */
    int own = !self->in_txn;
    if (own) {
        if (run_command(self, "BEGIN") < 0) {
            Py_DECREF(it);
            return NULL;
        }
        self->in_txn = 1;
    }
    long long total = 0;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        PyObject *r = execute_one(self, query, item, timeout, Py_None);
        Py_DECREF(item);
        if (!r)
            goto fail;
        if (PyLong_Check(r)) {
            long long n = PyLong_AsLongLong(r);
            if (n > 0)
                total += n;
        }
        Py_DECREF(r);
    }
    Py_DECREF(it);
    it = NULL;
    if (PyErr_Occurred())
        goto fail;
    if (own) {
        self->in_txn = 0;
        if (run_command(self, "COMMIT") < 0)
            return NULL;
    }
    return PyLong_FromLongLong(total);
fail:
    Py_XDECREF(it);
    if (own && !self->released && nc_pool_lease_valid(self->pool->pool, self->c, self->lease)) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        self->in_txn = 0;
        if (run_command(self, "ROLLBACK") < 0)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
    }
    return NULL;
}

static PyObject *conn_release(NcConnection *self, PyObject *unused)
{
    (void)unused;
    nc_connection_release(self, 0);
    Py_RETURN_NONE;
}

static PyObject *conn_discard(NcConnection *self, PyObject *unused)
{
    (void)unused;
    nc_connection_release(self, 1);
    Py_RETURN_NONE;
}

static PyObject *conn_ping(NcConnection *self, PyObject *unused)
{
    (void)unused;
    if (op_begin(self) < 0)
        return NULL;
    const nc_backend_ops *ops = nc_pool_ops(self->pool->pool);
    void *ctx = nc_pool_ctx(self->pool->pool), *raw = self->c->raw;
    double deadline = nc_now() + nc_pool_config_of(self->pool->pool)->validation_timeout;
    nc_error err;
    int rc;
    if (self->pool->kind == NC_BACKEND_PY) {
        rc = ops->ping(ctx, raw, deadline, &err);
    } else {
        Py_BEGIN_ALLOW_THREADS
        rc = ops->ping(ctx, raw, deadline, &err);
        Py_END_ALLOW_THREADS
    }
    op_end(self);
    return PyBool_FromLong(rc == 0);
}

static PyObject *conn_transaction(NcConnection *self, PyObject *unused)
{
    (void)unused;
    if (check_live(self) < 0)
        return NULL;
    NcTransaction *t = PyObject_New(NcTransaction, &NcTransaction_Type);
    if (!t)
        return NULL;
    t->conn = (NcConnection *)Py_NewRef((PyObject *)self);
    t->started = 0;
    return (PyObject *)t;
}

static PyObject *conn_enter(NcConnection *self, PyObject *unused)
{
    (void)unused;
    if (check_live(self) < 0)
        return NULL;
    return Py_NewRef((PyObject *)self);
}

static PyObject *conn_exit(NcConnection *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    nc_connection_release(self, 0);
    Py_RETURN_FALSE;
}

static PyObject *conn_get_valid(NcConnection *self, void *c)
{
    (void)c;
    return PyBool_FromLong(!self->released && self->pool->pool &&
                           nc_pool_lease_valid(self->pool->pool, self->c, self->lease));
}

static PyObject *conn_get_in_txn(NcConnection *self, void *c)
{
    (void)c;
    if (check_live(self) < 0)
        return NULL;
    if (self->pool->kind == NC_BACKEND_PG)
        return PyBool_FromLong(PQtransactionStatus(((nc_pg_conn *)self->c->raw)->pg) != PQTRANS_IDLE);
    if (self->pool->kind == NC_BACKEND_SQLITE)
        return PyBool_FromLong(!sqlite3_get_autocommit(((nc_sqlite_conn *)self->c->raw)->db));
    return PyBool_FromLong(self->in_txn);
}

static PyObject *conn_get_pid(NcConnection *self, void *c)
{
    (void)c;
    if (check_live(self) < 0)
        return NULL;
    if (self->pool->kind != NC_BACKEND_PG)
        Py_RETURN_NONE;
    return PyLong_FromLong(nc_pg_backend_pid(self->c->raw));
}

static PyObject *conn_get_backend(NcConnection *self, void *c)
{
    (void)c;
    if (check_live(self) < 0)
        return NULL;
    if (self->pool->kind != NC_BACKEND_PY)
        Py_RETURN_NONE;
    return Py_NewRef(nc_py_conn_object(self->c->raw));
}

static PyObject *conn_get_serial(NcConnection *self, void *c)
{
    (void)c;
    if (check_live(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(self->c->serial);
}

static PyObject *conn_repr(NcConnection *self)
{
    int live = !self->released && self->pool->pool && nc_pool_lease_valid(self->pool->pool, self->c, self->lease);
    return PyUnicode_FromFormat("<PooledConnection %U %s>", self->pool->display, live ? "borrowed" : "returned");
}

static PyMethodDef conn_methods[] = {
    {"execute_query", (PyCFunction)(void (*)(void))conn_execute_query, METH_FASTCALL | METH_KEYWORDS,
     "execute_query(query, params=None, timeout=None, row_format=None)\n--\n\n"
     "Run one statement. Placeholders: %s with a sequence, %(name)s with a mapping, %% for a\n"
     "literal %. Values are bound by the server. Returns a list of rows (dicts, or tuples with\n"
     "row_format='tuple') when the statement returns rows, else the number of rows affected\n"
     "(-1 when the statement has no count). timeout is a deadline in seconds: when it passes the\n"
     "statement is cancelled on the server and QueryTimeoutError (2012) is raised. Outside\n"
     "begin()/transaction() each statement commits on its own. With params=None the SQL is sent\n"
     "as it is (several statements allowed)."},
    {"execute_many", (PyCFunction)(void (*)(void))conn_execute_many, METH_VARARGS | METH_KEYWORDS,
     "execute_many(query, seq_of_params, timeout=None)\n--\n\n"
     "Run query once per parameter set, all in one transaction (its own unless one is open);\n"
     "returns the total number of rows affected."},
    {"begin", (PyCFunction)conn_begin, METH_NOARGS, "Open a transaction (ProgrammingError 2017 if one is open)."},
    {"commit", (PyCFunction)conn_commit, METH_NOARGS, "Commit the open transaction (no-op outside one)."},
    {"rollback", (PyCFunction)conn_rollback, METH_NOARGS, "Roll back the open transaction (no-op outside one)."},
    {"transaction", (PyCFunction)conn_transaction, METH_NOARGS,
     "A context manager: begins, commits at the end, or rolls back if the block raises."},
    {"ping", (PyCFunction)conn_ping, METH_NOARGS, "Round-trip health check; True when it answered."},
    {"release", (PyCFunction)conn_release, METH_NOARGS,
     "Give the connection back to the pool; this object is dead afterwards."},
    {"close", (PyCFunction)conn_release, METH_NOARGS, "Same as release()."},
    {"discard", (PyCFunction)conn_discard, METH_NOARGS,
     "Give the connection back to be closed, not reused; this object is dead afterwards."},
    {"__enter__", (PyCFunction)conn_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))conn_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef conn_getset[] = {
    {"valid", (getter)conn_get_valid, NULL, "True while this object still holds its borrow.", NULL},
    {"in_transaction", (getter)conn_get_in_txn, NULL, "True while a transaction is open.", NULL},
    {"backend_pid", (getter)conn_get_pid, NULL, "PostgreSQL server process id (None for other backends).", NULL},
    {"backend", (getter)conn_get_backend, NULL, "The Python backend object (None for native backends).", NULL},
    {"connection_id", (getter)conn_get_serial, NULL, "Serial number of the underlying connection in its pool.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject NcConnection_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore.database.connection_pool.PooledConnection",
    .tp_basicsize = sizeof(NcConnection),
    .tp_dealloc = (destructor)conn_dealloc,
    .tp_repr = (reprfunc)conn_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A connection borrowed from a DatabaseConnectionPool.\n\n"
              "Valid until it goes back to the pool (end of the with-block or release()); any use\n"
              "after that raises InterfaceError (2016).",
    .tp_methods = conn_methods,
    .tp_getset = conn_getset,
};

/* ---- Transaction --------------------------------------------------------- */

static void txn_dealloc(NcTransaction *self)
{
    Py_CLEAR(self->conn);
    PyObject_Free(self);
}

static PyObject *txn_enter(NcTransaction *self, PyObject *unused)
{
    (void)unused;
    PyObject *r = conn_begin(self->conn, NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    self->started = 1;
    return Py_NewRef((PyObject *)self->conn);
}

static PyObject *txn_exit(NcTransaction *self, PyObject *const *args, Py_ssize_t nargs)
{
    int failed = nargs > 0 && args[0] != Py_None;
    if (!self->started)
        Py_RETURN_FALSE;
    self->started = 0;
    PyObject *r = conn_end(self->conn, failed ? "ROLLBACK" : "COMMIT");
    if (!r) {
        if (failed) {
            /* Keep the block's own exception: the rollback failing (say the
             * connection is gone) must not hide why it was rolled back. */
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyMethodDef txn_methods[] = {
    {"__enter__", (PyCFunction)txn_enter, METH_NOARGS, "BEGIN; returns the connection."},
    {"__exit__", (PyCFunction)(void (*)(void))txn_exit, METH_FASTCALL,
     "COMMIT, or ROLLBACK when the block raised (the exception propagates)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject NcTransaction_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore._native.Transaction",
    .tp_basicsize = sizeof(NcTransaction),
    .tp_dealloc = (destructor)txn_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Context manager of PooledConnection.transaction().",
    .tp_methods = txn_methods,
};
