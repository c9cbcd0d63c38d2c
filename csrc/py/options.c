/* options.c - option tables (see options.h). */
#include "options.h"
#include "errors.h"

#include <string.h>

static int bad(const npy_option *o, const char *what, const char *want, PyObject *v)
{
    PyErr_Clear();
    npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL, "%s option '%s' must be %s, not %s", what, o->name, want,
              Py_TYPE(v)->tp_name);
    return -1;
}

int npy_options_read(PyObject *dict, const npy_option *opts, void *base, const char *what)
{
    for (const npy_option *o = opts; o->name; o++) {
        PyObject *v = PyDict_GetItemString(dict, o->name);   /* borrowed */
        if (!v)
            continue;
        char *field = (char *)base + o->offset;
        switch (o->type) {
        case NPY_OPT_INT: {
            if (PyBool_Check(v) || !PyLong_Check(v))
                return bad(o, what, "an integer", v);
            /* Checked, never cut: 2**32 + 3 must not become 3. */
            int overflow = 0;
            long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow || (x == -1 && PyErr_Occurred()) || x < -2147483647LL || x > 2147483647LL) {
                PyErr_Clear();
                npy_raise(NC_E_CONFIG, NC_K_INTERFACE, NULL,
                          "%s option '%s' must be an integer from -2147483647 to 2147483647, not %s", what,
                          o->name, overflow > 0 || x > 0 ? "a larger one" : "a smaller one");
                return -1;
            }
            *(int *)field = (int)x;
            break;
        }
        case NPY_OPT_SECONDS:
            if (v == Py_None) {
                *(double *)field = -1.0;
                break;
            }
            /* fall through */
        case NPY_OPT_DOUBLE: {
            if (PyBool_Check(v) || !(PyLong_Check(v) || PyFloat_Check(v)))
                return bad(o, what, "a number", v);
            double x = PyFloat_AsDouble(v);
            if (x == -1.0 && PyErr_Occurred())
                return bad(o, what, "a number in range", v);
            *(double *)field = x;
            break;
        }
        case NPY_OPT_BOOL: {
            if (!PyBool_Check(v))
                return bad(o, what, "True or False", v);
            *(int *)field = v == Py_True;
            break;
        }
        case NPY_OPT_NAME: {
            const char *s = PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
            int x = s ? o->from_name(s) : -1;
            if (x < 0)
                return bad(o, what, "one of its names", v);
            *(int *)field = x;
            break;
        }
        }
    }
    return 0;
}

PyObject *npy_options_export(const npy_option *opts, const void *base)
{
    PyObject *d = PyDict_New();
    for (const npy_option *o = opts; d && o->name; o++) {
        const char *field = (const char *)base + o->offset;
        PyObject *v = NULL;
        switch (o->type) {
        case NPY_OPT_INT:
            v = PyLong_FromLong(*(const int *)field);
            break;
        case NPY_OPT_SECONDS:
            v = *(const double *)field < 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble(*(const double *)field);
            break;
        case NPY_OPT_DOUBLE:
            v = PyFloat_FromDouble(*(const double *)field);
            break;
        case NPY_OPT_BOOL:
            v = PyBool_FromLong(*(const int *)field);
            break;
        case NPY_OPT_NAME:
            v = PyUnicode_FromString(o->to_name(*(const int *)field));
            break;
        }
        if (!v || PyDict_SetItemString(d, o->name, v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
        } else {
            Py_DECREF(v);
        }
    }
    return d;
}
