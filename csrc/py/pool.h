/* pool.h - Pool, the native base of DatabaseConnectionPool: one core pool
 * (nc_pool) with the settings its connections read. */
#ifndef NPY_POOL_H
#define NPY_POOL_H

#include "connection.h"
#include "../core/nc_probe.h"

typedef struct NpyPool {
    PyObject_HEAD
    npy_pool_settings s;    /* s.pool is NULL until __init__ succeeded */
    nc_prober *prober;      /* for _probe(), made on first use */
    uint64_t prober_gen;    /* the fork generation it was made in */
    PyObject *weakreflist;
    PyObject *dict;         /* instance __dict__, for the Python subclass */
    struct NpyPool *reg_next, *reg_prev;
    int registered;
    int shared;             /* s.pool is another's (npy_pool_wrap): only a reference is ours */
} NpyPool;

extern PyTypeObject NpyPool_Type;

/* A Pool over a core pool made elsewhere (a Patroni member that joined:
 * nc_patroni_follow owns it), of like's type (a Pool) with its
 * per-connection settings (row format, query timeout); holds a reference
 * only, never shuts it down.  NULL with an exception. */
PyObject *npy_pool_wrap(nc_pool *p, PyObject *like);

/* Shut down every live pool without waiting (the exit hook). */
void npy_pools_shutdown_all(void);
/* POOL_DEFAULTS: every pool option's default, from the core's. */
int npy_pool_add_constants(PyObject *module);

#endif
