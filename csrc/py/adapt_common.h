/* adapt_common.h - helpers shared by adapt_pg.c and adapt_sqlite.c, defined
 * in adapt_common.c (the one file that includes <datetime.h>: the
 * datetime C-API capsule is a per-file static in CPython's headers). */
#ifndef NC_PY_ADAPT_COMMON_H
#define NC_PY_ADAPT_COMMON_H

#include "adapt.h"

/* What a Python value is, for choosing a conversion. */
enum nc_vkind {
    NC_V_NONE, NC_V_BOOL, NC_V_INT, NC_V_FLOAT, NC_V_STR,
    NC_V_BYTES,         /* bytes (immutable: may be referenced) */
    NC_V_BUFFER,        /* bytearray, memoryview (mutable: copy) */
    NC_V_DECIMAL, NC_V_DATETIME, NC_V_DATE, NC_V_TIME, NC_V_TIMEDELTA,
    NC_V_UUID,
    NC_V_JSON,          /* dict, list */
    NC_V_OTHER
};
int nc_adapt_kind(PyObject *v);
int nc_adapt_format_temporal(PyObject *v, int kind, char *buf, size_t size, int *has_offset);
PyObject *nc_adapt_raisef(int code, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
PyObject *nc_adapt_reraise(int code, int kind, const char *msg);
PyObject *nc_adapt_type_error(const char *what, PyObject *v);
PyObject *nc_adapt_json_dumps(PyObject *v, const char *what);
const char *nc_adapt_utf8(PyObject *s, Py_ssize_t *len, const char *what);
PyObject *nc_adapt_tz(int offset_seconds);
PyObject *nc_adapt_new_date(int y, int m, int d);
PyObject *nc_adapt_new_time(int h, int mi, int s, int us, PyObject *tz);
PyObject *nc_adapt_new_datetime(int y, int mo, int d, int h, int mi, int s, int us, PyObject *tz);

#endif
