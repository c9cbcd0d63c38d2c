/* pool.c - the Pool type (the native base of DatabaseConnectionPool): its
 * options, borrowing through a lease or acquire(), stats, shutdown, a probe
 * of its endpoint, and the registry the exit hook shuts down.
 *
 * Borrowing first tries the core's non-blocking fast path with the GIL held
 * (no wait is involved); only when it has to wait, validate with a round
 * trip, or open a connection does it release the GIL (connection.c).
 */
#include "pool.h"
#include "interrupt.h"
#include "errors.h"
#include "lease.h"
#include "options.h"
#include "pybackend.h"
#include "../core/nc_fork.h"
#include "../core/nc_pg.h"
#include "../core/nc_sqlite.h"
#include "../core/nc_time.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <structmember.h>

/* ---- registry of live pools, for the exit hook (touched with the GIL) ---- */

static NpyPool *registry;

static void registry_add(NpyPool *p)
{
    p->reg_next = registry;
    p->reg_prev = NULL;
    if (registry)
        registry->reg_prev = p;
    registry = p;
    p->registered = 1;
}

static void registry_remove(NpyPool *p)
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

void npy_pools_shutdown_all(void)
{
    Py_ssize_t n = 0;
    for (NpyPool *p = registry; p; p = p->reg_next)
        n++;
    if (n == 0)
        return;
    NpyPool **all = PyMem_Calloc((size_t)n, sizeof *all);
    if (!all)
        return;
    Py_ssize_t i = 0;
    for (NpyPool *p = registry; p && i < n; p = p->reg_next)
        all[i++] = (NpyPool *)Py_NewRef((PyObject *)p);
    for (Py_ssize_t k = 0; k < i; k++) {
        nc_pool *p = all[k]->s.pool;
        /* A pool inherited over fork() and not used in this process is the
         * parent's: shutting it down would close the parent's sessions. */
        if (p && !npy_settings_inherited(&all[k]->s)) {
            Py_BEGIN_ALLOW_THREADS
            nc_pool_shutdown(p, 0.0);
            Py_END_ALLOW_THREADS
        }
    }
    for (Py_ssize_t k = 0; k < i; k++)
        Py_DECREF(all[k]);
    PyMem_Free(all);
}

/* ---- options ---------------------------------------------------------------- */

/* The pool options of the binding: the core's config and what only the
 * binding uses.  Defaults: nc_pool_config_defaults and options_defaults. */
typedef struct pool_options {
    nc_pool_config core;
    double query_timeout;   /* < 0 none */
    double busy_timeout;    /* < 0: the acquire timeout */
    int row_tuple;
} pool_options;

static int row_format_from_name(const char *s)
{
    return !strcmp(s, "tuple") ? 1 : !strcmp(s, "dict") ? 0 : -1;
}

static const char *row_format_name(int tuple)
{
    return tuple ? "tuple" : "dict";
}

#define CORE(f) offsetof(pool_options, core.f)
static const npy_option pool_option_table[] = {
    {"max_connections", NPY_OPT_INT, CORE(max_connections), NULL, NULL},
    {"min_connections", NPY_OPT_INT, CORE(min_connections), NULL, NULL},
    {"timeout", NPY_OPT_DOUBLE, CORE(acquire_timeout), NULL, NULL},
    {"retry_attempts", NPY_OPT_INT, CORE(retry_attempts), NULL, NULL},
    {"retry_backoff", NPY_OPT_DOUBLE, CORE(retry_backoff), NULL, NULL},
    {"validate_connections", NPY_OPT_BOOL, CORE(validate), NULL, NULL},
    {"validation_interval", NPY_OPT_DOUBLE, CORE(validation_interval), NULL, NULL},
    {"validation_timeout", NPY_OPT_DOUBLE, CORE(validation_timeout), NULL, NULL},
    {"connect_timeout", NPY_OPT_DOUBLE, CORE(connect_timeout), NULL, NULL},
    {"idle_timeout", NPY_OPT_DOUBLE, CORE(idle_timeout), NULL, NULL},
    {"max_lifetime", NPY_OPT_DOUBLE, CORE(max_lifetime), NULL, NULL},
    {"lifetime_jitter", NPY_OPT_DOUBLE, CORE(lifetime_jitter), NULL, NULL},
    {"ping_after_idle", NPY_OPT_DOUBLE, CORE(ping_after_idle), NULL, NULL},
    {"leak_timeout", NPY_OPT_DOUBLE, CORE(leak_timeout), NULL, NULL},
    {"query_timeout", NPY_OPT_SECONDS, offsetof(pool_options, query_timeout), NULL, NULL},
    {"busy_timeout", NPY_OPT_SECONDS, offsetof(pool_options, busy_timeout), NULL, NULL},
    {"row_format", NPY_OPT_NAME, offsetof(pool_options, row_tuple), row_format_from_name, row_format_name},
    {NULL, 0, 0, NULL, NULL},
};
#undef CORE

static void options_defaults(pool_options *o)
{
    nc_pool_config_defaults(&o->core);
    o->query_timeout = -1.0;
    o->busy_timeout = -1.0;
    o->row_tuple = 0;
}

int npy_pool_add_constants(PyObject *module)
{
    pool_options o;
    options_defaults(&o);
    PyObject *d = npy_options_export(pool_option_table, &o);
    if (!d || PyModule_AddObject(module, "POOL_DEFAULTS", d) < 0) {
        Py_XDECREF(d);
        return -1;
    }
    return npy_leak_add_constants(module);
}

/* ---- Pool ---------------------------------------------------------------- */

static int pool_init(NpyPool *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "target", "options", NULL};
    const char *kind;
    PyObject *target, *opts;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sOO!:Pool", kwlist, &kind, &target, &PyDict_Type, &opts))
        return -1;
    if (self->s.pool) {
        PyErr_SetString(PyExc_RuntimeError, "Pool.__init__ called twice");
        return -1;
    }
    pool_options opt;
    options_defaults(&opt);
    if (npy_options_read(opts, pool_option_table, &opt, "pool") < 0)
        return -1;
    nc_pool_config cfg = opt.core;
    self->s.query_timeout = opt.query_timeout;
    self->s.busy_wait = opt.busy_timeout < 0 ? cfg.acquire_timeout : opt.busy_timeout;
    self->s.row_tuple = opt.row_tuple;
    self->s.leak_timeout = cfg.leak_timeout;
    if (cfg.leak_timeout > 0 && cfg.max_connections > 0 && !self->s.borrow_stacks) {
        self->s.borrow_stacks = PyMem_Calloc((size_t)cfg.max_connections, sizeof(PyObject *));
        if (!self->s.borrow_stacks) {
            PyErr_NoMemory();
            return -1;
        }
        self->s.nstacks = cfg.max_connections;
    }

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
        self->s.kind = NPY_BACKEND_PG;
        if (ctx)
            Py_XSETREF(self->s.display, PyUnicode_FromString(nc_pg_ctx_display(ctx)));
    } else if (!strcmp(kind, "sqlite")) {
        const char *url = PyUnicode_AsUTF8(target);
        if (!url)
            return -1;
        ctx = nc_sqlite_ctx_new(url, &err);
        ops = &nc_sqlite_ops;
        self->s.kind = NPY_BACKEND_SQLITE;
        if (ctx)
            Py_XSETREF(self->s.display, PyUnicode_FromString(nc_sqlite_ctx_display(ctx)));
    } else if (!strcmp(kind, "python")) {
        if (!PyCallable_Check(target)) {
            npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "backend_factory must be callable");
            return -1;
        }
        ctx = npy_py_ctx_new(target);
        ops = &npy_py_ops;
        self->s.kind = NPY_BACKEND_PY;
        Py_XSETREF(self->s.display, PyUnicode_FromString("python backend"));
        if (!ctx) {
            PyErr_NoMemory();
            return -1;
        }
    } else {
        npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "unknown backend kind '%s'", kind);
        return -1;
    }
    if (!ctx) {
        npy_raise_error(&err);
        return -1;
    }
    if (!self->s.display) {
        ops->ctx_free(ctx);
        return -1;
    }
    nc_pool *pool;
    Py_BEGIN_ALLOW_THREADS
    pool = nc_pool_new(&cfg, ops, ctx, &err);
    Py_END_ALLOW_THREADS
    if (!pool) {
        npy_raise_error(&err);
        return -1;
    }
    self->s.pool = pool;
    self->s.fork_gen = nc_fork_generation();
    registry_add(self);
    return 0;
}

PyObject *npy_pool_wrap(nc_pool *p, PyObject *like_obj)
{
    /* Of like's type (DatabaseConnectionPool): its Python methods work on
     * it; its __init__ is not run (the core pool exists already). */
    const npy_pool_settings *like = &((NpyPool *)like_obj)->s;
    PyTypeObject *type = Py_TYPE(like_obj);
    NpyPool *self = (NpyPool *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    const char *where = nc_pool_ops(p) == &nc_pg_ops ? nc_pg_ctx_display(nc_pool_ctx(p)) : "shared pool";
    self->s.display = PyUnicode_DecodeUTF8(where, (Py_ssize_t)strlen(where), "replace");
    if (!self->s.display) {
        Py_DECREF(self);
        return NULL;
    }
    self->s.kind = nc_pool_ops(p) == &nc_pg_ops ? NPY_BACKEND_PG : like->kind;
    self->s.row_tuple = like->row_tuple;
    self->s.query_timeout = like->query_timeout;
    self->s.busy_wait = like->busy_wait;
    self->s.leak_timeout = 0;   /* no borrow stacks kept: the core's pool settings say nothing of them */
    self->s.fork_gen = nc_fork_generation();
    nc_pool_ref(p);
    self->s.pool = p;
    self->shared = 1;
    return (PyObject *)self;
}

/* After fork(): drop, untouched, what the parent made (the prober and its
 * connection; the pool itself when it was not used here).  Leaked on
 * purpose: freeing would lock mutexes a parent thread may hold and close
 * the parent's sessions. */
static void forget_inherited(NpyPool *self)
{
    if (self->prober && self->prober_gen != nc_fork_generation()) {
        nc_fork_keep(self->prober);
        self->prober = NULL;
    }
    if (npy_settings_inherited(&self->s)) {
        nc_fork_keep(self->s.pool);
        self->s.pool = NULL;
    }
}

static void pool_dealloc(NpyPool *self)
{
    PyObject_GC_UnTrack(self);
    registry_remove(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    forget_inherited(self);
    if (self->prober) {
        nc_prober *pr = self->prober;
        self->prober = NULL;
        Py_BEGIN_ALLOW_THREADS
        nc_prober_free(pr);
        Py_END_ALLOW_THREADS
    }
    if (self->s.pool && self->shared) {
        nc_pool *p = self->s.pool;
        self->s.pool = NULL;
        Py_BEGIN_ALLOW_THREADS
        nc_pool_unref(p);   /* its owner shuts it down */
        Py_END_ALLOW_THREADS
    }
    if (self->s.pool) {
        nc_pool *p = self->s.pool;
        self->s.pool = NULL;
        /* No PooledConnection is alive (each holds a reference to us), so
         * nothing can be using the connections any more. */
        Py_BEGIN_ALLOW_THREADS
        nc_pool_shutdown(p, 0.0);
        nc_pool_free(p);
        Py_END_ALLOW_THREADS
    }
    Py_CLEAR(self->s.display);
    if (self->s.borrow_stacks) {
        for (int i = 0; i < self->s.nstacks; i++)
            Py_CLEAR(self->s.borrow_stacks[i]);
        PyMem_Free(self->s.borrow_stacks);
        self->s.borrow_stacks = NULL;
    }
    Py_CLEAR(self->dict);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int pool_traverse(NpyPool *self, visitproc visit, void *arg)
{
    /* Not the type: NpyPool_Type is static, and a heap subclass's
     * subtype_traverse visits the type itself. */
    Py_VISIT(self->dict);
    /* The backend factory (held by the core pool's context, which this
     * object owns) and backend objects: App -> pool -> app.make_backend ->
     * App is a cycle. */
    if (self->s.kind == NPY_BACKEND_PY && self->s.pool)
        return npy_py_ctx_traverse(nc_pool_ctx(self->s.pool), visit, arg);
    return 0;
}

/* Break cycles; dealloc, which follows, stops the janitor and closes the
 * connections (without the GIL).  A janitor that tries to connect in between
 * finds no factory and fails like a closed pool. */
static int pool_clear(NpyPool *self)
{
    Py_CLEAR(self->dict);
    if (self->s.kind == NPY_BACKEND_PY && self->s.pool)
        npy_py_ctx_clear(nc_pool_ctx(self->s.pool));
    return 0;
}

static int check_pool(NpyPool *self)
{
    /* In a child after fork(): this process's own pool from here on. */
    if (self->prober && self->prober_gen != nc_fork_generation()) {
        nc_fork_keep(self->prober);
        self->prober = NULL;
    }
    if (npy_settings_fresh(&self->s) < 0)
        return -1;
    if (!self->s.pool) {
        npy_raise(NC_E_POOL, NC_K_INTERFACE, NULL, "the pool was not initialised");
        return -1;
    }
    return 0;
}

static double timeout_arg(PyObject *t, int *bad)
{
    if (!t || t == Py_None)
        return -1.0;
    if (PyBool_Check(t) || !(PyLong_Check(t) || PyFloat_Check(t))) {
        npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout must be a number of seconds or None, not %s",
                 Py_TYPE(t)->tp_name);
        *bad = 1;
        return 0;
    }
    double d = PyFloat_AsDouble(t);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout is too large");
        *bad = 1;
        return 0;
    }
    if (d < 0 || d != d) {
        npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout must not be negative");
        *bad = 1;
    }
    return d;
}

static PyObject *pool_get_connection(NpyPool *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *t = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:get_connection", kwlist, &t))
        return NULL;
    int bad = 0;
    double timeout = timeout_arg(t, &bad);
    if (bad || check_pool(self) < 0)
        return NULL;
    return npy_lease_new((PyObject *)self, &self->s, timeout);
}

static PyObject *pool_acquire(NpyPool *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *t = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:acquire", kwlist, &t))
        return NULL;
    int bad = 0;
    double timeout = timeout_arg(t, &bad);
    if (bad)
        return NULL;
    if (check_pool(self) < 0)
        return NULL;
    return (PyObject *)npy_connection_lend((PyObject *)self, &self->s, timeout);
}

static PyObject *pool_shutdown(NpyPool *self, PyObject *args, PyObject *kwds)
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
    nc_pool *p = self->s.pool;
    nc_prober *pr = self->prober;
    /* Ctrl-C ends the waits (for the janitor, for borrowed connections):
     * the pool is closed all the same, those still out are closed as they
     * come back, and a second shutdown() waits for them again. */
    npy_interrupt it;
    npy_interrupt_arm(&it);
    Py_BEGIN_ALLOW_THREADS
    /* Closing the probe connection is I/O too (never a wait for a running
     * probe: that one closes its own). */
    if (pr)
        nc_prober_close(pr);
    left = nc_pool_shutdown(p, timeout);
    Py_END_ALLOW_THREADS
    if (npy_interrupt_disarm(&it))
        return NULL;
    return PyLong_FromLong(left);
}

/* _drain(retire, hold=False): nc_pool_drain.  In a forked child check_pool
 * first gives this process its own pool, so the parent's connections are
 * never touched. */
static PyObject *pool_drain(NpyPool *self, PyObject *args)
{
    int retire, hold = 0;
    if (!PyArg_ParseTuple(args, "p|p:_drain", &retire, &hold) || check_pool(self) < 0)
        return NULL;
    nc_pool *p = self->s.pool;
    int flags = (retire ? NC_DRAIN_RETIRE : 0) | (hold ? NC_DRAIN_HOLD : 0);
    Py_BEGIN_ALLOW_THREADS   /* closing is I/O (a goodbye message, a SQLite checkpoint) */
    nc_pool_drain(p, flags);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *pool_raw_stats(NpyPool *self, PyObject *unused)
{
    (void)unused;
    if (check_pool(self) < 0)
        return NULL;
    npy_pool_settings *ps = &self->s;
    if (ps->borrow_stacks && npy_leak_report(ps->pool, ps->borrow_stacks, ps->display, ps->leak_timeout, 2) < 0)
        return NULL;
    nc_pool_stats s;
    nc_pool_get_stats(self->s.pool, &s);
    return Py_BuildValue(
        "{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:O,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:d,s:d,s:d}",
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
        "leaked", (unsigned long long)s.leaked,
        "query_count", (unsigned long long)s.queries,
        "error_count", (unsigned long long)s.query_errors,
        "wait_time_total", s.wait_total, "acquire_wait_p50", s.wait_p50,
        "acquire_wait_p99", s.wait_p99);
}

static PyObject *pool_leaks_pending(NpyPool *self, PyObject *unused)
{
    (void)unused;
    if (check_pool(self) < 0)
        return NULL;
    return PyLong_FromLong(nc_pool_leaks_pending(self->s.pool));
}

static PyObject *pool_get_closed(NpyPool *self, void *c)
{
    (void)c;
    if (npy_settings_fresh(&self->s) < 0)
        return NULL;
    return PyBool_FromLong(!self->s.pool || nc_pool_is_closed(self->s.pool));
}

static PyObject *pool_get_kind(NpyPool *self, void *c)
{
    (void)c;
    switch (self->s.kind) {
    case NPY_BACKEND_PG: return PyUnicode_FromString("postgresql");
    case NPY_BACKEND_SQLITE: return PyUnicode_FromString("sqlite");
    case NPY_BACKEND_PY: return PyUnicode_FromString("python");
    default: Py_RETURN_NONE;
    }
}

static PyObject *pool_get_display(NpyPool *self, void *c)
{
    (void)c;
    if (!self->s.display)
        Py_RETURN_NONE;
    return Py_NewRef(self->s.display);
}

/* ---- probing the endpoint (noodlecore-db status) -------------------------------- */

static int put(PyObject *d, const char *key, PyObject *v)
{
    if (!v)
        return -1;
    int rc = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return rc;
}

static PyObject *number_or_none(double x)
{
    return isnan(x) ? Py_NewRef(Py_None) : PyFloat_FromDouble(x);
}

static PyObject *text_or_none(const char *s)
{
    return s[0] ? PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace") : Py_NewRef(Py_None);
}

static PyObject *probe_dict(const nc_probe_result *r)
{
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    int bad = put(d, "ok", PyBool_FromLong(r->ok)) < 0 || put(d, "latency", PyFloat_FromDouble(r->latency)) < 0 ||
              put(d, "connect_time", PyFloat_FromDouble(r->connect_time)) < 0 ||
              put(d, "query_time", PyFloat_FromDouble(r->query_time)) < 0 ||
              put(d, "role", PyUnicode_FromString(nc_role_name(r->role))) < 0 ||
              put(d, "error", text_or_none(r->error)) < 0 ||
              put(d, "error_code", r->ok ? Py_NewRef(Py_None) : PyLong_FromLong(r->error_code)) < 0;
    if (!bad && r->detailed) {
        PyObject *standbys = PyList_New(r->nstandbys);
        for (int i = 0; standbys && i < r->nstandbys; i++) {
            const nc_probe_standby *sb = &r->standbys[i];
            PyObject *row = Py_BuildValue("{s:N,s:N,s:N,s:N,s:N,s:N}", "application_name", text_or_none(sb->name),
                                          "client_addr", text_or_none(sb->client_addr), "state",
                                          text_or_none(sb->state), "sync_state", text_or_none(sb->sync_state),
                                          "lag_bytes", number_or_none(sb->lag_bytes), "lag_seconds",
                                          number_or_none(sb->lag_seconds));
            if (!row)
                Py_CLEAR(standbys);
            else
                PyList_SET_ITEM(standbys, i, row);
        }
        bad = put(d, "server_version", text_or_none(r->server_version)) < 0 ||
              put(d, "in_recovery", PyBool_FromLong(r->in_recovery)) < 0 ||
              put(d, "replay_lag_bytes", number_or_none(r->replay_lag_bytes)) < 0 ||
              put(d, "replay_delay", number_or_none(r->replay_delay)) < 0 ||
              put(d, "receiver_status", text_or_none(r->receiver_status)) < 0 ||
              put(d, "upstream", text_or_none(r->upstream)) < 0 || put(d, "standbys", standbys) < 0;
    }
    if (bad) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *pool_probe(NpyPool *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    double timeout = 5.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|d:_probe", kwlist, &timeout) || check_pool(self) < 0)
        return NULL;
    if (!(timeout > 0))
        return npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout must be a positive number of seconds");
    if (nc_pool_is_closed(self->s.pool))
        return npy_raise(NC_E_POOL_CLOSED, NC_K_OPERATIONAL, NULL, "pool is shut down");
    if (!self->prober) {
        nc_error err;
        /* The same prober the failover monitor uses, with the replication
         * detail a status display shows. */
        self->prober = nc_prober_new(self->s.pool, 1, &err);
        if (!self->prober)
            return npy_raise_error(&err);
        self->prober_gen = nc_fork_generation();
    }
    nc_prober *pr = self->prober;
    nc_probe_result r;
    Py_BEGIN_ALLOW_THREADS
    nc_prober_probe(pr, nc_now() + timeout, &r);
    Py_END_ALLOW_THREADS
    return probe_dict(&r);
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
    {"_drain", (PyCFunction)pool_drain, METH_VARARGS,
     "_drain(retire, hold=False): close the idle connections now; retire: every other one open now is closed "
     "when it comes back instead of parked; hold: min_connections not reopened until the next borrow."},
    {"_raw_stats", (PyCFunction)pool_raw_stats, METH_NOARGS,
     "Counters of the core pool, as a dict (reports leaks found since the last call first)."},
    {"_leaks_pending", (PyCFunction)pool_leaks_pending, METH_NOARGS,
     "How many leaks the maintenance thread found that no borrow or stats call has reported yet."},
    {"_probe", (PyCFunction)(void (*)(void))pool_probe, METH_VARARGS | METH_KEYWORDS,
     "_probe(timeout=5.0) -> dict: one health probe of the endpoint (the monitor's prober, with detail)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef pool_getset[] = {
    {"closed", (getter)pool_get_closed, NULL, "True once the pool is shut down.", NULL},
    {"backend_kind", (getter)pool_get_kind, NULL, "'postgresql', 'sqlite' or 'python'.", NULL},
    {"target", (getter)pool_get_display, NULL, "Where the pool connects (never the password).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject NpyPool_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore._native.Pool",
    .tp_basicsize = sizeof(NpyPool),
    .tp_dealloc = (destructor)pool_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The native connection pool (base of DatabaseConnectionPool).",
    .tp_traverse = (traverseproc)pool_traverse,
    .tp_clear = (inquiry)pool_clear,
    .tp_weaklistoffset = offsetof(NpyPool, weakreflist),
    .tp_dictoffset = offsetof(NpyPool, dict),
    .tp_methods = pool_methods,
    .tp_getset = pool_getset,
    .tp_init = (initproc)pool_init,
    .tp_new = PyType_GenericNew,
};

