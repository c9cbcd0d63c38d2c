/* nc_pg.h - the libpq backend: connections with deadlines, statements with
 * deadlines and server-side cancel. */
#ifndef NC_PG_H
#define NC_PG_H

#include <libpq-fe.h>
#include "nc_backend.h"

typedef struct nc_pg_conn {
    PGconn *pg;
    int broken;         /* lost, or a cancel that never came back: discard */
    int session_dirty;  /* a statement may have changed the session (nc_sql_changes_session):
                         * DISCARD ALL before the next borrower */
    int pending;        /* a reply owed (NC_PG_OWED_*): a ROLLBACK sent by nc_pg_rollback_send, or a
                         * ping cut short by its caller's deadline or Ctrl-C; nc_pg_settle reads it
                         * before anything else uses the connection */
    PGTransactionStatusType pending_status;   /* the session's status once it is read */
    const char *display;    /* "user@host:port/db" of its pool's context, for messages */
    const char *gave_up;    /* why we marked it broken while libpq still sees it open (a static
                             * string): what a later use of it says instead of libpq's empty error */
} nc_pg_conn;

/* What a pending reply answers (nc_pg_conn.pending). */
enum { NC_PG_OWED_NONE = 0, NC_PG_OWED_ROLLBACK, NC_PG_OWED_PING };

extern const nc_backend_ops nc_pg_ops;

/* A multi-host string may name this many hosts (and ports) at most; more is
 * refused with NC_E_CONFIG rather than silently cut. */
#define NC_PG_MAX_HOSTS 16

/* Check conninfo (URI or key=value) and keep it for connecting.  NULL with
 * err (NC_E_CONFIG, libpq's reason; never the password) on a bad string. */
void *nc_pg_ctx_new(const char *conninfo, nc_error *err);

/* "host:port/dbname" for messages (no password). */
const char *nc_pg_ctx_display(void *ctx);

/* A multi-host string as one connection string per host, for a failover
 * manager's endpoints (priority in list order): every setting of conninfo
 * except the host lists and target_session_attrs (which endpoint serves what
 * is the route's to decide, and read-write would refuse a standby's
 * connection), with that host's host, hostaddr and port.  dsns[i] and
 * names[i] ("host:port", no password) are malloc'd, the caller frees them.
 * Returns the count (1 for a single host), or -1 with err (NC_E_CONFIG for a
 * string libpq refuses or with more than cap hosts, lists of different
 * lengths; NC_E_FO_SPLIT_DSN for a host list with an empty entry). */
int nc_pg_split_hosts(const char *conninfo, char **dsns, char **names, int cap, nc_error *err);

/* Run sql before deadline.  With nparams < 0 the simple protocol is used
 * (several statements allowed, no parameters).  Returns a PGresult whose
 * status is TUPLES_OK, COMMAND_OK or EMPTY_QUERY (caller PQclear()s it), or
 * NULL with err: NC_E_QUERY (+ sqlstate) for a server error,
 * NC_E_QUERY_TIMEOUT when the deadline passed (the statement was cancelled;
 * if it did not end cancelled in time the connection is marked broken),
 * NC_E_INTERRUPTED when the thread's stop check said stop (nc_stop.h; the
 * same cancel, with a shorter grace),
 * NC_E_CONNECTION when the connection was lost (marked broken). */
PGresult *nc_pg_exec(nc_pg_conn *c, const char *sql, int nparams, const Oid *types,
                     const char *const *values, const int *lengths, const int *formats,
                     double deadline, nc_error *err);

/* Streaming a result row by row (libpq's single-row mode), so a large
 * result never sits in memory at once.  nc_pg_stream_send sends sql as
 * nc_pg_exec would (0, or -1 with err); then each nc_pg_stream_next waits
 * (before deadline, cancelling as nc_pg_exec does) for the next result: a
 * PGRES_SINGLE_TUPLE one is a row and more follow; any other status ends
 * the statement (TUPLES_OK with no rows after the last row, COMMAND_OK for
 * a statement without rows); NULL with err as nc_pg_exec (the statement is
 * over then too).  Until the end, nothing else may be sent on c. */
int nc_pg_stream_send(nc_pg_conn *c, const char *sql, int nparams, const Oid *types,
                      const char *const *values, const int *lengths, const int *formats, double deadline,
                      nc_error *err);
PGresult *nc_pg_stream_next(nc_pg_conn *c, double deadline, nc_error *err);

/* BEGIN (first) and sql in one round trip (libpq's pipeline mode,
 * nc_pg_pipeline.c; with nparams >= 0 only: the extended protocol, one
 * statement), for PEP 249's implicit transaction.  Returns and fails as
 * nc_pg_exec; a failure of first is prefixed with it (the server then
 * skipped sql). */
PGresult *nc_pg_exec_begin(nc_pg_conn *c, const char *first, const char *sql, int nparams, const Oid *types,
                           const char *const *values, const int *lengths, const int *formats, double deadline,
                           nc_error *err);

/* Send ROLLBACK without waiting for its reply (c->pending): the caller
 * goes on (a DB-API rollback() before close(), a return to the pool) and
 * the reply is read by nc_pg_settle before the connection's next use: any
 * statement here, the pool's next borrow or check (nc_pg_ops.settle).
 * Safe because whatever the reply, the transaction is over: a failure only
 * means the connection is lost.  0 sent, -1 err (marked broken). */
int nc_pg_rollback_send(nc_pg_conn *c, double deadline, nc_error *err);

/* Read a pending reply (nothing to do without one) before deadline.
 * 0 ok; -1 err (statement not sent; marked broken): NC_E_CONNECTION when
 * the ROLLBACK (or ping) failed, the session is not as it should be after
 * it or the connection was lost, NC_E_QUERY_TIMEOUT when the deadline
 * passed, NC_E_INTERRUPTED when the stop check said stop.  (The pool's
 * settle op instead keeps a connection whose reply is merely late.) */
int nc_pg_settle(nc_pg_conn *c, double deadline, nc_error *err);

/* PQtransactionStatus as it is once a pending reply is read (IDLE after a
 * ROLLBACK; a ping leaves it as it was). */
PGTransactionStatusType nc_pg_txn_status(const nc_pg_conn *c);

/* One parameter set of nc_pg_exec_many (as nc_pg_exec takes them). */
typedef struct nc_pg_params {
    const Oid *types;
    const char *const *values;
    const int *lengths;
    const int *formats;
} nc_pg_params;

/* Run sql ($1..$nparams) once per parameter set rows[0..nrows) in one
 * round trip (libpq's pipeline mode; nc_pg_pipeline.c; the server parses sql
 * once, and again only for a row whose parameter types differ: nc_pg_batch.h), before deadline,
 * with nc_pg_exec's cancel and stop check.  before/after (or NULL): a
 * command run first and last in the same pipeline (BEGIN and COMMIT for a
 * batch that needs its own transaction).  Returns the sum of the rows'
 * affected-row counts, or -1 with err as nc_pg_exec says, the message
 * prefixed with "row N of the batch" and *failed = N when a row's statement
 * failed (-1 when the failure is not one row's).  After a failed row the
 * server skips the rest of the batch (and after). */
long long nc_pg_exec_many(nc_pg_conn *c, const char *sql, int nparams, const nc_pg_params *rows, int nrows,
                          const char *before, const char *after, double deadline, int *failed, nc_error *err);

/* Run a parameterless command (BEGIN, COMMIT, ...).  0 ok, -1 err. */
int nc_pg_command(nc_pg_conn *c, const char *sql, double deadline, nc_error *err);

/* Wait until the socket is ready for events (POLLIN/POLLOUT) before
 * deadline: 1 ready, 0 deadline passed, -1 error, -2 the thread's stop
 * check said stop (nc_stop.h; never without one).  Retries on EINTR. */
int nc_pg_wait(int fd, short events, double deadline);

/* Backend process id of the server session (0 when not connected). */
int nc_pg_backend_pid(nc_pg_conn *c);

#endif
