/* nc_pg_pipeline.c - one statement run once per parameter set in a single
 * round trip, with libpq's pipeline mode (see nc_pg.h, nc_pg_exec_many).
 *
 * The statement is parsed once into the unnamed statement (again only for
 * a row whose parameter types differ: nc_pg_batch.c plans which), each row
 * binds and executes it (PQsendQueryPrepared), then one Sync; everything
 * is sent (reading what comes back meanwhile, so neither side blocks on a
 * full socket buffer), then the results are read in order under the same
 * deadline, cancel and stop check as nc_pg_exec (nc_pg_waiter).  After an
 * error the server skips the statements up to the Sync (libpq reports them
 * as PIPELINE_ABORTED): the first error is the batch's, with the index of
 * its row (a failed parse is the row's it was sent for).  Inside a
 * transaction block the failed transaction is the caller's to roll back;
 * the optional before/after commands (BEGIN/COMMIT) travel in the same
 * pipeline, so a batch with its own transaction is still one round trip.
 * nc_pg_exec_begin is the same for PEP 249's implicit BEGIN and the
 * statement that opens the transaction.  libpq without pipeline mode
 * (before 14) runs the statements one after the other instead.
 */
#include "nc_pg.h"
#include "nc_pg_batch.h"
#include "nc_pg_internal.h"

#include <stdlib.h>
#include <string.h>

#ifdef LIBPQ_HAS_PIPELINING

/* Queue one planned query. */
static int send_query(nc_pg_conn *c, const nc_pgq *q, const char *sql, int nparams, const nc_pg_params *rows,
                      const char *before, const char *after)
{
    switch (q->kind) {
    case NC_PGQ_BEFORE:
        return PQsendQueryParams(c->pg, before, 0, NULL, NULL, NULL, NULL, 0);
    case NC_PGQ_AFTER:
        return PQsendQueryParams(c->pg, after, 0, NULL, NULL, NULL, NULL, 0);
    case NC_PGQ_PARSE:
        return PQsendPrepare(c->pg, "", sql, nparams, rows[q->row].types);
    case NC_PGQ_ROW:
    default: {
        const nc_pg_params *p = &rows[q->row];
        return PQsendQueryPrepared(c->pg, "", nparams, p->values, p->lengths, p->formats, 0);
    }
    }
}

/* The next result of pipeline query q for the caller to keep or clear.
 * NULL at the end of q's results (*st 0) or on failure: *st -1 when the
 * wait failed (err set by the waiter), -2 on COPY (refused: the connection
 * is discarded, err set).  An error result is not returned: the first one
 * is kept in *error (its query in *error_q), later ones are dropped. */
static PGresult *next_result(nc_pg_conn *c, nc_pg_waiter *wt, int q, PGresult **error, int *error_q,
                             const char *via, int *st, nc_error *err)
{
    for (;;) {
        *st = nc_pg_waiter_ready(c, wt, err) < 0 ? -1 : 0;
        if (*st < 0)
            return NULL;
        PGresult *r = PQgetResult(c->pg);
        if (!r)
            return NULL;                        /* this query's results end */
        ExecStatusType rs = PQresultStatus(r);
        if (rs == PGRES_FATAL_ERROR || rs == PGRES_BAD_RESPONSE || rs == PGRES_NONFATAL_ERROR) {
            if (!*error) {
                *error = r;
                *error_q = q;
            } else {
                PQclear(r);
            }
        } else if (rs == PGRES_COPY_IN || rs == PGRES_COPY_OUT || rs == PGRES_COPY_BOTH) {
            PQclear(r);
            nc_pg_give_up(c, "a COPY it could not run (refused mid-protocol)");
            nc_pg_waiter_abandon(wt);
            nc_error_set(err, NC_E_NOT_SUPPORTED, NC_K_NOT_SUPPORTED, "COPY is not supported through %s", via);
            err->sent = NC_SENT_YES;
            *st = -2;
            return NULL;
        } else {
            return r;
        }
    }
}

/* After the last query, the Sync's own result ends the pipeline: 1 when it
 * did, 0 when out of step with the server (the connection is marked broken:
 * discard), -1 when the wait failed (err set). */
static int read_sync(nc_pg_conn *c, nc_pg_waiter *wt, nc_error *err)
{
    if (nc_pg_waiter_ready(c, wt, err) < 0)
        return -1;
    PGresult *sync = PQgetResult(c->pg);
    int synced = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced || !PQexitPipelineMode(c->pg))
        c->broken = 1;
    return synced;
}

long long nc_pg_exec_many(nc_pg_conn *c, const char *sql, int nparams, const nc_pg_params *rows, int nrows,
                          const char *before, const char *after, double deadline, int *failed, nc_error *err)
{
    *failed = -1;
    if (nc_pg_settle(c, deadline, err) < 0 || nc_pg_usable(c, err) < 0)
        return -1;
    if (nrows == 0 && !before && !after)
        return 0;
    nc_pgq *plan = malloc(sizeof *plan * (size_t)nc_pg_batch_max(nrows));
    if (!plan) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory planning the batch");
        err->sent = NC_SENT_NO;
        return -1;
    }
    int nq = nc_pg_batch_plan(rows, nrows, nparams, before != NULL, after != NULL, plan);
    if (!PQenterPipelineMode(c->pg)) {
        free(plan);
        nc_pg_conn_error(err, NC_E_QUERY, c->pg, "cannot enter pipeline mode");
        err->kind = NC_K_INTERNAL;
        err->sent = NC_SENT_NO;
        return -1;
    }
    /* Queue everything.  libpq may already send part of it (it flushes a
     * full buffer): a failure here leaves an unknown part on the wire. */
    int ok = 1;
    for (int q = 0; ok && q < nq; q++)
        ok = send_query(c, &plan[q], sql, nparams, rows, before, after);
    if (ok)
        ok = PQpipelineSync(c->pg);
    if (!ok) {
        free(plan);
        c->broken = 1;
        nc_pg_conn_error(err, PQstatus(c->pg) == CONNECTION_OK ? NC_E_QUERY : NC_E_CONNECTION, c->pg,
                         "queueing the batch");
        return -1;
    }
    if (nc_pg_flush(c, deadline, err) < 0) {
        free(plan);
        return -1;
    }

    nc_pg_waiter wt;
    nc_pg_waiter_init(&wt, deadline, 1);
    PGresult *error = NULL;
    int error_q = -1;
    long long total = 0;
    for (int q = 0; q < nq; q++) {
        PGresult *r;
        int st;
        while ((r = next_result(c, &wt, q, &error, &error_q, "execute_many", &st, err))) {
            ExecStatusType rs = PQresultStatus(r);
            if (plan[q].kind == NC_PGQ_ROW && (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK)) {
                const char *n = PQcmdTuples(r);
                if (n && *n)
                    total += strtoll(n, NULL, 10);
            }
            PQclear(r);                         /* rows of a SELECT, PIPELINE_ABORTED */
        }
        if (st < 0)
            goto lost;
    }
    int synced = read_sync(c, &wt, err);
    if (synced < 0)
        goto lost;
    if (nc_pg_waiter_end(c, &wt, error, err) < 0) {
        PQclear(error);
        if (error_q >= 0 && (plan[error_q].kind == NC_PGQ_ROW || plan[error_q].kind == NC_PGQ_PARSE)) {
            *failed = plan[error_q].row;
            nc_error_prefix(err, "row %d of the batch", *failed);
        } else {
            nc_error_prefix(err, "%s", error_q >= 0 && plan[error_q].kind == NC_PGQ_BEFORE ? before : after);
        }
        free(plan);
        err->sent = NC_SENT_YES;
        return -1;
    }
    free(plan);
    if (!synced) {
        nc_pg_conn_error(err, NC_E_CONNECTION, c->pg, "the batch did not end as expected; connection discarded");
        err->sent = NC_SENT_YES;
        return -1;
    }
    return total;
lost:
    PQclear(error);
    free(plan);
    err->sent = NC_SENT_YES;
    return -1;
}

/* nc_pg_exec_begin: first (BEGIN) and the statement queued, one Sync, so one
 * round trip.  The statement's results are query 1's (the last kept);
 * PIPELINE_ABORTED (first failed, so the server skipped the statement) is
 * none. */
PGresult *nc_pg_exec_begin(nc_pg_conn *c, const char *first, const char *sql, int nparams, const Oid *types,
                           const char *const *values, const int *lengths, const int *formats, double deadline,
                           nc_error *err)
{
    if (nparams > 65535) {
        /* libpq refuses it before sending anything: that refusal (a
         * ProgrammingError, the connection kept) is nc_pg_exec's to give */
        if (nc_pg_command(c, first, deadline, err) < 0)
            return NULL;
        return nc_pg_exec(c, sql, nparams, types, values, lengths, formats, deadline, err);
    }
    if (nc_pg_settle(c, deadline, err) < 0 || nc_pg_usable(c, err) < 0)
        return NULL;
    if (!PQenterPipelineMode(c->pg)) {
        nc_pg_conn_error(err, NC_E_QUERY, c->pg, "cannot enter pipeline mode");
        err->kind = NC_K_INTERNAL;
        err->sent = NC_SENT_NO;
        return NULL;
    }
    int ok = PQsendQueryParams(c->pg, first, 0, NULL, NULL, NULL, NULL, 0)
             && PQsendQueryParams(c->pg, sql, nparams, types, values, lengths, formats, 0)
             && PQpipelineSync(c->pg);
    if (!ok) {
        /* libpq may have sent part of it (a full buffer is flushed) */
        c->broken = 1;
        nc_pg_conn_error(err, PQstatus(c->pg) == CONNECTION_OK ? NC_E_QUERY : NC_E_CONNECTION, c->pg,
                         "queueing the statement");
        return NULL;
    }
    if (nc_pg_flush(c, deadline, err) < 0)
        return NULL;   /* partly written, maybe: unknown */

    nc_pg_waiter wt;
    nc_pg_waiter_init(&wt, deadline, 1);
    PGresult *keep = NULL, *error = NULL;
    int error_q = -1;
    for (int q = 0; q < 2; q++) {
        PGresult *r;
        int st;
        while ((r = next_result(c, &wt, q, &error, &error_q, "execute_query", &st, err))) {
            if (q == 1 && PQresultStatus(r) != PGRES_PIPELINE_ABORTED) {
                PQclear(keep);
                keep = r;
            } else {
                PQclear(r);                     /* BEGIN's, or the skipped statement's */
            }
        }
        if (st < 0)
            goto lost;
    }
    int synced = read_sync(c, &wt, err);
    if (synced < 0)
        goto lost;
    if (nc_pg_waiter_end(c, &wt, error, err) < 0) {
        PQclear(error);
        PQclear(keep);
        if (error_q == 0)
            nc_error_prefix(err, "%s", first);
        err->sent = NC_SENT_YES;
        return NULL;
    }
    if (!synced || !keep) {
        PQclear(keep);
        if (c->broken || PQstatus(c->pg) != CONNECTION_OK)
            nc_pg_conn_error(err, NC_E_CONNECTION, c->pg, "the statement did not end as expected; "
                             "connection discarded");
        else
            nc_error_set(err, NC_E_QUERY, NC_K_INTERNAL, "the server returned no result");
        err->sent = NC_SENT_YES;
        return NULL;
    }
    return keep;
lost:
    PQclear(keep);
    PQclear(error);
    err->sent = NC_SENT_YES;
    return NULL;
}

#else   /* libpq < 14: no pipeline mode */

long long nc_pg_exec_many(nc_pg_conn *c, const char *sql, int nparams, const nc_pg_params *rows, int nrows,
                          const char *before, const char *after, double deadline, int *failed, nc_error *err)
{
    *failed = -1;
    long long total = 0;
    if (before && nc_pg_command(c, before, deadline, err) < 0)
        return -1;
    for (int i = 0; i < nrows; i++) {
        PGresult *r = nc_pg_exec(c, sql, nparams, rows[i].types, rows[i].values, rows[i].lengths,
                                 rows[i].formats, deadline, err);
        if (!r) {
            *failed = i;
            nc_error_prefix(err, "row %d of the batch", i);
            return -1;
        }
        const char *n = PQcmdTuples(r);
        if (n && *n)
            total += strtoll(n, NULL, 10);
        PQclear(r);
    }
    if (after && nc_pg_command(c, after, deadline, err) < 0)
        return -1;
    return total;
}

PGresult *nc_pg_exec_begin(nc_pg_conn *c, const char *first, const char *sql, int nparams, const Oid *types,
                           const char *const *values, const int *lengths, const int *formats, double deadline,
                           nc_error *err)
{
    if (nc_pg_command(c, first, deadline, err) < 0)
        return NULL;
    return nc_pg_exec(c, sql, nparams, types, values, lengths, formats, deadline, err);
}

#endif
