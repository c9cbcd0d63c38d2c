/* pool.c - the Pool type (the native base of DatabaseConnectionPool) and
 * the lease object get_connection() returns.
 *
 * Borrowing first tries the core's non-blocking fast path with the GIL held
 * (no wait is involved); only when it has to wait, validate with a round
 * trip, or open a connection does it release the GIL.
 */
#include "pool.h"
#include "../core/nc_pg.h"
#include "../core/nc_sqlite.h"
#include "../core/nc_time.h"

#include <structmember.h>

/* ---- registry of live pools, for the exit hook (touched with the GIL) ---- */

static NcPool *registry;

static void registry_add(NcPool *p)
{
    p->reg_next = registry;
    p->reg_prev = NULL;
    if (registry)
        registry->reg_prev = p;
    registry = p;
    p->registered = 1;
}

static void registry_remove(NcPool *p)
{
    if (!p->registered)
        return;
    if (p->reg_prev)
        p->reg_prev->reg_next = p->reg_next;
    else
        registry = p->reg_next;
    if (p->reg_next)
        p->reg_next->reg_prev = p->reg_prev;
    p->registered = 0;
}

void nc_pools_shutdown_all(void)
{
    Py_ssize_t n = 0;
    for (NcPool *p = registry; p; p = p->reg_next)
        n++;
    if (n == 0)
        return;
    NcPool **all = PyMem_Calloc((size_t)n, sizeof *all);
    if (!all)
        return;
    Py_ssize_t i = 0;
    for (NcPool *p = registry; p && i < n; p = p->reg_next)
        all[i++] = (NcPool *)Py_NewRef((PyObject *)p);
    for (Py_ssize_t k = 0; k < i; k++) {
        if (all[k]->pool) {
            Py_BEGIN_ALLOW_THREADS
            nc_pool_shutdown(all[k]->pool, 0.0);
            Py_END_ALLOW_THREADS
        }
    }
    for (Py_ssize_t k = 0; k < i; k++)
        Py_DECREF(all[k]);
    PyMem_Free(all);
}

/* ---- Pool ---------------------------------------------------------------- */

static double opt_double(PyObject *opts, const char *key, double dflt, int *bad)
{
    PyObject *v = PyDict_GetItemString(opts, key);   /* borrowed */
    if (!v || v == Py_None)
        return dflt;
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred()) {
        *bad = 1;
        return dflt;
    }
    return d;
}

static long opt_long(PyObject *opts, const char *key, long dflt, int *bad)
{
    PyObject *v = PyDict_GetItemString(opts, key);
    if (!v || v == Py_None)
        return dflt;
    long l = PyLong_AsLong(v);
    if (l == -1 && PyErr_Occurred()) {
        *bad = 1;
        return dflt;
    }
    return l;
}

static int pool_init(NcPool *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "target", "options", NULL};
    const char *kind;
    PyObject *target, *opts;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sOO!:Pool", kwlist, &kind, &target, &PyDict_Type, &opts))
        return -1;
    if (self->pool) {
        PyErr_SetString(PyExc_RuntimeError, "Pool.__init__ called twice");
        return -1;
    }
    nc_pool_config cfg;
    nc_pool_config_defaults(&cfg);
    int bad = 0;
    cfg.max_connections = (int)opt_long(opts, "max_connections", cfg.max_connections, &bad);
    cfg.min_connections = (int)opt_long(opts, "min_connections", cfg.min_connections, &bad);
    cfg.acquire_timeout = opt_double(opts, "timeout", cfg.acquire_timeout, &bad);
    cfg.retry_attempts = (int)opt_long(opts, "retry_attempts", cfg.retry_attempts, &bad);
    cfg.retry_backoff = opt_double(opts, "retry_backoff", cfg.retry_backoff, &bad);
    PyObject *v = PyDict_GetItemString(opts, "validate_connections");
    if (v) {
        int t = PyObject_IsTrue(v);
        if (t < 0)
            return -1;
        cfg.validate = t;
    }
    cfg.validation_interval = opt_double(opts, "validation_interval", cfg.validation_interval, &bad);
    cfg.validation_timeout = opt_double(opts, "validation_timeout", cfg.validation_timeout, &bad);
    cfg.connect_timeout = opt_double(opts, "connect_timeout", cfg.connect_timeout, &bad);
    cfg.idle_timeout = opt_double(opts, "idle_timeout", cfg.idle_timeout, &bad);
    cfg.max_lifetime = opt_double(opts, "max_lifetime", cfg.max_lifetime, &bad);
    cfg.lifetime_jitter = opt_double(opts, "lifetime_jitter", cfg.lifetime_jitter, &bad);
    cfg.ping_after_idle = opt_double(opts, "ping_after_idle", cfg.ping_after_idle, &bad);
    self->query_timeout = opt_double(opts, "query_timeout", -1.0, &bad);
    self->busy_wait = opt_double(opts, "busy_timeout", cfg.acquire_timeout, &bad);
    if (bad)
        return -1;
    PyObject *rf = PyDict_GetItemString(opts, "row_format");
    self->row_tuple = rf && PyUnicode_Check(rf) && PyUnicode_CompareWithASCIIString(rf, "tuple") == 0;

    nc_error err;
    nc_error_clear(&err);
    void *ctx = NULL;
    const nc_backend_ops *ops = NULL;
    if (!strcmp(kind, "postgresql")) {
        const char *dsn = PyUnicode_AsUTF8(target);
        if (!dsn)
            return -1;
        ctx = nc_pg_ctx_new(dsn, &err);
        ops = &nc_pg_ops;
        self->kind = NC_BACKEND_PG;
        if (ctx)
            Py_XSETREF(self->display, PyUnicode_FromString(nc_pg_ctx_display(ctx)));
    } else if (!strcmp(kind, "sqlite")) {
        const char *url = PyUnicode_AsUTF8(target);
        if (!url)
            return -1;
        ctx = nc_sqlite_ctx_new(url, &err);
        ops = &nc_sqlite_ops;
        self->kind = NC_BACKEND_SQLITE;
        if (ctx)
            Py_XSETREF(self->display, PyUnicode_FromString(nc_sqlite_ctx_display(ctx)));
    } else if (!strcmp(kind, "python")) {
        if (!PyCallable_Check(target)) {
            nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "backend_factory must be callable");
            return -1;
        }
        ctx = nc_py_ctx_new(target);
        ops = &nc_py_ops;
        self->kind = NC_BACKEND_PY;
        Py_XSETREF(self->display, PyUnicode_FromString("python backend"));
        if (!ctx) {
            PyErr_NoMemory();
            return -1;
        }
    } else {
        nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "unknown backend kind '%s'", kind);
        return -1;
    }
    if (!ctx) {
        nc_raise_error(&err);
        return -1;
    }
    if (!self->display) {
        ops->ctx_free(ctx);
        return -1;
    }
    nc_pool *pool;
    Py_BEGIN_ALLOW_THREADS
    pool = nc_pool_new(&cfg, ops, ctx, &err);
    Py_END_ALLOW_THREADS
    if (!pool) {
        nc_raise_error(&err);
        return -1;
    }
    self->pool = pool;
    registry_add(self);
    return 0;
}

static void pool_dealloc(NcPool *self)
{
    PyObject_GC_UnTrack(self);
    registry_remove(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->pool) {
        nc_pool *p = self->pool;
        self->pool = NULL;
        /* No PooledConnection is alive (each holds a reference to us), so
         * nothing can be using the connections any more. */
        Py_BEGIN_ALLOW_THREADS
        nc_pool_shutdown(p, 0.0);
        nc_pool_free(p);
        Py_END_ALLOW_THREADS
    }
    Py_CLEAR(self->display);
    Py_CLEAR(self->dict);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int pool_traverse(NcPool *self, visitproc visit, void *arg)
{
    /* Not the type: NcPool_Type is static, and a heap subclass's
     * subtype_traverse visits the type itself. */
    Py_VISIT(self->dict);
    return 0;
}

static int pool_clear(NcPool *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static int check_pool(NcPool *self)
{
    if (!self->pool) {
        nc_raise(NC_E_POOL, NC_K_INTERFACE, NULL, "the pool was not initialised");
        return -1;
    }
    return 0;
}

static double timeout_arg(PyObject *t, int *bad)
{
    if (!t || t == Py_None)
        return -1.0;
    if (PyBool_Check(t) || !(PyLong_Check(t) || PyFloat_Check(t))) {
        nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout must be a number of seconds or None, not %s",
                 Py_TYPE(t)->tp_name);
        *bad = 1;
        return 0;
    }
    double d = PyFloat_AsDouble(t);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout is too large");
        *bad = 1;
        return 0;
    }
    if (d < 0 || d != d) {
        nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout must not be negative");
        *bad = 1;
    }
    return d;
}

NcConnection *nc_pool_lend(NcPool *self, double timeout)
{
    if (check_pool(self) < 0)
        return NULL;
    NcConnection *conn = PyObject_New(NcConnection, &NcConnection_Type);
    if (!conn)
        return NULL;
    conn->pool = (NcPool *)Py_NewRef((PyObject *)self);
    conn->c = NULL;
    conn->released = 1;
    conn->in_txn = 0;
    conn->suspect = 0;
    conn->busy = 0;
    conn->pending_release = 0;
    conn->row_tuple = self->row_tuple;
    nc_error err;
    nc_conn *c = NULL;
    uint64_t lease = 0;
    int rc = nc_pool_try_acquire(self->pool, &c, &lease, &err);
    if (rc == 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = nc_pool_acquire(self->pool, timeout, &c, &lease, &err) == 0 ? 1 : -1;
        Py_END_ALLOW_THREADS
    }
    if (rc < 0) {
        Py_DECREF(conn);
        nc_raise_error(&err);
        return NULL;
    }
    conn->c = c;
    conn->lease = lease;
    conn->released = 0;
    return conn;
}

static PyObject *pool_get_connection(NcPool *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *t = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:get_connection", kwlist, &t))
        return NULL;
    int bad = 0;
    double timeout = timeout_arg(t, &bad);
    if (bad || check_pool(self) < 0)
        return NULL;
    NcLease *l = PyObject_New(NcLease, &NcLease_Type);
    if (!l)
        return NULL;
    l->pool = (NcPool *)Py_NewRef((PyObject *)self);
    l->timeout = timeout;
    l->conn = NULL;
    return (PyObject *)l;
}

static PyObject *pool_acquire(NcPool *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *t = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:acquire", kwlist, &t))
        return NULL;
    int bad = 0;
    double timeout = timeout_arg(t, &bad);
    if (bad)
        return NULL;
    return (PyObject *)nc_pool_lend(self, timeout);
}

static PyObject *pool_shutdown(NcPool *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *t = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:shutdown", kwlist, &t))
        return NULL;
    int bad = 0;
    double timeout = timeout_arg(t, &bad);
    if (bad || check_pool(self) < 0)
        return NULL;
    if (timeout < 0)
        timeout = 5.0;
    int left;
    nc_pool *p = self->pool;
    Py_BEGIN_ALLOW_THREADS
    left = nc_pool_shutdown(p, timeout);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(left);
}

static PyObject *pool_drain(NcPool *self, PyObject *arg)
{
    int discard = PyObject_IsTrue(arg);
    if (discard < 0 || check_pool(self) < 0)
        return NULL;
    nc_pool *p = self->pool;
    Py_BEGIN_ALLOW_THREADS
    nc_pool_drain(p, discard);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *pool_raw_stats(NcPool *self, PyObject *unused)
{
    (void)unused;
    if (check_pool(self) < 0)
        return NULL;
    nc_pool_stats s;
    nc_pool_get_stats(self->pool, &s);
    return Py_BuildValue(
        "{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:O,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:d,s:d,s:d}",
        "max_connections", s.max_connections, "min_connections", s.min_connections,
        "total_connections", s.total, "active_connections", s.active,
        "idle_connections", s.idle, "opening_connections", s.opening,
        "requests_waiting", s.waiting, "closed", s.closed_flag ? Py_True : Py_False,
        "acquires", (unsigned long long)s.acquires,
        "acquire_timeouts", (unsigned long long)s.acquire_timeouts,
        "connections_opened", (unsigned long long)s.opened,
        "connections_closed", (unsigned long long)s.closed,
        "connections_replaced", (unsigned long long)s.replaced,
        "connect_failures", (unsigned long long)s.connect_failures,
        "validation_failures", (unsigned long long)s.validation_failures,
        "query_count", (unsigned long long)s.queries,
        "error_count", (unsigned long long)s.query_errors,
        "wait_time_total", s.wait_total, "acquire_wait_p50", s.wait_p50,
        "acquire_wait_p99", s.wait_p99);
}

static PyObject *pool_get_closed(NcPool *self, void *c)
{
    (void)c;
    return PyBool_FromLong(!self->pool || nc_pool_is_closed(self->pool));
}

static PyObject *pool_get_kind(NcPool *self, void *c)
{
    (void)c;
    switch (self->kind) {
    case NC_BACKEND_PG: return PyUnicode_FromString("postgresql");
    case NC_BACKEND_SQLITE: return PyUnicode_FromString("sqlite");
    case NC_BACKEND_PY: return PyUnicode_FromString("python");
    default: Py_RETURN_NONE;
    }
}

static PyObject *pool_get_display(NcPool *self, void *c)
{
    (void)c;
    if (!self->display)
        Py_RETURN_NONE;
    return Py_NewRef(self->display);
}

static PyMethodDef pool_methods[] = {
    {"get_connection", (PyCFunction)(void (*)(void))pool_get_connection, METH_VARARGS | METH_KEYWORDS,
     "get_connection(timeout=None)\n--\n\n"
     "A context manager that borrows a connection on entry and gives it back on exit.\n"
     "Waits up to timeout seconds (default: the pool's timeout), first come first served;\n"
     "then raises PoolTimeoutError (2003). After shutdown: PoolClosedError (2002)."},
    {"acquire", (PyCFunction)(void (*)(void))pool_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(timeout=None)\n--\n\n"
     "Borrow a PooledConnection without a with-block; give it back with its release()."},
    {"_shutdown", (PyCFunction)(void (*)(void))pool_shutdown, METH_VARARGS | METH_KEYWORDS,
     "Core shutdown; returns how many borrowed connections were not back in time."},
    {"_drain", (PyCFunction)pool_drain, METH_O, "Close idle connections (and borrowed ones on return)."},
    {"_raw_stats", (PyCFunction)pool_raw_stats, METH_NOARGS, "Counters of the core pool, as a dict."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef pool_getset[] = {
    {"closed", (getter)pool_get_closed, NULL, "True once the pool is shut down.", NULL},
    {"backend_kind", (getter)pool_get_kind, NULL, "'postgresql', 'sqlite' or 'python'.", NULL},
    {"target", (getter)pool_get_display, NULL, "Where the pool connects (never the password).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject NcPool_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore._native.Pool",
    .tp_basicsize = sizeof(NcPool),
    .tp_dealloc = (destructor)pool_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The native connection pool (base of DatabaseConnectionPool).",
    .tp_traverse = (traverseproc)pool_traverse,
    .tp_clear = (inquiry)pool_clear,
    .tp_weaklistoffset = offsetof(NcPool, weakreflist),
    .tp_dictoffset = offsetof(NcPool, dict),
    .tp_methods = pool_methods,
    .tp_getset = pool_getset,
    .tp_init = (initproc)pool_init,
    .tp_new = PyType_GenericNew,
};

/* ---- the lease (what get_connection() returns) ---------------------------- */

static void lease_dealloc(NcLease *self)
{
    if (self->conn) {
        /* Often freed while an exception unwinds: keep it intact. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        nc_connection_release(self->conn, 0);
        Py_CLEAR(self->conn);
        PyErr_Restore(et, ev, tb);
    }
    Py_CLEAR(self->pool);
    PyObject_Free(self);
}

static PyObject *lease_enter(NcLease *self, PyObject *unused)
{
    (void)unused;
    if (self->conn) {
        nc_raise(NC_E_POOL, NC_K_INTERFACE, NULL, "this get_connection() context is already in use");
        return NULL;
    }
    NcConnection *c = nc_pool_lend(self->pool, self->timeout);
    if (!c)
        return NULL;
    self->conn = c;
    return Py_NewRef((PyObject *)c);
}

static PyObject *lease_exit(NcLease *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    NcConnection *c = self->conn;
    if (c) {
        self->conn = NULL;
        nc_connection_release(c, 0);
        Py_DECREF(c);
    }
    Py_RETURN_FALSE;
}

static PyMethodDef lease_methods[] = {
    {"__enter__", (PyCFunction)lease_enter, METH_NOARGS, "Borrow the connection."},
    {"__exit__", (PyCFunction)(void (*)(void))lease_exit, METH_FASTCALL,
     "Give the connection back (an open transaction is rolled back)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject NcLease_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore._native.ConnectionLease",
    .tp_basicsize = sizeof(NcLease),
    .tp_dealloc = (destructor)lease_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Context manager returned by get_connection(): borrows on entry, returns on exit.",
    .tp_methods = lease_methods,
};
