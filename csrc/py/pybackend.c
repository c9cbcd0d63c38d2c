/* pybackend.c - the Python-object backend (see pybackend.h). */
#include "pybackend.h"
#include "errors.h"

typedef struct py_conn py_conn;

typedef struct py_ctx {
    PyObject *factory;  /* NULL once the owning Pool was cleared by the GC */
    /* Every open connection, for the GC's traversal: linked and unlinked
     * with the GIL held, so a collection (which holds it) sees one
     * consistent set, whatever state the pool's slots are in. */
    py_conn *open;
} py_ctx;

/* The protocol cannot tell whether a backend has a transaction open, so the
 * binding remembers what it asked for: begin() without a commit() or
 * rollback() after it (txn), or statements since the last of those (dirty:
 * a backend that is not in autocommit mode, a DB-API connection say, opened
 * one implicitly).  The return rolls either back (py_reset). */
struct py_conn {
    py_conn *prev, *next;   /* in py_ctx.open (GIL) */
    PyObject *obj;
    int broken;
    int suspect;        /* it raised while lent: ping it before it is lent again */
    int txn;            /* begin() succeeded and no commit()/rollback() since */
    int dirty;          /* execute_query() ran since the last begin/commit/rollback */
};

void *npy_py_ctx_new(PyObject *factory)
{
    py_ctx *ctx = PyMem_RawCalloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->factory = Py_NewRef(factory);
    return ctx;
}

PyObject *npy_py_conn_object(void *raw)
{
    return ((py_conn *)raw)->obj;
}

int npy_py_ctx_traverse(void *vctx, visitproc visit, void *arg)
{
    py_ctx *ctx = vctx;
    Py_VISIT(ctx->factory);
    /* The backend objects: App -> pool -> backend -> App is a cycle too. */
    for (py_conn *c = ctx->open; c; c = c->next)
        Py_VISIT(c->obj);
    return 0;
}

void npy_py_ctx_clear(void *vctx)
{
    py_ctx *ctx = vctx;
    Py_CLEAR(ctx->factory);
}

/* Describe the pending Python exception into err and clear it. */
static void take_exception(nc_error *err, int code, const char *what)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    const char *text = "unknown error";
    PyObject *s = ev ? PyObject_Str(ev) : NULL;
    if (s)
        text = PyUnicode_AsUTF8(s);
    if (!text) {
        PyErr_Clear();
        text = "unprintable error";
    }
    nc_error_set(err, code, NC_K_OPERATIONAL, "%s: %s: %s", what,
                 et ? ((PyTypeObject *)et)->tp_name : "Error", text);
    if (!s)
        PyErr_Clear();
    Py_XDECREF(s);
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(tb);
}

static void *py_connect(void *vctx, double deadline, nc_error *err)
{
    (void)deadline;   /* a Python factory cannot be interrupted; it runs to completion */
    py_ctx *ctx = vctx;
    if (npy_python_gone()) {
        nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "the interpreter is shutting down");
        return NULL;
    }
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *et, *ev, *tb;   /* whatever the calling thread had pending */
    PyErr_Fetch(&et, &ev, &tb);
    py_conn *c = NULL;
    /* A reference of our own: the call may release the GIL, and a collection
     * on another thread may clear the Pool (and ctx->factory) meanwhile. */
    PyObject *factory = Py_XNewRef(ctx->factory);
    PyObject *obj = factory ? PyObject_CallNoArgs(factory) : NULL;
    Py_XDECREF(factory);
    if (!factory) {
        nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "the pool was garbage-collected");
    } else if (!obj) {
        take_exception(err, NC_E_CONNECTION, "backend_factory() raised");
    } else if (obj == Py_None) {
        nc_error_set(err, NC_E_BACKEND, NC_K_INTERFACE, "backend_factory() returned None");
    } else if (!PyObject_HasAttrString(obj, "execute_query")) {
        nc_error_set(err, NC_E_BACKEND, NC_K_INTERFACE,
                     "backend_factory() returned a %s, which has no execute_query(sql, params)",
                     Py_TYPE(obj)->tp_name);
    } else if (!(c = PyMem_RawCalloc(1, sizeof *c))) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
    } else {
        c->obj = obj;
        obj = NULL;
        c->next = ctx->open;
        if (ctx->open)
            ctx->open->prev = c;
        ctx->open = c;
    }
    Py_XDECREF(obj);
    PyErr_Restore(et, ev, tb);
    PyGILState_Release(g);
    return c;
}

static int py_looks_alive(void *vctx, void *vconn)
{
    (void)vctx;
    return !((py_conn *)vconn)->broken;
}

static int py_ping(void *vctx, void *vconn, double deadline, nc_error *err)
{
    (void)vctx;
    (void)deadline;
    py_conn *c = vconn;
    if (npy_python_gone()) {
        nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "the interpreter is shutting down");
        return -1;
    }
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    int rc = -1;
    PyObject *res;
    /* The API contract's health check: execute_query("SELECT 1", {}) when
     * the backend has it, else ping(). */
    if (PyObject_HasAttrString(c->obj, "execute_query")) {
        res = PyObject_CallMethod(c->obj, "execute_query", "s{}", "SELECT 1");
        if (res)
            rc = 0;
    } else {
        res = PyObject_CallMethod(c->obj, "ping", NULL);
        if (res) {
            int t = PyObject_IsTrue(res);
            rc = t > 0 ? 0 : -1;
            if (t == 0)
                nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "ping() returned false");
        }
    }
    if (!res)
        take_exception(err, NC_E_CONNECTION, "health check raised");
    Py_XDECREF(res);
    if (PyErr_Occurred())
        PyErr_Clear();
    if (rc < 0)
        c->broken = 1;
    PyErr_Restore(et, ev, tb);
    PyGILState_Release(g);
    return rc;
}

static int py_return_state(void *vctx, void *vconn)
{
    (void)vctx;
    py_conn *c = vconn;
    return c->broken ? -1 : c->suspect || c->txn || c->dirty ? 1 : 0;
}

/* rollback() when the backend has it, else ROLLBACK through execute_query
 * (or nothing, when only statements ran and there is no rollback(): such a
 * backend can only be in autocommit mode).  0, or -1 with err set.  GIL held. */
static int py_rollback(py_conn *c, int begun, nc_error *err)
{
    PyObject *res;
    if (PyObject_HasAttrString(c->obj, "rollback"))
        res = PyObject_CallMethod(c->obj, "rollback", NULL);
    else if (begun)
        res = PyObject_CallMethod(c->obj, "execute_query", "sO", "ROLLBACK", Py_None);
    else
        return 0;
    if (!res) {
        take_exception(err, NC_E_CONNECTION, "rollback on return raised");
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

/* Giving back a connection: roll back what the borrower left open (the
 * README's promise), and a backend that raised must answer a ping.  -1
 * discards it. */
static int py_reset(void *vctx, void *vconn, double deadline, nc_error *err)
{
    py_conn *c = vconn;
    int begun = c->txn, dirty = c->dirty;
    c->txn = c->dirty = 0;
    if ((begun || dirty) && !npy_python_gone()) {
        PyGILState_STATE g = PyGILState_Ensure();
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        int rc = py_rollback(c, begun, err);
        PyErr_Restore(et, ev, tb);
        PyGILState_Release(g);
        if (rc < 0) {
            /* A transaction we opened that cannot be rolled back: never lend
             * it again.  After plain statements the rollback may only mean
             * "nothing to roll back": a ping decides. */
            if (begun)
                return -1;
            c->suspect = 1;
        }
    }
    if (!c->suspect)
        return 0;
    c->suspect = 0;
    return py_ping(vctx, vconn, deadline, err);
}

static void unlink_conn(py_ctx *ctx, py_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        ctx->open = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void py_close(void *vctx, void *vconn)
{
    py_ctx *ctx = vctx;
    py_conn *c = vconn;
    if (!c)
        return;
    if (npy_python_gone()) {
        /* Leak the object: touching it now could crash the process.  Its
         * record leaves ctx->open only with the GIL; otherwise ctx_free
         * frees it (the Pool, whose traversal reads the list, is gone). */
        if (PyGILState_Check()) {
            unlink_conn(ctx, c);
            PyMem_RawFree(c);
        }
        return;
    }
    PyGILState_STATE g = PyGILState_Ensure();
    unlink_conn(ctx, c);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    const char *name = PyObject_HasAttrString(c->obj, "close") ? "close"
                       : PyObject_HasAttrString(c->obj, "disconnect") ? "disconnect" : NULL;
    if (name) {
        PyObject *r = PyObject_CallMethod(c->obj, name, NULL);
        if (!r)
            PyErr_Clear();   /* closing is best effort */
        Py_XDECREF(r);
    }
    Py_DECREF(c->obj);
    PyErr_Restore(et, ev, tb);
    PyGILState_Release(g);
    PyMem_RawFree(c);
}

static void py_ctx_free(void *vctx)
{
    py_ctx *ctx = vctx;
    if (!ctx)
        return;
    if (ctx->factory && !npy_python_gone()) {
        PyGILState_STATE g = PyGILState_Ensure();
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        Py_DECREF(ctx->factory);
        PyErr_Restore(et, ev, tb);
        PyGILState_Release(g);
    }
    while (ctx->open) {   /* records left by py_close after Python went away */
        py_conn *c = ctx->open;
        ctx->open = c->next;
        PyMem_RawFree(c);
    }
    PyMem_RawFree(ctx);
}

const nc_backend_ops npy_py_ops = {
    .kind = "python",
    .ping_new = 1,
    .connect = py_connect,
    .looks_alive = py_looks_alive,
    .ping = py_ping,
    .return_state = py_return_state,
    .reset = py_reset,
    .close = py_close,
    .ctx_free = py_ctx_free,
};

/* ---- statements (GIL held) ------------------------------------------------- */

/* The backend raised: mark the connection for a check before reuse (a
 * failed ping discards it), count a failed statement and tell the
 * observer.  The exception stays pending. */
static void backend_failed(nc_pool *pool, void *raw, int statement)
{
    ((py_conn *)raw)->suspect = 1;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    nc_error err;
    npy_error_from_backend(ev, &err);
    /* A failover decision may follow: not with the GIL held. */
    Py_BEGIN_ALLOW_THREADS
    if (statement)
        nc_pool_statement_done(pool, &err);
    else
        nc_pool_report(pool, &err);
    Py_END_ALLOW_THREADS
    PyErr_Restore(et, ev, tb);
}

PyObject *npy_py_execute(nc_pool *pool, void *raw, PyObject *query, PyObject *params)
{
    ((py_conn *)raw)->dirty = 1;   /* even a failed one may have opened a transaction */
    PyObject *res = PyObject_CallMethod(((py_conn *)raw)->obj, "execute_query", "OO", query, params);
    if (!res) {
        backend_failed(pool, raw, 1);
        return NULL;
    }
    nc_pool_statement_done(pool, NULL);
    return res;
}

int npy_py_pending(void *raw, const char *sql)
{
    py_conn *c = raw;
    return c->dirty && PyObject_HasAttrString(c->obj, sql[0] == 'C' ? "commit" : "rollback");
}

int npy_py_command(nc_pool *pool, void *raw, const char *sql)
{
    PyObject *backend = ((py_conn *)raw)->obj;
    const char *meth = !strcmp(sql, "BEGIN") ? "begin" : !strcmp(sql, "COMMIT") ? "commit" : "rollback";
    PyObject *res = PyObject_HasAttrString(backend, meth) ? PyObject_CallMethod(backend, meth, NULL)
                                                          : PyObject_CallMethod(backend, "execute_query", "sO", sql,
                                                                                Py_None);
    if (!res) {
        backend_failed(pool, raw, 0);
        return -1;
    }
    Py_DECREF(res);
    py_conn *c = raw;
    c->txn = sql[0] == 'B';   /* BEGIN opened one; COMMIT / ROLLBACK ended it */
    c->dirty = 0;
    return 0;
}
