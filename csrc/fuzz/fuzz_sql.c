/* fuzz_sql.c - libFuzzer target for the SQL text entry points of the core:
 * the lexer (nc_lexer.c), the placeholder rewrite (nc_params.c) and the
 * questions about SQL text (nc_sqltext.c), each in both dialects.
 *
 * The input is the SQL text, as it is (libFuzzer hands us an exact-size
 * buffer, so AddressSanitizer sees a read past the length).  Beyond "no
 * crash, no sanitizer report" it checks what the headers promise:
 *
 *   lexer      every option set: tokens are laid end to end and give back
 *              the input, each known kind with only its flags, END repeats;
 *              nc_lex_find gives the same tokens as nc_lex_next filtered.
 *   rewrite    a model built from the lexer's tokens: plain text copied
 *              byte for byte but %% -> % (inside literals and comments too),
 *              a %% token -> %, each placeholder -> $n / ?n (for
 *              PostgreSQL with a space before it after a word, number or $)
 *              with n
 *              counting up (%s) or the slot of the name's first use
 *              (%(name)s, names[] in order); every slot 1..nslots used; the
 *              count of placeholders in the output equals what the rewrite
 *              reports; len == strlen; the same answer twice.  On error:
 *              code 2014, a printable-ASCII message, out zeroed.
 *   sqltext    each answer the same twice; the verb one of the four (OTHER
 *              for blank text); blank = only space, comments and
 *              ';' (an unterminated block comment is not blank for
 *              PostgreSQL); a plain select starts with SELECT or WITH and
 *              holds none of the bytes it must refuse; a ROLLBACK TO starts
 *              with ROLLBACK; an accepted column type is normalised (no
 *              space at either end, none doubled) and accepted again as is.
 *
 * A broken promise prints what failed and aborts, so libFuzzer keeps the
 * input as a crash reproducer.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nc_error.h"
#include "nc_lexer.h"
#include "nc_params.h"
#include "nc_sqltext.h"

#include "fuzz_check.h"

static const char *dname(int d)
{
    return d == NC_DIALECT_PG ? "postgresql" : "sqlite";
}

/* ---- the lexer ------------------------------------------------------------ */

static void check_lexer(const char *sql, size_t len, int d, unsigned opts)
{
    nc_lexer lx, fx;
    nc_token t, f;
    size_t at = 0;
    nc_lex_init(&lx, sql, len, d, opts);
    nc_lex_init(&fx, sql, len, d, opts);
    int have_f = nc_lex_find(&fx, &f, NC_TOKS(NC_TOK_PARAM) | NC_TOKS(NC_TOK_STRING));
    for (;;) {
        int k = nc_lex_next(&lx, &t);
        CHECK(k == t.kind, "%s opts %u: returned %d, token kind %d", dname(d), opts, k, t.kind);
        if (k == NC_TOK_END) {
            CHECK(t.len == 0, "%s: END with length %zu", dname(d), t.len);
            break;
        }
        CHECK(k > NC_TOK_END && k <= NC_TOK_PUNCT, "%s: unknown kind %d", dname(d), k);
        CHECK(t.off == at && t.len > 0 && t.len <= len - at, "%s opts %u: token at %zu+%zu, expected at %zu of %zu",
              dname(d), opts, t.off, t.len, at, len);
        unsigned allowed = NC_TOKF_UNTERMINATED;
        if (k == NC_TOK_STRING)
            allowed |= d == NC_DIALECT_PG ? NC_TOKF_ESCAPE | NC_TOKF_DOLLAR : 0;
        else if (k == NC_TOK_COMMENT)
            allowed |= NC_TOKF_BLOCK;
        else if (k != NC_TOK_QIDENT && k != NC_TOK_PARAM)
            allowed = 0;
        CHECK((t.flags & ~allowed) == 0, "%s: kind %d with flags %#x", dname(d), k, t.flags);
        if (t.flags & NC_TOKF_UNTERMINATED)
            CHECK(t.off + t.len == len, "%s: unterminated token ends at %zu before %zu", dname(d),
                  t.off + t.len, len);
        if (k == NC_TOK_PARAM)
            CHECK((opts & NC_LEX_PARAMS) && sql[t.off] == '%', "%s: PARAM token without NC_LEX_PARAMS or %%",
                  dname(d));
        if (k == NC_TOK_SEMI)
            CHECK(t.len == 1 && sql[t.off] == ';', "%s: SEMI token", dname(d));
        if (k == NC_TOK_PUNCT)
            CHECK(t.len == 1, "%s: punctuation of %zu bytes", dname(d), t.len);
        if (k == NC_TOK_PARAM || k == NC_TOK_STRING) {
            CHECK(have_f == k && f.off == t.off && f.len == t.len && f.flags == t.flags,
                  "%s: nc_lex_find gave kind %d at %zu+%zu, nc_lex_next kind %d at %zu+%zu", dname(d),
                  have_f, f.off, f.len, k, t.off, t.len);
            have_f = nc_lex_find(&fx, &f, NC_TOKS(NC_TOK_PARAM) | NC_TOKS(NC_TOK_STRING));
        }
        at += t.len;
    }
    CHECK(at == len, "%s: tokens cover %zu of %zu bytes", dname(d), at, len);
    CHECK(have_f == NC_TOK_END, "%s: nc_lex_find found more than nc_lex_next", dname(d));
    CHECK(nc_lex_next(&lx, &t) == NC_TOK_END, "%s: END does not repeat", dname(d));
}

/* ---- the rewrite ------------------------------------------------------------- */

static int is_type(char c)
{
    return c == 's' || c == 'b' || c == 't';
}

/* Placeholders as the server reads the text: the dialect's marker as a
 * punctuation token directly followed by a number token, outside every
 * string, identifier and comment.  The input is read as the rewrite reads
 * it (opts NC_LEX_PARAMS: what stands inside a %(name)s is part of it), the
 * output as the server does (no options). */
static long count_markers(const char *s, size_t len, int d, unsigned opts)
{
    const char marker = d == NC_DIALECT_PG ? '$' : '?';
    nc_lexer lx;
    nc_token t;
    long n = 0;
    int after_marker = 0;
    nc_lex_init(&lx, s, len, d, opts);
    while (nc_lex_next(&lx, &t) != NC_TOK_END) {
        if (after_marker && t.kind == NC_TOK_NUMBER)
            n++;
        after_marker = t.kind == NC_TOK_PUNCT && s[t.off] == marker;
    }
    return n;
}

static int is_wordish(char c)
{
    unsigned char u = (unsigned char)c;
    return isalnum(u) || u == '_' || u == '$' || u >= 0x80;
}

static void check_rewrite(const char *sql, size_t len, int d)
{
    nc_sql out, again;
    nc_error err, err2;
    nc_error_clear(&err);
    nc_error_clear(&err2);
    int rc = nc_sql_translate(sql, len, d, &out, &err);
    int rc2 = nc_sql_translate(sql, len, d, &again, &err2);
    CHECK(rc == rc2, "%s: two answers: %d then %d", dname(d), rc, rc2);
    if (rc != 0) {
        CHECK(rc == -1, "%s: returned %d", dname(d), rc);
        CHECK(err.code == NC_E_PARAMS, "%s: error code %d (%s)", dname(d), err.code, err.message);
        CHECK(!strcmp(err.message, err2.message), "%s: two messages", dname(d));
        CHECK(err.message[0] != '\0', "%s: empty message", dname(d));
        for (const char *p = err.message; *p; p++)
            CHECK(*p >= 0x20 && *p < 0x7f, "%s: byte %#x in the message", dname(d), (unsigned char)*p);
        CHECK(!out.sql && !out.names && !out.nslots && !out.len, "%s: out not zeroed on error", dname(d));
        return;
    }
    CHECK(out.sql && strlen(out.sql) == out.len, "%s: len %zu, strlen %zu", dname(d), out.len,
          out.sql ? strlen(out.sql) : 0);
    CHECK(again.len == out.len && !memcmp(again.sql, out.sql, out.len) && again.nslots == out.nslots
              && again.style == out.style, "%s: two different rewrites", dname(d));
    CHECK((out.style == NC_STYLE_NONE) == (out.nslots == 0), "%s: style %d with %d slots", dname(d), out.style,
          out.nslots);
    CHECK((out.style == NC_STYLE_NAMED) == (out.names != NULL), "%s: style %d, names %p", dname(d), out.style,
          (void *)out.names);

    /* The model: walk the input's tokens and the output side by side. */
    const char marker = d == NC_DIALECT_PG ? '$' : '?';
    nc_lexer lx;
    nc_token t;
    size_t o = 0;
    int next_pos = 0, seen_names = 0, placeholders = 0, prev_was_text = 0;
    char *used = calloc((size_t)out.nslots + 1, 1);
    if (!used)
        abort();
    nc_lex_init(&lx, sql, len, d, NC_LEX_PARAMS);
    while (nc_lex_next(&lx, &t) != NC_TOK_END) {
        const char *p = sql + t.off;
        if (t.kind != NC_TOK_PARAM) {
            /* copied, each %% in it (inside a literal or comment) made % */
            for (size_t i = 0; i < t.len; i++) {
                CHECK(o < out.len && out.sql[o] == p[i], "%s: text at input %zu not copied to output %zu",
                      dname(d), t.off + i, o);
                o++;
                if (p[i] == '%' && i + 1 < t.len && p[i + 1] == '%')
                    i++;
            }
            prev_was_text = 1;
            continue;
        }
        CHECK(t.len >= 2, "%s: a lone %% at %zu was accepted", dname(d), t.off);
        if (p[1] == '%') {
            CHECK(o < out.len && out.sql[o] == '%', "%s: %%%% at %zu not made %%", dname(d), t.off);
            o++;
            prev_was_text = 1;
            continue;
        }
        int slot;
        if (p[1] == '(') {
            CHECK(out.style == NC_STYLE_NAMED && t.len >= 4 && p[t.len - 2] == ')' && is_type(p[t.len - 1]),
                  "%s: named placeholder %zu+%zu accepted as such", dname(d), t.off, t.len);
            size_t nlen = t.len - 4;
            slot = 0;
            for (int i = 0; i < seen_names; i++)
                if (strlen(out.names[i]) == nlen && !memcmp(out.names[i], p + 2, nlen))
                    slot = i + 1;
            if (!slot) {
                CHECK(seen_names < out.nslots, "%s: more names than the %d slots", dname(d), out.nslots);
                CHECK(strlen(out.names[seen_names]) == nlen && !memcmp(out.names[seen_names], p + 2, nlen),
                      "%s: names[%d] is not the name at %zu", dname(d), seen_names, t.off);
                slot = ++seen_names;
            }
        } else {
            CHECK(out.style == NC_STYLE_POSITIONAL && t.len == 2 && is_type(p[1]),
                  "%s: positional placeholder %zu+%zu", dname(d), t.off, t.len);
            slot = ++next_pos;
        }
        /* PostgreSQL: a space between the input's word/number/$ and $n. */
        if (d == NC_DIALECT_PG && t.off > 0 && o > 0 && prev_was_text && is_wordish(sql[t.off - 1])) {
            CHECK(out.sql[o] == ' ', "%s: no space between %#x and the placeholder at %zu", dname(d),
                  (unsigned char)sql[t.off - 1], t.off);
            o++;
        }
        char want[16];
        int wn = snprintf(want, sizeof want, "%c%d", marker, slot);
        CHECK(o + (size_t)wn <= out.len && !memcmp(out.sql + o, want, (size_t)wn),
              "%s: placeholder at %zu not rewritten to %s", dname(d), t.off, want);
        o += (size_t)wn;
        CHECK(o == out.len || out.sql[o] < '0' || out.sql[o] > '9',
              "%s: %s at %zu runs into a digit", dname(d), want, t.off);
        used[slot] = 1;
        placeholders++;
        prev_was_text = 0;
    }
    CHECK(o == out.len, "%s: output has %zu bytes, the model %zu", dname(d), out.len, o);
    if (out.style == NC_STYLE_POSITIONAL)
        CHECK(next_pos == out.nslots, "%s: %d placeholders, %d slots", dname(d), next_pos, out.nslots);
    if (out.style == NC_STYLE_NAMED)
        CHECK(seen_names == out.nslots, "%s: %d names, %d slots", dname(d), seen_names, out.nslots);
    for (int s = 1; s <= out.nslots; s++)
        CHECK(used[s], "%s: slot %d never used", dname(d), s);
    free(used);

    /* What the server will see: as many placeholders more than the input
     * already held as the rewrite put in. */
    long before = count_markers(sql, len, d, NC_LEX_PARAMS), after = count_markers(out.sql, out.len, d, 0);
    CHECK(after - before == placeholders,
          "%s: the rewrite put in %d placeholders but the output reads as %ld more than the input",
          dname(d), placeholders, after - before);
    nc_sql_free(&out);
    nc_sql_free(&again);
    CHECK(out.sql == NULL && out.names == NULL, "nc_sql_free left pointers");
}

/* ---- questions about SQL text --------------------------------------------------- */

static int starts_word_ci(const char *s, size_t len, const char *word)
{
    size_t i = 0, n = strlen(word);
    for (;;) {      /* whitespace as Python's str.isspace() sees it, as the checks do */
        size_t n = i < len ? nc_lex_pyspace(s + i, len - i) : 0;
        if (!n)
            break;
        i += n;
    }
    return len - i >= n && !strncasecmp(s + i, word, n);
}

static void check_sqltext(const char *sql, size_t len)
{
    for (int d = NC_DIALECT_PG; d <= NC_DIALECT_SQLITE; d++) {
        int blank = nc_sql_is_blank(sql, len, d);
        CHECK(blank == nc_sql_is_blank(sql, len, d), "%s: is_blank not stable", dname(d));
        int model = 1;
        nc_lexer lx;
        nc_token t;
        nc_lex_init(&lx, sql, len, d, 0);
        while (nc_lex_next(&lx, &t) != NC_TOK_END)
            if (!(t.kind == NC_TOK_SPACE || t.kind == NC_TOK_SEMI
                  || (t.kind == NC_TOK_COMMENT && !(d == NC_DIALECT_PG && (t.flags & NC_TOKF_UNTERMINATED)))))
                model = 0;
        CHECK(blank == model, "%s: is_blank says %d, the tokens %d", dname(d), blank, model);
        int verb = nc_sql_verb(sql, len, d);
        CHECK(verb == nc_sql_verb(sql, len, d), "%s: verb not stable", dname(d));
        CHECK(verb >= NC_VERB_OTHER && verb <= NC_VERB_DELETE, "%s: verb %d", dname(d), verb);
        CHECK(!(blank && verb != NC_VERB_OTHER), "%s: a blank text with verb %d", dname(d), verb);
    }

    int plain = nc_sql_is_plain_select(sql, len);
    CHECK(plain == nc_sql_is_plain_select(sql, len), "is_plain_select not stable");
    if (plain) {
        CHECK(plain == 1, "is_plain_select returned %d", plain);
        CHECK(starts_word_ci(sql, len, "select") || starts_word_ci(sql, len, "with"),
              "a plain select that does not start with SELECT or WITH");
        for (size_t i = 0; i < len; i++) {
            CHECK(!strchr("\\$`[", sql[i]) && sql[i] != '\0', "a plain select with byte %#x at %zu",
                  (unsigned char)sql[i], i);
            if (i + 1 < len)
                CHECK(!(sql[i] == '-' && sql[i + 1] == '-') && !(sql[i] == '/' && sql[i + 1] == '*'),
                      "a plain select with a comment at %zu", i);
        }
        /* One statement: a ';' outside literals only at the end (the lexer:
         * with \ $ ` refused, both dialects read the text the same). */
        nc_lexer lx;
        nc_token t;
        int after_semi = 0;
        nc_lex_init(&lx, sql, len, NC_DIALECT_PG, NC_LEX_UNICODE_SPACE);
        while (nc_lex_next(&lx, &t) != NC_TOK_END) {
            CHECK(!after_semi || t.kind == NC_TOK_SPACE, "a plain select with more after its ';' (kind %d at %zu)",
                  t.kind, t.off);
            CHECK(!(t.flags & NC_TOKF_UNTERMINATED), "a plain select with an unterminated token at %zu", t.off);
            if (t.kind == NC_TOK_SEMI)
                after_semi = 1;
        }
    }

    /* what a statement may leave behind: a plain read exactly when
     * is_plain_select says so; a commit only with such a word in the text */
    for (int d = NC_DIALECT_PG; d <= NC_DIALECT_SQLITE; d++) {
        int eff = nc_sql_effect(sql, len, d);
        CHECK(eff == nc_sql_effect(sql, len, d), "%s: effect not stable", dname(d));
        CHECK(eff >= NC_EFFECT_NONE && eff <= NC_EFFECT_COMMIT, "%s: effect %d", dname(d), eff);
        CHECK((eff == NC_EFFECT_NONE) == (plain != 0), "%s: effect %d, is_plain_select %d", dname(d), eff, plain);
        if (eff == NC_EFFECT_COMMIT) {
            nc_lexer lx;
            nc_token t;
            int word = 0;
            nc_lex_init(&lx, sql, len, d, 0);
            while (nc_lex_next(&lx, &t) != NC_TOK_END)
                if (t.kind == NC_TOK_WORD && ((t.len == 6 && !strncasecmp(sql + t.off, "commit", 6))
                                              || (t.len == 3 && !strncasecmp(sql + t.off, "end", 3))
                                              || (t.len == 7 && !strncasecmp(sql + t.off, "prepare", 7))))
                    word = 1;
            CHECK(word, "%s: a commit without COMMIT, END or PREPARE", dname(d));
        }
    }

    int rb = nc_sql_is_rollback_to(sql, len);
    CHECK(rb == nc_sql_is_rollback_to(sql, len), "is_rollback_to not stable");
    if (rb)
        CHECK(starts_word_ci(sql, len, "rollback"), "a ROLLBACK TO that does not start with ROLLBACK");

    /* the session question: stable, and never true of text with no word at all */
    for (int d = NC_DIALECT_PG; d <= NC_DIALECT_SQLITE; d++) {
        int ses = nc_sql_changes_session(sql, len, d);
        CHECK(ses == nc_sql_changes_session(sql, len, d), "%s: changes_session not stable", dname(d));
        if (ses) {
            nc_lexer lx;
            nc_token t;
            int words = 0;
            nc_lex_init(&lx, sql, len, d, 0);
            while (nc_lex_next(&lx, &t) != NC_TOK_END)
                words += t.kind == NC_TOK_WORD;
            CHECK(words > 0, "%s: changes_session without a word", dname(d));
        }
    }

    char *out = malloc(len + 1);
    if (!out)
        abort();
    size_t outlen = (size_t)-1;
    int ct = nc_sql_column_type(sql, len, out, &outlen);
    CHECK(ct == nc_sql_column_type(sql, len, NULL, NULL), "column_type answers differently without out");
    if (ct) {
        CHECK(outlen <= len && strlen(out) == outlen, "column_type: outlen %zu, strlen %zu, input %zu", outlen,
              strlen(out), len);
        CHECK(outlen > 0 && !isspace((unsigned char)out[0]) && !isspace((unsigned char)out[outlen - 1]),
              "column_type: space at an end of '%s'", out);
        CHECK(!strstr(out, "  "), "column_type: doubled space in '%s'", out);
        char *again = malloc(outlen + 1);
        size_t alen = 0;
        if (!again)
            abort();
        CHECK(nc_sql_column_type(out, outlen, again, &alen) == 1 && alen == outlen && !memcmp(again, out, alen),
              "column_type: its own output '%s' is not accepted unchanged", out);
        free(again);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *sql = (const char *)data;
    static const unsigned opt_sets[] = {0, NC_LEX_PARAMS, NC_LEX_UNICODE_SPACE,
                                        NC_LEX_PARAMS | NC_LEX_UNICODE_SPACE};
    for (int d = NC_DIALECT_PG; d <= NC_DIALECT_SQLITE; d++) {
        for (size_t i = 0; i < sizeof opt_sets / sizeof opt_sets[0]; i++)
            check_lexer(sql, size, d, opt_sets[i]);
        check_rewrite(sql, size, d);
    }
    check_sqltext(sql, size);
    return 0;
}
