/* nc_lexer.c - the one SQL tokenizer of the core (rules in nc_lexer.h).
 *
 * Speed matters: the placeholder rewrite runs this over every statement.  So
 * byte classes come from a table, runs (words, spaces) are one token each,
 * and long regions (strings, dollar bodies) are skipped with memchr.
 */
#include "nc_lexer.h"

#include <string.h>

/* ---- byte classes --------------------------------------------------------- */

enum {
    CL_SPACE = 1,       /* [ \t\n\v\f\r] */
    CL_WSTART = 2,      /* starts a word: [A-Za-z_\200-\377] */
    CL_WCONT = 4,       /* continues a word: CL_WSTART, digits, $ */
    CL_DIGIT = 8,       /* [0-9] */
    CL_SPECIAL = 16     /* may start something longer than one byte of punctuation */
};

#define CL_IS_SPACE(c) ((c) == ' ' || ((c) >= 0x09 && (c) <= 0x0d))
#define CL_IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define CL_IS_WSTART(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || (c) == '_' || (c) >= 0x80)
#define CL_IS_SPECIAL(c)                                                                         \
    ((c) == '\'' || (c) == '"' || (c) == '`' || (c) == '-' || (c) == '/' || (c) == '$' || (c) == '%' || \
     (c) == ';' || (c) == 0x0b || ((c) >= 0x1c && (c) <= 0x1f))
#define CL_OF(c)                                                                           \
    ((CL_IS_SPACE(c) ? CL_SPACE : 0) | (CL_IS_WSTART(c) ? CL_WSTART | CL_WCONT : 0) |      \
     (CL_IS_DIGIT(c) ? CL_DIGIT | CL_WCONT : 0) | ((c) == '$' ? CL_WCONT : 0) |           \
     (CL_IS_SPECIAL(c) ? CL_SPECIAL : 0))
#define CL_R4(b) CL_OF(b), CL_OF((b) + 1), CL_OF((b) + 2), CL_OF((b) + 3)
#define CL_R16(b) CL_R4(b), CL_R4((b) + 4), CL_R4((b) + 8), CL_R4((b) + 12)
#define CL_R64(b) CL_R16(b), CL_R16((b) + 16), CL_R16((b) + 32), CL_R16((b) + 48)

static const unsigned char cls_pg[256] = {CL_R64(0), CL_R64(64), CL_R64(128), CL_R64(192)};

/* SQLite's tokenizer does not start whitespace with a \v (it is an illegal
 * character there) but lets a run of whitespace go on with one; so this
 * table, PostgreSQL's otherwise, is only asked what a token starts with. */
#undef CL_IS_SPACE
#define CL_IS_SPACE(c) ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\f' || (c) == '\r')
static const unsigned char cls_sqlite[256] = {CL_R64(0), CL_R64(64), CL_R64(128), CL_R64(192)};
#undef CL_IS_SPACE

/* Everything but the start of whitespace reads the same in both dialects. */
#define CLASS(s, i) cls_pg[(unsigned char)(s)[i]]

size_t nc_lex_pyspace(const char *p, size_t n)
{
    if (n == 0)
        return 0;
    const unsigned char *u = (const unsigned char *)p;
    unsigned char c = u[0];
    if (c < 0x80)
        return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
    if (c == 0xC2)                                      /* U+0085, U+00A0 */
        return n >= 2 && (u[1] == 0x85 || u[1] == 0xA0) ? 2 : 0;
    if (n < 3)
        return 0;
    if (c == 0xE1)                                      /* U+1680 */
        return u[1] == 0x9A && u[2] == 0x80 ? 3 : 0;
    if (c == 0xE2) {
        if (u[1] == 0x80)                               /* U+2000-200A, 2028, 2029, 202F */
            return (u[2] >= 0x80 && u[2] <= 0x8A) || u[2] == 0xA8 || u[2] == 0xA9 || u[2] == 0xAF ? 3
                                                                                                  : 0;
        return u[1] == 0x81 && u[2] == 0x9F ? 3 : 0;    /* U+205F */
    }
    if (c == 0xE3)                                      /* U+3000 */
        return u[1] == 0x80 && u[2] == 0x80 ? 3 : 0;
    return 0;
}

/* ---- runs ------------------------------------------------------------------ */

/* Runs of whitespace and words; the NC_LEX_UNICODE_SPACE variants are kept
 * out of line so the plain loops stay small enough to inline. */
static size_t py_space_end(const char *s, size_t n, size_t i)
{
    size_t k;
    while (i < n && (k = nc_lex_pyspace(s + i, n - i)) != 0)
        i += k;
    return i;
}

static size_t py_word_end(const char *s, size_t n, size_t i)
{
    while (i < n && (CLASS(s, i) & CL_WCONT) && !((unsigned char)s[i] >= 0x80 && nc_lex_pyspace(s + i, n - i)))
        i++;
    return i;
}

static inline size_t space_end(const nc_lexer *lx, size_t i)
{
    const char *s = lx->sql;
    const size_t n = lx->len;
    while (i < n && (CLASS(s, i) & CL_SPACE))
        i++;
    return lx->opts & NC_LEX_UNICODE_SPACE ? py_space_end(s, n, i) : i;
}

static inline size_t word_end(const nc_lexer *lx, size_t i)
{
    const char *s = lx->sql;
    const size_t n = lx->len;
    if (lx->opts & NC_LEX_UNICODE_SPACE)
        return py_word_end(s, n, i);
    while (i < n && (CLASS(s, i) & CL_WCONT))
        i++;
    return i;
}

/* Digits, an optional fraction, and an exponent unless a word byte follows
 * it (see nc_lexer.h: then the e starts a word). */
static size_t number_end(const char *s, size_t n, size_t i)
{
    while (i < n && CL_IS_DIGIT((unsigned char)s[i]))
        i++;
    if (i + 1 < n && s[i] == '.' && CL_IS_DIGIT((unsigned char)s[i + 1])) {
        i += 2;
        while (i < n && CL_IS_DIGIT((unsigned char)s[i]))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t k = i + 1;
        if (k < n && (s[k] == '+' || s[k] == '-'))
            k++;
        if (k < n && CL_IS_DIGIT((unsigned char)s[k])) {
            while (k < n && CL_IS_DIGIT((unsigned char)s[k]))
                k++;
            if (k >= n || !(CLASS(s, k) & CL_WCONT))
                i = k;
        }
    }
    return i;
}

/* ---- regions ----------------------------------------------------------------
 * Each takes the index just after the opening delimiter and returns the index
 * just after the closing one, or n (setting *flags) when there is none. */

/* '...', "..." or `...` with the doubled-quote escape. */
static size_t skip_quoted(const char *s, size_t n, size_t i, char q, unsigned *flags)
{
    while (i < n) {
        const char *p = memchr(s + i, q, n - i);
        if (!p)
            break;
        size_t j = (size_t)(p - s) + 1;
        if (j < n && s[j] == q) {
            i = j + 1;      /* doubled quote: part of the text */
            continue;
        }
        return j;
    }
    *flags |= NC_TOKF_UNTERMINATED;
    return n;
}

/* E'...': a backslash escapes the next byte, '' is a quote too. */
static size_t skip_estring(const char *s, size_t n, size_t i, unsigned *flags)
{
    while (i < n) {
        char c = s[i];
        if (c == '\\') {
            i += 2;
            continue;
        }
        if (c == '\'') {
            if (i + 1 < n && s[i + 1] == '\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i++;
    }
    *flags |= NC_TOKF_UNTERMINATED;
    return n;
}

/* -- comment: up to (not including) the end of the line. */
static size_t skip_line_comment(const char *s, size_t n, size_t i, int cr_too)
{
    if (!cr_too) {
        const char *p = i < n ? memchr(s + i, '\n', n - i) : NULL;
        return p ? (size_t)(p - s) : n;
    }
    for (; i < n; i++)
        if (s[i] == '\n' || s[i] == '\r')
            return i;
    return n;
}

/* Block comment; nested ones counted when nest. */
static size_t skip_block_comment(const char *s, size_t n, size_t i, int nest, unsigned *flags)
{
    size_t depth = 1;
    while (i + 1 < n) {
        if (s[i] == '*' && s[i + 1] == '/') {
            i += 2;
            if (--depth == 0)
                return i;
        } else if (nest && s[i] == '/' && s[i + 1] == '*') {
            i += 2;
            depth++;
        } else {
            i++;
        }
    }
    *flags |= NC_TOKF_UNTERMINATED;
    return n;
}

/* If a dollar-quote delimiter $tag$ starts at s[i] (s[i] == '$'), its
 * length, else 0.  The tag's bytes are those of a word without the $. */
static size_t dollar_delim_len(const char *s, size_t n, size_t i)
{
    size_t j = i + 1;
    if (j < n && (CLASS(s, j) & CL_WSTART)) {
        j++;
        while (j < n && (CLASS(s, j) & CL_WCONT) && s[j] != '$')
            j++;
    }
    if (j < n && s[j] == '$')
        return j - i + 1;
    return 0;
}

/* The body of a dollar quote whose delimiter is s[d .. d+dlen), starting at
 * i: ends after the first occurrence of the same delimiter.  Linear: the tag
 * holds no $, so a comparison from one $ never reads past the next $. */
static size_t skip_dollar_body(const char *s, size_t n, size_t i, size_t d, size_t dlen, unsigned *flags)
{
    while (i < n) {
        const char *p = memchr(s + i, '$', n - i);
        if (!p)
            break;
        size_t k = (size_t)(p - s);
        if (n - k < dlen)
            break;
        size_t m = 1;
        while (m < dlen && s[k + m] == s[d + m])
            m++;
        if (m == dlen)
            return k + dlen;
        i = k + 1;
    }
    *flags |= NC_TOKF_UNTERMINATED;
    return n;
}

/* A psycopg placeholder candidate at s[i] == '%' (see NC_LEX_PARAMS). */
static size_t param_end(const char *s, size_t n, size_t i, unsigned *flags)
{
    if (i + 1 >= n)
        return n;                   /* a lone % at the end */
    if (s[i + 1] != '(')
        return i + 2;
    const char *close = i + 2 < n ? memchr(s + i + 2, ')', n - (i + 2)) : NULL;
    if (!close) {
        *flags |= NC_TOKF_UNTERMINATED;
        return n;
    }
    size_t j = (size_t)(close - s) + 1;
    return j < n ? j + 1 : j;
}

/* ---- the token stream -------------------------------------------------------- */

void nc_lex_init(nc_lexer *lx, const char *sql, size_t len, int dialect, unsigned opts)
{
    lx->sql = sql;
    lx->len = sql ? len : 0;
    lx->pos = 0;
    lx->pg = dialect != NC_DIALECT_SQLITE;
    lx->cls = lx->pg ? cls_pg : cls_sqlite;
    lx->opts = opts;
}

/* The token starting at i < n: returns its kind, sets *end and *flags. */
static inline int scan(const nc_lexer *lx, size_t i, size_t *end, unsigned *flags)
{
    const char *s = lx->sql;
    const size_t n = lx->len;
    size_t j, k;
    int kind;
    unsigned char c = (unsigned char)s[i];
    unsigned cl = lx->cls[c];
    if (cl & CL_SPACE) {
        j = space_end(lx, i + 1);
        kind = NC_TOK_SPACE;
    } else if (cl & CL_WSTART) {
        if ((c == 'E' || c == 'e') && lx->pg && i + 1 < n && s[i + 1] == '\'') {
            j = skip_estring(s, n, i + 2, flags);
            *flags |= NC_TOKF_ESCAPE;
            kind = NC_TOK_STRING;
        } else if (c >= 0x80 && (lx->opts & NC_LEX_UNICODE_SPACE) && (k = nc_lex_pyspace(s + i, n - i))) {
            j = space_end(lx, i + k);
            kind = NC_TOK_SPACE;
        } else {
            j = word_end(lx, i + 1);
            kind = NC_TOK_WORD;
        }
    } else if (cl & CL_DIGIT) {
        j = number_end(s, n, i);
        kind = NC_TOK_NUMBER;
    } else if (!(cl & CL_SPECIAL)) {
        j = i + 1;
        kind = NC_TOK_PUNCT;
    } else {
        j = i + 1;
        kind = NC_TOK_PUNCT;
        switch (c) {
        case '\'':
            j = skip_quoted(s, n, i + 1, '\'', flags);
            kind = NC_TOK_STRING;
            break;
        case '"':
            j = skip_quoted(s, n, i + 1, '"', flags);
            kind = NC_TOK_QIDENT;
            break;
        case '`':
            if (!lx->pg) {
                j = skip_quoted(s, n, i + 1, '`', flags);
                kind = NC_TOK_QIDENT;
            }
            break;
        case '-':
            if (i + 1 < n && s[i + 1] == '-') {
                j = skip_line_comment(s, n, i + 2, lx->pg);
                kind = NC_TOK_COMMENT;
            }
            break;
        case '/':
            /* SQLite reads a / * that ends the input as / and * */
            if (i + 1 < n && s[i + 1] == '*' && (lx->pg || i + 2 < n)) {
                j = skip_block_comment(s, n, i + 2, lx->pg, flags);
                *flags |= NC_TOKF_BLOCK;
                kind = NC_TOK_COMMENT;
            }
            break;
        case '$':
            if (lx->pg && (k = dollar_delim_len(s, n, i)) != 0) {
                j = skip_dollar_body(s, n, i + k, i, k, flags);
                *flags |= NC_TOKF_DOLLAR;
                kind = NC_TOK_STRING;
            }
            break;
        case '%':
            if (lx->opts & NC_LEX_PARAMS) {
                j = param_end(s, n, i, flags);
                kind = NC_TOK_PARAM;
            }
            break;
        case ';':
            kind = NC_TOK_SEMI;
            break;
        default:
            if ((c == 0x0b || (c >= 0x1c && c <= 0x1f)) && (lx->opts & NC_LEX_UNICODE_SPACE)) {
                j = space_end(lx, i + 1);
                kind = NC_TOK_SPACE;
            }
            break;
        }
    }
    *end = j;
    return kind;
}

int nc_lex_find(nc_lexer *lx, nc_token *t, unsigned kinds)
{
    const size_t n = lx->len;
    size_t i = lx->pos, j = i;
    unsigned flags = 0;
    int kind = NC_TOK_END;
    /* The loop stays in this function (scan is inlined), so skipping the
     * tokens nobody asked for costs no call each. */
    for (; i < n; i = j) {
        flags = 0;
        kind = scan(lx, i, &j, &flags);
        if (kinds & NC_TOKS(kind))
            break;
    }
    if (i >= n) {
        i = j = n;
        kind = NC_TOK_END;
        flags = 0;
    }
    t->kind = kind;
    t->flags = flags;
    t->off = i;
    t->len = j - i;
    lx->pos = j;
    return kind;
}

int nc_lex_next(nc_lexer *lx, nc_token *t)
{
    return nc_lex_find(lx, t, ~0u);
}
