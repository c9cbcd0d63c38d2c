/* inputs.h - what the C tests that feed the core text share: exact-size
 * copies of inputs (so AddressSanitizer catches a read past the length), a
 * printable rendering of bytes for failure lines, and a seeded pseudo-random
 * generator (xorshift64) so random inputs are the same on every run. */
#ifndef NC_TEST_INPUTS_H
#define NC_TEST_INPUTS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A heap copy of in[0..len) with no byte after it (freed by the caller). */
static char *copy_of(const char *in, size_t len)
{
    char *p = malloc(len ? len : 1);
    if (!p) {
        perror("malloc");
        exit(2);
    }
    if (len)
        memcpy(p, in, len);
    return p;
}

/* Printable rendering of a byte string for failure lines (static buffers,
 * four in rotation, so one printf may show several). */
static const char *show(const char *p, size_t n)
{
    static char buf[4][200];
    static int k;
    char *b = buf[k++ & 3];
    size_t o = 0;
    if (!p)
        return "(null)";
    for (size_t i = 0; i < n && o < sizeof buf[0] - 8; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            b[o++] = (char)c;
        else
            o += (size_t)sprintf(b + o, "\\x%02x", c);
    }
    if (o >= sizeof buf[0] - 8)
        o += (size_t)sprintf(b + o, "...");
    b[o] = '\0';
    return b;
}

static unsigned long long rng = 0x9E3779B97F4A7C15ULL;

/* A pseudo-random number in [0, n). */
static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

#endif
