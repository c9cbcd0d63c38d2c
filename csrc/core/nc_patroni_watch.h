/* nc_patroni_watch.h - re-reading Patroni's GET /cluster while running: a
 * native thread fetches it every interval (nc_patroni_fetch: fallback across
 * the URLs, a deadline), keeps the last answer and counts the failures.
 *
 * A fetch that fails changes nothing but the counters.  An answer is handed
 * to the follower, when one is set (nc_patroni_watch_follow), which keeps a
 * route's endpoints in step with the members (nc_patroni_follow.h), in this
 * thread.  The thread never touches Python.
 */
#ifndef NC_PATRONI_WATCH_H
#define NC_PATRONI_WATCH_H

#include <stdint.h>

#include "nc_error.h"
#include "nc_patroni.h"

typedef struct nc_patroni_watch nc_patroni_watch;

/* The watch thread's name (/proc/self/task/N/comm; at most 15 bytes). */
#define NC_PATRONI_WATCH_THREAD_NAME "nc-patroni"
typedef struct nc_patroni_follow nc_patroni_follow;

typedef struct nc_patroni_watch_status {
    int running;
    uint64_t fetches;            /* answered */
    uint64_t failures;           /* no URL answered (or an answer we cannot read) */
    int consecutive_failures;    /* since the last answer */
    double last_ok_age;          /* seconds since the last answer; < 0: none yet */
    char last_error[NC_ERRMSG_MAX];   /* the last failure's message ("" none) */
    int have_cluster;
    nc_patroni_cluster cluster;  /* the last answer (when have_cluster) */
} nc_patroni_watch_status;

/* A watch over urls (copied), fetching every interval seconds with a
 * deadline of timeout seconds each (timeout <= interval is not required).
 * NULL with err: NC_E_CONFIG for a bad interval/timeout, NC_E_PATRONI_URL
 * for a bad URL or count, NC_E_INTERNAL (out of memory, no thread). */
nc_patroni_watch *nc_patroni_watch_new(const char *const *urls, int nurls, double interval, double timeout,
                                       nc_error *err);

/* Start the thread (idempotent).  0, or -1 with err. */
int nc_patroni_watch_start(nc_patroni_watch *w, nc_error *err);

/* Stop and join the thread.  The thread consults its stop flag during a
 * fetch (every NC_STOP_PERIOD), so this returns within about that, unless
 * a name lookup blocks (then at most the fetch's deadline).  Safe from
 * several threads at once (and with nc_patroni_watch_free): one joins, the
 * others wait for that join, so each returns once the thread has ended.  A
 * caller that may race the owner's free holds a reference meanwhile
 * (nc_patroni_watch_ref). */
void nc_patroni_watch_stop(nc_patroni_watch *w);

/* Keep w's memory for a call made without the owner's lock (the binding's
 * stop() with the GIL released while close() may run in another thread);
 * the last of the owner's free and the unrefs frees it. */
void nc_patroni_watch_ref(nc_patroni_watch *w);
void nc_patroni_watch_unref(nc_patroni_watch *w);

/* A copy of the counters and the last answer. */
void nc_patroni_watch_status_get(nc_patroni_watch *w, nc_patroni_watch_status *out);

/* Apply every answer to f from now on (NULL: none).  f must outlive the
 * watch's thread: free the watch (or stop it) before f. */
void nc_patroni_watch_follow(nc_patroni_watch *w, nc_patroni_follow *f);

/* Whether w was made before a fork() in this process (its thread and mutex
 * are the parent's: do not use it, make a new one). */
int nc_patroni_watch_inherited(const nc_patroni_watch *w);

/* Stop, join (or wait for a stop in progress elsewhere to have joined)
 * and let go: the memory goes with the last reference.  NULL is fine. */
void nc_patroni_watch_free(nc_patroni_watch *w);

/* The member names of c not among known[0..nknown) (indexes into
 * c->members, into joined, *njoined of them), and the known names c does
 * not list (indexes into known, into gone, *ngone).  joined needs room for
 * c->n entries, gone for nknown. */
void nc_patroni_diff(const nc_patroni_cluster *c, const char *const *known, int nknown, int *joined, int *njoined,
                     int *gone, int *ngone);

#endif
