/* patroni.c - _native.patroni_cluster(urls, timeout): GET /cluster from the first
 * Patroni REST API that answers (the core's client, nc_patroni.c), the GIL released
 * and Ctrl-C honoured while it waits; the members as dicts.  No decisions here:
 * which member leads is the core's answer (nc_patroni_is_leader). */
#include "patroni.h"
#include "errors.h"
#include "interrupt.h"
#include "../core/nc_patroni.h"
#include "../core/nc_patroni_watch.h"
#include "../core/nc_patroni_follow.h"
#include "../core/nc_pg.h"
#include "failover.h"
#include "../core/nc_fork.h"

#include <stdlib.h>

static int set_item(PyObject *d, const char *key, PyObject *v)
{
    if (!v)
        return -1;
    int rc = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return rc;
}

static PyObject *lag_value(long long v)
{
    return v == NC_PATRONI_LAG_UNKNOWN ? Py_NewRef(Py_None) : PyLong_FromLongLong(v);
}

static PyObject *member_dict(const nc_patroni_member *m)
{
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    if (set_item(d, "name", PyUnicode_DecodeUTF8(m->name, (Py_ssize_t)strlen(m->name), "replace")) < 0 ||
        set_item(d, "role", PyUnicode_DecodeUTF8(m->role, (Py_ssize_t)strlen(m->role), "replace")) < 0 ||
        set_item(d, "state", PyUnicode_DecodeUTF8(m->state, (Py_ssize_t)strlen(m->state), "replace")) < 0 ||
        set_item(d, "host", PyUnicode_DecodeUTF8(m->host, (Py_ssize_t)strlen(m->host), "replace")) < 0 ||
        set_item(d, "port", m->port ? PyLong_FromLong(m->port) : Py_NewRef(Py_None)) < 0 ||
        set_item(d, "timeline", m->timeline >= 0 ? PyLong_FromLongLong(m->timeline) : Py_NewRef(Py_None)) < 0 ||
        set_item(d, "replay_lag", lag_value(m->replay_lag)) < 0 ||
        set_item(d, "lag", lag_value(m->lag)) < 0 ||
        set_item(d, "routing_lag", lag_value(nc_patroni_member_lag(m))) < 0 ||
        set_item(d, "api_url", PyUnicode_DecodeUTF8(m->api_url, (Py_ssize_t)strlen(m->api_url), "replace")) < 0 ||
        set_item(d, "leader", PyBool_FromLong(nc_patroni_is_leader(m))) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *cluster_dict(const nc_patroni_cluster *c)
{

    PyObject *d = PyDict_New(), *members = PyList_New(0);
    if (!d || !members)
        goto fail;
    for (int i = 0; i < c->n; i++) {
        PyObject *m = member_dict(&c->members[i]);
        if (!m || PyList_Append(members, m) < 0) {
            Py_XDECREF(m);
            goto fail;
        }
        Py_DECREF(m);
    }
    if (set_item(d, "scope", PyUnicode_DecodeUTF8(c->scope, (Py_ssize_t)strlen(c->scope), "replace")) < 0 ||
        set_item(d, "source", PyUnicode_DecodeUTF8(c->source, (Py_ssize_t)strlen(c->source), "replace")) < 0 ||
        PyDict_SetItemString(d, "members", members) < 0)
        goto fail;
    Py_DECREF(members);
    return d;
fail:
    Py_XDECREF(d);
    Py_XDECREF(members);
    return NULL;
}

/* urls_obj -> a new reference to a sequence whose str items urls[] point into
 * (kept alive by it), *n of them; NULL with an exception. */
static PyObject *url_list(PyObject *urls_obj, const char **urls, Py_ssize_t *n)
{
    PyObject *seq = PySequence_Fast(urls_obj, "Patroni: urls must be a sequence of str");
    if (!seq)
        return NULL;
    *n = PySequence_Fast_GET_SIZE(seq);
    if (*n < 1 || *n > NC_PATRONI_MAX_URLS) {
        Py_DECREF(seq);
        return npy_raise(NC_E_PATRONI_URL, NC_K_NONE, NULL, "Patroni: %zd URLs given (1 to %d)", *n,
                         NC_PATRONI_MAX_URLS);
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *u = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_Check(u)) {
            Py_DECREF(seq);
            return npy_raise(NC_E_PATRONI_URL, NC_K_NONE, NULL, "Patroni URL #%zd is not a str", i + 1);
        }
        urls[i] = PyUnicode_AsUTF8(u);
        if (!urls[i]) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    return seq;
}

PyObject *npy_patroni_cluster(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *urls_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "Od", &urls_obj, &timeout))
        return NULL;
    const char *urls[NC_PATRONI_MAX_URLS];
    Py_ssize_t n;
    PyObject *seq = url_list(urls_obj, urls, &n);
    if (!seq)
        return NULL;
    nc_patroni_cluster *c = malloc(sizeof *c);   /* ~45 kB: not on the stack */
    if (!c) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    nc_error err;
    nc_error_clear(&err);
    npy_interrupt it;
    int rc;
    npy_interrupt_arm(&it);
    Py_BEGIN_ALLOW_THREADS
    rc = nc_patroni_fetch(urls, (int)n, timeout, c, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(seq);
    PyObject *res;
    if (npy_interrupt_disarm(&it))
        res = NULL;
    else if (rc < 0)
        res = npy_raise_error(&err);
    else
        res = cluster_dict(c);
    free(c);
    return res;
}

PyObject *npy_patroni_member_dsn(PyObject *mod, PyObject *args)
{
    (void)mod;
    const char *dsn, *host;
    int port;
    if (!PyArg_ParseTuple(args, "ssi:patroni_member_dsn", &dsn, &host, &port))
        return NULL;
    char *s = nc_patroni_member_dsn(dsn, host, port);
    if (!s)
        return PyErr_NoMemory();
    PyObject *out = PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
    memset(s, 0, strlen(s));   /* it may hold a password */
    free(s);
    return out;
}

/* ---- PatroniWatch: GET /cluster every interval on a native thread ------------------ */

typedef struct NpyPatroniWatch {
    PyObject_HEAD
    nc_patroni_watch *w;
    PyObject *urls;             /* tuple of str: a forked child makes its own watch from them */
    PyObject *known;            /* tuple of str: the member names the endpoints were made from */
    double interval, timeout;
    int started;                /* start() and no stop() since: a child's watch runs too */
    nc_patroni_follow *follow;  /* follow(): keeps a route's endpoints in step (freed after w) */
    uint64_t follow_gen;        /* the fork generation follow was made in */
    PyObject *follow_args;      /* follow()'s (monitor, names, hosts, ports, dsn), or NULL: a forked
                                   child follows its own route from them again */
} NpyPatroniWatch;

static int follow_route(NpyPatroniWatch *self, nc_patroni_watch *w, nc_route *r, PyObject *names, PyObject *hosts,
                        PyObject *ports, const char *dsn);

/* A new core watch from self's settings; -1 with an exception. */
static int watch_make(NpyPatroniWatch *self)
{
    const char *urls[NC_PATRONI_MAX_URLS];
    Py_ssize_t n;
    PyObject *seq = url_list(self->urls, urls, &n);
    if (!seq)
        return -1;
    nc_error err;
    nc_error_clear(&err);
    self->w = nc_patroni_watch_new(urls, (int)n, self->interval, self->timeout, &err);
    Py_DECREF(seq);
    if (!self->w) {
        npy_raise_error(&err);
        return -1;
    }
    return 0;
}

/* The watch of this process: after fork() the parent's (its thread is not
 * here, its mutex may be held forever) is left alone and a new one made,
 * running when the parent's was.  NULL with an exception. */
static nc_patroni_watch *watch_get(NpyPatroniWatch *self)
{
    nc_route *child_route = NULL;
    if (self->w && nc_patroni_watch_inherited(self->w) && self->follow_args) {
        /* The parent followed members: so does the child, over its own
         * route, which starts over from the manager's first endpoints (the
         * parent's later ones are the parent's follower's pools) and learns
         * the members again from its first answer.  The route first: making
         * it may release the GIL (start its monitor), so what follows looks
         * again at what another thread may have renewed meanwhile. */
        PyObject *mon = Py_NewRef(PyTuple_GET_ITEM(self->follow_args, 0));   /* a close() meanwhile drops args */
        if (!npy_failover_closed(mon))   /* a manager shut down: nothing to follow */
            child_route = npy_failover_route(mon);
        int failed = !child_route && PyErr_Occurred();
        Py_DECREF(mon);   /* the route stays the manager's, which the manager keeps */
        if (failed)
            return NULL;
    }
    if (self->follow && self->follow_gen != nc_fork_generation()) {
        /* The parent's follower and its pools: left alone. */
        nc_fork_keep(self->follow);
        self->follow = NULL;
    }
    if (self->w && nc_patroni_watch_inherited(self->w)) {
        nc_fork_keep(self->w);
        self->w = NULL;
        if (watch_make(self) < 0)
            return NULL;
        if (child_route) {
            /* Before the thread starts: its first answer is applied. */
            PyObject *a = self->follow_args;
            PyObject *dsn = PyTuple_GET_ITEM(a, 4);
            const char *d = PyUnicode_AsUTF8(dsn);
            if (!d || follow_route(self, self->w, child_route, PyTuple_GET_ITEM(a, 1), PyTuple_GET_ITEM(a, 2),
                                   PyTuple_GET_ITEM(a, 3), d) < 0)
                return NULL;
        }
        if (self->started) {
            nc_error err;
            nc_error_clear(&err);
            if (nc_patroni_watch_start(self->w, &err) < 0) {
                npy_raise_error(&err);
                return NULL;
            }
        }
    }
    if (!self->w)
        npy_raise(NC_E_POOL_CLOSED, NC_K_INTERFACE, NULL, "the Patroni watch is closed");
    return self->w;
}

static int watch_init(PyObject *op, PyObject *args, PyObject *kw)
{
    NpyPatroniWatch *self = (NpyPatroniWatch *)op;
    static char *kwlist[] = {"urls", "interval", "timeout", "known", NULL};
    PyObject *urls, *known;
    double interval, timeout;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OddO", kwlist, &urls, &interval, &timeout, &known))
        return -1;
    if (self->w) {
        PyErr_SetString(PyExc_RuntimeError, "PatroniWatch is already initialised");
        return -1;
    }
    PyObject *u = PySequence_Tuple(urls), *k = PySequence_Tuple(known);
    if (!u || !k) {
        Py_XDECREF(u);
        Py_XDECREF(k);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(k); i++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(k, i))) {
            Py_DECREF(u);
            Py_DECREF(k);
            PyErr_SetString(PyExc_TypeError, "PatroniWatch: known names must be str");
            return -1;
        }
    Py_XSETREF(self->urls, u);
    Py_XSETREF(self->known, k);
    self->interval = interval;
    self->timeout = timeout;
    return watch_make(self);
}

static void watch_free_core(nc_patroni_watch *w)
{
    if (!w)
        return;
    if (nc_patroni_watch_inherited(w)) {
        nc_fork_keep(w);
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    nc_patroni_watch_free(w);   /* joins the thread: within NC_STOP_PERIOD of the stop */
    Py_END_ALLOW_THREADS
}

/* After the watch whose thread applies to it is gone. */
static void follow_free(NpyPatroniWatch *self)
{
    nc_patroni_follow *f = self->follow;
    self->follow = NULL;
    if (!f)
        return;
    if (self->follow_gen != nc_fork_generation()) {
        nc_fork_keep(f);
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    nc_patroni_follow_free(f);
    Py_END_ALLOW_THREADS
}

static void watch_dealloc(PyObject *op)
{
    NpyPatroniWatch *self = (NpyPatroniWatch *)op;
    watch_free_core(self->w);
    self->w = NULL;
    follow_free(self);
    Py_CLEAR(self->follow_args);
    Py_CLEAR(self->urls);
    Py_CLEAR(self->known);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *watch_start(PyObject *op, PyObject *unused)
{
    (void)unused;
    NpyPatroniWatch *self = (NpyPatroniWatch *)op;
    nc_patroni_watch *w = watch_get(self);
    if (!w)
        return NULL;
    nc_error err;
    nc_error_clear(&err);
    if (nc_patroni_watch_start(w, &err) < 0)
        return npy_raise_error(&err);
    self->started = 1;
    Py_RETURN_NONE;
}

static PyObject *watch_stop(PyObject *op, PyObject *unused)
{
    (void)unused;
    NpyPatroniWatch *self = (NpyPatroniWatch *)op;
    self->started = 0;
    if (!self->w)
        Py_RETURN_NONE;
    nc_patroni_watch *w = watch_get(self);
    if (!w)
        return NULL;
    /* Without the GIL a close() in another thread may let go of w while
     * this stop joins: the reference keeps its memory, and that close's
     * stop waits for this join (so the follower it frees next has no
     * thread left applying to it). */
    nc_patroni_watch_ref(w);
    Py_BEGIN_ALLOW_THREADS
    nc_patroni_watch_stop(w);
    nc_patroni_watch_unref(w);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *watch_close(PyObject *op, PyObject *unused)
{
    (void)unused;
    NpyPatroniWatch *self = (NpyPatroniWatch *)op;
    nc_patroni_watch *w = self->w;
    self->w = NULL;
    self->started = 0;
    watch_free_core(w);
    follow_free(self);
    Py_CLEAR(self->follow_args);
    Py_RETURN_NONE;
}

/* Make the follower of route r (names/hosts/ports: its endpoints, by index)
 * and hand it to w.  1 following, 0 not (a route over other than the
 * core's PostgreSQL pools), -1 with an exception.  With the GIL, which it
 * never releases: w->mu is only held for bookkeeping (never over a fetch or
 * an apply), and without it a close() in another thread could free w under
 * us. */
static int follow_route(NpyPatroniWatch *self, nc_patroni_watch *w, nc_route *r, PyObject *names, PyObject *hosts,
                        PyObject *ports, const char *dsn)
{
    if (self->follow)
        return npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "the Patroni watch already follows a manager"), -1;
    Py_ssize_t n = PyList_GET_SIZE(names);
    if (n != nc_route_count(r) || PyList_GET_SIZE(hosts) != n || PyList_GET_SIZE(ports) != n ||
        n > NC_MONITOR_ENDPOINTS_MAX)
        return npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "follow: one name, host and port per endpoint"), -1;
    nc_pool *p0 = nc_route_pool(r, 0);
    if (nc_pool_ops(p0) != &nc_pg_ops)
        return 0;
    const char *nm[NC_MONITOR_ENDPOINTS_MAX], *hs[NC_MONITOR_ENDPOINTS_MAX];
    int ps[NC_MONITOR_ENDPOINTS_MAX];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyList_GET_ITEM(names, i), *b = PyList_GET_ITEM(hosts, i), *c = PyList_GET_ITEM(ports, i);
        if (!PyUnicode_Check(a) || !PyUnicode_Check(b) || !PyLong_Check(c))
            return npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "follow: names and hosts are str, ports int"), -1;
        nm[i] = PyUnicode_AsUTF8(a);
        hs[i] = PyUnicode_AsUTF8(b);
        long v = PyLong_AsLong(c);
        if (!nm[i] || !hs[i] || (v == -1 && PyErr_Occurred()))
            return -1;
        ps[i] = (int)v;
    }
    nc_error err;
    nc_error_clear(&err);
    nc_patroni_follow *f = nc_patroni_follow_new(r, nm, hs, ps, (int)n, dsn, nc_pool_config_of(p0), &err);
    if (!f)
        return npy_raise_error(&err), -1;
    self->follow = f;
    self->follow_gen = nc_fork_generation();
    nc_patroni_watch_follow(w, f);
    return 1;
}

/* follow(monitor, names, hosts, ports, dsn): from now on each answer adds
 * the members that join to monitor's route and marks those that leave
 * (nc_patroni_follow.h); names/hosts/ports: its endpoints, by index.  Only
 * over PostgreSQL pools made by the core (a backend_factory's endpoints
 * cannot be made for a new member): False, following nothing, otherwise.
 * The arguments are kept: a forked child follows its own route again
 * (watch_get). */
static PyObject *watch_follow(PyObject *op, PyObject *args)
{
    NpyPatroniWatch *self = (NpyPatroniWatch *)op;
    PyObject *mon, *names, *hosts, *ports, *dsn;
    if (!PyArg_ParseTuple(args, "OO!O!O!U:follow", &mon, &PyList_Type, &names, &PyList_Type, &hosts, &PyList_Type,
                          &ports, &dsn))
        return NULL;
    const char *d = PyUnicode_AsUTF8(dsn);
    if (!d)
        return NULL;
    /* The route first: in a forked child that may start its monitor, with
     * the GIL released, when another thread may close this watch. */
    nc_route *r = npy_failover_route(mon);
    if (!r)
        return NULL;
    nc_patroni_watch *w = watch_get(self);
    if (!w)
        return NULL;
    /* Copies: the caller's lists may change. */
    PyObject *kept = PyTuple_New(5);
    if (!kept)
        return NULL;
    PyTuple_SET_ITEM(kept, 0, Py_NewRef(mon));
    PyTuple_SET_ITEM(kept, 1, PySequence_List(names));
    PyTuple_SET_ITEM(kept, 2, PySequence_List(hosts));
    PyTuple_SET_ITEM(kept, 3, PySequence_List(ports));
    PyTuple_SET_ITEM(kept, 4, Py_NewRef(dsn));
    if (!PyTuple_GET_ITEM(kept, 1) || !PyTuple_GET_ITEM(kept, 2) || !PyTuple_GET_ITEM(kept, 3)) {
        Py_DECREF(kept);
        return NULL;
    }
    int rc = follow_route(self, w, r, PyTuple_GET_ITEM(kept, 1), PyTuple_GET_ITEM(kept, 2),
                          PyTuple_GET_ITEM(kept, 3), d);
    if (rc <= 0) {
        Py_DECREF(kept);
        return rc < 0 ? NULL : Py_NewRef(Py_False);
    }
    Py_XSETREF(self->follow_args, kept);
    Py_RETURN_TRUE;
}

/* The follower's status (self->follow set), without the GIL: its lock may be
 * held by an apply (making a pool, probing).  The reference taken with the
 * GIL keeps it alive should another thread close the watch meanwhile
 * (follow_free, which clears self->follow: read here with the GIL only). */
static void follow_status(NpyPatroniWatch *self, nc_follow_status *st)
{
    nc_patroni_follow *f = self->follow;
    nc_patroni_follow_ref(f);
    Py_BEGIN_ALLOW_THREADS
    nc_patroni_follow_status(f, st);
    nc_patroni_follow_unref(f);
    Py_END_ALLOW_THREADS
}

/* endpoints() -> [(name, host, port, removed, added)] by endpoint index, or
 * None when not following. */
static PyObject *watch_endpoints(PyObject *op, PyObject *unused)
{
    (void)unused;
    NpyPatroniWatch *self = (NpyPatroniWatch *)op;
    if (!watch_get(self))
        return NULL;
    if (!self->follow)
        Py_RETURN_NONE;
    nc_follow_status *st = malloc(sizeof *st);
    if (!st)
        return PyErr_NoMemory();
    follow_status(self, st);
    PyObject *l = PyList_New(st->n);
    for (int i = 0; l && i < st->n; i++) {
        const nc_follow_endpoint *e = &st->eps[i];
        PyObject *t = Py_BuildValue("(ssiOO)", e->name, e->host, e->port, e->removed ? Py_True : Py_False,
                                    e->added ? Py_True : Py_False);
        if (!t)
            Py_CLEAR(l);
        else
            PyList_SET_ITEM(l, i, t);
    }
    free(st);
    return l;
}

/* The follower's counters for status(): added, removed, returned, refusals,
 * last_refusal (None when not following). */
static PyObject *follow_counters(NpyPatroniWatch *self)
{
    if (!self->follow)
        Py_RETURN_NONE;
    nc_follow_status *st = malloc(sizeof *st);
    if (!st)
        return PyErr_NoMemory();
    follow_status(self, st);
    PyObject *d = Py_BuildValue("{s:i,s:i,s:i,s:i,s:s}", "added", st->added, "removed", st->removed, "returned",
                                st->returned, "refusals", st->refusals, "last_refusal", st->last_refusal);
    free(st);
    return d;
}

static PyObject *str_list(PyObject *tuple, const int *idx, int n)
{
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++)
        PyList_SET_ITEM(l, i, Py_NewRef(PyTuple_GET_ITEM(tuple, idx[i])));
    return l;
}

static PyObject *watch_status(PyObject *op, PyObject *unused)
{
    (void)unused;
    NpyPatroniWatch *self = (NpyPatroniWatch *)op;
    nc_patroni_watch *w = watch_get(self);
    if (!w)
        return NULL;
    nc_patroni_watch_status *st = malloc(sizeof *st);   /* ~45 kB: not on the stack */
    PyObject *cl = NULL, *joined = NULL, *gone = NULL, *d = NULL, *names = NULL;
    if (!st)
        return PyErr_NoMemory();
    /* With the GIL: the lock is held only while the thread copies an answer,
     * and without it a close() in another thread could free w under us. */
    nc_patroni_watch_status_get(w, st);
    Py_ssize_t nk = PyTuple_GET_SIZE(self->known);
    const char *known[NC_PATRONI_MAX_MEMBERS];
    int ji[NC_PATRONI_MAX_MEMBERS], gi[NC_PATRONI_MAX_MEMBERS], nj = 0, ng = 0;
    if (nk > NC_PATRONI_MAX_MEMBERS)
        nk = NC_PATRONI_MAX_MEMBERS;
    for (Py_ssize_t i = 0; i < nk; i++)
        if (!(known[i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(self->known, i))))
            goto done;
    if (st->have_cluster) {
        nc_patroni_diff(&st->cluster, known, (int)nk, ji, &nj, gi, &ng);
        if (!(cl = cluster_dict(&st->cluster)))
            goto done;
        names = PyTuple_New(st->cluster.n);
        for (int i = 0; names && i < st->cluster.n; i++) {
            const char *nm = st->cluster.members[i].name;
            PyObject *s = PyUnicode_DecodeUTF8(nm, (Py_ssize_t)strlen(nm), "replace");
            if (!s)
                Py_CLEAR(names);
            else
                PyTuple_SET_ITEM(names, i, s);
        }
        if (!names || !(joined = str_list(names, ji, nj)) || !(gone = str_list(self->known, gi, ng)))
            goto done;
    } else {
        cl = Py_NewRef(Py_None);
        if (!(joined = PyList_New(0)) || !(gone = PyList_New(0)))
            goto done;
    }
    d = Py_BuildValue("{s:O,s:K,s:K,s:i,s:O,s:s,s:O,s:O,s:O,s:d}", "running", st->running ? Py_True : Py_False,
                      "fetches", (unsigned long long)st->fetches, "failures", (unsigned long long)st->failures,
                      "consecutive_failures", st->consecutive_failures, "last_ok_age",
                      Py_None, "last_error", st->last_error, "cluster", cl,
                      "joined", joined, "gone", gone, "interval", self->interval);
    if (d) {
        PyObject *fc = follow_counters(self);
        if (!fc || PyDict_SetItemString(d, "follow", fc) < 0)
            Py_CLEAR(d);
        Py_XDECREF(fc);
    }
    if (d && st->last_ok_age >= 0) {
        PyObject *age = PyFloat_FromDouble(st->last_ok_age);
        if (!age || PyDict_SetItemString(d, "last_ok_age", age) < 0)
            Py_CLEAR(d);
        Py_XDECREF(age);
    }
done:
    free(st);
    Py_XDECREF(cl);
    Py_XDECREF(names);
    Py_XDECREF(joined);
    Py_XDECREF(gone);
    return d;
}

static PyMethodDef watch_methods[] = {
    {"start", watch_start, METH_NOARGS, "start() -> None: start the thread (idempotent)"},
    {"stop", watch_stop, METH_NOARGS, "stop() -> None: stop and join the thread"},
    {"close", watch_close, METH_NOARGS, "close() -> None: stop and free (idempotent)"},
    {"follow", watch_follow, METH_VARARGS,
     "follow(monitor, names, hosts, ports, dsn) -> bool: keep monitor's endpoints in step with the members"},
    {"endpoints", watch_endpoints, METH_NOARGS,
     "endpoints() -> [(name, host, port, removed, added)] by endpoint index, None when not following"},
    {"status", watch_status, METH_NOARGS,
     "status() -> dict: running, fetches, failures, consecutive_failures, last_ok_age, last_error, "
     "cluster (the last answer or None), joined, gone (member names since the known set), interval"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject NpyPatroniWatch_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore._native.PatroniWatch",
    .tp_basicsize = sizeof(NpyPatroniWatch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "PatroniWatch(urls, interval, timeout, known): GET /cluster every interval seconds on a native "
              "thread (csrc/core/nc_patroni_watch.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = watch_init,
    .tp_dealloc = watch_dealloc,
    .tp_methods = watch_methods,
};

int npy_patroni_add_constants(PyObject *m)
{
    return PyModule_AddIntConstant(m, "PATRONI_MAX_URLS", NC_PATRONI_MAX_URLS);
}
