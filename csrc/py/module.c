/* module.c - noodlecore._native: module init, the module functions, the
 * core's tables as constants, and the interpreter-exit hook that stops every
 * failover monitor's and pool's native threads before Python finalizes.
 *
 * The root of the binding: it includes every type; nothing includes it.
 */
#include "state.h"
#include "adapt.h"
#include "connection.h"
#include "errors.h"
#include "failover.h"
#include "lease.h"
#include "patroni.h"
#include "pool.h"
#include "transaction.h"
#include "../core/nc_params.h"
#include "../core/nc_sqltext.h"
#include "../core/nc_types.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <string.h>

/* ---- module functions ---------------------------------------------------- */

static PyObject *set_error_classes(PyObject *mod, PyObject *mapping)
{
    (void)mod;
    return npy_set_error_classes(mapping);
}

static PyObject *make_error(PyObject *mod, PyObject *args)
{
    (void)mod;
    int code, kind;
    const char *sqlstate, *message;
    PyObject *sent = Py_None;
    if (!PyArg_ParseTuple(args, "iizs|O", &code, &kind, &sqlstate, &message, &sent))
        return NULL;
    int t = sent == Py_None ? -2 : PyObject_IsTrue(sent);
    if (t == -1)
        return NULL;
    return npy_error_new(code, kind, sqlstate, message, t == -2 ? NC_SENT_UNKNOWN : t ? NC_SENT_YES : NC_SENT_NO);
}

static PyObject *error_facts(PyObject *mod, PyObject *args)
{
    (void)mod;
    int code;
    const char *sqlstate = NULL;
    if (!PyArg_ParseTuple(args, "i|z", &code, &sqlstate))
        return NULL;
    nc_error e;
    nc_error_clear(&e);
    if (sqlstate)
        snprintf(e.sqlstate, sizeof e.sqlstate, "%s", sqlstate);
    return Py_BuildValue("(OO)", nc_error_failure(code, sqlstate) != NC_FAIL_NONE ? Py_True : Py_False,
                         nc_error_not_applied(&e) ? Py_True : Py_False);
}

static PyObject *error_class(PyObject *mod, PyObject *args)
{
    (void)mod;
    int code, kind = 0;
    const char *sqlstate = NULL;
    if (!PyArg_ParseTuple(args, "i|iz", &code, &kind, &sqlstate))
        return NULL;
    return PyUnicode_FromString(nc_class_name(nc_error_class(code, kind, sqlstate)));
}

static PyObject *outcome_unknown(PyObject *mod, PyObject *args)
{
    (void)mod;
    int failure, not_applied, effect, in_txn;
    if (!PyArg_ParseTuple(args, "ppip:outcome_unknown", &failure, &not_applied, &effect, &in_txn))
        return NULL;
    if (effect != NC_EFFECT_NONE && effect != NC_EFFECT_WRITE && effect != NC_EFFECT_COMMIT)
        return PyErr_Format(PyExc_ValueError, "unknown statement effect %d", effect);
    return PyBool_FromLong(nc_outcome_unknown(failure, not_applied, effect, in_txn));
}

static PyObject *atexit_hook(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    /* Stop every failover monitor's threads (waiting a moment at most for a
     * probe in progress: one stuck in a connect is left to the process exit,
     * owning what it uses), then every pool's, and close idle connections
     * while Python is still whole; borrowed connections are left to the
     * process exit (their threads may still be inside a statement). */
    npy_failovers_close_all(0.2);
    npy_pools_shutdown_all();
    npy_set_python_gone();
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
        return npy_raise_error(&err);
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

/* For the functions taking (sql, dialect=PG): f's answer in *out and 0,
 * or -1 with the exception set. */
static int sql_dialect_call(PyObject *args, PyObject *kwargs, const char *fmt,
                            int (*f)(const char *, size_t, int), int *out)
{
    static char *kwlist[] = {"sql", "dialect", NULL};
    PyObject *sql;
    int dialect = NC_DIALECT_PG;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, fmt, kwlist, &sql, &dialect))
        return -1;
    if (dialect != NC_DIALECT_PG && dialect != NC_DIALECT_SQLITE) {
        PyErr_Format(PyExc_ValueError, "unknown SQL dialect %d", dialect);
        return -1;
    }
    Py_ssize_t len;
    PyObject *keep;
    const char *p = sql_text(sql, &len, &keep);
    if (!p)
        return -1;
    *out = f(p, (size_t)len, dialect);
    Py_XDECREF(keep);
    return 0;
}

static PyObject *sql_effect(PyObject *mod, PyObject *args, PyObject *kwargs)
{
    (void)mod;
    int r;
    return sql_dialect_call(args, kwargs, "U|i:sql_effect", nc_sql_effect, &r) < 0 ? NULL : PyLong_FromLong(r);
}

static PyObject *sql_is_blank(PyObject *mod, PyObject *args, PyObject *kwargs)
{
    (void)mod;
    int r;
    return sql_dialect_call(args, kwargs, "U|i:sql_is_blank", nc_sql_is_blank, &r) < 0 ? NULL : PyBool_FromLong(r);
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

/* PEP 249's category of a description's type code: an int is a PostgreSQL
 * type OID, a str a SQLite declared type; anything else has none. */
static PyObject *type_category(PyObject *mod, PyObject *code)
{
    (void)mod;
    int cat = NC_TYPE_UNKNOWN;
    if (PyLong_Check(code) && !PyBool_Check(code)) {
        unsigned long oid = PyLong_AsUnsignedLong(code);
        if (oid == (unsigned long)-1 && PyErr_Occurred())
            PyErr_Clear();   /* negative or too large: no such type */
        else if (oid <= 0xffffffffUL)
            cat = nc_type_category_pg((unsigned)oid);
    } else if (PyUnicode_Check(code)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(code, &n);
        if (!s)
            return NULL;
        if ((size_t)n == strlen(s))   /* an embedded NUL: not a declared type */
            cat = nc_type_category_sqlite(s);
    }
    const char *name = nc_type_category_name(cat);
    if (!name)
        Py_RETURN_NONE;
    return PyUnicode_FromString(name);
}

static PyMethodDef module_methods[] = {
    {"type_category", type_category, METH_O,
     "type_category(type_code) -> 'STRING' | 'BINARY' | 'NUMBER' | 'DATETIME' | 'ROWID' | None: the PEP 249\n"
     "category of a cursor description's type code (a PostgreSQL type OID or a SQLite declared type)."},
    {"_set_error_classes", set_error_classes, METH_O,
     "Install errors.py's classes, a mapping of class name to class (internal)."},
    {"make_error", make_error, METH_VARARGS,
     "make_error(code, kind, sqlstate, message, sent=None) -> the exception the core would raise for it."},
    {"error_facts", error_facts, METH_VARARGS,
     "error_facts(code, sqlstate=None) -> (connection_failure, not_applied) by the core's tables."},
    {"error_class", error_class, METH_VARARGS,
     "error_class(code, kind=0, sqlstate=None) -> the name of the exception class of such an error."},
    {"outcome_unknown", outcome_unknown, METH_VARARGS,
     "outcome_unknown(connection_failure, not_applied, effect, in_transaction) -> bool: the core's rule for "
     "OutcomeUnknownError (3039): a connection failure after a statement of this EFFECT_* that may have run "
     "(a commit always; a write outside a transaction)."},
    {"split_hosts", npy_failover_split_hosts, METH_O,
     "split_hosts(dsn) -> [(name, dsn)]: a multi-host PostgreSQL connection string as one per host, in list order "
     "(target_session_attrs dropped)."},
    {"_atexit", atexit_hook, METH_NOARGS, "Stop every failover monitor and shut down every pool before the interpreter exits (internal)."},
    {"translate", translate, METH_VARARGS,
     "translate(sql, dialect=DIALECT_PG) -> (sql, style, nslots, names): the placeholder rewrite."},
    {"sql_is_plain_select", sql_is_plain_select, METH_O,
     "sql_is_plain_select(sql) -> bool: certainly one read without side effects (safe to run again); "
     "False for anything but a str."},
    {"sql_effect", (PyCFunction)(void (*)(void))sql_effect, METH_VARARGS | METH_KEYWORDS,
     "sql_effect(sql, dialect=DIALECT_PG) -> EFFECT_COMMIT when a statement of it commits, EFFECT_NONE for a "
     "plain read, else EFFECT_WRITE."},
    {"sql_is_blank", (PyCFunction)(void (*)(void))sql_is_blank, METH_VARARGS | METH_KEYWORDS,
     "sql_is_blank(sql, dialect=DIALECT_PG) -> bool: only whitespace, comments and ';'."},
    {"sql_is_rollback_to", sql_is_rollback_to, METH_O,
     "sql_is_rollback_to(sql) -> bool: ROLLBACK [WORK | TRANSACTION] TO ...; False for anything but a str."},
    {"sql_column_type", sql_column_type, METH_O,
     "sql_column_type(text) -> str | None: the column type normalized (whitespace runs made one space), "
     "or None when it is not in the accepted grammar."},
    {"patroni_cluster", npy_patroni_cluster, METH_VARARGS,
     "patroni_cluster(urls, timeout) -> dict: GET /cluster from the first Patroni REST API that answers "
     "within timeout seconds (shared among the URLs); {'scope', 'source', 'members': [{'name', 'role', "
     "'state', 'host', 'port', 'timeline', 'replay_lag', 'lag', 'routing_lag', 'api_url', 'leader'}]}."},
    {"patroni_member_dsn", npy_patroni_member_dsn, METH_VARARGS,
     "patroni_member_dsn(dsn, host, port) -> str: dsn pointed at host:port (a later host/port overrides: "
     "query parameters of a URI, appended key=value pairs otherwise)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "noodlecore._native",
    "The C core of noodlecore: pools, backends, connections and failover.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

static int add_type(PyObject *m, const char *name, PyTypeObject *t)
{
    return PyModule_AddObject(m, name, Py_NewRef((PyObject *)t)) < 0 ? -1 : 0;
}

PyMODINIT_FUNC PyInit__native(void)
{
    if (PyType_Ready(&NpyPool_Type) < 0 || PyType_Ready(&NpyLease_Type) < 0 ||
        PyType_Ready(&NpyConnection_Type) < 0 || PyType_Ready(&NpyTransaction_Type) < 0 ||
        PyType_Ready(&NpyFailover_Type) < 0 || PyType_Ready(&NpyPatroniWatch_Type) < 0)
        return NULL;
    if (npy_adapt_init() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    if (add_type(m, "Pool", &NpyPool_Type) < 0 || add_type(m, "PooledConnection", &NpyConnection_Type) < 0 ||
        add_type(m, "ConnectionLease", &NpyLease_Type) < 0 || add_type(m, "Transaction", &NpyTransaction_Type) < 0 ||
        add_type(m, "FailoverMonitor", &NpyFailover_Type) < 0 || add_type(m, "PatroniWatch", &NpyPatroniWatch_Type) < 0 ||
        PyModule_AddIntConstant(m, "DIALECT_PG", NC_DIALECT_PG) < 0 ||
        PyModule_AddIntConstant(m, "DIALECT_SQLITE", NC_DIALECT_SQLITE) < 0 ||
        PyModule_AddIntConstant(m, "EFFECT_NONE", NC_EFFECT_NONE) < 0 ||
        PyModule_AddIntConstant(m, "EFFECT_WRITE", NC_EFFECT_WRITE) < 0 ||
        PyModule_AddIntConstant(m, "EFFECT_COMMIT", NC_EFFECT_COMMIT) < 0 ||
        PyModule_AddIntConstant(m, "libpq_version", PQlibVersion()) < 0 ||
        PyModule_AddStringConstant(m, "sqlite_version", sqlite3_libversion()) < 0 || npy_add_error_tables(m) < 0 ||
        npy_pool_add_constants(m) < 0 || npy_failover_add_constants(m) < 0 || npy_patroni_add_constants(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    /* Stop the monitors' and pools' native threads before the interpreter
     * finalizes, however the module was imported. */
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
    return m;
}
