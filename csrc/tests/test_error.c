/* test_error.c - the error record's text: whatever is cut to fit a fixed
 * buffer ends on a UTF-8 character boundary (nc_text_set, used by
 * nc_error_set, nc_error_prefix and every copy of server text).  A message
 * cut inside a character made the binding raise UnicodeDecodeError instead
 * of the error (issue 8, point 4).  And the unknown-outcome rule
 * (nc_outcome_unknown) and its code 3039 (issue 9). */
#include "nc_error.h"
#include "check.h"

#include <string.h>

/* 1 when s is well-formed UTF-8 (no split or stray continuation bytes). */
static int valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3 : (*p & 0xF8) == 0xF0 ? 4 : 0;
        if (!n)
            return 0;
        for (int i = 1; i < n; i++)
            if ((p[i] & 0xC0) != 0x80)
                return 0;
        p += n;
    }
    return 1;
}

/* prefix + count copies of ch. */
static void make_text(char *out, size_t cap, const char *prefix, const char *ch, int count)
{
    size_t o = 0, pl = strlen(prefix), cl = strlen(ch);
    memcpy(out, prefix, pl);
    o = pl;
    for (int i = 0; i < count && o + cl < cap; i++, o += cl)
        memcpy(out + o, ch, cl);
    out[o] = '\0';
}

static void test_text_set_cuts_on_characters(void)
{
    static const char *chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};   /* é € 😀 */
    static const char *prefixes[] = {"", "a", "ab", "abc"};
    char src[4096], dst[64];
    for (size_t c = 0; c < 3; c++) {
        for (size_t p = 0; p < 4; p++) {
            make_text(src, sizeof src, prefixes[p], chars[c], 100);
            for (size_t cap = 1; cap <= sizeof dst; cap++) {
                int n = nc_text_set(dst, cap, "%s", src);
                CHECK(n == (int)strlen(src), "returns what snprintf returns");
                CHECK(valid_utf8(dst), "char %zu prefix %zu cap %zu: '%s' is cut inside a character", c, p, cap, dst);
                CHECK(strncmp(dst, src, strlen(dst)) == 0, "a prefix of the text");
                CHECK(strlen(dst) + strlen(chars[c]) >= cap - 1 || strlen(dst) + 1 == cap,
                      "cap %zu: drops at most the one split character (kept %zu)", cap, strlen(dst));
            }
        }
    }
    CHECK(nc_text_set(dst, sizeof dst, "short %d", 7) == 7 && !strcmp(dst, "short 7"), "text that fits is whole");
}

static void test_error_messages_cut_on_characters(void)
{
    static const char *prefixes[] = {"", "a", "ab", "abc"};
    char src[2 * NC_ERRMSG_MAX];
    for (int p = 0; p < 4; p++) {
        make_text(src, sizeof src, prefixes[p], "\xf0\x9f\x98\x80", 400);
        nc_error err;
        nc_error_set(&err, NC_E_QUERY, NC_K_NONE, "duplicate key DETAIL: %s", src);
        CHECK(valid_utf8(err.message) && strlen(err.message) >= NC_ERRMSG_MAX - 4,
              "a long server message keeps all it can, on a character boundary");
        nc_error_prefix(&err, "endpoint %d", 1);
        CHECK(valid_utf8(err.message) && !strncmp(err.message, "endpoint 1: duplicate key", 25),
              "prefixed, still whole characters");
        nc_error_prefix(&err, "%s", src);   /* a prefix longer than the buffer */
        CHECK(valid_utf8(err.message), "an overlong prefix is cut on a character too");
    }
}

/* ---- the unknown-outcome rule (nc_outcome_unknown) --------------------------- */

static void test_outcome_rule(void)
{
    static const int effects[] = {NC_EFFECT_NONE, NC_EFFECT_WRITE, NC_EFFECT_COMMIT};
    /* every input: only a connection failure after the statement may have run */
    for (int f = 0; f < 2; f++)
        for (int na = 0; na < 2; na++)
            for (int e = 0; e < 3; e++)
                for (int tx = 0; tx < 2; tx++) {
                    int want = f && !na && (effects[e] == NC_EFFECT_COMMIT || (!tx && effects[e] == NC_EFFECT_WRITE));
                    CHECK(nc_outcome_unknown(f, na, effects[e], tx) == want, "failure %d not_applied %d effect %d "
                          "in_txn %d should be %d", f, na, effects[e], tx, want);
                }
    /* the cases the issue names */
    CHECK(nc_outcome_unknown(1, 0, NC_EFFECT_WRITE, 0), "an autocommit write in flight: unknown");
    CHECK(!nc_outcome_unknown(1, 0, NC_EFFECT_NONE, 0), "a read in flight: known (it changed nothing)");
    CHECK(nc_outcome_unknown(1, 0, NC_EFFECT_COMMIT, 1), "COMMIT in flight: unknown");
    CHECK(!nc_outcome_unknown(1, 0, NC_EFFECT_WRITE, 1), "a write inside a transaction: rolled back with it");
    CHECK(!nc_outcome_unknown(1, 1, NC_EFFECT_COMMIT, 1), "a COMMIT never sent: nothing happened");
    CHECK(!nc_outcome_unknown(0, 0, NC_EFFECT_WRITE, 0), "a server error: the server said what happened");
}

static void test_outcome_code(void)
{
    /* 3039 is OutcomeUnknownError, a lost connection (so a driver and
     * SQLAlchemy still see a disconnect), not a statement known not applied */
    CHECK(nc_error_class(NC_E_OUTCOME_UNKNOWN, NC_K_NONE, NULL) == NC_C_OUTCOME_UNKNOWN, "3039's class");
    CHECK(nc_error_class(NC_E_OUTCOME_UNKNOWN, NC_K_NONE, "08006") == NC_C_OUTCOME_UNKNOWN,
          "3039 keeps its class whatever the SQLSTATE of its cause");
    CHECK(!strcmp(nc_class_name(NC_C_OUTCOME_UNKNOWN), "OutcomeUnknownError"), "the class name of errors.py");
    CHECK(nc_class_default_code(NC_C_OUTCOME_UNKNOWN) == 3039, "its default code");
    CHECK(nc_error_failure(NC_E_OUTCOME_UNKNOWN, NULL) == NC_FAIL_LOST, "a lost connection");
    CHECK(nc_error_failure(NC_E_OUTCOME_UNKNOWN, "57P01") == NC_FAIL_LOST, "with a SQLSTATE too");
    nc_error e;
    nc_error_set(&e, NC_E_OUTCOME_UNKNOWN, NC_K_NONE, "x");
    e.sent = NC_SENT_YES;
    CHECK(!nc_error_not_applied(&e), "sent: maybe applied");
    CHECK(nc_error_describe(NC_E_OUTCOME_UNKNOWN) != NULL, "described");
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"text_set_cuts_on_characters", test_text_set_cuts_on_characters},
        {"error_messages_cut_on_characters", test_error_messages_cut_on_characters},
        {"outcome_rule", test_outcome_rule},
        {"outcome_code", test_outcome_code},
    };
    return nc_run_cases("test_error", cases, NC_NCASES(cases));
}
