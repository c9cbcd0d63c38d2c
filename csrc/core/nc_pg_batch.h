/* nc_pg_batch.h - the plan of one execute_many pipeline (nc_pg_pipeline.c):
 * which messages go, in which order, and what each result belongs to.
 *
 * The statement is parsed once (into the unnamed statement) and each row
 * only binds and executes it, so the server parses and plans the SQL once
 * per pipeline instead of once per row.  A row whose parameter types differ
 * from those of the last parse gets a parse of its own first: each row runs
 * with exactly the types it would have had alone.  The unnamed statement,
 * parsed again in every pipeline, is what pgbouncer's transaction mode
 * allows (a named one could be missing on the next pipeline's server) and
 * leaves nothing behind in the session for the next borrower. */
#ifndef NC_PG_BATCH_H
#define NC_PG_BATCH_H

#include "nc_pg.h"

typedef enum nc_pgq_kind {
    NC_PGQ_BEFORE,      /* the optional command first (BEGIN) */
    NC_PGQ_PARSE,       /* parse the statement (for row `row` and the rows after it) */
    NC_PGQ_ROW,         /* bind and execute row `row` */
    NC_PGQ_AFTER        /* the optional command last (COMMIT) */
} nc_pgq_kind;

typedef struct nc_pgq {
    nc_pgq_kind kind;
    int row;            /* PARSE, ROW: the row's index; -1 otherwise */
} nc_pgq;

/* The most queries a pipeline of nrows rows can have (every row parsed). */
static inline int nc_pg_batch_max(int nrows)
{
    return 2 * nrows + 2;
}

/* Fill q[0 .. returned) with the queries of a pipeline running rows[0 ..
 * nrows) of a statement with nparams parameters, with before/after when
 * non-zero; q holds nc_pg_batch_max(nrows).  The types of two rows are the
 * same when their Oid arrays are equal (a NULL array: all 0, unknown). */
int nc_pg_batch_plan(const nc_pg_params *rows, int nrows, int nparams, int before, int after, nc_pgq *q);

#endif
