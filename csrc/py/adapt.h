/* adapt.h - converting values between Python and the two backends.
 *
 * PostgreSQL: parameters go as text (bytes as binary bytea) with an explicit
 * type OID where the Python type implies one; results come back as text and
 * are decoded by the column's type OID.  SQLite: its own storage classes.
 */
#ifndef NC_PY_ADAPT_H
#define NC_PY_ADAPT_H

#include "module.h"
#include <libpq-fe.h>
#include <sqlite3.h>

/* ---- PostgreSQL parameters ------------------------------------------- */

typedef struct nc_pg_params {
    int n;
    Oid *types;
    const char **values;    /* NULL entry = SQL NULL */
    int *lengths;
    int *formats;           /* 0 text, 1 binary */
    PyObject **keep;        /* objects owning the buffers values[] point into (n entries, may be NULL) */
    char **owned;           /* malloc'd buffers to free (n entries, may be NULL) */
} nc_pg_params;

/* Allocate room for n parameters.  -1 with MemoryError set. */
int nc_pg_params_init(nc_pg_params *pp, int n);

/* Convert value for slot i (0-based).  what names the parameter in an error
 * message ("parameter 2", "parameter 'name'").  -1 with ProgrammingError
 * (code 2015, unsupported type) or another exception set. */
int nc_pg_params_set(nc_pg_params *pp, int i, PyObject *value, const char *what);

void nc_pg_params_free(nc_pg_params *pp);

/* ---- PostgreSQL results ---------------------------------------------- */

/* Decodes one non-NULL text value of a column. New reference or NULL with
 * DataError (code 2018) set. */
typedef PyObject *(*nc_pg_decoder)(const char *value, int len);

/* The decoder for a type OID (unknown types decode to str). Never NULL. */
nc_pg_decoder nc_pg_decoder_for(Oid type);

/* ---- SQLite ------------------------------------------------------------ */

/* Bind value to parameter i (1-based) of stmt.  -1 with ProgrammingError
 * (2015) for an unsupported type, or another exception. */
int nc_sqlite_bind(sqlite3_stmt *stmt, int i, PyObject *value, const char *what);

/* Initialise caches (Decimal, UUID, json, datetime C API). -1 on error. */
int nc_adapt_init(void);

#endif
