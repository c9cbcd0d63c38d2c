/* nc_sqltext.c - questions asked about SQL text (see nc_sqltext.h), each a
 * walk over the lexer's tokens.
 *
 * The plain-read, ROLLBACK TO and column-type checks replace Python code that
 * read the text with regular expressions; they lex with NC_LEX_UNICODE_SPACE
 * so that "whitespace" is what Python's \s was, and they follow the Python
 * rules to the letter (quoted at each), so swapping one for the other
 * changes no answer beyond those nc_sqltext.h lists.
 */
#include "nc_sqltext.h"

#include <string.h>

/* ---- small helpers --------------------------------------------------------- */

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* The token's text equals word (lower case ASCII), ignoring ASCII case. */
static int tok_is(const char *sql, const nc_token *t, const char *word)
{
    size_t n = strlen(word);
    if (t->kind != NC_TOK_WORD || t->len != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)sql[t->off + i]) != word[i])
            return 0;
    return 1;
}

/* word[0..n) is one of the space-separated words of list. */
static int in_list(const char *list, const char *word, size_t n)
{
    for (const char *p = list; *p;) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        if ((size_t)(e - p) == n && memcmp(p, word, n) == 0)
            return 1;
        p = e;
    }
    return 0;
}

/* The next token that is not whitespace; *spaced says whether whitespace
 * came before it. */
static int next_solid(nc_lexer *lx, nc_token *t, int *spaced)
{
    *spaced = 0;
    while (nc_lex_next(lx, t) == NC_TOK_SPACE)
        *spaced = 1;
    return t->kind;
}

/* ---- blank ------------------------------------------------------------------- */

int nc_sql_is_blank(const char *sql, size_t len, int dialect)
{
    nc_lexer lx;
    nc_token t;
    nc_lex_init(&lx, sql, len, dialect, 0);
    while (nc_lex_next(&lx, &t) != NC_TOK_END) {
        if (t.kind == NC_TOK_SPACE || t.kind == NC_TOK_SEMI)
            continue;
        if (t.kind == NC_TOK_COMMENT && !((t.flags & NC_TOKF_UNTERMINATED) && lx.pg))
            continue;
        return 0;
    }
    return 1;
}

/* ---- plain read ---------------------------------------------------------------
 *
 * The Python rules (database_manager.py, is_plain_select and _strip_literals):
 *   1. refuse if any of  \ $ ` [ NUL  or  -- or / *  occurs anywhere;
 *   2. replace each '...' by " '' " and "..." by " qident " (an unterminated
 *      one refuses);
 *   3. strip; drop one trailing ';' and strip again; any other ';' refuses;
 *   4. (?i)(select|with)\b must match at the start;
 *   5. in the lower-cased text, no word [a-z_][a-z0-9_$]* may be one of
 *      into for insert update delete merge;
 *   6. no  \.\s*[a-z_][a-z0-9_$]*\s*\(  (a schema-qualified call);
 *   7. every  ([a-z_][a-z0-9_$]*)\s*\(  names a safe function or a keyword.
 * Rule 1 is a pass over the bytes, 2 and 3 come from the tokens, and 4-7 are
 * a byte-at-a-time automaton (struct plain) over the code between literals,
 * fed each literal as the text Python put in its place.  Words in 5-7 are
 * runs of ASCII [a-z0-9_] starting at their first letter or _ (findall
 * starts a word at 'i' in 1into); any other character separates, except the
 * two whose Python lower() is ASCII: U+212A KELVIN SIGN is a k, U+0130 an i
 * then a separator (its lower() is i + U+0307). */

/* Functions without side effects that a plain read may call (repeating such
 * a read changes nothing).  Anything else called -- nextval, set_config,
 * pg_advisory_lock, a user function -- makes the statement not "plain". */
static const char safe_functions[] =
    " count sum avg min max coalesce nullif greatest least lower upper length char_length character_length"
    " octet_length abs round floor ceil ceiling trunc sign mod power sqrt exp ln log random"
    " concat concat_ws substr substring trim ltrim rtrim btrim replace position strpos left right lpad rpad"
    " reverse split_part md5 to_char to_date to_number to_timestamp date_trunc date_part extract age now"
    " clock_timestamp statement_timestamp transaction_timestamp timezone make_date make_timestamp"
    " array_agg string_agg json_agg jsonb_agg json_object_agg jsonb_object_agg bool_and bool_or every"
    " json_build_object jsonb_build_object json_build_array jsonb_build_array to_json to_jsonb"
    " array_length array_to_string cardinality unnest generate_series"
    " row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value"
    " inet_server_port inet_server_addr pg_backend_pid pg_is_in_recovery current_database current_schema"
    " current_setting version pg_database_size pg_relation_size pg_total_relation_size format_type to_regclass"
    " typeof ifnull iif instr hex quote sqlite_version total group_concat printf format julianday"
    " date time datetime strftime unixepoch"
    " cast numeric decimal varchar char character timestamp interval bit ";

/* Keywords that may stand before a parenthesis. */
static const char paren_keywords[] =
    " select from where in exists any all some and or not on as join values over filter within by using"
    " lateral with case when then else is like ilike between union intersect except having group order"
    " limit offset distinct row array recursive materialized varying precision zone ";

/* Words that make a SELECT or WITH statement more than a plain read: SELECT
 * INTO, FOR UPDATE/SHARE (row locks), data-changing CTEs.  (Other statements
 * cannot follow a SELECT without a ';', which is refused.) */
static const char write_words[] = " into for insert update delete merge ";

#define PLAIN_WORD_MAX 32   /* longer than any listed word: kept truncated, matches none */

typedef struct plain {
    int refused;
    int in_run;         /* inside a run of [a-z0-9_] */
    int word_on;        /* the run's word has begun (its first [a-z_]) */
    int qualified;      /* the word began right after '.' and spaces */
    int after_dot;      /* a '.' then only spaces since */
    int call_pending;   /* a word ended, only spaces since: '(' makes it a call */
    size_t wlen;
    char word[PLAIN_WORD_MAX];
} plain;

static int is_run_byte(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static void plain_end_run(plain *p)
{
    if (!p->in_run)
        return;
    p->in_run = 0;
    if (!p->word_on)
        return;         /* digits only: no word, no call */
    if (p->wlen <= PLAIN_WORD_MAX && in_list(write_words, p->word, p->wlen))
        p->refused = 1;
    p->call_pending = 1;
}

/* One character of code: c is lower-case ASCII, ' ' for any whitespace, or
 * '#' for any other character that is not ASCII. */
static void plain_feed(plain *p, int c)
{
    if (is_run_byte(c)) {
        int letter = !(c >= '0' && c <= '9');
        if (!p->in_run) {
            p->in_run = 1;
            p->word_on = 0;
            p->wlen = 0;
            p->qualified = p->after_dot && letter;
            p->call_pending = 0;
        }
        p->after_dot = 0;
        if (letter)
            p->word_on = 1;
        if (p->word_on) {
            if (p->wlen < PLAIN_WORD_MAX)
                p->word[p->wlen] = (char)c;
            p->wlen++;
        }
        return;
    }
    plain_end_run(p);
    if (c == ' ')
        return;         /* \s* between the parts of rules 6 and 7 */
    if (c == '(' && p->call_pending &&
        (p->qualified || p->wlen > PLAIN_WORD_MAX ||
         !(in_list(safe_functions, p->word, p->wlen) || in_list(paren_keywords, p->word, p->wlen))))
        p->refused = 1;
    p->call_pending = 0;
    p->after_dot = c == '.';
}

static void plain_feed_str(plain *p, const char *s)
{
    for (; *s; s++)
        plain_feed(p, *s);
}

/* The bytes of a code token (a word, number, punctuation or ';'). */
static void plain_feed_code(plain *p, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            plain_feed(p, lower(c));
        } else if (c == 0xE2 && i + 2 < n && (unsigned char)s[i + 1] == 0x84 &&
                   (unsigned char)s[i + 2] == 0xAA) {
            plain_feed(p, 'k');             /* U+212A KELVIN SIGN */
            i += 2;
        } else if (c == 0xC4 && i + 1 < n && (unsigned char)s[i + 1] == 0xB0) {
            plain_feed(p, 'i');             /* U+0130, lower() is i + U+0307 */
            plain_feed(p, '#');
            i += 1;
        } else {
            plain_feed(p, '#');             /* any other: separates */
        }
    }
}

/* Rule 1, plus a quote inside %( ... ) (see nc_sqltext.h). */
static int plain_bytes_refused(const char *sql, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        switch (sql[i]) {
        case '\\':
        case '$':
        case '`':
        case '[':
        case '\0':
            return 1;
        case '-':
            if (i + 1 < len && sql[i + 1] == '-')
                return 1;
            break;
        case '/':
            if (i + 1 < len && sql[i + 1] == '*')
                return 1;
            break;
        default:
            break;
        }
    }
    return 0;
}

static int quote_in_param_name(const char *sql, size_t len, size_t pct)
{
    if (pct + 1 >= len || sql[pct + 1] != '(')
        return 0;
    for (size_t i = pct + 2; i < len && sql[i] != ')'; i++)
        if (sql[i] == '\'' || sql[i] == '"')
            return 1;
    return 0;
}

int nc_sql_is_plain_select(const char *sql, size_t len)
{
    if (!sql)
        return 0;
    if (plain_bytes_refused(sql, len))
        return 0;
    nc_lexer lx;
    nc_token t;
    plain p;
    memset(&p, 0, sizeof p);
    int spaced, semi = 0;
    nc_lex_init(&lx, sql, len, NC_DIALECT_PG, NC_LEX_UNICODE_SPACE);

    /* Rule 4: the first word is SELECT or WITH, all of it (a longer word has
     * a word character after the keyword, or $ or a non-ASCII one: then
     * Python's \b may or may not hold, and the answer is no). */
    next_solid(&lx, &t, &spaced);
    if (!tok_is(sql, &t, "select") && !tok_is(sql, &t, "with"))
        return 0;
    for (; t.kind != NC_TOK_END && !p.refused; nc_lex_next(&lx, &t)) {
        if (semi && t.kind != NC_TOK_SPACE)
            return 0;           /* rule 3: only whitespace after the ';' */
        switch (t.kind) {
        case NC_TOK_SPACE:
            plain_feed(&p, ' ');
            break;
        case NC_TOK_STRING:
            if (t.flags & (NC_TOKF_UNTERMINATED | NC_TOKF_DOLLAR))
                return 0;
            if (t.flags & NC_TOKF_ESCAPE)   /* E'...': Python saw a word E, then the string */
                plain_feed(&p, lower((unsigned char)sql[t.off]));
            plain_feed_str(&p, " '' ");
            break;
        case NC_TOK_QIDENT:
            if (t.flags & NC_TOKF_UNTERMINATED)
                return 0;
            plain_feed_str(&p, " qident ");
            break;
        case NC_TOK_SEMI:
            semi = 1;
            plain_feed(&p, ';');
            break;
        case NC_TOK_WORD:
        case NC_TOK_NUMBER:
        case NC_TOK_PUNCT:
            if (t.kind == NC_TOK_PUNCT && sql[t.off] == '%' && quote_in_param_name(sql, len, t.off))
                return 0;
            plain_feed_code(&p, sql + t.off, t.len);
            break;
        default:                /* comments and placeholders cannot occur here */
            return 0;
        }
    }
    plain_end_run(&p);
    return !p.refused;
}

/* ---- ROLLBACK TO ----------------------------------------------------------------
 * Python: (?is)^\s*rollback\s+(?:work\s+|transaction\s+)?to\b */

int nc_sql_is_rollback_to(const char *sql, size_t len)
{
    nc_lexer lx;
    nc_token t;
    int spaced;
    nc_lex_init(&lx, sql, len, NC_DIALECT_PG, NC_LEX_UNICODE_SPACE);
    next_solid(&lx, &t, &spaced);
    if (!tok_is(sql, &t, "rollback"))
        return 0;
    next_solid(&lx, &t, &spaced);
    if (!spaced)
        return 0;
    if (tok_is(sql, &t, "work") || tok_is(sql, &t, "transaction")) {
        next_solid(&lx, &t, &spaced);
        if (!spaced)
            return 0;
    }
    /* "to" and then \b: the word ends there, or goes on with a $ (not a
     * word character for Python).  A digit, letter or _ would continue it;
     * a non-ASCII byte may be a letter: no. */
    if (t.kind != NC_TOK_WORD || t.len < 2 || lower((unsigned char)sql[t.off]) != 't' ||
        lower((unsigned char)sql[t.off + 1]) != 'o')
        return 0;
    return t.len == 2 || sql[t.off + 2] == '$';
}

/* ---- the verb ----------------------------------------------------------------- */

static int verb_of(const char *sql, const nc_token *t)
{
    if (tok_is(sql, t, "insert") || tok_is(sql, t, "replace"))
        return NC_VERB_INSERT;
    if (tok_is(sql, t, "update"))
        return NC_VERB_UPDATE;
    if (tok_is(sql, t, "delete"))
        return NC_VERB_DELETE;
    return NC_VERB_OTHER;
}

int nc_sql_verb(const char *sql, size_t len, int dialect)
{
    nc_lexer lx;
    nc_token t;
    nc_lex_init(&lx, sql, len, dialect, 0);
    int depth = 0, with = 0;
    while (nc_lex_next(&lx, &t) != NC_TOK_END) {
        if (t.kind == NC_TOK_SPACE || t.kind == NC_TOK_COMMENT)
            continue;
        if (t.kind == NC_TOK_SEMI)
            break;
        if (t.kind == NC_TOK_PUNCT && sql[t.off] == '(') {
            depth++;
            continue;
        }
        if (t.kind == NC_TOK_PUNCT && sql[t.off] == ')') {
            if (depth > 0)
                depth--;
            continue;
        }
        if (!with) {
            if (tok_is(sql, &t, "with")) {
                with = 1;
                continue;
            }
            return verb_of(sql, &t);   /* the first word (after any '(') */
        }
        if (depth == 0 && t.kind == NC_TOK_WORD) {
            int v = verb_of(sql, &t);
            if (v != NC_VERB_OTHER || tok_is(sql, &t, "select") || tok_is(sql, &t, "values"))
                return v;
        }
    }
    return NC_VERB_OTHER;
}

/* ---- column types ----------------------------------------------------------------
 * Python (database_manager.py, _SQL_TYPE, IGNORECASE):
 *   ^\s* TW (\s+ TW)* (\s* \(\s*\d+\s*(,\s*\d+\s*)?\) )? (\s+ TW)* (\s*\[\s*\d*\s*\])*
 *   (\s+ (NOT\s+NULL | NULL | PRIMARY\s+KEY(\s+AUTOINCREMENT)? | UNIQUE
 *         | DEFAULT\s+([-+]?\d+(\.\d+)? | TRUE | FALSE | NULL | CURRENT_TIMESTAMP
 *                      | CURRENT_DATE | CURRENT_TIME)))* \s*$
 *   TW = [A-Za-z_][A-Za-z0-9_]* that is not one of the reserved words below.
 * Each part ends where a space, ( [ or the end follows (the pattern has no
 * other way on), so a part is exactly one token here. */

static const char reserved_words[] =
    " not null primary unique default key references check collate generated constraint as on"
    " using foreign autoincrement ";

static const char default_words[] = " true false null current_timestamp current_date current_time ";

#define TYPE_WORD_MAX 32    /* longer than any listed word */

/* The token, lower-cased into buf, if it is an ASCII word [A-Za-z_][A-Za-z0-9_]*
 * (truncated past TYPE_WORD_MAX: the length still counts); else 0. */
static size_t ascii_word(const char *sql, const nc_token *t, char *buf)
{
    if (t->kind != NC_TOK_WORD)
        return 0;
    for (size_t i = 0; i < t->len; i++) {
        int c = lower((unsigned char)sql[t->off + i]);
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
        if (i < TYPE_WORD_MAX)
            buf[i] = (char)c;
    }
    return t->len;
}

static int word_in(const char *list, const char *w, size_t n)
{
    return n <= TYPE_WORD_MAX && in_list(list, w, n);
}

static int digits_only(const char *sql, const nc_token *t)
{
    if (t->kind != NC_TOK_NUMBER)
        return 0;
    for (size_t i = 0; i < t->len; i++)
        if (sql[t->off + i] < '0' || sql[t->off + i] > '9')
            return 0;
    return 1;
}

static int is_punct(const char *sql, const nc_token *t, char c)
{
    return t->kind == NC_TOK_PUNCT && sql[t->off] == c;
}

/* \(\s*\d+\s*(,\s*\d+\s*)?\)  after the '(' token. */
static int type_args(nc_lexer *lx, nc_token *t)
{
    int spaced;
    next_solid(lx, t, &spaced);
    if (!digits_only(lx->sql, t))
        return 0;
    next_solid(lx, t, &spaced);
    if (is_punct(lx->sql, t, ',')) {
        next_solid(lx, t, &spaced);
        if (!digits_only(lx->sql, t))
            return 0;
        next_solid(lx, t, &spaced);
    }
    return is_punct(lx->sql, t, ')');
}

/* \[\s*\d*\s*\]  after the '[' token. */
static int type_brackets(nc_lexer *lx, nc_token *t)
{
    int spaced;
    next_solid(lx, t, &spaced);
    if (digits_only(lx->sql, t))
        next_solid(lx, t, &spaced);
    return is_punct(lx->sql, t, ']');
}

/* DEFAULT's value after the space: [-+]?\d+(\.\d+)? or one of default_words. */
static int default_value(nc_lexer *lx, nc_token *t)
{
    char w[TYPE_WORD_MAX];
    int sign = is_punct(lx->sql, t, '-') || is_punct(lx->sql, t, '+');
    if (sign)
        nc_lex_next(lx, t);     /* the digits must follow at once */
    if (t->kind == NC_TOK_NUMBER) {
        /* The lexer's number may carry an exponent; the pattern has none. */
        const char *s = lx->sql + t->off;
        size_t i = 0, n = t->len;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i < n && s[i] == '.') {
            i++;
            while (i < n && s[i] >= '0' && s[i] <= '9')
                i++;
        }
        return i == n;
    }
    size_t wl = sign ? 0 : ascii_word(lx->sql, t, w);
    return wl && word_in(default_words, w, wl);
}

int nc_sql_column_type(const char *text, size_t len, char *out, size_t *outlen)
{
    enum { WORDS, AFTER_ARGS, BRACKETS, CONSTRAINTS } phase = WORDS;
    nc_lexer lx;
    nc_token t;
    char w[TYPE_WORD_MAX];
    int spaced, after_pk = 0;
    nc_lex_init(&lx, text, len, NC_DIALECT_PG, NC_LEX_UNICODE_SPACE);

    /* The first type word. */
    next_solid(&lx, &t, &spaced);
    size_t wl = ascii_word(text, &t, w);
    if (!wl || word_in(reserved_words, w, wl))
        return 0;
    for (;;) {
        next_solid(&lx, &t, &spaced);
        if (t.kind == NC_TOK_END)
            break;
        if (is_punct(text, &t, '(')) {
            if (phase != WORDS || !type_args(&lx, &t))
                return 0;
            phase = AFTER_ARGS;
            continue;
        }
        if (is_punct(text, &t, '[')) {
            if (phase == CONSTRAINTS || !type_brackets(&lx, &t))
                return 0;
            phase = BRACKETS;
            continue;
        }
        /* Everything else is a word after a space. */
        wl = ascii_word(text, &t, w);
        if (!wl || !spaced)
            return 0;
        if (!word_in(reserved_words, w, wl)) {
            if (phase != WORDS && phase != AFTER_ARGS)
                return 0;
            continue;           /* another type word */
        }
        int pk = 0;
        if (wl == 13 && memcmp(w, "autoincrement", 13) == 0) {
            if (!after_pk)
                return 0;
        } else if (wl == 4 && memcmp(w, "null", 4) == 0) {
        } else if (wl == 6 && memcmp(w, "unique", 6) == 0) {
        } else if ((wl == 3 && memcmp(w, "not", 3) == 0) || (wl == 7 && memcmp(w, "primary", 7) == 0)) {
            const char *second = w[0] == 'n' ? "null" : "key";
            pk = w[0] == 'p';
            next_solid(&lx, &t, &spaced);
            if (!spaced || !tok_is(text, &t, second))
                return 0;
        } else if (wl == 7 && memcmp(w, "default", 7) == 0) {
            next_solid(&lx, &t, &spaced);
            if (!spaced || !default_value(&lx, &t))
                return 0;
        } else {
            return 0;           /* KEY, CHECK, REFERENCES, ...: not here */
        }
        after_pk = pk;
        phase = CONSTRAINTS;
    }

    if (out) {
        /* Each run of whitespace becomes one space, none at the ends. */
        size_t o = 0;
        int gap = 0;
        nc_lex_init(&lx, text, len, NC_DIALECT_PG, NC_LEX_UNICODE_SPACE);
        while (nc_lex_next(&lx, &t) != NC_TOK_END) {
            if (t.kind == NC_TOK_SPACE) {
                gap = o > 0;
                continue;
            }
            if (gap)
                out[o++] = ' ';
            gap = 0;
            memcpy(out + o, text + t.off, t.len);
            o += t.len;
        }
        out[o] = '\0';
        if (outlen)
            *outlen = o;
    }
    return 1;
}

/* ---- session state ----------------------------------------------------------- */

/* The next token that is neither whitespace nor a comment. */
static int next_code(nc_lexer *lx, nc_token *t)
{
    int k;
    while ((k = nc_lex_next(lx, t)) == NC_TOK_SPACE || k == NC_TOK_COMMENT)
        ;
    return k;
}

/* After CREATE: TEMP / TEMPORARY among the next few words (CREATE [OR
 * REPLACE] [GLOBAL | LOCAL] TEMP ...). */
static int creates_temp(nc_lexer *lx, const char *sql)
{
    nc_token t;
    for (int i = 0; i < 4 && next_code(lx, &t) == NC_TOK_WORD; i++) {
        if (tok_is(sql, &t, "temp") || tok_is(sql, &t, "temporary"))
            return 1;
        if (!tok_is(sql, &t, "or") && !tok_is(sql, &t, "replace") && !tok_is(sql, &t, "global")
            && !tok_is(sql, &t, "local"))
            return 0;
    }
    return 0;
}

int nc_sql_changes_session(const char *sql, size_t len, int dialect)
{
    nc_lexer lx;
    nc_token t;
    int pg = dialect != NC_DIALECT_SQLITE;
    int start = 1;              /* the next code token starts a statement */
    nc_lex_init(&lx, sql, len, pg ? NC_DIALECT_PG : NC_DIALECT_SQLITE, 0);
    for (;;) {
        int k = next_code(&lx, &t);
        if (k == NC_TOK_END)
            return 0;
        if (k == NC_TOK_SEMI) {
            start = 1;
            continue;
        }
        if (start) {
            start = 0;
            if (tok_is(sql, &t, "create") && creates_temp(&lx, sql))
                return 1;
            if (pg) {
                /* not LISTEN: a notification on an idle connection is read
                 * and dropped (nc_pg.c pg_looks_alive), harmless to the next
                 * borrower, and a listener may want it to stay */
                if (tok_is(sql, &t, "reset") || tok_is(sql, &t, "prepare"))
                    return 1;
                if (tok_is(sql, &t, "set")) {
                    /* SET LOCAL and SET TRANSACTION end with the transaction */
                    next_code(&lx, &t);
                    if (!tok_is(sql, &t, "local") && !tok_is(sql, &t, "transaction"))
                        return 1;
                }
            } else {
                if (tok_is(sql, &t, "attach"))
                    return 1;
                if (tok_is(sql, &t, "pragma")) {
                    /* PRAGMA name = value or PRAGMA name(value) writes;
                     * PRAGMA name only reads */
                    while ((k = next_code(&lx, &t)) != NC_TOK_END && k != NC_TOK_SEMI)
                        if (is_punct(sql, &t, '=') || is_punct(sql, &t, '('))
                            return 1;
                    if (k == NC_TOK_END)
                        return 0;
                    start = 1;
                }
            }
            continue;
        }
        /* SELECT set_config('x', 'v', false) anywhere in a statement */
        if (pg && tok_is(sql, &t, "set_config")) {
            if (next_code(&lx, &t) == NC_TOK_PUNCT && is_punct(sql, &t, '('))
                return 1;
        }
    }
}

/* ---- what a statement may leave behind (nc_outcome_unknown's input) ------- */

int nc_sql_effect(const char *sql, size_t len, int dialect)
{
    nc_lexer lx;
    nc_token t;
    int start = 1;              /* the next code token starts a statement */
    nc_lex_init(&lx, sql, len, dialect == NC_DIALECT_SQLITE ? NC_DIALECT_SQLITE : NC_DIALECT_PG, 0);
    for (;;) {
        int k = next_code(&lx, &t);
        if (k == NC_TOK_END)
            break;
        if (k == NC_TOK_SEMI) {
            start = 1;
            continue;
        }
        if (!start)
            continue;
        start = 0;
        /* any statement of the text, not just the first: in
         * "INSERT ...; COMMIT" sent inside a transaction the COMMIT may have
         * run before the connection went */
        if (tok_is(sql, &t, "commit") || tok_is(sql, &t, "end"))
            return NC_EFFECT_COMMIT;
        if (tok_is(sql, &t, "prepare")) {
            if (next_code(&lx, &t) == NC_TOK_SEMI) {
                start = 1;
                continue;
            }
            if (tok_is(sql, &t, "transaction"))
                return NC_EFFECT_COMMIT;
        }
    }
    return nc_sql_is_plain_select(sql, len) ? NC_EFFECT_NONE : NC_EFFECT_WRITE;
}
