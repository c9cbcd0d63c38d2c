/* nc_backend.h - what the pool needs from a kind of connection.
 *
 * The pool only opens, checks, resets and closes connections; running
 * statements is the business of the code that borrowed one (it knows the
 * kind).  ctx is the backend's per-pool context (conninfo, path, or the
 * Python factory), conn one open connection.  Every call that may wait takes
 * an absolute deadline (nc_time.h).  The pool never calls these with its own
 * mutex held.
 */
#ifndef NC_BACKEND_H
#define NC_BACKEND_H

#include "nc_error.h"

typedef struct nc_backend_ops {
    const char *kind;   /* "postgresql", "sqlite", "python" */

    /* 1: the pool pings a connection right after opening it (a new one that
     * fails is error 2008/2010).  Native backends validate in connect. */
    int ping_new;

    /* Open a connection before deadline.  NULL with err set on failure. */
    void *(*connect)(void *ctx, double deadline, nc_error *err);

    /* Cheap check of an idle connection, no round trip: 1 looks usable, 0 dead. */
    int (*looks_alive)(void *ctx, void *conn);

    /* Round-trip check before deadline: 0 ok, -1 failed (err set; dead), 1
     * no answer yet when the deadline passed or the thread's stop check said
     * stop (nc_stop.h): the reply is left owed (settle reads it) and the
     * connection is not judged: whoever set the deadline decides (the pool
     * drops it when that was validation_timeout, keeps it when it was the
     * borrower's own deadline or Ctrl-C). */
    int (*ping)(void *ctx, void *conn, double deadline, nc_error *err);

    /* 1 when giving the connection back needs I/O (an open transaction to roll
     * back, session state a borrower changed), 0 when it is clean, -1 when it
     * is broken (or cannot be reset) and must be discarded. */
    int (*return_state)(void *ctx, void *conn);

    /* Roll back what is open and reset the session before deadline: 0 ok, -1
     * discard it. */
    int (*reset)(void *ctx, void *conn, double deadline, nc_error *err);

    /* A reply the server still owes (the ROLLBACK a return sent without
     * waiting, a ping cut short): read it before deadline, or with deadline
     * 0 only what has arrived (no wait; safe under the pool mutex).  0
     * nothing owed any more, 1 still owed (deadline 0, or the deadline
     * passed or the stop check said stop: not judged, as for ping), -1 it
     * failed or the connection died: discard.
     * NULL: the backend never leaves a reply owed. */
    int (*settle)(void *ctx, void *conn, double deadline);

    /* Mark a lent connection broken for a reason of the pool's (a static
     * string naming it): its next statement fails at once saying why
     * instead of waiting on a reply still owed, and its return closes it.
     * NULL: the backend keeps no such state. */
    void (*give_up)(void *ctx, void *conn, const char *why);

    /* Close and free the connection.  Must not wait long (no deadline: it only
     * sends a terminate message / closes a file). */
    void (*close)(void *ctx, void *conn);

    /* Free ctx when the pool is freed. */
    void (*ctx_free)(void *ctx);
} nc_backend_ops;

#endif
