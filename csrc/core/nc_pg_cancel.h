/* nc_pg_cancel.h - asking a PostgreSQL server to cancel the statement a
 * connection runs, without ever blocking: the request is a small state
 * machine the statement's wait loop drives with poll() (nc_pg.c), so a
 * frozen server (a SIGSTOPped postmaster, a blackholing network) costs one
 * socket until the caller's grace period ends, and never a thread. */
#ifndef NC_PG_CANCEL_H
#define NC_PG_CANCEL_H

#include <libpq-fe.h>

enum nc_cancel_state {
    NC_CANCEL_NONE = 0,
    NC_CANCEL_PENDING,      /* connecting / sending / waiting for the server to close */
    NC_CANCEL_DONE,         /* the server closed the cancel connection: it was processed */
    NC_CANCEL_FAILED,       /* could not be sent (why says why) */
    NC_CANCEL_UNTRACKED     /* handed to a thread (an unknown libpq): no acknowledgement */
};

typedef struct nc_pg_cancel {
    int state;              /* enum nc_cancel_state */
    int fd;                 /* wait on it while PENDING (-1 otherwise) */
    short events;           /* POLLIN / POLLOUT, while PENDING */
    int step;               /* internal */
    int sent;               /* bytes of the request written */
    unsigned char packet[16];
    void *cc;               /* libpq >= 17: the PGcancelConn */
    char why[200];          /* FAILED: what went wrong */
} nc_pg_cancel;

/* Start a cancel request for pg's running statement (state PENDING, or
 * FAILED with why, or UNTRACKED). */
void nc_pg_cancel_start(nc_pg_cancel *k, PGconn *pg);

/* Move on after poll() reported revents on k->fd (PENDING only). */
void nc_pg_cancel_step(nc_pg_cancel *k, short revents);

/* Give up what is left (closes the socket); the state stays as it is. */
void nc_pg_cancel_close(nc_pg_cancel *k);

#endif
