/* pybackend.c - a backend made of Python objects: backend_factory() returns
 * an object with execute_query(sql, params), optionally ping(), and close()
 * or disconnect().  The pool core calls these ops from any thread, the
 * maintenance thread included, so each op takes the GIL itself — and does
 * nothing at all once the interpreter is going away. */
#include "pool.h"

typedef struct py_ctx {
    PyObject *factory;
} py_ctx;

typedef struct py_conn {
    PyObject *obj;
    int broken;
} py_conn;

void *nc_py_ctx_new(PyObject *factory)
{
    py_ctx *ctx = PyMem_RawCalloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->factory = Py_NewRef(factory);
    return ctx;
}

PyObject *nc_py_conn_object(void *raw)
{
    return ((py_conn *)raw)->obj;
}

void nc_py_conn_mark_broken(void *raw)
{
    ((py_conn *)raw)->broken = 1;
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
    if (nc_python_gone()) {
        nc_error_set(err, NC_E_POOL_CLOSED, NC_K_OPERATIONAL, "the interpreter is shutting down");
        return NULL;
    }
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *et, *ev, *tb;   /* whatever the calling thread had pending */
    PyErr_Fetch(&et, &ev, &tb);
    py_conn *c = NULL;
    PyObject *obj = PyObject_CallNoArgs(ctx->factory);
    if (!obj) {
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
    if (nc_python_gone()) {
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
    return ((py_conn *)vconn)->broken ? -1 : 0;
}

static int py_reset(void *vctx, void *vconn, double deadline, nc_error *err)
{
    (void)vctx;
    (void)vconn;
    (void)deadline;
    (void)err;
    return 0;
}

static void py_close(void *vctx, void *vconn)
{
    (void)vctx;
    py_conn *c = vconn;
    if (!c)
        return;
    if (nc_python_gone()) {
        /* Leak the object: touching it now could crash the process. */
        PyMem_RawFree(c);
        return;
    }
    PyGILState_STATE g = PyGILState_Ensure();
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
    if (!nc_python_gone()) {
        PyGILState_STATE g = PyGILState_Ensure();
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        Py_DECREF(ctx->factory);
        PyErr_Restore(et, ev, tb);
        PyGILState_Release(g);
    }
    PyMem_RawFree(ctx);
}

const nc_backend_ops nc_py_ops = {
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
