/* nc_stop.c - the per-thread stop check of long waits (see nc_stop.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nc_stop.h"
#include "nc_time.h"

#include <stddef.h>

/* stop: the check said stop (sticky until removed); next: the monotonic
 * time of its next call. */
static _Thread_local nc_stop_saved tl;

void nc_stop_install(nc_stop_fn fn, void *arg)
{
    tl.fn = fn;
    tl.arg = arg;
    tl.stop = 0;
    /* First asked a period into the wait: a statement that takes less pays
     * nothing (the check takes the GIL). */
    tl.next = fn ? nc_now() + NC_STOP_PERIOD : 0;
}

nc_stop_saved nc_stop_pause(void)
{
    nc_stop_saved saved = tl;
    tl.fn = NULL;
    tl.arg = NULL;
    tl.stop = 0;
    return saved;
}

void nc_stop_resume(nc_stop_saved saved)
{
    tl = saved;
}

int nc_stop_installed(void)
{
    return tl.fn != NULL;
}

int nc_stop_check(void)
{
    if (!tl.fn || tl.stop)
        return tl.stop;
    /* SQLite's progress handler asks every thousand instructions: the
     * check (which takes the GIL) runs only a few times per period. */
    double now = nc_now();
    if (now < tl.next)
        return 0;
    tl.next = now + NC_STOP_PERIOD / 2;
    tl.stop = tl.fn(tl.arg) != 0;
    return tl.stop;
}

int nc_stop_seen(void)
{
    return tl.stop;
}

double nc_stop_slice(double deadline)
{
    if (!tl.fn)
        return deadline;
    double slice = nc_now() + NC_STOP_PERIOD;
    return slice < deadline ? slice : deadline;
}

int nc_stop_join(pthread_t t, double deadline)
{
    for (;;) {
        if (nc_stop_seen())
            return pthread_tryjoin_np(t, NULL) == 0 ? 0 : -1;
        double until = nc_stop_slice(deadline);
        double left = until - nc_now();
        /* pthread_timedjoin_np takes a CLOCK_REALTIME time. */
        struct timespec ts = nc_abstime(nc_wall() + (left > 0 ? left : 0));
        if (pthread_timedjoin_np(t, NULL, &ts) == 0)
            return 0;
        if (until >= deadline || nc_stop_check())
            return -1;
    }
}
