/* check.h - the little test framework of the C unit tests.
 *
 * CHECK counts a pass or prints a FAIL line with the condition and a message.
 * A program lists its test functions in an nc_test_case table and ends with
 * `return nc_run_cases("test_x", cases, n);`, which runs them in order and
 * prints, besides the human lines, lines that tests/run.sh reads:
 *
 *   NCTEST start <program> <case>
 *   NCTEST case <program> <case> ok|FAIL checks=<passed> failed=<failed> seconds=<s>
 *   NCTEST summary <program> cases=<n> cases_failed=<n> checks=<n> checks_failed=<n>
 *
 * and last the human line "N passed, N failed" (checks).  A program that dies
 * or hangs prints no summary; the last "start" line names the case that was
 * running.  The exit status is non-zero when anything failed.
 *
 * Timing bounds: code runs several times slower under the sanitizers, and the
 * machine is shared, so an upper bound on a duration is written as
 * `limit + SLACK` with SLACK scaled by nc_time_scale(): 1 in a plain build,
 * 4 under AddressSanitizer or ThreadSanitizer, or NC_TEST_TIME_SCALE from the
 * environment.  Lower bounds (something must not happen early) are never
 * scaled. */
#ifndef NC_TEST_CHECK_H
#define NC_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "nc_time.h"

static int passed, failed;

/* A program with a CHECK of its own defines NC_TEST_OWN_CHECK first. */
#ifndef NC_TEST_OWN_CHECK
#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) {                                                       \
            passed++;                                                     \
        } else {                                                          \
            failed++;                                                     \
            printf("FAIL %s (line %d): %s: ", __func__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                          \
            printf("\n");                                                 \
            fflush(stdout);                                               \
        }                                                                 \
    } while (0)
#endif

/* Shared flags between test threads. */
#define LD(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)
#define ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_SEQ_CST)
#define INC(x) __atomic_add_fetch(&(x), 1, __ATOMIC_SEQ_CST)
#define DEC(x) __atomic_sub_fetch(&(x), 1, __ATOMIC_SEQ_CST)

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define NC_TEST_DEFAULT_SCALE 4.0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define NC_TEST_DEFAULT_SCALE 4.0
#endif
#endif
#ifndef NC_TEST_DEFAULT_SCALE
#define NC_TEST_DEFAULT_SCALE 1.0
#endif

/* How much longer than in a plain build a bound may take here. */
static inline double nc_time_scale(void)
{
    static double scale;
    if (scale == 0) {
        const char *s = getenv("NC_TEST_TIME_SCALE");
        double v = s ? atof(s) : 0;
        scale = v >= 1 ? v : NC_TEST_DEFAULT_SCALE;
    }
    return scale;
}

typedef struct nc_test_case {
    const char *name;
    void (*fn)(void);
} nc_test_case;

#define NC_NCASES(a) (sizeof(a) / sizeof((a)[0]))

static inline int nc_run_cases(const char *program, const nc_test_case *cases, size_t n)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    double t0 = nc_now();
    int cases_failed = 0;
    for (size_t i = 0; i < n; i++) {
        printf("NCTEST start %s %s\n", program, cases[i].name);
        double t = nc_now();
        int p0 = passed, f0 = failed;
        cases[i].fn();
        double el = nc_now() - t;
        int ok = failed == f0;
        cases_failed += !ok;
        printf("%-24s %s %.2f s\n", cases[i].name, ok ? "ok  " : "FAIL", el);
        printf("NCTEST case %s %s %s checks=%d failed=%d seconds=%.3f\n", program, cases[i].name,
               ok ? "ok" : "FAIL", passed - p0, failed - f0, el);
    }
    printf("(total %.2f s)\n", nc_now() - t0);
    printf("NCTEST summary %s cases=%zu cases_failed=%d checks=%d checks_failed=%d\n", program, n,
           cases_failed, passed, failed);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
