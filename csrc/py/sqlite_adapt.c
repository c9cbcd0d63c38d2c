/* sqlite_adapt.c - binding Python values to SQLite statement parameters.
 *
 * SQLite's storage classes: None -> NULL, bool/int -> INTEGER (64-bit),
 * float -> REAL (not NaN, which SQLite would store as NULL: refused with
 * 2015), str -> TEXT, bytes-likes -> BLOB.  Other supported types are
 * stored as TEXT: Decimal as str(), date/datetime/time in the sqlite3
 * module's form ("YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM]", i.e. str()), UUID as
 * str(), dict/list as JSON.  Text and blobs are bound SQLITE_TRANSIENT
 * (SQLite copies them), so nothing needs to outlive the call.
 */
#include "sqlite_adapt.h"

#include <math.h>
#include <stdio.h>
#include <string.h>


static int bind_text(sqlite3_stmt *stmt, int i, const char *u, Py_ssize_t len)
{
    /* an empty string must not be bound from a NULL pointer (that is NULL) */
    return sqlite3_bind_text64(stmt, i, len ? u : "", (sqlite3_uint64)len, SQLITE_TRANSIENT,
                               SQLITE_UTF8);
}

static int bind_blob(sqlite3_stmt *stmt, int i, const void *p, Py_ssize_t len)
{
    if (len == 0)
        return sqlite3_bind_zeroblob(stmt, i, 0);   /* x'' rather than NULL */
    return sqlite3_bind_blob64(stmt, i, p, (sqlite3_uint64)len, SQLITE_TRANSIENT);
}

/* Bind the str s (stolen) as TEXT.  1 on a bind error code in *rc, -1 on a
 * Python error, 0 on success. */
static int bind_str(sqlite3_stmt *stmt, int i, PyObject *s, const char *what, int *rc)
{
    Py_ssize_t len;
    const char *u = npy_adapt_utf8(s, &len, what);
    if (!u) {
        Py_DECREF(s);
        return -1;
    }
    *rc = bind_text(stmt, i, u, len);
    Py_DECREF(s);
    return 0;
}

int npy_sqlite_bind(sqlite3_stmt *stmt, int i, PyObject *value, const char *what)
{
    int rc = SQLITE_OK, kind, has_offset, len;
    char buf[64];
    PyObject *s;

    if (!what)
        what = "parameter";
    kind = npy_adapt_kind(value);
    switch (kind) {
    case NPY_V_NONE:
        rc = sqlite3_bind_null(stmt, i);
        break;

    case NPY_V_BOOL:
        rc = sqlite3_bind_int64(stmt, i, value == Py_True);
        break;

    case NPY_V_INT: {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) {
            npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING,
                            "%s: int value out of range for SQLite (64-bit signed integers)",
                            what);
            return -1;
        }
        if (x == -1 && PyErr_Occurred())
            return -1;
        rc = sqlite3_bind_int64(stmt, i, (sqlite3_int64)x);
        break;
    }

    case NPY_V_FLOAT:
        /* SQLite stores a NaN as NULL: refused rather than changed. */
        if (isnan(PyFloat_AS_DOUBLE(value))) {
            npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING,
                            "%s: float NaN cannot be stored by SQLite (it would become NULL)", what);
            return -1;
        }
        rc = sqlite3_bind_double(stmt, i, PyFloat_AS_DOUBLE(value));
        break;

    case NPY_V_STR:
        if (bind_str(stmt, i, Py_NewRef(value), what, &rc) < 0)
            return -1;
        break;

    case NPY_V_BYTES:
        rc = bind_blob(stmt, i, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
        break;

    case NPY_V_BUFFER: {
        Py_buffer view;
        if (PyObject_GetBuffer(value, &view, PyBUF_SIMPLE) == 0) {
            rc = bind_blob(stmt, i, view.buf, view.len);
            PyBuffer_Release(&view);
            break;
        }
        /* a non-contiguous memoryview: copy it */
        if (!PyErr_ExceptionMatches(PyExc_BufferError))
            return -1;
        PyErr_Clear();
        s = PyBytes_FromObject(value);
        if (!s)
            return -1;
        rc = bind_blob(stmt, i, PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s));
        Py_DECREF(s);
        break;
    }

    case NPY_V_DECIMAL:
    case NPY_V_UUID:
        s = PyObject_Str(value);
        if (!s || bind_str(stmt, i, s, what, &rc) < 0)
            return -1;
        break;

    case NPY_V_JSON:
        s = npy_adapt_json_dumps(value, what);
        if (!s || bind_str(stmt, i, s, what, &rc) < 0)
            return -1;
        break;

    case NPY_V_DATETIME:
    case NPY_V_DATE:
    case NPY_V_TIME:
        len = npy_adapt_format_temporal(value, kind, buf, sizeof buf, &has_offset);
        if (len < 0)
            return -1;
        rc = bind_text(stmt, i, buf, len);
        break;

    case NPY_V_TIMEDELTA:    /* no SQLite convention for durations */
    case NPY_V_OTHER:
        npy_adapt_type_error(what, value);
        return -1;

    default:                /* -1: error set by npy_adapt_kind */
        return -1;
    }

    if (rc != SQLITE_OK) {
        npy_adapt_raisef(NC_E_QUERY, NC_K_PROGRAMMING, "%s: cannot bind the value: %s", what,
                        sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}

PyObject *npy_sqlite_value(sqlite3_stmt *st, int j)
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
