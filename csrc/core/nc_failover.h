/* nc_failover.h - the failover decision logic, as a plain state machine.
 *
 * No threads, no I/O, no clock of its own: the monitor (nc_monitor.c) feeds
 * it probe results and passive failures with the time they happened, asks it
 * what to do, carries the decision out, and reports the outcome.  The caller
 * serialises all calls (the monitor's mutex).  Everything here is unit-tested
 * in csrc/tests/test_failover.c with made-up times.
 *
 * Endpoints are indices 0..n-1.  The preferred endpoint ("primary") is the
 * one marked is_primary, else the lowest priority number (1 is most
 * preferred; ties go to the lower index).
 */
#ifndef NC_FAILOVER_H
#define NC_FAILOVER_H

enum nc_fo_mode { NC_FO_MANUAL = 0, NC_FO_AUTOMATIC = 1, NC_FO_SEMI_AUTOMATIC = 2, NC_FO_MODE_COUNT };

/* Policies are bits; COMBINED is all of them. */
enum nc_fo_policy {
    NC_FO_FAILURE_COUNT = 1,    /* consecutive failures (within failure_timeout) reach max_failure_count */
    NC_FO_RESPONSE_TIME = 2,    /* latency over the threshold on slow_probe_count consecutive probes */
    NC_FO_HEALTH_CHECK = 4,     /* the last probe failed, or the role is wrong (read-only) */
    NC_FO_COMBINED = 7
};

enum nc_fo_state {
    NC_FO_PRIMARY = 0,          /* on the preferred endpoint */
    NC_FO_FAILING_OVER,
    NC_FO_SECONDARY,            /* on another endpoint */
    NC_FO_FAILING_BACK,
    NC_FO_RECOVERING,           /* (reserved: a failback being verified) */
    NC_FO_UNAVAILABLE,          /* the current endpoint is unusable and no target exists */
    NC_FO_STATE_COUNT
};

enum nc_role { NC_ROLE_UNKNOWN = 0, NC_ROLE_WRITABLE = 1, NC_ROLE_READ_ONLY = 2, NC_ROLE_COUNT };

enum nc_fo_passive_kind {
    NC_FO_PASSIVE_LOST = 1,      /* connection lost, SQLSTATE 08xxx, 57P01-57P03 */
    NC_FO_PASSIVE_READ_ONLY = 2  /* SQLSTATE 25006 on the current endpoint */
};

typedef struct nc_fo_config {
    int mode;                       /* enum nc_fo_mode */
    int policy;                     /* enum nc_fo_policy bits */
    int max_failure_count;          /* >= 1 */
    double failure_timeout;         /* seconds: failures older than this no longer count */
    double response_time_threshold; /* seconds */
    int slow_probe_count;           /* >= 1 */
    double recovery_check_interval; /* seconds the preferred endpoint must be healthy before failback */
    int max_recovery_attempts;      /* failed failbacks before automatic recovery stops */
    int auto_recovery;              /* fail back on its own (AUTOMATIC mode only) */
    int require_writable;           /* never switch to (or stay on) a read-only endpoint */
    double hold_down;               /* seconds after a switch before another automatic one */
} nc_fo_config;

void nc_fo_config_defaults(nc_fo_config *cfg);

#define NC_FO_MAX_FAILS 64          /* failure times remembered per endpoint */

typedef struct nc_fo_health {
    int probed;                 /* at least one probe result */
    int available;              /* the last probe (or passive report) was good */
    int role;                   /* enum nc_role, from the last good probe */
    double last_check;          /* time of the last probe, 0 never */
    double response_time;       /* latency of the last good probe, seconds */
    int consecutive_failures;   /* failures since the last good probe, within failure_timeout */
    int consecutive_slow;       /* good probes over the threshold in a row */
    double last_failure;        /* time of the last failure, 0 never */
    double last_bad;            /* time of the last bad news of any kind (a failure, a slow or
                                   read-only probe, a passive report), 0 never: when a
                                   failover's cause was first seen */
    char last_error[256];
    double healthy_since;       /* since when good (and writable if required) without a break; 0 not */
    double fail_times[NC_FO_MAX_FAILS]; /* ring of failure times, for the window */
    int nfail;
    int removed;                /* left the topology (nc_fo_set_removed) */
} nc_fo_health;

enum nc_fo_action {
    NC_FO_NONE = 0,
    NC_FO_DO_FAILOVER,          /* switch away from a failing current endpoint */
    NC_FO_DO_FAILBACK,          /* switch back to the preferred endpoint */
    NC_FO_SPLIT_BRAIN,          /* a switch is due but two endpoints accept writes: hold */
    NC_FO_NO_TARGET             /* the current endpoint failed and nothing can take over */
};

typedef struct nc_fo_decision {
    int action;                 /* enum nc_fo_action */
    int from, to;               /* endpoint indices; to = -1 when none */
    int fired;                  /* the policy bit that fired (failover), 0 otherwise */
    int manual;                 /* asked for by trigger_failover / trigger_recovery */
    char reason[256];           /* for the event and the log */
} nc_fo_decision;

typedef struct nc_fo_stats {
    int total_failovers, successful_failovers, failed_failovers;
    int total_recoveries, successful_recoveries, failed_recoveries;
    double failover_time_total;         /* seconds, successful failovers */
    int recovery_failures_in_a_row;     /* towards max_recovery_attempts */
    int recovery_suspended;             /* automatic failback stopped until trigger_recovery */
} nc_fo_stats;

typedef struct nc_fo nc_fo;

/* priority[i] is endpoint i's priority (1 most preferred); primary is the
 * index marked is_primary, or -1 to take the best priority.  Starts on the
 * preferred endpoint in state PRIMARY.  NULL on bad arguments / no memory. */
nc_fo *nc_fo_new(const nc_fo_config *cfg, int n, const int *priority, int primary);
void nc_fo_free(nc_fo *fo);

/* A probe of endpoint i finished at now: ok, its latency, the role it saw
 * (NC_ROLE_UNKNOWN when the backend cannot tell), an error text when !ok. */
void nc_fo_probe(nc_fo *fo, int i, double now, int ok, double latency, int role, const char *error);

/* An endpoint joined the topology while running: index n (the new count
 * - 1), priority as for nc_fo_new, nothing known of it yet (it qualifies as
 * a target only once probed).  -1 on bad arguments / no memory. */
int nc_fo_add(nc_fo *fo, int priority);

/* Make room for n endpoints in all, allocating now, so that adds up to n
 * cannot fail for memory (an add that must be all-or-nothing reserves
 * first).  0, or -1 out of memory (fo unchanged in what it holds). */
int nc_fo_reserve(nc_fo *fo, int n);

/* Endpoint i left the topology (removed != 0), or came back under the same
 * name (0).  Removed: its health reads as a failed check ("removed from the
 * topology") and stays so (probe results and passive reports for it are
 * ignored), it is never a target nor counted as a writer, and when it is
 * the current endpoint the next decision fails over from it.  Back: its
 * history is forgotten and its next probe counts.  The index stays (a
 * tombstone): events and indices keep their meaning. */
void nc_fo_set_removed(nc_fo *fo, int i, int removed, double now);
int nc_fo_removed(const nc_fo *fo, int i);

/* The query path saw endpoint i fail (counts at once, before any probe). */
void nc_fo_passive(nc_fo *fo, int i, double now, int kind, const char *error);

/* What should happen now, given everything reported.  Pure: changes
 * nothing (call nc_fo_note, then nc_fo_begin/nc_fo_done to act).  Respects
 * mode, policy, hold-down, split brain, recovery_check_interval, suspension
 * and the start-up grace. */
nc_fo_decision nc_fo_decide(const nc_fo *fo, double now);

/* Monitoring started: until `until`, "no endpoint can take over" is not
 * concluded while some endpoint has not answered its first probe (its probe
 * is on its way).  0 ends the grace (monitoring stopped). */
void nc_fo_set_grace(nc_fo *fo, double until);

/* Take note of an automatic decision before acting on it.  Remembers a
 * split-brain hold (so that a run of identical holds is one event), carries
 * out NO_TARGET (state UNAVAILABLE, counted once per outage) and returns 1
 * when the decision is news worth an event of its own (the first of a run of
 * split-brain holds, the start of an outage), else 0.  A switch (DO_*)
 * returns 0: carrying it out records its own event. */
int nc_fo_note(nc_fo *fo, const nc_fo_decision *d, double now);

/* When the failure that made d necessary was first seen (last_bad of the
 * endpoint it leaves), 0 when no failure did (manual, failback, resume). */
double nc_fo_detected_at(const nc_fo *fo, const nc_fo_decision *d);

/* trigger_failover(): to target, or (target < 0) the best candidate other
 * than the current one.  Ignores mode and hold-down but never picks an
 * endpoint whose last probe failed or (with require_writable) a read-only
 * one; action NONE with a reason when nothing qualifies. */
nc_fo_decision nc_fo_manual_failover(const nc_fo *fo, double now, int target, const char *reason);

/* trigger_recovery(): clears the suspension and fails back to the preferred
 * endpoint if it qualifies (healthy, writable if required; the
 * recovery_check_interval is waived); NONE with a reason otherwise. */
nc_fo_decision nc_fo_manual_recovery(nc_fo *fo, double now);

/* The monitor starts carrying out d (state FAILING_OVER / FAILING_BACK). */
void nc_fo_begin(nc_fo *fo, const nc_fo_decision *d, double now);

/* ... and it ended: success switches current to d->to (state SECONDARY,
 * or PRIMARY when d->to is the preferred endpoint) and starts the hold-down;
 * failure leaves current as it was (state UNAVAILABLE if current is
 * unusable).  duration feeds the statistics.  A NO_TARGET decision is
 * recorded with success 0 and puts the state to UNAVAILABLE. */
void nc_fo_done(nc_fo *fo, const nc_fo_decision *d, double now, double duration, int success);

/* 1 when the current endpoint is usable as far as we know (UNAVAILABLE
 * otherwise): get_connection fails fast when it is not. */
int nc_fo_current_usable(const nc_fo *fo);

int nc_fo_current(const nc_fo *fo);
int nc_fo_preferred(const nc_fo *fo);
int nc_fo_state(const nc_fo *fo);
int nc_fo_count(const nc_fo *fo);
const nc_fo_health *nc_fo_health_of(const nc_fo *fo, int i);
void nc_fo_get_stats(const nc_fo *fo, nc_fo_stats *out);
/* Names, as the Python enums spell them (the binding exports these tables). */
const char *nc_fo_state_name(int state);   /* "primary", "failing_over", ... "unavailable" */
const char *nc_fo_mode_name(int mode);     /* "manual", "automatic", "semi_automatic" */
const char *nc_fo_policy_name(int bits);   /* "failure_count", "response_time", "health_check", "combined" */
const char *nc_role_name(int role);        /* "unknown", "primary" (writable), "standby" (read-only) */
/* The value of a name (mode, or policy bits), -1 when there is none. */
int nc_fo_mode_from_name(const char *name);
int nc_fo_policy_from_name(const char *name);

#endif
