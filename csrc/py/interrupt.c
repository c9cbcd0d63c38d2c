/* interrupt.c - Ctrl-C during a wait without the GIL (see interrupt.h). */
#include "interrupt.h"
#include "../core/nc_stop.h"

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

void npy_interrupt_arm(npy_interrupt *it)
{
    it->type = it->value = it->tb = NULL;
    /* Only the main thread runs signal handlers: other threads' waits are
     * left alone (they would take the GIL for nothing). */
    it->armed = _PyOS_IsMainThread();
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
