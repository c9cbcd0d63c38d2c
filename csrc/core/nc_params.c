/* nc_params.c - rewriting psycopg-style placeholders for the server.
 *
 * One pass over sql[0..len): runs of plain text are copied to the output in
 * bulk, each placeholder is replaced by $n (PostgreSQL) or ?n (SQLite), %%
 * by %.  Quoted regions and comments are skipped over as a whole (they become
 * part of the run being copied), so a % inside them is left alone.
 *
 * Regions, PostgreSQL dialect (following the server's lexer, scan.l):
 *   '...'      standard string, '' is a quote; a backslash is an ordinary
 *              character (standard_conforming_strings = on, the default).
 *              U&'...', B'...', X'...', N'...' are the same thing here.
 *   E'...'     escape string: \x escapes any x (so \' does not end it), ''
 *              too.  Only when the E starts a word: in  name'...'  it doesn't.
 *   "..."      quoted identifier, "" is a quote.
 *   $tag$...$tag$  dollar quote; tag empty or [A-Za-z_\200-\377] followed by
 *              [A-Za-z0-9_\200-\377]* (non-ASCII bytes count as letters, as
 *              in the server).  $1 is a parameter, not a quote; a $ inside a
 *              word (a$b$) belongs to the identifier.  The body ends at the
 *              first occurrence of the exact opening delimiter.
 *   -- ...     line comment, up to \n or \r.
 *   / * ... * /  block comment; they nest.
 *
 * SQLite dialect (following SQLite's tokenizer rather than PostgreSQL's):
 *   '...', "..." and `...` with the doubled-quote escape, -- comments up to
 *   \n, and block comments that do NOT nest (the first * / ends them).  SQLite
 *   has no E'...' strings and no dollar quotes, so those are not recognised
 *   (an E is a letter, a $ an ordinary character).  [bracketed] identifiers
 *   are not recognised either (kept simple; a % inside them is rare).
 *
 * An unterminated region runs to the end of the input and is copied as is;
 * the server reports the syntax error.
 *
 * Errors beyond those listed in nc_params.h (all NC_E_PARAMS, programming):
 *   - a NUL byte anywhere in the query: both libpq and sqlite3_prepare stop
 *     at a NUL, so the statement run would silently be a truncated one;
 *     rejecting it also keeps out->len == strlen(out->sql).
 *   - a placeholder directly followed by a digit (%s1): the output $11 would
 *     silently name another parameter.
 *   - more than INT_MAX placeholders.
 * Out of memory and API misuse (NULL out, unknown dialect, NULL sql with
 * len > 0) are NC_E_INTERNAL / NC_K_INTERNAL.
 *
 * Error messages only ever contain printable ASCII (bytes from the query are
 * shown as \xNN), so they are valid UTF-8 whatever the query holds.
 */
#include "nc_params.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- character classes -------------------------------------------------- */

static int is_alpha_or_high(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Characters that may start / continue an identifier (keyword) in PostgreSQL. */
static int is_ident_start(unsigned char c)
{
    return is_alpha_or_high(c);
}

static int is_ident_cont(unsigned char c)
{
    return is_alpha_or_high(c) || is_digit(c) || c == '$';
}

/* Characters of a dollar-quote tag after the first (no $). */
static int is_dolq_cont(unsigned char c)
{
    return is_alpha_or_high(c) || is_digit(c);
}

/* ---- output buffer ------------------------------------------------------ */

typedef struct outbuf {
    char *buf;
    size_t len;
    size_t cap;
} outbuf;

/* Make room for extra more bytes plus the terminating NUL.  -1 on OOM. */
static int ob_reserve(outbuf *o, size_t extra)
{
    if (o->buf && o->cap - o->len > extra)
        return 0;
    if (extra > SIZE_MAX - o->len - 1)
        return -1;
    size_t need = o->len + extra + 1;
    size_t ncap = o->cap ? o->cap : need;   /* the first request is sized by the caller */
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) {
            ncap = need;
            break;
        }
        ncap *= 2;
    }
    char *nb = realloc(o->buf, ncap);
    if (!nb)
        return -1;
    o->buf = nb;
    o->cap = ncap;
    return 0;
}

static int ob_append(outbuf *o, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (ob_reserve(o, n) < 0)
        return -1;
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

/* Append marker followed by the decimal slot number. */
static int ob_append_slot(outbuf *o, char marker, int slot)
{
    char tmp[16];
    size_t n = sizeof tmp;
    unsigned v = (unsigned)slot;
    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    tmp[--n] = marker;
    return ob_append(o, tmp + n, sizeof tmp - n);
}

/* ---- names: a small open-addressing hash table keyed by bytes of sql ---- */

typedef struct name_ent {
    size_t off;         /* name is sql[off .. off+len) */
    size_t len;
    size_t hash;
    int slot;           /* 1-based; 0 = empty entry */
} name_ent;

typedef struct names_t {
    name_ent *tab;
    size_t cap;         /* power of two, or 0 */
    size_t used;
    char **names;       /* names[slot-1] */
    size_t names_cap;
} names_t;

static size_t name_hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;       /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return (size_t)(h ^ (h >> 29));
}

static int names_grow_table(names_t *nt)
{
    size_t ncap = nt->cap ? nt->cap * 2 : 16;
    if (ncap > SIZE_MAX / sizeof(name_ent))
        return -1;
    name_ent *nt2 = malloc(ncap * sizeof(name_ent));
    if (!nt2)
        return -1;
    for (size_t i = 0; i < ncap; i++)
        nt2[i].slot = 0;
    for (size_t i = 0; i < nt->cap; i++) {
        if (!nt->tab[i].slot)
            continue;
        size_t j = nt->tab[i].hash & (ncap - 1);
        while (nt2[j].slot)
            j = (j + 1) & (ncap - 1);
        nt2[j] = nt->tab[i];
    }
    free(nt->tab);
    nt->tab = nt2;
    nt->cap = ncap;
    return 0;
}

/* The slot bound to name sql[off..off+len), adding it as slot *nslots+1 when
 * new.  Returns the slot, 0 on OOM. */
static int names_slot(names_t *nt, const char *sql, size_t off, size_t len, int *nslots)
{
    size_t h = name_hash(sql + off, len);
    if (nt->cap) {
        size_t j = h & (nt->cap - 1);
        while (nt->tab[j].slot) {
            const name_ent *e = &nt->tab[j];
            if (e->hash == h && e->len == len && memcmp(sql + e->off, sql + off, len) == 0)
                return e->slot;
            j = (j + 1) & (nt->cap - 1);
        }
    }
    /* New name.  Keep the load factor at most 1/2. */
    if ((nt->used + 1) * 2 > nt->cap && names_grow_table(nt) < 0)
        return 0;
    if ((size_t)*nslots >= nt->names_cap) {
        size_t ncap = nt->names_cap ? nt->names_cap * 2 : 8;
        if (ncap > SIZE_MAX / sizeof(char *))
            return 0;
        char **nn = realloc(nt->names, ncap * sizeof(char *));
        if (!nn)
            return 0;
        nt->names = nn;
        nt->names_cap = ncap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return 0;
    memcpy(copy, sql + off, len);
    copy[len] = '\0';
    int slot = ++*nslots;
    nt->names[slot - 1] = copy;
    size_t j = h & (nt->cap - 1);
    while (nt->tab[j].slot)
        j = (j + 1) & (nt->cap - 1);
    nt->tab[j].off = off;
    nt->tab[j].len = len;
    nt->tab[j].hash = h;
    nt->tab[j].slot = slot;
    nt->used++;
    return slot;
}

static void names_free(names_t *nt, int nslots)
{
    if (nt->names) {
        for (int i = 0; i < nslots; i++)
            free(nt->names[i]);
        free(nt->names);
    }
    free(nt->tab);
    nt->names = NULL;
    nt->tab = NULL;
}

/* ---- skipping quoted regions and comments -------------------------------
 * Each takes the index just after the opening delimiter and returns the index
 * just after the closing one, or len when the region is unterminated. */

/* '...', "..." or `...` with the doubled-quote escape. */
static size_t skip_quoted(const char *s, size_t len, size_t i, char q)
{
    while (i < len) {
        const char *p = memchr(s + i, q, len - i);
        if (!p)
            return len;
        size_t j = (size_t)(p - s) + 1;
        if (j < len && s[j] == q) {
            i = j + 1;      /* doubled quote: part of the text */
            continue;
        }
        return j;
    }
    return len;
}

/* E'...': backslash escapes the next byte, '' is a quote too. */
static size_t skip_estring(const char *s, size_t len, size_t i)
{
    while (i < len) {
        char c = s[i];
        if (c == '\\') {
            i += 2;
            continue;
        }
        if (c == '\'') {
            if (i + 1 < len && s[i + 1] == '\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i++;
    }
    return len;
}

/* -- comment: up to (not including) the end of line. */
static size_t skip_line_comment(const char *s, size_t len, size_t i, int cr_too)
{
    for (; i < len; i++)
        if (s[i] == '\n' || (cr_too && s[i] == '\r'))
            return i;
    return len;
}

/* Block comment; nested ones counted when nest. */
static size_t skip_block_comment(const char *s, size_t len, size_t i, int nest)
{
    size_t depth = 1;
    while (i + 1 < len) {
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
    return len;
}

/* If a dollar-quote delimiter $tag$ starts at s[i] (s[i] == '$'), return its
 * length, else 0. */
static size_t dollar_delim_len(const char *s, size_t len, size_t i)
{
    size_t j = i + 1;
    if (j < len && is_ident_start((unsigned char)s[j])) {
        j++;
        while (j < len && is_dolq_cont((unsigned char)s[j]))
            j++;
    }
    if (j < len && s[j] == '$')
        return j - i + 1;
    return 0;
}

/* The body of a dollar quote whose delimiter is s[d .. d+dlen), starting at
 * i: ends after the first occurrence of the same delimiter.  Linear: the tag
 * holds no $, so a comparison from one $ never reads past the next $. */
static size_t skip_dollar_body(const char *s, size_t len, size_t i, size_t d, size_t dlen)
{
    while (i < len) {
        const char *p = memchr(s + i, '$', len - i);
        if (!p)
            return len;
        size_t k = (size_t)(p - s);
        if (len - k < dlen)
            return len;
        size_t m = 1;
        while (m < dlen && s[k + m] == s[d + m])
            m++;
        if (m == dlen)
            return k + dlen;
        i = k + 1;
    }
    return len;
}

/* ---- errors -------------------------------------------------------------- */

/* Printable-ASCII rendering of up to 32 bytes of p[0..n), for messages. */
static void preview(char *dst, size_t dstsize, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0, shown = n > 32 ? 32 : n;
    for (size_t i = 0; i < shown && o + 5 < dstsize; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            dst[o++] = (char)c;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    if (shown < n && o + 4 < dstsize) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

#define PERR(...) nc_error_set(err, NC_E_PARAMS, NC_K_PROGRAMMING, __VA_ARGS__)

static int is_type_char(char c)
{
    return c == 's' || c == 'b' || c == 't';
}

/* ---- the rewrite ----------------------------------------------------------- */

int nc_sql_translate(const char *sql, size_t len, int dialect, nc_sql *out, nc_error *err)
{
    if (!out) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "nc_sql_translate: out is NULL");
        return -1;
    }
    memset(out, 0, sizeof *out);
    if (dialect != NC_DIALECT_PG && dialect != NC_DIALECT_SQLITE) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "nc_sql_translate: unknown SQL dialect %d",
                     dialect);
        return -1;
    }
    if (!sql && len) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "nc_sql_translate: sql is NULL");
        return -1;
    }
    if (len) {
        const char *nul = memchr(sql, '\0', len);
        if (nul) {
            PERR("query contains a NUL byte at offset %zu", (size_t)(nul - sql));
            return -1;
        }
    }

    const int pg = dialect == NC_DIALECT_PG;
    const char marker = pg ? '$' : '?';
    outbuf ob = {NULL, 0, 0};
    names_t nt;
    memset(&nt, 0, sizeof nt);
    int style = NC_STYLE_NONE, nslots = 0;
    int in_word = 0;        /* previous byte continues an identifier (PG lexer view) */
    size_t i = 0, run = 0;  /* sql[run..i) is plain text not yet copied */
    char pv[160];

    /* Room for the input plus some growth of $n over %s; grows as needed. */
    size_t want = len + len / 8 + 16;
    if (want < len)
        want = len;
    if (ob_reserve(&ob, want) < 0)
        goto oom;

    while (i < len) {
        unsigned char c = (unsigned char)sql[i];
        switch (c) {
        case '\'':
            i = skip_quoted(sql, len, i + 1, '\'');
            in_word = 0;
            continue;
        case '"':
            i = skip_quoted(sql, len, i + 1, '"');
            in_word = 0;
            continue;
        case '`':
            if (!pg) {
                i = skip_quoted(sql, len, i + 1, '`');
                in_word = 0;
                continue;
            }
            break;
        case '-':
            if (i + 1 < len && sql[i + 1] == '-') {
                i = skip_line_comment(sql, len, i + 2, pg);
                in_word = 0;
                continue;
            }
            break;
        case '/':
            if (i + 1 < len && sql[i + 1] == '*') {
                i = skip_block_comment(sql, len, i + 2, pg);
                in_word = 0;
                continue;
            }
            break;
        case 'E':
        case 'e':
            if (pg && !in_word && i + 1 < len && sql[i + 1] == '\'') {
                i = skip_estring(sql, len, i + 2);
                in_word = 0;
                continue;
            }
            break;
        case '$':
            if (pg && !in_word) {
                size_t dlen = dollar_delim_len(sql, len, i);
                if (dlen) {
                    i = skip_dollar_body(sql, len, i + dlen, i, dlen);
                    in_word = 0;
                    continue;
                }
            }
            break;
        case '%': {
            size_t at = i, end;
            int slot;
            if (i + 1 >= len) {
                PERR("incomplete placeholder: lone '%%' at the end of the query (offset %zu); "
                     "use %%%% for a literal %%", at);
                goto fail;
            }
            char n = sql[i + 1];
            if (n == '%') {
                if (ob_append(&ob, sql + run, i - run) < 0 || ob_append(&ob, "%", 1) < 0)
                    goto oom;
                i += 2;
                run = i;
                in_word = 0;
                continue;
            }
            if (is_type_char(n)) {
                if (style == NC_STYLE_NAMED) {
                    PERR("query mixes %%s and %%(name)s placeholders (%%%c at offset %zu)", n, at);
                    goto fail;
                }
                if (nslots == INT_MAX) {
                    PERR("too many placeholders (more than %d) at offset %zu", INT_MAX, at);
                    goto fail;
                }
                style = NC_STYLE_POSITIONAL;
                slot = ++nslots;
                end = i + 2;
            } else if (n == '(') {
                size_t name_off = i + 2;
                const char *close = name_off < len ? memchr(sql + name_off, ')', len - name_off)
                                                   : NULL;
                if (!close) {
                    PERR("unterminated placeholder '%%(' at offset %zu: no closing ')'", at);
                    goto fail;
                }
                size_t name_len = (size_t)(close - sql) - name_off;
                if (name_len == 0) {
                    PERR("empty placeholder name '%%()' at offset %zu", at);
                    goto fail;
                }
                end = (size_t)(close - sql) + 2;
                if (end > len || !is_type_char(sql[end - 1])) {
                    preview(pv, sizeof pv, sql + name_off, name_len);
                    PERR("placeholder '%%(%s)' at offset %zu is not followed by s, b or t", pv, at);
                    goto fail;
                }
                if (style == NC_STYLE_POSITIONAL) {
                    PERR("query mixes %%s and %%(name)s placeholders (%%(...)%c at offset %zu)",
                         sql[end - 1], at);
                    goto fail;
                }
                if (nslots == INT_MAX) {
                    PERR("too many placeholders (more than %d) at offset %zu", INT_MAX, at);
                    goto fail;
                }
                style = NC_STYLE_NAMED;
                slot = names_slot(&nt, sql, name_off, name_len, &nslots);
                if (!slot)
                    goto oom;
            } else {
                unsigned char u = (unsigned char)n;
                if (u >= 0x20 && u < 0x7f)
                    PERR("unsupported placeholder '%%%c' at offset %zu "
                         "(use %%s, %%(name)s or %%%% for a literal %%)", n, at);
                else
                    PERR("unsupported placeholder: '%%' followed by byte 0x%02X at offset %zu "
                         "(use %%s, %%(name)s or %%%% for a literal %%)", u, at);
                goto fail;
            }
            if (end < len && is_digit((unsigned char)sql[end])) {
                PERR("placeholder at offset %zu is directly followed by a digit, which would "
                     "run into the parameter number; put a space between them", at);
                goto fail;
            }
            if (ob_append(&ob, sql + run, i - run) < 0 || ob_append_slot(&ob, marker, slot) < 0)
                goto oom;
            i = end;
            run = i;
            in_word = 0;
            continue;
        }
        default:
            break;
        }
        /* An ordinary byte of SQL text. */
        in_word = in_word ? is_ident_cont(c) : is_ident_start(c);
        i++;
    }
    if (ob_append(&ob, sql + run, len - run) < 0)
        goto oom;
    ob.buf[ob.len] = '\0';

    out->sql = ob.buf;
    out->len = ob.len;
    out->style = style;
    out->nslots = nslots;
    if (style == NC_STYLE_NAMED) {
        out->names = nt.names;
        nt.names = NULL;
    }
    names_free(&nt, nslots);
    return 0;

oom:
    nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL,
                 "out of memory while rewriting the query placeholders");
fail:
    free(ob.buf);
    names_free(&nt, nslots);
    memset(out, 0, sizeof *out);
    return -1;
}

void nc_sql_free(nc_sql *s)
{
    if (!s)
        return;
    if (s->names) {
        for (int i = 0; i < s->nslots; i++)
            free(s->names[i]);
        free(s->names);
    }
    free(s->sql);
    memset(s, 0, sizeof *s);
}
