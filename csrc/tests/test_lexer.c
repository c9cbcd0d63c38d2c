/* test_lexer.c - unit tests for csrc/core/nc_lexer.c (the SQL tokenizer) and
 * csrc/core/nc_sqltext.c (blank tail, plain read, ROLLBACK TO, column type).
 *
 * Plain C, no framework: every check counts as one case, a failure prints one
 * line, and the last line is "N passed, N failed"; the exit status is non-zero
 * when anything failed.  Every input is copied into a malloc'd buffer of
 * exactly len bytes (no terminating NUL), so under AddressSanitizer a read
 * past len is caught.
 *
 * The plain-read, ROLLBACK TO and column-type cases are those that decided
 * parity with the Python code they replace (database_manager.py): each is
 * marked with what Python answers when it differs.  The blank-tail test is
 * also checked against SQLite's own tokenizer (sqlite3_prepare_v2).
 */
#include "nc_lexer.h"
#include "nc_sqltext.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "inputs.h"

#define PG NC_DIALECT_PG
#define SQ NC_DIALECT_SQLITE
#define PARAMS NC_LEX_PARAMS
#define USPACE NC_LEX_UNICODE_SPACE

/* ---- the token stream -------------------------------------------------------- */

/* The stream rendered as one letter per kind, the flags, and the text in
 * brackets: W word, S space, C comment, Q quoted identifier, T string,
 * N number, P placeholder, ; semicolon, . punctuation; flags u unterminated,
 * e E'', d dollar, b block comment.  Checks on the way that the tokens tile
 * the input exactly. */
static const char *render(int dialect, unsigned opts, const char *in, size_t len)
{
    static char out[2048];
    static const char letters[] = "-SCWQTNP;.";
    char *copy = copy_of(in, len);
    nc_lexer lx;
    nc_token t;
    size_t o = 0, at = 0;
    nc_lex_init(&lx, copy, len, dialect, opts);
    while (nc_lex_next(&lx, &t) != NC_TOK_END) {
        if (t.off != at || t.len == 0) {
            snprintf(out, sizeof out, "BAD TILING at %zu", at);
            free(copy);
            return out;
        }
        at += t.len;
        o += (size_t)snprintf(out + o, sizeof out - o, "%c%s%s%s%s[%s]", letters[t.kind],
                              t.flags & NC_TOKF_UNTERMINATED ? "u" : "", t.flags & NC_TOKF_ESCAPE ? "e" : "",
                              t.flags & NC_TOKF_DOLLAR ? "d" : "", t.flags & NC_TOKF_BLOCK ? "b" : "",
                              show(copy + t.off, t.len));
        if (o >= sizeof out - 1)
            break;
    }
    if (at != len || t.off != len || t.len != 0)
        snprintf(out, sizeof out, "BAD END at %zu of %zu", at, len);
    free(copy);
    return out;
}

#define TOKS(d, opts, in, expect)                                                       \
    do {                                                                                \
        const char *got_ = render(d, opts, in, sizeof(in) - 1);                         \
        CHECK(strcmp(got_, expect) == 0, "[%s] %s:\n     got %s\n  wanted %s",          \
              d == PG ? "pg" : "sqlite", show(in, sizeof(in) - 1), got_, expect);       \
    } while (0)

static void test_tokens(void)
{
    TOKS(PG, 0, "", "");
    TOKS(PG, 0, "SELECT a1, b$c FROM t;", "W[SELECT]S[ ]W[a1].[,]S[ ]W[b$c]S[ ]W[FROM]S[ ]W[t];[;]");
    TOKS(PG, 0, " \t\n\v\f\rx", "S[ \\x09\\x0a\\x0b\\x0c\\x0d]W[x]");
    TOKS(PG, 0, "_x \xc3\xa9t\xc3\xa9", "W[_x]S[ ]W[\\xc3\\xa9t\\xc3\\xa9]");
    /* numbers: a fraction, an exponent unless a word byte follows it */
    TOKS(PG, 0, "1 12.5 1.5e10 1e-3 1. .5", "N[1]S[ ]N[12.5]S[ ]N[1.5e10]S[ ]N[1e-3]S[ ]N[1].[.]S[ ].[.]N[5]");
    TOKS(PG, 0, "1e5x 1e5$a$ 1e+5$a$ 1into 1e",
         "N[1]W[e5x]S[ ]N[1]W[e5$a$]S[ ]N[1]W[e].[+]N[5]Tud[$a$ 1into 1e]");
    /* operators are single bytes; -- and / * start comments even inside them */
    TOKS(PG, 0, "a<=b+-c", "W[a].[<].[=]W[b].[+].[-]W[c]");
    TOKS(PG, 0, "a+--x\nb", "W[a].[+]C[--x]S[\\x0a]W[b]");

    /* strings, PostgreSQL */
    TOKS(PG, 0, "'it''s' 'a\\' x", "T[\'it\'\'s\']S[ ]T[\'a\\x5c\']S[ ]W[x]");
    TOKS(PG, 0, "E'\\'' e'a''b' x", "Te[E\'\\x5c\'\']S[ ]Te[e\'a\'\'b\']S[ ]W[x]");
    TOKS(PG, 0, "some'\\' x", "W[some]T[\'\\x5c\']S[ ]W[x]");
    TOKS(PG, 0, "x.e'\\'", "W[x].[.]Tue[e\'\\x5c\']");
    TOKS(PG, 0, "U&'a' N'b' X'ff'", "W[U].[&]T[\'a\']S[ ]W[N]T[\'b\']S[ ]W[X]T[\'ff\']");
    TOKS(PG, 0, "'abc", "Tu[\'abc]");
    TOKS(PG, 0, "'a''", "Tu[\'a\'\']");
    /* dollar quotes: a tag, not $1, not inside a word */
    TOKS(PG, 0, "$$a$b$$ $t$ $$ $t$ $1 a$b$", "Td[$$a$b$$]S[ ]Td[$t$ $$ $t$]S[ ].[$]N[1]S[ ]W[a$b$]");
    TOKS(PG, 0, "$t$x$T$", "Tud[$t$x$T$]");
    TOKS(PG, 0, "$\xc3\xa9$x$\xc3\xa9$;", "Td[$\\xc3\\xa9$x$\\xc3\\xa9$];[;]");
    TOKS(PG, 0, "$1a$", ".[$]N[1]W[a$]");
    /* quoted identifiers and comments */
    TOKS(PG, 0, "\"a\"\"b\"x \"open", "Q[\"a\"\"b\"]W[x]S[ ]Qu[\"open]");
    TOKS(PG, 0, "--a\rb", "C[--a]S[\\x0d]W[b]");
    TOKS(PG, 0, "/* /* */ x */y", "Cb[/* /* */ x */]W[y]");
    TOKS(PG, 0, "/* /* */", "Cub[/* /* */]");
    TOKS(PG, 0, "/*/", "Cub[/*/]");
    TOKS(PG, 0, "`a`", ".[`]W[a].[`]");

    /* SQLite */
    TOKS(SQ, 0, "`a``b`x", "Q[`a``b`]W[x]");
    TOKS(SQ, 0, "E'\\' x'", "W[E]T[\'\\x5c\']S[ ]W[x]Tu[\']");
    TOKS(SQ, 0, "$$ $1", ".[$].[$]S[ ].[$]N[1]");
    TOKS(SQ, 0, "/* /* */ x */", "Cb[/* /* */]S[ ]W[x]S[ ].[*].[/]");
    TOKS(SQ, 0, "--a\rb\nc", "C[--a\\x0db]S[\\x0a]W[c]");
    TOKS(SQ, 0, "[a%s]", ".[[]W[a].[%]W[s].[]]");
    TOKS(SQ, 0, "x/*", "W[x].[/].[*]");
    TOKS(SQ, 0, "/*/", "Cub[/*/]");
    TOKS(SQ, 0, "\v\t\v", ".[\\x0b]S[\\x09\\x0b]");
    TOKS(SQ, USPACE, "\v\t\v", "S[\\x0b\\x09\\x0b]");

    /* placeholder candidates */
    TOKS(PG, PARAMS, "%s%%%(a)s %(b)x%", "P[%s]P[%%]P[%(a)s]S[ ]P[%(b)x]P[%]");
    TOKS(PG, PARAMS, "%(a %(", "Pu[%(a %(]");
    TOKS(PG, PARAMS, "%(a)", "P[%(a)]");
    TOKS(PG, PARAMS, "%(a)) '%s'", "P[%(a))]S[ ]T[\'%s\']");
    TOKS(PG, 0, "%s", ".[%]W[s]");

    /* Python's whitespace, on request only */
    TOKS(PG, 0, "a\xc2\xa0" "b\x1c", "W[a\\xc2\\xa0b].[\\x1c]");
    TOKS(PG, USPACE, "a\xc2\xa0" "b\x1c\x1f c\xe3\x80\x80\xe2\x80\x8a",
         "W[a]S[\\xc2\\xa0]W[b]S[\\x1c\\x1f ]W[c]S[\\xe3\\x80\\x80\\xe2\\x80\\x8a]");
    TOKS(PG, USPACE, "\xe2\x80\x8b\xe2\x84\xaa", "W[\\xe2\\x80\\x8b\\xe2\\x84\\xaa]");
    TOKS(PG, USPACE, "\xc2\x85x\xe1\x9a\x80\xe2\x80\xa8\xe2\x80\xa9\xe2\x80\xaf\xe2\x81\x9f",
         "S[\\xc2\\x85]W[x]S[\\xe1\\x9a\\x80\\xe2\\x80\\xa8\\xe2\\x80\\xa9\\xe2\\x80\\xaf\\xe2\\x81\\x9f]");
    TOKS(PG, USPACE, "\xc2", "W[\\xc2]");     /* a cut sequence is not read past the end */
    TOKS(PG, USPACE, "x\xe2\x80", "W[x\\xe2\\x80]");

    /* a NUL byte is punctuation; len is honoured */
    TOKS(PG, 0, "a\0b", "W[a].[\\x00]W[b]");
    CHECK(strcmp(render(PG, 0, "'ab'", 2), "Tu['a]") == 0, "len is honoured");

    /* nc_lex_find skips what is not asked for, and says END again at the end */
    {
        const char *q = "SELECT '%s', %s -- %s\n, %(a)s";
        nc_lexer lx;
        nc_token t;
        nc_lex_init(&lx, q, strlen(q), PG, PARAMS);
        CHECK(nc_lex_find(&lx, &t, NC_TOKS(NC_TOK_PARAM)) == NC_TOK_PARAM && t.off == 13 && t.len == 2,
              "first placeholder at %zu", t.off);
        CHECK(nc_lex_find(&lx, &t, NC_TOKS(NC_TOK_PARAM)) == NC_TOK_PARAM && t.off == 24 && t.len == 5,
              "second placeholder at %zu", t.off);
        CHECK(nc_lex_find(&lx, &t, NC_TOKS(NC_TOK_PARAM)) == NC_TOK_END && t.off == strlen(q) && t.len == 0,
              "then the end");
        CHECK(nc_lex_next(&lx, &t) == NC_TOK_END, "and the end again");
        nc_lex_init(&lx, NULL, 5, PG, 0);
        CHECK(nc_lex_next(&lx, &t) == NC_TOK_END, "NULL sql is empty");
    }
}

/* Random byte soup: the tokens tile the input, nothing is read past len
 * (ASan), and nc_lex_find returns exactly the tokens nc_lex_next would. */

static void test_random_tokens(void)
{
    static const char *atoms[] = {
        "'", "\"", "`", "$", "$$", "$a$", "-", "--", "/", "*", "/*", "*/", "\\", "\n", "\r", "E", "e", "x",
        " ", "1", ".", "%", "%(", ")", "s", ";", "\xc2", "\xa0", "\xe2\x80", "\x8a", "\xe3", "\x80", "\x1c",
        "\0", "e5", "+",
    };
    const unsigned natoms = sizeof atoms / sizeof atoms[0];
    char buf[256];
    int bad = 0;
    for (int iter = 0; iter < 200000 && !bad; iter++) {
        size_t len = 0;
        for (unsigned k = rnd(20); k > 0; k--) {
            unsigned a = rnd(natoms);
            size_t al = a == natoms - 3 ? 1 : strlen(atoms[a]);
            memcpy(buf + len, atoms[a], al);
            len += al;
        }
        int dialect = rnd(2) ? PG : SQ;
        unsigned opts = rnd(4);
        unsigned want = rnd(1u << 10) | NC_TOKS(NC_TOK_END);
        char *copy = copy_of(buf, len);
        nc_lexer a, b;
        nc_token ta, tb;
        nc_lex_init(&a, copy, len, dialect, opts);
        nc_lex_init(&b, copy, len, dialect, opts);
        size_t at = 0;
        for (;;) {
            int k = nc_lex_next(&a, &ta);
            if (k != NC_TOK_END && (ta.off != at || ta.len == 0 || ta.off + ta.len > len))
                bad = 1;
            at = ta.off + ta.len;
            if (!(want & NC_TOKS(k)))
                continue;
            nc_lex_find(&b, &tb, want);
            if (memcmp(&ta, &tb, sizeof ta) != 0)
                bad = 1;
            if (k == NC_TOK_END || bad)
                break;
        }
        if (at != len)
            bad = 1;
        /* the answers of nc_sqltext on the same soup: no crash, no overread */
        char *out = malloc(len + 1);
        if (!out) {
            perror("malloc");
            exit(2);
        }
        (void)nc_sql_is_blank(copy, len, dialect);
        (void)nc_sql_is_plain_select(copy, len);
        (void)nc_sql_is_rollback_to(copy, len);
        (void)nc_sql_changes_session(copy, len, dialect);
        size_t olen = 0;
        if (nc_sql_column_type(copy, len, out, &olen) && (olen > len || strlen(out) != olen))
            bad = 1;
        free(out);
        free(copy);
        if (bad)
            printf("random input [%s] dialect %d opts %u:\n", show(buf, len), dialect, opts);
    }
    CHECK(!bad, "tokens tile the input; nc_lex_find agrees with nc_lex_next");
}

/* ---- blank ----------------------------------------------------------------------- */

static int blank(int dialect, const char *in, size_t len)
{
    char *copy = copy_of(in, len);
    int r = nc_sql_is_blank(copy, len, dialect);
    free(copy);
    return r;
}

#define BLANK(d, in, expect)                                                                  \
    CHECK(blank(d, in, sizeof(in) - 1) == (expect), "is_blank [%s] %s should be %d",           \
          d == PG ? "pg" : "sqlite", show(in, sizeof(in) - 1), expect)

static void test_blank(void)
{
    BLANK(SQ, "", 1);
    BLANK(SQ, " \t\r\n\v\f;;", 1);
    BLANK(SQ, "\v", 0);            /* an illegal character to SQLite, unless in a run of spaces */
    BLANK(PG, "\v", 1);
    BLANK(SQ, "/*", 0);             /* SQLite: a / and a *, a syntax error */
    BLANK(SQ, "/**", 1);
    BLANK(SQ, "; -- done\n", 1);
    BLANK(SQ, "-- x", 1);
    BLANK(SQ, "/* x */ ;", 1);      /* blank() in the binding said no here; SQLite says yes */
    BLANK(SQ, "/* x", 1);           /* SQLite: a comment to the end */
    BLANK(PG, "/* x", 0);           /* PostgreSQL: an error the server should report */
    BLANK(PG, "/* /* */ */", 1);
    BLANK(SQ, "/* /* */ */", 0);    /* SQLite does not nest: the rest is '*' '/' */
    BLANK(SQ, "--x\rSELECT 1", 1);  /* SQLite: a -- comment ends at \n only */
    BLANK(PG, "--x\rSELECT 1", 0);
    BLANK(SQ, "; SELECT 1", 0);
    BLANK(SQ, "x", 0);
    BLANK(SQ, "'", 0);
    BLANK(SQ, "\0", 0);
    BLANK(SQ, "\xc2\xa0", 0);       /* not whitespace to SQLite */
}

/* The SQLite answer: the tail prepares to no statement, again and again. */
static int sqlite_blank(sqlite3 *db, const char *in, size_t len)
{
    const char *p = in, *end = in + len;
    while (p < end) {
        sqlite3_stmt *st = NULL;
        const char *next = NULL;
        if (sqlite3_prepare_v2(db, p, (int)(end - p), &st, &next) != SQLITE_OK)
            return 0;
        if (st) {
            sqlite3_finalize(st);
            return 0;
        }
        if (next <= p)
            return 0;
        p = next;
    }
    return 1;
}

static void test_blank_vs_sqlite(void)
{
    static const char *atoms[] = {" ", "\t", "\n", "\r", "\f", ";", "--", "/*", "*/", "/* a */", "-- b\n", "\n",
                                  " ", ";", "\v", "x", "-", "/", "*", "'", "\"", "`", "SELECT 1"};
    const unsigned natoms = sizeof atoms / sizeof atoms[0];
    sqlite3 *db = NULL;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK) {
        printf("FATAL: sqlite3_open\n");
        exit(2);
    }
    char buf[256];
    int bad = 0, blanks = 0;
    for (int iter = 0; iter < 50000 && !bad; iter++) {
        size_t len = 0;
        for (unsigned k = rnd(8); k > 0; k--) {
            const char *a = atoms[rnd(natoms)];
            memcpy(buf + len, a, strlen(a));
            len += strlen(a);
        }
        int mine = blank(SQ, buf, len), theirs = sqlite_blank(db, buf, len);
        blanks += theirs;
        if (mine != theirs) {
            printf("is_blank [%s]: %d, SQLite says %d:\n", show(buf, len), mine, theirs);
            bad = 1;
        }
    }
    CHECK(!bad, "is_blank agrees with sqlite3_prepare_v2");
    CHECK(blanks > 1000, "the random tails include blank ones (%d)", blanks);
    sqlite3_close(db);
}

/* ---- plain read and ROLLBACK TO -------------------------------------------------- */

/* f on an exact-size copy of in[0..len). */
static int on_copy(int (*f)(const char *, size_t), const char *in, size_t len)
{
    char *copy = copy_of(in, len);
    int r = f(copy, len);
    free(copy);
    return r;
}

#define ANSWER(f, in, expect)                                                                 \
    CHECK(on_copy(f, in, sizeof(in) - 1) == (expect), #f " %s should be %d", show(in, sizeof(in) - 1), \
          expect)
#define PLAIN(in, expect) ANSWER(nc_sql_is_plain_select, in, expect)
#define RBTO(in, expect) ANSWER(nc_sql_is_rollback_to, in, expect)

static void test_plain_select(void)
{
    /* tests/test_database_manager_sqlite.py */
    PLAIN("SELECT 1", 1);
    PLAIN("select count(*) from t where a = %s", 1);
    PLAIN("WITH x AS (SELECT a FROM t) SELECT * FROM x;", 1);
    PLAIN("SELECT 'a;b' AS s, \"weird;col\" FROM t", 1);
    PLAIN("SELECT lower(name) FROM t LEFT JOIN u ON (t.id = u.id)", 1);
    PLAIN("SELECT count(*) FROM t a CROSS JOIN t b", 1);
    PLAIN("SELECT x FROM t WHERE y IN (SELECT y FROM u)", 1);
    PLAIN("INSERT INTO t VALUES (1)", 0);
    PLAIN("SELECT * FROM t FOR UPDATE", 0);
    PLAIN("SELECT * INTO new FROM t", 0);
    PLAIN("SELECT nextval('s')", 0);
    PLAIN("SELECT 1; DELETE FROM t", 0);
    PLAIN("select my_func(1)", 0);
    PLAIN("SELECT pg_sleep(1)", 0);
    PLAIN("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", 0);
    PLAIN("SELECT 1 -- x", 0);
    PLAIN("SELECT $$a$$", 0);
    PLAIN("SELECT public.count(x) FROM t", 0);
    PLAIN("UPDATE t SET a = 1", 0);
    PLAIN("SELECT 'unterminated", 0);
    PLAIN("", 0);
    PLAIN("SELECT set_config('a', 'b', false)", 0);
    PLAIN("SELECT * FROM t FOR SHARE", 0);
    PLAIN("  select e'\\''", 0);

    /* the statement's shape */
    PLAIN(" \n SELECT 1 ; \t", 1);
    PLAIN("SELECT;", 1);
    PLAIN("SELECT 1;;", 0);
    PLAIN("SELECT 1; ''", 0);
    PLAIN(";", 0);
    PLAIN("SELECTx", 0);
    PLAIN("select1", 0);
    PLAIN("(SELECT 1)", 0);
    PLAIN("\"SELECT\" 1", 0);
    PLAIN("SELECT'a'", 1);
    PLAIN("SELECT\"a\"", 1);
    PLAIN("VALUES (1)", 0);
    /* refused anywhere, even inside a literal */
    PLAIN("SELECT 'a--b'", 0);
    PLAIN("SELECT '/*'", 0);
    PLAIN("SELECT '$'", 0);
    PLAIN("SELECT 'a\\b'", 0);
    PLAIN("SELECT \"[x]\"", 0);
    PLAIN("SELECT 1 */", 1);
    PLAIN("SELECT a] FROM t", 1);
    PLAIN("SELECT '\0'", 0);
    PLAIN("SELECT \"unterminated", 0);
    /* words: Python's findall starts a word at its first letter or _ */
    PLAIN("SELECT 1into", 0);
    PLAIN("SELECT x1into", 1);
    PLAIN("SELECT 1e5into", 1);         /* the word is e5into */
    PLAIN("SELECT caf\xc3\xa9into", 0); /* e-acute separates: into */
    PLAIN("SELECT information FROM fork", 1);
    PLAIN("SELECT x FROM t WHERE for_x = 1", 1);
    PLAIN("SELECT 'INTO', \"for\" FROM t", 1);
    PLAIN("SELECT 1 merge", 0);
    /* calls */
    PLAIN("SELECT count (x), COALESCE(a, 1), x IN (1), EXISTS (SELECT 1)", 1);
    PLAIN("SELECT nextval\t('s')", 0);
    PLAIN("SELECT nextval\xc2\xa0('s')", 0);        /* U+00A0 is \s to Python */
    PLAIN("SELECT nextval\xc2\xb7('s')", 1);        /* U+00B7 is not: no call */
    PLAIN("SELECT x.count(1)", 0);
    PLAIN("SELECT x. \xe3\x80\x80 count(1)", 0);
    PLAIN("SELECT x.1count(1)", 1);                 /* Python: no [a-z_] after the dot */
    PLAIN("SELECT 1.5", 1);
    PLAIN("SELECT \"f\"(1)", 0);                     /* Python: qident( */
    PLAIN("SELECT 'a'(1)", 1);
    PLAIN("SELECT count%(a)s", 1);
    PLAIN("SELECT E'x'", 1);
    PLAIN("SELECT e'x'(1)", 1);
    PLAIN("SELECT 2count(1)", 1);                   /* the name is count */
    PLAIN("SELECT 2nextval(1)", 0);
    PLAIN("SELECT pg_total_relation_size('t')", 1);
    PLAIN("SELECT pg_total_relation_sizes('t')", 0);
    PLAIN("SELECT aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa(1)", 0);
    PLAIN("SELECT aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 1);
    /* Python's lower() turns U+212A into k and U+0130 into i + U+0307 */
    PLAIN("SELECT li\xe2\x84\xaa" "e(1)", 1);        /* like( */
    PLAIN("SELECT x\xe2\x84\xaa" "count(1)", 0);     /* xkcount( */
    PLAIN("SELECT \xc4\xb0nto", 1);                  /* i, nto */
    PLAIN("SELECT \xc4\xb0" "count(1)", 1);          /* i, count( */
    /* Python's whitespace */
    PLAIN("\xe3\x80\x80SELECT 1;\x1c", 1);
    PLAIN("SELECT\xc2\xa0" "1", 1);
    /* intended differences: Python says 1 to each */
    PLAIN("\xc5\xbf" "elect 1", 0);                  /* U+017F folds to s */
    PLAIN("SELECT\xc2\xb7" "1", 0);                  /* U+00B7 after the keyword */
    PLAIN("SELECT %(a')s, nextval(1), %(b')s", 0);   /* with params the quotes are in names */
}

static int verb_sqlite(const char *sql, size_t len)
{
    return nc_sql_verb(sql, len, NC_DIALECT_SQLITE);
}

static int verb_pg(const char *sql, size_t len)
{
    return nc_sql_verb(sql, len, NC_DIALECT_PG);
}

#define VERB(in, expect)                  \
    do {                                  \
        ANSWER(verb_sqlite, in, expect);  \
        ANSWER(verb_pg, in, expect);      \
    } while (0)

/* What the DB-API's rowcount and lastrowid go by (sqlite_exec.c). */
static void test_verb(void)
{
    VERB("INSERT INTO t VALUES (1)", NC_VERB_INSERT);
    VERB("  insert or replace into t values (1)", NC_VERB_INSERT);
    VERB("REPLACE INTO t VALUES (1)", NC_VERB_INSERT);
    VERB("/* c */ -- d\n update t set a = 1", NC_VERB_UPDATE);
    VERB("DELETE FROM t", NC_VERB_DELETE);
    VERB("WITH x AS (SELECT 1 AS a) DELETE FROM t WHERE a IN (SELECT a FROM x)", NC_VERB_DELETE);
    VERB("WITH RECURSIVE x(a) AS (SELECT 1 UNION SELECT a + 1 FROM x) INSERT INTO t SELECT a FROM x",
         NC_VERB_INSERT);
    VERB("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", NC_VERB_OTHER);
    VERB("WITH x AS (SELECT 1) VALUES (1)", NC_VERB_OTHER);
    VERB("(SELECT 1)", NC_VERB_OTHER);
    VERB("CREATE TABLE insert_log (a)", NC_VERB_OTHER);
    VERB("SELECT 'update'", NC_VERB_OTHER);
    VERB("\"insert\" ", NC_VERB_OTHER);
    VERB("DROP TABLE t; DELETE FROM u", NC_VERB_OTHER);   /* only the leading statement */
    VERB("inserts", NC_VERB_OTHER);
    VERB("", NC_VERB_OTHER);
}

static void test_rollback_to(void)
{
    RBTO("ROLLBACK TO SAVEPOINT sp", 1);
    RBTO("rollback to sp", 1);
    RBTO(" \n RollBack\tWork  TO x", 1);
    RBTO("ROLLBACK TRANSACTION TO x", 1);
    RBTO("ROLLBACK TO", 1);
    RBTO("ROLLBACK TO$x", 1);           /* $ is not a word character to Python's \b */
    RBTO("ROLLBACK TO;", 1);
    RBTO("ROLLBACK\xc2\xa0TO x", 1);
    RBTO("\x1cROLLBACK\x1fTO", 1);
    RBTO("ROLLBACK", 0);
    RBTO("ROLLBACK WORK", 0);
    RBTO("ROLLBACK TOx", 0);
    RBTO("ROLLBACK TO1", 0);
    RBTO("ROLLBACK TO_", 0);
    RBTO("ROLLBACKTO", 0);
    RBTO("ROLLBACK/**/TO", 0);
    RBTO("ROLLBACK WORK TRANSACTION TO x", 0);
    RBTO("ROLLBACK WORKTO", 0);
    RBTO("ROLLBACK TO\xc3\xa9", 0);
    RBTO("(ROLLBACK TO x)", 0);
    RBTO("ROLLBACK; ROLLBACK TO x", 0);
    RBTO("", 0);
    /* intended differences: Python says 1 */
    RBTO("ROLLBAC\xe2\x84\xaa TO x", 0);
    RBTO("ROLLBACK TO\xe2\x82\xac", 0);
}

/* ---- column types ------------------------------------------------------------------ */

/* The normalized text, or NULL when refused. */
static const char *coltype(const char *in, size_t len)
{
    static char out[512];
    char *copy = copy_of(in, len);
    char *buf = malloc(len + 1);
    if (!buf) {
        perror("malloc");
        exit(2);
    }
    size_t n = 12345;
    int ok = nc_sql_column_type(copy, len, buf, &n);
    const char *r = NULL;
    if (ok && n == strlen(buf) && n < sizeof out) {
        memcpy(out, buf, n + 1);
        r = out;
    } else if (ok) {
        r = "BAD LENGTH";
    }
    if (nc_sql_column_type(copy, len, NULL, NULL) != ok)
        r = "ANSWER DEPENDS ON out";
    free(buf);
    free(copy);
    return r;
}

#define TYPE_OK(in, expect)                                                                              \
    do {                                                                                                 \
        const char *got_ = coltype(in, sizeof(in) - 1);                                                  \
        CHECK(got_ && strcmp(got_, expect) == 0, "column type %s: got %s", show(in, sizeof(in) - 1),     \
              got_ ? got_ : "(refused)");                                                                \
    } while (0)
#define TYPE_NO(in) \
    CHECK(coltype(in, sizeof(in) - 1) == NULL, "column type %s should be refused", show(in, sizeof(in) - 1))

static void test_column_type(void)
{
    /* tests/test_database_manager_sqlite.py and test_database_manager_pg.py */
    TYPE_OK("INTEGER", "INTEGER");
    TYPE_OK("integer not null", "integer not null");
    TYPE_OK("VARCHAR(255)", "VARCHAR(255)");
    TYPE_OK("NUMERIC(10, 2)", "NUMERIC(10, 2)");
    TYPE_OK("DOUBLE PRECISION", "DOUBLE PRECISION");
    TYPE_OK("TIMESTAMP WITH TIME ZONE", "TIMESTAMP WITH TIME ZONE");
    TYPE_OK("TEXT NOT NULL UNIQUE", "TEXT NOT NULL UNIQUE");
    TYPE_OK("INTEGER PRIMARY KEY", "INTEGER PRIMARY KEY");
    TYPE_OK("INTEGER DEFAULT -5", "INTEGER DEFAULT -5");
    TYPE_OK("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER PRIMARY KEY AUTOINCREMENT");
    TYPE_OK("REAL DEFAULT 1.5", "REAL DEFAULT 1.5");
    TYPE_OK("BOOLEAN DEFAULT FALSE", "BOOLEAN DEFAULT FALSE");
    TYPE_OK("TIMESTAMP DEFAULT CURRENT_TIMESTAMP", "TIMESTAMP DEFAULT CURRENT_TIMESTAMP");
    TYPE_OK("INTEGER[]", "INTEGER[]");
    TYPE_OK("BLOB NULL", "BLOB NULL");
    TYPE_OK("NUMERIC(10, 2) NOT NULL DEFAULT 0", "NUMERIC(10, 2) NOT NULL DEFAULT 0");
    TYPE_OK("TIMESTAMP(3) WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP",
            "TIMESTAMP(3) WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP");
    TYPE_NO("TEXT; DROP TABLE sentinel");
    TYPE_NO("TEXT -- comment");
    TYPE_NO("TEXT /* x */");
    TYPE_NO("TEXT DEFAULT 'x'");
    TYPE_NO("TEXT DEFAULT \"x\"");
    TYPE_NO("INTEGER CHECK (c > 0)");
    TYPE_NO("INTEGER REFERENCES sentinel");
    TYPE_NO("INTEGER DEFAULT pg_sleep(10)");
    TYPE_NO("");
    TYPE_NO("   ");
    TYPE_NO("INTEGER, other TEXT");
    TYPE_NO("NOT NULL");
    TYPE_NO("TEXT)");
    TYPE_NO("TEXT COLLATE nocase");
    TYPE_NO("INTEGER AS (1)");

    /* normalization: " ".join(text.split()) */
    TYPE_OK("  varchar ( 10 ,2 )\t[ 5 ][]\n\nnot \x1c null  ", "varchar ( 10 ,2 ) [ 5 ][] not null");
    TYPE_OK("TEXT\xc2\xa0NOT\xe3\x80\x80NULL", "TEXT NOT NULL");
    TYPE_OK("x_1 y (4) z [ ] DEFAULT +0.25 UNIQUE PRIMARY KEY",
            "x_1 y (4) z [ ] DEFAULT +0.25 UNIQUE PRIMARY KEY");
    /* words are whole words; TRUE is a type word, NOTE is not NOT */
    TYPE_OK("NOTE NULLABLE KEYS", "NOTE NULLABLE KEYS");
    TYPE_OK("INTEGER TRUE", "INTEGER TRUE");
    TYPE_OK("INTEGER DEFAULT CURRENT_TIME", "INTEGER DEFAULT CURRENT_TIME");
    TYPE_NO("INTEGER DEFAULT CURRENT_TIMEX");
    TYPE_NO("INTEGER KEY");
    TYPE_NO("INTEGER AUTOINCREMENT");
    TYPE_NO("INTEGER PRIMARY KEY UNIQUE AUTOINCREMENT");
    TYPE_NO("INTEGER PRIMARY KEY AUTOINCREMENT AUTOINCREMENT");
    TYPE_NO("INTEGER NOT");
    TYPE_NO("INTEGER PRIMARY");
    TYPE_NO("INTEGER NOT UNIQUE");
    /* the order: words, (n), words, [], constraints */
    TYPE_OK("NUMERIC (10) VARYING [3]", "NUMERIC (10) VARYING [3]");
    TYPE_NO("NUMERIC(10)VARYING");
    TYPE_NO("NUMERIC(10)(2)");
    TYPE_NO("INTEGER[] x");
    TYPE_NO("INTEGER NULL []");
    TYPE_NO("INTEGER NULL(1)");
    TYPE_NO("INTEGER[]NOT NULL");
    TYPE_NO("(10)");
    /* numbers */
    TYPE_NO("VARCHAR(1.5)");
    TYPE_NO("VARCHAR(1e5)");
    TYPE_NO("VARCHAR(-1)");
    TYPE_NO("VARCHAR(1, 2, 3)");
    TYPE_NO("VARCHAR()");
    TYPE_NO("INTEGER[x]");
    TYPE_NO("INTEGER DEFAULT 1e5");
    TYPE_NO("INTEGER DEFAULT 1.");
    TYPE_NO("INTEGER DEFAULT .5");
    TYPE_NO("INTEGER DEFAULT - 5");
    TYPE_NO("INTEGER DEFAULT --5");
    TYPE_NO("INTEGER DEFAULT -TRUE");
    TYPE_NO("INTEGER DEFAULT 5x");
    TYPE_NO("INTEGER DEFAULT 1.5.3");
    /* characters outside the grammar */
    TYPE_NO("INT$");
    TYPE_NO("caf\xc3\xa9");
    TYPE_NO("INTEGER\0");
    TYPE_NO("INTEGER\xe2\x80\x8b");     /* U+200B is not whitespace to Python */
    /* intended differences: Python accepts (folds U+017F to S, takes any digit) */
    TYPE_NO("\xc5\xbf" "ERIAL");
    TYPE_NO("VARCHAR(\xd9\xa3)");
}

static int session_pg(const char *s, size_t n) { return nc_sql_changes_session(s, n, NC_DIALECT_PG); }
static int session_sqlite(const char *s, size_t n) { return nc_sql_changes_session(s, n, NC_DIALECT_SQLITE); }
#define SESSION_PG(in, expect) ANSWER(session_pg, in, expect)
#define SESSION_SQ(in, expect) ANSWER(session_sqlite, in, expect)

static void test_changes_session(void)
{
    /* what must be reset before the next borrower (nc_pg.c pg_reset) */
    SESSION_PG("SET TimeZone = 'UTC'", 1);
    SESSION_PG("  /* why */ -- and\n set search_path to x", 1);
    SESSION_PG("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", 1);
    SESSION_PG("SET SESSION AUTHORIZATION bob", 1);
    SESSION_PG("RESET ALL", 1);
    SESSION_PG("LISTEN chan", 0);
    SESSION_PG("PREPARE p AS SELECT 1", 1);
    SESSION_PG("CREATE TEMP TABLE t (a int)", 1);
    SESSION_PG("create or replace temporary view v as select 1", 1);
    SESSION_PG("CREATE LOCAL TEMP TABLE t (a int)", 1);
    SESSION_PG("SELECT set_config('TimeZone', 'UTC', false)", 1);
    SESSION_PG("SELECT 1; SET x.y = 1", 1);
    SESSION_PG("BEGIN; SET default_transaction_read_only = on; COMMIT", 1);
    /* what ends with the transaction, or is no change at all */
    SESSION_PG("SET LOCAL TimeZone = 'UTC'", 0);
    SESSION_PG("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", 0);
    SESSION_PG("UPDATE t SET a = 1", 0);
    SESSION_PG("SELECT 'SET x = 1; RESET ALL'", 0);
    SESSION_PG("SELECT $$; set x = 1$$", 0);
    SESSION_PG("SELECT set_config", 0);
    SESSION_PG("SELECT current_setting('TimeZone')", 0);
    SESSION_PG("CREATE TABLE temp (a int)", 0);
    SESSION_PG("-- SET x = 1\nSELECT 1", 0);
    SESSION_PG("SHOW TimeZone", 0);
    SESSION_PG("", 0);
    /* SQLite */
    SESSION_SQ("PRAGMA read_uncommitted = 1", 1);
    SESSION_SQ("pragma main.cache_size(100)", 1);
    SESSION_SQ("PRAGMA read_uncommitted; PRAGMA foreign_keys=ON", 1);
    SESSION_SQ("ATTACH DATABASE 'x.db' AS x", 1);
    SESSION_SQ("CREATE TEMP TABLE t (a)", 1);
    SESSION_SQ("PRAGMA read_uncommitted", 0);
    SESSION_SQ("PRAGMA table_info('t')", 1);   /* a read in call form: reset anyway (conservative) */
    SESSION_SQ("SELECT 'PRAGMA x = 1'", 0);
    SESSION_SQ("SET x = 1", 0);
    SESSION_SQ("UPDATE t SET a = 1", 0);
}

/* ---- what a statement may leave behind (nc_sql_effect) ---------------------- */

static int effect_pg(const char *s, size_t n) { return nc_sql_effect(s, n, NC_DIALECT_PG); }
static int effect_sqlite(const char *s, size_t n) { return nc_sql_effect(s, n, NC_DIALECT_SQLITE); }
#define EFFECT(in, expect) ANSWER(effect_pg, in, expect)
#define EFFECT_SQ(in, expect) ANSWER(effect_sqlite, in, expect)

static void test_effect(void)
{
    /* a plain read: nothing outlives the session */
    EFFECT("SELECT 1", NC_EFFECT_NONE);
    EFFECT("  WITH x AS (SELECT a FROM t) SELECT * FROM x;", NC_EFFECT_NONE);
    EFFECT("SELECT count(*) FROM t a CROSS JOIN t b", NC_EFFECT_NONE);
    /* anything else may write */
    EFFECT("INSERT INTO t (n) SELECT 1 FROM pg_sleep(2)", NC_EFFECT_WRITE);
    EFFECT("UPDATE t SET a = 1", NC_EFFECT_WRITE);
    EFFECT("SELECT nextval('s')", NC_EFFECT_WRITE);
    EFFECT("SELECT * FROM t FOR UPDATE", NC_EFFECT_WRITE);
    EFFECT("SELECT 1; SELECT 2", NC_EFFECT_WRITE);          /* not one statement: not known to be plain */
    EFFECT("CALL p()", NC_EFFECT_WRITE);
    EFFECT("BEGIN", NC_EFFECT_WRITE);
    EFFECT("ROLLBACK PREPARED 'x'", NC_EFFECT_WRITE);
    EFFECT("PREPARE q AS SELECT 1", NC_EFFECT_WRITE);       /* a prepared statement, not a transaction */
    EFFECT("PREPARE", NC_EFFECT_WRITE);
    EFFECT("PREPARE; SELECT 1", NC_EFFECT_WRITE);
    EFFECT("", NC_EFFECT_WRITE);                            /* blank: not a plain read, so on the safe side */
    /* a commit, as any statement of the text */
    EFFECT("COMMIT", NC_EFFECT_COMMIT);
    EFFECT("commit work;", NC_EFFECT_COMMIT);
    EFFECT("COMMIT AND CHAIN", NC_EFFECT_COMMIT);
    EFFECT("END", NC_EFFECT_COMMIT);
    EFFECT("End Transaction", NC_EFFECT_COMMIT);
    EFFECT("PREPARE TRANSACTION 'tx1'", NC_EFFECT_COMMIT);
    EFFECT("prepare /* c */ transaction 'tx1'", NC_EFFECT_COMMIT);
    EFFECT("COMMIT PREPARED 'tx1'", NC_EFFECT_COMMIT);
    EFFECT("/* lead */ -- line\n COMMIT", NC_EFFECT_COMMIT);
    EFFECT("INSERT INTO t VALUES (1); COMMIT", NC_EFFECT_COMMIT);
    EFFECT("BEGIN; INSERT INTO t VALUES (1); END;", NC_EFFECT_COMMIT);
    /* not at a statement's start, or inside a literal or comment */
    EFFECT("SELECT 'COMMIT'", NC_EFFECT_NONE);
    EFFECT("INSERT INTO log (w) VALUES ('commit')", NC_EFFECT_WRITE);
    EFFECT("UPDATE t SET state = 'x' WHERE kind = 'END'", NC_EFFECT_WRITE);
    EFFECT("SELECT a AS commit FROM t", NC_EFFECT_NONE);
    EFFECT("-- COMMIT\nINSERT INTO t VALUES (1)", NC_EFFECT_WRITE);
    EFFECT("SELECT $$;COMMIT$$", NC_EFFECT_WRITE);          /* a dollar quote: never plain, never a COMMIT */
    EFFECT("INSERT INTO t VALUES (E'\\';COMMIT')", NC_EFFECT_WRITE);
    /* SQLite reads its own quotes */
    EFFECT_SQ("COMMIT", NC_EFFECT_COMMIT);
    EFFECT_SQ("END TRANSACTION", NC_EFFECT_COMMIT);
    EFFECT_SQ("SELECT 1", NC_EFFECT_NONE);
    EFFECT_SQ("INSERT INTO t VALUES (`;COMMIT`)", NC_EFFECT_WRITE);
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"tokens", test_tokens},
        {"random_tokens", test_random_tokens},
        {"blank", test_blank},
        {"blank_vs_sqlite", test_blank_vs_sqlite},
        {"plain_select", test_plain_select},
        {"rollback_to", test_rollback_to},
        {"verb", test_verb},
        {"column_type", test_column_type},
        {"changes_session", test_changes_session},
        {"effect", test_effect},
    };
    return nc_run_cases("test_lexer", cases, NC_NCASES(cases));
}
