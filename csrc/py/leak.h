/* leak.h - the warning of leak_timeout: where each borrow was made, and the
 * leaks the core's janitor found turned into ConnectionLeakWarning, on a
 * Python thread (the caller's, with the GIL).  Used by connection.c (at a
 * borrow) and pool.c (options, stats). */
#ifndef NPY_LEAK_H
#define NPY_LEAK_H

#include <stdint.h>
#include "state.h"
#include "../core/nc_pool.h"

/* Remember the calling thread's Python stack for slot `index`'s borrow
 * `lease` in stacks[index] (one per slot, owned by the pool). */
void npy_leak_note(PyObject **stacks, int index, uint64_t lease);
/* Warn about every leak the core found since the last call (taken from it);
 * -1 with the exception set when a warning filter raised. */
int npy_leak_report(nc_pool *pool, PyObject *const *stacks, PyObject *display, double leak_timeout,
                    int stacklevel);
/* ConnectionLeakWarning in the module. */
int npy_leak_add_constants(PyObject *module);

#endif
