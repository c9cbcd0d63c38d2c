/* nc_time.h - monotonic clock helpers.  Every deadline in the core is an
 * absolute CLOCK_MONOTONIC time in seconds (double); NC_NO_DEADLINE means none. */
#ifndef NC_TIME_H
#define NC_TIME_H

#include <time.h>
#include <math.h>

#define NC_NO_DEADLINE INFINITY

static inline double nc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Wall clock, for timestamps shown to users. */
static inline double nc_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Milliseconds left until deadline for poll(): -1 for none, 0 when passed. */
static inline int nc_ms_left(double deadline)
{
    if (isinf(deadline))
        return -1;
    double left = deadline - nc_now();
    if (left <= 0)
        return 0;
    double ms = ceil(left * 1000.0);
    return ms > 2147483647.0 ? 2147483647 : (int)ms;
}

/* Absolute CLOCK_MONOTONIC timespec for pthread_cond_timedwait. */
static inline struct timespec nc_abstime(double deadline)
{
    struct timespec ts;
    /* Far-off (or infinite) deadlines would overflow time_t: a thousand
     * years is forever enough. */
    if (!(deadline < 3.2e10))
        deadline = 3.2e10;
    ts.tv_sec = (time_t)deadline;
    ts.tv_nsec = (long)((deadline - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    if (ts.tv_nsec < 0) ts.tv_nsec = 0;
    return ts;
}

#endif
