/* nc_params.c - rewriting psycopg-style placeholders for the server.
 *
 * One pass of the lexer (nc_lexer.h, which also holds the region rules:
 * strings, quoted identifiers, dollar quotes, comments, per dialect) with
 * NC_LEX_PARAMS: every token but a % one is plain text, copied to the output
 * in bulk; each placeholder is replaced by $n (PostgreSQL) or ?n (SQLite),
 * %% by %.  A % inside a quoted region or comment is part of that token, so
 * it is never a placeholder, but %% there is made % too (psycopg's rule, see
 * ob_append_text); a lone % there stays.
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

/* Append p[0..n), each %% in it made %: the text between placeholders,
 * where a % can only be inside a quoted region or a comment (outside them
 * every % is a placeholder token).  psycopg's rule, which SQLAlchemy relies
 * on: it doubles every % of the SQL it sends with parameters, literals
 * included.  A lone % there stays as it is. */
static int ob_append_text(outbuf *o, const char *p, size_t n)
{
    const char *pct;
    while (n && (pct = memchr(p, '%', n)) != NULL) {
        size_t k = (size_t)(pct - p) + 1;   /* up to and including this % */
        if (ob_append(o, p, k) < 0)
            return -1;
        if (k < n && p[k] == '%')
            k++;                            /* its double: dropped */
        p += k;
        n -= k;
    }
    return ob_append(o, p, n);
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

/* A byte of a word or number, or a $: a $n right after it would be read
 * as part of it by PostgreSQL's lexer. */
static int needs_space_before(char c)
{
    unsigned char u = (unsigned char)c;
    return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || u == '_' || u == '$'
           || u >= 0x80;
}

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

    const char marker = dialect == NC_DIALECT_PG ? '$' : '?';
    outbuf ob = {NULL, 0, 0};
    names_t nt;
    memset(&nt, 0, sizeof nt);
    int style = NC_STYLE_NONE, nslots = 0;
    size_t run = 0;         /* sql[run..) is plain text not yet copied */
    char pv[160];
    nc_lexer lx;
    nc_token t;

    /* Room for the input plus some growth of $n over %s; grows as needed. */
    size_t want = len + len / 8 + 16;
    if (want < len)
        want = len;
    if (ob_reserve(&ob, want) < 0)
        goto oom;

    nc_lex_init(&lx, sql, len, dialect, NC_LEX_PARAMS);
    while (nc_lex_find(&lx, &t, NC_TOKS(NC_TOK_PARAM)) != NC_TOK_END) {
        const size_t at = t.off;
        size_t end;
        int slot;
        if (t.len == 1) {
            PERR("incomplete placeholder: lone '%%' at the end of the query (offset %zu); "
                 "use %%%% for a literal %%", at);
            goto fail;
        }
        char n = sql[at + 1];
        if (n == '%') {
            if (ob_append_text(&ob, sql + run, at - run) < 0 || ob_append(&ob, "%", 1) < 0)
                goto oom;
            run = at + 2;
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
            end = at + 2;
        } else if (n == '(') {
            if (t.flags & NC_TOKF_UNTERMINATED) {
                PERR("unterminated placeholder '%%(' at offset %zu: no closing ')'", at);
                goto fail;
            }
            /* The token is %( name ) and the byte after, if any: the first
             * ')' is inside it (names are short, a loop beats a call). */
            size_t name_off = at + 2, close = name_off;
            while (sql[close] != ')')
                close++;
            size_t name_len = close - name_off;
            if (name_len == 0) {
                PERR("empty placeholder name '%%()' at offset %zu", at);
                goto fail;
            }
            end = close + 2;
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
        if (end < len && sql[end] >= '0' && sql[end] <= '9') {
            PERR("placeholder at offset %zu is directly followed by a digit, which would "
                 "run into the parameter number; put a space between them", at);
            goto fail;
        }
        if (ob_append_text(&ob, sql + run, at - run) < 0)
            goto oom;
        /* PostgreSQL reads a $ and digits that touch a word as part of it
         * (x%s would become the identifier x$1, a%s in $a%s$ would open the
         * dollar quote $a$, $%s the quote $$): a space keeps the placeholder
         * a token of its own.  Only after text of the query: a placeholder
         * after a placeholder ($1$2) reads right as it is. */
        if (marker == '$' && run < at && needs_space_before(sql[at - 1]) && ob_append(&ob, " ", 1) < 0)
            goto oom;
        if (ob_append_slot(&ob, marker, slot) < 0)
            goto oom;
        run = end;
    }
    if (ob_append_text(&ob, sql + run, len - run) < 0)
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
