/* nc_types.h - PEP 249's type categories: which column types are STRING,
 * BINARY, NUMBER, DATETIME or ROWID.
 *
 * The one copy of that table.  A PostgreSQL column is known by its type OID
 * (what the DB-API description's type code is); a SQLite column by its
 * declared type (sqlite3_column_decltype), read with SQLite's own affinity
 * rules (https://sqlite.org/datatype3.html, 3.1) plus date and time names.
 * The binding exports nc_type_category as _native.type_category, and
 * noodlecore.dbapi's type objects compare through it.
 */
#ifndef NC_TYPES_H
#define NC_TYPES_H

enum nc_type_cat {
    NC_TYPE_UNKNOWN = 0,    /* none of the five (bool, json, uuid, ...; an expression in SQLite) */
    NC_TYPE_STRING,
    NC_TYPE_BINARY,
    NC_TYPE_NUMBER,
    NC_TYPE_DATETIME,
    NC_TYPE_ROWID
};

/* The category of PostgreSQL type OID oid. */
int nc_type_category_pg(unsigned oid);

/* The category of a SQLite declared type (NUL-terminated; NULL, as SQLite
 * gives for an expression, is UNKNOWN).  In order: a name with INT is
 * NUMBER; with CHAR, CLOB or TEXT STRING; with BLOB, or empty, BINARY; with
 * REAL, FLOA or DOUB NUMBER; with DATE or TIME DATETIME; anything else
 * (NUMERIC affinity: DECIMAL, BOOLEAN ...) NUMBER.  Case-insensitive. */
int nc_type_category_sqlite(const char *decltype);

/* "STRING", ... for a category, NULL for UNKNOWN or an unknown value. */
const char *nc_type_category_name(int cat);

#endif
