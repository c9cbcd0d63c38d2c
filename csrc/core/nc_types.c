/* nc_types.c - PEP 249's type categories (see nc_types.h). */
#include "nc_types.h"

#include <stddef.h>

/* PostgreSQL's built-in OIDs (pg_type.dat), grouped as psycopg2 groups them
 * (its STRING, BINARY, NUMBER, DATETIME, ROWID) plus interval as a date and
 * time type. */
static const struct {
    unsigned oid;
    int cat;
} pg_types[] = {
    {18, NC_TYPE_STRING},   /* "char" */
    {19, NC_TYPE_STRING},   /* name */
    {25, NC_TYPE_STRING},   /* text */
    {1042, NC_TYPE_STRING}, /* bpchar */
    {1043, NC_TYPE_STRING}, /* varchar */
    {17, NC_TYPE_BINARY},   /* bytea */
    {20, NC_TYPE_NUMBER},   /* int8 */
    {21, NC_TYPE_NUMBER},   /* int2 */
    {23, NC_TYPE_NUMBER},   /* int4 */
    {700, NC_TYPE_NUMBER},  /* float4 */
    {701, NC_TYPE_NUMBER},  /* float8 */
    {790, NC_TYPE_NUMBER},  /* money */
    {1700, NC_TYPE_NUMBER}, /* numeric */
    {1082, NC_TYPE_DATETIME},   /* date */
    {1083, NC_TYPE_DATETIME},   /* time */
    {1114, NC_TYPE_DATETIME},   /* timestamp */
    {1184, NC_TYPE_DATETIME},   /* timestamptz */
    {1186, NC_TYPE_DATETIME},   /* interval */
    {1266, NC_TYPE_DATETIME},   /* timetz */
    {26, NC_TYPE_ROWID},    /* oid */
};

int nc_type_category_pg(unsigned oid)
{
    for (size_t i = 0; i < sizeof pg_types / sizeof pg_types[0]; i++)
        if (pg_types[i].oid == oid)
            return pg_types[i].cat;
    return NC_TYPE_UNKNOWN;
}

static int upper(int c)
{
    return c >= 'a' && c <= 'z' ? c - ('a' - 'A') : c;
}

/* word (upper case ASCII) occurs in s, ignoring ASCII case. */
static int has(const char *s, const char *word)
{
    for (; *s; s++) {
        size_t i = 0;
        while (word[i] && s[i] && upper((unsigned char)s[i]) == word[i])
            i++;
        if (!word[i])
            return 1;
    }
    return 0;
}

int nc_type_category_sqlite(const char *decl)
{
    if (!decl)
        return NC_TYPE_UNKNOWN;
    /* SQLite's affinity rules, in its order. */
    if (has(decl, "INT"))
        return NC_TYPE_NUMBER;
    if (has(decl, "CHAR") || has(decl, "CLOB") || has(decl, "TEXT"))
        return NC_TYPE_STRING;
    if (has(decl, "BLOB") || !*decl)
        return NC_TYPE_BINARY;
    if (has(decl, "REAL") || has(decl, "FLOA") || has(decl, "DOUB"))
        return NC_TYPE_NUMBER;
    /* NUMERIC affinity: dates and times are stored there too. */
    if (has(decl, "DATE") || has(decl, "TIME"))
        return NC_TYPE_DATETIME;
    return NC_TYPE_NUMBER;
}

const char *nc_type_category_name(int cat)
{
    switch (cat) {
    case NC_TYPE_STRING:
        return "STRING";
    case NC_TYPE_BINARY:
        return "BINARY";
    case NC_TYPE_NUMBER:
        return "NUMBER";
    case NC_TYPE_DATETIME:
        return "DATETIME";
    case NC_TYPE_ROWID:
        return "ROWID";
    default:
        return NULL;
    }
}
