/* pg_array.c - the text syntax of PostgreSQL arrays and of
 * int2vector/oidvector (see pg_array.h).
 *
 * Output syntax (array_out): '{' elements separated by ',' '}', one level of
 * braces per dimension; an element is double-quoted when it is empty,
 * contains a delimiter, brace, quote, backslash or white space, or spells
 * NULL, with '"' and '\' escaped by a backslash; the unquoted word NULL is
 * SQL NULL.  Arrays whose lower bound is not 1 are prefixed with their
 * bounds ('[0:1]={7,8}'); Python lists start at 0 anyway, so the bounds are
 * dropped, as psycopg does.  Every built-in type we decode uses ',' as the
 * delimiter (only box uses ';', and box has no decoder: it comes back as
 * str). */
#include "pg_array.h"

#include <stdlib.h>
#include <string.h>

/* ---- decoding ----------------------------------------------------------- */

typedef struct {
    const char *v, *p, *end;
    int len;
    char *buf;                  /* one element's unescaped text */
    npy_pg_elem_decoder dec;
    const char *tname;
} arr_parser;

static PyObject *arr_bad(arr_parser *ps, const char *why)
{
    char pfx[64];
    int n = ps->len < 40 ? ps->len : 40;
    int o = 0;
    for (int i = 0; i < n && o < (int)sizeof pfx - 5; i++) {
        unsigned char c = (unsigned char)ps->v[i];
        pfx[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    pfx[o] = '\0';
    return npy_adapt_raisef(NC_E_DECODE, NC_K_DATA, "cannot decode a %s value: %s: '%s%s'",
                            ps->tname, why, pfx, ps->len > n ? "..." : "");
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static void skip_space(arr_parser *ps)
{
    while (ps->p < ps->end && is_space(*ps->p))
        ps->p++;
}

/* One element (the parser is at its first character): decoded, or None. */
static PyObject *arr_element(arr_parser *ps)
{
    int n = 0;
    if (*ps->p == '"') {
        ps->p++;
        for (;;) {
            if (ps->p >= ps->end)
                return arr_bad(ps, "unterminated quoted element");
            char c = *ps->p++;
            if (c == '"')
                break;
            if (c == '\\') {
                if (ps->p >= ps->end)
                    return arr_bad(ps, "backslash at the end");
                c = *ps->p++;
            }
            ps->buf[n++] = c;
        }
    } else {
        int escaped = 0, kept = 0;     /* kept: length up to the last escaped char */
        while (ps->p < ps->end && *ps->p != ',' && *ps->p != '}') {
            char c = *ps->p++;
            if (c == '{' || c == '"')
                return arr_bad(ps, "unexpected character in an element");
            if (c == '\\') {
                if (ps->p >= ps->end)
                    return arr_bad(ps, "backslash at the end");
                c = *ps->p++;
                escaped = 1;
                ps->buf[n++] = c;
                kept = n;
                continue;
            }
            ps->buf[n++] = c;
        }
        while (n > kept && is_space(ps->buf[n - 1]))   /* trailing white space is not part of it */
            n--;
        if (n == 0)
            return arr_bad(ps, "empty unquoted element");
        if (!escaped && n == 4 && (ps->buf[0] | 0x20) == 'n' && (ps->buf[1] | 0x20) == 'u'
            && (ps->buf[2] | 0x20) == 'l' && (ps->buf[3] | 0x20) == 'l')
            Py_RETURN_NONE;
    }
    ps->buf[n] = '\0';
    return ps->dec(ps->buf, n);
}

/* The parser is just past a '{': the level's list. */
static PyObject *arr_level(arr_parser *ps, int depth)
{
    if (depth > NPY_PG_ARRAY_MAXDIM)
        return arr_bad(ps, "too many dimensions");
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return list;
    }
    for (;;) {
        skip_space(ps);
        if (ps->p >= ps->end) {
            arr_bad(ps, "unterminated array");
            goto fail;
        }
        PyObject *item;
        if (*ps->p == '{') {
            ps->p++;
            item = arr_level(ps, depth + 1);
        } else {
            item = arr_element(ps);
        }
        if (!item)
            goto fail;
        int rc = PyList_Append(list, item);
        Py_DECREF(item);
        if (rc < 0)
            goto fail;
        skip_space(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return list;
        }
        arr_bad(ps, "expected ',' or '}'");
        goto fail;
    }
fail:
    Py_DECREF(list);
    return NULL;
}

PyObject *npy_pg_array_parse(const char *v, int len, npy_pg_elem_decoder dec, const char *tname)
{
    arr_parser ps = {v, v, v + len, len, NULL, dec, tname};
    if (ps.p < ps.end && *ps.p == '[') {        /* '[lo:hi][lo:hi]=' bounds */
        const char *eq = memchr(ps.p, '=', (size_t)len);
        if (!eq)
            return arr_bad(&ps, "dimension bounds without '='");
        ps.p = eq + 1;
    }
    skip_space(&ps);
    if (ps.p >= ps.end || *ps.p != '{')
        return arr_bad(&ps, "expected '{'");
    ps.p++;
    ps.buf = malloc((size_t)len + 1);
    if (!ps.buf)
        return PyErr_NoMemory();
    PyObject *r = arr_level(&ps, 1);
    free(ps.buf);
    if (r) {
        skip_space(&ps);
        if (ps.p != ps.end) {
            Py_DECREF(r);
            return arr_bad(&ps, "text after the closing '}'");
        }
    }
    return r;
}

PyObject *npy_pg_vector_parse(const char *v, int len, const char *tname)
{
    arr_parser ps = {v, v, v + len, len, NULL, NULL, tname};
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    for (;;) {
        skip_space(&ps);
        if (ps.p >= ps.end)
            return list;
        long long x = 0;
        int neg = 0, nd = 0;
        if (*ps.p == '-') {
            neg = 1;
            ps.p++;
        }
        while (ps.p < ps.end && *ps.p >= '0' && *ps.p <= '9' && nd < 18) {
            x = x * 10 + (*ps.p++ - '0');
            nd++;
        }
        if (nd == 0 || (ps.p < ps.end && !is_space(*ps.p))) {
            Py_DECREF(list);
            return arr_bad(&ps, "not a list of integers");
        }
        PyObject *n = PyLong_FromLongLong(neg ? -x : x);
        if (!n || PyList_Append(list, n) < 0) {
            Py_XDECREF(n);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(n);
    }
}

/* ---- encoding ----------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
    npy_pg_elem_encoder enc;
    void *ctx;
    unsigned (*merge)(unsigned, unsigned);
    unsigned oid;
    int have_oid;
    int ndim;
    Py_ssize_t shape[NPY_PG_ARRAY_MAXDIM];
    const char *what;
} arr_writer;

static int put(arr_writer *w, const char *s, size_t n)
{
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 64;
        while (w->len + n + 1 > cap) {
            if (cap > ((size_t)-1) / 2) {
                PyErr_NoMemory();
                return -1;
            }
            cap *= 2;
        }
        char *b = realloc(w->buf, cap);
        if (!b) {
            PyErr_NoMemory();
            return -1;
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
    return 0;
}

static int not_rectangular(arr_writer *w)
{
    npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING,
                     "%s: a list sent as a PostgreSQL array must be rectangular (every sub-list of "
                     "a level the same length, values only at the innermost level)", w->what);
    return -1;
}

static int write_leaf(arr_writer *w, PyObject *leaf)
{
    if (leaf == Py_None)
        return put(w, "NULL", 4);
    const char *t;
    Py_ssize_t n;
    unsigned oid;
    if (w->enc(w->ctx, leaf, &t, &n, &oid) < 0)
        return -1;
    if (!w->have_oid) {
        w->oid = oid;
        w->have_oid = 1;
    } else if (oid != w->oid) {
        unsigned m = w->merge(w->oid, oid);
        if (!m) {
            npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING,
                             "%s: the elements of a list sent as a PostgreSQL array must have one "
                             "type (found '%s' after others of another type)", w->what,
                             Py_TYPE(leaf)->tp_name);
            return -1;
        }
        w->oid = m;
    }
    if (put(w, "\"", 1) < 0)
        return -1;
    const char *run = t;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (t[k] == '"' || t[k] == '\\') {
            if (put(w, run, (size_t)(t + k - run)) < 0 || put(w, "\\", 1) < 0)
                return -1;
            run = t + k;
        }
    }
    if (put(w, run, (size_t)(t + n - run)) < 0)
        return -1;
    return put(w, "\"", 1);
}

static int write_level(arr_writer *w, PyObject *list, int depth)
{
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != w->shape[depth])
        return not_rectangular(w);
    if (put(w, "{", 1) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        if (i && put(w, ",", 1) < 0)
            return -1;
        PyObject *item = PyList_GET_ITEM(list, i);
        int rc;
        if (depth + 1 < w->ndim) {
            Py_INCREF(item);            /* the encoder runs Python code that may change list */
            rc = write_level(w, item, depth + 1);
            Py_DECREF(item);
        } else if (PyList_Check(item)) {
            rc = not_rectangular(w);
        } else {
            Py_INCREF(item);
            rc = write_leaf(w, item);
            Py_DECREF(item);
        }
        if (rc < 0)
            return -1;
    }
    return put(w, "}", 1);
}

char *npy_pg_array_format(PyObject *list, npy_pg_elem_encoder enc, void *ctx,
                          unsigned (*merge)(unsigned a, unsigned b),
                          unsigned *elem_oid, Py_ssize_t *len, const char *what)
{
    arr_writer w;
    memset(&w, 0, sizeof w);
    w.enc = enc;
    w.ctx = ctx;
    w.merge = merge;
    w.what = what;
    /* the shape is the first element's at each level; write_level checks
     * that every other sub-list agrees */
    PyObject *o = list;
    while (PyList_Check(o)) {
        if (w.ndim == NPY_PG_ARRAY_MAXDIM) {
            npy_adapt_raisef(NC_E_PARAM_TYPE, NC_K_PROGRAMMING,
                             "%s: a PostgreSQL array has at most %d dimensions", what,
                             NPY_PG_ARRAY_MAXDIM);
            return NULL;
        }
        w.shape[w.ndim++] = PyList_GET_SIZE(o);
        if (PyList_GET_SIZE(o) == 0)
            break;
        o = PyList_GET_ITEM(o, 0);
    }
    int empty = 0;
    for (int d = 0; d < w.ndim; d++)
        empty |= w.shape[d] == 0;
    if (empty) {
        /* PostgreSQL has one empty array, '{}', of any number of dimensions */
        if (w.ndim > 1 && PyList_GET_SIZE(list) > 0) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
                PyObject *s = PyList_GET_ITEM(list, i);
                if (!PyList_Check(s) || PyList_GET_SIZE(s) != 0 || w.shape[1] != 0) {
                    not_rectangular(&w);
                    return NULL;
                }
            }
        }
        if (put(&w, "{}", 2) < 0) {
            free(w.buf);
            return NULL;
        }
    } else if (write_level(&w, list, 0) < 0) {
        free(w.buf);
        return NULL;
    }
    *elem_oid = w.have_oid ? w.oid : 0;
    *len = (Py_ssize_t)w.len;
    return w.buf;
}
