/* nc_stop.h - "should this wait stop?": a check a thread may install for the
 * long waits the core does on its behalf (a borrow queued in the pool, a
 * statement or connect on the network, SQLite waiting on a lock or running).
 *
 * The core knows nothing of signals or Python: the binding installs a check
 * on Python's main thread that notices Ctrl-C (csrc/py/interrupt.c).  A wait
 * with a check installed wakes at least every NC_STOP_PERIOD seconds to
 * consult it; once it says stop, it keeps saying so until it is removed, and
 * the wait ends with NC_E_INTERRUPTED.  Threads without a check (the janitor,
 * probers) wait exactly as before.  Never call it with a core mutex held: the
 * check may run arbitrary code (a Python signal handler).
 */
#ifndef NC_STOP_H
#define NC_STOP_H

#include <pthread.h>

#define NC_STOP_PERIOD 0.05

typedef int (*nc_stop_fn)(void *arg);   /* nonzero: stop */

/* Install fn(arg) for the calling thread (fn NULL removes it). */
void nc_stop_install(nc_stop_fn fn, void *arg);

/* Set the calling thread's check aside for work that must not be cut short
 * (a health probe a borrow runs: an interrupted probe would count as a
 * failed endpoint), and put it back.  The saved state is opaque. */
typedef struct nc_stop_saved {
    nc_stop_fn fn;
    void *arg;
    int stop;
    double next;
} nc_stop_saved;
nc_stop_saved nc_stop_pause(void);
void nc_stop_resume(nc_stop_saved saved);

/* Whether the calling thread has a check installed. */
int nc_stop_installed(void);

/* Consult the calling thread's check (at most every NC_STOP_PERIOD / 2
 * seconds; sticky once it said stop).  0 when none is installed. */
int nc_stop_check(void);

/* Whether the check has already said stop (no call). */
int nc_stop_seen(void);

/* The end of the next slice of a wait until deadline: deadline itself
 * without a check, else at most NC_STOP_PERIOD from now. */
double nc_stop_slice(double deadline);

/* Join thread t by deadline (monotonic), in slices when a check is
 * installed: 0 joined; -1 not (the deadline passed, or the check said
 * stop: the caller detaches it, which must then own what it touches). */
int nc_stop_join(pthread_t t, double deadline);

#endif
