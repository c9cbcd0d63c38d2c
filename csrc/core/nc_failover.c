/* nc_failover.c - the failover decision logic (see nc_failover.h).
 *
 * A pure state machine: no threads, no I/O, no clock.  Every time comes in
 * as an argument (seconds on the caller's monotonic clock, > 0).
 *
 * Terms used below (i is an endpoint index):
 *
 *   role ok(i)     !require_writable || role != READ_ONLY  (UNKNOWN is ok:
 *                  some backends cannot tell)
 *   qualifies(i)   probed && available && role ok: the last report was good
 *   slow(i)        RESPONSE_TIME is in the policy and consecutive_slow >=
 *                  slow_probe_count
 *   fired(i, now)  the first policy of the configured ones that says i is
 *                  failing, in this order (documented preference):
 *                    HEALTH_CHECK   probed && (!available ||
 *                                   (require_writable && role == READ_ONLY))
 *                    FAILURE_COUNT  failures since the last good probe whose
 *                                   time is within failure_timeout of now
 *                                   >= max_failure_count
 *                    RESPONSE_TIME  slow(i)
 *                  HEALTH_CHECK or FAILURE_COUNT means i is unusable;
 *                  RESPONSE_TIME alone means slow but still serving.
 *   candidate      qualifies, not the current endpoint, not slow; best =
 *                  lowest priority number, ties to the lower index.  When the
 *                  current endpoint is unusable and only slow endpoints
 *                  qualify, the best slow one is taken (slow beats down).
 *   split brain    two or more endpoints probed, available and WRITABLE
 *                  (UNKNOWN never counts).
 *
 * Choices beyond the header (each one is exercised by csrc/tests/test_failover.c):
 *   - nc_fo_decide returns NONE while a switch is being carried out
 *     (FAILING_OVER / FAILING_BACK), as do the manual triggers.
 *   - A current endpoint that is only slow (RESPONSE_TIME) with nowhere to
 *     go stays current (NONE): NO_TARGET / UNAVAILABLE would make
 *     get_connection fail fast on an endpoint that still answers.
 *   - A "resume" (a DO_FAILOVER with to == from, from UNAVAILABLE) is not a
 *     switch: it does not start the hold-down and counts in no statistic.
 *     In UNAVAILABLE the hold-down does not apply (service comes first), the
 *     split-brain hold does, and a resume onto the preferred endpoint from
 *     another one is a DO_FAILBACK.  In MANUAL mode UNAVAILABLE resumes on
 *     the same endpoint when it is back (no switch), never on another.
 *   - Passive reports count as reports: they set probed (so HEALTH_CHECK
 *     fires at once even before the first probe).
 *   - A good probe whose time is before the last failure is stale and
 *     ignored (the failure is the newer news).
 *   - Failback also needs the preferred endpoint not slow.
 *   - max_recovery_attempts 0 means no limit.
 *   - A NONE decision still carries `fired` when a policy fired on the
 *     current endpoint but the switch is held (manual mode, hold-down, slow
 *     with nowhere to go); resumes and failbacks carry 0.
 *   - The read-only check on the current endpoint is part of HEALTH_CHECK:
 *     with a policy without that bit a read-only current endpoint is kept.
 */
#include "nc_failover.h"
#include "nc_error.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nc_fo {
    nc_fo_config cfg;
    int n;
    int cap;            /* room in the per-endpoint arrays (nc_fo_reserve) */
    int preferred;
    int current;
    int state;
    int state_before;   /* state when nc_fo_begin was called */
    int has_switched;   /* last_switch is meaningful */
    double last_switch;
    nc_fo_stats stats;
    int *priority;
    int *since_ok;      /* ring entries (newest) since the last good probe */
    int *healthy;       /* healthy_since is running (robust against a time of 0) */
    nc_fo_health *h;
    double grace_until; /* nc_fo_set_grace */
    int sb_active;      /* the previous automatic decision was a split-brain hold ... */
    int sb_from, sb_to; /* ... of this pair */
    int outage;         /* a NO_TARGET was noted and service has not resumed since */
    unsigned char *removed; /* nc_fo_set_removed: left the topology (a tombstone) */
};

/* ---- text ----------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (2..4), 0 if invalid.  s is
 * NUL-terminated and NUL is never a continuation byte, so reading stops in
 * time. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    if (c >= 0xC2 && c <= 0xDF)
        return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned lo = 0x80, hi = 0xBF;
        if (c == 0xE0)
            lo = 0xA0;          /* overlong */
        if (c == 0xED)
            hi = 0x9F;          /* surrogates */
        if (s[1] < lo || s[1] > hi)
            return 0;
        return (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned lo = 0x80, hi = 0xBF;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
        if (s[1] < lo || s[1] > hi)
            return 0;
        if ((s[2] & 0xC0) != 0x80)
            return 0;
        return (s[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* Copy src into dst[cap] as one line of valid UTF-8: control characters
 * become spaces, runs of spaces collapse, leading/trailing spaces go,
 * invalid bytes become '?', and a truncation never splits a character. */
static void copy_text(char *dst, size_t cap, const char *src)
{
    const unsigned char *s = (const unsigned char *)(src ? src : "");
    size_t o = 0;
    if (cap == 0)
        return;
    while (*s && o + 1 < cap) {
        unsigned c = *s;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7F || c == ' ') {
                if (o > 0 && dst[o - 1] != ' ')
                    dst[o++] = ' ';
            } else {
                dst[o++] = (char)c;
            }
            s++;
            continue;
        }
        size_t len = utf8_len(s);
        if (len == 0) {
            dst[o++] = '?';
            s++;
            continue;
        }
        if (o + len + 1 > cap)
            break;
        memcpy(dst + o, s, len);
        o += len;
        s += len;
    }
    while (o > 0 && dst[o - 1] == ' ')
        o--;
    dst[o] = '\0';
}


static void set_reason(nc_fo_decision *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_reason(nc_fo_decision *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    nc_text_vset(d->reason, sizeof d->reason, fmt, ap);
    va_end(ap);
}

/* ---- configuration and life cycle ------------------------------------------ */

void nc_fo_config_defaults(nc_fo_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->mode = NC_FO_AUTOMATIC;
    cfg->policy = NC_FO_COMBINED;
    cfg->max_failure_count = 3;
    cfg->failure_timeout = 30.0;
    cfg->response_time_threshold = 2.0;
    cfg->slow_probe_count = 2;
    cfg->recovery_check_interval = 30.0;
    cfg->max_recovery_attempts = 5;
    cfg->auto_recovery = 1;
    cfg->require_writable = 1;
    cfg->hold_down = 5.0;
}

static int config_ok(const nc_fo_config *c)
{
    if (c->mode != NC_FO_MANUAL && c->mode != NC_FO_AUTOMATIC && c->mode != NC_FO_SEMI_AUTOMATIC)
        return 0;
    if (c->policy <= 0 || (c->policy & ~NC_FO_COMBINED))
        return 0;
    /* the ring holds NC_FO_MAX_FAILS failures: a larger count could never fire */
    if (c->max_failure_count < 1 || c->max_failure_count > NC_FO_MAX_FAILS)
        return 0;
    if (c->slow_probe_count < 1 || c->max_recovery_attempts < 0)
        return 0;
    /* !(x >= 0) also rejects NaN; INFINITY is allowed where it makes sense */
    if (!(c->failure_timeout > 0) || !(c->response_time_threshold >= 0) ||
        !(c->recovery_check_interval >= 0) || !(c->hold_down >= 0))
        return 0;
    return 1;
}

nc_fo *nc_fo_new(const nc_fo_config *cfg, int n, const int *priority, int primary)
{
    if (!cfg || !priority || n < 1 || n > 1 << 20 || primary >= n || !config_ok(cfg))
        return NULL;
    nc_fo *fo = calloc(1, sizeof *fo);
    if (!fo)
        return NULL;
    fo->priority = calloc((size_t)n, sizeof *fo->priority);
    fo->since_ok = calloc((size_t)n, sizeof *fo->since_ok);
    fo->healthy = calloc((size_t)n, sizeof *fo->healthy);
    fo->h = calloc((size_t)n, sizeof *fo->h);
    fo->removed = calloc((size_t)n, sizeof *fo->removed);
    if (!fo->priority || !fo->since_ok || !fo->healthy || !fo->h || !fo->removed) {
        nc_fo_free(fo);
        return NULL;
    }
    fo->cfg = *cfg;
    fo->n = n;
    fo->cap = n;
    memcpy(fo->priority, priority, (size_t)n * sizeof *priority);
    if (primary >= 0) {
        fo->preferred = primary;
    } else {
        fo->preferred = 0;
        for (int i = 1; i < n; i++)
            if (priority[i] < priority[fo->preferred])
                fo->preferred = i;
    }
    fo->current = fo->preferred;
    fo->state = NC_FO_PRIMARY;
    fo->state_before = NC_FO_PRIMARY;
    return fo;
}

void nc_fo_free(nc_fo *fo)
{
    if (!fo)
        return;
    free(fo->priority);
    free(fo->since_ok);
    free(fo->healthy);
    free(fo->h);
    free(fo->removed);
    free(fo);
}

/* Grow every per-endpoint array to room for n (the caller serialises, as
 * for every call here, so nobody holds a pointer into them meanwhile).  A
 * failure part way leaves some arrays longer: harmless, cap stays. */
int nc_fo_reserve(nc_fo *fo, int n)
{
    if (!fo || n < 0 || n > 1 << 20)
        return -1;
    if (n <= fo->cap)
        return 0;
    size_t k = (size_t)n;
    int *p = realloc(fo->priority, k * sizeof *p);
    if (!p)
        return -1;
    fo->priority = p;
    int *s = realloc(fo->since_ok, k * sizeof *s);
    if (!s)
        return -1;
    fo->since_ok = s;
    int *y = realloc(fo->healthy, k * sizeof *y);
    if (!y)
        return -1;
    fo->healthy = y;
    nc_fo_health *h = realloc(fo->h, k * sizeof *h);
    if (!h)
        return -1;
    fo->h = h;
    unsigned char *r = realloc(fo->removed, k * sizeof *r);
    if (!r)
        return -1;
    fo->removed = r;
    fo->cap = n;
    return 0;
}

int nc_fo_add(nc_fo *fo, int priority)
{
    if (!fo || priority < 1 || fo->n >= 1 << 20 || nc_fo_reserve(fo, fo->n + 1) < 0)
        return -1;
    int i = fo->n;
    fo->priority[i] = priority;
    fo->since_ok[i] = 0;
    fo->healthy[i] = 0;
    memset(&fo->h[i], 0, sizeof fo->h[i]);
    fo->removed[i] = 0;
    fo->n = i + 1;
    return i;
}

void nc_fo_set_removed(nc_fo *fo, int i, int removed, double now)
{
    if (!fo || i < 0 || i >= fo->n)
        return;
    fo->removed[i] = removed ? 1 : 0;
    nc_fo_health *h = &fo->h[i];
    h->removed = fo->removed[i];
    fo->since_ok[i] = 0;
    h->nfail = 0;
    h->consecutive_failures = 0;
    h->consecutive_slow = 0;
    h->healthy_since = 0;
    fo->healthy[i] = 0;
    if (removed) {
        /* A failed health check as far as every decision is concerned: the
         * current endpoint leaving is a failover (HEALTH_CHECK), and it is
         * never a target (qualifies) nor a writer (split brain). */
        h->probed = 1;
        h->available = 0;
        h->last_failure = now;
        h->last_bad = now;
        copy_text(h->last_error, sizeof h->last_error, "removed from the topology");
    } else {
        /* Back under the same name: known only from its next probe. */
        h->probed = 0;
        h->available = 0;
        h->role = NC_ROLE_UNKNOWN;
        h->last_error[0] = '\0';
    }
}

int nc_fo_removed(const nc_fo *fo, int i)
{
    return fo && i >= 0 && i < fo->n && fo->removed[i];
}

/* ---- health bookkeeping ------------------------------------------------------ */

static int role_ok(const nc_fo *fo, int i)
{
    return !fo->cfg.require_writable || fo->h[i].role != NC_ROLE_READ_ONLY;
}

static int qualifies(const nc_fo *fo, int i)
{
    const nc_fo_health *h = &fo->h[i];
    return !fo->removed[i] && h->probed && h->available && role_ok(fo, i);
}

static int is_slow(const nc_fo *fo, int i)
{
    return (fo->cfg.policy & NC_FO_RESPONSE_TIME) && fo->h[i].consecutive_slow >= fo->cfg.slow_probe_count;
}

/* Failures since the last good probe that are within failure_timeout of now. */
static int recent_failures(const nc_fo *fo, int i, double now)
{
    const nc_fo_health *h = &fo->h[i];
    int k = fo->since_ok[i], c = 0;
    double oldest = now - fo->cfg.failure_timeout;
    for (int j = h->nfail - k; j < h->nfail; j++)
        if (h->fail_times[j] >= oldest)
            c++;
    return c;
}

static void record_failure_ex(nc_fo *fo, int i, double now, const char *error, int mark_down);

static void record_failure(nc_fo *fo, int i, double now, const char *error)
{
    record_failure_ex(fo, i, now, error, 1);
}

/* mark_down: a probe failed (the endpoint is unavailable); a passive report
 * only counts the failure and leaves availability to the probe it causes. */
static void record_failure_ex(nc_fo *fo, int i, double now, const char *error, int mark_down)
{
    nc_fo_health *h = &fo->h[i];
    /* oldest first; when full, the oldest goes */
    if (h->nfail == NC_FO_MAX_FAILS) {
        memmove(h->fail_times, h->fail_times + 1, (NC_FO_MAX_FAILS - 1) * sizeof h->fail_times[0]);
        h->nfail--;
    }
    h->fail_times[h->nfail++] = now;
    if (fo->since_ok[i] < h->nfail)
        fo->since_ok[i]++;
    if (mark_down) {
        h->probed = 1;
        h->available = 0;
    }
    h->last_failure = now;
    h->last_bad = now;
    copy_text(h->last_error, sizeof h->last_error, error);
    h->consecutive_failures = recent_failures(fo, i, now);
    h->consecutive_slow = 0;
    h->healthy_since = 0;
    fo->healthy[i] = 0;
}

static int valid_role(int role)
{
    return role == NC_ROLE_WRITABLE || role == NC_ROLE_READ_ONLY ? role : NC_ROLE_UNKNOWN;
}

void nc_fo_probe(nc_fo *fo, int i, double now, int ok, double latency, int role, const char *error)
{
    if (!fo || i < 0 || i >= fo->n || fo->removed[i])
        return;   /* a removed endpoint's late probe changes nothing */
    nc_fo_health *h = &fo->h[i];
    if (!ok) {
        record_failure(fo, i, now, error);
        h->last_check = now;
        return;
    }
    /* A good result older than the last failure is stale: keep the failure. */
    if (h->last_failure > 0 && now < h->last_failure)
        return;
    if (!(latency >= 0))
        latency = 0;            /* NaN / negative from a broken clock */
    h->probed = 1;
    h->available = 1;
    h->role = valid_role(role);
    h->response_time = latency;
    h->last_check = now;
    h->consecutive_failures = 0;
    fo->since_ok[i] = 0;        /* the ring keeps the history */
    h->consecutive_slow = latency > fo->cfg.response_time_threshold ? h->consecutive_slow + 1 : 0;
    /* Slow (when that is a policy) or read-only (when that matters) is bad
     * news too: a failover it leads to was detected now. */
    if (((fo->cfg.policy & NC_FO_RESPONSE_TIME) && latency > fo->cfg.response_time_threshold) ||
        !role_ok(fo, i))
        h->last_bad = now;
    if (role_ok(fo, i)) {
        if (!fo->healthy[i]) {
            fo->healthy[i] = 1;
            h->healthy_since = now;
        }
    } else {
        fo->healthy[i] = 0;
        h->healthy_since = 0;
    }
}

void nc_fo_passive(nc_fo *fo, int i, double now, int kind, const char *error)
{
    if (!fo || i < 0 || i >= fo->n || fo->removed[i])
        return;
    /* A report from the query path counts towards FAILURE_COUNT, but one
     * terminated session or one client's READ ONLY transaction does not
     * make a server unusable: the monitor probes the endpoint at once and
     * the probe decides availability and role (HEALTH_CHECK). */
    if (kind == NC_FO_PASSIVE_LOST)
        record_failure_ex(fo, i, now, error, 0);
    fo->h[i].last_bad = now;
}

/* ---- evaluation ---------------------------------------------------------------- */

/* The first configured policy that says endpoint i is failing (HEALTH_CHECK,
 * FAILURE_COUNT, RESPONSE_TIME), with a sentence in why; 0 if none. */
static int fired_on(const nc_fo *fo, int i, double now, char *why, size_t cap)
{
    const nc_fo_health *h = &fo->h[i];
    int pol = fo->cfg.policy;
    const char *sep = h->last_error[0] ? ": " : "";
    int r = 0, bit = 0;
    if ((pol & NC_FO_HEALTH_CHECK) && h->probed && !h->available) {
        r = snprintf(why, cap, "endpoint %d failed its health check%s%s", i, sep, h->last_error);
        bit = NC_FO_HEALTH_CHECK;
    } else if ((pol & NC_FO_HEALTH_CHECK) && h->probed && fo->cfg.require_writable &&
               h->role == NC_ROLE_READ_ONLY) {
        r = snprintf(why, cap, "endpoint %d is read-only", i);
        bit = NC_FO_HEALTH_CHECK;
    } else if ((pol & NC_FO_FAILURE_COUNT) && recent_failures(fo, i, now) >= fo->cfg.max_failure_count) {
        r = snprintf(why, cap, "endpoint %d: %d consecutive failures within %g s%s%s", i,
                     recent_failures(fo, i, now), fo->cfg.failure_timeout, sep, h->last_error);
        bit = NC_FO_FAILURE_COUNT;
    } else if (is_slow(fo, i)) {
        r = snprintf(why, cap, "endpoint %d: response time %.2f s over %.2f s on %d consecutive probes", i,
                     h->response_time, fo->cfg.response_time_threshold, h->consecutive_slow);
        bit = NC_FO_RESPONSE_TIME;
    } else if (cap) {
        why[0] = '\0';
    }
    if (r < 0 && cap)
        why[0] = '\0';
    else if ((size_t)r >= cap && cap)
        nc_utf8_fix_tail(why);
    return bit;
}

static int unusable_bit(int fired)
{
    return fired == NC_FO_HEALTH_CHECK || fired == NC_FO_FAILURE_COUNT;
}

/* Best qualifying endpoint other than `exclude` (-1: none excluded); slow
 * ones only when allow_slow and no other qualifies. */
static int best_of(const nc_fo *fo, int exclude, int allow_slow)
{
    int best = -1, best_slow = -1;
    for (int i = 0; i < fo->n; i++) {
        if (i == exclude || !qualifies(fo, i))
            continue;
        if (is_slow(fo, i)) {
            if (best_slow < 0 || fo->priority[i] < fo->priority[best_slow])
                best_slow = i;
        } else if (best < 0 || fo->priority[i] < fo->priority[best]) {
            best = i;
        }
    }
    return best >= 0 ? best : allow_slow ? best_slow : -1;
}

/* Number of probed, available, WRITABLE endpoints; their indices in list. */
static int writable_count(const nc_fo *fo, char *list, size_t cap)
{
    int c = 0;
    size_t o = 0;
    if (cap)
        list[0] = '\0';
    for (int i = 0; i < fo->n; i++) {
        const nc_fo_health *h = &fo->h[i];
        if (fo->removed[i] || !(h->probed && h->available && h->role == NC_ROLE_WRITABLE))
            continue;
        if (o < cap) {
            int r = snprintf(list + o, cap - o, "%s%d", c ? ", " : "", i);
            if (r > 0)
                o += (size_t)r;
        }
        c++;
    }
    return c;
}

/* During the start-up grace: an endpoint not probed yet, else -1. */
static int unprobed_in_grace(const nc_fo *fo, double now)
{
    if (!(now < fo->grace_until))
        return -1;
    for (int i = 0; i < fo->n; i++)
        if (!fo->h[i].probed && !fo->removed[i])
            return i;
    return -1;
}

static int hold_down_active(const nc_fo *fo, double now)
{
    return fo->has_switched && now < fo->last_switch + fo->cfg.hold_down;
}

static int in_switch(const nc_fo *fo)
{
    return fo->state == NC_FO_FAILING_OVER || fo->state == NC_FO_FAILING_BACK;
}

static nc_fo_decision blank(const nc_fo *fo)
{
    nc_fo_decision d;
    memset(&d, 0, sizeof d);
    d.action = NC_FO_NONE;
    d.from = fo ? fo->current : -1;
    d.to = -1;
    return d;
}

/* The switch action towards `to` (a resume when to is the current). */
static int switch_action(const nc_fo *fo, int to)
{
    return to != fo->current && to == fo->preferred ? NC_FO_DO_FAILBACK : NC_FO_DO_FAILOVER;
}

/* Why endpoint i does not qualify, for reasons. */
static void why_not(const nc_fo *fo, int i, char *buf, size_t cap)
{
    const nc_fo_health *h = &fo->h[i];
    int r;
    if (!h->probed)
        r = snprintf(buf, cap, "endpoint %d has not been probed yet", i);
    else if (!h->available)
        r = snprintf(buf, cap, "endpoint %d failed its last check%s%s", i, h->last_error[0] ? ": " : "",
                     h->last_error);
    else if (!role_ok(fo, i))
        r = snprintf(buf, cap, "endpoint %d is read-only", i);
    else
        r = snprintf(buf, cap, "endpoint %d is usable", i);
    if (r < 0)
        buf[0] = '\0';
    else if ((size_t)r >= cap)
        nc_utf8_fix_tail(buf);
}

static nc_fo_decision decide_unavailable(const nc_fo *fo, double now)
{
    nc_fo_decision d = blank(fo);
    int cur = fo->current;
    char sb[160];
    (void)now;
    int to;
    if (fo->cfg.mode == NC_FO_MANUAL) {
        /* Resuming on the same endpoint is no switch; another one is the
         * operator's call. */
        if (!qualifies(fo, cur)) {
            char why[200];
            why_not(fo, cur, why, sizeof why);
            int other = best_of(fo, cur, 1);
            if (other >= 0)
                set_reason(&d, "no service: %s; manual mode: endpoint %d could take over", why, other);
            else
                set_reason(&d, "no service: %s; no endpoint is usable", why);
            return d;
        }
        to = cur;
    } else {
        to = best_of(fo, -1, 1);
        if (to < 0) {
            set_reason(&d, "no service: no endpoint is usable");
            return d;
        }
    }
    if (writable_count(fo, sb, sizeof sb) >= 2) {
        d.action = NC_FO_SPLIT_BRAIN;
        d.to = to;
        set_reason(&d, "not resuming service on endpoint %d: endpoints %s all accept writes (split brain)", to, sb);
        return d;
    }
    d.action = switch_action(fo, to);
    d.to = to;
    if (to == cur)
        set_reason(&d, "service resumed on endpoint %d", to);
    else
        set_reason(&d, "service resumed on endpoint %d (endpoint %d is still unusable)", to, cur);
    return d;
}

nc_fo_decision nc_fo_decide(const nc_fo *fo, double now)
{
    nc_fo_decision d = blank(fo);
    if (!fo) {
        set_reason(&d, "no failover state");
        return d;
    }
    if (in_switch(fo)) {
        set_reason(&d, "a switch is in progress");
        return d;
    }
    if (fo->state == NC_FO_UNAVAILABLE)
        return decide_unavailable(fo, now);

    int cur = fo->current, pref = fo->preferred;
    char why[200], sb[160];
    int fired = fired_on(fo, cur, now, why, sizeof why);
    if (fired) {
        int unusable = unusable_bit(fired);
        /* Down beats slow: a slow target is taken only when the current is unusable. */
        int cand = best_of(fo, cur, unusable);
        d.fired = fired;
        if (fo->cfg.mode == NC_FO_MANUAL) {
            if (cand >= 0)
                set_reason(&d, "%s; manual mode: would fail over to endpoint %d", why, cand);
            else
                set_reason(&d, "%s; manual mode: no endpoint could take over", why);
            return d;
        }
        if (hold_down_active(fo, now)) {
            set_reason(&d, "%s; hold-down: %.2f s since the last switch, %g s required", why,
                       now - fo->last_switch, fo->cfg.hold_down);
            return d;
        }
        if (writable_count(fo, sb, sizeof sb) >= 2) {
            d.action = NC_FO_SPLIT_BRAIN;
            d.to = cand;
            set_reason(&d, "%s; not failing over: endpoints %s all accept writes (split brain)", why, sb);
            return d;
        }
        if (cand < 0) {
            if (!unusable) {
                set_reason(&d, "%s; no endpoint can take over, staying on endpoint %d", why, cur);
                return d;
            }
            int waiting = unprobed_in_grace(fo, now);
            if (waiting >= 0) {
                /* Its probe thread reports within the grace and wakes the
                 * decision thread: no verdict before it has. */
                set_reason(&d, "%s; waiting for the first probe of endpoint %d", why, waiting);
                return d;
            }
            d.action = NC_FO_NO_TARGET;
            set_reason(&d, "%s; no endpoint can take over", why);
            return d;
        }
        d.action = switch_action(fo, cand);
        d.to = cand;
        if (d.action == NC_FO_DO_FAILBACK)
            set_reason(&d, "%s; failing over to endpoint %d (the preferred endpoint)", why, cand);
        else
            set_reason(&d, "%s; failing over to endpoint %d", why, cand);
        return d;
    }

    if (cur == pref) {
        set_reason(&d, "endpoint %d (preferred) is fine", cur);
        return d;
    }

    /* failback consideration */
    const nc_fo_health *ph = &fo->h[pref];
    if (fo->cfg.mode != NC_FO_AUTOMATIC || !fo->cfg.auto_recovery) {
        set_reason(&d, "on endpoint %d; automatic failback is off", cur);
        return d;
    }
    if (fo->stats.recovery_suspended) {
        set_reason(&d, "on endpoint %d; automatic failback suspended after %d failed attempts", cur,
                   fo->stats.recovery_failures_in_a_row);
        return d;
    }
    if (!qualifies(fo, pref) || is_slow(fo, pref) || !fo->healthy[pref]) {
        char wn[200];
        if (qualifies(fo, pref) && is_slow(fo, pref))
            snprintf(wn, sizeof wn, "endpoint %d is slow", pref);
        else
            why_not(fo, pref, wn, sizeof wn);
        set_reason(&d, "on endpoint %d; not failing back: %s", cur, wn);
        return d;
    }
    if (now - ph->healthy_since < fo->cfg.recovery_check_interval) {
        set_reason(&d, "on endpoint %d; preferred endpoint %d healthy for %.2f s of %g s", cur, pref,
                   now - ph->healthy_since, fo->cfg.recovery_check_interval);
        return d;
    }
    if (hold_down_active(fo, now)) {
        set_reason(&d, "on endpoint %d; failback held: %.2f s since the last switch, %g s required", cur,
                   now - fo->last_switch, fo->cfg.hold_down);
        return d;
    }
    d.to = pref;
    if (writable_count(fo, sb, sizeof sb) >= 2) {
        d.action = NC_FO_SPLIT_BRAIN;
        set_reason(&d, "not failing back to endpoint %d: endpoints %s all accept writes (split brain)", pref, sb);
        return d;
    }
    d.action = NC_FO_DO_FAILBACK;
    set_reason(&d, "endpoint %d (preferred) healthy for %.2f s; failing back from endpoint %d", pref,
               now - ph->healthy_since, cur);
    return d;
}

/* ---- manual triggers ------------------------------------------------------------ */

nc_fo_decision nc_fo_manual_failover(const nc_fo *fo, double now, int target, const char *reason)
{
    nc_fo_decision d = blank(fo);
    char why[200], rs[200];
    (void)now;
    d.manual = 1;
    if (!fo) {
        set_reason(&d, "no failover state");
        return d;
    }
    if (in_switch(fo)) {
        set_reason(&d, "a switch is in progress");
        return d;
    }
    int cur = fo->current;
    int unavailable = fo->state == NC_FO_UNAVAILABLE;
    int to;
    if (target >= fo->n) {
        set_reason(&d, "there is no endpoint %d", target);
        return d;
    }
    if (target >= 0) {
        /* On the current endpoint only to resume service after UNAVAILABLE. */
        if (target == cur && !unavailable) {
            set_reason(&d, "already on endpoint %d", cur);
            return d;
        }
        if (!qualifies(fo, target)) {
            why_not(fo, target, why, sizeof why);
            set_reason(&d, "cannot fail over to endpoint %d: %s", target, why);
            return d;
        }
        to = target;
    } else {
        to = best_of(fo, cur, 1);
        if (to < 0) {
            set_reason(&d, "no endpoint other than endpoint %d is usable", cur);
            return d;
        }
    }
    d.action = switch_action(fo, to);
    d.to = to;
    copy_text(rs, sizeof rs, reason);
    if (to == cur)
        set_reason(&d, "manual: service resumed on endpoint %d%s%s", to, rs[0] ? ": " : "", rs);
    else
        set_reason(&d, "manual failover from endpoint %d to endpoint %d%s%s", cur, to, rs[0] ? ": " : "", rs);
    return d;
}

nc_fo_decision nc_fo_manual_recovery(nc_fo *fo, double now)
{
    nc_fo_decision d = blank(fo);
    char why[200];
    (void)now;
    d.manual = 1;
    if (!fo) {
        set_reason(&d, "no failover state");
        return d;
    }
    fo->stats.recovery_suspended = 0;
    fo->stats.recovery_failures_in_a_row = 0;
    if (in_switch(fo)) {
        set_reason(&d, "a switch is in progress");
        return d;
    }
    int cur = fo->current, pref = fo->preferred;
    if (cur == pref) {
        if (fo->state == NC_FO_UNAVAILABLE && qualifies(fo, pref)) {
            d.action = NC_FO_DO_FAILOVER;   /* a resume: from == to */
            d.to = pref;
            set_reason(&d, "manual: service resumed on endpoint %d", pref);
            return d;
        }
        set_reason(&d, "already on the preferred endpoint %d", pref);
        return d;
    }
    if (!qualifies(fo, pref)) {
        why_not(fo, pref, why, sizeof why);
        set_reason(&d, "cannot fail back to endpoint %d: %s", pref, why);
        return d;
    }
    d.action = NC_FO_DO_FAILBACK;
    d.to = pref;
    set_reason(&d, "manual recovery: failing back from endpoint %d to endpoint %d", cur, pref);
    return d;
}

/* ---- noting automatic decisions ------------------------------------------------------ */

void nc_fo_set_grace(nc_fo *fo, double until)
{
    if (fo)
        fo->grace_until = until;
}

int nc_fo_note(nc_fo *fo, const nc_fo_decision *d, double now)
{
    if (!fo || !d)
        return 0;
    int news = 0;
    int same_sb = fo->sb_active && fo->sb_from == d->from && fo->sb_to == d->to;
    fo->sb_active = d->action == NC_FO_SPLIT_BRAIN;
    fo->sb_from = d->from;
    fo->sb_to = d->to;
    if (d->action == NC_FO_SPLIT_BRAIN) {
        news = !same_sb;
    } else if (d->action == NC_FO_NO_TARGET) {
        nc_fo_done(fo, d, now, 0, 0);
        news = !fo->outage;
        fo->outage = 1;
    }
    if (nc_fo_current_usable(fo))
        fo->outage = 0;
    return news;
}

double nc_fo_detected_at(const nc_fo *fo, const nc_fo_decision *d)
{
    if (!fo || !d || d->manual || !d->fired || d->from < 0 || d->from >= fo->n)
        return 0;
    return fo->h[d->from].last_bad;
}

/* ---- carrying out ------------------------------------------------------------------ */

void nc_fo_begin(nc_fo *fo, const nc_fo_decision *d, double now)
{
    (void)now;
    if (!fo || !d || in_switch(fo))
        return;
    if (d->action == NC_FO_DO_FAILOVER || d->action == NC_FO_DO_FAILBACK) {
        fo->state_before = fo->state;
        fo->state = d->action == NC_FO_DO_FAILOVER ? NC_FO_FAILING_OVER : NC_FO_FAILING_BACK;
    }
}

static int settled_state(const nc_fo *fo)
{
    return fo->current == fo->preferred ? NC_FO_PRIMARY : NC_FO_SECONDARY;
}

static void done_impl(nc_fo *fo, const nc_fo_decision *d, double now, double duration, int success);

void nc_fo_done(nc_fo *fo, const nc_fo_decision *d, double now, double duration, int success)
{
    done_impl(fo, d, now, duration, success);
    if (fo && nc_fo_current_usable(fo) && !in_switch(fo))
        fo->outage = 0;   /* service is back: the next NO_TARGET is a new outage */
}

static void done_impl(nc_fo *fo, const nc_fo_decision *d, double now, double duration, int success)
{
    if (!fo || !d)
        return;
    int before = in_switch(fo) ? fo->state_before : fo->state;
    nc_fo_stats *st = &fo->stats;

    if (d->action == NC_FO_NO_TARGET) {
        if (before != NC_FO_UNAVAILABLE) {     /* once per outage */
            st->total_failovers++;
            st->failed_failovers++;
        }
        fo->state = NC_FO_UNAVAILABLE;
        return;
    }
    if (d->action != NC_FO_DO_FAILOVER && d->action != NC_FO_DO_FAILBACK) {
        if (in_switch(fo))
            fo->state = before;
        return;
    }

    int to = d->to;
    int valid = to >= 0 && to < fo->n;
    int is_switch = valid && to != fo->current;   /* a resume is not a switch */
    if (!(duration >= 0))
        duration = 0;

    if (success && valid) {
        fo->current = to;
        fo->state = settled_state(fo);
        if (!is_switch)
            return;
        fo->has_switched = 1;
        fo->last_switch = now;
        if (d->action == NC_FO_DO_FAILBACK) {
            st->total_recoveries++;
            st->successful_recoveries++;
            st->recovery_failures_in_a_row = 0;
        } else {
            st->total_failovers++;
            st->successful_failovers++;
            st->failover_time_total += duration;
        }
        return;
    }

    if (is_switch) {
        if (d->action == NC_FO_DO_FAILBACK) {
            st->total_recoveries++;
            st->failed_recoveries++;
            st->recovery_failures_in_a_row++;
            if (fo->cfg.max_recovery_attempts > 0 &&
                st->recovery_failures_in_a_row >= fo->cfg.max_recovery_attempts)
                st->recovery_suspended = 1;
        } else {
            st->total_failovers++;
            st->failed_failovers++;
        }
    }
    /* Current unchanged: usable unless the policy says it is down.  Coming
     * from UNAVAILABLE it stays UNAVAILABLE (the next decision resumes). */
    int usable;
    if (before == NC_FO_UNAVAILABLE) {
        usable = 0;
    } else {
        char why[8];
        usable = !unusable_bit(fired_on(fo, fo->current, now, why, sizeof why));
    }
    fo->state = usable ? settled_state(fo) : NC_FO_UNAVAILABLE;
}

/* ---- queries ------------------------------------------------------------------------ */

int nc_fo_current_usable(const nc_fo *fo)
{
    /* A current endpoint that left the topology takes no more borrows,
     * whatever the mode, until a switch. */
    return fo && fo->state != NC_FO_UNAVAILABLE && !fo->removed[fo->current];
}

int nc_fo_current(const nc_fo *fo)
{
    return fo ? fo->current : -1;
}

int nc_fo_preferred(const nc_fo *fo)
{
    return fo ? fo->preferred : -1;
}

int nc_fo_state(const nc_fo *fo)
{
    return fo ? fo->state : NC_FO_UNAVAILABLE;
}

int nc_fo_count(const nc_fo *fo)
{
    return fo ? fo->n : 0;
}

const nc_fo_health *nc_fo_health_of(const nc_fo *fo, int i)
{
    if (!fo || i < 0 || i >= fo->n)
        return NULL;
    return &fo->h[i];
}

void nc_fo_get_stats(const nc_fo *fo, nc_fo_stats *out)
{
    if (!out)
        return;
    if (!fo) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = fo->stats;
}

/* ---- names ------------------------------------------------------------------------- */

static const char *const state_names[NC_FO_STATE_COUNT] = {
    "primary", "failing_over", "secondary", "failing_back", "recovering", "unavailable"};
static const char *const mode_names[NC_FO_MODE_COUNT] = {"manual", "automatic", "semi_automatic"};
static const char *const role_names[NC_ROLE_COUNT] = {"unknown", "primary", "standby"};
static const struct { int bits; const char *name; } policy_names[] = {
    {NC_FO_FAILURE_COUNT, "failure_count"},
    {NC_FO_RESPONSE_TIME, "response_time"},
    {NC_FO_HEALTH_CHECK, "health_check"},
    {NC_FO_COMBINED, "combined"},
};

const char *nc_fo_state_name(int state)
{
    return state >= 0 && state < NC_FO_STATE_COUNT ? state_names[state] : "unknown";
}

const char *nc_fo_mode_name(int mode)
{
    return mode >= 0 && mode < NC_FO_MODE_COUNT ? mode_names[mode] : "unknown";
}

const char *nc_role_name(int role)
{
    return role >= 0 && role < NC_ROLE_COUNT ? role_names[role] : "unknown";
}

const char *nc_fo_policy_name(int bits)
{
    for (size_t i = 0; i < sizeof policy_names / sizeof policy_names[0]; i++)
        if (policy_names[i].bits == bits)
            return policy_names[i].name;
    return "unknown";
}

int nc_fo_mode_from_name(const char *name)
{
    for (int i = 0; name && i < NC_FO_MODE_COUNT; i++)
        if (!strcmp(mode_names[i], name))
            return i;
    return -1;
}

int nc_fo_policy_from_name(const char *name)
{
    for (size_t i = 0; name && i < sizeof policy_names / sizeof policy_names[0]; i++)
        if (!strcmp(policy_names[i].name, name))
            return policy_names[i].bits;
    return -1;
}
