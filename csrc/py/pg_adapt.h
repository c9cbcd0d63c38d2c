/* pg_adapt.h - Python values to PostgreSQL parameters and PostgreSQL text
 * results to Python values.  Parameters go as text (bytes as binary bytea)
 * with the type OID the Python type implies; results come back as text and
 * are decoded by the column's type OID. */
#ifndef NPY_PG_ADAPT_H
#define NPY_PG_ADAPT_H

#include "adapt.h"
#include <libpq-fe.h>

typedef struct npy_pg_params {
    int n;
    Oid *types;
    const char **values;    /* NULL entry = SQL NULL */
    int *lengths;
    int *formats;           /* 0 text, 1 binary */
    PyObject **keep;        /* objects owning the buffers values[] point into (n entries, may be NULL) */
    char **owned;           /* malloc'd buffers to free (n entries, may be NULL) */
} npy_pg_params;

/* Allocate room for n parameters.  -1 with MemoryError set. */
int npy_pg_params_init(npy_pg_params *pp, int n);
/* Convert value for slot i (0-based).  what names the parameter in an error
 * message.  -1 with ProgrammingError (2015, unsupported type) or another
 * exception set. */
int npy_pg_params_set(npy_pg_params *pp, int i, PyObject *value, const char *what);
void npy_pg_params_free(npy_pg_params *pp);

/* Decodes one non-NULL text value of a column.  New reference, or NULL with
 * DataError (2018) set. */
typedef PyObject *(*npy_pg_decoder)(const char *value, int len);
/* The decoder for a type OID (unknown types decode to str).  Never NULL. */
npy_pg_decoder npy_pg_decoder_for(Oid type);

#endif
