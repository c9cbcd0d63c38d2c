/* module.c - noodlecore._native: module init, the error bridge, and the
 * interpreter-exit hook that stops every pool's native threads before
 * Python finalizes. */
#include "module.h"
#include "adapt.h"
#include "pool.h"
#include "../core/nc_sqltext.h"

#include <stdarg.h>

static nc_state state_storage;
nc_state *nc_st = &state_storage;

/* Set once our atexit hook has run: from then on native threads must not
 * take the GIL (the interpreter may be finalizing). */
static volatile int python_gone;

int nc_python_gone(void)
{
    if (__atomic_load_n(&python_gone, __ATOMIC_ACQUIRE))
        return 1;
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

PyObject *nc_raise(int code, int kind, const char *sqlstate, const char *fmt, ...)
{
    char buf[NC_ERRMSG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    PyObject *exc = NULL;
    if (nc_st->error_factory) {
        exc = PyObject_CallFunction(nc_st->error_factory, "iizs", code, kind,
                                    sqlstate && sqlstate[0] ? sqlstate : NULL, buf);
    }
    if (!exc) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_RuntimeError, "[%d] %s", code, buf);
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

PyObject *nc_raise_error(const nc_error *err)
{
    nc_raise(err->code ? err->code : NC_E_INTERNAL, err->kind, err->sqlstate, "%s",
             err->message[0] ? err->message : "unknown error");
    if (err->sent != NC_SENT_UNKNOWN && PyErr_Occurred()) {
        /* Tell a retrying caller whether the statement reached the server. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyErr_NormalizeException(&et, &ev, &tb);
        if (ev && PyObject_SetAttrString(ev, "statement_sent", err->sent == NC_SENT_YES ? Py_True : Py_False) < 0)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
    }
    return NULL;
}

/* ---- module functions ---------------------------------------------------- */

static PyObject *set_error_factory(PyObject *mod, PyObject *f)
{
    (void)mod;
    if (!PyCallable_Check(f)) {
        PyErr_SetString(PyExc_TypeError, "error factory must be callable");
        return NULL;
    }
    Py_XSETREF(nc_st->error_factory, Py_NewRef(f));
    Py_RETURN_NONE;
}

static PyObject *atexit_hook(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    /* Stop every pool's threads and close idle connections while Python is
     * still whole; borrowed connections are left to the process exit (their
     * threads may still be inside a statement). */
    nc_pools_shutdown_all();
    __atomic_store_n(&python_gone, 1, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *translate(PyObject *mod, PyObject *args)
{
    (void)mod;
    const char *sql;
    Py_ssize_t len;
    int dialect = NC_DIALECT_PG;
    if (!PyArg_ParseTuple(args, "s#|i", &sql, &len, &dialect))
        return NULL;
    nc_sql out;
    nc_error err;
    if (nc_sql_translate(sql, (size_t)len, dialect, &out, &err) < 0)
        return nc_raise_error(&err);
    PyObject *names = PyList_New(0);
    for (int i = 0; names && out.names && i < out.nslots; i++) {
        PyObject *s = PyUnicode_FromString(out.names[i]);
        if (!s || PyList_Append(names, s) < 0) {
            Py_XDECREF(s);
            Py_CLEAR(names);
            break;
        }
        Py_DECREF(s);
    }
    PyObject *res = names ? Py_BuildValue("(s#iiN)", out.sql, (Py_ssize_t)out.len, out.style, out.nslots, names)
                          : NULL;
    nc_sql_free(&out);
    return res;
}

/* ---- questions about SQL text (csrc/core/nc_sqltext.c) --------------------- */

/* s as UTF-8.  A str with a lone surrogate has no UTF-8: it is encoded with
 * surrogatepass, and *keep holds the bytes until the caller releases them;
 * to the checks such a character is neither space nor letter, as it was to
 * the Python code they replace. */
static const char *sql_text(PyObject *s, Py_ssize_t *len, PyObject **keep)
{
    *keep = NULL;
    const char *p = PyUnicode_AsUTF8AndSize(s, len);
    if (p || !PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return p;
    PyErr_Clear();
    *keep = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (!*keep)
        return NULL;
    *len = PyBytes_GET_SIZE(*keep);
    return PyBytes_AS_STRING(*keep);
}

/* f(sql) as a bool; anything but a str is False (like is_plain_select(None)). */
static PyObject *sql_check(PyObject *sql, int (*f)(const char *, size_t))
{
    if (!PyUnicode_Check(sql))
        Py_RETURN_FALSE;
    Py_ssize_t len;
    PyObject *keep;
    const char *p = sql_text(sql, &len, &keep);
    if (!p)
        return NULL;
    int r = f(p, (size_t)len);
    Py_XDECREF(keep);
    return PyBool_FromLong(r);
}

static PyObject *sql_is_plain_select(PyObject *mod, PyObject *sql)
{
    (void)mod;
    return sql_check(sql, nc_sql_is_plain_select);
}

static PyObject *sql_is_rollback_to(PyObject *mod, PyObject *sql)
{
    (void)mod;
    return sql_check(sql, nc_sql_is_rollback_to);
}

static PyObject *sql_is_blank(PyObject *mod, PyObject *args, PyObject *kwargs)
{
    (void)mod;
    static char *kwlist[] = {"sql", "dialect", NULL};
    PyObject *sql;
    int dialect = NC_DIALECT_PG;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "U|i:sql_is_blank", kwlist, &sql, &dialect))
        return NULL;
    if (dialect != NC_DIALECT_PG && dialect != NC_DIALECT_SQLITE)
        return PyErr_Format(PyExc_ValueError, "unknown SQL dialect %d", dialect);
    Py_ssize_t len;
    PyObject *keep;
    const char *p = sql_text(sql, &len, &keep);
    if (!p)
        return NULL;
    int r = nc_sql_is_blank(p, (size_t)len, dialect);
    Py_XDECREF(keep);
    return PyBool_FromLong(r);
}

static PyObject *sql_column_type(PyObject *mod, PyObject *text)
{
    (void)mod;
    if (!PyUnicode_Check(text))
        return PyErr_Format(PyExc_TypeError, "sql_column_type() argument must be str, not %.100s",
                            Py_TYPE(text)->tp_name);
    Py_ssize_t len;
    PyObject *keep;
    const char *p = sql_text(text, &len, &keep);
    if (!p)
        return NULL;
    char *out = PyMem_Malloc((size_t)len + 1);
    PyObject *res = NULL;
    size_t n;
    if (!out)
        PyErr_NoMemory();
    else if (!nc_sql_column_type(p, (size_t)len, out, &n))
        res = Py_NewRef(Py_None);
    else
        res = PyUnicode_FromStringAndSize(out, (Py_ssize_t)n);    /* ASCII: spaces are made ' ' */
    PyMem_Free(out);
    Py_XDECREF(keep);
    return res;
}

static PyMethodDef module_methods[] = {
    {"_set_error_factory", set_error_factory, METH_O, "Install errors._native_error (internal)."},
    {"_atexit", atexit_hook, METH_NOARGS, "Shut down every pool before the interpreter exits (internal)."},
    {"translate", translate, METH_VARARGS,
     "translate(sql, dialect=1) -> (sql, style, nslots, names): the placeholder rewrite, for tests."},
    {"sql_is_plain_select", sql_is_plain_select, METH_O,
     "sql_is_plain_select(sql) -> bool: certainly one read without side effects (safe to run again); "
     "False for anything but a str."},
    {"sql_is_blank", (PyCFunction)(void (*)(void))sql_is_blank, METH_VARARGS | METH_KEYWORDS,
     "sql_is_blank(sql, dialect=DIALECT_PG) -> bool: only whitespace, comments and ';'."},
    {"sql_is_rollback_to", sql_is_rollback_to, METH_O,
     "sql_is_rollback_to(sql) -> bool: ROLLBACK [WORK | TRANSACTION] TO ...; False for anything but a str."},
    {"sql_column_type", sql_column_type, METH_O,
     "sql_column_type(text) -> str | None: the column type normalized (whitespace runs made one space), "
     "or None when it is not in the accepted grammar."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "noodlecore._native",
    "The C core of noodlecore: pools, backends and connections.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    if (PyType_Ready(&NcPool_Type) < 0 || PyType_Ready(&NcLease_Type) < 0 ||
        PyType_Ready(&NcConnection_Type) < 0 || PyType_Ready(&NcTransaction_Type) < 0 ||
        PyType_Ready(&NcFailover_Type) < 0)
        return NULL;
    if (nc_adapt_init() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    if (PyModule_AddObject(m, "Pool", Py_NewRef((PyObject *)&NcPool_Type)) < 0 ||
        PyModule_AddObject(m, "PooledConnection", Py_NewRef((PyObject *)&NcConnection_Type)) < 0 ||
        PyModule_AddObject(m, "ConnectionLease", Py_NewRef((PyObject *)&NcLease_Type)) < 0 ||
        PyModule_AddObject(m, "Transaction", Py_NewRef((PyObject *)&NcTransaction_Type)) < 0 ||
        PyModule_AddObject(m, "FailoverMonitor", Py_NewRef((PyObject *)&NcFailover_Type)) < 0 ||
        PyModule_AddIntConstant(m, "DIALECT_PG", NC_DIALECT_PG) < 0 ||
        PyModule_AddIntConstant(m, "DIALECT_SQLITE", NC_DIALECT_SQLITE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "libpq_version", PQlibVersion());
    /* Stop the pools' native threads before the interpreter finalizes,
     * however the module was imported. */
    PyObject *hook = PyObject_GetAttrString(m, "_atexit");
    PyObject *atexit = hook ? PyImport_ImportModule("atexit") : NULL;
    PyObject *r = atexit ? PyObject_CallMethod(atexit, "register", "O", hook) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(atexit);
    Py_XDECREF(hook);
    if (!r) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddStringConstant(m, "sqlite_version", sqlite3_libversion());
    return m;
}
