/* test_types.c - PEP 249's type categories (csrc/core/nc_types.c). */
#include "nc_types.h"
#include "check.h"

#include <string.h>

static int is(const char *name, int cat)
{
    const char *n = nc_type_category_name(cat);
    return name ? n && strcmp(n, name) == 0 : n == NULL;
}

static void test_pg_oids(void)
{
    CHECK(is("STRING", nc_type_category_pg(25)), "text");
    CHECK(is("STRING", nc_type_category_pg(1043)), "varchar");
    CHECK(is("STRING", nc_type_category_pg(1042)), "bpchar");
    CHECK(is("BINARY", nc_type_category_pg(17)), "bytea");
    CHECK(is("NUMBER", nc_type_category_pg(23)), "int4");
    CHECK(is("NUMBER", nc_type_category_pg(20)), "int8");
    CHECK(is("NUMBER", nc_type_category_pg(1700)), "numeric");
    CHECK(is("NUMBER", nc_type_category_pg(701)), "float8");
    CHECK(is("DATETIME", nc_type_category_pg(1184)), "timestamptz");
    CHECK(is("DATETIME", nc_type_category_pg(1082)), "date");
    CHECK(is("DATETIME", nc_type_category_pg(1186)), "interval");
    CHECK(is("ROWID", nc_type_category_pg(26)), "oid");
    CHECK(is(NULL, nc_type_category_pg(16)), "bool is none of them");
    CHECK(is(NULL, nc_type_category_pg(3802)), "jsonb is none of them");
    CHECK(is(NULL, nc_type_category_pg(0)), "no type");
}

static void test_sqlite_decltypes(void)
{
    CHECK(is("NUMBER", nc_type_category_sqlite("INTEGER")), "INTEGER");
    CHECK(is("NUMBER", nc_type_category_sqlite("bigint")), "lower case");
    CHECK(is("NUMBER", nc_type_category_sqlite("POINT")), "INT inside a word wins, as in SQLite");
    CHECK(is("STRING", nc_type_category_sqlite("VARCHAR(20)")), "VARCHAR(20)");
    CHECK(is("STRING", nc_type_category_sqlite("text")), "text");
    CHECK(is("STRING", nc_type_category_sqlite("CLOB")), "CLOB");
    CHECK(is("BINARY", nc_type_category_sqlite("BLOB")), "BLOB");
    CHECK(is("BINARY", nc_type_category_sqlite("")), "declared without a type");
    CHECK(is("NUMBER", nc_type_category_sqlite("DOUBLE PRECISION")), "DOUBLE");
    CHECK(is("NUMBER", nc_type_category_sqlite("REAL")), "REAL");
    CHECK(is("DATETIME", nc_type_category_sqlite("TIMESTAMP")), "TIMESTAMP");
    CHECK(is("DATETIME", nc_type_category_sqlite("date")), "date");
    CHECK(is("DATETIME", nc_type_category_sqlite("DATETIME")), "DATETIME");
    CHECK(is("NUMBER", nc_type_category_sqlite("DECIMAL(10,2)")), "NUMERIC affinity");
    CHECK(is("NUMBER", nc_type_category_sqlite("BOOLEAN")), "NUMERIC affinity");
    CHECK(is(NULL, nc_type_category_sqlite(NULL)), "an expression has no declared type");
}

static void test_names(void)
{
    CHECK(nc_type_category_name(NC_TYPE_UNKNOWN) == NULL, "unknown has no name");
    CHECK(nc_type_category_name(99) == NULL, "out of range");
    CHECK(is("ROWID", NC_TYPE_ROWID), "ROWID");
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"pg_oids", test_pg_oids},
        {"sqlite_decltypes", test_sqlite_decltypes},
        {"names", test_names},
    };
    return nc_run_cases("test_types", cases, NC_NCASES(cases));
}
