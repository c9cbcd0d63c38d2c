/* nc_pg_batch.c - the plan of one execute_many pipeline (see nc_pg_batch.h). */
#include "nc_pg_batch.h"

static int same_types(const Oid *a, const Oid *b, int n)
{
    if (a == b)
        return 1;
    for (int i = 0; i < n; i++)
        if ((a ? a[i] : 0) != (b ? b[i] : 0))
            return 0;
    return 1;
}

int nc_pg_batch_plan(const nc_pg_params *rows, int nrows, int nparams, int before, int after, nc_pgq *q)
{
    int n = 0;
    if (before)
        q[n++] = (nc_pgq){NC_PGQ_BEFORE, -1};
    const Oid *parsed = NULL;
    for (int i = 0; i < nrows; i++) {
        if (i == 0 || !same_types(parsed, rows[i].types, nparams)) {
            q[n++] = (nc_pgq){NC_PGQ_PARSE, i};
            parsed = rows[i].types;
        }
        q[n++] = (nc_pgq){NC_PGQ_ROW, i};
    }
    if (after)
        q[n++] = (nc_pgq){NC_PGQ_AFTER, -1};
    return n;
}
