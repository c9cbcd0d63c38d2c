/* failover.c - FailoverMonitor: the native base of DatabaseFailoverManager.
 *
 * Holds one Pool per endpoint and the core monitor (nc_monitor.c).  The
 * monitor's threads never touch Python: probing a PostgreSQL endpoint uses a
 * native prober (role included), other endpoints are probed through their
 * pool's backend ops (the Python-object backend takes the GIL itself and
 * refuses once the interpreter is going away).  Switching drains the
 * abandoned endpoint's pool, also without Python.  Events are read by the
 * manager's Python thread through wait()/events().
 */
#include "pool.h"
#include "../core/nc_monitor.h"
#include "../core/nc_probe.h"
#include "../core/nc_time.h"

#include <pthread.h>

typedef struct probe_target {
    int kind;                   /* enum nc_kind_py */
    nc_pg_prober *pg;           /* PostgreSQL */
    nc_pool *pool;              /* others: probe through the pool's backend ops */
    void *raw;                  /* the kept-open probe connection (others) */
    pthread_mutex_t mu;         /* one probe at a time per endpoint (others) */
} probe_target;

typedef struct NcFailover {
    PyObject_HEAD
    nc_monitor *mon;
    int n;
    PyObject *pools;            /* list of NcPool */
    nc_pool **cpools;           /* their core pools, index = endpoint */
    probe_target *targets;
    int closed;
    /* Calls inside the monitor with the GIL released; close() leaves the
     * freeing to the last of them. */
    int users;
    nc_monitor *to_free;
} NcFailover;

/* Borrow the monitor for a call made with the GIL released.  NULL when
 * closed.  Pair with put_monitor (GIL held). */
static nc_monitor *get_monitor(NcFailover *self)
{
    if (!self->mon)
        return NULL;
    self->users++;
    return self->mon;
}

static void put_monitor(NcFailover *self)
{
    if (--self->users == 0 && self->to_free) {
        nc_monitor *m = self->to_free;
        self->to_free = NULL;
        Py_BEGIN_ALLOW_THREADS
        nc_monitor_free(m);
        Py_END_ALLOW_THREADS
    }
}

/* ---- probing and switching (native threads, no GIL) -------------------- */

static int probe_endpoint(void *arg, int i, double deadline, double *latency, int *role, char *errbuf,
                          size_t errlen)
{
    NcFailover *self = arg;
    probe_target *t = &self->targets[i];
    if (t->kind == NC_BACKEND_PG)
        return nc_pg_prober_probe(t->pg, deadline, latency, role, errbuf, errlen);
    /* Others: connect once, ping each time.  One probe at a time per endpoint,
     * waiting for the lock no longer than the deadline. */
    while (pthread_mutex_trylock(&t->mu) != 0) {
        if (nc_now() >= deadline) {
            snprintf(errbuf, errlen, "probe timed out waiting for an earlier probe");
            return -1;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    const nc_backend_ops *ops = nc_pool_ops(t->pool);
    void *ctx = nc_pool_ctx(t->pool);
    nc_error err;
    nc_error_clear(&err);
    double t0 = nc_now();
    int rc = 0;
    if (!t->raw) {
        t->raw = ops->connect(ctx, deadline, &err);
        if (!t->raw)
            rc = -1;
    }
    if (rc == 0 && ops->ping(ctx, t->raw, deadline, &err) < 0) {
        ops->close(ctx, t->raw);
        t->raw = NULL;
        rc = -1;
    }
    pthread_mutex_unlock(&t->mu);
    *latency = nc_now() - t0;
    *role = NC_ROLE_UNKNOWN;   /* only PostgreSQL tells us */
    if (rc < 0)
        snprintf(errbuf, errlen, "%s", err.message[0] ? err.message : "probe failed");
    return rc;
}

static void on_switch(void *arg, int from, int to)
{
    NcFailover *self = arg;
    (void)to;
    if (from >= 0 && from < self->n && from != to)
        nc_pool_drain(self->cpools[from], 1);
}

/* ---- passive detection (called by connection.c on errors) -------------- */

static int passive_kind_for(const nc_error *err)
{
    const char *s = err->sqlstate;
    if (!strcmp(s, "25006"))
        return NC_FO_PASSIVE_READ_ONLY;
    if (err->code == NC_E_CONNECTION || (s[0] == '0' && s[1] == '8') || !strcmp(s, "57P01") ||
        !strcmp(s, "57P02") || !strcmp(s, "57P03"))
        return NC_FO_PASSIVE_LOST;
    return 0;
}

void nc_failover_report(NcPool *pool, const nc_error *err)
{
    if (!pool->failover)
        return;
    int kind = passive_kind_for(err);
    if (!kind)
        return;
    NcFailover *fo = (NcFailover *)Py_NewRef(pool->failover);
    nc_monitor *m = get_monitor(fo);
    if (m) {
        int idx = pool->monitor_index;
        /* May switch in this thread when monitoring is not running: no GIL. */
        Py_BEGIN_ALLOW_THREADS
        nc_monitor_passive(m, idx, kind, err->message);
        Py_END_ALLOW_THREADS
        put_monitor(fo);
    }
    Py_DECREF(fo);
}

void nc_failover_report_exception(NcPool *pool)
{
    if (!pool->failover || !PyErr_Occurred())
        return;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    nc_error err;
    nc_error_clear(&err);
    /* A Python backend: connection-type failures are OSError (ConnectionError
     * included) or carry a SQLSTATE of the lost-connection kinds. */
    if (ev && PyErr_GivenExceptionMatches(et, PyExc_OSError))
        err.code = NC_E_CONNECTION;
    PyObject *state = ev ? PyObject_GetAttrString(ev, "sqlstate") : NULL;
    if (state && PyUnicode_Check(state)) {
        const char *s = PyUnicode_AsUTF8(state);
        if (s)
            snprintf(err.sqlstate, sizeof err.sqlstate, "%s", s);
    }
    Py_XDECREF(state);
    PyErr_Clear();
    PyObject *code = ev ? PyObject_GetAttrString(ev, "error_code") : NULL;
    if (code && PyLong_Check(code) && PyLong_AsLong(code) == NC_E_CONNECTION)
        err.code = NC_E_CONNECTION;
    Py_XDECREF(code);
    PyErr_Clear();
    PyObject *msg = ev ? PyObject_Str(ev) : NULL;
    const char *text = msg ? PyUnicode_AsUTF8(msg) : NULL;
    snprintf(err.message, sizeof err.message, "%s", text ? text : "backend error");
    Py_XDECREF(msg);
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    if (!passive_kind_for(&err))
        return;
    PyErr_Fetch(&et, &ev, &tb);
    nc_failover_report(pool, &err);
    PyErr_Restore(et, ev, tb);
}

/* ---- the type -------------------------------------------------------------- */

static double cfg_double(PyObject *d, const char *k, double dflt)
{
    PyObject *v = PyDict_GetItemString(d, k);
    if (!v)
        return dflt;
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return dflt;
    }
    return x;
}

static int cfg_int(PyObject *d, const char *k, int dflt)
{
    PyObject *v = PyDict_GetItemString(d, k);
    if (!v)
        return dflt;
    long x = PyLong_AsLong(v);
    if (x == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return dflt;
    }
    return (int)x;
}

static void release_targets(NcFailover *self)
{
    if (!self->targets)
        return;
    for (int i = 0; i < self->n; i++) {
        probe_target *t = &self->targets[i];
        if (t->pg)
            nc_pg_prober_free(t->pg);
        if (t->raw && t->pool)
            nc_pool_ops(t->pool)->close(nc_pool_ctx(t->pool), t->raw);
        t->raw = NULL;
        pthread_mutex_destroy(&t->mu);
    }
    PyMem_RawFree(self->targets);   /* may run without the GIL */
    self->targets = NULL;
}

static void detach_pools(NcFailover *self)
{
    if (!self->pools)
        return;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(self->pools); i++) {
        NcPool *p = (NcPool *)PyList_GET_ITEM(self->pools, i);
        if (p->failover == (PyObject *)self)
            p->failover = NULL;
    }
}

static void close_monitor(NcFailover *self)
{
    if (self->closed)
        return;
    self->closed = 1;
    detach_pools(self);
    nc_monitor *m = self->mon;
    self->mon = NULL;
    if (m) {
        Py_BEGIN_ALLOW_THREADS
        nc_monitor_stop(m);
        Py_END_ALLOW_THREADS
        if (self->users == 0) {
            Py_BEGIN_ALLOW_THREADS
            nc_monitor_free(m);
            Py_END_ALLOW_THREADS
        } else {
            self->to_free = m;   /* another thread is inside it right now */
        }
    }
    /* The monitor threads are stopped: nothing probes any more (a probe the
     * monitor gave up waiting for frees its prober itself). */
    Py_BEGIN_ALLOW_THREADS
    release_targets(self);
    Py_END_ALLOW_THREADS
}

static int fo_init(NcFailover *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"pools", "priorities", "primary", "targets", "config", NULL};
    PyObject *pools, *prios, *targets, *cfgd;
    int primary;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!iO!O!:FailoverMonitor", kwlist, &PyList_Type, &pools,
                                     &PyList_Type, &prios, &primary, &PyList_Type, &targets, &PyDict_Type, &cfgd))
        return -1;
    if (self->mon) {
        PyErr_SetString(PyExc_RuntimeError, "FailoverMonitor.__init__ called twice");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(pools);
    if (n < 1 || n > 64 || PyList_GET_SIZE(prios) != n || PyList_GET_SIZE(targets) != n || primary >= n) {
        nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "FailoverMonitor: inconsistent endpoint lists");
        return -1;
    }
    int prio[64];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(pools, i);
        if (!PyObject_TypeCheck(p, &NcPool_Type) || !((NcPool *)p)->pool) {
            nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "FailoverMonitor: pools must be initialised Pools");
            return -1;
        }
        prio[i] = (int)PyLong_AsLong(PyList_GET_ITEM(prios, i));
        if (PyErr_Occurred())
            return -1;
    }
    self->n = (int)n;
    self->pools = Py_NewRef(pools);
    self->cpools = PyMem_RawCalloc((size_t)n, sizeof *self->cpools);
    self->targets = PyMem_RawCalloc((size_t)n, sizeof *self->targets);
    if (!self->cpools || !self->targets) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        NcPool *p = (NcPool *)PyList_GET_ITEM(pools, i);
        probe_target *t = &self->targets[i];
        self->cpools[i] = p->pool;
        t->kind = p->kind;
        t->pool = p->pool;
        pthread_mutex_init(&t->mu, NULL);
        if (p->kind == NC_BACKEND_PG) {
            const char *dsn = PyUnicode_AsUTF8(PyList_GET_ITEM(targets, i));
            if (!dsn)
                return -1;
            nc_error err;
            t->pg = nc_pg_prober_new(dsn, &err);
            if (!t->pg) {
                nc_raise_error(&err);
                return -1;
            }
        }
    }
    nc_monitor_config mc;
    nc_fo_config_defaults(&mc.fo);
    mc.fo.mode = cfg_int(cfgd, "mode", mc.fo.mode);
    mc.fo.policy = cfg_int(cfgd, "policy", mc.fo.policy);
    mc.fo.max_failure_count = cfg_int(cfgd, "max_failure_count", mc.fo.max_failure_count);
    mc.fo.failure_timeout = cfg_double(cfgd, "failure_timeout", mc.fo.failure_timeout);
    mc.fo.response_time_threshold = cfg_double(cfgd, "response_time_threshold", mc.fo.response_time_threshold);
    mc.fo.slow_probe_count = cfg_int(cfgd, "slow_probe_count", mc.fo.slow_probe_count);
    mc.fo.recovery_check_interval = cfg_double(cfgd, "recovery_check_interval", mc.fo.recovery_check_interval);
    mc.fo.max_recovery_attempts = cfg_int(cfgd, "max_recovery_attempts", mc.fo.max_recovery_attempts);
    mc.fo.auto_recovery = cfg_int(cfgd, "auto_recovery", mc.fo.auto_recovery);
    mc.fo.require_writable = cfg_int(cfgd, "require_writable", mc.fo.require_writable);
    mc.fo.hold_down = cfg_double(cfgd, "hold_down", mc.fo.hold_down);
    mc.health_check_interval = cfg_double(cfgd, "health_check_interval", 10.0);
    mc.health_check_timeout = cfg_double(cfgd, "health_check_timeout", 5.0);
    mc.failover_timeout = cfg_double(cfgd, "failover_timeout", 60.0);
    nc_error err;
    nc_error_clear(&err);
    nc_monitor *m = nc_monitor_new(&mc, (int)n, prio, primary, probe_endpoint, self, on_switch, self, &err);
    if (!m) {
        nc_raise_error(&err);
        return -1;
    }
    self->mon = m;
    for (Py_ssize_t i = 0; i < n; i++) {
        NcPool *p = (NcPool *)PyList_GET_ITEM(pools, i);
        p->failover = (PyObject *)self;
        p->monitor_index = (int)i;
    }
    return 0;
}

static void fo_dealloc(NcFailover *self)
{
    close_monitor(self);
    Py_CLEAR(self->pools);
    PyMem_RawFree(self->cpools);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_open(NcFailover *self)
{
    if (!self->mon || self->closed) {
        nc_raise(NC_E_POOL_CLOSED, NC_K_OPERATIONAL, NULL, "the failover manager is shut down");
        return -1;
    }
    return 0;
}

/* A borrow that failed to reach the endpoint at all (connection refused,
 * timed out) is a passive failure of that endpoint, like a lost connection. */
static int lend_failure_is_lost(void)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    int lost = 0;
    PyObject *code = ev ? PyObject_GetAttrString(ev, "error_code") : NULL;
    if (code && PyLong_Check(code)) {
        long c = PyLong_AsLong(code);
        lost = c == NC_E_NEW_FAILED || c == NC_E_REPLACE_FAILED || c == NC_E_CONNECTION ||
               c == NC_E_NEW_INVALID || c == NC_E_REPLACE_INVALID;
    }
    Py_XDECREF(code);
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    return lost;
}

static PyObject *fo_lend(NcFailover *self, PyObject *arg)
{
    if (check_open(self) < 0)
        return NULL;
    double timeout = -1.0;
    if (arg != Py_None) {
        timeout = PyFloat_AsDouble(arg);
        if ((timeout == -1.0 && PyErr_Occurred()) || timeout < 0 || timeout != timeout) {
            PyErr_Clear();
            return nc_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout must be a non-negative number or None");
        }
    }
    double start = nc_now();
    int resumed = 0;
    for (int attempt = 0;; attempt++) {
        uint64_t gen;
        nc_monitor *m = self->mon;
        if (!m)
            return nc_raise(NC_E_POOL_CLOSED, NC_K_OPERATIONAL, NULL, "the failover manager is shut down");
        int idx = nc_monitor_current(m, &gen);
        if (idx < 0 && !resumed && !nc_monitor_running(m)) {
            /* Nobody is watching: look once whether an endpoint came back
             * (the automatic decision, so MANUAL mode only resumes on the
             * same endpoint). */
            resumed = 1;
            get_monitor(self);
            Py_BEGIN_ALLOW_THREADS
            nc_monitor_recheck(m);
            Py_END_ALLOW_THREADS
            put_monitor(self);
            if (!self->mon)
                continue;
            idx = nc_monitor_current(self->mon, &gen);
        }
        if (idx < 0)
            return nc_raise(NC_E_FO_NO_ENDPOINT, NC_K_OPERATIONAL, NULL,
                            "no usable database endpoint: every endpoint failed its health check or is "
                            "read-only; service resumes when one comes back");
        NcPool *pool = (NcPool *)PyList_GET_ITEM(self->pools, idx);
        double left = timeout;
        if (timeout >= 0) {
            left = timeout - (nc_now() - start);
            if (left < 0)
                left = 0;
        }
        NcConnection *c = nc_pool_lend(pool, left);
        if (!c) {
            /* Could not even connect: tell the monitor (it may switch right
             * away) and try the endpoint it chooses next. */
            if (attempt < self->n && lend_failure_is_lost() && self->mon) {
                PyObject *et, *ev, *tb;
                PyErr_Fetch(&et, &ev, &tb);
                PyObject *s = ev ? PyObject_Str(ev) : NULL;
                const char *text = s ? PyUnicode_AsUTF8(s) : NULL;
                char buf[256];
                snprintf(buf, sizeof buf, "%s", text ? text : "cannot connect");
                Py_XDECREF(s);
                PyErr_Clear();
                uint64_t before = nc_monitor_generation(self->mon);
                m = get_monitor(self);
                Py_BEGIN_ALLOW_THREADS
                nc_monitor_passive(m, idx, NC_FO_PASSIVE_LOST, buf);
                Py_END_ALLOW_THREADS
                put_monitor(self);
                int moved = self->mon && (nc_monitor_generation(self->mon) != before ||
                                          nc_monitor_current(self->mon, &gen) != idx);
                if (moved) {
                    Py_XDECREF(et);
                    Py_XDECREF(ev);
                    Py_XDECREF(tb);
                    continue;
                }
                PyErr_Restore(et, ev, tb);
            }
            return NULL;
        }
        if (!self->mon || nc_monitor_generation(self->mon) == gen || attempt >= 8)
            return (PyObject *)c;
        /* The endpoint changed while we borrowed: never hand out a
         * connection to the abandoned one. */
        nc_connection_release(c, 1);
        Py_DECREF(c);
    }
}

static PyObject *fo_start(NcFailover *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    nc_error err;
    int rc;
    nc_monitor *m = get_monitor(self);
    Py_BEGIN_ALLOW_THREADS
    rc = nc_monitor_start(m, &err);
    Py_END_ALLOW_THREADS
    put_monitor(self);
    if (rc < 0)
        return nc_raise(NC_E_FO_START, NC_K_OPERATIONAL, NULL, "start monitoring failed: %s", err.message);
    Py_RETURN_NONE;
}

static PyObject *fo_stop(NcFailover *self, PyObject *unused)
{
    (void)unused;
    nc_monitor *m = get_monitor(self);
    if (m) {
        Py_BEGIN_ALLOW_THREADS
        nc_monitor_stop(m);
        Py_END_ALLOW_THREADS
        put_monitor(self);
    }
    Py_RETURN_NONE;
}

static PyObject *fo_close(NcFailover *self, PyObject *unused)
{
    (void)unused;
    close_monitor(self);
    Py_RETURN_NONE;
}

static PyObject *fo_trigger_failover(NcFailover *self, PyObject *args)
{
    int target;
    const char *reason;
    if (!PyArg_ParseTuple(args, "is", &target, &reason) || check_open(self) < 0)
        return NULL;
    if (target >= self->n)
        return nc_raise(NC_E_FO_UNKNOWN_ENDPOINT, NC_K_INTERFACE, NULL, "unknown endpoint %d", target);
    nc_error err;
    nc_error_clear(&err);
    int rc;
    nc_monitor *m = get_monitor(self);
    Py_BEGIN_ALLOW_THREADS
    rc = nc_monitor_trigger_failover(m, target, reason, &err);
    Py_END_ALLOW_THREADS
    put_monitor(self);
    if (rc < 0)
        return nc_raise(NC_E_FO_MANUAL, NC_K_OPERATIONAL, NULL, "manual failover failed: %s", err.message);
    return Py_BuildValue("(Os)", rc ? Py_True : Py_False, err.message);
}

static PyObject *fo_trigger_recovery(NcFailover *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    nc_error err;
    nc_error_clear(&err);
    int rc;
    nc_monitor *m = get_monitor(self);
    Py_BEGIN_ALLOW_THREADS
    rc = nc_monitor_trigger_recovery(m, &err);
    Py_END_ALLOW_THREADS
    put_monitor(self);
    if (rc < 0)
        return nc_raise(NC_E_FO_RECOVERY, NC_K_OPERATIONAL, NULL, "manual recovery failed: %s", err.message);
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
    return Py_BuildValue("(KiiiiiiddNs)", (unsigned long long)e->id, e->kind, e->from, e->to, e->success,
                         e->fired, e->manual, e->timestamp, e->duration, detected, e->reason);
}

static PyObject *fo_events(NcFailover *self, PyObject *args)
{
    unsigned long long after;
    double timeout = 0;
    if (!PyArg_ParseTuple(args, "K|d", &after, &timeout))
        return NULL;
    PyObject *out = PyList_New(0);
    if (!out || !self->mon)
        return out;
    nc_event buf[32];
    for (;;) {
        int k;
        nc_monitor *m = get_monitor(self);
        if (!m)
            break;
        Py_BEGIN_ALLOW_THREADS
        k = nc_monitor_wait_events(m, after, buf, 32, timeout);
        Py_END_ALLOW_THREADS
        put_monitor(self);
        for (int i = 0; i < k; i++) {
            PyObject *t = event_tuple(&buf[i]);
            if (!t || PyList_Append(out, t) < 0) {
                Py_XDECREF(t);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(t);
            after = buf[i].id;
        }
        if (k < 32 || !self->mon)
            break;
        timeout = 0;
    }
    return out;
}

static PyObject *fo_wait(NcFailover *self, PyObject *args)
{
    unsigned long long after;
    double timeout;
    if (!PyArg_ParseTuple(args, "Kd", &after, &timeout))
        return NULL;
    if (!self->mon)
        Py_RETURN_FALSE;
    nc_event one;
    int k;
    nc_monitor *m = get_monitor(self);
    if (!m)
        Py_RETURN_FALSE;
    Py_BEGIN_ALLOW_THREADS
    k = nc_monitor_wait_events(m, after, &one, 1, timeout);
    Py_END_ALLOW_THREADS
    put_monitor(self);
    return PyBool_FromLong(k > 0);
}

static PyObject *fo_status(NcFailover *self, PyObject *unused)
{
    (void)unused;
    if (!self->mon)
        return nc_raise(NC_E_POOL_CLOSED, NC_K_OPERATIONAL, NULL, "the failover manager is shut down");
    nc_monitor_status st;
    nc_fo_health *h = PyMem_Calloc((size_t)self->n, sizeof *h);
    if (!h)
        return PyErr_NoMemory();
    nc_monitor_get_status(self->mon, &st, h);
    double mono = nc_now(), wall = nc_wall();
    PyObject *eps = PyList_New(self->n);
    for (int i = 0; eps && i < self->n; i++) {
        const nc_fo_health *x = &h[i];
        PyObject *d = Py_BuildValue(
            "{s:i,s:i,s:i,s:d,s:d,s:i,s:d,s:s}", "probed", x->probed, "available", x->available, "role",
            x->role, "last_check", x->last_check > 0 ? wall - (mono - x->last_check) : 0.0, "response_time",
            x->response_time, "consecutive_failures", x->consecutive_failures, "last_failure",
            x->last_failure > 0 ? wall - (mono - x->last_failure) : 0.0, "last_error", x->last_error);
        if (!d) {
            Py_CLEAR(eps);
            break;
        }
        PyList_SET_ITEM(eps, i, d);
    }
    PyMem_Free(h);
    if (!eps)
        return NULL;
    const nc_fo_stats *s = &st.stats;
    return Py_BuildValue(
        "{s:s,s:i,s:i,s:O,s:K,s:N,s:{s:i,s:i,s:i,s:i,s:i,s:i,s:d,s:i}}", "state", nc_fo_state_name(st.state),
        "current", st.state == NC_FO_UNAVAILABLE ? -1 : st.current, "preferred", st.preferred, "running",
        st.running ? Py_True : Py_False, "generation", (unsigned long long)st.generation, "endpoints", eps,
        "stats", "total_failovers", s->total_failovers, "successful_failovers", s->successful_failovers,
        "failed_failovers", s->failed_failovers, "total_recoveries", s->total_recoveries,
        "successful_recoveries", s->successful_recoveries, "failed_recoveries", s->failed_recoveries,
        "failover_time_total", s->failover_time_total, "recovery_suspended", s->recovery_suspended);
}

static PyObject *fo_get_running(NcFailover *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->mon && nc_monitor_running(self->mon));
}

static PyMethodDef fo_methods[] = {
    {"lend", (PyCFunction)fo_lend, METH_O, "lend(timeout) -> PooledConnection of the current endpoint."},
    {"start", (PyCFunction)fo_start, METH_NOARGS, "Start the monitor threads (idempotent)."},
    {"stop", (PyCFunction)fo_stop, METH_NOARGS, "Stop the monitor threads."},
    {"close", (PyCFunction)fo_close, METH_NOARGS, "Stop and free the monitor."},
    {"trigger_failover", (PyCFunction)fo_trigger_failover, METH_VARARGS, "(target, reason) -> (done, why)"},
    {"trigger_recovery", (PyCFunction)fo_trigger_recovery, METH_NOARGS, "() -> (done, why)"},
    {"events", (PyCFunction)fo_events, METH_VARARGS, "events(after, timeout=0) -> [event tuples]"},
    {"wait", (PyCFunction)fo_wait, METH_VARARGS, "wait(after, timeout) -> True when a newer event exists"},
    {"status", (PyCFunction)fo_status, METH_NOARGS, "A snapshot of state, endpoints and statistics."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fo_getset[] = {
    {"running", (getter)fo_get_running, NULL, "True while the monitor threads run.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject NcFailover_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore._native.FailoverMonitor",
    .tp_basicsize = sizeof(NcFailover),
    .tp_dealloc = (destructor)fo_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Native health monitor and failover executor over one Pool per endpoint.",
    .tp_methods = fo_methods,
    .tp_getset = fo_getset,
    .tp_init = (initproc)fo_init,
    .tp_new = PyType_GenericNew,
};
