/* sqlite_exec.c - statements on a SQLite connection (see sqlite_exec.h). */
#include "sqlite_exec.h"
#include "interrupt.h"
#include "../core/nc_sqltext.h"
#include "../core/nc_time.h"

#include <string.h>

/* Only whitespace, comments and ';' from s on (SQLite's reading). */
static int blank(const char *s)
{
    return nc_sql_is_blank(s, strlen(s), NC_DIALECT_SQLITE);
}

/* PEP 249's description of a prepared statement: (name, declared type or
 * None, None x 5).  Read from the statement, so it is there for an empty
 * result too; the declared type is the type code (compare it with
 * noodlecore.dbapi.STRING ...: the core's nc_type_category reads it). */
static PyObject *sqlite_description(sqlite3_stmt *st, int ncols)
{
    PyObject *desc = PyList_New(ncols);
    if (!desc)
        return NULL;
    for (int j = 0; j < ncols; j++) {
        const char *nm = sqlite3_column_name(st, j);
        const char *decl = sqlite3_column_decltype(st, j);
        PyObject *item = Py_BuildValue("(szOOOOO)", nm ? nm : "?column?", decl, Py_None, Py_None, Py_None,
                                       Py_None, Py_None);
        if (!item) {
            Py_DECREF(desc);
            return NULL;
        }
        PyList_SET_ITEM(desc, j, item);
    }
    return desc;
}

/* Append the row st is on to rows (a tuple, or a dict keyed by names).
 * 0, or -1 with the exception set. */
static int sqlite_row(sqlite3_stmt *st, int ncols, int tuple, PyObject *names, PyObject *rows)
{
    PyObject *row = tuple ? PyTuple_New(ncols) : PyDict_New();
    if (!row || PyList_Append(rows, row) < 0) {
        Py_XDECREF(row);
        return -1;
    }
    Py_DECREF(row);
    for (int j = 0; j < ncols; j++) {
        PyObject *v = npy_sqlite_value(st, j);
        if (!v)
            return -1;
        if (tuple) {
            PyTuple_SET_ITEM(row, j, v);
        } else {
            int r2 = PyDict_SetItem(row, PyTuple_GET_ITEM(names, j), v);
            Py_DECREF(v);
            if (r2 < 0)
                return -1;
        }
    }
    return 0;
}

PyObject *npy_sqlite_execute(nc_pool *pool, nc_sqlite_conn *sc, PyObject *query, PyObject *params,
                             double deadline, double busy_wait, int shape, sqlite3_stmt **stream)
{
    const int tuple = shape != NPY_SHAPE_DICT, dbapi = shape >= NPY_SHAPE_DBAPI;
    if (shape != NPY_SHAPE_STREAM)
        stream = NULL;
    if (stream)
        *stream = NULL;
    /* DB-API: the last statement's description, row count and rowid. */
    PyObject *desc = NULL;
    long long rowcount = -1, lastrowid = 0;
    int has_rowid = 0;
    Py_ssize_t len;
    const char *sql = PyUnicode_AsUTF8AndSize(query, &len);
    if (!sql)
        return NULL;
    /* a PRAGMA that writes (or ATTACH, a temp table) closes the connection
     * on return: SQLite cannot reset them */
    if (!sc->session_dirty)
        sc->session_dirty = nc_sql_changes_session(sql, (size_t)len, NC_DIALECT_SQLITE);
    nc_error err;
    nc_error_clear(&err);
    nc_sql q;
    memset(&q, 0, sizeof q);
    PyObject *vals = NULL;
    if (params != Py_None) {
        if (nc_sql_translate(sql, (size_t)len, NC_DIALECT_SQLITE, &q, &err) < 0)
            return npy_raise_error(&err);
        vals = npy_params_ordered(&q, params);
        if (!vals) {
            nc_sql_free(&q);
            return NULL;
        }
        sql = q.sql;
    }
    /* Waiting on a lock is bounded by busy_timeout even without a statement
     * deadline; running is bounded by the statement deadline alone. */
    double busy_until = nc_now() + busy_wait;
    nc_sqlite_begin(sc, deadline, busy_until < deadline ? busy_until : deadline);

    /* Ctrl-C stops a wait on a lock (busy handler) or a long statement
     * (progress handler); both run only inside the GIL-free calls below. */
    npy_interrupt it;
    npy_interrupt_arm(&it);
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
                npy_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                         "only one statement can run when params are given");
                goto error_raised;
            }
            if (sqlite3_bind_parameter_count(st) > q.nslots) {
                sqlite3_finalize(st);
                npy_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                         "the statement has SQLite parameters of its own (?, :name); use %%s placeholders");
                goto error_raised;
            }
            for (int i = 0; i < q.nslots; i++) {
                char what[160];
                npy_param_name(&q, i, what, sizeof what);
                if (npy_sqlite_bind(st, i + 1, PyList_GET_ITEM(vals, i), what) < 0) {
                    sqlite3_finalize(st);
                    goto error_raised;
                }
            }
        }
        int ncols = sqlite3_column_count(st);
        PyObject *rows = NULL, *names = NULL;
        if (dbapi) {
            Py_CLEAR(desc);
            if (ncols > 0 && !(desc = sqlite_description(st, ncols))) {
                sqlite3_finalize(st);
                goto error_raised;
            }
        }
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
        /* A stream: the last statement's rows after the first are stepped
         * by npy_sqlite_stream_fetch. */
        int streaming = 0;
        for (;;) {
            Py_BEGIN_ALLOW_THREADS
            rc = sqlite3_step(st);
            Py_END_ALLOW_THREADS
            if (rc != SQLITE_ROW)
                break;
            if (!rows)
                continue;
            if (sqlite_row(st, ncols, tuple, names, rows) < 0) {
                rc = -1;
                break;
            }
            if (stream && blank(next)) {
                streaming = 1;
                break;
            }
        }
        Py_XDECREF(names);
        if (rc == -1) {
            Py_XDECREF(rows);
            sqlite3_finalize(st);
            goto error_raised;
        }
        if (rc != SQLITE_DONE && !streaming) {
            Py_XDECREF(rows);
            nc_sqlite_error(sc, rc, &err);
            sqlite3_finalize(st);
            goto error;
        }
        Py_XSETREF(result, rows);
        if (dbapi) {
            /* Python's sqlite3 rules: a count for what changes rows (the
             * verb, by the core's lexer: a CREATE changes none and has no
             * count), the rowid after an INSERT or REPLACE. */
            int verb = nc_sql_verb(tail, (size_t)(next - tail), NC_DIALECT_SQLITE);
            if (streaming)
                rowcount = -1;   /* known at the end */
            else if (rows)
                rowcount = PyList_GET_SIZE(rows);
            else
                rowcount = verb != NC_VERB_OTHER ? sqlite3_changes64(sc->db) : -1;
            has_rowid = verb == NC_VERB_INSERT;
            if (has_rowid)
                lastrowid = sqlite3_last_insert_rowid(sc->db);
        } else if (!rows) {
            sqlite3_int64 delta = sqlite3_total_changes64(sc->db) - before;
            int dml = !sqlite3_stmt_readonly(st) && delta > 0;
            result = PyLong_FromLongLong(dml ? sqlite3_changes64(sc->db) : (delta == 0 && !sqlite3_stmt_readonly(st) ? 0 : -1));
        }
        if (streaming)
            *stream = st;   /* the caller's now: stepped on, then finalized */
        else
            sqlite3_finalize(st);
        if (!result && !dbapi)   /* the count's int (a DB-API statement without rows has none) */
            goto error_raised;
        first = 0;
        tail = next;
    }
    if (npy_interrupt_disarm(&it)) {
        nc_error_set(&err, NC_E_INTERRUPTED, NC_K_OPERATIONAL, "interrupted");
        goto interrupted;
    }
    Py_XDECREF(vals);
    nc_sql_free(&q);
    nc_pool_statement_done(pool, NULL);
    if (dbapi) {
        PyObject *rid = has_rowid ? PyLong_FromLongLong(lastrowid) : Py_NewRef(Py_None);
        PyObject *out = rid ? Py_BuildValue("(OOLN)", desc ? desc : Py_None, result ? result : Py_None,
                                            rowcount, rid) : NULL;
        Py_XDECREF(desc);
        Py_XDECREF(result);
        return out;
    }
    if (!result)
        return PyLong_FromLong(-1);
    return result;
error:
    if (npy_interrupt_disarm(&it))
        goto interrupted;
    /* Counted and told to the pool's observer (maybe a failover decision:
     * not with the GIL held). */
    Py_BEGIN_ALLOW_THREADS
    nc_pool_statement_done(pool, &err);
    Py_END_ALLOW_THREADS
    npy_raise_error(&err);
    goto cleanup;
error_raised:
    npy_interrupt_disarm(&it);   /* a KeyboardInterrupt replaces the binding's error */
    /* A binding or conversion error: a failed statement, nothing to tell
     * about the endpoint (a query error carries no failure). */
    nc_error_set(&err, NC_E_QUERY, NC_K_NONE, "statement failed in the binding");
    nc_pool_statement_done(pool, &err);
    goto cleanup;
interrupted:
    /* KeyboardInterrupt is set; counted as a failed statement. */
    nc_pool_statement_done(pool, &err);
cleanup:
    if (stream && *stream) {
        sqlite3_finalize(*stream);
        *stream = NULL;
    }
    Py_XDECREF(desc);
    Py_XDECREF(result);
    Py_XDECREF(vals);
    nc_sql_free(&q);
    return NULL;
}

PyObject *npy_sqlite_stream_fetch(nc_pool *pool, nc_sqlite_conn *sc, sqlite3_stmt *st, int n, double deadline,
                                  double busy_wait, int *done)
{
    *done = 0;
    PyObject *rows = PyList_New(0);
    if (!rows)
        return NULL;
    double busy_until = nc_now() + busy_wait;
    nc_sqlite_begin(sc, deadline, busy_until < deadline ? busy_until : deadline);
    int ncols = sqlite3_column_count(st), rc = SQLITE_ROW;
    npy_interrupt it;
    npy_interrupt_arm(&it);
    for (int k = 0; k < n; k++) {
        Py_BEGIN_ALLOW_THREADS
        rc = sqlite3_step(st);
        Py_END_ALLOW_THREADS
        if (rc != SQLITE_ROW)
            break;
        if (sqlite_row(st, ncols, 1, NULL, rows) < 0) {
            rc = -1;
            break;
        }
    }
    int interrupted = npy_interrupt_disarm(&it);
    if (rc == SQLITE_ROW && !interrupted)
        return rows;
    *done = 1;   /* the end, or an error: either way the stream is over */
    if (rc == SQLITE_DONE && !interrupted)
        return rows;
    Py_DECREF(rows);
    nc_error err;
    nc_error_clear(&err);
    if (interrupted) {
        nc_error_set(&err, NC_E_INTERRUPTED, NC_K_OPERATIONAL, "interrupted");
        nc_pool_statement_done(pool, &err);   /* KeyboardInterrupt is set */
        return NULL;
    }
    if (rc == -1) {
        nc_error_set(&err, NC_E_QUERY, NC_K_NONE, "statement failed in the binding");
        nc_pool_statement_done(pool, &err);
        return NULL;
    }
    nc_sqlite_error(sc, rc, &err);
    Py_BEGIN_ALLOW_THREADS
    nc_pool_statement_done(pool, &err);
    Py_END_ALLOW_THREADS
    return npy_raise_error(&err);
}
