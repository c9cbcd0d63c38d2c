/* lease.c - the ConnectionLease type (see lease.h). */
#include "lease.h"
#include "errors.h"

typedef struct NpyLease {
    PyObject_HEAD
    PyObject *owner;
    const npy_pool_settings *ps;
    double timeout;
    NpyConnection *conn;
} NpyLease;

PyObject *npy_lease_new(PyObject *owner, const npy_pool_settings *ps, double timeout)
{
    NpyLease *l = PyObject_GC_New(NpyLease, &NpyLease_Type);
    if (!l)
        return NULL;
    l->owner = Py_NewRef(owner);
    l->ps = ps;
    l->timeout = timeout;
    l->conn = NULL;
    PyObject_GC_Track(l);
    return (PyObject *)l;
}

/* Give back the borrow this lease holds, if any (dealloc and clear). */
static void lease_drop(NpyLease *self)
{
    if (self->conn) {
        /* Often freed while an exception unwinds: keep it intact. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        npy_connection_release(self->conn, 0);
        Py_CLEAR(self->conn);
        PyErr_Restore(et, ev, tb);
    }
}

static void lease_dealloc(NpyLease *self)
{
    PyObject_GC_UnTrack(self);
    lease_drop(self);
    Py_CLEAR(self->owner);
    PyObject_GC_Del(self);
}

static int lease_traverse(NpyLease *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->conn);
    return 0;
}

/* In a cycle: give the connection back, let go of the Pool; entering a
 * cleared lease raises. */
static int lease_clear(NpyLease *self)
{
    lease_drop(self);
    self->ps = NULL;
    Py_CLEAR(self->owner);
    return 0;
}

static PyObject *lease_enter(NpyLease *self, PyObject *unused)
{
    (void)unused;
    if (self->conn)
        return npy_raise(NC_E_POOL, NC_K_INTERFACE, NULL, "this get_connection() context is already in use");
    if (!self->owner)
        return npy_raise(NC_E_POOL_CLOSED, NC_K_OPERATIONAL, NULL, "the pool was garbage-collected");
    NpyConnection *c = npy_connection_lend(self->owner, self->ps, self->timeout);
    if (!c)
        return NULL;
    self->conn = c;
    return Py_NewRef((PyObject *)c);
}

static PyObject *lease_exit(NpyLease *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    NpyConnection *c = self->conn;
    if (c) {
        self->conn = NULL;
        npy_connection_release(c, 0);
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

PyTypeObject NpyLease_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore._native.ConnectionLease",
    .tp_basicsize = sizeof(NpyLease),
    .tp_dealloc = (destructor)lease_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)lease_traverse,
    .tp_clear = (inquiry)lease_clear,
    .tp_doc = "Context manager returned by get_connection(): borrows on entry, returns on exit.",
    .tp_methods = lease_methods,
};
