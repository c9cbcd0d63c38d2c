/* nc_monitor.h - the native health monitor and failover executor.
 *
 * One probe thread per endpoint probes it every health_check_interval within
 * health_check_timeout (reachability, latency, role) and reports to the
 * decision logic (nc_failover.h) under the monitor's mutex; a decision
 * thread wakes on every report (and on passive failures from the query
 * path), asks nc_fo_decide what to do and carries it out: it verifies the
 * target with a fresh probe bounded by failover_timeout, then switches the
 * current endpoint atomically (a generation number changes with it) and
 * calls on_switch so the binding can drain the abandoned endpoint's pool.
 * Every decision that did something is kept as an event in a bounded ring,
 * which the binding's Python thread reads with nc_monitor_wait_event.
 *
 * No Python here.  Probing a Python-backed endpoint is done by the probe
 * callback the binding supplies (it takes the GIL itself, and refuses once
 * the interpreter is going away).
 */
#ifndef NC_MONITOR_H
#define NC_MONITOR_H

#include <stddef.h>
#include <stdint.h>
#include "nc_error.h"
#include "nc_failover.h"

/* Probe endpoint i before deadline.  Returns 0 when it answered (fill
 * *latency in seconds and *role), -1 when not (fill errbuf).  Called from the
 * endpoint's probe thread and from the decision thread (verification), never
 * with the monitor mutex held, possibly at the same time for one endpoint
 * (the callback must allow that, e.g. by a lock per endpoint). */
typedef int (*nc_probe_fn)(void *arg, int i, double deadline, double *latency, int *role,
                           char *errbuf, size_t errlen);

/* Called by the decision thread after the current endpoint changed from
 * `from` to `to` (no monitor lock held). */
typedef void (*nc_switch_fn)(void *arg, int from, int to);

#define NC_MONITOR_ENDPOINTS_MAX 64   /* endpoints per monitor */

typedef struct nc_monitor_config {
    nc_fo_config fo;
    double health_check_interval;   /* seconds between probes of one endpoint */
    double health_check_timeout;    /* deadline of one probe */
    double failover_timeout;        /* deadline of verifying a target during a switch */
} nc_monitor_config;

/* Defaults: nc_fo_config_defaults, probes every 10 s within 5 s, a switch
 * verified within 60 s. */
void nc_monitor_config_defaults(nc_monitor_config *cfg);

enum nc_event_kind {
    NC_EV_FAILOVER = 1,     /* a switch away from a failing endpoint (or a manual one) */
    NC_EV_FAILBACK = 2,     /* a switch back to the preferred endpoint */
    NC_EV_SPLIT_BRAIN = 3,  /* a switch was held because two endpoints accept writes */
    NC_EV_NO_TARGET = 4,    /* the current endpoint failed and nothing could take over */
    NC_EV_RESUMED = 5,      /* service came back after NO_TARGET without a switch */
    NC_EV_COUNT
};

/* "failover", "failback", "split_brain", "no_target", "resumed"; "unknown". */
const char *nc_event_kind_name(int kind);

typedef struct nc_event {
    uint64_t id;            /* 1, 2, ... */
    int kind;               /* enum nc_event_kind */
    int from, to;           /* endpoint indices, -1 none */
    int success;
    int fired;              /* policy bit, 0 none */
    int manual;
    double timestamp;       /* wall clock (seconds since the epoch) when it started */
    double duration;        /* seconds from the decision to the switch (or failure) */
    double detected_at;     /* monotonic time the deciding failure was seen, 0 none */
    double switched_at;     /* monotonic time the switch took effect, 0 none */
    char reason[256];
} nc_event;

#define NC_EVENT_RING 256

typedef struct nc_monitor nc_monitor;

nc_monitor *nc_monitor_new(const nc_monitor_config *cfg, int n, const int *priority, int primary,
                           nc_probe_fn probe, void *probe_arg, nc_switch_fn on_switch, void *switch_arg,
                           nc_error *err);
/* Call release(arg) once the monitor's memory is freed, that is when
 * nc_monitor_free was called and no thread of it (nor a caller inside it)
 * is left: then nothing calls the probe or switch callbacks any more, and
 * what they use may go. */
void nc_monitor_on_free(nc_monitor *m, void (*release)(void *arg), void *arg);

/* Start the probe and decision threads (idempotent).  Before this, passive
 * reports still drive decisions: they are evaluated in the reporting thread's
 * call to nc_monitor_passive (which then may switch, bounded by
 * failover_timeout). */
int nc_monitor_start(nc_monitor *m, nc_error *err);
/* Stop and join the threads (bounded: a probe stuck past its deadline is
 * left to finish; the monitor is freed by whoever is last). */
void nc_monitor_stop(nc_monitor *m);
/* The same, joining for at most max_wait seconds (< 0: health_check_timeout
 * + 0.5, nc_monitor_stop's bound): the interpreter's exit waits no longer
 * for a probe stuck in a connect.  A thread not joined owns what it uses. */
void nc_monitor_stop_within(nc_monitor *m, double max_wait);
/* Stop for good: nc_monitor_stop, and a later nc_monitor_start fails (a
 * start racing the owner's close can no longer leave threads behind). */
void nc_monitor_close(nc_monitor *m);
void nc_monitor_close_within(nc_monitor *m, double max_wait);
void nc_monitor_free(nc_monitor *m);
int nc_monitor_running(nc_monitor *m);

/* The endpoint to borrow from, and the generation of that choice.
 * Returns -1 when no endpoint is usable (state UNAVAILABLE). */
int nc_monitor_current(nc_monitor *m, uint64_t *generation);
uint64_t nc_monitor_generation(nc_monitor *m);

/* The query path saw endpoint i fail (kind: enum nc_fo_passive_kind).
 * Without monitor threads the report is probed and decided in the calling
 * thread, before until (the caller's deadline in nc_now() seconds, NC_NO_DEADLINE
 * for none: then health_check_timeout + failover_timeout bound it).  A
 * probe or verification cut short by until decides nothing: the next
 * report or borrow looks again. */
void nc_monitor_passive(nc_monitor *m, int i, int kind, const char *error, double until);

/* trigger_failover / trigger_recovery: decide and carry out in the calling
 * thread (call without the GIL).  1 when a switch happened, 0 when not
 * (reason in err->message, code 0), -1 on error. */
int nc_monitor_trigger_failover(nc_monitor *m, int target, const char *reason, nc_error *err);
int nc_monitor_trigger_recovery(nc_monitor *m, nc_error *err);

/* Without monitor threads: probe what is unknown or failed, then take the
 * automatic decision (mode respected) in the calling thread, all before
 * until (as for nc_monitor_passive).  1 when the current endpoint is usable
 * afterwards, 0 not, -1 busy. */
int nc_monitor_recheck(nc_monitor *m, double until);

/* The id of the newest event, 0 none: what a waiter for the next change
 * (nc_monitor_wait_events) starts after. */
uint64_t nc_monitor_last_event(nc_monitor *m);

/* Copy events with id > after (oldest first) into out[0..cap); returns the
 * count.  With timeout > 0, waits up to timeout seconds for one to arrive
 * (or the monitor to be freed/stopped). */
int nc_monitor_wait_events(nc_monitor *m, uint64_t after, nc_event *out, int cap, double timeout);

/* Endpoints that join and leave while running (grow in place, never
 * shrink: indices and event ids stay stable).  nc_monitor_add: endpoint n
 * (returned) with that priority, nothing known of it until its first probe
 * (a probe thread starts at once when monitoring); -1 with err past
 * NC_MONITOR_ENDPOINTS_MAX.  nc_monitor_set_removed: endpoint i left (its
 * probe thread idles until it is back, it is never a target, a current endpoint that left is
 * failed over from: nc_fo_set_removed) or came back (0: probed again).
 * The probe callback must know endpoint i before nc_monitor_add returns i. */
int nc_monitor_add(nc_monitor *m, int priority, nc_error *err);
/* Room for n endpoints in all, allocated now: after it, nc_monitor_add up
 * to n cannot fail for memory (a caller that publishes the endpoint
 * elsewhere first, as the route does, reserves before publishing).  0, or
 * -1 with err (NC_E_CONFIG past NC_MONITOR_ENDPOINTS_MAX, NC_E_INTERNAL
 * out of memory). */
int nc_monitor_reserve(nc_monitor *m, int n, nc_error *err);
void nc_monitor_set_removed(nc_monitor *m, int i, int removed);
int nc_monitor_count(nc_monitor *m);

/* A consistent snapshot: state, current, statistics and each endpoint's
 * health (health must have room for NC_MONITOR_ENDPOINTS_MAX entries, or
 * for nc_monitor_count when no endpoint is added meanwhile). */
typedef struct nc_monitor_status {
    int state, current, preferred, n;
    nc_fo_stats stats;
    uint64_t generation;
    int running;
} nc_monitor_status;
void nc_monitor_get_status(nc_monitor *m, nc_monitor_status *st, nc_fo_health *health);

#endif
