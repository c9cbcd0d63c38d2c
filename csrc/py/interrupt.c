/* interrupt.c - Ctrl-C during a wait without the GIL (see interrupt.h). */
#include "interrupt.h"
#include "../core/nc_stop.h"

#include <unistd.h>

/* The core's stop check, run by the waiting thread without the GIL. */
static int check_signals(void *arg)
{
    npy_interrupt *it = arg;
    if (it->type)
        return 1;
    if (npy_python_gone())
        return 0;
    PyGILState_STATE g = PyGILState_Ensure();
    if (PyErr_CheckSignals() < 0)
        PyErr_Fetch(&it->type, &it->value, &it->tb);
    PyGILState_Release(g);
    return it->type != NULL;
}

/* Whether the calling thread (GIL held) is the one Python runs signal
 * handlers on: threading.main_thread(), looked up once per process (after
 * a fork the child's main thread is the one that forked). */
static int on_main_thread(void)
{
    static unsigned long main_ident;
    static pid_t main_pid;
    pid_t pid = getpid();
    if (pid != main_pid) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyObject *threading = PyImport_ImportModule("threading");
        PyObject *main = threading ? PyObject_CallMethod(threading, "main_thread", NULL) : NULL;
        PyObject *ident = main ? PyObject_GetAttrString(main, "ident") : NULL;
        unsigned long v = ident ? PyLong_AsUnsignedLong(ident) : 0;
        Py_XDECREF(ident);
        Py_XDECREF(main);
        Py_XDECREF(threading);
        PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        if (!ident)
            return 0;   /* try again next time */
        main_ident = v;
        main_pid = pid;
    }
    return PyThread_get_thread_ident() == main_ident;
}

void npy_interrupt_arm(npy_interrupt *it)
{
    it->type = it->value = it->tb = NULL;
    /* Only the main thread runs signal handlers: other threads' waits are
     * left alone (they would take the GIL for nothing).  Nested (a signal
     * handler, or code run from inside an armed wait, using the library):
     * the outer wait keeps its check, the inner one goes without. */
    it->armed = !nc_stop_installed() && on_main_thread();
    if (it->armed)
        nc_stop_install(check_signals, it);
}

int npy_interrupt_disarm(npy_interrupt *it)
{
    if (!it->armed)
        return 0;
    nc_stop_install(NULL, NULL);
    it->armed = 0;
    if (!it->type)
        return 0;
    PyErr_Restore(it->type, it->value, it->tb);
    it->type = it->value = it->tb = NULL;
    return 1;
}
