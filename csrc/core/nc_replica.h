/* nc_replica.h - reads on standbys: how far behind a replica is, measured
 * from LSN progress over time, and which endpoint serves a read.
 *
 * Pure: no threads, I/O or clock of its own (the route feeds it the probes'
 * LSNs with the times they were read, and serialises the calls).  Tested as
 * plain C in csrc/tests/test_replica.c with made-up times.
 *
 * Lag in seconds is measured, not copied: pg_stat_replication.replay_lag
 * freezes at its last value while a replica's replay is stalled.  The route
 * keeps the times at which the primary's WAL position was first seen at each
 * value (nc_lsn_history); a replica that has replayed up to R, read at time
 * at, is behind by at - (when the primary was first seen past R): how long
 * the data it misses has existed.  That time is known to one probe interval
 * of the primary; a stalled replica's lag grows with each of its probes.
 */
#ifndef NC_REPLICA_H
#define NC_REPLICA_H

#include <stdint.h>

/* What a borrow asks for, libpq's target_session_attrs names. */
enum nc_target {
    NC_TARGET_PRIMARY = 0,          /* the current writable endpoint (the failover route) */
    NC_TARGET_STANDBY = 1,          /* a standby within the lag limits, else an error at once */
    NC_TARGET_PREFER_STANDBY = 2,   /* a standby within the limits, else the primary */
    NC_TARGET_ANY = 3,              /* the least busy of the primary and those standbys */
    NC_TARGET_COUNT
};

/* "primary", "standby", "prefer-standby", "any"; "unknown". */
const char *nc_target_name(int target);
/* The value of a name, -1 none. */
int nc_target_from_name(const char *name);

/* "16/B374D848" -> 0x16B374D848.  0 ok, -1 not an LSN. */
int nc_lsn_parse(const char *text, uint64_t *out);

#define NC_LSN_HISTORY 256

/* The primary's WAL positions with the time each was first seen (oldest
 * first in a ring).  Only advances are kept, so an idle primary fills
 * nothing; the oldest entries go when it is full (lags longer than the
 * history then read as at least the history's age). */
typedef struct nc_lsn_history {
    double t[NC_LSN_HISTORY];
    uint64_t lsn[NC_LSN_HISTORY];
    int head;                   /* index of the oldest */
    int count;
    int wrapped;                /* entries were dropped: the oldest is not the first seen */
    double confirmed;           /* when the newest position was last seen (advanced or not) */
} nc_lsn_history;

void nc_lsn_history_clear(nc_lsn_history *h);
/* The primary was at lsn at time t.  A position behind the newest (a new
 * primary after a failover, which never had the lost tail) starts the
 * history again. */
void nc_lsn_history_add(nc_lsn_history *h, double t, uint64_t lsn);
/* The newest position; 0 and returns -1 when empty. */
int nc_lsn_history_newest(const nc_lsn_history *h, uint64_t *lsn);

/* Read your writes: the primary's position as first seen at or after time
 * t (a write that completed before t is at or below it).  0, or -1 when the
 * primary has not been seen since t (nothing can be promised yet). */
int nc_lsn_history_seen_after(const nc_lsn_history *h, double t, uint64_t *lsn);

/* Bytes a replica at replay is behind the newest known primary position
 * (0 when ahead); NAN when nothing is known of the primary. */
double nc_lag_bytes(const nc_lsn_history *h, uint64_t replay);
/* Seconds, at time at, that a replica which had replayed up to replay at
 * that time is behind (see above); NAN when nothing is known of the primary. */
double nc_lag_seconds(const nc_lsn_history *h, uint64_t replay, double at);

/* One endpoint as the read choice sees it. */
typedef struct nc_read_ep {
    int up;                     /* its last probe answered, no failure since */
    int standby;                /* it answered read-only (in recovery, or read-only by setting) */
    double lag_bytes;           /* NAN unknown */
    double lag_seconds;         /* NAN unknown */
    int in_flight;              /* connections of its pool lent now */
    int have_replay;
    uint64_t replay;            /* its replayed position */
} nc_read_ep;

typedef struct nc_read_limits {
    double max_lag_bytes;       /* > 0 */
    double max_lag_seconds;     /* > 0 */
    int need_lsn;               /* read your writes: only standbys that replayed min_lsn */
    uint64_t min_lsn;
} nc_read_limits;

/* A standby that may serve reads: up, read-only, lag known and within both
 * limits (an unknown lag never qualifies: no read from a replica that may be
 * past the limit), and with need_lsn, replayed up to min_lsn. */
int nc_read_eligible(const nc_read_ep *e, const nc_read_limits *lim);

/* Which endpoint serves a read of target (STANDBY, PREFER_STANDBY or ANY):
 * the eligible standbys (and for ANY the primary, the current writable
 * endpoint, -1 none), the one with the fewest connections in flight, ties
 * in turn from *rr (advanced past the one chosen).  -1 when none qualifies:
 * STANDBY fails, PREFER_STANDBY and ANY take the primary's path. */
int nc_read_choose(int target, const nc_read_ep *eps, int n, int primary, const nc_read_limits *lim,
                   unsigned *rr);

#endif
