/* patroni.c - _native.patroni_cluster(urls, timeout): GET /cluster from the first
 * Patroni REST API that answers (the core's client, nc_patroni.c), the GIL released
 * and Ctrl-C honoured while it waits; the members as dicts.  No decisions here:
 * which member leads is the core's answer (nc_patroni_is_leader). */
#include "patroni.h"
#include "errors.h"
#include "interrupt.h"
#include "../core/nc_patroni.h"

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

PyObject *npy_patroni_cluster(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *urls_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "Od", &urls_obj, &timeout))
        return NULL;
    PyObject *seq = PySequence_Fast(urls_obj, "patroni_cluster: urls must be a sequence of str");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > NC_PATRONI_MAX_URLS) {
        Py_DECREF(seq);
        return npy_raise(NC_E_PATRONI_URL, NC_K_NONE, NULL, "Patroni: %zd URLs given (1 to %d)", n,
                         NC_PATRONI_MAX_URLS);
    }
    const char *urls[NC_PATRONI_MAX_URLS];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *u = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_Check(u)) {
            Py_DECREF(seq);
            return npy_raise(NC_E_PATRONI_URL, NC_K_NONE, NULL, "Patroni URL #%zd is not a str", i + 1);
        }
        urls[i] = PyUnicode_AsUTF8(u);      /* kept alive by seq */
        if (!urls[i]) {
            Py_DECREF(seq);
            return NULL;
        }
    }
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

int npy_patroni_add_constants(PyObject *m)
{
    return PyModule_AddIntConstant(m, "PATRONI_MAX_URLS", NC_PATRONI_MAX_URLS);
}
