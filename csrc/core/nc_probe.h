/* nc_probe.h - health probes of one endpoint: the one prober the monitor,
 * the failover route and the command line's status all use.
 *
 * A prober belongs to a pool (it holds a reference to it) and keeps its own
 * probe connection, opened through the pool's backend ops but never lent by
 * the pool.  Each probe answers, within a deadline, whether the endpoint is
 * reachable and how long a round trip takes; on PostgreSQL also whether it
 * accepts writes (pg_is_in_recovery(), default_transaction_read_only), its
 * WAL position (current on a primary, replayed on a standby) and,
 * with detail, its version and replication state.  Other backends are pinged
 * through their ops (role unknown).  A probe that fails or runs out of time
 * drops the probe connection (no cancel, no grace); the next one connects
 * again.
 */
#ifndef NC_PROBE_H
#define NC_PROBE_H

#include <stddef.h>
#include <stdint.h>
#include "nc_error.h"
#include "nc_failover.h"   /* enum nc_role */
#include "nc_pool.h"

#define NC_PROBE_MAX_STANDBYS 16

typedef struct nc_probe_standby {
    char name[64];              /* application_name */
    char client_addr[64];
    char state[32];             /* "streaming", "catchup" ... */
    char sync_state[16];
    double lag_bytes;           /* NAN unknown */
    double lag_seconds;         /* NAN unknown */
} nc_probe_standby;

typedef struct nc_probe_result {
    int ok;
    double latency;             /* the round trip, plus connecting when it had to */
    double connect_time;        /* seconds spent connecting (0: the connection was reused) */
    double query_time;          /* seconds of the probe's round trip alone */
    int role;                   /* enum nc_role */
    int error_code;             /* a failure's code (NC_E_CONNECTION, NC_E_QUERY_TIMEOUT ...) */
    char error[256];            /* one line */
    /* PostgreSQL 10+: the WAL position (a primary's current one, a
     * standby's replayed one: pg_last_wal_replay_lsn()), for read routing's
     * lag; have_lsn 0 when unknown (other backends, a standby that has
     * replayed nothing yet). */
    int have_lsn;
    uint64_t lsn;
    /* with detail, PostgreSQL only: */
    int detailed;
    char server_version[32];
    int in_recovery;
    double replay_lag_bytes;    /* standby: received but not replayed; NAN unknown */
    double replay_delay;        /* standby: seconds since the last replayed transaction; NAN */
    char receiver_status[32];   /* standby: the WAL receiver's status, "" none */
    char upstream[128];         /* standby: "host:port" it streams from, "" none */
    int nstandbys;              /* primary: its standbys (at most NC_PROBE_MAX_STANDBYS) */
    nc_probe_standby standbys[NC_PROBE_MAX_STANDBYS];
} nc_probe_result;

typedef struct nc_prober nc_prober;

/* A prober of pool's endpoint (takes a reference to the pool).  detail: a
 * PostgreSQL probe also reads the version and replication state (costlier:
 * for status displays, not for the monitor).  No connection is opened yet.
 * NULL with err on failure. */
nc_prober *nc_prober_new(nc_pool *pool, int detail, nc_error *err);

/* One probe before deadline (absolute CLOCK_MONOTONIC seconds).  Returns 0
 * (out->ok = 1) or -1 (out->ok = 0, out->error set; the probe connection is
 * closed).  Thread-safe: concurrent probes of one prober run one after the
 * other, a waiting caller never waiting past its own deadline. */
int nc_prober_probe(nc_prober *p, double deadline, nc_probe_result *out);

/* Close the kept-open probe connection now, or, when a probe is using it,
 * as that probe ends; the next probe opens a new one (an endpoint that left
 * the topology). */
void nc_prober_idle(nc_prober *p);

/* No more probes: the probe connection is closed now (or, when a probe is
 * running in another thread, as that probe ends), and later probes fail at
 * once.  The prober stays valid until nc_prober_free.  Idempotent. */
void nc_prober_close(nc_prober *p);

/* Close the probe connection and drop the caller's reference.  A probe still
 * running in another thread keeps the prober (and its pool) alive until it
 * returns. */
void nc_prober_free(nc_prober *p);

#endif
