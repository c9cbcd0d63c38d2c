/* errors.c - the core's error records as Python exceptions (see errors.h). */
#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* errors.py's classes, indexed by enum nc_class; NULL until registered. */
static PyObject *classes[NC_C_COUNT];

PyObject *npy_set_error_classes(PyObject *mapping)
{
    PyObject *found[NC_C_COUNT];
    for (int i = 0; i < NC_C_COUNT; i++) {
        found[i] = PyMapping_GetItemString(mapping, nc_class_name(i));
        if (!found[i] || !PyType_Check(found[i]) ||
            !PyType_IsSubtype((PyTypeObject *)found[i], (PyTypeObject *)PyExc_Exception)) {
            if (found[i] || PyErr_ExceptionMatches(PyExc_KeyError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "error classes: %s must be an Exception subclass", nc_class_name(i));
            }
            for (int k = 0; k <= i; k++)
                Py_XDECREF(found[k]);
            return NULL;
        }
    }
    for (int i = 0; i < NC_C_COUNT; i++)
        Py_XSETREF(classes[i], found[i]);
    Py_RETURN_NONE;
}

static int set_flag(PyObject *exc, const char *name, int value)
{
    return PyObject_SetAttrString(exc, name, value ? Py_True : Py_False);
}

PyObject *npy_error_new(int code, int kind, const char *sqlstate, const char *message, int sent)
{
    if (sqlstate && !sqlstate[0])
        sqlstate = NULL;
    PyObject *cls = classes[nc_error_class(code, kind, sqlstate)];
    if (!cls) {
        /* errors.py not imported (the extension used on its own) */
        PyErr_Format(PyExc_RuntimeError, "[%d] %s", code, message);
        return NULL;
    }
    /* The core cuts text on character boundaries (nc_text_set); decoding
     * with "replace" is the second guard: a server in another client
     * encoding must still give its error, not a UnicodeDecodeError. */
    PyObject *text = PyUnicode_DecodeUTF8(message, (Py_ssize_t)strlen(message), "replace");
    if (!text)
        return NULL;
    /* A server error's message is the server's own. */
    PyObject *exc = PyObject_CallFunction(cls, "OizO", text, code, sqlstate, sqlstate ? text : Py_None);
    Py_DECREF(text);
    if (!exc)
        return NULL;
    nc_error e;
    nc_error_clear(&e);
    e.sent = sent;
    if (sqlstate)
        snprintf(e.sqlstate, sizeof e.sqlstate, "%s", sqlstate);
    int failure = nc_error_failure(code, sqlstate);
    if ((sent != NC_SENT_UNKNOWN && set_flag(exc, "statement_sent", sent == NC_SENT_YES) < 0) ||
        set_flag(exc, "connection_failure", failure != NC_FAIL_NONE) < 0 ||
        set_flag(exc, "not_applied", nc_error_not_applied(&e)) < 0) {
        Py_DECREF(exc);
        return NULL;
    }
    return exc;
}

static PyObject *raise_new(int code, int kind, const char *sqlstate, const char *message, int sent)
{
    PyObject *exc = npy_error_new(code, kind, sqlstate, message, sent);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

PyObject *npy_raise(int code, int kind, const char *sqlstate, const char *fmt, ...)
{
    char buf[NC_ERRMSG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    nc_text_vset(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return raise_new(code, kind, sqlstate, buf, NC_SENT_UNKNOWN);
}

PyObject *npy_raise_error(const nc_error *err)
{
    return raise_new(err->code ? err->code : NC_E_INTERNAL, err->kind, err->sqlstate,
                     err->message[0] ? err->message : "unknown error", err->sent);
}

void npy_error_from_backend(PyObject *exc, nc_error *out)
{
    nc_error_clear(out);
    if (!exc)
        return;
    PyObject *et, *ev, *tb;   /* whatever is pending stays pending */
    PyErr_Fetch(&et, &ev, &tb);
    if (PyErr_GivenExceptionMatches(exc, PyExc_OSError))
        out->code = NC_E_CONNECTION;   /* ConnectionError and its kin */
    /* A backend may say so itself (the backend protocol). */
    PyObject *own = PyObject_GetAttrString(exc, "connection_failure");
    int said = own && own != Py_None ? PyObject_IsTrue(own) : -1;   /* None: it does not know */
    Py_XDECREF(own);
    PyErr_Clear();
    if (said == 1)
        out->code = NC_E_CONNECTION;
    PyObject *code = PyObject_GetAttrString(exc, "error_code");
    if (code && PyLong_Check(code) && PyLong_AsLong(code) == NC_E_CONNECTION)
        out->code = NC_E_CONNECTION;
    Py_XDECREF(code);
    PyErr_Clear();
    PyObject *state = PyObject_GetAttrString(exc, "sqlstate");
    const char *s = state && PyUnicode_Check(state) ? PyUnicode_AsUTF8(state) : NULL;
    if (s)
        snprintf(out->sqlstate, sizeof out->sqlstate, "%s", s);
    Py_XDECREF(state);
    PyErr_Clear();
    PyObject *msg = PyObject_Str(exc);
    const char *text = msg ? PyUnicode_AsUTF8(msg) : NULL;
    nc_text_set(out->message, sizeof out->message, "%s", text ? text : "backend error");
    Py_XDECREF(msg);
    PyErr_Clear();
    if (!out->code)
        out->code = NC_E_QUERY;
    if (said == 0) {
        out->code = NC_E_QUERY;   /* the backend said: not the connection */
        out->sqlstate[0] = '\0';
    }
    /* ... and whether the statement reached its server, if it knows. */
    PyObject *sent = PyObject_GetAttrString(exc, "statement_sent");
    if (sent && (sent == Py_True || sent == Py_False))
        out->sent = sent == Py_True ? NC_SENT_YES : NC_SENT_NO;
    Py_XDECREF(sent);
    PyErr_Clear();
    /* Best effort: an exception type that refuses attributes keeps none. */
    if (set_flag(exc, "connection_failure", nc_error_failure(out->code, out->sqlstate) != NC_FAIL_NONE) < 0 ||
        set_flag(exc, "not_applied", nc_error_not_applied(out)) < 0)
        PyErr_Clear();
    PyErr_Restore(et, ev, tb);
}

/* An attribute as a truth value; -1 when it is missing or not a bool. */
static int flag_of(PyObject *exc, const char *name)
{
    PyObject *v = PyObject_GetAttrString(exc, name);
    int r = v == Py_True ? 1 : v == Py_False ? 0 : -1;
    Py_XDECREF(v);
    PyErr_Clear();
    return r;
}

/* The 3039 error for cause (a noodlecore error the core's rule called an
 * unknown outcome), or NULL with an exception set. */
static PyObject *outcome_error(PyObject *cause, PyObject *where)
{
    int sent = flag_of(cause, "statement_sent");
    PyObject *state = PyObject_GetAttrString(cause, "sqlstate");
    if (!state)
        return NULL;
    const char *sqlstate = PyUnicode_Check(state) ? PyUnicode_AsUTF8(state) : NULL;
    PyObject *exc = NULL, *text = PyUnicode_FromFormat(
        "the outcome is unknown: the connection to %S was lost after the statement was sent, so it may or may "
        "not have been applied; it was not run again (cause: %S)", where ? where : Py_None, cause);
    const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
    if (msg && (!PyUnicode_Check(state) || sqlstate))
        exc = npy_error_new(NC_E_OUTCOME_UNKNOWN, NC_K_OPERATIONAL, sqlstate, msg,
                            sent == 1 ? NC_SENT_YES : sent == 0 ? NC_SENT_NO : NC_SENT_UNKNOWN);
    Py_XDECREF(text);
    Py_DECREF(state);
    if (!exc)
        return NULL;
    /* the server's own words, if it said any, are the cause's */
    PyObject *said = PyObject_GetAttrString(cause, "server_message");
    if (!said || PyObject_SetAttrString(exc, "server_message", said) < 0)
        Py_CLEAR(exc);
    Py_XDECREF(said);
    return exc;
}

void npy_outcome_check(int effect, int in_txn, PyObject *where)
{
    if (!PyErr_Occurred() || !classes[NC_C_ERROR])
        return;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    int is_ours = ev ? PyObject_IsInstance(ev, classes[NC_C_ERROR]) : 0;
    if (is_ours != 1) {
        if (is_ours < 0)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        return;
    }
    /* The verdict the core put on the error (errors.h), and the core's rule. */
    int failure = flag_of(ev, "connection_failure") == 1, not_applied = flag_of(ev, "not_applied") == 1;
    if (!nc_outcome_unknown(failure, not_applied, effect, in_txn)) {
        PyErr_Restore(et, ev, tb);
        return;
    }
    PyObject *exc = outcome_error(ev, where);
    if (!exc) {
        /* cannot build it (out of memory): the cause is still true */
        PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        return;
    }
    PyException_SetCause(exc, Py_NewRef(ev));
    PyException_SetContext(exc, ev);   /* steals ev */
    if (tb)
        PyException_SetTraceback(exc, tb);
    Py_XDECREF(tb);
    Py_DECREF(et);
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

int npy_add_error_tables(PyObject *module)
{
    int n;
    const nc_code_info *codes = nc_code_table(&n);
    PyObject *table = PyTuple_New(n);
    if (!table)
        return -1;
    for (int i = 0; i < n; i++) {
        const nc_code_info *c = &codes[i];
        PyObject *row = Py_BuildValue("(iszzO)", c->code, c->text, c->cls >= 0 ? nc_class_name(c->cls) : NULL,
                                      c->op, c->op_failed ? Py_True : Py_False);
        if (!row) {
            Py_DECREF(table);
            return -1;
        }
        PyTuple_SET_ITEM(table, i, row);
    }
    if (PyModule_AddObject(module, "ERROR_TABLE", table) < 0) {
        Py_DECREF(table);
        return -1;
    }
    PyObject *cls = PyDict_New();
    for (int i = 0; cls && i < NC_C_COUNT; i++) {
        PyObject *v = PyLong_FromLong(nc_class_default_code(i));
        if (!v || PyDict_SetItemString(cls, nc_class_name(i), v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(cls);
            break;
        }
        Py_DECREF(v);
    }
    if (!cls || PyModule_AddObject(module, "ERROR_CLASSES", cls) < 0) {
        Py_XDECREF(cls);
        return -1;
    }
    return 0;
}

void npy_note_row(Py_ssize_t row)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (ev) {
        PyObject *n = PyLong_FromSsize_t(row);
        if (!n || PyObject_SetAttrString(ev, "row_index", n) < 0)
            PyErr_Clear();
        Py_XDECREF(n);
    }
    PyErr_Restore(et, ev, tb);
}
