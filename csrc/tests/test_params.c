/* test_params.c - unit tests for csrc/core/nc_params.c (placeholder rewrite).
 *
 * Plain C with check.h: each test function is one test, each CHECK one check;
 * a failed check prints one line, every test function reports its counts, and
 * the exit status is non-zero when anything failed.
 * Every input is copied into a malloc'd buffer of
 * exactly len bytes (no terminating NUL), so under AddressSanitizer a read
 * past len is caught.
 *
 * When built with -DNC_TEST_WRAP_ALLOC and -Wl,--wrap=malloc,--wrap=realloc
 * (the Makefile does that), allocation failures are injected to check that
 * every out-of-memory path returns -1, leaves out zeroed and leaks nothing
 * (LeakSanitizer checks the last part).
 */
#include "nc_params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NC_TEST_OWN_CHECK
#include "check.h"
#include "inputs.h"

#define PG NC_DIALECT_PG
#define SQ NC_DIALECT_SQLITE
#define NONE NC_STYLE_NONE
#define POS NC_STYLE_POSITIONAL
#define NAMED NC_STYLE_NAMED

static const char *dname(int d)
{
    return d == PG ? "pg" : d == SQ ? "sqlite" : "?";
}

static int fail(int line, const char *fmt, const char *a, const char *b)
{
    printf("FAIL line %d: ", line);
    printf(fmt, a, b);
    printf("\n");
    failed++;
    return 0;
}

static int is_zeroed(const nc_sql *s)
{
    return s->sql == NULL && s->len == 0 && s->style == 0 && s->nslots == 0 && s->names == NULL;
}

/* Run nc_sql_translate on an exact-size copy of in[0..len). */
static int run(int dialect, const char *in, size_t len, nc_sql *out, nc_error *err)
{
    char *copy = copy_of(in, len);
    memset(out, 0xAB, sizeof *out);     /* must come back filled or zeroed */
    nc_error_clear(err);
    int rc = nc_sql_translate(copy, len, dialect, out, err);
    free(copy);
    return rc;
}

/* names: NULL for none, else the expected names joined by '|'. */
static void check_ok(int line, int dialect, const char *in, size_t len, const char *expect,
                     int style, int nslots, const char *names)
{
    nc_sql out;
    nc_error err;
    char what[600];
    snprintf(what, sizeof what, "[%s] %s", dname(dialect), show(in, len));
    int rc = run(dialect, in, len, &out, &err);
    if (rc != 0) {
        fail(line, "%s: unexpected error: %s", what, err.message);
        return;
    }
    int ok = 1;
    if (!out.sql || strcmp(out.sql, expect) != 0)
        ok = fail(line, "%s: got '%s'", what, show(out.sql, out.sql ? strlen(out.sql) : 0));
    else if (out.len != strlen(out.sql))
        ok = fail(line, "%s: len does not match strlen%s", what, "");
    if (out.style != style) {
        char b[64];
        snprintf(b, sizeof b, "%d, expected %d", out.style, style);
        ok = fail(line, "%s: style %s", what, b);
    }
    if (out.nslots != nslots) {
        char b[64];
        snprintf(b, sizeof b, "%d, expected %d", out.nslots, nslots);
        ok = fail(line, "%s: nslots %s", what, b);
    }
    if (!names) {
        if (out.names)
            ok = fail(line, "%s: names should be NULL%s", what, "");
    } else if (!out.names) {
        ok = fail(line, "%s: names is NULL%s", what, "");
    } else {
        /* compare with the '|'-separated list */
        const char *p = names;
        int i = 0;
        for (;;) {
            const char *bar = strchr(p, '|');
            size_t n = bar ? (size_t)(bar - p) : strlen(p);
            if (i >= out.nslots) {
                ok = fail(line, "%s: fewer names than expected%s", what, "");
                break;
            }
            if (strlen(out.names[i]) != n || memcmp(out.names[i], p, n) != 0) {
                ok = fail(line, "%s: wrong name '%s'", what, show(out.names[i], strlen(out.names[i])));
                break;
            }
            i++;
            if (!bar)
                break;
            p = bar + 1;
        }
        if (ok && i != out.nslots)
            ok = fail(line, "%s: more names than expected%s", what, "");
    }
    nc_sql_free(&out);
    if (!is_zeroed(&out))
        ok = fail(line, "%s: nc_sql_free did not zero the struct%s", what, "");
    if (ok)
        passed++;
}

/* Expect an NC_E_PARAMS error whose message names offset and contains substr. */
static void check_err(int line, int dialect, const char *in, size_t len, long offset,
                      const char *substr)
{
    nc_sql out;
    nc_error err;
    char what[600], off[64];
    snprintf(what, sizeof what, "[%s] %s", dname(dialect), show(in, len));
    int rc = run(dialect, in, len, &out, &err);
    int ok = 1;
    if (rc != -1) {
        fail(line, "%s: expected an error, got '%s'", what, out.sql ? show(out.sql, out.len) : "?");
        if (rc == 0)
            nc_sql_free(&out);
        return;
    }
    if (!is_zeroed(&out))
        ok = fail(line, "%s: out not zeroed on error%s", what, "");
    if (err.code != NC_E_PARAMS || err.kind != NC_K_PROGRAMMING)
        ok = fail(line, "%s: wrong code/kind: %s", what, err.message);
    snprintf(off, sizeof off, "offset %ld", offset);
    if (offset >= 0 && !strstr(err.message, off))
        ok = fail(line, "%s: message lacks the offset: %s", what, err.message);
    if (substr && !strstr(err.message, substr))
        ok = fail(line, "%s: message lacks the problem: %s", what, err.message);
    for (const char *m = err.message; *m; m++)
        if ((unsigned char)*m < 0x20 || (unsigned char)*m >= 0x7f) {
            ok = fail(line, "%s: message is not printable ASCII: %s", what, show(err.message, strlen(err.message)));
            break;
        }
    if (ok)
        passed++;
}

#define OK(d, in, expect, style, nslots, names) \
    check_ok(__LINE__, d, in, sizeof(in) - 1, expect, style, nslots, names)
#define ERR(d, in, offset, substr) check_err(__LINE__, d, in, sizeof(in) - 1, offset, substr)
#define CHECK(cond, what)                                        \
    do {                                                         \
        if (cond)                                                \
            passed++;                                            \
        else                                                     \
            fail(__LINE__, "%s%s", what, "");                    \
    } while (0)

/* ---- cases ------------------------------------------------------------- */

static void test_basic(void)
{
    OK(PG, "", "", NONE, 0, NULL);
    OK(SQ, "", "", NONE, 0, NULL);
    OK(PG, "SELECT 1", "SELECT 1", NONE, 0, NULL);
    OK(SQ, "SELECT 1", "SELECT 1", NONE, 0, NULL);
    OK(PG, "SELECT 10 %% 3", "SELECT 10 % 3", NONE, 0, NULL);
    OK(SQ, "SELECT 10 %% 3", "SELECT 10 % 3", NONE, 0, NULL);
    OK(PG, "%%", "%", NONE, 0, NULL);
    OK(PG, "%%%%", "%%", NONE, 0, NULL);
    /* %% is % inside literals too (psycopg's rule, SQLAlchemy relies on it) */
    OK(PG, "x LIKE 'a%%' OR y %% 2 = 0", "x LIKE 'a%' OR y % 2 = 0", NONE, 0, NULL);
    OK(PG, "x LIKE 'a%%%' OR 'b%%%%'", "x LIKE 'a%%' OR 'b%%'", NONE, 0, NULL);
    OK(PG, "SELECT '5%', '%'", "SELECT '5%', '%'", NONE, 0, NULL);

    /* positional */
    OK(PG, "SELECT %s, %s", "SELECT $1, $2", POS, 2, NULL);
    OK(SQ, "SELECT %s, %s", "SELECT ?1, ?2", POS, 2, NULL);
    OK(PG, "%s", "$1", POS, 1, NULL);
    OK(PG, "%s%s", "$1$2", POS, 2, NULL);
    OK(PG, "INSERT INTO t VALUES (%s, %b, %t)", "INSERT INTO t VALUES ($1, $2, $3)", POS, 3, NULL);
    OK(SQ, "INSERT INTO t VALUES (%s,%b,%t)", "INSERT INTO t VALUES (?1,?2,?3)", POS, 3, NULL);
    OK(PG, "SELECT %s %% %s", "SELECT $1 % $2", POS, 2, NULL);
    OK(PG, "SELECT %%s, %s", "SELECT %s, $1", POS, 1, NULL);
    OK(PG, "SELECT %s::int, %s", "SELECT $1::int, $2", POS, 2, NULL);
    OK(PG, "SELECT x FROM t WHERE a=%s AND b IN (%s,%s)",
       "SELECT x FROM t WHERE a=$1 AND b IN ($2,$3)", POS, 3, NULL);

    /* named */
    OK(PG, "SELECT %(a)s, %(b)s, %(a)s", "SELECT $1, $2, $1", NAMED, 2, "a|b");
    OK(SQ, "SELECT %(a)s, %(b)s, %(a)s", "SELECT ?1, ?2, ?1", NAMED, 2, "a|b");
    OK(PG, "%(x)s", "$1", NAMED, 1, "x");
    OK(PG, "%(b)s %(a)b %(b)t %(c)s %(a)s", "$1 $2 $1 $3 $2", NAMED, 3, "b|a|c");
    OK(PG, "SELECT %(a)s %% %(a)s", "SELECT $1 % $1", NAMED, 1, "a");
    OK(PG, "%(user id)s", "$1", NAMED, 1, "user id");
    OK(PG, "%(h\xc3\xa9)s = %(h\xc3\xa9)s", "$1 = $1", NAMED, 1, "h\xc3\xa9");
    OK(PG, "%(a(b)s", "$1", NAMED, 1, "a(b");
    OK(PG, "%(a%s)s", "$1", NAMED, 1, "a%s");
    OK(PG, "%(a)s%(b)s", "$1$2", NAMED, 2, "a|b");
    OK(PG, "%(A)s %(a)s", "$1 $2", NAMED, 2, "A|a");
    OK(PG, "%(ab)s %(a)s %(abc)s %(ab)s", "$1 $2 $3 $1", NAMED, 3, "ab|a|abc");

    /* placeholder followed by a letter or punctuation is fine */
    OK(PG, "%sx", "$1x", POS, 1, NULL);
    OK(PG, "(%s)", "($1)", POS, 1, NULL);
    OK(PG, "%s.", "$1.", POS, 1, NULL);
}

static void test_literals(void)
{
    /* '...' */
    OK(PG, "SELECT '%s', %s", "SELECT '%s', $1", POS, 1, NULL);
    OK(SQ, "SELECT '%s', %s", "SELECT '%s', ?1", POS, 1, NULL);
    OK(PG, "SELECT '%%', %s", "SELECT '%', $1", POS, 1, NULL);
    OK(SQ, "SELECT '%%', %s", "SELECT '%', ?1", POS, 1, NULL);
    OK(SQ, "SELECT \"a%%b\", `c%%`, %s", "SELECT \"a%b\", `c%`, ?1", POS, 1, NULL);
    OK(PG, "SELECT '%d %', %s", "SELECT '%d %', $1", POS, 1, NULL);
    OK(PG, "SELECT 'it''s %s', %s", "SELECT 'it''s %s', $1", POS, 1, NULL);
    OK(SQ, "SELECT 'it''s %s', %s", "SELECT 'it''s %s', ?1", POS, 1, NULL);
    OK(PG, "SELECT '''', %s", "SELECT '''', $1", POS, 1, NULL);
    OK(PG, "SELECT '', %s, ''", "SELECT '', $1, ''", POS, 1, NULL);
    /* standard_conforming_strings: backslash is not an escape in '...' */
    OK(PG, "SELECT 'a\\', %s", "SELECT 'a\\', $1", POS, 1, NULL);
    OK(SQ, "SELECT 'a\\', %s", "SELECT 'a\\', ?1", POS, 1, NULL);
    /* an e ending a word does not make an E'' string */
    OK(PG, "SELECT some'\\', %s", "SELECT some'\\', $1", POS, 1, NULL);
    /* after punctuation the e does start one, as in the server's lexer */
    OK(PG, "SELECT x.e'\\', %s", "SELECT x.e'\\', %s", NONE, 0, NULL);
    OK(PG, "SELECT U&'\\', %s", "SELECT U&'\\', $1", POS, 1, NULL);
    OK(PG, "SELECT X'ff', B'01', N'%s', %s", "SELECT X'ff', B'01', N'%s', $1", POS, 1, NULL);
    OK(PG, "SELECT '--', '/*', %s", "SELECT '--', '/*', $1", POS, 1, NULL);
    OK(PG, "SELECT '\"', %s", "SELECT '\"', $1", POS, 1, NULL);
    OK(PG, "SELECT '$$', %s", "SELECT '$$', $1", POS, 1, NULL);
    OK(PG, "SELECT 'h\xc3\xa9llo %s', %s, '\xc3\xbc'", "SELECT 'h\xc3\xa9llo %s', $1, '\xc3\xbc'",
       POS, 1, NULL);
    /* unterminated: copied to the end */
    OK(PG, "SELECT '%s", "SELECT '%s", NONE, 0, NULL);
    OK(PG, "SELECT %s, 'abc", "SELECT $1, 'abc", POS, 1, NULL);
    OK(PG, "SELECT 'a''", "SELECT 'a''", NONE, 0, NULL);

    /* E'...' */
    OK(PG, "SELECT E'it\\'s %s', %s", "SELECT E'it\\'s %s', $1", POS, 1, NULL);
    OK(PG, "SELECT e'it\\'s %s', %s", "SELECT e'it\\'s %s', $1", POS, 1, NULL);
    OK(PG, "SELECT E'a''%s', %s", "SELECT E'a''%s', $1", POS, 1, NULL);
    OK(PG, "SELECT E'a\\\\', %s", "SELECT E'a\\\\', $1", POS, 1, NULL);
    OK(PG, "SELECT E'%%\\n', %s", "SELECT E'%\\n', $1", POS, 1, NULL);
    OK(PG, "SELECT (E'x'), %s", "SELECT (E'x'), $1", POS, 1, NULL);
    OK(PG, "SELECT E'\\', %s", "SELECT E'\\', %s", NONE, 0, NULL);     /* unterminated */
    OK(PG, "SELECT E'\\", "SELECT E'\\", NONE, 0, NULL);
    /* SQLite has no E'' strings: E is an identifier, '\' a whole string */
    OK(SQ, "SELECT E'\\', %s", "SELECT E'\\', ?1", POS, 1, NULL);

    /* "..." identifiers */
    OK(PG, "SELECT \"a%s\"\"b\", %s", "SELECT \"a%s\"\"b\", $1", POS, 1, NULL);
    OK(SQ, "SELECT \"a%s\"\"b\", %s", "SELECT \"a%s\"\"b\", ?1", POS, 1, NULL);
    OK(PG, "SELECT \"100%\" FROM t WHERE x = %(x)s", "SELECT \"100%\" FROM t WHERE x = $1", NAMED, 1, "x");
    OK(PG, "SELECT \"it's\", %s", "SELECT \"it's\", $1", POS, 1, NULL);
    OK(PG, "SELECT \"%s", "SELECT \"%s", NONE, 0, NULL);
    OK(PG, "SELECT U&\"%s\", %s", "SELECT U&\"%s\", $1", POS, 1, NULL);

    /* `...` only for SQLite */
    OK(SQ, "SELECT `a%s`, %s", "SELECT `a%s`, ?1", POS, 1, NULL);
    OK(SQ, "SELECT `a``%s`, %s", "SELECT `a``%s`, ?1", POS, 1, NULL);
    OK(SQ, "SELECT `it's`, %s", "SELECT `it's`, ?1", POS, 1, NULL);
    OK(SQ, "SELECT `%s", "SELECT `%s", NONE, 0, NULL);
    OK(PG, "SELECT `%s`", "SELECT `$1`", POS, 1, NULL);
    /* [brackets] are not a quoted region (by design) */
    OK(SQ, "SELECT [%s]", "SELECT [?1]", POS, 1, NULL);
}

static void test_dollar(void)
{
    OK(PG, "SELECT $$%s$$, %s", "SELECT $$%s$$, $1", POS, 1, NULL);
    OK(PG, "SELECT $$it's %%$$, %s", "SELECT $$it's %$$, $1", POS, 1, NULL);
    OK(PG, "SELECT $fn$ body %s $x$ %s $fn$, %s", "SELECT $fn$ body %s $x$ %s $fn$, $1", POS, 1, NULL);
    OK(PG, "SELECT $_a1$ %s $_a1$, %s", "SELECT $_a1$ %s $_a1$, $1", POS, 1, NULL);
    OK(PG, "SELECT $a$ $ab$ %s $a$, %s", "SELECT $a$ $ab$ %s $a$, $1", POS, 1, NULL);
    OK(PG, "SELECT $ab$ $a$ %s $b$ %s $ab$, %s", "SELECT $ab$ $a$ %s $b$ %s $ab$, $1", POS, 1, NULL);
    OK(PG, "SELECT $a$x$a$, %s", "SELECT $a$x$a$, $1", POS, 1, NULL);
    OK(PG, "SELECT $a$ '%s $a$, %s", "SELECT $a$ '%s $a$, $1", POS, 1, NULL);
    OK(PG, "SELECT $a$ $$ %s $a$, %s", "SELECT $a$ $$ %s $a$, $1", POS, 1, NULL);
    OK(PG, "SELECT $a$ x$a$, %s", "SELECT $a$ x$a$, $1", POS, 1, NULL);
    OK(PG, "SELECT $a$ $xa$ %s $a$ %s", "SELECT $a$ $xa$ %s $a$ $1", POS, 1, NULL);
    OK(PG, "SELECT $TAG$ %s $tag$ %s $TAG$ %s", "SELECT $TAG$ %s $tag$ %s $TAG$ $1", POS, 1, NULL);
    OK(PG, "SELECT $\xc3\xa9$ %s $\xc3\xa9$, %s", "SELECT $\xc3\xa9$ %s $\xc3\xa9$, $1", POS, 1, NULL);
    OK(PG, "CREATE FUNCTION f() RETURNS int AS $body$\nBEGIN RETURN 10 % 3; END\n$body$ LANGUAGE plpgsql",
       "CREATE FUNCTION f() RETURNS int AS $body$\nBEGIN RETURN 10 % 3; END\n$body$ LANGUAGE plpgsql",
       NONE, 0, NULL);
    /* unterminated */
    OK(PG, "SELECT $x$ %s", "SELECT $x$ %s", NONE, 0, NULL);
    OK(PG, "SELECT $x$ %s $x", "SELECT $x$ %s $x", NONE, 0, NULL);
    OK(PG, "SELECT $$", "SELECT $$", NONE, 0, NULL);
    /* not dollar quotes */
    OK(PG, "SELECT $1, %s", "SELECT $1, $1", POS, 1, NULL);
    OK(PG, "SELECT $1$ %s $1$", "SELECT $1$ $1 $1$", POS, 1, NULL);
    OK(PG, "SELECT a$b$ %s $b$", "SELECT a$b$ $1 $b$", POS, 1, NULL);
    OK(PG, "SELECT a$$ %s", "SELECT a$$ $1", POS, 1, NULL);
    OK(PG, "SELECT _x$$ %s", "SELECT _x$$ $1", POS, 1, NULL);
    OK(PG, "SELECT $ %s", "SELECT $ $1", POS, 1, NULL);
    OK(PG, "SELECT $abc %s $", "SELECT $abc $1 $", POS, 1, NULL);
    OK(PG, "SELECT $a-b$ %s", "SELECT $a-b$ $1", POS, 1, NULL);
    OK(PG, "SELECT %s$", "SELECT $1$", POS, 1, NULL);
    /* after a number or punctuation a $$ does start one */
    OK(PG, "SELECT 1,$$%s$$", "SELECT 1,$$%s$$", NONE, 0, NULL);
    OK(PG, "SELECT ($$%s$$)", "SELECT ($$%s$$)", NONE, 0, NULL);
    /* SQLite: no dollar quotes */
    OK(SQ, "SELECT $$%s$$", "SELECT $$?1$$", POS, 1, NULL);
    OK(SQ, "SELECT $a$ %s $a$", "SELECT $a$ ?1 $a$", POS, 1, NULL);
}

/* PostgreSQL's lexer reads a $n that touches a word as part of it (x$1 is
 * one identifier) and $%s as the dollar quote $$: the rewrite puts a space
 * between (found by csrc/fuzz/fuzz_sql: "SELECT\xa0%s" came out as the one
 * identifier "SELECT\xa0$1", the parameter gone).  SQLite's ?n never joins. */
static void test_touching(void)
{
    OK(PG, "SELECT\xa0%s %% %s", "SELECT\xa0 $1 % $2", POS, 2, NULL);
    OK(PG, "SELECT x FROM t WHERE a IN%s", "SELECT x FROM t WHERE a IN $1", POS, 1, NULL);
    OK(PG, "SELECT x%s", "SELECT x $1", POS, 1, NULL);
    OK(PG, "SELECT x1%(a)s", "SELECT x1 $1", NAMED, 1, "a");
    OK(PG, "SELECT 1e5%s", "SELECT 1e5 $1", POS, 1, NULL);
    OK(PG, "SELECT $a%s$", "SELECT $a $1$", POS, 1, NULL);
    OK(PG, "SELECT $%s", "SELECT $ $1", POS, 1, NULL);
    OK(PG, "SELECT $$x$$%s", "SELECT $$x$$ $1", POS, 1, NULL);
    OK(PG, "SELECT h\xc3\xa9%s", "SELECT h\xc3\xa9 $1", POS, 1, NULL);
    /* unchanged: after punctuation, a quote, %% or another placeholder */
    OK(PG, "SELECT (%s)", "SELECT ($1)", POS, 1, NULL);
    OK(PG, "SELECT 'a'%s", "SELECT 'a'$1", POS, 1, NULL);
    OK(PG, "SELECT %%%s", "SELECT %$1", POS, 1, NULL);
    OK(PG, "%s%s", "$1$2", POS, 2, NULL);
    OK(PG, "%(a)s%(b)s%(a)s", "$1$2$1", NAMED, 2, "a|b");
    OK(SQ, "SELECT x%s, $%s", "SELECT x?1, $?2", POS, 2, NULL);
}

static void test_comments(void)
{
    OK(PG, "SELECT %s -- %s %d 100%\n, %s", "SELECT $1 -- %s %d 100%\n, $2", POS, 2, NULL);
    OK(SQ, "SELECT %s -- %s %d 100%\n, %s", "SELECT ?1 -- %s %d 100%\n, ?2", POS, 2, NULL);
    OK(PG, "SELECT %s -- 100%", "SELECT $1 -- 100%", POS, 1, NULL);
    OK(PG, "SELECT %s -- 100%%", "SELECT $1 -- 100%", POS, 1, NULL);
    OK(PG, "SELECT %s --", "SELECT $1 --", POS, 1, NULL);
    OK(PG, "-- it's\nSELECT %s", "-- it's\nSELECT $1", POS, 1, NULL);
    OK(PG, "SELECT 1 -- x\r%s", "SELECT 1 -- x\r$1", POS, 1, NULL);
    OK(SQ, "SELECT 1 -- x\r%s", "SELECT 1 -- x\r%s", NONE, 0, NULL);
    OK(PG, "SELECT 5 - %s", "SELECT 5 - $1", POS, 1, NULL);
    OK(PG, "SELECT 5 -%s", "SELECT 5 -$1", POS, 1, NULL);
    OK(PG, "SELECT %s-%s", "SELECT $1-$2", POS, 2, NULL);

    OK(PG, "SELECT /* %s */ %s", "SELECT /* %s */ $1", POS, 1, NULL);
    OK(SQ, "SELECT /* %s */ %s", "SELECT /* %s */ ?1", POS, 1, NULL);
    OK(PG, "SELECT /* 100%% it's */ %s", "SELECT /* 100% it's */ $1", POS, 1, NULL);
    /* PostgreSQL nests block comments, SQLite does not */
    OK(PG, "SELECT /* a /* %s */ %s */ %s", "SELECT /* a /* %s */ %s */ $1", POS, 1, NULL);
    OK(SQ, "SELECT /* a /* %s */ %s */ %s", "SELECT /* a /* %s */ ?1 */ ?2", POS, 2, NULL);
    OK(PG, "/* /* /* x */ */ %s */ %s", "/* /* /* x */ */ %s */ $1", POS, 1, NULL);
    OK(PG, "SELECT /* %s", "SELECT /* %s", NONE, 0, NULL);
    OK(PG, "SELECT /* /* */ %s", "SELECT /* /* */ %s", NONE, 0, NULL);
    OK(SQ, "SELECT /* /* */ %s", "SELECT /* /* */ ?1", POS, 1, NULL);
    OK(PG, "SELECT /*/ %s */ %s", "SELECT /*/ %s */ $1", POS, 1, NULL);
    OK(PG, "SELECT /**/%s", "SELECT /**/$1", POS, 1, NULL);
    OK(PG, "SELECT /* **/%s", "SELECT /* **/$1", POS, 1, NULL);
    OK(PG, "SELECT /*", "SELECT /*", NONE, 0, NULL);
    OK(PG, "SELECT /", "SELECT /", NONE, 0, NULL);
    OK(PG, "SELECT 4/%s", "SELECT 4/$1", POS, 1, NULL);
    OK(PG, "SELECT 4 * %s / 2", "SELECT 4 * $1 / 2", POS, 1, NULL);
    OK(PG, "SELECT /* ' */ %s, '/* %s', %s", "SELECT /* ' */ $1, '/* %s', $2", POS, 2, NULL);
    OK(PG, "SELECT -- /*\n%s", "SELECT -- /*\n$1", POS, 1, NULL);
    OK(PG, "SELECT /* -- */ %s", "SELECT /* -- */ $1", POS, 1, NULL);
    OK(PG, "SELECT \"--\", %s", "SELECT \"--\", $1", POS, 1, NULL);
    OK(PG, "SELECT $$ /* $$, %s", "SELECT $$ /* $$, $1", POS, 1, NULL);
}

static void test_bytes(void)
{
    /* arbitrary non-ASCII bytes outside regions are just text */
    OK(PG, "SELECT \xff\xfe\x01 %s \x80", "SELECT \xff\xfe\x01 $1 \x80", POS, 1, NULL);
    OK(PG, "\xe2\x82\xac %s \xe2\x82\xac", "\xe2\x82\xac $1 \xe2\x82\xac", POS, 1, NULL);
    OK(SQ, "SELECT '\xf0\x9f\x98\x80', %(\xf0\x9f\x98\x80)s", "SELECT '\xf0\x9f\x98\x80', ?1", NAMED, 1,
       "\xf0\x9f\x98\x80");
    OK(PG, "SELECT 1\n\t%s\r\n", "SELECT 1\n\t$1\r\n", POS, 1, NULL);

    /* len is honoured: the rest of the buffer is not looked at */
    check_ok(__LINE__, PG, "SELECT %s, %d", 10, "SELECT $1,", POS, 1, NULL);
    check_ok(__LINE__, PG, "SELECT '%s' %s", 9, "SELECT '%", NONE, 0, NULL);
    check_err(__LINE__, PG, "SELECT %(abc)s", 13, 7, "not followed by s, b or t");
    check_err(__LINE__, PG, "SELECT %(abc)s", 12, 7, "unterminated placeholder");
    check_err(__LINE__, PG, "SELECT %s", 8, 7, "lone '%'");

    /* sql NULL with len 0 is an empty query */
    {
        nc_sql out;
        nc_error err;
        nc_error_clear(&err);
        int rc = nc_sql_translate(NULL, 0, PG, &out, &err);
        CHECK(rc == 0 && out.sql && out.sql[0] == '\0' && out.len == 0 && out.style == NONE &&
                  out.nslots == 0 && out.names == NULL,
              "NULL sql with len 0 should give an empty query");
        if (rc == 0)
            nc_sql_free(&out);
    }
}

static void test_errors(void)
{
    ERR(PG, "SELECT %d", 7, "unsupported placeholder '%d'");
    ERR(SQ, "SELECT %d", 7, "unsupported placeholder '%d'");
    ERR(PG, "SELECT a FROM t WHERE %x = 1", 22, "'%x'");
    ERR(PG, "SELECT %", 7, "lone '%'");
    ERR(PG, "%", 0, "lone '%'");
    ERR(SQ, "SELECT 1 %", 9, "lone '%'");
    ERR(PG, "SELECT 10 % 3", 10, "unsupported placeholder '% '");
    ERR(PG, "SELECT %S", 7, "'%S'");
    ERR(PG, "SELECT %'x'", 7, "'%''");
    ERR(PG, "SELECT %\xc3\xa9", 7, "byte 0xC3");
    ERR(PG, "SELECT %\n", 7, "byte 0x0A");
    ERR(PG, "SELECT %(a", 7, "unterminated placeholder");
    ERR(PG, "SELECT %(", 7, "unterminated placeholder");
    ERR(SQ, "SELECT %(a b c", 7, "unterminated placeholder");
    ERR(PG, "SELECT %(a)", 7, "'%(a)' at offset 7 is not followed by s, b or t");
    ERR(PG, "SELECT %(a)x", 7, "not followed by s, b or t");
    ERR(PG, "SELECT %(a) s", 7, "not followed by s, b or t");
    ERR(PG, "SELECT %(a)d", 7, "not followed by s, b or t");
    ERR(PG, "SELECT %(\xff\n)d", 7, "'%(\\xFF\\x0A)'");
    ERR(PG, "SELECT %()s", 7, "empty placeholder name");
    ERR(SQ, "SELECT %()s", 7, "empty placeholder name");
    ERR(PG, "SELECT %s, %(a)s", 11, "query mixes %s and %(name)s placeholders");
    ERR(PG, "SELECT %(a)s, %s", 14, "query mixes %s and %(name)s placeholders");
    ERR(SQ, "SELECT %(a)s, %(b)s, %b", 21, "query mixes %s and %(name)s placeholders");
    ERR(PG, "SELECT %t, '%(a)s', %(a)t", 20, "query mixes %s and %(name)s placeholders");
    ERR(PG, "SELECT %s1", 7, "directly followed by a digit");
    ERR(SQ, "SELECT %(a)s2", 7, "directly followed by a digit");
    ERR(PG, "SELECT 'a\0b'", 9, "NUL byte");
    ERR(PG, "SELECT %s\0", 9, "NUL byte");
    /* the offset is the one of the bad % even after quoted regions */
    ERR(PG, "SELECT '%d', $$%d$$, \"%d\", /* %d */ %d -- %d", 36, "'%d'");
    ERR(PG, "SELECT E'\\'%d', %d", 16, "'%d'");
    ERR(SQ, "SELECT `%d`, %d", 13, "'%d'");
    ERR(SQ, "SELECT $$%d$$", 9, "'%d'");
    ERR(SQ, "SELECT E'\\', %d", 13, "'%d'");
    ERR(SQ, "SELECT /* /* */ %d */", 16, "'%d'");
    ERR(PG, "SELECT \xc3\xa9%d", 9, "'%d'");
    /* a long name is shown shortened */
    ERR(PG, "SELECT %(aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa)x", 7, "...)' at offset 7");

    /* API misuse */
    {
        nc_sql out;
        nc_error err;
        nc_error_clear(&err);
        memset(&out, 0xAB, sizeof out);
        int rc = nc_sql_translate("SELECT 1", 8, 3, &out, &err);
        CHECK(rc == -1 && err.code == NC_E_INTERNAL && is_zeroed(&out), "unknown dialect is rejected");
        nc_error_clear(&err);
        rc = nc_sql_translate("SELECT 1", 8, PG, NULL, &err);
        CHECK(rc == -1 && err.code == NC_E_INTERNAL, "NULL out is rejected");
        memset(&out, 0xAB, sizeof out);
        rc = nc_sql_translate(NULL, 3, PG, &out, &err);
        CHECK(rc == -1 && err.code == NC_E_INTERNAL && is_zeroed(&out), "NULL sql with len > 0 is rejected");
        /* err may be NULL */
        memset(&out, 0xAB, sizeof out);
        rc = nc_sql_translate("SELECT %d", 9, PG, &out, NULL);
        CHECK(rc == -1 && is_zeroed(&out), "error with err == NULL");
        rc = nc_sql_translate("SELECT %s", 9, PG, &out, NULL);
        CHECK(rc == 0 && strcmp(out.sql, "SELECT $1") == 0, "success with err == NULL");
        nc_sql_free(&out);
    }
}

static void test_free(void)
{
    nc_sql z;
    memset(&z, 0, sizeof z);
    nc_sql_free(&z);
    nc_sql_free(&z);
    nc_sql_free(NULL);
    CHECK(is_zeroed(&z), "nc_sql_free on a zeroed struct");

    nc_sql s;
    nc_error err;
    int rc = nc_sql_translate("%(a)s %(b)s", 11, PG, &s, &err);
    CHECK(rc == 0, "translate for free test");
    nc_sql_free(&s);
    CHECK(is_zeroed(&s), "nc_sql_free zeroes");
    nc_sql_free(&s);    /* twice is harmless */
    CHECK(is_zeroed(&s), "nc_sql_free twice");
}

/* ---- large inputs ---------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            perror("realloc");
            exit(2);
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void test_large(void)
{
    char tmp[64];

    /* 10,000 positional placeholders, both dialects */
    for (int d = PG; d <= SQ; d++) {
        sbuf in = {0}, exp = {0};
        sb_str(&in, "SELECT ");
        sb_str(&exp, "SELECT ");
        for (int i = 1; i <= 10000; i++) {
            sb_str(&in, i > 1 ? ",%s" : "%s");
            snprintf(tmp, sizeof tmp, "%s%c%d", i > 1 ? "," : "", d == PG ? '$' : '?', i);
            sb_str(&exp, tmp);
        }
        check_ok(__LINE__, d, in.p, in.len, exp.p, POS, 10000, NULL);
        CHECK(strstr(exp.p, d == PG ? ",$10000" : ",?10000") != NULL, "expected text ends with slot 10000");
        free(in.p);
        free(exp.p);
    }

    /* 10,000 distinct names, each used twice (second round in reverse) */
    {
        sbuf in = {0}, exp = {0}, names = {0};
        for (int i = 0; i < 10000; i++) {
            snprintf(tmp, sizeof tmp, "%%(p%d)s ", i);
            sb_str(&in, tmp);
            snprintf(tmp, sizeof tmp, "$%d ", i + 1);
            sb_str(&exp, tmp);
            snprintf(tmp, sizeof tmp, "%sp%d", i ? "|" : "", i);
            sb_str(&names, tmp);
        }
        for (int i = 9999; i >= 0; i--) {
            snprintf(tmp, sizeof tmp, "%%(p%d)t ", i);
            sb_str(&in, tmp);
            snprintf(tmp, sizeof tmp, "$%d ", i + 1);
            sb_str(&exp, tmp);
        }
        check_ok(__LINE__, PG, in.p, in.len, exp.p, NAMED, 10000, names.p);
        /* and an error at the very end: everything allocated must be freed */
        sb_str(&in, "%(p1)d");
        check_err(__LINE__, PG, in.p, in.len, (long)in.len - 6, "not followed by s, b or t");
        free(in.p);
        free(exp.p);
        free(names.p);
    }

    /* 100,000 distinct names and then mixing: linear time, no leak */
    {
        sbuf in = {0};
        for (int i = 0; i < 100000; i++) {
            snprintf(tmp, sizeof tmp, "%%(n%d)s,", i);
            sb_str(&in, tmp);
        }
        size_t at = in.len;
        sb_str(&in, "%s");
        check_err(__LINE__, SQ, in.p, in.len, (long)at, "query mixes");
        free(in.p);
    }

    /* a 1 MB literal full of %, %% and quotes-that-are-not, then a
     * placeholder: each %% inside is made % */
    {
        sbuf in = {0}, exp = {0};
        sb_str(&in, "SELECT '");
        sb_str(&exp, "SELECT '");
        for (int i = 0; i < 100000; i++) {
            sb_str(&in, "%d %s''\\%% ");
            sb_str(&exp, "%d %s''\\% ");
        }
        sb_str(&in, "', %s");
        sb_str(&exp, "', ");
        size_t body = exp.len;
        sb_str(&exp, "$1");
        check_ok(__LINE__, PG, in.p, in.len, exp.p, POS, 1, NULL);
        exp.len = body;
        sb_str(&exp, "?1");
        check_ok(__LINE__, SQ, in.p, in.len, exp.p, POS, 1, NULL);
        free(in.p);
        free(exp.p);
    }

    /* a long dollar tag whose body is full of near-misses (must stay linear) */
    {
        sbuf in = {0}, tag = {0};
        sb_str(&tag, "$");
        for (int i = 0; i < 5000; i++)
            sb_str(&tag, "t");
        sb_str(&tag, "$");
        sb_str(&in, "SELECT ");
        sb_add(&in, tag.p, tag.len);
        for (int i = 0; i < 20000; i++) {
            sb_add(&in, tag.p, 4000);   /* "$ttt..." with no closing $ */
            sb_str(&in, " %s ");
        }
        sb_add(&in, tag.p, tag.len);
        size_t body_end = in.len;
        sb_str(&in, " %s");
        sbuf exp = {0};
        sb_add(&exp, in.p, body_end);
        sb_str(&exp, " $1");
        check_ok(__LINE__, PG, in.p, in.len, exp.p, POS, 1, NULL);
        free(in.p);
        free(tag.p);
        free(exp.p);
    }

    /* a 1 MB query of %% and %s, checking the output length */
    {
        sbuf in = {0};
        for (int i = 0; i < 200000; i++)
            sb_str(&in, "%%%s");
        nc_sql out;
        nc_error err;
        int rc = run(PG, in.p, in.len, &out, &err);
        size_t want = 0;
        for (int i = 1; i <= 200000; i++) {
            int n = snprintf(tmp, sizeof tmp, "%%$%d", i);
            want += (size_t)n;
        }
        CHECK(rc == 0 && out.len == want && out.nslots == 200000 &&
                  memcmp(out.sql + out.len - 8, "%$200000", 8) == 0,
              "200,000 %%%s pairs");
        if (rc == 0)
            nc_sql_free(&out);
        free(in.p);
    }
}

/* ---- random inputs: no crash, invariants hold -------------------------------- */

static void test_random(void)
{
    static const char *atoms[] = {
        "%", "s", "(", ")", "%s", "%(a)s", "%(b)s", "%%", "'", "\"", "`", "$", "$$", "$a$",
        "-", "--", "/", "*", "/*", "*/", "\\", "\n", "\r", "E", "e", "x", " ", "1", "\xc3\xa9",
        "\xff", "b", "t", "a",
    };
    const unsigned natoms = sizeof atoms / sizeof atoms[0];
    char buf[256];
    for (int d = PG; d <= SQ; d++) {
        int bad = 0;
        for (int iter = 0; iter < 50000 && !bad; iter++) {
            size_t len = 0;
            unsigned n = rnd(16);
            for (unsigned k = 0; k < n; k++) {
                const char *a = atoms[rnd(natoms)];
                size_t al = strlen(a);
                memcpy(buf + len, a, al);
                len += al;
            }
            nc_sql out;
            nc_error err;
            int rc = run(d, buf, len, &out, &err);
            const char *why = NULL;
            if (rc == -1) {
                if (!is_zeroed(&out))
                    why = "out not zeroed";
                else if (err.code != NC_E_PARAMS || !strstr(err.message, "offset "))
                    why = "bad error record";
            } else if (rc != 0) {
                why = "bad return code";
            } else {
                if (!out.sql || out.len != strlen(out.sql))
                    why = "len != strlen";
                else if ((out.style == NONE) != (out.nslots == 0))
                    why = "style / nslots disagree";
                else if ((out.style == NAMED) != (out.names != NULL))
                    why = "names / style disagree";
                else if (!memchr(buf, '%', len) && (out.len != len || memcmp(out.sql, buf, len)))
                    why = "text without % changed";
                else if (out.names)
                    for (int i = 0; i < out.nslots && !why; i++)
                        for (int j = 0; j < i; j++)
                            if (strcmp(out.names[i], out.names[j]) == 0)
                                why = "duplicate name";
                nc_sql_free(&out);
            }
            if (why) {
                fail(__LINE__, "random input [%s]: %s", show(buf, len), why);
                bad = 1;
            }
        }
        if (!bad)
            passed++;
    }
}

/* ---- allocation failures ------------------------------------------------------ */

#ifdef NC_TEST_WRAP_ALLOC
void *__real_malloc(size_t n);
void *__real_realloc(void *p, size_t n);
static long fail_countdown = -1;    /* fail the allocation after this many; -1 never */

void *__wrap_malloc(size_t n)
{
    if (fail_countdown >= 0 && fail_countdown-- == 0)
        return NULL;
    return __real_malloc(n);
}

void *__wrap_realloc(void *p, size_t n)
{
    if (fail_countdown >= 0 && fail_countdown-- == 0)
        return NULL;
    return __real_realloc(p, n);
}

static void oom_sweep(int line, int dialect, const char *in, size_t len)
{
    int ok = 1, injected = 0;
    for (long k = 0; k < 100000; k++) {
        nc_sql out;
        nc_error err;
        nc_error_clear(&err);
        memset(&out, 0xAB, sizeof out);
        fail_countdown = k;
        int rc = nc_sql_translate(in, len, dialect, &out, &err);
        int hit = fail_countdown < 0;
        fail_countdown = -1;
        if (!hit) {                 /* no allocation failed: finished */
            if (rc != 0)
                ok = fail(line, "oom sweep: %s%s", "fails without an injected failure", "");
            else
                nc_sql_free(&out);
            break;
        }
        injected++;
        if (rc != -1) {
            ok = fail(line, "oom sweep: %s%s", "succeeded despite a failed allocation", "");
            nc_sql_free(&out);
            break;
        }
        if (!is_zeroed(&out) || err.code != NC_E_INTERNAL || !strstr(err.message, "out of memory")) {
            ok = fail(line, "oom sweep: bad error after a failed allocation: %s%s", err.message, "");
            break;
        }
    }
    if (injected < 2)
        ok = fail(line, "oom sweep: only a few allocations were seen%s%s", "", "");
    if (ok)
        passed++;
}

static void test_oom(void)
{
    char tmp[64];
    sbuf in = {0};
    for (int i = 0; i < 300; i++) {
        snprintf(tmp, sizeof tmp, "%%(name_%d)s, %%(name_%d)s, ", i, i / 2);
        sb_str(&in, tmp);
    }
    oom_sweep(__LINE__, PG, in.p, in.len);
    oom_sweep(__LINE__, SQ, in.p, in.len);
    in.len = 0;
    for (int i = 0; i < 3000; i++)
        sb_str(&in, "%s,'%%',%s");     /* $n grows the output past the first guess */
    oom_sweep(__LINE__, PG, in.p, in.len);
    free(in.p);
}
#endif

int main(void)
{
    static const nc_test_case cases[] = {
        {"basic", test_basic},
        {"literals", test_literals},
        {"dollar", test_dollar},
        {"touching", test_touching},
        {"comments", test_comments},
        {"bytes", test_bytes},
        {"errors", test_errors},
        {"free", test_free},
        {"large", test_large},
        {"random", test_random},
#ifdef NC_TEST_WRAP_ALLOC
        {"oom", test_oom},
#endif
    };
    return nc_run_cases("test_params", cases, NC_NCASES(cases));
}
