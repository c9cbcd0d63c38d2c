/* interrupt.h - Ctrl-C during a wait the core does without the GIL.
 *
 * Python runs signal handlers on the main thread only, when it holds the
 * GIL.  A borrow or a statement waits in the core with the GIL released, so
 * a Ctrl-C would go unnoticed until the wait ended.  Around such a wait the
 * binding arms an npy_interrupt: on the main thread it installs the core's
 * stop check (nc_stop.h), which every NC_STOP_PERIOD takes the GIL for a
 * moment and runs PyErr_CheckSignals.  When a handler raises
 * (KeyboardInterrupt), the exception is kept, the core ends the wait
 * (cancelling a statement on the server) and disarming raises it.
 *
 *     npy_interrupt it;
 *     npy_interrupt_arm(&it);
 *     Py_BEGIN_ALLOW_THREADS  ...wait in the core...  Py_END_ALLOW_THREADS
 *     if (npy_interrupt_disarm(&it)) { undo what the wait got; return NULL; }
 */
#ifndef NPY_INTERRUPT_H
#define NPY_INTERRUPT_H

#include "state.h"

typedef struct npy_interrupt {
    int armed;
    PyObject *type, *value, *tb;    /* what a signal handler raised */
} npy_interrupt;

/* With the GIL held, before releasing it. */
void npy_interrupt_arm(npy_interrupt *it);

/* With the GIL held again: 1 when a signal handler raised during the wait
 * (that exception is now set: the caller drops its own error and returns
 * it), else 0. */
int npy_interrupt_disarm(npy_interrupt *it);

#endif
