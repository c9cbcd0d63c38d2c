/* fuzz_check.h - CHECK(cond, fmt, ...): a promise a fuzz target checks on
 * every input.  A broken one prints where and why and aborts, so libFuzzer
 * keeps the input (crash-<sha1>) to replay; tests/run.sh's c-fuzz stage
 * reads "broken promise" in its log. */
#ifndef NC_FUZZ_CHECK_H
#define NC_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s:%d: broken promise: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
            abort();                                                              \
        }                                                                         \
    } while (0)

#endif
