/* nc_pg_internal.h - what nc_pg.c shares with the other libpq files of the
 * core (nc_pg_pipeline.c): waiting for results under a deadline with the
 * cancel request and the stop check, sending what is queued, and turning
 * libpq's errors into nc_error.  Not for the binding. */
#ifndef NC_PG_INTERNAL_H
#define NC_PG_INTERNAL_H

#include "nc_pg.h"
#include "nc_pg_cancel.h"

/* Why a cancel request went out. */
enum { WHY_NONE = 0, WHY_DEADLINE, WHY_STOP };

/* The wait for a statement's results: on the deadline (or when the
 * thread's stop check says stop) a cancel goes out (when cancel is set) and
 * the results are awaited a grace period longer. */
typedef struct nc_pg_waiter {
    nc_pg_cancel k;
    int why;                /* WHY_*: why a cancel went out */
    int cancel;
    double wait_until, grace;
} nc_pg_waiter;

void nc_pg_waiter_init(nc_pg_waiter *w, double deadline, int cancel);
/* Wait until a result can be read without blocking (PQisBusy is false).
 * 0 ok; -1 with err (timeout, interrupted, connection lost: marked broken,
 * the cancel closed). */
int nc_pg_waiter_ready(nc_pg_conn *c, nc_pg_waiter *w, nc_error *err);
/* After the last result: settle the cancel (the connection is kept only
 * when our cancel stopped the statement and was processed) and, when error
 * is the first error result, say what it means (a timeout, an interruption
 * or the server's error) in err and return -1; 0 without an error. */
int nc_pg_waiter_end(nc_pg_conn *c, nc_pg_waiter *w, PGresult *error, nc_error *err);
/* Give up on the wait (the connection is broken anyway). */
void nc_pg_waiter_abandon(nc_pg_waiter *w);

/* Send everything queued, within deadline, reading what comes meanwhile.
 * 0 ok, -1 err (marked broken). */
int nc_pg_flush(nc_pg_conn *c, double deadline, nc_error *err);

/* Whether c may take a statement: 0 yes; -1 with err (NC_E_CONNECTION,
 * not sent; marked broken) when it was lost, or given up earlier by us
 * (c->gave_up: the message names the endpoint and says why). */
int nc_pg_usable(nc_pg_conn *c, nc_error *err);

/* Mark c broken for a reason of ours (a static string, see gave_up). */
void nc_pg_give_up(nc_pg_conn *c, const char *why);

/* err from a result's SQLSTATE and message, or from the connection's. */
void nc_pg_result_error(nc_error *err, PGresult *res);
void nc_pg_conn_error(nc_error *err, int code, PGconn *pg, const char *what);

#endif
