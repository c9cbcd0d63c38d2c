/* test_failover.c - unit tests for the failover decision logic
 * (csrc/core/nc_failover.c), a pure state machine, with made-up times.
 *
 * Plain C with check.h: each test function is one test, each CHECK one check;
 * a failed check prints one line, every test function reports its counts, and
 * the exit status is non-zero when anything failed.
 * No threads, no sleeping: it runs in milliseconds.
 *
 * Times are seconds on an imaginary monotonic clock starting at 100.
 */
#include "nc_failover.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define W NC_ROLE_WRITABLE
#define RO NC_ROLE_READ_ONLY
#define UNK NC_ROLE_UNKNOWN

static const char *act_name(int a)
{
    switch (a) {
    case NC_FO_NONE: return "NONE";
    case NC_FO_DO_FAILOVER: return "DO_FAILOVER";
    case NC_FO_DO_FAILBACK: return "DO_FAILBACK";
    case NC_FO_SPLIT_BRAIN: return "SPLIT_BRAIN";
    case NC_FO_NO_TARGET: return "NO_TARGET";
    default: return "?";
    }
}

/* Decision d is action a from -> to (fired f); prints the reason otherwise. */
#define CHECK_D(d, a, f_, t_, fired_)                                                              \
    CHECK((d).action == (a) && (d).from == (f_) && (d).to == (t_) && (d).fired == (fired_),       \
          "got %s %d->%d fired %d (%s), want %s %d->%d fired %d", act_name((d).action), (d).from, \
          (d).to, (d).fired, (d).reason, act_name(a), (f_), (t_), (fired_))

#define CHECK_REASON(d, text) \
    CHECK(strstr((d).reason, (text)) != NULL, "reason \"%s\" lacks \"%s\"", (d).reason, (text))

static nc_fo_config defaults(void)
{
    nc_fo_config c;
    nc_fo_config_defaults(&c);
    return c;
}

static nc_fo *mk(const nc_fo_config *c, int n, const int *prio, int primary)
{
    nc_fo *fo = nc_fo_new(c, n, prio, primary);
    if (!fo) {
        printf("FAIL nc_fo_new returned NULL\n");
        exit(2);
    }
    return fo;
}

/* Two endpoints, 0 preferred. */
static nc_fo *mk2(const nc_fo_config *c)
{
    static const int prio[] = {1, 2};
    return mk(c, 2, prio, -1);
}

static void ok(nc_fo *fo, int i, double t, double lat, int role)
{
    nc_fo_probe(fo, i, t, 1, lat, role, NULL);
}

static void bad(nc_fo *fo, int i, double t)
{
    nc_fo_probe(fo, i, t, 0, 0, UNK, "connection refused");
}

/* Carry out d: begin, then done. */
static void run(nc_fo *fo, const nc_fo_decision *d, double t, double dur, int success)
{
    nc_fo_begin(fo, d, t);
    nc_fo_done(fo, d, t + dur, dur, success);
}

static int utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 0 : *p >= 0xF0 && *p <= 0xF4 ? 3 : *p >= 0xE0 ? 2 : *p >= 0xC2 && *p < 0xE0 ? 1 : -1;
        if (n < 0)
            return 0;
        p++;
        for (int k = 0; k < n; k++, p++)
            if ((*p & 0xC0) != 0x80)
                return 0;
    }
    return 1;
}

/* ---- configuration, construction, names ------------------------------------ */

static void test_config(void)
{
    nc_fo_config c = defaults();
    CHECK(c.mode == NC_FO_AUTOMATIC && c.policy == NC_FO_COMBINED, "mode %d policy %d", c.mode, c.policy);
    CHECK(c.max_failure_count == 3 && c.failure_timeout == 30 && c.response_time_threshold == 2.0 &&
              c.slow_probe_count == 2,
          "failure/response defaults");
    CHECK(c.recovery_check_interval == 30 && c.max_recovery_attempts == 5 && c.auto_recovery == 1 &&
              c.require_writable == 1 && c.hold_down == 5,
          "recovery defaults");

    int prio[] = {3, 1, 2, 1};
    nc_fo *fo = mk(&c, 4, prio, -1);
    CHECK(nc_fo_preferred(fo) == 1, "preferred %d, want 1 (lowest priority, tie to lower index)",
          nc_fo_preferred(fo));
    CHECK(nc_fo_current(fo) == 1 && nc_fo_state(fo) == NC_FO_PRIMARY && nc_fo_current_usable(fo),
          "start: current %d state %d", nc_fo_current(fo), nc_fo_state(fo));
    CHECK(nc_fo_count(fo) == 4, "count %d", nc_fo_count(fo));
    CHECK(nc_fo_health_of(fo, 4) == NULL && nc_fo_health_of(fo, -1) == NULL && nc_fo_health_of(fo, 3),
          "health_of bounds");
    nc_fo_free(fo);

    fo = mk(&c, 4, prio, 2);
    CHECK(nc_fo_preferred(fo) == 2 && nc_fo_current(fo) == 2, "is_primary wins: %d", nc_fo_preferred(fo));
    nc_fo_decision d = nc_fo_decide(fo, 100);
    CHECK_D(d, NC_FO_NONE, 2, -1, 0);
    nc_fo_free(fo);

    /* bad arguments */
    CHECK(nc_fo_new(NULL, 2, prio, -1) == NULL, "NULL cfg");
    CHECK(nc_fo_new(&c, 0, prio, -1) == NULL, "n 0");
    CHECK(nc_fo_new(&c, 2, NULL, -1) == NULL, "NULL priority");
    CHECK(nc_fo_new(&c, 2, prio, 2) == NULL, "primary out of range");
    nc_fo_config b = c;
    b.max_failure_count = 0;
    CHECK(nc_fo_new(&b, 2, prio, -1) == NULL, "max_failure_count 0");
    b = c;
    b.max_failure_count = NC_FO_MAX_FAILS + 1;
    CHECK(nc_fo_new(&b, 2, prio, -1) == NULL, "max_failure_count over the ring");
    b = c;
    b.slow_probe_count = 0;
    CHECK(nc_fo_new(&b, 2, prio, -1) == NULL, "slow_probe_count 0");
    b = c;
    b.policy = 0;
    CHECK(nc_fo_new(&b, 2, prio, -1) == NULL, "policy 0");
    b = c;
    b.policy = 8;
    CHECK(nc_fo_new(&b, 2, prio, -1) == NULL, "policy 8");
    b = c;
    b.mode = 3;
    CHECK(nc_fo_new(&b, 2, prio, -1) == NULL, "mode 3");
    b = c;
    b.failure_timeout = NAN;
    CHECK(nc_fo_new(&b, 2, prio, -1) == NULL, "NaN failure_timeout");
    b = c;
    b.hold_down = -1;
    CHECK(nc_fo_new(&b, 2, prio, -1) == NULL, "negative hold_down");
    b = c;
    b.failure_timeout = INFINITY;
    fo = nc_fo_new(&b, 2, prio, -1);
    CHECK(fo != NULL, "infinite failure_timeout is allowed");
    nc_fo_free(fo);
    nc_fo_free(NULL);
}

static void test_names(void)
{
    static const char *want[] = {"primary", "failing_over", "secondary", "failing_back", "recovering", "unavailable"};
    int states[] = {NC_FO_PRIMARY, NC_FO_FAILING_OVER, NC_FO_SECONDARY, NC_FO_FAILING_BACK, NC_FO_RECOVERING,
                    NC_FO_UNAVAILABLE};
    for (int i = 0; i < 6; i++)
        CHECK(strcmp(nc_fo_state_name(states[i]), want[i]) == 0, "state %d: %s", states[i],
              nc_fo_state_name(states[i]));
    CHECK(strcmp(nc_fo_state_name(99), "unknown") == 0 && strcmp(nc_fo_state_name(-1), "unknown") == 0,
          "unknown state");
    CHECK(strcmp(nc_fo_policy_name(NC_FO_FAILURE_COUNT), "failure_count") == 0, "failure_count");
    CHECK(strcmp(nc_fo_policy_name(NC_FO_RESPONSE_TIME), "response_time") == 0, "response_time");
    CHECK(strcmp(nc_fo_policy_name(NC_FO_HEALTH_CHECK), "health_check") == 0, "health_check");
    CHECK(nc_fo_policy_name(0) != NULL && nc_fo_policy_name(3) != NULL, "never NULL");

    /* the names are the Python enums' values, and parse back */
    static const char *modes[] = {"manual", "automatic", "semi_automatic"};
    for (int i = 0; i < 3; i++)
        CHECK(!strcmp(nc_fo_mode_name(i), modes[i]) && nc_fo_mode_from_name(modes[i]) == i, "mode %d", i);
    CHECK(nc_fo_mode_from_name("Automatic") == -1 && nc_fo_mode_from_name(NULL) == -1, "bad mode names");
    CHECK(nc_fo_policy_from_name("combined") == NC_FO_COMBINED &&
              nc_fo_policy_from_name("health_check") == NC_FO_HEALTH_CHECK && nc_fo_policy_from_name("x") == -1,
          "policy names");
    CHECK(!strcmp(nc_role_name(NC_ROLE_WRITABLE), "primary") && !strcmp(nc_role_name(NC_ROLE_READ_ONLY), "standby") &&
              !strcmp(nc_role_name(NC_ROLE_UNKNOWN), "unknown") && !strcmp(nc_role_name(7), "unknown"),
          "role names");
}

/* ---- health bookkeeping ------------------------------------------------------ */

static void test_probe_bookkeeping(void)
{
    nc_fo_config c = defaults();
    nc_fo *fo = mk2(&c);
    const nc_fo_health *h = nc_fo_health_of(fo, 1);
    CHECK(!h->probed && !h->available && h->last_check == 0 && h->healthy_since == 0, "fresh health");

    ok(fo, 1, 100, 0.01, W);
    CHECK(h->probed && h->available && h->role == W && h->last_check == 100 && h->response_time == 0.01,
          "good probe");
    CHECK(h->healthy_since == 100 && h->consecutive_failures == 0 && h->consecutive_slow == 0,
          "healthy_since %g", h->healthy_since);
    ok(fo, 1, 110, 3.0, W);
    CHECK(h->healthy_since == 100 && h->consecutive_slow == 1 && h->response_time == 3.0,
          "slow probe: since %g slow %d", h->healthy_since, h->consecutive_slow);
    ok(fo, 1, 120, 2.5, W);
    CHECK(h->consecutive_slow == 2, "slow %d", h->consecutive_slow);
    ok(fo, 1, 130, 2.0, W);
    CHECK(h->consecutive_slow == 0, "at the threshold is not slow: %d", h->consecutive_slow);

    /* read-only with require_writable: not healthy */
    ok(fo, 1, 140, 0.01, RO);
    CHECK(h->available && h->role == RO && h->healthy_since == 0, "read-only: since %g", h->healthy_since);
    ok(fo, 1, 150, 0.01, UNK);
    CHECK(h->healthy_since == 150, "unknown role counts as healthy: %g", h->healthy_since);

    /* failures */
    ok(fo, 1, 155, 3.0, UNK);
    nc_fo_probe(fo, 1, 160, 0, 0, UNK, "boom");
    CHECK(!h->available && h->last_failure == 160 && h->last_check == 160 && strcmp(h->last_error, "boom") == 0,
          "failure: available %d last_failure %g error '%s'", h->available, h->last_failure, h->last_error);
    CHECK(h->consecutive_failures == 1 && h->healthy_since == 0 && h->consecutive_slow == 0 && h->nfail == 1,
          "failure counters: cf %d since %g slow %d nfail %d", h->consecutive_failures, h->healthy_since,
          h->consecutive_slow, h->nfail);
    CHECK(h->role == UNK, "the role stays from the last good probe: %d", h->role);
    bad(fo, 1, 170);
    bad(fo, 1, 180);
    CHECK(h->consecutive_failures == 3 && h->nfail == 3, "cf %d nfail %d", h->consecutive_failures, h->nfail);
    bad(fo, 1, 200);   /* 170 is exactly 30 s before 200: still within */
    CHECK(h->consecutive_failures == 3, "window edge: cf %d, want 3 (170, 180, 200)", h->consecutive_failures);
    bad(fo, 1, 201);   /* 160 and 170 are more than 30 s before 201 */
    CHECK(h->consecutive_failures == 3, "window: cf %d, want 3 (180, 200, 201)", h->consecutive_failures);

    /* a good probe resets the count, the ring keeps the history */
    ok(fo, 1, 210, 0.01, W);
    CHECK(h->consecutive_failures == 0 && h->nfail == 5 && h->healthy_since == 210, "reset: cf %d nfail %d",
          h->consecutive_failures, h->nfail);
    bad(fo, 1, 220);
    CHECK(h->consecutive_failures == 1, "only failures since the good probe count: %d", h->consecutive_failures);

    /* a good result older than the last failure is stale */
    ok(fo, 1, 219, 0.01, W);
    CHECK(!h->available && h->consecutive_failures == 1, "stale good probe applied");

    /* the ring keeps the newest NC_FO_MAX_FAILS, oldest first */
    for (int k = 0; k < 100; k++)
        bad(fo, 1, 300 + k * 0.1);
    CHECK(h->nfail == NC_FO_MAX_FAILS, "nfail %d", h->nfail);
    CHECK(fabs(h->fail_times[NC_FO_MAX_FAILS - 1] - (300 + 99 * 0.1)) < 1e-9 &&
              fabs(h->fail_times[0] - (300 + 36 * 0.1)) < 1e-9,
          "ring order: first %g last %g", h->fail_times[0], h->fail_times[NC_FO_MAX_FAILS - 1]);
    CHECK(h->consecutive_failures == NC_FO_MAX_FAILS, "cf %d", h->consecutive_failures);

    /* out-of-range reports are ignored */
    nc_fo_probe(fo, 2, 400, 0, 0, UNK, "x");
    nc_fo_probe(fo, -1, 400, 0, 0, UNK, "x");
    nc_fo_passive(fo, 5, 400, NC_FO_PASSIVE_LOST, "x");
    nc_fo_probe(NULL, 0, 400, 0, 0, UNK, "x");
    CHECK(nc_fo_health_of(fo, 0)->probed == 0, "endpoint 0 untouched");
    nc_fo_free(fo);
}

static void test_error_text(void)
{
    nc_fo_config c = defaults();
    nc_fo *fo = mk2(&c);
    const nc_fo_health *h = nc_fo_health_of(fo, 0);

    nc_fo_probe(fo, 0, 100, 0, 0, UNK, "could not connect\n\tIs the server running?\n");
    CHECK(strcmp(h->last_error, "could not connect Is the server running?") == 0, "one line: '%s'",
          h->last_error);
    nc_fo_probe(fo, 0, 101, 0, 0, UNK, NULL);
    CHECK(h->last_error[0] == '\0', "NULL error: '%s'", h->last_error);
    nc_fo_probe(fo, 0, 102, 0, 0, UNK, "bad \xff\xc3 byte");
    CHECK(utf8_valid(h->last_error) && strcmp(h->last_error, "bad ?? byte") == 0, "invalid bytes: '%s'",
          h->last_error);

    /* 300 two-byte characters: truncated on a character boundary */
    char big[1024];
    size_t o = 0;
    for (int k = 0; k < 300; k++) {
        big[o++] = (char)0xC3;
        big[o++] = (char)0xA9; /* é */
    }
    big[o] = '\0';
    nc_fo_probe(fo, 0, 103, 0, 0, UNK, big);
    CHECK(utf8_valid(h->last_error) && strlen(h->last_error) == 254, "truncated: %zu bytes, valid %d",
          strlen(h->last_error), utf8_valid(h->last_error));
    /* "x" + three-byte characters: the cut must not split one */
    big[0] = 'x';
    o = 1;
    for (int k = 0; k < 200; k++) {
        big[o++] = (char)0xE2;
        big[o++] = (char)0x82;
        big[o++] = (char)0xAC; /* € */
    }
    big[o] = '\0';
    nc_fo_probe(fo, 0, 104, 0, 0, UNK, big);
    CHECK(utf8_valid(h->last_error) && strlen(h->last_error) == 253, "truncated: %zu bytes",
          strlen(h->last_error));

    /* and the decision's reason, which embeds it, stays valid UTF-8 too */
    ok(fo, 1, 104, 0.01, W);
    nc_fo_decision d = nc_fo_decide(fo, 105);
    CHECK(d.action == NC_FO_DO_FAILOVER && utf8_valid(d.reason) && strlen(d.reason) < sizeof d.reason,
          "reason: %s (valid %d)", d.reason, utf8_valid(d.reason));
    d = nc_fo_manual_failover(fo, 105, 1, big);
    CHECK(d.action == NC_FO_DO_FAILOVER && utf8_valid(d.reason), "manual reason valid: %d", utf8_valid(d.reason));
    nc_fo_free(fo);
}

/* ---- policies ------------------------------------------------------------------- */

static void test_policy_health_check(void)
{
    nc_fo_config c = defaults();
    c.policy = NC_FO_HEALTH_CHECK;
    nc_fo *fo = mk2(&c);
    ok(fo, 1, 99, 0.01, W);

    nc_fo_decision d = nc_fo_decide(fo, 100);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0); /* never probed: nothing fires */
    ok(fo, 0, 100, 0.01, W);
    d = nc_fo_decide(fo, 100);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    ok(fo, 0, 101, 5.0, W);
    ok(fo, 0, 102, 5.0, W);
    ok(fo, 0, 103, 5.0, W);
    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0); /* slowness is not this policy's business */

    bad(fo, 0, 104); /* one failure is enough */
    d = nc_fo_decide(fo, 104);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    CHECK_REASON(d, "endpoint 0 failed its health check: connection refused");
    CHECK_REASON(d, "endpoint 1");
    CHECK(!d.manual, "automatic decision marked manual");

    /* a read-only current endpoint fires with require_writable */
    ok(fo, 0, 105, 0.01, RO);
    d = nc_fo_decide(fo, 105);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    CHECK_REASON(d, "endpoint 0 is read-only");
    nc_fo_free(fo);

    /* ... and not without it */
    c.require_writable = 0;
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, W);
    ok(fo, 0, 100, 0.01, RO);
    d = nc_fo_decide(fo, 100);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    nc_fo_free(fo);
}

static void test_policy_failure_count(void)
{
    nc_fo_config c = defaults();
    c.policy = NC_FO_FAILURE_COUNT;
    nc_fo *fo = mk2(&c);
    ok(fo, 0, 100, 0.01, W);
    ok(fo, 1, 100, 0.01, W);

    bad(fo, 0, 101);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0); /* a single failure does not fire */
    bad(fo, 0, 102);
    d = nc_fo_decide(fo, 102);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    bad(fo, 0, 103);
    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_FAILURE_COUNT);
    CHECK_REASON(d, "3 consecutive failures within 30 s");

    /* the window is evaluated at decide time: 30 s later the failures are old */
    d = nc_fo_decide(fo, 131.5);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    d = nc_fo_decide(fo, 133);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);

    /* a good probe in between starts over */
    ok(fo, 0, 140, 0.01, W);
    bad(fo, 0, 141);
    bad(fo, 0, 142);
    ok(fo, 0, 143, 0.01, W);
    bad(fo, 0, 144);
    d = nc_fo_decide(fo, 144);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    nc_fo_free(fo);

    /* three failures spread over more than failure_timeout never fire */
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, W);
    bad(fo, 0, 100);
    bad(fo, 0, 116);
    bad(fo, 0, 132); /* 100 is 32 s old */
    d = nc_fo_decide(fo, 132);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    CHECK(nc_fo_health_of(fo, 0)->consecutive_failures == 2, "cf %d",
          nc_fo_health_of(fo, 0)->consecutive_failures);
    bad(fo, 0, 140);
    d = nc_fo_decide(fo, 140);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_FAILURE_COUNT); /* 116, 132, 140 */
    nc_fo_free(fo);

    /* max_failure_count 1 behaves like a health check on failures */
    c.max_failure_count = 1;
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, W);
    bad(fo, 0, 101);
    d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_FAILURE_COUNT);
    nc_fo_free(fo);
}

static void test_policy_response_time(void)
{
    nc_fo_config c = defaults();
    c.policy = NC_FO_RESPONSE_TIME;
    nc_fo *fo = mk2(&c);
    ok(fo, 1, 100, 0.01, UNK);

    ok(fo, 0, 101, 2.5, W);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0); /* one slow probe */
    ok(fo, 0, 102, 0.5, W);
    ok(fo, 0, 103, 2.5, W);
    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0); /* not consecutive */
    ok(fo, 0, 104, 2.5, W);
    d = nc_fo_decide(fo, 104);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_RESPONSE_TIME);
    CHECK_REASON(d, "response time 2.50 s over 2.00 s on 2 consecutive probes");

    /* failures are not this policy's business (and reset the slow count) */
    bad(fo, 0, 105);
    bad(fo, 0, 106);
    bad(fo, 0, 107);
    d = nc_fo_decide(fo, 107);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    CHECK(nc_fo_health_of(fo, 0)->consecutive_slow == 0, "slow count kept across a failure");
    nc_fo_free(fo);

    /* a slow endpoint is not a target */
    c.policy = NC_FO_COMBINED;
    fo = mk2(&c);
    ok(fo, 0, 100, 0.01, W);
    ok(fo, 1, 100, 3, UNK);
    ok(fo, 1, 101, 3, UNK);
    ok(fo, 0, 101, 3, W);
    ok(fo, 0, 102, 3, W);
    d = nc_fo_decide(fo, 102);
    /* the current is slow but still serving, the only other one is slow too: stay */
    CHECK_D(d, NC_FO_NONE, 0, -1, NC_FO_RESPONSE_TIME);
    CHECK(nc_fo_state(fo) == NC_FO_PRIMARY, "state %d", nc_fo_state(fo));
    ok(fo, 1, 103, 0.1, UNK);
    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_RESPONSE_TIME);
    nc_fo_free(fo);
}

static void test_combined_fired(void)
{
    nc_fo_config c = defaults();
    nc_fo *fo = mk2(&c);
    ok(fo, 1, 100, 0.01, UNK);
    ok(fo, 0, 100, 0.01, W);

    /* health check and failure count both true: health check is recorded */
    bad(fo, 0, 101);
    bad(fo, 0, 102);
    bad(fo, 0, 103);
    nc_fo_decision d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);

    /* without the health check bit the failure count is recorded */
    nc_fo_free(fo);
    c.policy = NC_FO_FAILURE_COUNT | NC_FO_RESPONSE_TIME;
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, UNK);
    ok(fo, 0, 100, 3, W);
    ok(fo, 0, 101, 3, W);
    d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_RESPONSE_TIME);
    bad(fo, 0, 102);
    bad(fo, 0, 103);
    bad(fo, 0, 104);
    d = nc_fo_decide(fo, 104);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_FAILURE_COUNT);
    nc_fo_free(fo);

    /* COMBINED, only slow: response time is recorded */
    c.policy = NC_FO_COMBINED;
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, UNK);
    ok(fo, 0, 100, 3, W);
    ok(fo, 0, 101, 3, W);
    d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_RESPONSE_TIME);
    CHECK(strcmp(nc_fo_policy_name(d.fired), "response_time") == 0, "name %s", nc_fo_policy_name(d.fired));
    nc_fo_free(fo);
}

static void test_passive(void)
{
    nc_fo_config c = defaults();
    nc_fo *fo = mk2(&c);
    ok(fo, 1, 100, 0.01, W);

    /* LOST counts at once but is no verdict: the probe it causes decides
     * (one terminated session must not take a healthy server away). */
    nc_fo_passive(fo, 0, 101, NC_FO_PASSIVE_LOST, "server closed the connection unexpectedly");
    const nc_fo_health *h = nc_fo_health_of(fo, 0);
    CHECK(!h->probed && h->consecutive_failures == 1 && h->last_failure == 101,
          "LOST: probed %d available %d cf %d", h->probed, h->available, h->consecutive_failures);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    bad(fo, 0, 101.5);   /* the probe confirms it */
    d = nc_fo_decide(fo, 101.5);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    nc_fo_free(fo);
    /* ... and a good probe after it clears it */
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, W);
    ok(fo, 0, 100, 0.01, W);
    nc_fo_passive(fo, 0, 101, NC_FO_PASSIVE_LOST, "terminating connection due to administrator command");
    ok(fo, 0, 101.5, 0.01, W);
    d = nc_fo_decide(fo, 102);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    nc_fo_free(fo);

    /* LOST counts towards the failure count like a failed probe */
    c.policy = NC_FO_FAILURE_COUNT;
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, W);
    ok(fo, 0, 100, 0.01, W);
    bad(fo, 0, 101);
    nc_fo_passive(fo, 0, 102, NC_FO_PASSIVE_LOST, "08006");
    d = nc_fo_decide(fo, 102);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    nc_fo_passive(fo, 0, 103, NC_FO_PASSIVE_LOST, "08006");
    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_FAILURE_COUNT);
    /* a passive READ_ONLY is no failure for the failure count */
    ok(fo, 0, 104, 0.01, W);
    for (int k = 0; k < 5; k++)
        nc_fo_passive(fo, 0, 105 + k, NC_FO_PASSIVE_READ_ONLY, "25006");
    d = nc_fo_decide(fo, 110);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    nc_fo_free(fo);

    /* READ_ONLY: role mismatch failover with require_writable ... */
    c.policy = NC_FO_COMBINED;
    fo = mk2(&c);
    ok(fo, 0, 100, 0.01, W);
    ok(fo, 1, 100, 0.01, W);
    d = nc_fo_decide(fo, 100);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0); /* two writable, no switch due: no split-brain alarm */
    ok(fo, 1, 101, 0.01, RO);
    nc_fo_passive(fo, 0, 102, NC_FO_PASSIVE_READ_ONLY, "cannot execute INSERT in a read-only transaction");
    d = nc_fo_decide(fo, 102);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);   /* one READ ONLY transaction proves nothing */
    ok(fo, 0, 102, 0.01, RO);             /* the probe it causes: the server is read-only */
    h = nc_fo_health_of(fo, 0);
    CHECK(h->role == RO && h->healthy_since == 0 && h->available, "READ_ONLY: role %d since %g", h->role,
          h->healthy_since);
    d = nc_fo_decide(fo, 102);
    CHECK_D(d, NC_FO_NO_TARGET, 0, -1, NC_FO_HEALTH_CHECK); /* endpoint 1 is read-only as well */
    ok(fo, 1, 103, 0.01, W);                                   /* promoted */
    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    CHECK_REASON(d, "endpoint 0 is read-only");
    nc_fo_free(fo);

    /* ... and not without */
    c.require_writable = 0;
    fo = mk2(&c);
    ok(fo, 0, 100, 0.01, W);
    ok(fo, 1, 100, 0.01, W);
    nc_fo_passive(fo, 0, 102, NC_FO_PASSIVE_READ_ONLY, "25006");
    d = nc_fo_decide(fo, 102);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    nc_fo_free(fo);

    /* READ_ONLY before any probe: the probe it causes decides */
    c.require_writable = 1;
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, W);
    nc_fo_passive(fo, 0, 101, NC_FO_PASSIVE_READ_ONLY, "25006");
    d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    ok(fo, 0, 101, 0.01, RO);
    d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    CHECK_REASON(d, "read-only");
    nc_fo_free(fo);
}

/* ---- modes ---------------------------------------------------------------------- */

static void test_manual_mode(void)
{
    nc_fo_config c = defaults();
    c.mode = NC_FO_MANUAL;
    int prio[] = {1, 2, 3};
    nc_fo *fo = mk(&c, 3, prio, -1);
    ok(fo, 0, 100, 0.01, W);
    ok(fo, 1, 100, 0.01, UNK);
    bad(fo, 2, 100);

    bad(fo, 0, 101);
    bad(fo, 0, 102);
    bad(fo, 0, 103);
    nc_fo_decision d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_NONE, 0, -1, NC_FO_HEALTH_CHECK);
    CHECK_REASON(d, "would fail over to endpoint 1");
    CHECK(nc_fo_state(fo) == NC_FO_PRIMARY, "state %d", nc_fo_state(fo));

    /* trigger_failover: bad targets */
    d = nc_fo_manual_failover(fo, 104, 0, NULL);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    CHECK_REASON(d, "already on endpoint 0");
    d = nc_fo_manual_failover(fo, 104, 2, NULL);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    CHECK_REASON(d, "endpoint 2 failed its last check");
    d = nc_fo_manual_failover(fo, 104, 3, NULL);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    CHECK(d.manual, "manual flag");

    /* to the best other, with the operator's reason */
    d = nc_fo_manual_failover(fo, 104, -1, "maintenance");
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, 0);
    CHECK(d.manual == 1, "manual %d", d.manual);
    CHECK_REASON(d, "maintenance");
    nc_fo_begin(fo, &d, 104);
    CHECK(nc_fo_state(fo) == NC_FO_FAILING_OVER && nc_fo_current_usable(fo), "state %d", nc_fo_state(fo));
    nc_fo_decision d2 = nc_fo_decide(fo, 104.5);
    CHECK_D(d2, NC_FO_NONE, 0, -1, 0); /* a switch is in progress */
    d2 = nc_fo_manual_failover(fo, 104.5, -1, NULL);
    CHECK_D(d2, NC_FO_NONE, 0, -1, 0);
    nc_fo_done(fo, &d, 105, 1.0, 1);
    CHECK(nc_fo_current(fo) == 1 && nc_fo_state(fo) == NC_FO_SECONDARY, "current %d state %d",
          nc_fo_current(fo), nc_fo_state(fo));

    /* no automatic failback in manual mode, however healthy */
    ok(fo, 0, 110, 0.01, W);
    for (int t = 120; t <= 300; t += 10)
        ok(fo, 0, t, 0.01, W);
    d = nc_fo_decide(fo, 300);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);

    /* an explicit target, the preferred one: a failback */
    d = nc_fo_manual_failover(fo, 301, 0, NULL);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, 0);
    run(fo, &d, 301, 0.5, 1);
    CHECK(nc_fo_current(fo) == 0 && nc_fo_state(fo) == NC_FO_PRIMARY, "current %d state %d", nc_fo_current(fo),
          nc_fo_state(fo));
    nc_fo_free(fo);
}

static void test_semi_automatic(void)
{
    nc_fo_config c = defaults();
    c.mode = NC_FO_SEMI_AUTOMATIC;
    nc_fo *fo = mk2(&c);
    ok(fo, 0, 100, 0.01, W);
    ok(fo, 1, 100, 0.01, UNK);
    bad(fo, 0, 101);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    run(fo, &d, 101, 0.2, 1);
    CHECK(nc_fo_current(fo) == 1 && nc_fo_state(fo) == NC_FO_SECONDARY, "state %d", nc_fo_state(fo));

    for (int t = 110; t <= 400; t += 10) {
        ok(fo, 0, t, 0.01, W);
        ok(fo, 1, t, 0.01, UNK);
    }
    d = nc_fo_decide(fo, 400);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0); /* never an automatic failback */

    d = nc_fo_manual_recovery(fo, 401);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, 0);
    CHECK(d.manual == 1, "manual %d", d.manual);
    nc_fo_begin(fo, &d, 401);
    CHECK(nc_fo_state(fo) == NC_FO_FAILING_BACK, "state %d", nc_fo_state(fo));
    nc_fo_done(fo, &d, 402, 1.0, 1);
    CHECK(nc_fo_current(fo) == 0 && nc_fo_state(fo) == NC_FO_PRIMARY, "state %d", nc_fo_state(fo));
    nc_fo_stats st;
    nc_fo_get_stats(fo, &st);
    CHECK(st.total_failovers == 1 && st.successful_failovers == 1 && st.total_recoveries == 1 &&
              st.successful_recoveries == 1,
          "stats %d %d %d %d", st.total_failovers, st.successful_failovers, st.total_recoveries,
          st.successful_recoveries);

    /* a failing current fails over even onto the preferred endpoint */
    d = nc_fo_manual_failover(fo, 403, 1, NULL);
    run(fo, &d, 403, 0.1, 1);
    bad(fo, 1, 420);
    d = nc_fo_decide(fo, 420);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, NC_FO_HEALTH_CHECK);
    nc_fo_free(fo);
}

/* ---- targets ------------------------------------------------------------------------ */

static void test_target_priority(void)
{
    nc_fo_config c = defaults();
    int prio[] = {1, 3, 2};
    nc_fo *fo = mk(&c, 3, prio, -1);
    ok(fo, 0, 100, 0.01, W);
    ok(fo, 1, 100, 0.01, UNK);
    ok(fo, 2, 100, 0.01, UNK);
    bad(fo, 0, 101);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 2, NC_FO_HEALTH_CHECK); /* priority 2 before 3 */

    bad(fo, 2, 102); /* never one whose last probe failed */
    d = nc_fo_decide(fo, 102);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);

    ok(fo, 2, 103, 0.01, RO); /* never a read-only one */
    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    d = nc_fo_manual_failover(fo, 103, 2, NULL);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    CHECK_REASON(d, "endpoint 2 is read-only");

    bad(fo, 1, 104);
    d = nc_fo_decide(fo, 104);
    CHECK_D(d, NC_FO_NO_TARGET, 0, -1, NC_FO_HEALTH_CHECK);
    d = nc_fo_manual_failover(fo, 104, -1, NULL);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    nc_fo_free(fo);

    /* ties go to the lower index; never-probed endpoints are no targets */
    int prio2[] = {1, 2, 2, 2};
    fo = mk(&c, 4, prio2, -1);
    ok(fo, 2, 100, 0.01, UNK);
    ok(fo, 3, 100, 0.01, UNK);
    bad(fo, 0, 101);
    d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 2, NC_FO_HEALTH_CHECK);
    d = nc_fo_manual_failover(fo, 101, 1, NULL);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    CHECK_REASON(d, "not been probed");
    nc_fo_free(fo);

    /* without require_writable a read-only endpoint is a fine target */
    c.require_writable = 0;
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, RO);
    bad(fo, 0, 101);
    d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    nc_fo_free(fo);

    /* down beats slow: with the current down, a slow endpoint is taken */
    c = defaults();
    fo = mk2(&c);
    ok(fo, 1, 100, 3, UNK);
    ok(fo, 1, 101, 3, UNK);
    bad(fo, 0, 101);
    d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    nc_fo_free(fo);
}

static void test_no_target_and_resume(void)
{
    nc_fo_config c = defaults();
    nc_fo *fo = mk2(&c);
    ok(fo, 0, 100, 0.01, W);
    bad(fo, 1, 100);
    bad(fo, 0, 101);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_NO_TARGET, 0, -1, NC_FO_HEALTH_CHECK);
    CHECK_REASON(d, "no endpoint can take over");
    nc_fo_done(fo, &d, 101, 0, 0);
    CHECK(nc_fo_state(fo) == NC_FO_UNAVAILABLE && !nc_fo_current_usable(fo), "state %d", nc_fo_state(fo));
    nc_fo_stats st;
    nc_fo_get_stats(fo, &st);
    CHECK(st.total_failovers == 1 && st.failed_failovers == 1, "stats %d %d", st.total_failovers,
          st.failed_failovers);
    nc_fo_done(fo, &d, 102, 0, 0); /* reported again during the same outage */
    nc_fo_get_stats(fo, &st);
    CHECK(st.total_failovers == 1 && st.failed_failovers == 1, "counted twice: %d %d", st.total_failovers,
          st.failed_failovers);

    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    CHECK_REASON(d, "no endpoint is usable");
    ok(fo, 0, 104, 0.01, RO); /* back but read-only: not yet */
    d = nc_fo_decide(fo, 104);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);

    /* the same endpoint comes back: resume (from == to) */
    ok(fo, 0, 105, 0.01, W);
    d = nc_fo_decide(fo, 105);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 0, 0);
    CHECK_REASON(d, "service resumed on endpoint 0");
    /* a failed resume stays unavailable and counts nothing */
    run(fo, &d, 105, 0.1, 0);
    CHECK(nc_fo_state(fo) == NC_FO_UNAVAILABLE, "state %d", nc_fo_state(fo));
    d = nc_fo_decide(fo, 106);
    run(fo, &d, 106, 0.1, 1);
    CHECK(nc_fo_state(fo) == NC_FO_PRIMARY && nc_fo_current(fo) == 0 && nc_fo_current_usable(fo), "state %d",
          nc_fo_state(fo));
    nc_fo_get_stats(fo, &st);
    CHECK(st.total_failovers == 1 && st.successful_failovers == 0 && st.total_recoveries == 0 &&
              st.failover_time_total == 0,
          "a resume counted: %d %d %d", st.total_failovers, st.successful_failovers, st.total_recoveries);
    /* a resume is no switch: no hold-down */
    ok(fo, 1, 107, 0.01, UNK);
    bad(fo, 0, 107);
    d = nc_fo_decide(fo, 107);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    nc_fo_free(fo);

    /* another endpoint comes back: resume there, a failover (it is not the preferred) */
    int prio[] = {1, 2, 3};
    fo = mk(&c, 3, prio, -1);
    bad(fo, 1, 100);
    bad(fo, 2, 100);
    bad(fo, 0, 101);
    d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_NO_TARGET, 0, -1, NC_FO_HEALTH_CHECK);
    nc_fo_done(fo, &d, 101, 0, 0);
    ok(fo, 2, 110, 0.01, UNK);
    d = nc_fo_decide(fo, 110);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 2, 0);
    CHECK_REASON(d, "service resumed on endpoint 2");
    run(fo, &d, 110, 0.3, 1);
    CHECK(nc_fo_state(fo) == NC_FO_SECONDARY && nc_fo_current(fo) == 2, "state %d current %d", nc_fo_state(fo),
          nc_fo_current(fo));
    /* it fails too (after the hold-down), nothing else: unavailable again, counted once more */
    bad(fo, 2, 120);
    d = nc_fo_decide(fo, 120);
    CHECK_D(d, NC_FO_NO_TARGET, 2, -1, NC_FO_HEALTH_CHECK);
    nc_fo_done(fo, &d, 120, 0, 0);
    /* the preferred comes back: resuming there is a failback */
    ok(fo, 0, 130, 0.01, UNK);
    ok(fo, 1, 130, 0.01, UNK);
    d = nc_fo_decide(fo, 130);
    CHECK_D(d, NC_FO_DO_FAILBACK, 2, 0, 0);
    run(fo, &d, 130, 0.1, 1);
    CHECK(nc_fo_state(fo) == NC_FO_PRIMARY, "state %d", nc_fo_state(fo));
    nc_fo_get_stats(fo, &st);
    CHECK(st.total_failovers == 3 && st.failed_failovers == 2 && st.successful_failovers == 1 &&
              st.successful_recoveries == 1,
          "stats %d %d %d %d", st.total_failovers, st.failed_failovers, st.successful_failovers,
          st.successful_recoveries);
    nc_fo_free(fo);

    /* manual mode: unavailable after a failed manual switch; resumes on the
     * same endpoint when it is back, never switches on its own */
    c.mode = NC_FO_MANUAL;
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, UNK);
    bad(fo, 0, 101);
    d = nc_fo_manual_failover(fo, 101, 1, NULL);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, 0);
    run(fo, &d, 101, 0.5, 0);
    CHECK(nc_fo_state(fo) == NC_FO_UNAVAILABLE && nc_fo_current(fo) == 0, "state %d", nc_fo_state(fo));
    d = nc_fo_decide(fo, 102);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    CHECK_REASON(d, "endpoint 1 could take over");
    ok(fo, 0, 103, 0.01, W);
    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 0, 0);
    nc_fo_free(fo);

    /* ... or the operator resumes on it (trigger_failover to the current
     * endpoint, or trigger_recovery when that is the preferred one) */
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, UNK);
    bad(fo, 0, 101);
    d = nc_fo_manual_failover(fo, 101, 1, NULL);
    run(fo, &d, 101, 0.5, 0);
    bad(fo, 1, 102);
    CHECK(nc_fo_state(fo) == NC_FO_UNAVAILABLE, "state %d", nc_fo_state(fo));
    d = nc_fo_manual_failover(fo, 102, 0, NULL);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0); /* 0 is still down */
    d = nc_fo_manual_failover(fo, 102, -1, NULL);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0); /* nothing else qualifies */
    d = nc_fo_manual_recovery(fo, 102);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    ok(fo, 0, 103, 0.01, W);
    d = nc_fo_manual_failover(fo, 103, 0, NULL);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 0, 0);
    CHECK(d.manual, "manual %d", d.manual);
    d = nc_fo_manual_recovery(fo, 103);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 0, 0);
    run(fo, &d, 103, 0.1, 1);
    CHECK(nc_fo_state(fo) == NC_FO_PRIMARY, "state %d", nc_fo_state(fo));
    nc_fo_stats st2;
    nc_fo_get_stats(fo, &st2);
    CHECK(st2.total_failovers == 1 && st2.failed_failovers == 1 && st2.total_recoveries == 0,
          "stats %d %d %d", st2.total_failovers, st2.failed_failovers, st2.total_recoveries);
    nc_fo_free(fo);
}

static void test_hold_down(void)
{
    nc_fo_config c = defaults();
    nc_fo *fo = mk2(&c);
    ok(fo, 0, 100, 0.01, W);
    ok(fo, 1, 100, 0.01, UNK);
    bad(fo, 0, 101);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    run(fo, &d, 101, 1.0, 1); /* switched at 102 */

    /* flapping: 0 is back at once and 1 fails: held for hold_down */
    ok(fo, 0, 103, 0.01, UNK);
    bad(fo, 1, 103);
    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_NONE, 1, -1, NC_FO_HEALTH_CHECK);
    CHECK_REASON(d, "hold-down");
    d = nc_fo_decide(fo, 106.9);
    CHECK_D(d, NC_FO_NONE, 1, -1, NC_FO_HEALTH_CHECK);
    d = nc_fo_decide(fo, 107);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, NC_FO_HEALTH_CHECK);

    /* manual ignores the hold-down */
    d = nc_fo_manual_failover(fo, 103, 0, "now");
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, 0);
    run(fo, &d, 103, 0.5, 1); /* switched at 103.5 */
    CHECK(nc_fo_current(fo) == 0, "current %d", nc_fo_current(fo));

    /* automatic failback is held too */
    ok(fo, 1, 104, 0.01, UNK);
    d = nc_fo_manual_failover(fo, 104, 1, NULL);
    run(fo, &d, 104, 0, 1); /* switched at 104 */
    for (int t = 105; t <= 200; t += 5)
        ok(fo, 0, t, 0.01, UNK);
    d = nc_fo_decide(fo, 108);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    d = nc_fo_decide(fo, 200);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, 0);
    nc_fo_free(fo);

    /* hold_down 0 */
    c.hold_down = 0;
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, UNK);
    bad(fo, 0, 101);
    d = nc_fo_decide(fo, 101);
    run(fo, &d, 101, 0, 1);
    ok(fo, 0, 101, 0.01, UNK);
    bad(fo, 1, 101);
    d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, NC_FO_HEALTH_CHECK);
    nc_fo_free(fo);
}

static void test_split_brain(void)
{
    nc_fo_config c = defaults();
    int prio[] = {1, 2, 3};
    nc_fo *fo = mk(&c, 3, prio, -1);

    /* failover held: the slow current still accepts writes, and so does 1 */
    ok(fo, 0, 100, 3, W);
    ok(fo, 0, 101, 3, W);
    ok(fo, 1, 101, 0.01, W);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_SPLIT_BRAIN, 0, 1, NC_FO_RESPONSE_TIME);
    CHECK_REASON(d, "split brain");
    nc_fo_done(fo, &d, 101, 0, 0);
    CHECK(nc_fo_state(fo) == NC_FO_PRIMARY && nc_fo_current(fo) == 0, "split brain changed state %d",
          nc_fo_state(fo));

    /* current down, two others writable: held */
    bad(fo, 0, 102);
    ok(fo, 2, 102, 0.01, W);
    d = nc_fo_decide(fo, 102);
    CHECK_D(d, NC_FO_SPLIT_BRAIN, 0, 1, NC_FO_HEALTH_CHECK);
    CHECK_REASON(d, "endpoints 1, 2");
    /* the operator may still switch (a planned switchover) */
    d = nc_fo_manual_failover(fo, 102, 2, NULL);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 2, 0);
    /* UNKNOWN roles never count */
    ok(fo, 2, 103, 0.01, UNK);
    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    run(fo, &d, 103, 0.1, 1);

    /* failback held: preferred back writable while 1 is writable */
    for (int t = 110; t <= 200; t += 10) {
        ok(fo, 0, t, 0.01, W);
        ok(fo, 1, t, 0.01, W);
    }
    d = nc_fo_decide(fo, 200);
    CHECK_D(d, NC_FO_SPLIT_BRAIN, 1, 0, 0);
    CHECK_REASON(d, "not failing back");
    /* 1 demoted: the current is read-only, a failover onto the preferred */
    ok(fo, 1, 201, 0.01, RO);
    d = nc_fo_decide(fo, 201);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, NC_FO_HEALTH_CHECK);
    nc_fo_free(fo);

    /* resuming from UNAVAILABLE is held too */
    fo = mk(&c, 3, prio, -1);
    bad(fo, 1, 100);
    bad(fo, 2, 100);
    bad(fo, 0, 101);
    d = nc_fo_decide(fo, 101);
    nc_fo_done(fo, &d, 101, 0, 0);
    CHECK(nc_fo_state(fo) == NC_FO_UNAVAILABLE, "state %d", nc_fo_state(fo));
    ok(fo, 1, 110, 0.01, W);
    ok(fo, 2, 110, 0.01, W);
    d = nc_fo_decide(fo, 110);
    CHECK_D(d, NC_FO_SPLIT_BRAIN, 0, 1, 0);
    nc_fo_free(fo);
}

/* ---- failback ------------------------------------------------------------------------ */

static nc_fo *on_secondary(const nc_fo_config *c)
{
    nc_fo *fo = mk2(c);
    ok(fo, 0, 100, 0.01, W);
    ok(fo, 1, 100, 0.01, UNK);
    bad(fo, 0, 101);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    run(fo, &d, 101, 0.5, 1);
    if (nc_fo_current(fo) != 1) {
        printf("FAIL setup: not on endpoint 1\n");
        exit(2);
    }
    return fo;
}

static void test_failback_interval(void)
{
    nc_fo_config c = defaults();
    nc_fo *fo = on_secondary(&c);
    for (int t = 110; t < 200; t += 10)
        bad(fo, 0, t);
    for (int t = 200; t <= 229; t++)
        ok(fo, 0, t, 0.01, W);
    nc_fo_decision d = nc_fo_decide(fo, 229.9);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    CHECK_REASON(d, "healthy for 29.90 s of 30 s");
    ok(fo, 0, 230, 0.01, W);
    d = nc_fo_decide(fo, 230);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, 0);
    CHECK_REASON(d, "failing back");

    /* a failure in between restarts the clock */
    bad(fo, 0, 231);
    ok(fo, 0, 232, 0.01, W);
    d = nc_fo_decide(fo, 261);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    d = nc_fo_decide(fo, 262);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, 0);
    /* so does a read-only spell (with require_writable), and a slow preferred is not taken */
    ok(fo, 0, 263, 0.01, RO);
    ok(fo, 0, 264, 0.01, W);
    d = nc_fo_decide(fo, 293);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    ok(fo, 0, 294, 3, W);
    ok(fo, 0, 295, 3, W);
    d = nc_fo_decide(fo, 300);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    CHECK_REASON(d, "slow");
    ok(fo, 0, 301, 0.01, W);
    d = nc_fo_decide(fo, 301);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, 0);

    nc_fo_begin(fo, &d, 301);
    CHECK(nc_fo_state(fo) == NC_FO_FAILING_BACK, "state %d", nc_fo_state(fo));
    nc_fo_done(fo, &d, 302, 1, 1);
    CHECK(nc_fo_current(fo) == 0 && nc_fo_state(fo) == NC_FO_PRIMARY, "state %d", nc_fo_state(fo));
    d = nc_fo_decide(fo, 400);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    nc_fo_free(fo);

    /* a read-only old primary is never taken back with require_writable */
    fo = on_secondary(&c);
    for (int t = 110; t <= 500; t += 10)
        ok(fo, 0, t, 0.01, RO);
    d = nc_fo_decide(fo, 500);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    d = nc_fo_manual_recovery(fo, 500);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    CHECK_REASON(d, "read-only");
    nc_fo_free(fo);

    /* auto_recovery 0: no automatic failback */
    c.auto_recovery = 0;
    fo = on_secondary(&c);
    for (int t = 110; t <= 500; t += 10)
        ok(fo, 0, t, 0.01, W);
    d = nc_fo_decide(fo, 500);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    nc_fo_free(fo);
}

static void test_recovery_suspension(void)
{
    nc_fo_config c = defaults();
    c.max_recovery_attempts = 2;
    nc_fo *fo = on_secondary(&c);
    for (int t = 110; t <= 200; t += 10)
        ok(fo, 0, t, 0.01, UNK);
    nc_fo_decision d = nc_fo_decide(fo, 200);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, 0);
    run(fo, &d, 200, 2, 0);
    CHECK(nc_fo_state(fo) == NC_FO_SECONDARY && nc_fo_current(fo) == 1, "state %d", nc_fo_state(fo));
    nc_fo_stats st;
    nc_fo_get_stats(fo, &st);
    CHECK(st.total_recoveries == 1 && st.failed_recoveries == 1 && st.recovery_failures_in_a_row == 1 &&
              !st.recovery_suspended,
          "after one: %d %d %d %d", st.total_recoveries, st.failed_recoveries, st.recovery_failures_in_a_row,
          st.recovery_suspended);
    d = nc_fo_decide(fo, 210);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, 0); /* a failed attempt is no switch: no hold-down */
    run(fo, &d, 210, 2, 0);
    nc_fo_get_stats(fo, &st);
    CHECK(st.recovery_failures_in_a_row == 2 && st.recovery_suspended, "after two: %d %d",
          st.recovery_failures_in_a_row, st.recovery_suspended);
    d = nc_fo_decide(fo, 300);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    CHECK_REASON(d, "suspended");

    /* trigger_recovery clears it and fails back at once */
    d = nc_fo_manual_recovery(fo, 301);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, 0);
    CHECK(d.manual, "manual %d", d.manual);
    nc_fo_get_stats(fo, &st);
    CHECK(!st.recovery_suspended && st.recovery_failures_in_a_row == 0, "not cleared: %d %d",
          st.recovery_suspended, st.recovery_failures_in_a_row);
    run(fo, &d, 301, 1, 1);
    nc_fo_get_stats(fo, &st);
    CHECK(nc_fo_state(fo) == NC_FO_PRIMARY && st.successful_recoveries == 1 && st.total_recoveries == 3,
          "state %d stats %d %d", nc_fo_state(fo), st.successful_recoveries, st.total_recoveries);

    d = nc_fo_manual_recovery(fo, 302);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    CHECK_REASON(d, "already on the preferred endpoint");
    nc_fo_free(fo);

    /* the recovery_check_interval is waived, the preferred must qualify */
    fo = on_secondary(&c);
    d = nc_fo_manual_recovery(fo, 102);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    CHECK_REASON(d, "endpoint 0 failed its last check");
    ok(fo, 0, 103, 0.01, UNK);
    d = nc_fo_decide(fo, 103);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    d = nc_fo_manual_recovery(fo, 103);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, 0);
    nc_fo_free(fo);
}

/* ---- statistics and transitions ---------------------------------------------------- */

static void test_stats_and_transitions(void)
{
    nc_fo_config c = defaults();
    c.hold_down = 0;
    nc_fo *fo = mk2(&c);
    ok(fo, 0, 100, 0.01, UNK);
    ok(fo, 1, 100, 0.01, UNK);

    /* a failed failover with the current down: unavailable */
    bad(fo, 0, 101);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    nc_fo_begin(fo, &d, 101);
    CHECK(nc_fo_state(fo) == NC_FO_FAILING_OVER, "state %d", nc_fo_state(fo));
    nc_fo_done(fo, &d, 103, 2, 0);
    CHECK(nc_fo_state(fo) == NC_FO_UNAVAILABLE && nc_fo_current(fo) == 0 && !nc_fo_current_usable(fo),
          "state %d current %d", nc_fo_state(fo), nc_fo_current(fo));
    nc_fo_stats st;
    nc_fo_get_stats(fo, &st);
    CHECK(st.total_failovers == 1 && st.failed_failovers == 1 && st.failover_time_total == 0, "stats %d %d %g",
          st.total_failovers, st.failed_failovers, st.failover_time_total);

    /* from UNAVAILABLE the next decision tries again */
    d = nc_fo_decide(fo, 104);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, 0);
    run(fo, &d, 104, 1.5, 1);
    CHECK(nc_fo_state(fo) == NC_FO_SECONDARY && nc_fo_current(fo) == 1, "state %d", nc_fo_state(fo));

    /* and again, back: 0 healthy, 1 fails */
    ok(fo, 0, 110, 0.01, UNK);
    bad(fo, 1, 111);
    d = nc_fo_decide(fo, 111);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, NC_FO_HEALTH_CHECK);
    run(fo, &d, 111, 0.25, 1);
    ok(fo, 1, 112, 0.01, UNK);
    d = nc_fo_manual_failover(fo, 113, 1, NULL);
    run(fo, &d, 113, 0.25, 1);
    nc_fo_get_stats(fo, &st);
    CHECK(st.total_failovers == 3 && st.successful_failovers == 2 && st.failed_failovers == 1,
          "failovers %d %d %d", st.total_failovers, st.successful_failovers, st.failed_failovers);
    CHECK(fabs(st.failover_time_total - 1.75) < 1e-9, "failover_time_total %g, want 1.75", st.failover_time_total);
    CHECK(st.total_recoveries == 1 && st.successful_recoveries == 1 && st.failed_recoveries == 0,
          "recoveries %d %d %d", st.total_recoveries, st.successful_recoveries, st.failed_recoveries);

    /* a failed failover with the current still fine (a manual one): stays */
    d = nc_fo_manual_failover(fo, 114, 0, NULL);
    run(fo, &d, 114, 1, 0);
    CHECK(nc_fo_state(fo) == NC_FO_SECONDARY && nc_fo_current(fo) == 1, "state %d", nc_fo_state(fo));

    /* NONE and SPLIT_BRAIN change nothing, begin ignores them */
    nc_fo_decision none = nc_fo_decide(fo, 115);
    CHECK(none.action == NC_FO_NONE, "action %s", act_name(none.action));
    nc_fo_stats before;
    nc_fo_get_stats(fo, &before);
    run(fo, &none, 115, 1, 1);
    nc_fo_decision sb = none;
    sb.action = NC_FO_SPLIT_BRAIN;
    sb.to = 0;
    run(fo, &sb, 115, 1, 1);
    nc_fo_get_stats(fo, &st);
    CHECK(memcmp(&st, &before, sizeof st) == 0 && nc_fo_state(fo) == NC_FO_SECONDARY && nc_fo_current(fo) == 1,
          "NONE / SPLIT_BRAIN changed something");
    nc_fo_get_stats(NULL, &st);
    CHECK(st.total_failovers == 0, "NULL stats");
    nc_fo_free(fo);
}


/* ---- what the executor used to remember: split-brain runs, outages, the
 * start-up grace, when a failure was first seen -------------------------------- */

static void test_note_split_brain_once(void)
{
    nc_fo_config c = defaults();
    int prio[] = {1, 2, 3};
    nc_fo *fo = mk(&c, 3, prio, -1);
    bad(fo, 0, 100);
    ok(fo, 1, 100, 0.01, W);
    ok(fo, 2, 100, 0.01, W);
    nc_fo_decision d = nc_fo_decide(fo, 100);
    CHECK_D(d, NC_FO_SPLIT_BRAIN, 0, 1, NC_FO_HEALTH_CHECK);
    CHECK(nc_fo_note(fo, &d, 100) == 1, "the first split-brain hold is news");
    d = nc_fo_decide(fo, 101);
    CHECK(nc_fo_note(fo, &d, 101) == 0, "the same hold again is not");
    d = nc_fo_decide(fo, 102);
    CHECK(nc_fo_note(fo, &d, 102) == 0, "nor a third time");
    /* another pair is news again */
    ok(fo, 1, 103, 0.01, UNK);
    ok(fo, 0, 103, 0.01, W);
    bad(fo, 0, 104);
    ok(fo, 1, 104, 0.01, W);
    d = nc_fo_decide(fo, 104);
    CHECK_D(d, NC_FO_SPLIT_BRAIN, 0, 1, NC_FO_HEALTH_CHECK);
    ok(fo, 2, 104, 0.01, UNK);
    d = nc_fo_decide(fo, 104);
    CHECK(d.action == NC_FO_DO_FAILOVER, "2 is no longer writable: %s", act_name(d.action));
    CHECK(nc_fo_note(fo, &d, 104) == 0, "a switch records its own event");
    /* a hold after something else in between is news again */
    ok(fo, 2, 105, 0.01, W);
    d = nc_fo_decide(fo, 105);
    CHECK_D(d, NC_FO_SPLIT_BRAIN, 0, 1, NC_FO_HEALTH_CHECK);
    CHECK(nc_fo_note(fo, &d, 105) == 1, "a new run of holds is news");
    nc_fo_free(fo);
}

static void test_note_outage_once(void)
{
    nc_fo_config c = defaults();
    nc_fo *fo = mk2(&c);
    bad(fo, 1, 100);
    bad(fo, 0, 101);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_NO_TARGET, 0, -1, NC_FO_HEALTH_CHECK);
    CHECK(nc_fo_note(fo, &d, 101) == 1, "the start of an outage is news");
    CHECK(nc_fo_state(fo) == NC_FO_UNAVAILABLE, "noting NO_TARGET did not carry it out: %d", nc_fo_state(fo));
    nc_fo_stats st;
    nc_fo_get_stats(fo, &st);
    CHECK(st.failed_failovers == 1, "failed_failovers %d", st.failed_failovers);
    /* still down: decided again (NONE in UNAVAILABLE), no news, counted once */
    d = nc_fo_decide(fo, 102);
    CHECK(nc_fo_note(fo, &d, 102) == 0, "a running outage is not news again");
    /* service resumes on 0; a later outage is news again */
    ok(fo, 0, 110, 0.01, W);
    d = nc_fo_decide(fo, 110);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 0, 0);
    CHECK(nc_fo_note(fo, &d, 110) == 0, "a resume is no outage");
    run(fo, &d, 110, 0.01, 1);
    CHECK(nc_fo_current_usable(fo), "not resumed");
    bad(fo, 0, 120);
    d = nc_fo_decide(fo, 120);
    CHECK_D(d, NC_FO_NO_TARGET, 0, -1, NC_FO_HEALTH_CHECK);
    CHECK(nc_fo_note(fo, &d, 120) == 1, "the second outage is news");
    nc_fo_get_stats(fo, &st);
    CHECK(st.failed_failovers == 2, "failed_failovers %d", st.failed_failovers);
    nc_fo_free(fo);
}

static void test_start_grace(void)
{
    nc_fo_config c = defaults();
    nc_fo *fo = mk2(&c);
    nc_fo_set_grace(fo, 105);
    bad(fo, 0, 101);   /* 1 has not answered yet */
    nc_fo_decision d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_NONE, 0, -1, NC_FO_HEALTH_CHECK);
    CHECK_REASON(d, "waiting for the first probe of endpoint 1");
    /* once 1 answered, the verdict comes at once (inside the grace) */
    ok(fo, 1, 102, 0.01, W);
    d = nc_fo_decide(fo, 102);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    nc_fo_free(fo);

    /* past the grace, an endpoint that never answered does not hold it up */
    fo = mk2(&c);
    nc_fo_set_grace(fo, 105);
    bad(fo, 0, 106);
    d = nc_fo_decide(fo, 106);
    CHECK_D(d, NC_FO_NO_TARGET, 0, -1, NC_FO_HEALTH_CHECK);
    /* and with the grace ended early (monitoring stopped) neither */
    nc_fo_set_grace(fo, 200);
    nc_fo_set_grace(fo, 0);
    d = nc_fo_decide(fo, 107);
    CHECK_D(d, NC_FO_NO_TARGET, 0, -1, NC_FO_HEALTH_CHECK);
    nc_fo_free(fo);
}

static void test_detected_at(void)
{
    nc_fo_config c = defaults();
    nc_fo *fo = mk2(&c);
    ok(fo, 1, 100, 0.01, W);
    nc_fo_passive(fo, 0, 100.5, NC_FO_PASSIVE_LOST, "server closed the connection");
    bad(fo, 0, 101);
    nc_fo_decision d = nc_fo_decide(fo, 101);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    CHECK(nc_fo_detected_at(fo, &d) == 101, "detected_at %g, want the latest bad news 101", nc_fo_detected_at(fo, &d));
    nc_fo_decision m = nc_fo_manual_failover(fo, 101, 1, "planned");
    CHECK(nc_fo_detected_at(fo, &m) == 0, "a manual switch has no detection time");
    nc_fo_free(fo);

    /* a slow probe (RESPONSE_TIME) and a read-only one (require_writable) are bad news too */
    fo = mk2(&c);
    ok(fo, 1, 100, 0.01, UNK);
    ok(fo, 0, 100, 3.0, W);
    ok(fo, 0, 102, 3.0, W);
    d = nc_fo_decide(fo, 102);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_RESPONSE_TIME);
    CHECK(nc_fo_detected_at(fo, &d) == 102, "slow: detected_at %g", nc_fo_detected_at(fo, &d));
    CHECK(nc_fo_health_of(fo, 1)->last_bad == 0, "a healthy endpoint has no bad news");
    ok(fo, 0, 103, 0.01, RO);
    CHECK(nc_fo_health_of(fo, 0)->last_bad == 103, "read-only: last_bad %g", nc_fo_health_of(fo, 0)->last_bad);
    nc_fo_free(fo);
}

/* Endpoints added while running and removed (tombstones): a removed current
 * endpoint is failed over from, a removed one is never a target nor a
 * writer, its late probes count for nothing; back, it qualifies again once
 * probed. */
static void test_add_and_remove(void)
{
    nc_fo_config c = defaults();
    c.hold_down = 0;
    static const int prio[] = {1};
    nc_fo *fo = mk(&c, 1, prio, 0);
    ok(fo, 0, 1, 0.01, W);
    CHECK(nc_fo_add(fo, 0) == -1, "priority 0 refused");
    CHECK(nc_fo_add(fo, 2) == 1 && nc_fo_count(fo) == 2, "added as 1");
    CHECK(!nc_fo_health_of(fo, 1)->probed, "nothing known of it");
    nc_fo_decision d = nc_fo_decide(fo, 2);
    CHECK_D(d, NC_FO_NONE, 0, -1, 0);
    ok(fo, 1, 2, 0.01, W);
    CHECK(nc_fo_add(fo, 3) == 2, "added as 2");
    ok(fo, 2, 2, 0.01, RO);
    /* split brain: 0 and 1 both writable, but only while 0 is a member */
    nc_fo_set_removed(fo, 0, 1, 3);
    CHECK(nc_fo_removed(fo, 0) && nc_fo_health_of(fo, 0)->removed && !nc_fo_health_of(fo, 0)->available,
          "removed");
    CHECK(!nc_fo_current_usable(fo), "a removed current endpoint takes no borrow");
    ok(fo, 0, 4, 0.01, W);   /* a late probe of it */
    CHECK(!nc_fo_health_of(fo, 0)->available, "its late probe counts for nothing");
    d = nc_fo_decide(fo, 5);
    CHECK_D(d, NC_FO_DO_FAILOVER, 0, 1, NC_FO_HEALTH_CHECK);
    CHECK_REASON(d, "removed");
    run(fo, &d, 5, 0.1, 1);
    CHECK(nc_fo_current(fo) == 1 && nc_fo_current_usable(fo), "on 1");
    /* failback never goes to a removed preferred endpoint, manual neither */
    d = nc_fo_decide(fo, 100);
    CHECK_D(d, NC_FO_NONE, 1, -1, 0);
    d = nc_fo_manual_failover(fo, 100, 0, "back");
    CHECK(d.action == NC_FO_NONE, "no manual switch to a removed endpoint: %s", d.reason);
    /* back: probed again, then it qualifies (and is preferred: failback) */
    nc_fo_set_removed(fo, 0, 0, 101);
    CHECK(!nc_fo_removed(fo, 0) && !nc_fo_health_of(fo, 0)->probed, "back, unknown");
    d = nc_fo_manual_failover(fo, 102, 0, "back");
    CHECK(d.action == NC_FO_NONE, "not before its probe");
    nc_fo_set_removed(fo, 1, 1, 103);   /* now 1 leaves too: 0 is not probed, 2 is read-only */
    d = nc_fo_decide(fo, 103);
    CHECK(d.action == NC_FO_NO_TARGET, "nothing can take over: %s", act_name(d.action));
    ok(fo, 0, 104, 0.01, W);
    d = nc_fo_decide(fo, 105);
    CHECK_D(d, NC_FO_DO_FAILBACK, 1, 0, NC_FO_HEALTH_CHECK);   /* to the preferred one */
    nc_fo_free(fo);
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"config", test_config},
        {"names", test_names},
        {"probe_bookkeeping", test_probe_bookkeeping},
        {"error_text", test_error_text},
        {"policy_health_check", test_policy_health_check},
        {"policy_failure_count", test_policy_failure_count},
        {"policy_response_time", test_policy_response_time},
        {"combined_fired", test_combined_fired},
        {"passive", test_passive},
        {"manual_mode", test_manual_mode},
        {"semi_automatic", test_semi_automatic},
        {"target_priority", test_target_priority},
        {"no_target_and_resume", test_no_target_and_resume},
        {"hold_down", test_hold_down},
        {"split_brain", test_split_brain},
        {"failback_interval", test_failback_interval},
        {"recovery_suspension", test_recovery_suspension},
        {"stats_and_transitions", test_stats_and_transitions},
        {"note_split_brain_once", test_note_split_brain_once},
        {"note_outage_once", test_note_outage_once},
        {"start_grace", test_start_grace},
        {"detected_at", test_detected_at},
        {"add_and_remove", test_add_and_remove},
    };
    return nc_run_cases("test_failover", cases, NC_NCASES(cases));
}
