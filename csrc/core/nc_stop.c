/* nc_stop.c - the per-thread stop check of long waits (see nc_stop.h). */
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
