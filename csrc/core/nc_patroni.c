/* nc_patroni.c - the Patroni REST client (see nc_patroni.h): a URL, one HTTP/1.1
 * GET with "Connection: close" over a non-blocking socket under a deadline, the
 * response (Content-Length, chunked, or read to the close), and a small JSON reader
 * that keeps the fields of /cluster's members and skips everything else.
 *
 * Why our own: the monitor's threads must read the topology without Python, and
 * the answer is small and of one known shape; a general HTTP or JSON library would
 * be a dependency for two hundred lines.  The JSON reader is strict where it reads
 * (a malformed document is an error, not a guess) and bounded everywhere (nesting
 * depth, field sizes, member count).
 */
#include "nc_patroni.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "nc_stop.h"
#include "nc_time.h"

#define JSON_MAX_DEPTH 32

/* ---- members ------------------------------------------------------------ */

int nc_patroni_is_leader(const nc_patroni_member *m)
{
    return !strcmp(m->role, "leader") || !strcmp(m->role, "standby_leader") || !strcmp(m->role, "master");
}

long long nc_patroni_member_lag(const nc_patroni_member *m)
{
    if (m->replay_lag != NC_PATRONI_LAG_UNKNOWN)
        return m->replay_lag;
    return m->lag;
}

/* ---- URL ----------------------------------------------------------------- */

int nc_patroni_parse_url(const char *url, char *host, size_t hostcap, int *port, nc_error *err)
{
    const char *p = url;
    if (!strncmp(p, "http://", 7))
        p += 7;
    else if (!strncmp(p, "https://", 8)) {
        nc_error_set(err, NC_E_PATRONI_URL, NC_K_NONE, "Patroni URL '%.200s': https is not supported "
                     "(use the REST API over http on a trusted network)", url);
        return -1;
    } else if (strstr(p, "://")) {
        nc_error_set(err, NC_E_PATRONI_URL, NC_K_NONE, "Patroni URL '%.200s': only http:// is supported", url);
        return -1;
    }
    const char *hs = p, *he;
    if (*p == '[') {                        /* [::1]:8008 */
        hs = p + 1;
        he = strchr(hs, ']');
        if (!he) {
            nc_error_set(err, NC_E_PATRONI_URL, NC_K_NONE, "Patroni URL '%.200s': unclosed '['", url);
            return -1;
        }
        p = he + 1;
    } else {
        he = p + strcspn(p, ":/?#");
        p = he;
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0 || hl >= hostcap) {
        nc_error_set(err, NC_E_PATRONI_URL, NC_K_NONE, "Patroni URL '%.200s': %s", url,
                     hl == 0 ? "no host" : "host too long");
        return -1;
    }
    for (size_t i = 0; i < hl; i++) {
        if ((unsigned char)hs[i] <= ' ' || hs[i] == 0x7f || hs[i] == '@' || hs[i] == '[' || hs[i] == ']') {
            nc_error_set(err, NC_E_PATRONI_URL, NC_K_NONE, "Patroni URL '%.200s': bad character in the host", url);
            return -1;
        }
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';
    *port = 8008;                           /* Patroni's default REST port */
    if (*p == ':') {
        p++;
        long v = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 6) {
            v = v * 10 + (*p - '0');
            p++;
            digits++;
        }
        if (digits == 0 || v < 1 || v > 65535 || (*p && *p != '/' && *p != '?' && *p != '#')) {
            nc_error_set(err, NC_E_PATRONI_URL, NC_K_NONE, "Patroni URL '%.200s': bad port", url);
            return -1;
        }
        *port = (int)v;
    } else if (*p && *p != '/' && *p != '?' && *p != '#') {
        nc_error_set(err, NC_E_PATRONI_URL, NC_K_NONE, "Patroni URL '%.200s': bad host", url);
        return -1;
    }
    return 0;
}

/* ---- HTTP response ------------------------------------------------------ */

static int bad(nc_error *err, const char *what)
{
    nc_error_set(err, NC_E_PATRONI_ANSWER, NC_K_NONE, "%s", what);
    return -1;
}

/* A header's value when line (without CRLF, length n) is "name: value". */
static const char *header_value(const char *line, size_t n, const char *name, size_t *vlen)
{
    size_t k = strlen(name);
    if (n <= k || line[k] != ':' || strncasecmp(line, name, k))
        return NULL;
    const char *v = line + k + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *vlen = (size_t)(end - v);
    return v;
}

static int parse_size(const char *s, size_t n, int base, size_t *out)
{
    size_t v = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int d;
        char c = s[i];
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (base == 16 && c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (base == 16 && c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        if (v > (NC_PATRONI_MAX_BODY * (size_t)2) / (size_t)base)
            return -1;                      /* far beyond any answer we accept */
        v = v * (size_t)base + (size_t)d;
    }
    *out = v;
    return 0;
}

static const char *find_crlf(const char *p, const char *end)
{
    for (; p + 1 < end; p++)
        if (p[0] == '\r' && p[1] == '\n')
            return p;
    return NULL;
}

static int dechunk(const char *p, const char *end, char **owned, size_t *outlen, nc_error *err)
{
    size_t cap = (size_t)(end - p) + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory reading a Patroni answer");
        return -1;
    }
    for (;;) {
        const char *eol = find_crlf(p, end);
        if (!eol) {
            free(buf);
            return bad(err, "Patroni answer: chunked body cut short");
        }
        size_t szlen = strcspn(p, ";\r");   /* chunk extensions are ignored */
        if (p + szlen > eol)
            szlen = (size_t)(eol - p);
        size_t sz;
        if (parse_size(p, szlen, 16, &sz) < 0) {
            free(buf);
            return bad(err, "Patroni answer: bad chunk size");
        }
        p = eol + 2;
        if (sz == 0)
            break;                          /* trailers, if any, are of no interest */
        if (sz > (size_t)(end - p) || (size_t)(end - p) - sz < 2 || p[sz] != '\r' || p[sz + 1] != '\n') {
            free(buf);
            return bad(err, "Patroni answer: chunk cut short");
        }
        memcpy(buf + n, p, sz);             /* n + sz <= end - start < cap */
        n += sz;
        p += sz + 2;
    }
    buf[n] = '\0';
    *owned = buf;
    *outlen = n;
    return 0;
}

int nc_patroni_parse_http(const char *buf, size_t len, int *status, const char **body, size_t *bodylen,
                          char **owned, nc_error *err)
{
    const char *end = buf + len, *p = buf;
    *owned = NULL;
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) || buf[8] != ' ')
        return bad(err, "Patroni answer is not HTTP/1.x");
    if (buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9' || buf[11] < '0' || buf[11] > '9')
        return bad(err, "Patroni answer: bad HTTP status");
    *status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    const char *eol = find_crlf(p, end);
    if (!eol)
        return bad(err, "Patroni answer: no end of the status line");
    p = eol + 2;
    int chunked = 0, have_len = 0;
    size_t clen = 0;
    for (;;) {
        eol = find_crlf(p, end);
        if (!eol)
            return bad(err, "Patroni answer: headers cut short");
        size_t n = (size_t)(eol - p), vl;
        const char *v;
        if (n == 0) {
            p = eol + 2;
            break;
        }
        if ((v = header_value(p, n, "Content-Length", &vl))) {
            if (parse_size(v, vl, 10, &clen) < 0)
                return bad(err, "Patroni answer: bad Content-Length");
            have_len = 1;
        } else if ((v = header_value(p, n, "Transfer-Encoding", &vl))) {
            chunked = vl >= 7 && !strncasecmp(v + vl - 7, "chunked", 7);
        }
        p = eol + 2;
    }
    if (chunked)
        return dechunk(p, end, owned, bodylen, err) < 0 ? -1 : (*body = *owned, 0);
    if (have_len) {
        if (clen > (size_t)(end - p))
            return bad(err, "Patroni answer: body shorter than its Content-Length");
        *body = p;
        *bodylen = clen;
        return 0;
    }
    *body = p;                              /* Connection: close: the body ends with the stream */
    *bodylen = (size_t)(end - p);
    return 0;
}

/* ---- JSON ---------------------------------------------------------------- */

typedef struct json {
    const char *start, *p, *end;
    nc_error *err;
} json;

static int jfail(json *j, const char *what)
{
    nc_error_set(j->err, NC_E_PATRONI_ANSWER, NC_K_NONE, "Patroni /cluster: %s at byte %ld", what,
                 (long)(j->p - j->start));
    return -1;
}

static void jws(json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int jpeek(json *j)
{
    jws(j);
    return j->p < j->end ? (unsigned char)*j->p : -1;
}

static int jexpect(json *j, char c)
{
    if (jpeek(j) != (unsigned char)c)
        return jfail(j, "unexpected character");
    j->p++;
    return 0;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Append UTF-8 of cp to out (n bytes used, cap includes the NUL); what does not fit
 * sets *cut and is dropped, so a cut string ends at a whole character. */
static void put_utf8(char *out, size_t cap, size_t *n, int *cut, unsigned cp)
{
    char b[4];
    size_t k;
    if (cp < 0x80) { b[0] = (char)cp; k = 1; }
    else if (cp < 0x800) { b[0] = (char)(0xC0 | (cp >> 6)); b[1] = (char)(0x80 | (cp & 0x3F)); k = 2; }
    else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12)); b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F)); k = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18)); b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); b[3] = (char)(0x80 | (cp & 0x3F)); k = 4;
    }
    if (!out)
        return;
    if (!*cut && *n + k < cap) {
        memcpy(out + *n, b, k);
        *n += k;
    } else {
        *cut = 1;
    }
}

/* A string into out (NUL-terminated, cut to cap-1 bytes at a character; out NULL: skipped).
 * *truncated set when it did not fit. */
static int jstring(json *j, char *out, size_t cap, int *truncated)
{
    size_t n = 0;
    int cut = 0;
    if (truncated)
        *truncated = 0;
    if (jexpect(j, '"') < 0)
        return -1;
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p++;
        unsigned cp;
        if (c == '"') {
            if (out) {
                out[n] = '\0';
                if (cut)
                    nc_utf8_fix_tail(out);   /* a raw multi-byte character cut */
            }
            if (truncated)
                *truncated = cut;
            return 0;
        }
        if (c < 0x20)
            return jfail(j, "control character in a string");
        if (c != '\\') {
            if (out && !cut && n + 1 < cap)
                out[n++] = (char)c;
            else
                cut = 1;
            continue;
        }
        if (j->p >= j->end)
            break;
        c = (unsigned char)*j->p++;
        switch (c) {
        case '"': case '\\': case '/': cp = c; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (j->end - j->p < 4 || hex4(j->p, &cp) < 0)
                return jfail(j, "bad \\u escape");
            j->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo;
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || hex4(j->p + 2, &lo) < 0
                    || lo < 0xDC00 || lo > 0xDFFF)
                    return jfail(j, "unpaired surrogate");
                j->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                return jfail(j, "unpaired surrogate");
            }
            if (cp == 0)
                return jfail(j, "NUL in a string");
            break;
        default:
            return jfail(j, "bad escape");
        }
        put_utf8(out, cap, &n, &cut, cp);
    }
    return jfail(j, "unterminated string");
}

static int jliteral(json *j, const char *word)
{
    size_t k = strlen(word);
    if ((size_t)(j->end - j->p) < k || memcmp(j->p, word, k))
        return jfail(j, "bad literal");
    j->p += k;
    return 0;
}

/* A number; *isint when it is an integer that fits in a long long (then in *v). */
static int jnumber(json *j, long long *v, int *isint)
{
    const char *s = j->p;
    int neg = 0, digits = 0, frac = 0;
    unsigned long long acc = 0;
    int overflow = 0;
    if (j->p < j->end && *j->p == '-') {
        neg = 1;
        j->p++;
    }
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        unsigned d = (unsigned)(*j->p - '0');
        if (acc > (ULLONG_MAX - d) / 10)
            overflow = 1;
        else
            acc = acc * 10 + d;
        j->p++;
        digits++;
    }
    if (digits == 0)
        return jfail(j, "bad number");
    if (j->p < j->end && *j->p == '.') {
        frac = 1;
        j->p++;
        int fd = 0;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
            j->p++;
            fd++;
        }
        if (!fd)
            return jfail(j, "bad number");
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        frac = 1;
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        int ed = 0;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
            j->p++;
            ed++;
        }
        if (!ed)
            return jfail(j, "bad number");
    }
    (void)s;
    *isint = !frac && !overflow && acc <= (unsigned long long)LLONG_MAX;
    if (*isint)
        *v = neg ? -(long long)acc : (long long)acc;
    return 0;
}

static int jskip(json *j, int depth);

static int jskip_container(json *j, char open, char close, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return jfail(j, "nested too deeply");
    j->p++;                                 /* the opening bracket */
    if (jpeek(j) == (unsigned char)close) {
        j->p++;
        return 0;
    }
    for (;;) {
        if (open == '{') {
            if (jstring(j, NULL, 0, NULL) < 0 || jexpect(j, ':') < 0)
                return -1;
        }
        if (jskip(j, depth + 1) < 0)
            return -1;
        int c = jpeek(j);
        if (c == ',') {
            j->p++;
            continue;
        }
        if (c == (unsigned char)close) {
            j->p++;
            return 0;
        }
        return jfail(j, "expected ',' or a closing bracket");
    }
}

/* Any value, read and dropped. */
static int jskip(json *j, int depth)
{
    long long v;
    int isint;
    switch (jpeek(j)) {
    case '{': return jskip_container(j, '{', '}', depth);
    case '[': return jskip_container(j, '[', ']', depth);
    case '"': return jstring(j, NULL, 0, NULL);
    case 't': return jliteral(j, "true");
    case 'f': return jliteral(j, "false");
    case 'n': return jliteral(j, "null");
    case -1: return jfail(j, "document cut short");
    default: return jnumber(j, &v, &isint);
    }
}

/* A field that is a string (anything else: skipped, field left as it was). */
static int jfield_string(json *j, char *out, size_t cap)
{
    if (jpeek(j) != '"')
        return jskip(j, 1);
    return jstring(j, out, cap, NULL);
}

/* A field that is an integer (a string like "unknown", null or a fraction: *v = dflt). */
static int jfield_int(json *j, long long *v, long long dflt)
{
    int c = jpeek(j);
    if (c == '-' || (c >= '0' && c <= '9')) {
        int isint;
        long long x;
        if (jnumber(j, &x, &isint) < 0)
            return -1;
        *v = isint ? x : dflt;
        return 0;
    }
    *v = dflt;
    return jskip(j, 1);
}

static int jmember(json *j, nc_patroni_member *m)
{
    memset(m, 0, sizeof *m);
    m->timeline = -1;
    m->replay_lag = NC_PATRONI_LAG_UNKNOWN;
    m->lag = NC_PATRONI_LAG_UNKNOWN;
    if (jpeek(j) != '{')
        return jfail(j, "a member is not an object");
    j->p++;
    if (jpeek(j) == '}') {
        j->p++;
        return 0;
    }
    for (;;) {
        char key[32];
        int trunc;
        if (jstring(j, key, sizeof key, &trunc) < 0 || jexpect(j, ':') < 0)
            return -1;
        int rc;
        long long v = 0;
        if (trunc)
            rc = jskip(j, 1);
        else if (!strcmp(key, "name"))
            rc = jfield_string(j, m->name, sizeof m->name);
        else if (!strcmp(key, "role"))
            rc = jfield_string(j, m->role, sizeof m->role);
        else if (!strcmp(key, "state"))
            rc = jfield_string(j, m->state, sizeof m->state);
        else if (!strcmp(key, "host"))
            rc = jfield_string(j, m->host, sizeof m->host);
        else if (!strcmp(key, "api_url"))
            rc = jfield_string(j, m->api_url, sizeof m->api_url);
        else if (!strcmp(key, "port")) {
            rc = jfield_int(j, &v, 0);
            m->port = (v >= 1 && v <= 65535) ? (int)v : 0;
        } else if (!strcmp(key, "timeline"))
            rc = jfield_int(j, &m->timeline, -1);
        else if (!strcmp(key, "replay_lag"))
            rc = jfield_int(j, &m->replay_lag, NC_PATRONI_LAG_UNKNOWN);
        else if (!strcmp(key, "lag"))
            rc = jfield_int(j, &m->lag, NC_PATRONI_LAG_UNKNOWN);
        else
            rc = jskip(j, 1);
        if (rc < 0)
            return -1;
        if (m->replay_lag < 0)
            m->replay_lag = NC_PATRONI_LAG_UNKNOWN;
        if (m->lag < 0)
            m->lag = NC_PATRONI_LAG_UNKNOWN;
        int c = jpeek(j);
        if (c == ',') {
            j->p++;
            continue;
        }
        if (c == '}') {
            j->p++;
            return 0;
        }
        return jfail(j, "expected ',' or '}' in a member");
    }
}

static int jmembers(json *j, nc_patroni_cluster *out)
{
    if (jpeek(j) != '[')
        return jfail(j, "\"members\" is not an array");
    j->p++;
    if (jpeek(j) == ']') {
        j->p++;
        return 0;
    }
    for (;;) {
        if (out->n >= NC_PATRONI_MAX_MEMBERS)
            return jfail(j, "more members than we keep");
        if (jmember(j, &out->members[out->n]) < 0)
            return -1;
        out->n++;
        int c = jpeek(j);
        if (c == ',') {
            j->p++;
            continue;
        }
        if (c == ']') {
            j->p++;
            return 0;
        }
        return jfail(j, "expected ',' or ']' in members");
    }
}

int nc_patroni_parse_cluster(const char *text, size_t len, nc_patroni_cluster *out, nc_error *err)
{
    json j = {text, text, text + len, err};
    out->n = 0;
    out->scope[0] = '\0';
    int seen_members = 0;
    if (jpeek(&j) != '{')
        return jfail(&j, "not a JSON object");
    j.p++;
    if (jpeek(&j) != '}') {
        for (;;) {
            char key[32];
            int trunc, rc;
            if (jstring(&j, key, sizeof key, &trunc) < 0 || jexpect(&j, ':') < 0)
                return -1;
            if (!trunc && !strcmp(key, "members")) {
                if (seen_members)
                    return jfail(&j, "\"members\" given twice");
                seen_members = 1;
                rc = jmembers(&j, out);
            } else if (!trunc && !strcmp(key, "scope")) {
                rc = jfield_string(&j, out->scope, sizeof out->scope);
            } else {
                rc = jskip(&j, 1);
            }
            if (rc < 0)
                return -1;
            int c = jpeek(&j);
            if (c == ',') {
                j.p++;
                continue;
            }
            if (c == '}')
                break;
            return jfail(&j, "expected ',' or '}'");
        }
    }
    j.p++;
    if (jpeek(&j) != -1)
        return jfail(&j, "text after the document");
    if (!seen_members)
        return jfail(&j, "no \"members\"");
    return 0;
}

/* ---- the request ---------------------------------------------------------- */

/* Wait for events on fd until deadline, in slices so the stop check is consulted.
 * 1 ready, 0 deadline passed, -1 interrupted (err set) or poll failed (errno). */
static int wait_fd(int fd, short events, double deadline, nc_error *err)
{
    for (;;) {
        if (nc_stop_check()) {
            nc_error_set(err, NC_E_INTERRUPTED, NC_K_OPERATIONAL, "Patroni request interrupted");
            return -1;
        }
        double slice = nc_stop_slice(deadline);
        struct pollfd pfd = {fd, events, 0};
        int r = poll(&pfd, 1, nc_ms_left(slice));
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (r == 0 && nc_now() >= deadline)
            return 0;
    }
}

/* One GET /cluster from host:port; 0 with the raw response in *resp (malloc'd),
 * else -1 with why in `why` (or err set, for an interruption). */
static int http_get(const char *host, int port, double deadline, char **resp, size_t *resplen, char *why,
                    size_t whycap, nc_error *err)
{
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* Numeric hosts resolve without any lookup; a name goes through the resolver,
     * which has its own timeouts (resolv.conf) and no way to take our deadline. */
    hints.ai_flags = AI_NUMERICSERV;
    int gr = getaddrinfo(host, portstr, &hints, &ai);
    if (gr != 0) {
        nc_text_set(why, whycap, "cannot resolve: %s", gai_strerror(gr));
        return -1;
    }
    int fd = -1, rc = -1;
    char *buf = NULL;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (errno != EINPROGRESS) {
            nc_text_set(why, whycap, "connect: %s", strerror(errno));
            close(fd);
            fd = -1;
            continue;
        }
        int w = wait_fd(fd, POLLOUT, deadline, err);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (w == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
            break;
        if (w < 0 && err && err->code == NC_E_INTERRUPTED) {
            close(fd);
            fd = -1;
            goto done;
        }
        nc_text_set(why, whycap, "connect: %s", w == 0 ? "timed out" : strerror(soerr ? soerr : errno));
        close(fd);
        fd = -1;
    }
    if (fd < 0)
        goto done;

    char req[512];
    int reqlen = snprintf(req, sizeof req,
                          "GET /cluster HTTP/1.1\r\nHost: %s%s%s:%d\r\nAccept: application/json\r\n"
                          "User-Agent: noodlecore\r\nConnection: close\r\n\r\n",
                          strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
    if (reqlen < 0 || (size_t)reqlen >= sizeof req) {
        nc_text_set(why, whycap, "host name too long");
        goto done;
    }
    for (int off = 0; off < reqlen;) {
        ssize_t k = send(fd, req + off, (size_t)(reqlen - off), MSG_NOSIGNAL);
        if (k > 0) {
            off += (int)k;
            continue;
        }
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            nc_text_set(why, whycap, "send: %s", strerror(errno));
            goto done;
        }
        int w = wait_fd(fd, POLLOUT, deadline, err);
        if (w <= 0) {
            if (w == 0 || !err || err->code != NC_E_INTERRUPTED)
                nc_text_set(why, whycap, "send: %s", w == 0 ? "timed out" : strerror(errno));
            goto done;
        }
    }
    size_t cap = 16384, n = 0;
    buf = malloc(cap + 1);
    if (!buf) {
        nc_text_set(why, whycap, "out of memory");
        goto done;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= NC_PATRONI_MAX_BODY) {
                nc_text_set(why, whycap, "answer larger than %d bytes", NC_PATRONI_MAX_BODY);
                goto done;
            }
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                nc_text_set(why, whycap, "out of memory");
                goto done;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t k = recv(fd, buf + n, cap - n, 0);
        if (k > 0) {
            n += (size_t)k;
            continue;
        }
        if (k == 0)
            break;                          /* the server closed: the whole answer is here */
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            nc_text_set(why, whycap, "recv: %s", strerror(errno));
            goto done;
        }
        int w = wait_fd(fd, POLLIN, deadline, err);
        if (w <= 0) {
            if (w == 0 || !err || err->code != NC_E_INTERRUPTED)
                nc_text_set(why, whycap, "no answer: %s", w == 0 ? "timed out" : strerror(errno));
            goto done;
        }
    }
    buf[n] = '\0';
    *resp = buf;
    *resplen = n;
    buf = NULL;
    rc = 0;
done:
    free(buf);
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return rc;
}

int nc_patroni_fetch(const char *const *urls, int nurls, double timeout, nc_patroni_cluster *out, nc_error *err)
{
    if (nurls < 1 || nurls > NC_PATRONI_MAX_URLS) {
        nc_error_set(err, NC_E_PATRONI_URL, NC_K_NONE, "Patroni: %d URLs given (1 to %d)", nurls,
                     NC_PATRONI_MAX_URLS);
        return -1;
    }
    if (!(timeout > 0)) {
        nc_error_set(err, NC_E_CONFIG, NC_K_NONE, "Patroni: timeout must be > 0");
        return -1;
    }
    char hosts[NC_PATRONI_MAX_URLS][256];
    int ports[NC_PATRONI_MAX_URLS];
    for (int i = 0; i < nurls; i++)             /* every URL checked before any request */
        if (nc_patroni_parse_url(urls[i], hosts[i], sizeof hosts[i], &ports[i], err) < 0)
            return -1;
    double end = nc_now() + timeout;
    char failures[NC_ERRMSG_MAX] = "";
    size_t flen = 0;
    nc_error_clear(err);
    for (int i = 0; i < nurls; i++) {
        double now = nc_now();
        double deadline = now + (end - now) / (double)(nurls - i);
        char why[160] = "";
        char *resp = NULL;
        size_t resplen = 0;
        if (now >= end) {
            nc_text_set(why, sizeof why, "no time left");
        } else if (http_get(hosts[i], ports[i], deadline, &resp, &resplen, why, sizeof why, err) == 0) {
            int status;
            const char *body;
            size_t bodylen;
            char *owned = NULL;
            nc_error perr;
            nc_error_clear(&perr);
            if (nc_patroni_parse_http(resp, resplen, &status, &body, &bodylen, &owned, &perr) < 0)
                nc_text_set(why, sizeof why, "%s", perr.message);
            else if (status != 200)
                nc_text_set(why, sizeof why, "HTTP status %d", status);
            else if (nc_patroni_parse_cluster(body, bodylen, out, &perr) < 0)
                nc_text_set(why, sizeof why, "%s", perr.message);
            else
                nc_text_set(out->source, sizeof out->source, "%s", urls[i]);
            free(owned);
            free(resp);
            if (!why[0]) {
                nc_error_clear(err);
                return 0;
            }
        } else if (err && err->code == NC_E_INTERRUPTED) {
            return -1;
        }
        if (flen < sizeof failures) {
            int k = snprintf(failures + flen, sizeof failures - flen, "%s%.120s: %s", flen ? "; " : "",
                             urls[i], why);
            flen = k < 0 ? sizeof failures : flen + (size_t)k;
        }
    }
    nc_error_set(err, NC_E_PATRONI_UNREACHABLE, NC_K_OPERATIONAL, "no Patroni REST API answered GET /cluster "
                 "within %.1f s (%s)", timeout, failures);
    return -1;
}
