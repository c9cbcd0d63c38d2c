/* options.h - reading a dict of options into a C struct, one way for every
 * type: a table says each option's name, type and field, the defaults are
 * what the struct holds before reading, and a bad value is a
 * ConfigurationError (2013) naming the option (never a silent default).
 * The same table exports the defaults to Python, so they are written once
 * (in the core's *_defaults functions). */
#ifndef NPY_OPTIONS_H
#define NPY_OPTIONS_H

#include <stddef.h>
#include "state.h"

enum npy_opt_type {
    NPY_OPT_INT,
    NPY_OPT_DOUBLE,
    NPY_OPT_BOOL,       /* int field, 0/1 */
    NPY_OPT_SECONDS,    /* double field, None (and a negative default) means "none" */
    NPY_OPT_NAME        /* int field, given as a name: from_name/to_name convert */
};

typedef struct npy_option {
    const char *name;   /* the Python option / field name */
    int type;           /* enum npy_opt_type */
    size_t offset;      /* of the field in the struct */
    int (*from_name)(const char *);   /* NPY_OPT_NAME: -1 for an unknown name */
    const char *(*to_name)(int);
} npy_option;

/* Read every option of opts present in dict into base.  Unknown keys are
 * ignored (Python validated them).  -1 with ConfigurationError naming
 * "<what> option '<name>'" on a value of the wrong type. */
int npy_options_read(PyObject *dict, const npy_option *opts, void *base, const char *what);

/* {name: value} of base's fields, for the defaults Python shows. */
PyObject *npy_options_export(const npy_option *opts, const void *base);

#endif
