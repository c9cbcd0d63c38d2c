/* nc_lexer.h - the one SQL tokenizer of the core.
 *
 * A token stream over sql[0..len) (not NUL-terminated; a NUL byte is an
 * ordinary punctuation byte).  Every byte belongs to exactly one token, so the
 * tokens laid end to end give back the input.  Nothing is allocated: the
 * lexer is a cursor and a token is an offset, a length and a kind.
 *
 * It serves the placeholder rewrite (nc_params.c, on the path of every
 * statement) and the questions asked about SQL text (nc_sqltext.c).  It
 * finds where regions begin and end, which is what they need; it does not
 * decode literals or check the grammar.  The region rules:
 *
 * PostgreSQL dialect (following the server's lexer, scan.l):
 *   '...'      standard string, '' is a quote; a backslash is an ordinary
 *              character (standard_conforming_strings = on, the default).
 *              U&'...', B'...', X'...', N'...' are a WORD then this string.
 *   E'...'     escape string: \x escapes any x (so \' does not end it), ''
 *              too.  Only when the E starts a token: in  name'...'  the E
 *              ends the word and the string is a standard one.
 *   "..."      quoted identifier, "" is a quote.
 *   $tag$...$tag$  dollar quote; tag empty or [A-Za-z_\200-\377] followed by
 *              [A-Za-z0-9_\200-\377]* (non-ASCII bytes count as letters, as
 *              in the server).  $1 is a '$' and a number, not a quote; a $
 *              inside a word (a$b$) belongs to the word.  The body ends at the
 *              first occurrence of the exact opening delimiter.
 *   -- ...     line comment, up to (not including) \n or \r.
 *   / * ... * /  block comment; they nest.
 *
 * SQLite dialect (following SQLite's tokenizer rather than PostgreSQL's):
 *   '...', "..." and `...` with the doubled-quote escape, -- comments up to
 *   \n, and block comments that do NOT nest (the first * / ends them; a / *
 *   that ends the input is a / and a *, as SQLite reads it).  A \v only
 *   continues whitespace: at the start of a token it is punctuation (SQLite
 *   rejects it there).  SQLite
 *   has no E'...' strings and no dollar quotes (an E is a letter, a $ a
 *   punctuation byte).  [bracketed] identifiers are not recognised either
 *   (kept simple; a % inside them is rare).
 *
 * An unterminated quote or block comment runs to the end of the input; the
 * token says so (NC_TOKF_UNTERMINATED) and the server reports the error.
 *
 * Outside regions, in both dialects:
 *   words      [A-Za-z_\200-\377][A-Za-z0-9_$\200-\377]*  (identifiers and
 *              keywords alike; a $ continues a word, as in PostgreSQL)
 *   numbers    [0-9]+(.[0-9]+)?  and an exponent [eE][+-]?[0-9]+ when no word
 *              byte follows it: in 1e5x the number is 1 and e5x a word, which
 *              is how the placeholder rewrite has always read it (so a $ or
 *              an E' after it is part of that word).
 *   space      [ \t\n\v\f\r]+  (in SQLite not starting with \v)
 *   ;          its own token, so a statement's end is easy to see.
 *   %...       with NC_LEX_PARAMS, a psycopg placeholder candidate (below);
 *              without it a % is punctuation.
 *   anything else is a one-byte punctuation token (operators are not joined).
 */
#ifndef NC_LEXER_H
#define NC_LEXER_H

#include <stddef.h>

enum nc_dialect { NC_DIALECT_PG = 1, NC_DIALECT_SQLITE = 2 };

enum nc_tok_kind {
    NC_TOK_END = 0,     /* no more input (len 0) */
    NC_TOK_SPACE,       /* whitespace */
    NC_TOK_COMMENT,     /* -- line or block comment (NC_TOKF_BLOCK) */
    NC_TOK_WORD,        /* identifier or keyword */
    NC_TOK_QIDENT,      /* "quoted identifier"; in SQLite also `quoted` */
    NC_TOK_STRING,      /* '...'; in PostgreSQL also E'...' and $tag$...$tag$ */
    NC_TOK_NUMBER,      /* numeric literal */
    NC_TOK_PARAM,       /* % and what follows it (NC_LEX_PARAMS only) */
    NC_TOK_SEMI,        /* ; */
    NC_TOK_PUNCT        /* any other byte, one per token */
};

/* nc_token.flags */
#define NC_TOKF_UNTERMINATED 0x1u   /* quote, block comment or %( ran to the end */
#define NC_TOKF_ESCAPE 0x2u         /* STRING: E'...' */
#define NC_TOKF_DOLLAR 0x4u         /* STRING: $tag$...$tag$ */
#define NC_TOKF_BLOCK 0x8u          /* COMMENT: / * ... * / (else -- ...) */

/* nc_lex_init options */

/* A % starts an NC_TOK_PARAM token: %% and % followed by any one byte are
 * two bytes long; %(...) runs to the first ')' and takes one more byte when
 * there is one (the s of %(name)s), or runs to the end, unterminated, when
 * there is no ')'; a lone % at the end is one byte.  The token is a
 * candidate: nc_params.c decides whether it is a valid placeholder. */
#define NC_LEX_PARAMS 0x1u

/* Whitespace is also what Python's str.isspace() accepts: \x1c-\x1f and the
 * Unicode spaces (U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
 * U+202F, U+205F, U+3000, UTF-8 encoded); such a character ends a word.  For
 * the checks that replace Python regular expressions (nc_sqltext.c), so they
 * give the same answers as the \s and str.split() they replace.  The server
 * does not see these as spaces; the placeholder rewrite never sets it. */
#define NC_LEX_UNICODE_SPACE 0x2u

typedef struct nc_token {
    int kind;           /* enum nc_tok_kind */
    unsigned flags;     /* NC_TOKF_* */
    size_t off;         /* the token is sql[off .. off+len) */
    size_t len;
} nc_token;

/* The cursor; its fields are the lexer's own (pos may be read). */
typedef struct nc_lexer {
    const char *sql;
    size_t len;
    size_t pos;         /* where the next token starts */
    int pg;             /* dialect is PostgreSQL */
    const unsigned char *cls;   /* the dialect's byte classes */
    unsigned opts;      /* NC_LEX_* */
} nc_lexer;

/* Start a token stream over sql[0..len) (sql may be NULL when len is 0).  An
 * unknown dialect is read as PostgreSQL; callers check it. */
void nc_lex_init(nc_lexer *lx, const char *sql, size_t len, int dialect, unsigned opts);

/* Fill tok with the next token and return its kind; NC_TOK_END (again and
 * again) at the end of the input. */
int nc_lex_next(nc_lexer *lx, nc_token *tok);

/* A set of token kinds for nc_lex_find: NC_TOKS(NC_TOK_WORD) | ... */
#define NC_TOKS(kind) (1u << (kind))

/* Like nc_lex_next, but skips every token whose kind is not in the set kinds
 * and returns the first one that is (or NC_TOK_END).  The placeholder rewrite
 * asks only for NC_TOK_PARAM: the tokens between cost no call each. */
int nc_lex_find(nc_lexer *lx, nc_token *tok, unsigned kinds);

/* The length in bytes of the whitespace character (as Python's
 * str.isspace() sees it, UTF-8 encoded) at p[0..n), or 0 if there is none. */
size_t nc_lex_pyspace(const char *p, size_t n);

#endif
