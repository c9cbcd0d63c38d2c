/* adapt.c - what pg_adapt.c and sqlite_adapt.c share: the caches set up by
 * npy_adapt_init(), classifying a Python value, error helpers, matching
 * params to placeholders, and every use of the datetime C API.
 *
 * The datetime C API is reached through PyDateTimeAPI, which <datetime.h>
 * declares as a *static* variable: each file that uses the PyDateTime_* macros
 * has its own copy and must run PyDateTime_IMPORT itself.  So this is the only
 * file of the adapters that includes <datetime.h>; npy_adapt_init() imports the
 * capsule here, and the other files go through the functions below (formatting
 * date/time values, building them from parsed fields, fixed-offset tzinfos).
 */
#include "adapt.h"
#include <datetime.h>

#include <stdio.h>
#include <string.h>


#define NPY_TZ_CACHE_MAX 256

/* offset seconds (int) -> datetime.timezone; bounded, see npy_adapt_tz(). */
static PyObject *tz_cache;

static int import_attr(const char *module, const char *name, PyObject **out)
{
    PyObject *m = PyImport_ImportModule(module);
    if (!m)
        return -1;
    PyObject *a = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    if (!a)
        return -1;
    *out = a;
    return 0;
}

int npy_adapt_init(void)
{
    PyObject *Decimal = NULL, *UUID = NULL, *loads = NULL, *dumps = NULL;
    PyObject *timezone = NULL, *utc = NULL, *cache = NULL;

    if (!npy_st) {
        PyErr_SetString(PyExc_SystemError, "npy_adapt_init: module state not allocated");
        return -1;
    }
    PyDateTime_IMPORT;
    if (!PyDateTimeAPI)
        return -1;
    if (import_attr("decimal", "Decimal", &Decimal) < 0
        || import_attr("uuid", "UUID", &UUID) < 0
        || import_attr("json", "loads", &loads) < 0
        || import_attr("json", "dumps", &dumps) < 0
        || import_attr("datetime", "timezone", &timezone) < 0)
        goto error;
    if (!PyType_Check(Decimal) || !PyType_Check(UUID) || !PyType_Check(timezone)) {
        PyErr_SetString(PyExc_TypeError, "npy_adapt_init: decimal.Decimal, uuid.UUID or "
                        "datetime.timezone is not a type");
        goto error;
    }
    utc = PyObject_GetAttrString(timezone, "utc");
    if (!utc)
        goto error;
    cache = PyDict_New();
    if (!cache)
        goto error;

    Py_XSETREF(npy_st->Decimal, Decimal);
    Py_XSETREF(npy_st->UUID, UUID);
    Py_XSETREF(npy_st->json_loads, loads);
    Py_XSETREF(npy_st->json_dumps, dumps);
    Py_XSETREF(npy_st->timezone, timezone);
    Py_XSETREF(npy_st->utc, utc);
    Py_XSETREF(tz_cache, cache);
    return 0;

error:
    Py_XDECREF(Decimal);
    Py_XDECREF(UUID);
    Py_XDECREF(loads);
    Py_XDECREF(dumps);
    Py_XDECREF(timezone);
    Py_XDECREF(utc);
    Py_XDECREF(cache);
    return -1;
}

/* ---- errors -------------------------------------------------------------- */

PyObject *npy_adapt_raisef(int code, int kind, const char *fmt, ...)
{
    /* Format here and pass "%s": the message may hold anything (type names,
     * parameter names, value prefixes) whatever printf flavour npy_raise uses. */
    char msg[NC_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    nc_text_vset(msg, sizeof msg, fmt, ap);   /* a long name or value: cut on a character */
    va_end(ap);
    return npy_raise(code, kind, NULL, "%s", msg);
}

static PyObject *fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (!t)
        return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (v && tb)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
#endif
}

static void restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* Replace the pending exception with npy_raise(code, kind, "msg: <original>"),
 * chained from the original (__cause__).  MemoryError and exceptions that are
 * not Exception subclasses (KeyboardInterrupt ...) are left as they are.
 * Always returns NULL. */
PyObject *npy_adapt_reraise(int code, int kind, const char *msg)
{
    if (!PyErr_Occurred())
        return npy_adapt_raisef(code, kind, "%s", msg);
    if (!PyErr_ExceptionMatches(PyExc_Exception) || PyErr_ExceptionMatches(PyExc_MemoryError))
        return NULL;
    PyObject *old = fetch_exception();
    PyObject *detail = old ? PyObject_Str(old) : NULL;
    const char *d = detail ? PyUnicode_AsUTF8(detail) : NULL;
    if (!d) {
        PyErr_Clear();
        d = old ? Py_TYPE(old)->tp_name : "error";
    }
    npy_adapt_raisef(code, kind, "%s: %s", msg, d);
    Py_XDECREF(detail);
    if (old) {
        PyObject *exc = fetch_exception();
        if (exc) {
            PyException_SetCause(exc, old);     /* steals old */
            restore_exception(exc);
        } else {
            Py_DECREF(old);
        }
    }
    return NULL;
}

PyObject *npy_adapt_type_error(const char *what, PyObject *v)
{
    return npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING,
                           "%s: cannot send a value of type '%s'",
                           what ? what : "parameter", Py_TYPE(v)->tp_name);
}

/* UTF-8 of a str; an unencodable str (lone surrogates) becomes 2015. */
const char *npy_adapt_utf8(PyObject *s, Py_ssize_t *len, const char *what)
{
    const char *u = PyUnicode_AsUTF8AndSize(s, len);
    if (!u && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: str value cannot be encoded as UTF-8",
                 what ? what : "parameter");
        npy_adapt_reraise(NC_E_PARAM_TYPE, NC_K_PROGRAMMING, msg);
    }
    return u;
}

/* json.dumps(v, allow_nan=False) as a new str; a value json cannot
 * serialise becomes 2015.  allow_nan=False: NaN and Infinity are not JSON
 * (PostgreSQL's json type refuses them after the statement was sent, SQLite
 * would store text no JSON reader accepts), so they are refused here. */
PyObject *npy_adapt_json_dumps(PyObject *v, const char *what)
{
    PyObject *args = PyTuple_Pack(1, v);
    PyObject *kw = args ? Py_BuildValue("{s:O}", "allow_nan", Py_False) : NULL;
    PyObject *s = kw ? PyObject_Call(npy_st->json_dumps, args, kw) : NULL;
    Py_XDECREF(args);
    Py_XDECREF(kw);
    if (!s) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: cannot send a value of type '%s' as JSON",
                 what ? what : "parameter", Py_TYPE(v)->tp_name);
        return npy_adapt_reraise(NC_E_PARAM_TYPE, NC_K_PROGRAMMING, msg);
    }
    if (!PyUnicode_Check(s)) {
        Py_DECREF(s);
        return npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING,
                               "%s: json.dumps did not return a str", what ? what : "parameter");
    }
    return s;
}

/* ---- classifying values -------------------------------------------------- */

/* The enum npy_vkind of v, or -1 (SystemError) before npy_adapt_init().
 * Exact builtin types are tested first (the common case), then subclasses;
 * bool before int and datetime before date. */
int npy_adapt_kind(PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);

    if (v == Py_None)
        return NPY_V_NONE;
    if (t == &PyLong_Type)
        return NPY_V_INT;
    if (t == &PyUnicode_Type)
        return NPY_V_STR;
    if (t == &PyFloat_Type)
        return NPY_V_FLOAT;
    if (t == &PyBool_Type)
        return NPY_V_BOOL;
    if (t == &PyBytes_Type)
        return NPY_V_BYTES;
    if (!PyDateTimeAPI || !npy_st || !npy_st->Decimal || !npy_st->UUID) {
        PyErr_SetString(PyExc_SystemError, "noodlecore: npy_adapt_init() was not called");
        return -1;
    }
    if (t == (PyTypeObject *)npy_st->Decimal)
        return NPY_V_DECIMAL;
    if (PyLong_Check(v))            /* bool is final: no subclass gets here */
        return NPY_V_INT;
    if (PyUnicode_Check(v))
        return NPY_V_STR;
    if (PyFloat_Check(v))
        return NPY_V_FLOAT;
    if (PyBytes_Check(v))
        return NPY_V_BYTES;
    if (PyByteArray_Check(v) || PyMemoryView_Check(v))
        return NPY_V_BUFFER;
    if (PyDateTime_Check(v))
        return NPY_V_DATETIME;
    if (PyDate_Check(v))
        return NPY_V_DATE;
    if (PyTime_Check(v))
        return NPY_V_TIME;
    if (PyDelta_Check(v))
        return NPY_V_TIMEDELTA;
    if (PyObject_TypeCheck(v, (PyTypeObject *)npy_st->Decimal))
        return NPY_V_DECIMAL;
    if (PyObject_TypeCheck(v, (PyTypeObject *)npy_st->UUID))
        return NPY_V_UUID;
    if (PyDict_Check(v) || PyList_Check(v))
        return NPY_V_JSON;
    return NPY_V_OTHER;
}

/* ---- formatting date/time values ----------------------------------------- */

static char *put2(char *p, int x)
{
    p[0] = (char)('0' + x / 10 % 10);
    p[1] = (char)('0' + x % 10);
    return p + 2;
}

static char *put_n(char *p, int x, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + x % 10);
        x /= 10;
    }
    return p + width;
}

/* "HH:MM:SS[.ffffff]" */
static char *put_time(char *p, int h, int mi, int s, int us)
{
    p = put2(p, h);
    *p++ = ':';
    p = put2(p, mi);
    *p++ = ':';
    p = put2(p, s);
    if (us) {
        *p++ = '.';
        p = put_n(p, us, 6);
    }
    return p;
}

/* utcoffset() of a datetime or time: 1 and *off set (new ref, a timedelta),
 * 0 when naive, -1 on error. */
static int get_offset(PyObject *v, int has_tzinfo, PyObject **off)
{
    *off = NULL;
    if (!has_tzinfo)
        return 0;
    PyObject *o = PyObject_CallMethod(v, "utcoffset", NULL);
    if (!o)
        return -1;
    if (o == Py_None) {
        Py_DECREF(o);
        return 0;
    }
    if (!PyDelta_Check(o)) {
        PyErr_Format(PyExc_TypeError, "utcoffset() returned %s, not a timedelta",
                     Py_TYPE(o)->tp_name);
        Py_DECREF(o);
        return -1;
    }
    *off = o;
    return 1;
}

/* utcoffset() of a datetime or time in microseconds: 1 and *us set, 0 when
 * naive, -1 on error. */
int npy_adapt_utcoffset_us(PyObject *v, long long *us)
{
    PyObject *off;
    int r = get_offset(v, 1, &off);
    if (r != 1)
        return r;
    *us = ((long long)PyDateTime_DELTA_GET_DAYS(off) * 86400 + PyDateTime_DELTA_GET_SECONDS(off)) * 1000000
          + PyDateTime_DELTA_GET_MICROSECONDS(off);
    Py_DECREF(off);
    return 1;
}

/* "+HH:MM[:SS[.ffffff]]", as datetime.isoformat() writes it. */
static char *put_offset(char *p, PyObject *off)
{
    long long us = ((long long)PyDateTime_DELTA_GET_DAYS(off) * 86400
                    + PyDateTime_DELTA_GET_SECONDS(off)) * 1000000
                   + PyDateTime_DELTA_GET_MICROSECONDS(off);
    *p++ = us < 0 ? '-' : '+';
    if (us < 0)
        us = -us;
    long long secs = us / 1000000;
    int frac = (int)(us % 1000000);
    p = put2(p, (int)(secs / 3600 % 100));     /* |offset| < 24h */
    *p++ = ':';
    p = put2(p, (int)(secs / 60 % 60));
    if (secs % 60 || frac) {
        *p++ = ':';
        p = put2(p, (int)(secs % 60));
    }
    if (frac) {
        *p++ = '.';
        p = put_n(p, frac, 6);
    }
    return p;
}

/* Write the text form of a datetime/date/time/timedelta (kind from
 * npy_adapt_kind) into buf (size >= 64), NUL-terminated:
 *   datetime  "YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM[:SS[.ffffff]]]"
 *   date      "YYYY-MM-DD"
 *   time      "HH:MM:SS[.ffffff][+HH:MM...]"
 *   timedelta "D days S seconds US microseconds" (PostgreSQL interval input)
 * i.e. str() / isoformat(' ') of the value, which is also what the sqlite3
 * module stores.  *has_offset = 1 when utcoffset() gave an offset.  Returns
 * the length, or -1 with an exception set (utcoffset() may raise). */
int npy_adapt_format_temporal(PyObject *v, int kind, char *buf, size_t size, int *has_offset)
{
    char *p = buf;
    PyObject *off = NULL;

    *has_offset = 0;
    if (size < 64) {
        PyErr_SetString(PyExc_SystemError, "npy_adapt_format_temporal: buffer too small");
        return -1;
    }
    switch (kind) {
    case NPY_V_DATETIME:
    case NPY_V_DATE:
        p = put_n(p, PyDateTime_GET_YEAR(v), 4);
        *p++ = '-';
        p = put2(p, PyDateTime_GET_MONTH(v));
        *p++ = '-';
        p = put2(p, PyDateTime_GET_DAY(v));
        if (kind == NPY_V_DATE)
            break;
        if (get_offset(v, PyDateTime_DATE_GET_TZINFO(v) != Py_None, &off) < 0)
            return -1;
        *p++ = ' ';
        p = put_time(p, PyDateTime_DATE_GET_HOUR(v), PyDateTime_DATE_GET_MINUTE(v),
                     PyDateTime_DATE_GET_SECOND(v), PyDateTime_DATE_GET_MICROSECOND(v));
        break;
    case NPY_V_TIME:
        if (get_offset(v, PyDateTime_TIME_GET_TZINFO(v) != Py_None, &off) < 0)
            return -1;
        p = put_time(p, PyDateTime_TIME_GET_HOUR(v), PyDateTime_TIME_GET_MINUTE(v),
                     PyDateTime_TIME_GET_SECOND(v), PyDateTime_TIME_GET_MICROSECOND(v));
        break;
    case NPY_V_TIMEDELTA:
        p += snprintf(p, size, "%d days %d seconds %d microseconds",
                      PyDateTime_DELTA_GET_DAYS(v), PyDateTime_DELTA_GET_SECONDS(v),
                      PyDateTime_DELTA_GET_MICROSECONDS(v));
        break;
    default:
        PyErr_SetString(PyExc_SystemError, "npy_adapt_format_temporal: not a date/time value");
        return -1;
    }
    if (off) {
        p = put_offset(p, off);
        Py_DECREF(off);
        *has_offset = 1;
    }
    *p = '\0';
    return (int)(p - buf);
}

/* ---- building date/time values ------------------------------------------- */

/* A datetime.timezone for a fixed UTC offset in seconds (new reference);
 * timezone.utc for 0.  Cached: a result set has few distinct offsets, and the
 * cache stops growing at NPY_TZ_CACHE_MAX entries. */
PyObject *npy_adapt_tz(int offset_seconds)
{
    if (offset_seconds == 0)
        return Py_NewRef(npy_st->utc);
    PyObject *key = PyLong_FromLong(offset_seconds);
    if (!key)
        return NULL;
    PyObject *tz = PyDict_GetItemWithError(tz_cache, key);
    if (tz) {
        Py_DECREF(key);
        return Py_NewRef(tz);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    PyObject *delta = PyDelta_FromDSU(0, offset_seconds, 0);
    if (!delta) {
        Py_DECREF(key);
        return NULL;
    }
    tz = PyTimeZone_FromOffset(delta);
    Py_DECREF(delta);
    if (tz && PyDict_GET_SIZE(tz_cache) < NPY_TZ_CACHE_MAX && PyDict_SetItem(tz_cache, key, tz) < 0)
        Py_CLEAR(tz);
    Py_DECREF(key);
    return tz;
}

PyObject *npy_adapt_new_date(int y, int m, int d)
{
    return PyDateTimeAPI->Date_FromDate(y, m, d, PyDateTimeAPI->DateType);
}

PyObject *npy_adapt_new_time(int h, int mi, int s, int us, PyObject *tz)
{
    return PyDateTimeAPI->Time_FromTime(h, mi, s, us, tz ? tz : Py_None, PyDateTimeAPI->TimeType);
}

PyObject *npy_adapt_new_datetime(int y, int mo, int d, int h, int mi, int s, int us, PyObject *tz)
{
    return PyDateTimeAPI->DateTime_FromDateAndTime(y, mo, d, h, mi, s, us, tz ? tz : Py_None,
                                                   PyDateTimeAPI->DateTimeType);
}

/* ---- params against placeholders -------------------------------------- */

PyObject *npy_params_ordered(const nc_sql *q, PyObject *params)
{
    int is_map = PyDict_Check(params) || (!PyList_Check(params) && !PyTuple_Check(params) &&
                                          PyMapping_Check(params) && !PyUnicode_Check(params) &&
                                          !PyBytes_Check(params));
    if (q->style == NC_STYLE_NAMED) {
        if (!is_map)
            return npy_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
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
                    npy_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
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
        return npy_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                        q->style == NC_STYLE_NONE
                            ? "params were given but the query has no placeholders"
                            : "the query uses %%s placeholders, so params must be a sequence, not a mapping");
    }
    if (PyUnicode_Check(params) || PyBytes_Check(params) || PyByteArray_Check(params) ||
        !PySequence_Check(params))
        return npy_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                        "params must be a sequence or a mapping, not %s (wrap one value as (value,))",
                        Py_TYPE(params)->tp_name);
    PyObject *seq = PySequence_Fast(params, "params must be a sequence or a mapping");
    if (!seq) {
        PyErr_Clear();
        return npy_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL, "params must be a sequence or a mapping, not %s",
                        Py_TYPE(params)->tp_name);
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n != q->nslots) {
        Py_DECREF(seq);
        return npy_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL,
                        "the query has %d placeholder%s but %zd parameter%s given", q->nslots,
                        q->nslots == 1 ? "" : "s", n, n == 1 ? " was" : "s were");
    }
    PyObject *out = PySequence_List(seq);
    Py_DECREF(seq);
    return out;
}

void npy_param_name(const nc_sql *q, int i, char *buf, size_t cap)
{
    if (q->style == NC_STYLE_NAMED)
        nc_text_set(buf, cap, "parameter '%s'", q->names[i]);   /* a long non-ASCII name: cut on a character */
    else
        nc_text_set(buf, cap, "parameter %d", i + 1);
}

/* A timedelta of days, seconds (0..86399) and microseconds (0..999999);
 * NULL with OverflowError beyond timedelta's +-999999999 days. */
PyObject *npy_adapt_new_timedelta(int days, int seconds, int us)
{
    return PyDelta_FromDSU(days, seconds, us);
}
