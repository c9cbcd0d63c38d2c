/* nc_replica.c - replica lag from LSN progress, and the read choice (see
 * nc_replica.h). */
#include "nc_replica.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const target_names[NC_TARGET_COUNT] = {
    [NC_TARGET_PRIMARY] = "primary",
    [NC_TARGET_STANDBY] = "standby",
    [NC_TARGET_PREFER_STANDBY] = "prefer-standby",
    [NC_TARGET_ANY] = "any",
};

const char *nc_target_name(int target)
{
    return target >= 0 && target < NC_TARGET_COUNT ? target_names[target] : "unknown";
}

int nc_target_from_name(const char *name)
{
    for (int i = 0; name && i < NC_TARGET_COUNT; i++)
        if (!strcmp(name, target_names[i]))
            return i;
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* One half of an LSN: 1 to 8 hex digits up to end (or '\0'). */
static int half(const char **s, char end, uint32_t *out)
{
    uint32_t v = 0;
    int digits = 0;
    for (; **s && **s != end; (*s)++) {
        int h = hexval(**s);
        if (h < 0 || ++digits > 8)
            return -1;
        v = (v << 4) | (uint32_t)h;
    }
    *out = v;
    return digits ? 0 : -1;
}

int nc_lsn_parse(const char *text, uint64_t *out)
{
    if (!text)
        return -1;
    uint32_t hi, lo;
    const char *s = text;
    if (half(&s, '/', &hi) < 0 || *s != '/')
        return -1;
    s++;
    if (half(&s, '\0', &lo) < 0 || *s)
        return -1;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

void nc_lsn_history_clear(nc_lsn_history *h)
{
    h->head = h->count = h->wrapped = 0;
    h->confirmed = 0;
}

static int slot(const nc_lsn_history *h, int k)
{
    return (h->head + k) % NC_LSN_HISTORY;
}

int nc_lsn_history_newest(const nc_lsn_history *h, uint64_t *lsn)
{
    if (h->count == 0) {
        *lsn = 0;
        return -1;
    }
    *lsn = h->lsn[slot(h, h->count - 1)];
    return 0;
}

void nc_lsn_history_add(nc_lsn_history *h, double t, uint64_t lsn)
{
    uint64_t newest;
    if (nc_lsn_history_newest(h, &newest) == 0) {
        if (lsn == newest) {
            if (t > h->confirmed)
                h->confirmed = t;
            return;                 /* not an advance: the first sighting's time stays */
        }
        if (lsn < newest)
            nc_lsn_history_clear(h);
    }
    if (h->count == NC_LSN_HISTORY) {
        h->head = slot(h, 1);
        h->count--;
        h->wrapped = 1;
    }
    int i = slot(h, h->count++);
    h->t[i] = t;
    h->lsn[i] = lsn;
    if (t > h->confirmed)
        h->confirmed = t;
}

int nc_lsn_history_seen_after(const nc_lsn_history *h, double t, uint64_t *lsn)
{
    /* The oldest sighting at or after t (times grow along the ring); if the
     * position stood still since before t, its confirmation counts. */
    for (int k = 0; k < h->count; k++) {
        int i = slot(h, k);
        if (h->t[i] >= t) {
            *lsn = h->lsn[i];
            return 0;
        }
    }
    if (h->count > 0 && h->confirmed >= t)
        return nc_lsn_history_newest(h, lsn);
    return -1;
}

double nc_lag_bytes(const nc_lsn_history *h, uint64_t replay)
{
    uint64_t newest;
    if (nc_lsn_history_newest(h, &newest) < 0)
        return NAN;
    return newest > replay ? (double)(newest - replay) : 0.0;
}

double nc_lag_seconds(const nc_lsn_history *h, uint64_t replay, double at)
{
    if (h->count == 0)
        return NAN;
    /* The oldest sighting past replay (positions only grow along the ring). */
    int lo = 0, hi = h->count;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (h->lsn[slot(h, mid)] > replay)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo == h->count)
        return 0.0;                 /* it has everything the primary was seen with */
    double since = h->t[slot(h, lo)];
    /* lo == 0 with dropped entries: the primary passed replay before the
     * oldest kept sighting; the lag is at least this much. */
    return at > since ? at - since : 0.0;
}

int nc_read_eligible(const nc_read_ep *e, const nc_read_limits *lim)
{
    return e->up && e->standby && !isnan(e->lag_bytes) && !isnan(e->lag_seconds) &&
           e->lag_bytes <= lim->max_lag_bytes && e->lag_seconds <= lim->max_lag_seconds &&
           (!lim->need_lsn || (e->have_replay && e->replay >= lim->min_lsn));
}

int nc_read_choose(int target, const nc_read_ep *eps, int n, int primary, const nc_read_limits *lim,
                   unsigned *rr)
{
    if (target != NC_TARGET_STANDBY && target != NC_TARGET_PREFER_STANDBY && target != NC_TARGET_ANY)
        return -1;
    if (n <= 0)
        return -1;
    int best = -1, least = 0;
    unsigned start = *rr % (unsigned)n;
    /* In turn from the cursor, so that the first of the least busy found is
     * the next in round-robin order. */
    for (int k = 0; k < n; k++) {
        int i = (int)((start + (unsigned)k) % (unsigned)n);
        int ok = i == primary ? target == NC_TARGET_ANY && eps[i].up : nc_read_eligible(&eps[i], lim);
        if (!ok)
            continue;
        if (best < 0 || eps[i].in_flight < least) {
            best = i;
            least = eps[i].in_flight;
        }
    }
    if (best >= 0)
        *rr = (unsigned)best + 1;
    return best;
}
