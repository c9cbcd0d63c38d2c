/* utf8_check.h - the tests' own oracle for "valid UTF-8" (no overlong forms,
 * no surrogates, at most U+10FFFF), written apart from the core's repair
 * functions (nc_utf8_clean, nc_utf8_fix_tail) so that it can catch them
 * wrong.  Used by test_pg_dsn.c and csrc/fuzz/fuzz_dsn.c. */
#ifndef NC_TEST_UTF8_CHECK_H
#define NC_TEST_UTF8_CHECK_H

static inline int utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, n, cp;
        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            n = 1, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF)
            n = 2, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4)
            n = 3, cp = c & 0x07;
        else
            return 0;
        for (unsigned i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        p += n + 1;
    }
    return 1;
}

#endif
