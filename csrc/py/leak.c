/* leak.c - leak_timeout's warning (see leak.h).
 *
 * The core's janitor finds borrows held past leak_timeout and counts them;
 * it never calls into Python.  The warning is issued here, on a Python
 * thread with the GIL, at the pool's next borrow or stats call: no native
 * thread takes the GIL for it, and nothing is done at interpreter exit.  A
 * borrow's stack is kept only when leak_timeout > 0, as (code, line) pairs
 * (no frames, so no locals are kept alive), and formatted only for a warning.
 */
#include "leak.h"

#include <stdio.h>

static PyObject *leak_warning;   /* ConnectionLeakWarning */

void npy_leak_note(PyObject **stacks, int index, uint64_t lease)
{
    PyObject *frames = PyList_New(0);
    PyFrameObject *f = PyEval_GetFrame();   /* borrowed */
    Py_XINCREF(f);
    while (f && frames) {
        PyCodeObject *code = PyFrame_GetCode(f);
        PyObject *item = Py_BuildValue("(Oi)", (PyObject *)code, PyFrame_GetLineNumber(f));
        Py_DECREF(code);
        if (!item || PyList_Append(frames, item) < 0)
            Py_CLEAR(frames);
        Py_XDECREF(item);
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    Py_XDECREF(f);
    PyObject *note = frames ? Py_BuildValue("(KN)", (unsigned long long)lease, frames) : NULL;
    if (!note)
        PyErr_Clear();   /* no stack for this borrow: the warning says so */
    Py_XSETREF(stacks[index], note);
}

/* "  File ..., line ..., in ..." lines, outermost first, like a traceback. */
static PyObject *format_stack(PyObject *note, uint64_t lease)
{
    unsigned long long noted;
    PyObject *frames;
    if (!note || !PyArg_ParseTuple(note, "KO", &noted, &frames) || noted != lease) {
        PyErr_Clear();
        return PyUnicode_FromString("  (stack not recorded)\n");
    }
    PyObject *lines = PyList_New(0);
    for (Py_ssize_t i = PyList_GET_SIZE(frames) - 1; lines && i >= 0; i--) {
        PyObject *item = PyList_GET_ITEM(frames, i);
        PyCodeObject *code = (PyCodeObject *)PyTuple_GET_ITEM(item, 0);
        long line = PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        PyObject *text = PyUnicode_FromFormat("  File \"%U\", line %ld, in %U\n", code->co_filename, line,
                                              code->co_name);   /* line -1: none */
        if (!text || PyList_Append(lines, text) < 0)
            Py_CLEAR(lines);
        Py_XDECREF(text);
    }
    if (!lines)
        return NULL;
    PyObject *empty = PyUnicode_FromString("");
    PyObject *out = empty ? PyUnicode_Join(empty, lines) : NULL;
    Py_XDECREF(empty);
    Py_DECREF(lines);
    return out;
}

int npy_leak_report(nc_pool *pool, PyObject *const *stacks, PyObject *display, double leak_timeout,
                    int stacklevel)
{
    nc_leak found[8];
    int n;
    while (pool && (n = nc_pool_take_leaks(pool, found, 8)) > 0) {
        for (int i = 0; i < n; i++) {
            PyObject *stack = format_stack(stacks[found[i].index], found[i].lease);
            if (!stack)
                return -1;
            char held[128];
            snprintf(held, sizeof held, "%.3g s without being returned (leak_timeout %g s)", found[i].held,
                     leak_timeout);
            PyObject *msg = PyUnicode_FromFormat("a connection of %U has been borrowed for %s; "
                                                 "borrowed at (most recent call last):\n%U",
                                                 display, held, stack);
            Py_DECREF(stack);
            const char *text = msg ? PyUnicode_AsUTF8(msg) : NULL;
            int rc = text ? PyErr_WarnEx(leak_warning, text, stacklevel) : -1;
            Py_XDECREF(msg);
            if (rc < 0)
                return -1;
        }
    }
    return 0;
}

int npy_leak_add_constants(PyObject *module)
{
    /* RuntimeWarning, not ResourceWarning: Python's default filters hide
     * ResourceWarning, and whoever set leak_timeout asked to be told. */
    leak_warning = PyErr_NewExceptionWithDoc(
        "noodlecore._native.ConnectionLeakWarning",
        "A borrowed connection was held longer than the pool's leak_timeout.", PyExc_RuntimeWarning, NULL);
    if (!leak_warning || PyModule_AddObject(module, "ConnectionLeakWarning", Py_NewRef(leak_warning)) < 0)
        return -1;
    return 0;
}
