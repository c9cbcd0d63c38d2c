/* adapt.h - what the PostgreSQL and SQLite value converters share:
 * classifying a Python value, formatting dates and times, building them
 * (the datetime C API lives in adapt.c only), error helpers, and matching
 * the params a caller gave to the placeholders the core found.
 */
#ifndef NPY_ADAPT_H
#define NPY_ADAPT_H

#include "errors.h"
#include "../core/nc_params.h"

/* What a statement's result is returned as (pg_exec.c, sqlite_exec.c):
 * execute_query's rows as dicts or tuples (else the affected row count),
 * or the DB-API cursor's (description, rows, rowcount, lastrowid). */
enum npy_shape { NPY_SHAPE_DICT = 0, NPY_SHAPE_TUPLE = 1, NPY_SHAPE_DBAPI = 2,
                 NPY_SHAPE_STREAM = 3 /* DBAPI, PostgreSQL rows streamed (pg_exec.h) */ };

/* Initialise the caches (Decimal, UUID, json, the datetime C API). -1 on error. */
int npy_adapt_init(void);

/* What a Python value is, for choosing a conversion. */
enum npy_vkind {
    NPY_V_NONE, NPY_V_BOOL, NPY_V_INT, NPY_V_FLOAT, NPY_V_STR,
    NPY_V_BYTES,        /* bytes (immutable: may be referenced) */
    NPY_V_BUFFER,       /* bytearray, memoryview (mutable: copy) */
    NPY_V_DECIMAL, NPY_V_DATETIME, NPY_V_DATE, NPY_V_TIME, NPY_V_TIMEDELTA,
    NPY_V_UUID,
    NPY_V_JSON,         /* dict, list */
    NPY_V_OTHER
};
int npy_adapt_kind(PyObject *v);
int npy_adapt_format_temporal(PyObject *v, int kind, char *buf, size_t size, int *has_offset);
/* utcoffset() of a datetime or time, in microseconds: 1 and *us, 0 when
 * naive, -1 with an exception set. */
int npy_adapt_utcoffset_us(PyObject *v, long long *us);
PyObject *npy_adapt_raisef(int code, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
PyObject *npy_adapt_reraise(int code, int kind, const char *msg);
PyObject *npy_adapt_type_error(const char *what, PyObject *v);
PyObject *npy_adapt_json_dumps(PyObject *v, const char *what);
const char *npy_adapt_utf8(PyObject *s, Py_ssize_t *len, const char *what);
PyObject *npy_adapt_tz(int offset_seconds);
PyObject *npy_adapt_new_date(int y, int m, int d);
PyObject *npy_adapt_new_time(int h, int mi, int s, int us, PyObject *tz);
PyObject *npy_adapt_new_timedelta(int days, int seconds, int us);
PyObject *npy_adapt_new_datetime(int y, int mo, int d, int h, int mi, int s, int us, PyObject *tz);

/* params resolved against q's placeholders: a new list of values in slot
 * order, or NULL with ProgrammingError (2014) naming the mismatch. */
PyObject *npy_params_ordered(const nc_sql *q, PyObject *params);
/* "parameter 2" / "parameter 'name'", for messages about slot i. */
void npy_param_name(const nc_sql *q, int i, char *buf, size_t cap);

#endif
