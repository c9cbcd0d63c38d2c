/* nc_fork.c - the fork generation and respawning an inherited pool (see
 * nc_fork.h). */
#include "nc_fork.h"
#include "nc_pool_internal.h"

#include <pthread.h>
#include <stdlib.h>

static uint64_t generation;
static pthread_once_t installed = PTHREAD_ONCE_INIT;

/* Runs in the child right after fork(), where only async-signal-safe work
 * is allowed: one atomic increment.  Everything else happens lazily, at the
 * first use of an inherited object, in ordinary code. */
static void in_child(void)
{
    __atomic_add_fetch(&generation, 1, __ATOMIC_SEQ_CST);
}

static void install(void)
{
    /* Cannot fail in practice (ENOMEM); without it a child would not notice. */
    (void)pthread_atfork(NULL, NULL, in_child);
}

uint64_t nc_fork_generation(void)
{
    pthread_once(&installed, install);
    return __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
}

int nc_pool_inherited(const nc_pool *p)
{
    return p->fork_gen != nc_fork_generation();
}

typedef struct kept {
    void *obj;
    struct kept *next;
} kept;

static kept *kept_head;

void nc_fork_keep(void *obj)
{
    kept *k = malloc(sizeof *k);
    if (!k)
        return;   /* a leak report then, nothing worse */
    k->obj = obj;
    k->next = __atomic_load_n(&kept_head, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(&kept_head, &k->next, k, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        ;
}

nc_pool *nc_pool_respawn(nc_pool *old, nc_error *err)
{
    /* Plain reads of the inherited copy: no thread of the parent exists here
     * to change it, and its mutex may be held by one of them forever.  cfg,
     * ops and ctx do not change after nc_pool_new. */
    nc_pool_config cfg = old->cfg;
    const nc_backend_ops *ops = old->ops;
    void *ctx = old->ctx;
    int was_closed = old->closed;
    old->ctx = NULL;   /* the new pool owns it (and frees it, also on failure) */
    nc_pool_config make = cfg;
    if (was_closed) {
        /* Shut down from the start: no janitor to start and stop (it might
         * even open a connection first). */
        make.validate = 0;
        make.min_connections = 0;
        make.idle_timeout = 0;
        make.max_lifetime = 0;
    }
    nc_pool *p = nc_pool_new(&make, ops, ctx, err);
    nc_fork_keep(old);
    if (p && was_closed) {
        nc_pool_shutdown(p, 0.0);
        p->cfg = cfg;   /* what it reports; nothing runs that reads it */
    }
    return p;
}
