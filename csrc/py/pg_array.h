/* pg_array.h - the text syntax of PostgreSQL arrays ('{1,NULL,"a\"b"}',
 * '{{1,2},{3,4}}', '[0:1]={7,8}') and of int2vector/oidvector ('1 2 3'),
 * both ways.  Which type an element has and how it is converted is
 * pg_adapt.c's business: it passes the element converters in. */
#ifndef NPY_PG_ARRAY_H
#define NPY_PG_ARRAY_H

#include "adapt.h"

/* PostgreSQL's MAXDIM */
#define NPY_PG_ARRAY_MAXDIM 6

/* Decodes one element's text (NUL-terminated, unescaped).  New reference or
 * NULL with an exception set. */
typedef PyObject *(*npy_pg_elem_decoder)(const char *value, int len);

/* The array text v (len bytes) as nested lists of elements decoded by dec;
 * unquoted NULL is None; dimension decorations (lower bounds) are dropped.
 * tname names the array type in a DataError (2018). */
PyObject *npy_pg_array_parse(const char *v, int len, npy_pg_elem_decoder dec, const char *tname);

/* int2vector / oidvector text: space-separated integers -> list of int. */
PyObject *npy_pg_vector_parse(const char *v, int len, const char *tname);

/* Writes one non-None leaf: *text and *len its text form (valid until the next
 * call), *oid its element type.  0 ok, -1 with an exception set. */
typedef int (*npy_pg_elem_encoder)(void *ctx, PyObject *leaf, const char **text, Py_ssize_t *len,
                                   unsigned *oid);

/* list (nested lists for more dimensions, rectangular) -> array text, a new
 * malloc'd NUL-terminated string (*len without the NUL); every element is
 * quoted.  *elem_oid gets the element type every non-None leaf agreed on (0
 * when there is none: all None or empty).  Types that disagree are merged
 * by merge(a, b) (returns the merged OID or 0 for "cannot"); what names
 * the parameter in a ProgrammingError (2015). */
char *npy_pg_array_format(PyObject *list, npy_pg_elem_encoder enc, void *ctx,
                          unsigned (*merge)(unsigned a, unsigned b),
                          unsigned *elem_oid, Py_ssize_t *len, const char *what);

#endif
