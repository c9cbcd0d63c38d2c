/* patroni.h - _native.patroni_cluster(): the core's Patroni REST client
 * (nc_patroni.c) for Python, with the GIL released around the request. */
#ifndef NPY_PATRONI_H
#define NPY_PATRONI_H

#include "state.h"

/* patroni_cluster(urls, timeout) -> dict; METH_VARARGS. */
PyObject *npy_patroni_cluster(PyObject *mod, PyObject *args);
/* patroni_member_dsn(dsn, host, port) -> str (nc_patroni_member_dsn); METH_VARARGS. */
PyObject *npy_patroni_member_dsn(PyObject *mod, PyObject *args);
/* PatroniWatch: Patroni's /cluster re-read every interval by the core (nc_patroni_watch.c). */
extern PyTypeObject NpyPatroniWatch_Type;
/* PATRONI_MAX_URLS, PATRONI_LAG_UNKNOWN. */
int npy_patroni_add_constants(PyObject *module);

#endif
