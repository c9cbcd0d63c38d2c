/* failover.c - FailoverMonitor: Python glue over a core route (see
 * failover.h).  It holds the Pool objects (whose core pools the route
 * references) and turns the route's answers into Python values; every
 * decision (which endpoint, when to switch, what a failure means) is the
 * core's.  Calls that may wait run with the GIL released.
 */
#include "failover.h"
#include "connection.h"
#include "errors.h"
#include "interrupt.h"
#include "leak.h"
#include "options.h"
#include "pool.h"
#include "../core/nc_fork.h"
#include "../core/nc_pg.h"
#include "../core/nc_route.h"
#include "../core/nc_time.h"

#include <stddef.h>
#include <string.h>

typedef struct NpyFailover {
    PyObject_HEAD
    nc_route *route;
    PyObject *pools;            /* tuple of Pool, index = endpoint (a copy: the caller's list may change);
                                   endpoints that joined later get a Pool over the core's (sync_pools) */
    Py_ssize_t ninit;           /* how many endpoints it was made with */
    struct NpyFailover *reg_next, *reg_prev;   /* the registry the exit hook closes (with the GIL) */
    int registered;
    /* fork(): a child makes its own route from these at first use */
    uint64_t fork_gen;          /* the fork generation route was made in */
    nc_monitor_config cfg;
    nc_read_config rcfg;
    int prio[64], primary;
    int monitoring;             /* start() and no stop() since: the child's route monitors too */
    int resume;                 /* the child's route is to start monitoring at its first use */
    int closed;                 /* close() was called: a child makes no route */
    int last_ep;                /* the current endpoint as last seen (lend, status); -1 none */
    PyThread_type_lock follow_lock;  /* held while a child's new route follows the parent's endpoint */
    uint64_t follow_gen;        /* the generation follow_lock was made in */
    int following;
} NpyFailover;

/* ---- registry of live monitors, for the exit hook (touched with the GIL) ---- */

static NpyFailover *registry;

static void registry_add(NpyFailover *f)
{
    f->reg_next = registry;
    f->reg_prev = NULL;
    if (registry)
        registry->reg_prev = f;
    registry = f;
    f->registered = 1;
}

static void registry_remove(NpyFailover *f)
{
    if (!f->registered)
        return;
    if (f->reg_prev)
        f->reg_prev->reg_next = f->reg_next;
    else
        registry = f->reg_next;
    if (f->reg_next)
        f->reg_next->reg_prev = f->reg_prev;
    f->registered = 0;
}

void npy_failovers_close_all(double max_wait)
{
    Py_ssize_t n = 0;
    for (NpyFailover *f = registry; f; f = f->reg_next)
        n++;
    if (n == 0)
        return;
    NpyFailover **all = PyMem_Calloc((size_t)n, sizeof *all);
    if (!all)
        return;
    Py_ssize_t i = 0;
    for (NpyFailover *f = registry; f && i < n; f = f->reg_next)
        all[i++] = (NpyFailover *)Py_NewRef((PyObject *)f);
    for (Py_ssize_t k = 0; k < i; k++) {
        nc_route *r = all[k]->route;
        if (r && all[k]->fork_gen == nc_fork_generation()) {   /* never an inherited route */
            Py_BEGIN_ALLOW_THREADS
            nc_route_close_within(r, max_wait);
            Py_END_ALLOW_THREADS
        }
    }
    for (Py_ssize_t k = 0; k < i; k++)
        Py_DECREF(all[k]);
    PyMem_Free(all);
}

/* ---- options ---------------------------------------------------------------- */

static int policy_from_name(const char *s) { return nc_fo_policy_from_name(s); }

/* What one option table fills: the monitor's settings and read routing's. */
typedef struct fo_settings {
    nc_monitor_config mc;
    nc_read_config rc;
} fo_settings;

static void settings_defaults(fo_settings *st)
{
    nc_monitor_config_defaults(&st->mc);
    nc_read_config_defaults(&st->rc);
}

#define FO(f) offsetof(fo_settings, mc.fo.f)
#define MC(f) offsetof(fo_settings, mc.f)
#define RC(f) offsetof(fo_settings, rc.f)
static const npy_option failover_option_table[] = {
    {"mode", NPY_OPT_NAME, FO(mode), nc_fo_mode_from_name, nc_fo_mode_name},
    {"policy", NPY_OPT_NAME, FO(policy), policy_from_name, nc_fo_policy_name},
    {"max_failure_count", NPY_OPT_INT, FO(max_failure_count), NULL, NULL},
    {"failure_timeout", NPY_OPT_DOUBLE, FO(failure_timeout), NULL, NULL},
    {"response_time_threshold", NPY_OPT_DOUBLE, FO(response_time_threshold), NULL, NULL},
    {"slow_probe_count", NPY_OPT_INT, FO(slow_probe_count), NULL, NULL},
    {"recovery_check_interval", NPY_OPT_DOUBLE, FO(recovery_check_interval), NULL, NULL},
    {"max_recovery_attempts", NPY_OPT_INT, FO(max_recovery_attempts), NULL, NULL},
    {"auto_recovery", NPY_OPT_BOOL, FO(auto_recovery), NULL, NULL},
    {"require_writable", NPY_OPT_BOOL, FO(require_writable), NULL, NULL},
    {"hold_down", NPY_OPT_DOUBLE, FO(hold_down), NULL, NULL},
    {"health_check_interval", NPY_OPT_DOUBLE, MC(health_check_interval), NULL, NULL},
    {"health_check_timeout", NPY_OPT_DOUBLE, MC(health_check_timeout), NULL, NULL},
    {"failover_timeout", NPY_OPT_DOUBLE, MC(failover_timeout), NULL, NULL},
    {"failover_wait", NPY_OPT_DOUBLE, RC(failover_wait), NULL, NULL},
    {"max_replica_lag_bytes", NPY_OPT_DOUBLE, RC(max_replica_lag_bytes), NULL, NULL},
    {"max_replica_lag_seconds", NPY_OPT_DOUBLE, RC(max_replica_lag_seconds), NULL, NULL},
    {NULL, 0, 0, NULL, NULL},
};
#undef FO
#undef MC
#undef RC

static PyObject *names_tuple(const char *(*name)(int), int first, int count)
{
    PyObject *t = PyTuple_New(count - first);
    for (int i = first; t && i < count; i++) {
        PyObject *s = PyUnicode_FromString(name(i));
        if (!s) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i - first, s);
    }
    return t;
}

static int add(PyObject *module, const char *name, PyObject *v)
{
    if (!v || PyModule_AddObject(module, name, v) < 0) {
        Py_XDECREF(v);
        return -1;
    }
    return 0;
}

int npy_failover_add_constants(PyObject *module)
{
    fo_settings mc;
    settings_defaults(&mc);
    static const int policies[] = {NC_FO_FAILURE_COUNT, NC_FO_RESPONSE_TIME, NC_FO_HEALTH_CHECK, NC_FO_COMBINED};
    PyObject *pol = PyTuple_New(4);
    for (int i = 0; pol && i < 4; i++) {
        PyObject *s = PyUnicode_FromString(nc_fo_policy_name(policies[i]));
        if (!s)
            Py_CLEAR(pol);
        else
            PyTuple_SET_ITEM(pol, i, s);
    }
    return add(module, "FAILOVER_DEFAULTS", npy_options_export(failover_option_table, &mc)) < 0 ||
                   add(module, "FAILOVER_MODES", names_tuple(nc_fo_mode_name, 0, NC_FO_MODE_COUNT)) < 0 ||
                   add(module, "FAILOVER_POLICIES", pol) < 0 ||
                   add(module, "FAILOVER_STATES", names_tuple(nc_fo_state_name, 0, NC_FO_STATE_COUNT)) < 0 ||
                   add(module, "EVENT_KINDS", names_tuple(nc_event_kind_name, 1, NC_EV_COUNT)) < 0 ||
                   add(module, "ROLES", names_tuple(nc_role_name, 0, NC_ROLE_COUNT)) < 0 ||
                   add(module, "TARGETS", names_tuple(nc_target_name, 0, NC_TARGET_COUNT)) < 0
               ? -1
               : 0;
}

/* ---- a multi-host connection string as endpoints ---------------------------------- */

PyObject *npy_failover_split_hosts(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyUnicode_Check(arg))
        return npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "the connection string must be a str");
    const char *dsn = PyUnicode_AsUTF8(arg);
    if (!dsn)
        return NULL;
    char *dsns[NC_PG_MAX_HOSTS], *names[NC_PG_MAX_HOSTS];
    nc_error err;
    nc_error_clear(&err);
    int n = nc_pg_split_hosts(dsn, dsns, names, NC_PG_MAX_HOSTS, &err);
    if (n < 0)
        return npy_raise_error(&err);
    PyObject *out = PyList_New(n);
    for (int i = 0; i < n; i++) {
        PyObject *t = out ? Py_BuildValue("(ss)", names[i], dsns[i]) : NULL;
        if (out && !t)
            Py_CLEAR(out);
        if (out)
            PyList_SET_ITEM(out, i, t);
        /* the password is in dsns[i]: wiped before it goes back to malloc */
        memset(dsns[i], 0, strlen(dsns[i]));
        free(dsns[i]);
        free(names[i]);
    }
    return out;
}

/* ---- the type ------------------------------------------------------------------ */

static int fo_init(NpyFailover *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"pools", "priorities", "primary", "config", NULL};
    PyObject *pools, *prios, *cfgd;
    int primary;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!iO!:FailoverMonitor", kwlist, &PyList_Type, &pools,
                                     &PyList_Type, &prios, &primary, &PyDict_Type, &cfgd))
        return -1;
    if (self->route) {
        PyErr_SetString(PyExc_RuntimeError, "FailoverMonitor.__init__ called twice");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(pools);
    if (n < 1 || n > 64 || PyList_GET_SIZE(prios) != n || primary >= n) {
        npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "FailoverMonitor: inconsistent endpoint lists");
        return -1;
    }
    int prio[64];
    nc_pool *cpools[64];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(pools, i);
        if (!PyObject_TypeCheck(p, &NpyPool_Type) || !((NpyPool *)p)->s.pool) {
            npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "FailoverMonitor: pools must be initialised Pools");
            return -1;
        }
        if (npy_settings_fresh(&((NpyPool *)p)->s) < 0)   /* a Pool made before a fork() */
            return -1;
        cpools[i] = ((NpyPool *)p)->s.pool;
        /* Checked, never cut: (int)(2**32 + 3) would be priority 3. */
        PyObject *pv = PyList_GET_ITEM(prios, i);
        long x = PyLong_Check(pv) && !PyBool_Check(pv) ? PyLong_AsLong(pv) : -1;
        if (x < 1 || x > 2147483647L) {
            PyErr_Clear();
            npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL,
                      "FailoverMonitor: endpoint %zd: priority must be an integer from 1 to 2147483647", i);
            return -1;
        }
        prio[i] = (int)x;
    }
    fo_settings st;
    settings_defaults(&st);
    if (npy_options_read(cfgd, failover_option_table, &st, "failover") < 0)
        return -1;
    nc_error err;
    nc_error_clear(&err);
    nc_route *r;
    Py_BEGIN_ALLOW_THREADS
    r = nc_route_new(cpools, (int)n, prio, primary, &st.mc, &err);
    Py_END_ALLOW_THREADS
    if (!r) {
        npy_raise_error(&err);
        return -1;
    }
    if (nc_route_configure_reads(r, &st.rc, &err) < 0) {
        nc_route_free(r);
        npy_raise_error(&err);
        return -1;
    }
    PyObject *copy = PyList_AsTuple(pools);
    if (!copy) {
        nc_route_free(r);
        return -1;
    }
    self->route = r;
    Py_XSETREF(self->pools, copy);
    self->ninit = n;
    registry_add(self);
    self->fork_gen = nc_fork_generation();
    self->cfg = st.mc;
    self->rcfg = st.rc;
    memcpy(self->prio, prio, sizeof(int) * (size_t)n);
    self->primary = primary;
    self->last_ep = -1;
    return 0;
}

/* ---- fork() ------------------------------------------------------------------ */

/* 1 when the route was made in the parent, before a fork(): never touch it
 * (a parent thread may hold its mutexes; its probers' connections are the
 * parent's sessions), leave it unfreed (nc_fork_keep). */
static int route_inherited(NpyFailover *self)
{
    return self->route && self->fork_gen != nc_fork_generation();
}

static void abandon_route(NpyFailover *self)
{
    nc_fork_keep(self->route);
    self->route = NULL;
    self->fork_gen = nc_fork_generation();
}

/* A child's new route starts on the preferred endpoint.  When the parent
 * had switched away from it (its server down, say), the child switches too,
 * a manual failover verified by a probe, before any borrow of the child
 * tries the endpoint the parent left (a silent server would cost each new
 * child a connect timeout).  Without the GIL: other threads of the child
 * wait on follow_lock meanwhile (in fresh), their Ctrl-C honoured. */
static void follow_parent(NpyFailover *self, uint64_t gen)
{
    nc_route *r = self->route;
    int want = self->last_ep;
    nc_monitor *m = want >= 0 ? nc_route_enter(r) : NULL;
    if (!m)
        return;
    if (nc_monitor_current(m, NULL) != want) {
        if (self->follow_gen != gen) {
            /* A lock made here: one inherited might be held forever. */
            self->follow_lock = PyThread_allocate_lock();
            self->follow_gen = gen;
        }
        PyThread_type_lock l = self->follow_lock;
        if (l && PyThread_acquire_lock(l, NOWAIT_LOCK)) {
            self->following = 1;
            nc_error err;
            nc_error_clear(&err);
            Py_BEGIN_ALLOW_THREADS
            (void)nc_monitor_trigger_failover(m, want, "the endpoint the parent process used before fork()", &err);
            Py_END_ALLOW_THREADS
            self->following = 0;
            PyThread_release_lock(l);
        }
    }
    nc_route_leave(r);
}

/* Wait (GIL released, 0.1 s at a time, Ctrl-C honoured) while another
 * thread of this process runs follow_parent.  0, or -1 with the exception. */
static int wait_follow(NpyFailover *self, uint64_t gen)
{
    while (self->following && self->follow_gen == gen) {
        PyThread_type_lock l = self->follow_lock;
        PyLockStatus got;
        Py_BEGIN_ALLOW_THREADS
        got = PyThread_acquire_lock_timed(l, 100000, 0);
        Py_END_ALLOW_THREADS
        if (got == PY_LOCK_ACQUIRED)
            PyThread_release_lock(l);
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
    return 0;
}

/* In a child after fork(): the first use makes this process's own route
 * over the Pools' own pools, with the saved configuration, on the endpoint
 * the parent used, monitoring when the parent's did (started here: no
 * thread of the parent exists in the child).  Every method that uses the
 * route calls this first. */
static int fresh(NpyFailover *self)
{
    uint64_t gen = nc_fork_generation();
    if (route_inherited(self)) {
        abandon_route(self);
        if (self->closed)
            return 0;
        /* Endpoints that joined in the parent are not carried over (their
         * pools are the parent's follower's): the child starts over from
         * the endpoints the manager was made with, and the child's Patroni
         * watch adds the members again (patroni.c watch_get). */
        if (PyTuple_GET_SIZE(self->pools) > self->ninit) {
            PyObject *first = PyTuple_GetSlice(self->pools, 0, self->ninit);
            if (!first)
                return -1;
            Py_SETREF(self->pools, first);
        }
        Py_ssize_t n = PyTuple_GET_SIZE(self->pools);
        nc_pool *cpools[64];
        for (Py_ssize_t i = 0; i < n; i++) {
            NpyPool *p = (NpyPool *)PyTuple_GET_ITEM(self->pools, i);
            if (npy_settings_fresh(&p->s) < 0)
                return -1;
            if (!p->s.pool)
                return npy_raise(NC_E_POOL, NC_K_INTERFACE, NULL, "an endpoint's pool is gone"), -1;
            cpools[i] = p->s.pool;
        }
        nc_error err;
        nc_error_clear(&err);
        self->route = nc_route_new(cpools, (int)n, self->prio, self->primary, &self->cfg, &err);
        if (!self->route)
            return npy_raise_error(&err), -1;
        (void)nc_route_configure_reads(self->route, &self->rcfg, &err);   /* checked when first made */
        self->resume = self->monitoring;
        follow_parent(self, gen);
    } else if (wait_follow(self, gen) < 0) {
        return -1;
    }
    if (self->resume && self->route) {
        self->resume = 0;
        nc_route *r = self->route;
        nc_monitor *m = nc_route_enter(r);
        if (m) {
            nc_error err;
            int rc;
            Py_BEGIN_ALLOW_THREADS
            rc = nc_monitor_start(m, &err);
            Py_END_ALLOW_THREADS
            nc_route_leave(r);
            if (rc < 0)
                return npy_raise(NC_E_FO_START, NC_K_OPERATIONAL, NULL, "start monitoring failed: %s", err.message),
                       -1;
        }
    }
    return 0;
}

static void fo_dealloc(NpyFailover *self)
{
    PyObject_GC_UnTrack(self);
    registry_remove(self);
    if (route_inherited(self))
        abandon_route(self);
    if (self->follow_lock) {
        /* Nobody follows now (a follower holds a reference to self); one
         * made in a parent may have been held at the fork: left as it is. */
        if (self->follow_gen == nc_fork_generation())
            PyThread_free_lock(self->follow_lock);
        else
            nc_fork_keep(self->follow_lock);
    }
    if (self->route) {
        nc_route *r = self->route;
        self->route = NULL;
        Py_BEGIN_ALLOW_THREADS
        nc_route_free(r);
        Py_END_ALLOW_THREADS
    }
    Py_CLEAR(self->pools);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int fo_traverse(NpyFailover *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pools);
    return 0;
}

/* In a cycle (a manager's pools, a factory that refers back to it): stop
 * the monitor first (without the GIL: its probes of Python endpoints need
 * it), so that no probe runs on a Pool being cleared, then let go of the
 * Pools.  Later calls raise PoolClosedError. */
static int fo_clear(NpyFailover *self)
{
    if (route_inherited(self))
        abandon_route(self);   /* the parent's: never closed from a child */
    if (self->route) {
        nc_route *r = self->route;
        Py_BEGIN_ALLOW_THREADS
        nc_route_close(r);
        Py_END_ALLOW_THREADS
    }
    Py_CLEAR(self->pools);
    return 0;
}

/* The route's monitor for a call, or NULL with PoolClosedError (code) set.
 * Pair with nc_route_leave. */
static nc_monitor *enter(NpyFailover *self, int code)
{
    if (fresh(self) < 0)
        return NULL;
    nc_monitor *m = self->route ? nc_route_enter(self->route) : NULL;
    if (!m)
        npy_raise(code, NC_K_OPERATIONAL, NULL, "the failover manager is shut down");
    return m;
}

/* Pools for endpoints the route gained since (a Patroni member that
 * joined): self->pools grows to nc_route_count.  0, or -1 with an
 * exception. */
static int sync_pools(NpyFailover *self)
{
    if (!self->route || !self->pools)
        return 0;
    Py_ssize_t have = PyTuple_GET_SIZE(self->pools), n = nc_route_count(self->route);
    if (n <= have)
        return 0;
    PyObject *t = PyTuple_New(n);
    if (!t)
        return -1;
    for (Py_ssize_t i = 0; i < have; i++)
        PyTuple_SET_ITEM(t, i, Py_NewRef(PyTuple_GET_ITEM(self->pools, i)));
    PyObject *like = PyTuple_GET_ITEM(self->pools, 0);
    for (Py_ssize_t i = have; i < n; i++) {
        PyObject *p = npy_pool_wrap(nc_route_pool(self->route, (int)i), like);
        if (!p) {
            Py_DECREF(t);
            return -1;
        }
        PyTuple_SET_ITEM(t, i, p);
    }
    Py_SETREF(self->pools, t);
    return 0;
}

/* lend and lend_to: a connection, and its endpoint in *ep_out
 * (written_at: nc_route_lend_after's). */
static PyObject *lend_impl(NpyFailover *self, PyObject *arg, const char *tname, double written_at, int *ep_out)
{
    int target = NC_TARGET_PRIMARY;
    if (tname && (target = nc_target_from_name(tname)) < 0)
        return npy_raise(NC_E_FO_BAD_TARGET, NC_K_INTERFACE, NULL,
                         "target must be \"primary\", \"standby\", \"prefer-standby\" or \"any\", not \"%.100s\"",
                         tname);
    double timeout = -1.0;
    if (arg != Py_None) {
        timeout = PyFloat_AsDouble(arg);
        if ((timeout == -1.0 && PyErr_Occurred()) || timeout < 0 || timeout != timeout) {
            PyErr_Clear();
            return npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout must be a non-negative number or None");
        }
    }
    if (fresh(self) < 0)
        return NULL;
    nc_route *r = self->route;
    if (!r || !self->pools)
        return npy_raise(NC_E_POOL_CLOSED, NC_K_OPERATIONAL, NULL, "the failover manager is shut down");
    if (sync_pools(self) < 0)
        return NULL;
    /* Leaks the endpoint pools found (leak_timeout), warned on this thread
     * before borrowing: a warning filter may raise. */
    for (Py_ssize_t i = 0; self->pools && i < PyTuple_GET_SIZE(self->pools); i++) {
        npy_pool_settings *ps = &((NpyPool *)PyTuple_GET_ITEM(self->pools, i))->s;
        if (ps->borrow_stacks && npy_leak_report(ps->pool, ps->borrow_stacks, ps->display, ps->leak_timeout, 1) < 0)
            return NULL;
    }
    /* Made first: once a connection is borrowed nothing may fail. */
    NpyConnection *conn = npy_connection_alloc();
    if (!conn)
        return NULL;
    nc_error err;
    nc_error_clear(&err);
    int ep = -1;
    nc_conn *c = NULL;
    uint64_t lease = 0;
    /* One call into the core, which decides everything (which endpoint,
     * reporting one that cannot be reached, never one abandoned meanwhile);
     * it may wait or probe, so without the GIL. */
    int rc;
    npy_interrupt it;
    npy_interrupt_arm(&it);
    Py_BEGIN_ALLOW_THREADS
    rc = nc_route_lend_after(r, target, written_at, timeout, &ep, &c, &lease, &err);
    Py_END_ALLOW_THREADS
    if (npy_interrupt_disarm(&it)) {
        /* Ctrl-C: a connection got just as it came is given back. */
        if (rc == 0) {
            nc_pool *p = nc_route_pool(r, ep);
            Py_BEGIN_ALLOW_THREADS
            nc_pool_release(p, c, 0);
            Py_END_ALLOW_THREADS
        }
        Py_DECREF(conn);
        return NULL;
    }
    if (rc < 0) {
        Py_DECREF(conn);
        return npy_raise_error(&err);
    }
    if (!self->pools || ep >= PyTuple_GET_SIZE(self->pools)) {
        /* An endpoint that joined while we borrowed (or a close meanwhile):
         * its Pool now, or the connection goes back. */
        if (!self->pools || sync_pools(self) < 0 || ep >= PyTuple_GET_SIZE(self->pools)) {
            nc_pool *p = nc_route_pool(r, ep);
            Py_BEGIN_ALLOW_THREADS
            nc_pool_release(p, c, 0);
            Py_END_ALLOW_THREADS
            Py_DECREF(conn);
            if (!PyErr_Occurred())
                npy_raise(NC_E_POOL_CLOSED, NC_K_OPERATIONAL, NULL, "the failover manager is shut down");
            return NULL;
        }
    }
    NpyPool *pool = (NpyPool *)PyTuple_GET_ITEM(self->pools, ep);
    npy_connection_attach(conn, (PyObject *)pool, &pool->s, c, lease);
    conn->outcome_errors = 1;   /* a statement lost at a switchover or a kill: 3039 when its outcome is unknown */
    if (target == NC_TARGET_PRIMARY)
        self->last_ep = ep;
    *ep_out = ep;
    return (PyObject *)conn;
}

static PyObject *fo_lend(NpyFailover *self, PyObject *args)
{
    PyObject *arg = Py_None;
    const char *tname = NULL;
    int ep;
    if (!PyArg_ParseTuple(args, "|Oz:lend", &arg, &tname))
        return NULL;
    return lend_impl(self, arg, tname, 0, &ep);
}

static PyObject *fo_lend_to(NpyFailover *self, PyObject *args)
{
    PyObject *arg = Py_None;
    const char *tname = NULL;
    int ep = -1;
    double written_at = 0;
    if (!PyArg_ParseTuple(args, "|Ozd:lend_to", &arg, &tname, &written_at))
        return NULL;
    PyObject *conn = lend_impl(self, arg, tname, written_at, &ep);
    return conn ? Py_BuildValue("(Ni)", conn, ep) : NULL;
}

static PyObject *fo_start(NpyFailover *self, PyObject *unused)
{
    (void)unused;
    nc_monitor *m = enter(self, NC_E_POOL_CLOSED);
    if (!m)
        return NULL;
    nc_error err;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = nc_monitor_start(m, &err);
    Py_END_ALLOW_THREADS
    nc_route_leave(self->route);
    if (rc < 0)
        return npy_raise(NC_E_FO_START, NC_K_OPERATIONAL, NULL, "start monitoring failed: %s", err.message);
    self->monitoring = 1;
    Py_RETURN_NONE;
}

static PyObject *fo_stop(NpyFailover *self, PyObject *unused)
{
    (void)unused;
    self->monitoring = self->resume = 0;
    if (route_inherited(self))
        Py_RETURN_NONE;   /* no thread of it runs here; a later use starts none */
    nc_monitor *m = self->route ? nc_route_enter(self->route) : NULL;
    if (m) {
        /* Ctrl-C ends the wait for the monitor's threads (those still
         * running are detached, as after the bound). */
        npy_interrupt it;
        npy_interrupt_arm(&it);
        Py_BEGIN_ALLOW_THREADS
        nc_monitor_stop(m);
        Py_END_ALLOW_THREADS
        nc_route_leave(self->route);
        if (npy_interrupt_disarm(&it))
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *fo_close(NpyFailover *self, PyObject *unused)
{
    (void)unused;
    self->monitoring = self->resume = 0;
    self->closed = 1;
    if (route_inherited(self))
        abandon_route(self);   /* closed for good: later calls raise PoolClosedError */
    if (self->route) {
        nc_route *r = self->route;
        npy_interrupt it;
        npy_interrupt_arm(&it);
        Py_BEGIN_ALLOW_THREADS
        nc_route_close(r);
        Py_END_ALLOW_THREADS
        if (npy_interrupt_disarm(&it))
            return NULL;   /* closed all the same */
    }
    Py_RETURN_NONE;
}

static PyObject *fo_trigger_failover(NpyFailover *self, PyObject *args)
{
    int target;
    const char *reason;
    if (!PyArg_ParseTuple(args, "is", &target, &reason))
        return NULL;
    if (self->route && target >= nc_route_count(self->route))
        return npy_raise(NC_E_FO_UNKNOWN_ENDPOINT, NC_K_INTERFACE, NULL, "unknown endpoint %d", target);
    nc_monitor *m = enter(self, NC_E_POOL_CLOSED);
    if (!m)
        return NULL;
    nc_error err;
    nc_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = nc_monitor_trigger_failover(m, target, reason, &err);
    Py_END_ALLOW_THREADS
    nc_route_leave(self->route);
    if (rc < 0)
        return npy_raise(NC_E_FO_MANUAL, NC_K_OPERATIONAL, NULL, "manual failover failed: %s", err.message);
    return Py_BuildValue("(Os)", rc ? Py_True : Py_False, err.message);
}

static PyObject *fo_trigger_recovery(NpyFailover *self, PyObject *unused)
{
    (void)unused;
    nc_monitor *m = enter(self, NC_E_POOL_CLOSED);
    if (!m)
        return NULL;
    nc_error err;
    nc_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = nc_monitor_trigger_recovery(m, &err);
    Py_END_ALLOW_THREADS
    nc_route_leave(self->route);
    if (rc < 0)
        return npy_raise(NC_E_FO_RECOVERY, NC_K_OPERATIONAL, NULL, "manual recovery failed: %s", err.message);
    return Py_BuildValue("(Os)", rc ? Py_True : Py_False, err.message);
}

static PyObject *event_tuple(const nc_event *e)
{
    /* From the failure that decided it to the switch taking effect. */
    PyObject *detected;
    if (e->detected_at > 0 && e->switched_at >= e->detected_at)
        detected = PyFloat_FromDouble(e->switched_at - e->detected_at);
    else
        detected = Py_NewRef(Py_None);
    return Py_BuildValue("(KsiiOzOddNs)", (unsigned long long)e->id, nc_event_kind_name(e->kind), e->from, e->to,
                         e->success ? Py_True : Py_False, e->fired ? nc_fo_policy_name(e->fired) : NULL,
                         e->manual ? Py_True : Py_False, e->timestamp, e->duration, detected, e->reason);
}

static PyObject *fo_events(NpyFailover *self, PyObject *args)
{
    unsigned long long after;
    double timeout = 0;
    if (!PyArg_ParseTuple(args, "K|d", &after, &timeout) || fresh(self) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    nc_event buf[32];
    while (out) {
        nc_monitor *m = self->route ? nc_route_enter(self->route) : NULL;
        if (!m)
            break;
        int k;
        Py_BEGIN_ALLOW_THREADS
        k = nc_monitor_wait_events(m, after, buf, 32, timeout);
        Py_END_ALLOW_THREADS
        nc_route_leave(self->route);
        for (int i = 0; i < k; i++) {
            PyObject *t = event_tuple(&buf[i]);
            if (!t || PyList_Append(out, t) < 0) {
                Py_XDECREF(t);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(t);
            after = buf[i].id;
        }
        if (k < 32)
            break;
        timeout = 0;
    }
    return out;
}

/* ---- the event waiter ------------------------------------------------------------ */

/* What the manager's event thread waits on: a reference to the core route
 * and nothing of Python, so the thread keeps no FailoverMonitor (and no
 * Pool, backend factory or application object behind it) alive, and a
 * manager dropped without shutdown() can be collected. */
typedef struct NpyWaiter {
    PyObject_HEAD
    nc_route *route;
} NpyWaiter;

static void waiter_dealloc(NpyWaiter *self)
{
    nc_route *r = self->route;
    self->route = NULL;
    if (r) {
        Py_BEGIN_ALLOW_THREADS
        nc_route_unref(r);   /* the last one frees the route, and maybe pools */
        Py_END_ALLOW_THREADS
    }
    PyObject_Free(self);
}

static PyObject *waiter_wait(NpyWaiter *self, PyObject *args)
{
    unsigned long long after;
    double timeout;
    if (!PyArg_ParseTuple(args, "Kd", &after, &timeout))
        return NULL;
    nc_monitor *m = nc_route_enter(self->route);
    if (!m)
        Py_RETURN_NONE;   /* closed: nothing will come */
    nc_event one;
    int k;
    Py_BEGIN_ALLOW_THREADS
    k = nc_monitor_wait_events(m, after, &one, 1, timeout);
    Py_END_ALLOW_THREADS
    nc_route_leave(self->route);
    return PyBool_FromLong(k > 0);
}

static PyMethodDef waiter_methods[] = {
    {"wait", (PyCFunction)waiter_wait, METH_VARARGS,
     "wait(after, timeout) -> True when a newer event exists, False after timeout, None once closed"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject NpyWaiter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore._native.EventWaiter",
    .tp_basicsize = sizeof(NpyWaiter),
    .tp_dealloc = (destructor)waiter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Waits for a FailoverMonitor's events without keeping the monitor alive.",
    .tp_methods = waiter_methods,
};

static PyObject *fo_waiter(NpyFailover *self, PyObject *unused)
{
    (void)unused;
    if (!self->route)
        return npy_raise(NC_E_POOL_CLOSED, NC_K_OPERATIONAL, NULL, "the failover manager is shut down");
    if (PyType_Ready(&NpyWaiter_Type) < 0)
        return NULL;
    NpyWaiter *w = PyObject_New(NpyWaiter, &NpyWaiter_Type);
    if (!w)
        return NULL;
    nc_route_ref(self->route);
    w->route = self->route;
    return (PyObject *)w;
}

static PyObject *fo_status(NpyFailover *self, PyObject *unused)
{
    (void)unused;
    nc_monitor *m = enter(self, NC_E_POOL_CLOSED);
    if (!m)
        return NULL;
    /* Room for every endpoint there can be: one may join meanwhile. */
    int n = NC_MONITOR_ENDPOINTS_MAX;
    nc_monitor_status st;
    nc_fo_health *h = PyMem_Calloc((size_t)n, sizeof *h);
    if (!h) {
        nc_route_leave(self->route);
        return PyErr_NoMemory();
    }
    nc_route_ep_status *rs = PyMem_Calloc((size_t)n, sizeof *rs);
    if (!rs) {
        PyMem_Free(h);
        nc_route_leave(self->route);
        return PyErr_NoMemory();
    }
    nc_monitor_get_status(m, &st, h);
    int nr = nc_route_read_status(self->route, rs);
    nc_route_leave(self->route);
    n = st.n < nr ? st.n : nr;   /* the route's slots fill before the monitor knows them */
    double mono = nc_now(), wall = nc_wall();
    PyObject *eps = PyList_New(n);
    for (int i = 0; eps && i < n; i++) {
        const nc_fo_health *x = &h[i];
        const nc_route_ep_status *y = &rs[i];
        PyObject *d = Py_BuildValue(
            "{s:O,s:O,s:O,s:s,s:d,s:d,s:i,s:d,s:s,s:N,s:N,s:N,s:O,s:i,s:K,s:K}", "removed",
            x->removed ? Py_True : Py_False, "probed", x->probed ? Py_True : Py_False,
            "available", x->available ? Py_True : Py_False, "role", nc_role_name(x->role), "last_check",
            x->last_check > 0 ? wall - (mono - x->last_check) : 0.0, "response_time", x->response_time,
            "consecutive_failures", x->consecutive_failures, "last_failure",
            x->last_failure > 0 ? wall - (mono - x->last_failure) : 0.0, "last_error", x->last_error,
            "lsn", y->have_lsn ? PyLong_FromUnsignedLongLong(y->lsn) : Py_NewRef(Py_None),
            "lag_bytes", y->lag_bytes == y->lag_bytes ? PyFloat_FromDouble(y->lag_bytes) : Py_NewRef(Py_None),
            "lag_seconds", y->lag_seconds == y->lag_seconds ? PyFloat_FromDouble(y->lag_seconds) : Py_NewRef(Py_None),
            "serves_reads", y->eligible ? Py_True : Py_False, "in_flight", y->in_flight,
            "reads", (unsigned long long)y->reads, "writes", (unsigned long long)y->writes);
        if (!d) {
            Py_CLEAR(eps);
            break;
        }
        PyList_SET_ITEM(eps, i, d);
    }
    PyMem_Free(rs);
    PyMem_Free(h);
    if (!eps)
        return NULL;
    const nc_fo_stats *s = &st.stats;
    if (st.state != NC_FO_UNAVAILABLE)
        self->last_ep = st.current;
    return Py_BuildValue(
        "{s:s,s:i,s:i,s:O,s:K,s:N,s:{s:i,s:i,s:i,s:i,s:i,s:i,s:d,s:O}}", "state", nc_fo_state_name(st.state),
        "current", st.state == NC_FO_UNAVAILABLE ? -1 : st.current, "preferred", st.preferred, "running",
        st.running ? Py_True : Py_False, "generation", (unsigned long long)st.generation, "endpoints", eps,
        "stats", "total_failovers", s->total_failovers, "successful_failovers", s->successful_failovers,
        "failed_failovers", s->failed_failovers, "total_recoveries", s->total_recoveries,
        "successful_recoveries", s->successful_recoveries, "failed_recoveries", s->failed_recoveries,
        "failover_time_total", s->failover_time_total, "recovery_suspended",
        s->recovery_suspended ? Py_True : Py_False);
}

static PyObject *fo_pool(NpyFailover *self, PyObject *arg)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (fresh(self) < 0 || sync_pools(self) < 0)
        return NULL;
    if (!self->pools || i < 0 || i >= PyTuple_GET_SIZE(self->pools))
        return npy_raise(NC_E_FO_UNKNOWN_ENDPOINT, NC_K_INTERFACE, NULL, "unknown endpoint %zd", i);
    return Py_NewRef(PyTuple_GET_ITEM(self->pools, i));
}

nc_route *npy_failover_route(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &NpyFailover_Type))
        return (nc_route *)npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "not a FailoverMonitor");
    NpyFailover *self = (NpyFailover *)obj;
    if (fresh(self) < 0)
        return NULL;
    if (!self->route)
        return (nc_route *)npy_raise(NC_E_POOL_CLOSED, NC_K_OPERATIONAL, NULL, "the failover manager is shut down");
    return self->route;
}

int npy_failover_closed(PyObject *obj)
{
    return PyObject_TypeCheck(obj, &NpyFailover_Type) && ((NpyFailover *)obj)->closed;
}

static PyObject *fo_get_running(NpyFailover *self, void *c)
{
    (void)c;
    if (fresh(self) < 0)
        return NULL;
    nc_monitor *m = self->route ? nc_route_enter(self->route) : NULL;
    if (!m)
        Py_RETURN_FALSE;
    int running = nc_monitor_running(m);
    nc_route_leave(self->route);
    return PyBool_FromLong(running);
}

static PyMethodDef fo_methods[] = {
    {"lend", (PyCFunction)fo_lend, METH_VARARGS,
     "lend(timeout=None, target=None) -> PooledConnection of the current endpoint, or of a standby the core "
     "chooses for a read target (\"standby\", \"prefer-standby\", \"any\")."},
    {"lend_to", (PyCFunction)fo_lend_to, METH_VARARGS,
     "lend_to(timeout=None, target=None, written_at=0.0) -> (PooledConnection, endpoint index): lend, and where "
     "it came from; written_at (time.monotonic(), CLOCK_MONOTONIC as the core's clock): read your writes."},
    {"start", (PyCFunction)fo_start, METH_NOARGS, "Start the monitor threads (idempotent)."},
    {"stop", (PyCFunction)fo_stop, METH_NOARGS, "Stop the monitor threads."},
    {"close", (PyCFunction)fo_close, METH_NOARGS, "Stop the monitor; later calls raise PoolClosedError."},
    {"trigger_failover", (PyCFunction)fo_trigger_failover, METH_VARARGS, "(target, reason) -> (done, why)"},
    {"trigger_recovery", (PyCFunction)fo_trigger_recovery, METH_NOARGS, "() -> (done, why)"},
    {"events", (PyCFunction)fo_events, METH_VARARGS,
     "events(after, timeout=0) -> [(id, kind, from, to, success, policy, manual, timestamp, duration, "
     "detection_to_switch, reason)]"},
    {"waiter", (PyCFunction)fo_waiter, METH_NOARGS,
     "waiter() -> an EventWaiter: wait(after, timeout) without keeping this monitor alive."},
    {"status", (PyCFunction)fo_status, METH_NOARGS, "A snapshot of state, endpoints and statistics."},
    {"pool", (PyCFunction)fo_pool, METH_O,
     "pool(i) -> the Pool of endpoint i (one over the core's pool for an endpoint that joined later)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fo_getset[] = {
    {"running", (getter)fo_get_running, NULL, "True while the monitor threads run.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject NpyFailover_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore._native.FailoverMonitor",
    .tp_basicsize = sizeof(NpyFailover),
    .tp_dealloc = (destructor)fo_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)fo_traverse,
    .tp_clear = (inquiry)fo_clear,
    .tp_doc = "Native health monitor and failover route over one Pool per endpoint.",
    .tp_methods = fo_methods,
    .tp_getset = fo_getset,
    .tp_init = (initproc)fo_init,
    .tp_new = PyType_GenericNew,
};
