/* connection.c - PooledConnection: running statements on a borrowed
 * connection (see connection.h).
 *
 * Every method first checks that the lease is still the one it was given.
 * Statements run with the GIL released (pg_exec.c, sqlite_exec.c); values
 * are converted with it held.  A Python backend runs with the GIL held.
 */
#include "connection.h"
#include "errors.h"
#include "interrupt.h"
#include "leak.h"
#include "pg_exec.h"
#include "pybackend.h"
#include "sqlite_exec.h"
#include "transaction.h"
#include "../core/nc_fork.h"
#include "../core/nc_sqltext.h"
#include "../core/nc_time.h"

#include <string.h>

/* Borrowed in another process, before a fork(): the connection is the
 * parent's session.  Never touched here (no lease check, which would lock
 * the inherited pool's mutex; no rollback, no close). */
static int inherited(const NpyConnection *self)
{
    return self->fork_gen != nc_fork_generation();
}

static int check_live(NpyConnection *self)
{
    if (!self->released && inherited(self)) {
        npy_raise(NC_E_RELEASED, NC_K_INTERFACE, NULL,
                 "this connection was borrowed before fork() and belongs to the parent process; "
                 "borrow a new one in this process");
        return -1;
    }
    if (self->released || !self->ps->pool || !nc_pool_lease_valid(self->ps->pool, self->c, self->lease)) {
        npy_raise(NC_E_RELEASED, NC_K_INTERFACE, NULL,
                 "this connection was returned to the pool; borrow a new one");
        return -1;
    }
    return 0;
}

/* One operation at a time per PooledConnection.  A statement runs with the
 * GIL released, so without this a second thread using (or releasing) the
 * same object could reach a connection that is in use or being closed. */
static int op_claim(NpyConnection *self)
{
    if (self->busy) {
        npy_raise(NC_E_IN_USE, NC_K_INTERFACE, NULL,
                 "this connection is in use by another thread; borrow one per thread");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static int op_begin(NpyConnection *self)
{
    if (check_live(self) < 0)
        return -1;
    if (self->streaming) {
        npy_raise(NC_E_STREAMING, NC_K_INTERFACE, NULL,
                 "a result is being streamed on this connection; fetch it to the end or close its cursor first");
        return -1;
    }
    return op_claim(self);
}

static void op_end(NpyConnection *self)
{
    self->busy = 0;
    if (self->pending_release) {
        int discard = self->pending_release == 2;
        self->pending_release = 0;
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        npy_connection_release(self, discard);
        PyErr_Restore(et, ev, tb);
    }
}

void npy_connection_release(NpyConnection *self, int discard)
{
    if (self->released)
        return;
    if (self->busy) {
        /* Another thread is inside a method: it gives the connection back
         * when it finishes. */
        if (discard || !self->pending_release)
            self->pending_release = discard ? 2 : 1;
        return;
    }
    self->released = 1;
    self->in_txn = 0;
    self->streaming = 0;   /* a PostgreSQL session still streaming is closed by the pool (its return state) */
    if (inherited(self))
        return;   /* the parent's: abandoned as it is */
    if (self->stream_stmt) {
        /* before the return's rollback, which an unfinished statement would block */
        sqlite3_finalize(self->stream_stmt);
        self->stream_stmt = NULL;
    }
    nc_pool *p = self->ps ? self->ps->pool : NULL;   /* ps is NULL after conn_clear */
    nc_conn *c = self->c;
    if (!p || !c || !nc_pool_lease_valid(p, c, self->lease))
        return;
    /* Rolling back or closing (PQfinish, a SQLite checkpoint) is I/O: not
     * with the GIL held.  A clean return is a few instructions under the
     * pool mutex; nc_pool_release_quick does only that or nothing.  (A
     * Python backend's ops take the GIL themselves: keep it.) */
    if (self->ps->kind == NPY_BACKEND_PY) {
        nc_pool_release(p, c, discard);
    } else if (discard || !nc_pool_release_quick(p, c)) {
        Py_BEGIN_ALLOW_THREADS
        nc_pool_release(p, c, discard);
        Py_END_ALLOW_THREADS
    }
}

/* ---- borrowing ------------------------------------------------------------- */

int npy_settings_fresh(npy_pool_settings *ps)
{
    uint64_t gen = nc_fork_generation();
    if (!ps->pool || ps->fork_gen == gen)
        return 0;
    /* With the GIL held: one thread respawns, the others see it done.
     * nc_pool_respawn only starts the new pool's janitor: nothing waits. */
    nc_error err;
    nc_pool *p = nc_pool_respawn(ps->pool, &err);
    ps->pool = p;
    ps->fork_gen = gen;
    if (!p) {
        npy_raise_error(&err);
        return -1;
    }
    return 0;
}

int npy_settings_inherited(const npy_pool_settings *ps)
{
    return ps->pool && ps->fork_gen != nc_fork_generation();
}

NpyConnection *npy_connection_alloc(void)
{
    NpyConnection *conn = PyObject_GC_New(NpyConnection, &NpyConnection_Type);
    if (!conn)
        return NULL;
    conn->owner = NULL;
    conn->ps = NULL;
    conn->c = NULL;
    conn->lease = 0;
    conn->fork_gen = 0;
    conn->released = 1;
    conn->in_txn = 0;
    conn->busy = 0;
    conn->pending_release = 0;
    conn->streaming = 0;
    conn->stream_stmt = NULL;
    conn->row_tuple = 0;
    conn->outcome_errors = 0;
    conn->stream_effect = NC_EFFECT_NONE;
    conn->stream_in_txn = 0;
    PyObject_GC_Track(conn);
    return conn;
}

void npy_connection_attach(NpyConnection *conn, PyObject *owner, const npy_pool_settings *ps, nc_conn *c,
                           uint64_t lease)
{
    Py_XSETREF(conn->owner, Py_NewRef(owner));
    conn->ps = ps;
    conn->c = c;
    conn->lease = lease;
    conn->fork_gen = nc_fork_generation();
    conn->released = 0;
    conn->row_tuple = ps->row_tuple;
    if (ps->borrow_stacks)
        npy_leak_note(ps->borrow_stacks, c->index, lease);
}

NpyConnection *npy_connection_lend(PyObject *owner, const npy_pool_settings *ps, double timeout)
{
    /* ps lives in the Pool object, which is ours to update (with the GIL). */
    if (npy_settings_fresh((npy_pool_settings *)ps) < 0)
        return NULL;
    if (!ps->pool)
        return (NpyConnection *)npy_raise(NC_E_POOL, NC_K_INTERFACE, NULL, "the pool was not initialised");
    /* Leaks found since the last call are reported here, on a Python
     * thread, before borrowing (a warning filter may raise). */
    if (ps->borrow_stacks &&
        npy_leak_report(ps->pool, ps->borrow_stacks, ps->display, ps->leak_timeout, 1) < 0)
        return NULL;
    /* Made first: once a connection is borrowed nothing may fail. */
    NpyConnection *conn = npy_connection_alloc();
    if (!conn)
        return NULL;
    nc_error err;
    nc_conn *c = NULL;
    uint64_t lease = 0;
    int rc = nc_pool_try_acquire(ps->pool, &c, &lease, &err);
    if (rc == 0) {
        npy_interrupt it;
        npy_interrupt_arm(&it);
        Py_BEGIN_ALLOW_THREADS
        rc = nc_pool_acquire(ps->pool, timeout, &c, &lease, &err) == 0 ? 1 : -1;
        Py_END_ALLOW_THREADS
        if (npy_interrupt_disarm(&it)) {
            /* Ctrl-C: a connection got just as it came is given back. */
            if (rc == 1) {
                Py_BEGIN_ALLOW_THREADS
                nc_pool_release(ps->pool, c, 0);
                Py_END_ALLOW_THREADS
            }
            Py_DECREF(conn);
            return NULL;
        }
    }
    if (rc < 0) {
        Py_DECREF(conn);
        return (NpyConnection *)npy_raise_error(&err);
    }
    npy_connection_attach(conn, owner, ps, c, lease);
    return conn;
}

static void conn_dealloc(NpyConnection *self)
{
    /* Untracked first: releasing may let other threads (and a collection)
     * run while we are half torn down. */
    PyObject_GC_UnTrack(self);
    /* Dropped without release(): give it back rather than leak the slot. */
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    npy_connection_release(self, 0);
    PyErr_Restore(et, ev, tb);
    Py_CLEAR(self->owner);
    PyObject_GC_Del(self);
}

static int conn_traverse(NpyConnection *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    return 0;
}

/* In a cycle (pool.last = conn): give the connection back, then let go of
 * the Pool.  Afterwards the object is a returned connection (ps NULL). */
static int conn_clear(NpyConnection *self)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    npy_connection_release(self, 0);
    PyErr_Restore(et, ev, tb);
    if (!self->released)
        return 0;   /* busy in another thread: it is not garbage then; keep it whole */
    self->ps = NULL;
    Py_CLEAR(self->owner);
    return 0;
}

static double deadline_for(NpyConnection *self, PyObject *timeout, int *bad)
{
    double t = self->ps->query_timeout;
    if (timeout && timeout != Py_None) {
        if (PyBool_Check(timeout) || !(PyLong_Check(timeout) || PyFloat_Check(timeout))) {
            npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout must be a number of seconds or None, not %s",
                     Py_TYPE(timeout)->tp_name);
            *bad = 1;
            return 0;
        }
        t = PyFloat_AsDouble(timeout);
        if (t == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout is too large");
            *bad = 1;
            return 0;
        }
        if (!(t > 0)) {
            npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "timeout must be a positive number of seconds");
            *bad = 1;
            return 0;
        }
    }
    return t < 0 ? NC_NO_DEADLINE : nc_now() + t;
}

static int row_format_arg(NpyConnection *self, PyObject *rf, int *tuple)
{
    *tuple = self->row_tuple;
    if (!rf || rf == Py_None)
        return 0;
    if (PyUnicode_Check(rf)) {
        if (PyUnicode_CompareWithASCIIString(rf, "tuple") == 0) {
            *tuple = 1;
            return 0;
        }
        if (PyUnicode_CompareWithASCIIString(rf, "dict") == 0) {
            *tuple = 0;
            return 0;
        }
    }
    npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "row_format must be 'dict' or 'tuple'");
    return -1;
}

/* ---- methods ------------------------------------------------------------- */

/* A statement's text: a str without NUL (both libpq and SQLite stop
 * reading at a NUL: the server would run a cut-down statement).  0, or -1
 * raised. */
static int check_query(PyObject *query)
{
    if (!PyUnicode_Check(query)) {
        npy_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL, "query must be a str, not %s", Py_TYPE(query)->tp_name);
        return -1;
    }
    Py_ssize_t qlen;
    const char *qtext = PyUnicode_AsUTF8AndSize(query, &qlen);
    if (!qtext)
        return -1;
    if (memchr(qtext, '\0', (size_t)qlen)) {
        npy_raise(NC_E_PARAMS, NC_K_PROGRAMMING, NULL, "the query contains a NUL character");
        return -1;
    }
    return 0;
}

static int session_in_txn(NpyConnection *self);

/* Whether a statement lost in flight is reported as an unknown outcome
 * (3039): on a failover manager's PostgreSQL connections, where a statement
 * in flight at a switchover or a kill is the one thing that may fail, and
 * the caller must not replay a write blindly.  (A plain pool keeps 2004
 * with statement_sent: README, "Failover".  SQLite and Python backends:
 * their errors are their own.) */
static int tracks_outcome(const NpyConnection *self)
{
    return self->outcome_errors && self->ps->kind == NPY_BACKEND_PG;
}

/* After a statement failed: the core decides whether its outcome is unknown
 * (effect: nc_sql_effect of its text; in_txn: the session was in a
 * transaction when it was sent), and npy_outcome_check raises 3039 if so.
 * No Python call here: an exception is pending. */
static void outcome_check(NpyConnection *self, const char *sql, size_t len, int in_txn)
{
    npy_outcome_check(nc_sql_effect(sql, len, NC_DIALECT_PG), in_txn, self->ps->display);
}

/* One statement; shape NPY_SHAPE_DBAPI for the DB-API's 4-tuple, else
 * execute_query's rows (row_format, or the pool's default) or count. */
static PyObject *execute_one(NpyConnection *self, PyObject *query, PyObject *params, PyObject *timeout,
                             PyObject *row_format, int dbapi, int stream, int begin)
{
    if (check_query(query) < 0)
        return NULL;
    int bad = 0, tuple;
    double deadline = deadline_for(self, timeout, &bad);
    if (bad || row_format_arg(self, row_format, &tuple) < 0)
        return NULL;
    int shape = stream ? NPY_SHAPE_STREAM : dbapi ? NPY_SHAPE_DBAPI : tuple ? NPY_SHAPE_TUPLE : NPY_SHAPE_DICT;
    switch (self->ps->kind) {
    case NPY_BACKEND_PG: {
        /* begin: the statement runs in the transaction BEGIN opens with it */
        int track = tracks_outcome(self), in_txn = track && (begin || session_in_txn(self));
        Py_ssize_t len = 0;
        const char *text = track ? PyUnicode_AsUTF8AndSize(query, &len) : NULL;   /* cached by check_query */
        if (track && !text)
            return NULL;
        if (stream) {
            /* a stream that fails later (npy_pg_stream_fetch) is judged as its statement */
            self->stream_effect = track ? nc_sql_effect(text, (size_t)len, NC_DIALECT_PG) : NC_EFFECT_NONE;
            self->stream_in_txn = in_txn;
        }
        PyObject *r = npy_pg_execute(self->ps->pool, self->c->raw, query, params, deadline, shape, begin);
        if (!r && track)
            outcome_check(self, text, (size_t)len, in_txn);
        return r;
    }
    case NPY_BACKEND_SQLITE:
        return npy_sqlite_execute(self->ps->pool, self->c->raw, query, params, deadline, self->ps->busy_wait,
                                  shape, (sqlite3_stmt **)&self->stream_stmt);
    default:
        if (dbapi)
            return npy_raise(NC_E_NOT_SUPPORTED, NC_K_NOT_SUPPORTED, NULL,
                            "a DB-API connection needs a PostgreSQL or SQLite pool, not a Python backend");
        return npy_py_execute(self->ps->pool, self->c->raw, query, params);
    }
}

/* Vectorcall argument parsing by hand: execute_query is the hot path, and
 * PyArg_ParseTupleAndKeywords costs a noticeable share of a local round trip. */
static int parse_execute_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    static const char *const names[] = {"query", "params", "timeout", "row_format"};
    const Py_ssize_t nnames = 4;
    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError, "execute_query() takes at most 4 arguments (%zd given)", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nnames; i++)
        out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        for (; i < nnames; i++)
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0)
                break;
        if (i == nnames) {
            PyErr_Format(PyExc_TypeError, "execute_query() got an unexpected keyword argument '%U'", key);
            return -1;
        }
        if (out[i]) {
            PyErr_Format(PyExc_TypeError, "execute_query() got multiple values for argument '%s'", names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    if (!out[0]) {
        PyErr_SetString(PyExc_TypeError, "execute_query() missing required argument 'query'");
        return -1;
    }
    for (Py_ssize_t i = 1; i < nnames; i++)
        if (!out[i])
            out[i] = Py_None;
    return 0;
}

static PyObject *conn_execute_query(NpyConnection *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    PyObject *a[4];
    if (parse_execute_args(args, nargs, kwnames, a) < 0)
        return NULL;
    PyObject *query = a[0], *params = a[1], *timeout = a[2], *rf = a[3];
    if (op_begin(self) < 0)
        return NULL;
    PyObject *r = execute_one(self, query, params, timeout, rf, 0, 0, 0);
    op_end(self);
    return r;
}

/* The session's own transaction status (native backends); a Python
 * backend's is what begin() said. */
static int session_in_txn(NpyConnection *self)
{
    if (self->ps->kind == NPY_BACKEND_PG)
        return nc_pg_txn_status(self->c->raw) != PQTRANS_IDLE;
    if (self->ps->kind == NPY_BACKEND_SQLITE)
        return !sqlite3_get_autocommit(((nc_sqlite_conn *)self->c->raw)->db);
    return self->in_txn;
}

/* BEGIN / COMMIT / ROLLBACK.  0, or -1 with the exception set.  A
 * PostgreSQL ROLLBACK is sent without waiting for its reply (nc_pg.h,
 * nc_pg_rollback_send): the next use of the connection, or the pool, reads
 * it first. */
static int run_command(NpyConnection *self, const char *sql)
{
    int kind = self->ps->kind;
    nc_pool *pool = self->ps->pool;
    void *raw = self->c->raw;
    if (kind == NPY_BACKEND_PY)
        return npy_py_command(pool, raw, sql);
    /* The same deadlines as a statement without its own timeout: the
     * pool's query_timeout (none when unset), and on SQLite a lock is waited
     * for up to busy_timeout (README, "Deadlines"). */
    double now = nc_now();
    double deadline = self->ps->query_timeout < 0 ? NC_NO_DEADLINE : now + self->ps->query_timeout;
    double busy_until = now + self->ps->busy_wait;
    if (busy_until > deadline)
        busy_until = deadline;
    nc_error err;
    nc_error_clear(&err);
    int rc;
    npy_interrupt it;
    npy_interrupt_arm(&it);
    Py_BEGIN_ALLOW_THREADS
    if (kind == NPY_BACKEND_PG && !strcmp(sql, "ROLLBACK"))
        rc = nc_pg_rollback_send(raw, deadline, &err);
    else
        rc = kind == NPY_BACKEND_PG ? nc_pg_command(raw, sql, deadline, &err)
                                    : nc_sqlite_command_busy(raw, sql, deadline, busy_until, &err);
    if (rc < 0)
        nc_pool_report(pool, &err);   /* the pool's observer: maybe a failover decision */
    Py_END_ALLOW_THREADS
    if (npy_interrupt_disarm(&it))
        return -1;   /* KeyboardInterrupt, whatever the command did */
    if (rc < 0)
        npy_raise_error(&err);
    return rc;
}

static PyObject *begin_impl(NpyConnection *self)
{
    /* in_txn alone may be stale: a COMMIT sent as SQL ended the transaction. */
    if (self->in_txn && session_in_txn(self))
        return npy_raise(NC_E_TXN_STATE, NC_K_PROGRAMMING, NULL, "a transaction is already open on this connection");
    if (run_command(self, "BEGIN") < 0)
        return NULL;
    self->in_txn = 1;
    Py_RETURN_NONE;
}

static PyObject *conn_begin(NpyConnection *self, PyObject *unused)
{
    (void)unused;
    if (op_begin(self) < 0)
        return NULL;
    PyObject *r = begin_impl(self);
    op_end(self);
    return r;
}

static PyObject *end_impl(NpyConnection *self, const char *sql)
{
    /* Outside begin() every statement has already committed: nothing to do,
     * as with DB-API drivers in autocommit mode. */
    int open = self->in_txn || session_in_txn(self);
    if (!open && self->ps->kind == NPY_BACKEND_PY)
        open = npy_py_pending(self->c->raw, sql);   /* else the return would roll the work back */
    self->in_txn = 0;
    if (!open)
        Py_RETURN_NONE;
    if (run_command(self, sql) < 0) {
        if (tracks_outcome(self)) {
            /* a COMMIT lost in flight: committed or not, nobody knows (a
             * lost ROLLBACK: rolled back either way) */
            outcome_check(self, sql, strlen(sql), 1);
        }
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *conn_end(NpyConnection *self, const char *sql)
{
    if (op_begin(self) < 0)
        return NULL;
    PyObject *r = end_impl(self, sql);
    op_end(self);
    return r;
}

static PyObject *conn_commit(NpyConnection *self, PyObject *unused)
{
    (void)unused;
    return conn_end(self, "COMMIT");
}

static PyObject *conn_rollback(NpyConnection *self, PyObject *unused)
{
    (void)unused;
    return conn_end(self, "ROLLBACK");
}

/* The DB-API cursor's statement (noodlecore.dbapi): with begin true, a
 * transaction is opened first unless the session is in one (PEP 249's
 * implicit transaction; the session's status, not in_txn, so a COMMIT sent
 * as SQL is seen). */
static PyObject *conn_dbapi_execute(NpyConnection *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"query", "params", "timeout", "begin", "stream", NULL};
    PyObject *query, *params = Py_None, *timeout = Py_None;
    int begin = 0, stream = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOpp:_execute", kwlist, &query, &params, &timeout, &begin,
                                     &stream))
        return NULL;
    if (op_begin(self) < 0)
        return NULL;
    PyObject *r = NULL;
    int pipelined = 0;
    if (begin && self->ps->kind != NPY_BACKEND_PY && !session_in_txn(self)) {
        /* PostgreSQL, a statement with parameters (the extended protocol:
         * one statement) that is not streamed: BEGIN travels with it, one
         * round trip.  Otherwise BEGIN goes first, on its own. */
        pipelined = self->ps->kind == NPY_BACKEND_PG && params != Py_None && !stream;
        if (!pipelined && run_command(self, "BEGIN") < 0)
            goto done;
        self->in_txn = 1;
    }
    r = execute_one(self, query, params, timeout, Py_None, 1, stream, pipelined);
    /* A statement refused before it was sent (its parameters, a pending
     * ROLLBACK's reply) took its BEGIN with it: no transaction to claim,
     * or execute_many would not open its own. */
    if (pipelined && !r)
        self->in_txn = session_in_txn(self);
    /* Rows still coming: the session is busy with this statement until the
     * stream ends (libpq's status says so; SQLite left us the statement). */
    if (r && stream && self->ps->kind == NPY_BACKEND_PG)
        self->streaming = PQtransactionStatus(((nc_pg_conn *)self->c->raw)->pg) == PQTRANS_ACTIVE;
    else if (r && stream && self->ps->kind == NPY_BACKEND_SQLITE)
        self->streaming = self->stream_stmt != NULL;
done:
    op_end(self);
    return r;
}

/* The stream's next rows (_stream_fetch) or the end of it (_stream_close):
 * op_begin, but for the streaming connection itself. */
static int stream_begin(NpyConnection *self)
{
    if (check_live(self) < 0)
        return -1;
    return op_claim(self);
}

static PyObject *conn_stream_fetch(NpyConnection *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n", "timeout", NULL};
    int n;
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|O:_stream_fetch", kwlist, &n, &timeout))
        return NULL;
    if (stream_begin(self) < 0)
        return NULL;
    PyObject *r = NULL;
    int bad = 0, done = 1;
    double deadline = deadline_for(self, timeout, &bad);
    if (!bad && self->streaming) {
        PyObject *rows;
        if (self->stream_stmt) {
            rows = npy_sqlite_stream_fetch(self->ps->pool, self->c->raw, self->stream_stmt, n > 0 ? n : 1,
                                           deadline, self->ps->busy_wait, &done);
            if (done) {
                sqlite3_finalize(self->stream_stmt);
                self->stream_stmt = NULL;
            }
        } else {
            rows = npy_pg_stream_fetch(self->ps->pool, self->c->raw, n > 0 ? n : 1, deadline, &done);
            if (!rows && tracks_outcome(self))   /* the statement is still running until its last row */
                npy_outcome_check(self->stream_effect, self->stream_in_txn, self->ps->display);
        }
        if (done)
            self->streaming = 0;
        if (rows)
            r = Py_BuildValue("(NO)", rows, done ? Py_True : Py_False);
    } else if (!bad) {
        r = Py_BuildValue("([]O)", Py_True);   /* nothing streaming: the end */
    }
    op_end(self);
    return r;
}

static PyObject *conn_stream_close(NpyConnection *self, PyObject *unused)
{
    (void)unused;
    if (self->released || !self->streaming)
        Py_RETURN_NONE;
    if (stream_begin(self) < 0)
        return NULL;
    int bad = 0, rc = 0;
    double deadline = deadline_for(self, Py_None, &bad);
    if (self->stream_stmt) {
        sqlite3_finalize(self->stream_stmt);   /* SQLite just stops */
        self->stream_stmt = NULL;
    } else if (self->streaming) {
        rc = npy_pg_stream_drain(self->ps->pool, self->c->raw, deadline);
        if (rc < 0 && tracks_outcome(self))
            npy_outcome_check(self->stream_effect, self->stream_in_txn, self->ps->display);
    }
    self->streaming = 0;
    op_end(self);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *execute_many_impl(NpyConnection *self, PyObject *query, PyObject *seq, PyObject *timeout);

static PyObject *conn_execute_many(NpyConnection *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"query", "seq_of_params", "timeout", NULL};
    PyObject *query, *seq, *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O:execute_many", kwlist, &query, &seq, &timeout))
        return NULL;
    if (op_begin(self) < 0)
        return NULL;
    PyObject *r = execute_many_impl(self, query, seq, timeout);
    op_end(self);
    return r;
}

/* PostgreSQL: the whole sequence in pipelines (pg_exec.c), one deadline for
 * all of it.  Outside a transaction the batch gets its own, whose BEGIN and
 * COMMIT travel in the pipelines; a failure rolls it back. */
static PyObject *execute_many_pg(NpyConnection *self, PyObject *query, PyObject *seq, PyObject *timeout)
{
    if (check_query(query) < 0)
        return NULL;
    int bad = 0;
    double deadline = deadline_for(self, timeout, &bad);
    if (bad)
        return NULL;
    nc_pg_conn *pc = self->c->raw;
    int own = !self->in_txn && nc_pg_txn_status(pc) == PQTRANS_IDLE;
    Py_ssize_t len = 0;
    const char *text = PyUnicode_AsUTF8AndSize(query, &len);   /* cached by check_query */
    if (!text)
        return NULL;
    int committing = 0;
    PyObject *r = npy_pg_execute_many(self->ps->pool, pc, query, seq, deadline, own, &committing);
    /* Its own transaction's COMMIT travels with the last rows: lost with
     * them, a batch that writes has an unknown outcome; lost before (an
     * earlier pipeline), or inside the caller's transaction, it is rolled
     * back with the session, as a statement inside a transaction. */
    if (!r && tracks_outcome(self))
        outcome_check(self, text, (size_t)len, !(own && committing));
    if (!r && own && !pc->broken && nc_pg_txn_status(pc) != PQTRANS_IDLE
        && nc_pool_lease_valid(self->ps->pool, self->c, self->lease)) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (run_command(self, "ROLLBACK") < 0)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
    }
    return r;
}

static PyObject *execute_many_impl(NpyConnection *self, PyObject *query, PyObject *seq, PyObject *timeout)
{
    if (self->ps->kind == NPY_BACKEND_PG)
        return execute_many_pg(self, query, seq, timeout);
    PyObject *it = PyObject_GetIter(seq);
    if (!it)
        return NULL;
    /* All or nothing: outside a transaction the batch gets its own. */
    int own = !self->in_txn;
    if (own) {
        if (run_command(self, "BEGIN") < 0) {
            Py_DECREF(it);
            return NULL;
        }
        self->in_txn = 1;
    }
    long long total = 0;
    Py_ssize_t row = 0;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        PyObject *r = execute_one(self, query, item, timeout, Py_None, 0, 0, 0);
        Py_DECREF(item);
        if (!r) {
            npy_note_row(row);   /* which parameter set failed (as on PostgreSQL) */
            goto fail;
        }
        row++;
        if (PyLong_Check(r)) {
            long long n = PyLong_AsLongLong(r);
            if (n == -1 && PyErr_Occurred())
                PyErr_Clear();   /* a Python backend's count past 64 bits: not added up */
            else if (n > 0)
                total += n;
        }
        Py_DECREF(r);
    }
    Py_DECREF(it);
    it = NULL;
    if (PyErr_Occurred())
        goto fail;
    if (own) {
        self->in_txn = 0;
        if (run_command(self, "COMMIT") < 0)
            return NULL;
    }
    return PyLong_FromLongLong(total);
fail:
    Py_XDECREF(it);
    if (own && !self->released && nc_pool_lease_valid(self->ps->pool, self->c, self->lease)) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        self->in_txn = 0;
        if (run_command(self, "ROLLBACK") < 0)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
    }
    return NULL;
}

static PyObject *conn_release(NpyConnection *self, PyObject *unused)
{
    (void)unused;
    npy_connection_release(self, 0);
    Py_RETURN_NONE;
}

static PyObject *conn_discard(NpyConnection *self, PyObject *unused)
{
    (void)unused;
    npy_connection_release(self, 1);
    Py_RETURN_NONE;
}

static PyObject *conn_ping(NpyConnection *self, PyObject *unused)
{
    (void)unused;
    if (op_begin(self) < 0)
        return NULL;
    nc_pool *pool = self->ps->pool;
    nc_conn *c = self->c;
    nc_error err;
    int rc;
    if (self->ps->kind == NPY_BACKEND_PY) {
        rc = nc_pool_ping(pool, c, &err);
    } else {
        /* Bounded by validation_timeout, and Ctrl-C ends it (the
         * connection is kept, its reply read before its next use). */
        npy_interrupt it;
        npy_interrupt_arm(&it);
        Py_BEGIN_ALLOW_THREADS
        rc = nc_pool_ping(pool, c, &err);
        Py_END_ALLOW_THREADS
        if (npy_interrupt_disarm(&it)) {
            op_end(self);
            return NULL;
        }
    }
    op_end(self);
    return PyBool_FromLong(rc == 0);
}

/* The pool's own cheap check (a zero-timeout poll of the socket, no round
 * trip): what SQLAlchemy's pool_pre_ping asks through the dialect's do_ping.
 * Python-backend connections run user code, so they take the GIL path. */
static PyObject *conn_looks_alive(NpyConnection *self, PyObject *unused)
{
    (void)unused;
    if (op_begin(self) < 0)
        return NULL;
    const nc_backend_ops *ops = nc_pool_ops(self->ps->pool);
    int ok = ops->looks_alive(nc_pool_ctx(self->ps->pool), self->c->raw);
    op_end(self);
    return PyBool_FromLong(ok == 1);
}

static PyObject *conn_transaction(NpyConnection *self, PyObject *unused)
{
    (void)unused;
    if (check_live(self) < 0)
        return NULL;
    return npy_transaction_new((PyObject *)self);
}

static PyObject *conn_enter(NpyConnection *self, PyObject *unused)
{
    (void)unused;
    if (check_live(self) < 0)
        return NULL;
    return Py_NewRef((PyObject *)self);
}

static PyObject *conn_exit(NpyConnection *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    npy_connection_release(self, 0);
    Py_RETURN_FALSE;
}

static PyObject *conn_get_valid(NpyConnection *self, void *c)
{
    (void)c;
    return PyBool_FromLong(!self->released && !inherited(self) && self->ps->pool &&
                           nc_pool_lease_valid(self->ps->pool, self->c, self->lease));
}

static PyObject *conn_get_in_txn(NpyConnection *self, void *c)
{
    (void)c;
    if (check_live(self) < 0)
        return NULL;
    return PyBool_FromLong(session_in_txn(self));
}

static PyObject *conn_get_pid(NpyConnection *self, void *c)
{
    (void)c;
    if (check_live(self) < 0)
        return NULL;
    if (self->ps->kind != NPY_BACKEND_PG)
        Py_RETURN_NONE;
    return PyLong_FromLong(nc_pg_backend_pid(self->c->raw));
}

static PyObject *conn_get_backend(NpyConnection *self, void *c)
{
    (void)c;
    if (check_live(self) < 0)
        return NULL;
    if (self->ps->kind != NPY_BACKEND_PY)
        Py_RETURN_NONE;
    return Py_NewRef(npy_py_conn_object(self->c->raw));
}

static PyObject *conn_get_serial(NpyConnection *self, void *c)
{
    (void)c;
    if (check_live(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(self->c->serial);
}

static PyObject *conn_repr(NpyConnection *self)
{
    if (!self->ps)
        return PyUnicode_FromString("<PooledConnection returned>");
    int live = !self->released && !inherited(self) && self->ps->pool &&
               nc_pool_lease_valid(self->ps->pool, self->c, self->lease);
    return PyUnicode_FromFormat("<PooledConnection %U %s>", self->ps->display, live ? "borrowed" : "returned");
}

static PyMethodDef conn_methods[] = {
    {"execute_query", (PyCFunction)(void (*)(void))conn_execute_query, METH_FASTCALL | METH_KEYWORDS,
     "execute_query(query, params=None, timeout=None, row_format=None)\n--\n\n"
     "Run one statement. Placeholders: %s with a sequence, %(name)s with a mapping, %% for a\n"
     "literal %. Values are bound by the server. Returns a list of rows (dicts, or tuples with\n"
     "row_format='tuple') when the statement returns rows, else the number of rows affected\n"
     "(-1 when the statement has no count). timeout is a deadline in seconds: when it passes the\n"
     "statement is cancelled on the server and QueryTimeoutError (2012) is raised. Outside\n"
     "begin()/transaction() each statement commits on its own. With params=None the SQL is sent\n"
     "as it is (several statements allowed)."},
    {"execute_many", (PyCFunction)(void (*)(void))conn_execute_many, METH_VARARGS | METH_KEYWORDS,
     "execute_many(query, seq_of_params, timeout=None)\n--\n\n"
     "Run query once per parameter set, all in one transaction (its own unless one is open);\n"
     "returns the total number of rows affected. On PostgreSQL the statements go in libpq's\n"
     "pipeline mode, one round trip per 1000 rows, and timeout covers the whole batch. When a\n"
     "parameter set fails, the exception's row_index is its index in seq_of_params."},
    {"_execute", (PyCFunction)(void (*)(void))conn_dbapi_execute, METH_VARARGS | METH_KEYWORDS,
     "_execute(query, params=None, timeout=None, begin=False, stream=False)\n--\n\n"
     "For noodlecore.dbapi's cursor: run one statement (as execute_query) and return\n"
     "(description, rows, rowcount, lastrowid): description a list of PEP 249 7-tuples (None\n"
     "without a result set), rows a list of tuples (or None), rowcount -1 where unknown,\n"
     "lastrowid SQLite's rowid after an INSERT (else None). begin=True first opens a\n"
     "transaction unless one is open. stream=True (PostgreSQL): rows come one by one (libpq's\n"
     "single-row mode): rows holds the first, the rest come from _stream_fetch."},
    {"_stream_fetch", (PyCFunction)(void (*)(void))conn_stream_fetch, METH_VARARGS | METH_KEYWORDS,
     "_stream_fetch(n, timeout=None) -> (rows, done): up to n more rows of the result _execute(stream=True)\n"
     "is streaming (PostgreSQL); done once the statement is over."},
    {"_stream_close", (PyCFunction)conn_stream_close, METH_NOARGS,
     "End a stream early: its remaining rows are read and dropped (no-op without one)."},
    {"begin", (PyCFunction)conn_begin, METH_NOARGS, "Open a transaction (ProgrammingError 2017 if one is open)."},
    {"commit", (PyCFunction)conn_commit, METH_NOARGS, "Commit the open transaction (no-op outside one)."},
    {"rollback", (PyCFunction)conn_rollback, METH_NOARGS, "Roll back the open transaction (no-op outside one)."},
    {"transaction", (PyCFunction)conn_transaction, METH_NOARGS,
     "A context manager: begins, commits at the end, or rolls back if the block raises."},
    {"ping", (PyCFunction)conn_ping, METH_NOARGS,
     "Round-trip health check bounded by validation_timeout; True when it answered (False: the\n"
     "connection is closed when given back). Ctrl-C ends it with KeyboardInterrupt and keeps the\n"
     "connection (its reply is read before its next use)."},
    {"looks_alive", (PyCFunction)conn_looks_alive, METH_NOARGS,
     "The pool's cheap check, no round trip (a poll of the socket): False when the connection is\n"
     "certainly dead."},
    {"release", (PyCFunction)conn_release, METH_NOARGS,
     "Give the connection back to the pool; this object is dead afterwards."},
    {"close", (PyCFunction)conn_release, METH_NOARGS, "Same as release()."},
    {"discard", (PyCFunction)conn_discard, METH_NOARGS,
     "Give the connection back to be closed, not reused; this object is dead afterwards."},
    {"__enter__", (PyCFunction)conn_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))conn_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef conn_getset[] = {
    {"valid", (getter)conn_get_valid, NULL, "True while this object still holds its borrow.", NULL},
    {"in_transaction", (getter)conn_get_in_txn, NULL, "True while a transaction is open.", NULL},
    {"backend_pid", (getter)conn_get_pid, NULL, "PostgreSQL server process id (None for other backends).", NULL},
    {"backend", (getter)conn_get_backend, NULL, "The Python backend object (None for native backends).", NULL},
    {"connection_id", (getter)conn_get_serial, NULL, "Serial number of the underlying connection in its pool.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject NpyConnection_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "noodlecore.database.connection_pool.PooledConnection",
    .tp_basicsize = sizeof(NpyConnection),
    .tp_dealloc = (destructor)conn_dealloc,
    .tp_repr = (reprfunc)conn_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)conn_traverse,
    .tp_clear = (inquiry)conn_clear,
    .tp_doc = "A connection borrowed from a DatabaseConnectionPool.\n\n"
              "Valid until it goes back to the pool (end of the with-block or release()); any use\n"
              "after that raises InterfaceError (2016).",
    .tp_methods = conn_methods,
    .tp_getset = conn_getset,
};
