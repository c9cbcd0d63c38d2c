/* transaction.c - the Transaction type (see transaction.h). */
#include "transaction.h"
#include "errors.h"

typedef struct NpyTransaction {
    PyObject_HEAD
    PyObject *conn;
    int started;
} NpyTransaction;

PyObject *npy_transaction_new(PyObject *conn)
{
    NpyTransaction *t = PyObject_GC_New(NpyTransaction, &NpyTransaction_Type);
    if (!t)
        return NULL;
    t->conn = Py_NewRef(conn);
    t->started = 0;
    PyObject_GC_Track(t);
    return (PyObject *)t;
}

static void txn_dealloc(NpyTransaction *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->conn);
    PyObject_GC_Del(self);
}

static int txn_traverse(NpyTransaction *self, visitproc visit, void *arg)
{
    Py_VISIT(self->conn);
    return 0;
}

/* Dropping the connection is enough: its own clear (or dealloc) gives the
 * borrow back, rolling back what is open. */
static int txn_clear(NpyTransaction *self)
{
    Py_CLEAR(self->conn);
    return 0;
}

static int txn_check(NpyTransaction *self)
{
    if (self->conn)
        return 0;
    npy_raise(NC_E_RELEASED, NC_K_INTERFACE, NULL, "this transaction() context was garbage-collected");
    return -1;
}

static PyObject *txn_enter(NpyTransaction *self, PyObject *unused)
{
    (void)unused;
    if (txn_check(self) < 0)
        return NULL;
    PyObject *r = PyObject_CallMethod(self->conn, "begin", NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    self->started = 1;
    return Py_NewRef(self->conn);
}

static PyObject *txn_exit(NpyTransaction *self, PyObject *const *args, Py_ssize_t nargs)
{
    int failed = nargs > 0 && args[0] != Py_None;
    if (!self->started)
        Py_RETURN_FALSE;
    if (txn_check(self) < 0)
        return NULL;
    self->started = 0;
    PyObject *r = PyObject_CallMethod(self->conn, failed ? "rollback" : "commit", NULL);
    if (!r) {
        if (failed) {
            /* Keep the block's own exception: the rollback failing (say the
             * connection is gone) must not hide why it was rolled back. */
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyMethodDef txn_methods[] = {
    {"__enter__", (PyCFunction)txn_enter, METH_NOARGS, "BEGIN; returns the connection."},
    {"__exit__", (PyCFunction)(void (*)(void))txn_exit, METH_FASTCALL,
     "COMMIT, or ROLLBACK when the block raised (the exception propagates)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject NpyTransaction_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore._native.Transaction",
    .tp_basicsize = sizeof(NpyTransaction),
    .tp_dealloc = (destructor)txn_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)txn_traverse,
    .tp_clear = (inquiry)txn_clear,
    .tp_doc = "Context manager of PooledConnection.transaction().",
    .tp_methods = txn_methods,
};
