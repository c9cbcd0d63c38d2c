/* module.h - shared state of the noodlecore._native extension module.
 *
 * The module uses single-phase init and one state struct (nc_state) reached
 * through a global pointer: Python 3.10 lacks PyType_GetModuleByDef, and one
 * interpreter per process is all this library supports.  Types are static.
 */
#ifndef NC_PY_MODULE_H
#define NC_PY_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "../core/nc_error.h"

typedef struct nc_state {
    PyObject *error_factory;    /* errors._native_error(code, kind, sqlstate, message) -> exception */
    PyObject *Decimal;          /* decimal.Decimal */
    PyObject *UUID;             /* uuid.UUID */
    PyObject *json_loads;       /* json.loads */
    PyObject *json_dumps;       /* json.dumps */
    PyObject *utc;              /* datetime.timezone.utc */
    PyObject *timezone;         /* datetime.timezone */
    PyObject *str_row_format;   /* interned names used on hot paths */
} nc_state;

extern nc_state *nc_st;

/* Raise the noodlecore.database.errors exception for code (kind and sqlstate
 * pick the PEP 249 class when the code alone does not).  Always returns NULL. */
PyObject *nc_raise(int code, int kind, const char *sqlstate, const char *fmt, ...);
/* Raise from a filled core nc_error.  Always returns NULL. */
PyObject *nc_raise_error(const nc_error *err);

/* 1 once the interpreter is finalizing (or our atexit hook ran): native
 * threads must not call into Python any more. */
int nc_python_gone(void);

/* Types, each defined in its own file. */
extern PyTypeObject NcPool_Type;          /* pool.c */
extern PyTypeObject NcConnection_Type;    /* connection.c */
extern PyTypeObject NcLease_Type;         /* pool.c: what get_connection() returns */

#endif
