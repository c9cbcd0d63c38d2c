/* test_pg_batch.c - unit tests for csrc/core/nc_pg_batch.c: the plan of an
 * execute_many pipeline (one parse, then a bind and execute per row; a parse
 * again only where a row's parameter types change; the failed query's row). */
#include "nc_pg_batch.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"

#define INT4 23
#define INT8 20
#define FLOAT8 701

/* rows[i] with types t[i * n .. (i + 1) * n) */
static void make_rows(nc_pg_params *rows, const Oid *t, int nrows, int n)
{
    for (int i = 0; i < nrows; i++)
        rows[i] = (nc_pg_params){n ? t + i * n : NULL, NULL, NULL, NULL};
}

/* The plan as a string: B (before), P<row> (parse), R<row>, A (after). */
static const char *plan_text(const nc_pg_params *rows, int nrows, int n, int before, int after)
{
    static char out[512];
    nc_pgq *q = malloc(sizeof *q * (size_t)nc_pg_batch_max(nrows));
    int nq = nc_pg_batch_plan(rows, nrows, n, before, after, q);
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < nq && len < sizeof out - 16; i++) {
        const char *k = q[i].kind == NC_PGQ_BEFORE ? "B" : q[i].kind == NC_PGQ_PARSE ? "P"
                      : q[i].kind == NC_PGQ_ROW ? "R" : "A";
        len += (size_t)(q[i].row >= 0 ? snprintf(out + len, sizeof out - len, "%s%s%d", i ? " " : "", k, q[i].row)
                                      : snprintf(out + len, sizeof out - len, "%s%s", i ? " " : "", k));
    }
    CHECK(nq <= nc_pg_batch_max(nrows), "%d queries fit the %d planned for", nq, nc_pg_batch_max(nrows));
    free(q);
    return out;
}

static void test_parsed_once_for_rows_of_the_same_types(void)
{
    Oid t[] = {INT4, 0, INT4, 0, INT4, 0};
    nc_pg_params rows[3];
    make_rows(rows, t, 3, 2);
    const char *p = plan_text(rows, 3, 2, 0, 0);
    CHECK(!strcmp(p, "P0 R0 R1 R2"), "one parse, three rows: %s", p);
    p = plan_text(rows, 3, 2, 1, 1);
    CHECK(!strcmp(p, "B P0 R0 R1 R2 A"), "BEGIN and COMMIT around it: %s", p);
    p = plan_text(rows, 3, 2, 1, 0);
    CHECK(!strcmp(p, "B P0 R0 R1 R2"), "the first pipeline of several: %s", p);
    p = plan_text(rows, 0, 2, 0, 1);
    CHECK(!strcmp(p, "A"), "the last pipeline may carry only the COMMIT: %s", p);
    p = plan_text(rows, 0, 2, 0, 0);
    CHECK(!strcmp(p, ""), "nothing: %s", p);
}

static void test_a_type_change_parses_again(void)
{
    /* int4, then int8 (a larger value), back to int4, then a float: each
     * row must run with its own types, as it would alone */
    Oid t[] = {INT4, INT8, INT8, INT4, FLOAT8, FLOAT8};
    nc_pg_params rows[6];
    make_rows(rows, t, 6, 1);
    const char *p = plan_text(rows, 6, 1, 1, 1);
    CHECK(!strcmp(p, "B P0 R0 P1 R1 R2 P3 R3 P4 R4 R5 A"), "a parse where the types change: %s", p);
    /* equal arrays, not the same array: one parse; a NULL (unknown, 0) is a type
     * of its own: the row gets the types it would have alone */
    Oid u[] = {INT4, 0, INT4, 0, INT4, 0};
    make_rows(rows, u, 3, 2);
    p = plan_text(rows, 3, 2, 0, 0);
    CHECK(!strcmp(p, "P0 R0 R1 R2"), "the same types, same array contents: %s", p);
    Oid v[] = {INT4, 0, 0, 0, INT4, 0};
    make_rows(rows, v, 3, 2);
    p = plan_text(rows, 3, 2, 0, 0);
    CHECK(!strcmp(p, "P0 R0 P1 R1 P2 R2"), "unknown against int4 differs both ways: %s", p);
}

static void test_rows_without_parameters(void)
{
    nc_pg_params rows[3];
    make_rows(rows, NULL, 3, 0);
    const char *p = plan_text(rows, 3, 0, 0, 0);
    CHECK(!strcmp(p, "P0 R0 R1 R2"), "no parameters, no types: %s", p);
    /* a NULL types array reads as all unknown */
    Oid z[] = {0, 0};
    rows[0] = (nc_pg_params){NULL, NULL, NULL, NULL};
    rows[1] = (nc_pg_params){z, NULL, NULL, NULL};
    rows[2] = (nc_pg_params){NULL, NULL, NULL, NULL};
    p = plan_text(rows, 3, 2, 0, 0);
    CHECK(!strcmp(p, "P0 R0 R1 R2"), "NULL types and all-zero types are the same: %s", p);
}

static void test_a_long_batch_alternating_types(void)
{
    enum { N = 1000 };
    Oid *t = malloc(sizeof(Oid) * N);
    nc_pg_params *rows = malloc(sizeof *rows * N);
    for (int i = 0; i < N; i++)
        t[i] = i % 2 ? INT8 : INT4;
    make_rows(rows, t, N, 1);
    nc_pgq *q = malloc(sizeof *q * (size_t)nc_pg_batch_max(N));
    int nq = nc_pg_batch_plan(rows, N, 1, 1, 1, q);
    CHECK(nq == nc_pg_batch_max(N), "every row parsed: %d of %d", nq, nc_pg_batch_max(N));
    int in_order = q[0].kind == NC_PGQ_BEFORE && q[nq - 1].kind == NC_PGQ_AFTER;
    for (int i = 0; i < N; i++)
        in_order &= q[1 + 2 * i].kind == NC_PGQ_PARSE && q[1 + 2 * i].row == i &&
                    q[2 + 2 * i].kind == NC_PGQ_ROW && q[2 + 2 * i].row == i;
    CHECK(in_order, "parse i, row i, in order");
    free(q);
    free(rows);
    free(t);
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"parsed_once_same_types", test_parsed_once_for_rows_of_the_same_types},
        {"type_change_parses_again", test_a_type_change_parses_again},
        {"rows_without_parameters", test_rows_without_parameters},
        {"long_batch_alternating", test_a_long_batch_alternating_types},
    };
    return nc_run_cases("test_pg_batch", cases, NC_NCASES(cases));
}
