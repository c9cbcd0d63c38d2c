/* state.h - what the whole binding shares: Python.h, the cached Python
 * objects the value converters use, and whether Python is still there.
 *
 * Single-phase init with one static state (npy_st): Python 3.10 lacks
 * PyType_GetModuleByDef and one interpreter per process is all this library
 * supports.  Every binding function is named npy_* (the core's are nc_*).
 */
#ifndef NPY_STATE_H
#define NPY_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct npy_state {
    PyObject *Decimal;          /* decimal.Decimal */
    PyObject *UUID;             /* uuid.UUID */
    PyObject *json_loads;       /* json.loads */
    PyObject *json_dumps;       /* json.dumps */
    PyObject *utc;              /* datetime.timezone.utc */
    PyObject *timezone;         /* datetime.timezone */
} npy_state;

extern npy_state *npy_st;

/* 1 once the interpreter is finalizing (or the exit hook ran): native
 * threads must not take the GIL or touch a Python object any more. */
int npy_python_gone(void);
/* The exit hook ran (module.c): from now on npy_python_gone() is 1. */
void npy_set_python_gone(void);

#endif
