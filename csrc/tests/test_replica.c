/* test_replica.c - the pure parts of read routing (nc_replica.c): LSN text,
 * the primary's position history, lag in bytes and seconds measured from LSN
 * progress, and the read choice (eligibility, least in flight, round robin). */
#include "check.h"
#include "nc_replica.h"

#include <math.h>
#include <string.h>

static void test_names(void)
{
    CHECK(!strcmp(nc_target_name(NC_TARGET_PRIMARY), "primary"), "primary");
    CHECK(!strcmp(nc_target_name(NC_TARGET_PREFER_STANDBY), "prefer-standby"), "prefer");
    CHECK(!strcmp(nc_target_name(99), "unknown"), "unknown");
    for (int t = 0; t < NC_TARGET_COUNT; t++)
        CHECK(nc_target_from_name(nc_target_name(t)) == t, "round trip %d", t);
    CHECK(nc_target_from_name("prefer_standby") == -1 && nc_target_from_name("") == -1 &&
              nc_target_from_name(NULL) == -1 && nc_target_from_name("read-write") == -1,
          "unknown names");
}

static void test_lsn_parse(void)
{
    uint64_t v = 1;
    CHECK(nc_lsn_parse("0/0", &v) == 0 && v == 0, "0/0 -> %llu", (unsigned long long)v);
    CHECK(nc_lsn_parse("16/B374D848", &v) == 0 && v == 0x16B374D848ULL, "16/B374D848");
    CHECK(nc_lsn_parse("ffffffff/ffffffff", &v) == 0 && v == UINT64_MAX, "max");
    const char *bad[] = {"", "/", "0/", "/0", "0", "1/2/3", "g/0", "0/1 ", "123456789/0", "0/-1", NULL};
    for (int i = 0; bad[i]; i++)
        CHECK(nc_lsn_parse(bad[i], &v) == -1, "%s is not an LSN", bad[i]);
    CHECK(nc_lsn_parse(NULL, &v) == -1, "NULL");
}

static void test_history_and_lag(void)
{
    static nc_lsn_history h;
    nc_lsn_history_clear(&h);
    uint64_t newest;
    CHECK(nc_lsn_history_newest(&h, &newest) == -1, "empty");
    CHECK(isnan(nc_lag_bytes(&h, 5)) && isnan(nc_lag_seconds(&h, 5, 10)), "unknown without a primary");
    nc_lsn_history_add(&h, 100.0, 1000);
    nc_lsn_history_add(&h, 101.0, 1000);   /* no advance: the time of the first sighting stays */
    nc_lsn_history_add(&h, 102.0, 2000);
    nc_lsn_history_add(&h, 104.0, 5000);
    CHECK(h.count == 3, "only advances kept: %d", h.count);
    CHECK(nc_lag_bytes(&h, 5000) == 0 && nc_lag_bytes(&h, 6000) == 0, "caught up / ahead");
    CHECK(nc_lag_bytes(&h, 1500) == 3500, "bytes %g", nc_lag_bytes(&h, 1500));
    /* Replayed everything seen: no lag, whenever read. */
    CHECK(nc_lag_seconds(&h, 5000, 110.0) == 0, "caught up");
    /* At 1500: the primary was first seen past it at 102. */
    CHECK(nc_lag_seconds(&h, 1500, 103.5) == 1.5, "1.5 s: %g", nc_lag_seconds(&h, 1500, 103.5));
    CHECK(nc_lag_seconds(&h, 1000, 103.5) == 1.5, "exactly at a sighting: %g", nc_lag_seconds(&h, 1000, 103.5));
    CHECK(nc_lag_seconds(&h, 999, 103.5) == 3.5, "before the first: %g", nc_lag_seconds(&h, 999, 103.5));
    /* A stalled replica (its replay fixed at 2000) read again later: its lag
     * grows with time although its position does not move. */
    double l1 = nc_lag_seconds(&h, 2000, 105.0), l2 = nc_lag_seconds(&h, 2000, 109.0);
    CHECK(l1 == 1.0 && l2 == 5.0, "stalled: %g then %g", l1, l2);
    /* A replica read before the primary was seen past it is not behind. */
    CHECK(nc_lag_seconds(&h, 2000, 103.0) == 0, "read earlier: %g", nc_lag_seconds(&h, 2000, 103.0));
    /* A primary behind the newest (a new one after a failover) starts anew. */
    nc_lsn_history_add(&h, 120.0, 4000);
    CHECK(nc_lsn_history_newest(&h, &newest) == 0 && newest == 4000 && h.count == 1, "restart: %d", h.count);
    CHECK(nc_lag_seconds(&h, 3000, 121.0) == 1.0, "after restart: %g", nc_lag_seconds(&h, 3000, 121.0));
}

static void test_history_wraps(void)
{
    static nc_lsn_history h;
    nc_lsn_history_clear(&h);
    for (int i = 0; i < NC_LSN_HISTORY + 10; i++)
        nc_lsn_history_add(&h, (double)i, (uint64_t)(i + 1) * 100);
    CHECK(h.count == NC_LSN_HISTORY && h.wrapped, "full: %d", h.count);
    /* The oldest kept sighting is at t=10 (lsn 1100): a replica at 0 is
     * at least that far behind. */
    double l = nc_lag_seconds(&h, 0, 300.0);
    CHECK(l == 290.0, "lower bound: %g", l);
    CHECK(nc_lag_seconds(&h, 20000, 300.0) == 100.0, "inside: %g", nc_lag_seconds(&h, 20000, 300.0));
    uint64_t newest;
    CHECK(nc_lsn_history_newest(&h, &newest) == 0 && newest == (uint64_t)(NC_LSN_HISTORY + 10) * 100, "newest");
}

static nc_read_ep standby(double bytes, double secs, int in_flight)
{
    nc_read_ep e = {1, 1, bytes, secs, in_flight, 0, 0};
    return e;
}

static void test_eligible(void)
{
    nc_read_limits lim = {1000, 5, 0, 0};
    nc_read_ep e = standby(10, 1, 0);
    CHECK(nc_read_eligible(&e, &lim), "within");
    e = standby(1000, 5, 0);
    CHECK(nc_read_eligible(&e, &lim), "at the limits");
    e = standby(1001, 0, 0);
    CHECK(!nc_read_eligible(&e, &lim), "bytes over");
    e = standby(0, 5.01, 0);
    CHECK(!nc_read_eligible(&e, &lim), "seconds over");
    e = standby(NAN, 0, 0);
    CHECK(!nc_read_eligible(&e, &lim), "unknown bytes");
    e = standby(0, NAN, 0);
    CHECK(!nc_read_eligible(&e, &lim), "unknown seconds");
    e = standby(0, 0, 0);
    e.up = 0;
    CHECK(!nc_read_eligible(&e, &lim), "down");
    e = standby(0, 0, 0);
    e.standby = 0;
    CHECK(!nc_read_eligible(&e, &lim), "writable is not a standby");
}

static void test_choose(void)
{
    nc_read_limits lim = {1000, 5, 0, 0};
    /* 0 primary, 1 and 2 standbys, 3 a standby past the limit. */
    nc_read_ep eps[4] = {{1, 0, NAN, NAN, 0, 0, 0}, standby(0, 0, 0), standby(0, 0, 0), standby(5000, 0, 0)};
    unsigned rr = 0;
    int seq[6];
    for (int k = 0; k < 6; k++)
        seq[k] = nc_read_choose(NC_TARGET_STANDBY, eps, 4, 0, &lim, &rr);
    CHECK(seq[0] == 1 && seq[1] == 2 && seq[2] == 1 && seq[3] == 2 && seq[4] == 1 && seq[5] == 2,
          "ties in turn: %d %d %d %d %d %d", seq[0], seq[1], seq[2], seq[3], seq[4], seq[5]);
    /* Least in flight wins over the turn. */
    eps[1].in_flight = 3;
    eps[2].in_flight = 1;
    for (int k = 0; k < 3; k++)
        CHECK(nc_read_choose(NC_TARGET_STANDBY, eps, 4, 0, &lim, &rr) == 2, "least busy");
    eps[2].in_flight = 5;
    CHECK(nc_read_choose(NC_TARGET_PREFER_STANDBY, eps, 4, 0, &lim, &rr) == 1, "prefer: the less busy standby");
    /* ANY counts the primary in. */
    eps[0].in_flight = 0;
    CHECK(nc_read_choose(NC_TARGET_ANY, eps, 4, 0, &lim, &rr) == 0, "any: the idle primary");
    eps[0].in_flight = 9;
    CHECK(nc_read_choose(NC_TARGET_ANY, eps, 4, 0, &lim, &rr) == 1, "any: a standby");
    /* Never the lagging one, even idle. */
    eps[1].up = eps[2].up = 0;
    CHECK(nc_read_choose(NC_TARGET_STANDBY, eps, 4, 0, &lim, &rr) == -1, "none eligible");
    CHECK(nc_read_choose(NC_TARGET_PREFER_STANDBY, eps, 4, 0, &lim, &rr) == -1, "prefer: the primary's path");
    CHECK(nc_read_choose(NC_TARGET_ANY, eps, 4, 0, &lim, &rr) == 0, "any: the primary");
    CHECK(nc_read_choose(NC_TARGET_ANY, eps, 4, -1, &lim, &rr) == -1, "any without a primary");
    CHECK(nc_read_choose(NC_TARGET_PRIMARY, eps, 4, 0, &lim, &rr) == -1, "primary is not a read choice");
    CHECK(nc_read_choose(NC_TARGET_STANDBY, eps, 0, -1, &lim, &rr) == -1, "no endpoints");
    /* A read-only endpoint that is the current one (no writable endpoint
     * known) still serves standby reads. */
    eps[1].up = 1;
    eps[1].in_flight = 0;
    CHECK(nc_read_choose(NC_TARGET_STANDBY, eps, 4, -1, &lim, &rr) == 1, "standby while no primary");
}

/* Read your writes: a write that completed at time tw is at or below the
 * primary's position first seen at or after tw; a standby serves the
 * session's reads once it replayed that far. */
static void test_read_your_writes(void)
{
    static nc_lsn_history h;
    nc_lsn_history_clear(&h);
    uint64_t need = 0;
    CHECK(nc_lsn_history_seen_after(&h, 1.0, &need) == -1, "nothing seen");
    nc_lsn_history_add(&h, 10.0, 100);
    nc_lsn_history_add(&h, 12.0, 300);
    nc_lsn_history_add(&h, 14.0, 300);   /* the same position seen again */
    CHECK(nc_lsn_history_seen_after(&h, 11.0, &need) == 0 && need == 300, "first sighting after: %llu",
          (unsigned long long)need);
    CHECK(nc_lsn_history_seen_after(&h, 9.0, &need) == 0 && need == 100, "earlier: %llu", (unsigned long long)need);
    CHECK(nc_lsn_history_seen_after(&h, 13.0, &need) == 0 && need == 300, "confirmed, no advance: %llu",
          (unsigned long long)need);
    CHECK(nc_lsn_history_seen_after(&h, 14.5, &need) == -1, "not seen since the write");
    nc_read_limits lim = {1000, 5, 1, 300};
    nc_read_ep e = standby(0, 0, 0);
    CHECK(!nc_read_eligible(&e, &lim), "replay unknown");
    e.have_replay = 1;
    e.replay = 299;
    CHECK(!nc_read_eligible(&e, &lim), "not yet replayed");
    e.replay = 300;
    CHECK(nc_read_eligible(&e, &lim), "replayed");
    lim.need_lsn = 0;
    e.replay = 0;
    CHECK(nc_read_eligible(&e, &lim), "no write pending");
    nc_read_ep eps[2] = {{1, 0, NAN, NAN, 0, 1, 300}, e};
    lim.need_lsn = 1;
    unsigned rr = 0;
    CHECK(nc_read_choose(NC_TARGET_PREFER_STANDBY, eps, 2, 0, &lim, &rr) == -1, "the primary's path");
    CHECK(nc_read_choose(NC_TARGET_ANY, eps, 2, 0, &lim, &rr) == 0, "any: the primary");
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"names", test_names},
        {"lsn_parse", test_lsn_parse},
        {"history_and_lag", test_history_and_lag},
        {"history_wraps", test_history_wraps},
        {"eligible", test_eligible},
        {"choose", test_choose},
        {"read_your_writes", test_read_your_writes},
    };
    return nc_run_cases("test_replica", cases, NC_NCASES(cases));
}
