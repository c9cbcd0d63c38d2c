/* nc_params.h - rewriting psycopg-style placeholders for the server.
 *
 * Users write %s (with a sequence) or %(name)s (with a mapping) and %% for a
 * literal percent sign.  The rewrite turns them into $1..$n (PostgreSQL) or
 * ?1..?n (SQLite) so the values are bound by the server, never pasted into the
 * SQL text.  What stands inside '...' and E'...' string literals, "quoted"
 * identifiers, $tag$ dollar-quoted bodies, -- line comments and nested block
 * comments holds no placeholder (a lone % there is copied as it is), but %%
 * is % there too: with parameters, %% means % everywhere, as in psycopg
 * (SQLAlchemy doubles every % of what it sends); the exact region rules, per
 * dialect, are those of the lexer (nc_lexer.h).  (Without parameters nothing
 * is rewritten: the SQL is sent as it is.)
 *
 * For PostgreSQL a placeholder that directly follows a word, a number or a $
 * (x%s, IN%s, $%s) gets a space before its $n, which the server would
 * otherwise read as part of that word or as a dollar quote.
 *
 * %b and %t (psycopg's binary/text hints) are accepted as synonyms of %s.
 * Any other character after % outside those regions is an error, as is a lone
 * % at the end, an unterminated %(name, or mixing %s with %(name)s.
 */
#ifndef NC_PARAMS_H
#define NC_PARAMS_H

#include <stddef.h>
#include "nc_error.h"
#include "nc_lexer.h"       /* enum nc_dialect */

enum nc_param_style {
    NC_STYLE_NONE = 0,          /* no placeholders at all */
    NC_STYLE_POSITIONAL = 1,    /* %s */
    NC_STYLE_NAMED = 2          /* %(name)s */
};

typedef struct nc_sql {
    char *sql;          /* rewritten, NUL-terminated, malloc'd */
    size_t len;         /* strlen(sql) */
    int style;          /* enum nc_param_style */
    int nslots;         /* distinct parameters: $1..$nslots */
    char **names;       /* NAMED only: names[i] is bound to slot i+1 (malloc'd); else NULL */
} nc_sql;

/* Rewrite sql[0..len) for dialect.  On success returns 0 and fills out (free it
 * with nc_sql_free).  On error returns -1, sets err (code NC_E_PARAMS, kind
 * NC_K_PROGRAMMING, message names the offset and the problem) and leaves out
 * zeroed.  A repeated %(name)s reuses the slot of its first occurrence. */
int nc_sql_translate(const char *sql, size_t len, int dialect, nc_sql *out, nc_error *err);
void nc_sql_free(nc_sql *s);

#endif
