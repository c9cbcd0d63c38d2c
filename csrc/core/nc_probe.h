/* nc_probe.h - health probes of one PostgreSQL endpoint for the monitor.
 *
 * A prober keeps its own probe connection open (not from any pool) and asks
 * the server, within a deadline, whether it is reachable, how long a round
 * trip takes and whether it accepts writes.  A probe that fails or runs out
 * of time drops the connection (no cancel, no grace); the next one connects
 * again.
 */
#ifndef NC_PROBE_H
#define NC_PROBE_H

#include <stddef.h>
#include "nc_error.h"

typedef struct nc_pg_prober nc_pg_prober;

/* Check conninfo (nc_pg_ctx_new) and keep it.  No connection is opened yet.
 * NULL with err (NC_E_CONFIG for a bad string) on failure. */
nc_pg_prober *nc_pg_prober_new(const char *conninfo, nc_error *err);

/* One probe before deadline (absolute CLOCK_MONOTONIC seconds): connects if
 * needed, runs "SELECT pg_is_in_recovery(),
 * current_setting('default_transaction_read_only')" and reports *role
 * NC_ROLE_READ_ONLY (in recovery, or read-only by default) or
 * NC_ROLE_WRITABLE, and *latency: the query round trip in seconds, plus the
 * connect time when it had to connect.  Returns 0, or -1 with a short text in
 * errbuf (the probe connection is then closed).  Thread-safe: concurrent
 * probes of one prober run one after the other, a waiting caller never
 * waiting past its own deadline. */
int nc_pg_prober_probe(nc_pg_prober *p, double deadline, double *latency, int *role, char *errbuf,
                       size_t errlen);

/* Close the probe connection and free the prober.  A probe still running in
 * another thread (one the monitor gave up waiting for) keeps it alive until
 * it returns; it frees it then. */
void nc_pg_prober_free(nc_pg_prober *p);

#endif
