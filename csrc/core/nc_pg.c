/* nc_pg.c - the libpq backend.
 *
 * Every wait is a poll() on the connection's socket bounded by a deadline:
 * connecting uses PQconnectStartParams/PQconnectPoll, statements use the
 * asynchronous PQsendQuery* calls on a non-blocking connection.  When a
 * statement's deadline passes (or the thread's stop check says stop, e.g.
 * Ctrl-C: nc_stop.h), a cancel request goes out without blocking
 * (nc_pg_cancel.c) and the result is awaited for a short grace period
 * while the same loop drives the request; if the statement does not end
 * cancelled in time, the connection is marked broken and the pool discards it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nc_pg.h"
#include "nc_pg_internal.h"
#include "nc_stop.h"
#include "nc_time.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long a cancelled statement may take to report back before the
 * connection is given up on. */
#define NC_PG_CANCEL_GRACE 0.5
/* The same when the cancel is for Ctrl-C: the caller wants to be back at
 * once (the connection is discarded if the server is slower). */
#define NC_PG_INTERRUPT_GRACE 0.2


typedef struct nc_pg_ctx {
    char *conninfo;
    char display[256];
    /* A multi-host string ("host=a,b port=1,2") is tried one host at a time
     * by us, each with its share of the deadline: in asynchronous mode libpq
     * does not enforce connect_timeout per host, so one silent host would
     * use up the whole attempt. */
    int nhosts;
    char *hosts[NC_PG_MAX_HOSTS];
    char *hostaddrs[NC_PG_MAX_HOSTS];
    char *ports[NC_PG_MAX_HOSTS];
} nc_pg_ctx;

/* Split a comma-separated libpq list into at most NC_PG_MAX_HOSTS strdup'd
 * items.  Returns the count, -1 on allocation failure, -2 when there are
 * more (never dropped silently: the caller says so). */
static int split_list(const char *s, char **out)
{
    int n = 0;
    if (!s)
        return 0;
    const char *start = s;
    for (;;) {
        const char *comma = strchr(start, ',');
        size_t len = comma ? (size_t)(comma - start) : strlen(start);
        if (n == NC_PG_MAX_HOSTS)
            return -2;
        out[n] = strndup(start, len);
        if (!out[n])
            return -1;
        n++;
        if (!comma)
            return n;
        start = comma + 1;
    }
}

static void pg_ctx_free(void *vctx)
{
    nc_pg_ctx *ctx = vctx;
    if (!ctx)
        return;
    for (int i = 0; i < NC_PG_MAX_HOSTS; i++) {
        free(ctx->hosts[i]);
        free(ctx->hostaddrs[i]);
        free(ctx->ports[i]);
    }
    free(ctx->conninfo);
    free(ctx);
}

static void copy_trimmed(char *dst, size_t cap, const char *src)
{
    nc_text_set(dst, cap, "%s", src ? src : "");
    size_t n = strlen(dst);
    while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == ' '))
        dst[--n] = '\0';
}

void *nc_pg_ctx_new(const char *conninfo, nc_error *err)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    if (!opts) {
        char buf[512];
        copy_trimmed(buf, sizeof buf, msg ? msg : "out of memory");
        nc_utf8_clean(buf);
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "invalid PostgreSQL connection string: %s", buf);
        PQfreemem(msg);
        return NULL;
    }
    nc_pg_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx || !(ctx->conninfo = strdup(conninfo))) {
        free(ctx);
        PQconninfoFree(opts);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    const char *host = NULL, *port = NULL, *db = NULL, *user = NULL, *hostaddr = NULL, *hostlist = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (!strcmp(o->keyword, "hostaddr"))
            hostaddr = o->val;
        if (!strcmp(o->keyword, "host"))
            hostlist = o->val;
        if (!strcmp(o->keyword, "host") || (!host && !strcmp(o->keyword, "hostaddr")))
            host = o->val;
        else if (!strcmp(o->keyword, "port"))
            port = o->val;
        else if (!strcmp(o->keyword, "dbname"))
            db = o->val;
        else if (!strcmp(o->keyword, "user"))
            user = o->val;
    }
    /* A long non-ASCII name is cut on a character. */
    nc_text_set(ctx->display, sizeof ctx->display, "%s%s%s:%s/%s", user ? user : "", user ? "@" : "",
                 host ? host : "localhost", port ? port : "5432", db ? db : (user ? user : ""));
    nc_utf8_fix_tail(ctx->display);   /* a split last character (cut, or %XX-decoded) */
    nc_utf8_clean(ctx->display);      /* other %XX-decoded bytes of a URI */
    int nh = split_list(hostlist, ctx->hosts), na = split_list(hostaddr, ctx->hostaddrs);
    int np = split_list(port, ctx->ports);
    PQconninfoFree(opts);
    if (nh == -2 || na == -2 || np == -2) {
        pg_ctx_free(ctx);
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE,
                     "invalid PostgreSQL connection string: more than %d hosts (or ports); a pool tries at most %d",
                     NC_PG_MAX_HOSTS, NC_PG_MAX_HOSTS);
        return NULL;
    }
    if (nh < 0 || na < 0 || np < 0) {
        pg_ctx_free(ctx);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    ctx->nhosts = nh > na ? nh : na;
    if (ctx->nhosts > 1 && ((nh && na && nh != na) || (np > 1 && np != ctx->nhosts))) {
        pg_ctx_free(ctx);
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE,
                     "invalid PostgreSQL connection string: host, hostaddr and port lists differ in length");
        return NULL;
    }
    return ctx;
}

const char *nc_pg_ctx_display(void *vctx)
{
    return ((nc_pg_ctx *)vctx)->display;
}

/* Append keyword='value' to buf (libpq's quoting: \\ and \' escaped). */
static int append_kv(char **buf, size_t *len, size_t *cap, const char *key, const char *val)
{
    size_t need = *len + strlen(key) + 2 * strlen(val) + 6;
    if (need > *cap) {
        size_t nc = need * 2;
        char *nb = realloc(*buf, nc);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = nc;
    }
    char *o = *buf + *len;
    if (*len)
        *o++ = ' ';
    o += sprintf(o, "%s='", key);
    for (const char *v = val; *v; v++) {
        if (*v == '\\' || *v == '\'')
            *o++ = '\\';
        *o++ = *v;
    }
    *o++ = '\'';
    *o = '\0';
    *len = (size_t)(o - *buf);
    return 0;
}

int nc_pg_split_hosts(const char *conninfo, char **dsns, char **names, int cap, nc_error *err)
{
    /* nc_pg_ctx_new checks the string and splits the lists, once. */
    nc_pg_ctx *ctx = nc_pg_ctx_new(conninfo, err);
    if (!ctx)
        return -1;
    int n = ctx->nhosts > 0 ? ctx->nhosts : 1;
    if (n > cap) {
        pg_ctx_free(ctx);
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "connection string: more than %d hosts", cap);
        return -1;
    }
    for (int i = 0; i < ctx->nhosts; i++) {
        if ((ctx->hosts[i] && !ctx->hosts[i][0]) || (ctx->hostaddrs[i] && !ctx->hostaddrs[i][0]) ||
            (!ctx->hosts[i] && !ctx->hostaddrs[i])) {
            pg_ctx_free(ctx);
            nc_error_set(err, NC_E_FO_SPLIT_DSN, NC_K_INTERFACE,
                         "connection string: host %d of the list is empty (each endpoint needs its host)", i + 1);
            return -1;
        }
    }
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    PQfreemem(msg);
    int made = 0;
    for (; opts && made < n; made++) {
        char *buf = NULL;
        size_t len = 0, bcap = 0;
        int bad = 0;
        for (PQconninfoOption *o = opts; o->keyword && !bad; o++) {
            if (!o->val || !strcmp(o->keyword, "host") || !strcmp(o->keyword, "hostaddr") ||
                !strcmp(o->keyword, "port") || !strcmp(o->keyword, "target_session_attrs"))
                continue;
            bad = append_kv(&buf, &len, &bcap, o->keyword, o->val) < 0;
        }
        const char *host = ctx->nhosts ? ctx->hosts[made] : NULL;
        const char *addr = ctx->nhosts ? ctx->hostaddrs[made] : NULL;
        const char *port = ctx->ports[made] ? ctx->ports[made] : ctx->ports[0];
        if (!bad && host)
            bad = append_kv(&buf, &len, &bcap, "host", host) < 0;
        if (!bad && addr)
            bad = append_kv(&buf, &len, &bcap, "hostaddr", addr) < 0;
        if (!bad && port && port[0])
            bad = append_kv(&buf, &len, &bcap, "port", port) < 0;
        char name[300];
        nc_text_set(name, sizeof name, "%s:%s", host ? host : addr ? addr : "localhost",
                    port && port[0] ? port : "5432");
        nc_utf8_clean(name);
        char *nm = strdup(name);
        if (bad || !buf || !nm) {
            free(buf);
            free(nm);
            break;
        }
        dsns[made] = buf;
        names[made] = nm;
    }
    PQconninfoFree(opts);
    pg_ctx_free(ctx);
    if (made < n) {
        for (int i = 0; i < made; i++) {
            free(dsns[i]);
            free(names[i]);
        }
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return -1;
    }
    return n;
}



int nc_pg_wait(int fd, short events, double deadline)
{
    struct pollfd pfd = {fd, events, 0};
    for (;;) {
        if (nc_stop_check())
            return -2;
        double until = nc_stop_slice(deadline);
        int rc = poll(&pfd, 1, nc_ms_left(until));
        if (rc > 0)
            return 1;
        if (rc == 0 && until >= deadline)
            return 0;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

void nc_pg_conn_error(nc_error *err, int code, PGconn *pg, const char *what)
{
    char buf[512];
    copy_trimmed(buf, sizeof buf, pg ? PQerrorMessage(pg) : "out of memory");
    nc_error_set(err, code, NC_K_OPERATIONAL, "%s: %s", what, buf);
    if (code == NC_E_CONNECTION)
        memcpy(err->sqlstate, "08006", 6);
}

void nc_pg_give_up(nc_pg_conn *c, const char *why)
{
    if (!c->broken)
        c->gave_up = why;   /* the first reason is the one that counts */
    c->broken = 1;
}

int nc_pg_usable(nc_pg_conn *c, nc_error *err)
{
    if (!c->broken && PQstatus(c->pg) == CONNECTION_OK)
        return 0;
    c->broken = 1;
    if (PQstatus(c->pg) == CONNECTION_OK) {
        /* Given up by us, not by libpq, which has nothing to say. */
        nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL,
                     "connection lost: %s%sthe connection was given up after %s; it is discarded "
                     "(borrow another)", c->display ? c->display : "", c->display ? ": " : "",
                     c->gave_up ? c->gave_up : "an earlier failure on it");
        memcpy(err->sqlstate, "08006", 6);
    } else {
        nc_pg_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost");
    }
    err->sent = NC_SENT_NO;
    return -1;
}

static int is_sqlstate(const char *s)
{
    for (int i = 0; i < 5; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
            return 0;
    return s[5] == ':' && s[6] == ' ';
}

/* "LOCATION:  function, file.c:123" (the first word may be translated). */
static int is_location(const char *line)
{
    const char *sev = strstr(line, ":  ");
    if (!sev || sev != strchr(line, ':') || memchr(line, ' ', (size_t)(sev - line)) || is_sqlstate(sev + 3))
        return 0;
    const char *file = strrchr(sev + 3, ' ');
    const char *colon = strrchr(sev + 3, ':');
    if (!file || !colon || colon < file || file[-1] != ',' || !colon[1])
        return 0;
    for (const char *d = colon + 1; *d; d++)
        if (*d < '0' || *d > '9')
            return 0;
    return 1;
}

/* A connect that failed: libpq gives only text, but a server's refusal has
 * a SQLSTATE that matters (53300: the server is full, so the pool waits and
 * retries instead of failing).  The connect runs with PQERRORS_VERBOSE, so
 * each server error reads "SEVERITY:  SQLSTATE: text" followed by a
 * "LOCATION:  function, file:line" line: the (last) SQLSTATE is taken out
 * and both are dropped, leaving libpq's usual message. */
static void set_connect_error(nc_error *err, PGconn *pg, const char *display)
{
    char in[1024], out[512], state[6] = "";
    copy_trimmed(in, sizeof in, pg ? PQerrorMessage(pg) : "out of memory");
    size_t o = 0;
    for (char *line = in; line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *sev = strstr(line, ":  ");
        if (*line && !is_location(line)) {
            if (sev && is_sqlstate(sev + 3)) {
                memcpy(state, sev + 3, 5);
                state[5] = '\0';
                memmove(sev + 3, sev + 10, strlen(sev + 10) + 1);
            }
            o += (size_t)snprintf(out + o, sizeof out - o, "%s%s", o ? "\n" : "", line);
            if (o >= sizeof out)
                o = sizeof out - 1;
        }
        line = nl ? nl + 1 : NULL;
    }
    out[o] = '\0';
    nc_utf8_fix_tail(out);   /* snprintf may have cut the last line mid-character */
    nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL, "%s: %s", display, out);
    memcpy(err->sqlstate, state[0] ? state : "08006", 6);
}

/* libpq hands notices, and an error that arrives on an idle connection, to
 * the notice receiver (by default printed to stderr; a library must not
 * write there).  A FATAL on an idle connection is the server saying why it
 * is about to close it: the connection is dead. */
static void note_receiver(void *arg, const PGresult *res)
{
    nc_pg_conn *c = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (!strcmp(sev, "FATAL") || !strcmp(sev, "PANIC")))
        nc_pg_give_up(c, "the server announced it was closing the session (FATAL)");
}

/* Connect to host i of a multi-host string (i < 0: the string as it is). */
/* The text formats the binding decodes: DateStyle ISO (the day/month order
 * part kept) and IntervalStyle postgres.  The server reports both
 * (ParameterStatus), so this costs a round trip only when a DSN option, a
 * role's or database's setting asked for others.  After connecting and
 * after DISCARD ALL, which goes back to those settings.  0 ok, -1 err. */
static int fix_styles(nc_pg_conn *c, double deadline, nc_error *err)
{
    const char *ds = PQparameterStatus(c->pg, "DateStyle");
    if ((!ds || strncmp(ds, "ISO", 3) != 0) && nc_pg_command(c, "SET DateStyle TO ISO", deadline, err) < 0)
        return -1;
    const char *is = PQparameterStatus(c->pg, "IntervalStyle");
    if (is && strcmp(is, "postgres") != 0
        && nc_pg_command(c, "SET IntervalStyle TO postgres", deadline, err) < 0)
        return -1;
    return 0;
}

static void *pg_connect_one(nc_pg_ctx *ctx, int i, double deadline, nc_error *err)
{
    /* Later keywords override what the connection string says: we need UTF-8
     * text and ISO dates to decode values. */
    const char *keys[8] = {"dbname", "client_encoding", "fallback_application_name"};
    const char *vals[8] = {ctx->conninfo, "UTF8", "noodlecore"};
    int k = 3;
    if (i >= 0) {
        if (ctx->hosts[i]) {
            keys[k] = "host";
            vals[k++] = ctx->hosts[i];
        }
        if (ctx->hostaddrs[i]) {
            keys[k] = "hostaddr";
            vals[k++] = ctx->hostaddrs[i];
        }
        const char *port = ctx->ports[i] ? ctx->ports[i] : ctx->ports[0];
        if (port) {
            keys[k] = "port";
            vals[k++] = port;
        }
    }
    keys[k] = NULL;
    vals[k] = NULL;
    PGconn *pg = PQconnectStartParams(keys, vals, 1);
    if (!pg || PQstatus(pg) == CONNECTION_BAD) {
        nc_pg_conn_error(err, NC_E_CONNECTION, pg, ctx->display);
        PQfinish(pg);
        return NULL;
    }
    PQsetErrorVerbosity(pg, PQERRORS_VERBOSE);   /* for the SQLSTATE of a refusal */
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    for (;;) {
        if (st == PGRES_POLLING_OK)
            break;
        if (st == PGRES_POLLING_FAILED) {
            set_connect_error(err, pg, ctx->display);
            PQfinish(pg);
            return NULL;
        }
        int rc = nc_pg_wait(PQsocket(pg), st == PGRES_POLLING_WRITING ? POLLOUT : POLLIN, deadline);
        if (rc == -2) {
            nc_error_set(err, NC_E_INTERRUPTED, NC_K_OPERATIONAL, "%s: interrupted while connecting",
                         ctx->display);
            PQfinish(pg);
            return NULL;
        }
        if (rc <= 0) {
            nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL,
                         "%s: %s", ctx->display, rc == 0 ? "timeout expired while connecting" : strerror(errno));
            memcpy(err->sqlstate, "08001", 6);
            PQfinish(pg);
            return NULL;
        }
        st = PQconnectPoll(pg);
    }
    PQsetErrorVerbosity(pg, PQERRORS_DEFAULT);   /* verbose was for the connect's SQLSTATE only */
    if (PQsetnonblocking(pg, 1) != 0) {
        nc_pg_conn_error(err, NC_E_CONNECTION, pg, ctx->display);
        PQfinish(pg);
        return NULL;
    }
    nc_pg_conn *c = calloc(1, sizeof *c);
    if (!c) {
        PQfinish(pg);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    c->pg = pg;
    c->display = ctx->display;   /* the context outlives its pool's connections */
    PQsetNoticeReceiver(pg, note_receiver, c);
    if (fix_styles(c, deadline, err) < 0) {
        nc_error_prefix(err, "%s", ctx->display);
        PQfinish(pg);
        free(c);
        return NULL;
    }
    return c;
}

static void *pg_connect(void *vctx, double deadline, nc_error *err)
{
    nc_pg_ctx *ctx = vctx;
    if (ctx->nhosts <= 1)
        return pg_connect_one(ctx, -1, deadline, err);
    /* One host after the other, each with an equal share of what is left,
     * as libpq does with connect_timeout; the last error is reported. */
    nc_error last;
    nc_error_clear(&last);
    for (int i = 0; i < ctx->nhosts; i++) {
        double now = nc_now();
        if (now >= deadline && i > 0)
            break;
        double share = isinf(deadline) ? deadline : now + (deadline - now) / (double)(ctx->nhosts - i);
        void *c = pg_connect_one(ctx, i, share, &last);
        if (c)
            return c;
        if (last.code == NC_E_INTERRUPTED)
            break;
    }
    if (err)
        *err = last;
    return NULL;
}

static int settle_reply(nc_pg_conn *c, int wait, double deadline, nc_error *err);

static int pg_looks_alive(void *vctx, void *vconn)
{
    (void)vctx;
    nc_pg_conn *c = vconn;
    if (c->broken || PQstatus(c->pg) != CONNECTION_OK)
        return 0;
    if (c->pending) {
        /* The return's ROLLBACK: its reply, if here, is read (a failed one
         * is a dead connection); one still on its way is read by its next
         * user (nc_pg_settle), under that user's deadline. */
        nc_error ignored;
        if (settle_reply(c, 0, 0, &ignored) < 0)
            return 0;
    }
    /* An idle connection usually has nothing to say.  When it has, read it
     * before judging: a NOTIFY (a LISTEN of an earlier borrower) or a
     * ParameterStatus (a reloaded setting, a promotion) is harmless, while
     * EOF, a reset, or a FATAL sent just before closing (pg_terminate_backend,
     * a server shutting down; note_receiver marks it) is not.  Reading is a
     * non-blocking recv of what already arrived: no wait. */
    for (int reads = 0; reads < 4; reads++) {
        struct pollfd pfd = {PQsocket(c->pg), POLLIN, 0};
        int rc = poll(&pfd, 1, 0);
        if (rc < 0)
            return errno == EINTR;
        if (rc == 0)
            return 1;
        if (pfd.revents & (POLLHUP | POLLERR | POLLNVAL))
            return 0;
        if (!PQconsumeInput(c->pg))
            return 0;   /* EOF or a reset */
        PGnotify *n;
        while ((n = PQnotifies(c->pg)))   /* parses what came; nobody here reads notifications */
            PQfreemem(n);
        if (c->broken || PQstatus(c->pg) != CONNECTION_OK)
            return 0;
    }
    return 1;   /* four reads and neither EOF nor FATAL: a talkative but live server */
}

/* ---- a ROLLBACK whose reply is read later ------------------------------- */

int nc_pg_rollback_send(nc_pg_conn *c, double deadline, nc_error *err)
{
    if (nc_pg_settle(c, deadline, err) < 0 || nc_pg_usable(c, err) < 0)
        return -1;
    if (!PQsendQuery(c->pg, "ROLLBACK")) {
        c->broken = 1;
        nc_pg_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost");
        return -1;
    }
    c->pending = NC_PG_OWED_ROLLBACK;
    c->pending_status = PQTRANS_IDLE;
    return nc_pg_flush(c, deadline, err);   /* all of it on the wire, or broken */
}

static const char *owed_name(const nc_pg_conn *c)
{
    return c->pending == NC_PG_OWED_PING ? "ping" : "ROLLBACK";
}

/* Read the pending reply: 0 read (ok), 1 not all here yet: with wait 0
 * nothing more has arrived, with wait the deadline passed or the stop check
 * said stop (err says which; the reply is still owed and the connection is
 * not judged: a late reply is not a dead connection), -1 err (broken). */
static int settle_reply(nc_pg_conn *c, int wait, double deadline, nc_error *err)
{
    int failed = 0;
    const char *what = owed_name(c);
    ExecStatusType ok_status = c->pending == NC_PG_OWED_PING ? PGRES_EMPTY_QUERY : PGRES_COMMAND_OK;
    PGTransactionStatusType after = c->pending_status;
    while (c->pending) {
        if (c->broken || PQstatus(c->pg) != CONNECTION_OK)
            goto lost;
        if (PQisBusy(c->pg)) {
            int w = 1;
            if (!wait) {
                struct pollfd pfd = {PQsocket(c->pg), POLLIN, 0};
                w = poll(&pfd, 1, 0);
                if (w == 0)
                    return 1;
                if (w < 0)
                    w = errno == EINTR ? 1 : -1;
            } else {
                w = nc_pg_wait(PQsocket(c->pg), POLLIN, deadline);
            }
            if (w == 0 || w == -2) {
                /* The caller's deadline or Ctrl-C, not a lost connection:
                 * coded as nc_pg_waiter_ready codes them, so the pool's
                 * observer (a failover manager) does not take the endpoint
                 * for down.  Whether the connection goes is the caller's
                 * call (nc_pg_settle: it does; the pool: only when its
                 * validation_timeout ran out). */
                nc_error_set(err, w == 0 ? NC_E_QUERY_TIMEOUT : NC_E_INTERRUPTED, NC_K_OPERATIONAL,
                             "%s while waiting for the reply to the previous %s",
                             w == 0 ? "deadline passed" : "interrupted", what);
                if (w == 0)
                    memcpy(err->sqlstate, "57014", 6);
                err->sent = NC_SENT_NO;
                return 1;
            }
            if (w < 0 || !PQconsumeInput(c->pg))
                goto lost;
            continue;
        }
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            c->pending = 0;
            break;
        }
        if (PQresultStatus(r) != ok_status)
            failed = 1;
        PQclear(r);
    }
    if (failed || PQtransactionStatus(c->pg) != after) {
        c->broken = 1;
        nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL,
                     "the previous %s failed on this connection; connection discarded", what);
        err->sent = NC_SENT_NO;
        return -1;
    }
    return 0;
lost:
    c->broken = 1;
    char where[64];
    snprintf(where, sizeof where, "connection lost (reading the reply to the previous %s)", what);
    nc_pg_conn_error(err, NC_E_CONNECTION, c->pg, where);
    err->sent = NC_SENT_NO;
    return -1;
}

int nc_pg_settle(nc_pg_conn *c, double deadline, nc_error *err)
{
    if (!c->pending)
        return 0;
    if (c->broken)
        return nc_pg_usable(c, err);   /* given up (gave_up says why) or lost: nothing worth reading */
    int rc = settle_reply(c, 1, deadline, err);
    if (rc > 0) {
        /* A statement's own deadline (or Ctrl-C) ran out before the reply
         * came: the statement was not sent, and the connection goes. */
        nc_pg_give_up(c, "no reply to the previous ROLLBACK or ping came before an earlier deadline");
        size_t n = strlen(err->message);
        snprintf(err->message + n, sizeof err->message - n, "; connection discarded");
        return -1;
    }
    return rc;
}

PGTransactionStatusType nc_pg_txn_status(const nc_pg_conn *c)
{
    return c->pending ? c->pending_status : PQtransactionStatus(c->pg);
}

/* ---- statements -------------------------------------------------------- */

void nc_pg_result_error(nc_error *err, PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    char buf[NC_ERRMSG_MAX];
    if (primary)
        nc_text_set(buf, sizeof buf, "%s%s%s", primary, detail ? " DETAIL: " : "", detail ? detail : "");
    else
        copy_trimmed(buf, sizeof buf, PQresultErrorMessage(res));
    /* The class comes from the SQLSTATE (nc_error_class). */
    nc_error_set(err, NC_E_QUERY, NC_K_NONE, "%s", buf);
    if (state)
        snprintf(err->sqlstate, sizeof err->sqlstate, "%s", state);
}

/* Send everything queued, within deadline.  0 ok, -1 err (broken). */
int nc_pg_flush(nc_pg_conn *c, double deadline, nc_error *err)
{
    for (;;) {
        int rc = PQflush(c->pg);
        if (rc == 0)
            return 0;
        if (rc < 0) {
            c->broken = 1;
            nc_pg_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost while sending");
            return -1;
        }
        /* Wait for either direction: the server may be blocked sending to
         * us (notices) until we read. */
        int w = nc_pg_wait(PQsocket(c->pg), POLLIN | POLLOUT, deadline);
        if (w == -2) {
            nc_pg_give_up(c, "an earlier statement was interrupted half sent");   /* half a message on the wire */
            nc_error_set(err, NC_E_INTERRUPTED, NC_K_OPERATIONAL,
                         "interrupted while sending the statement; connection discarded");
            return -1;
        }
        if (w == 0) {
            /* Half a message is on the wire: this connection cannot be reused. */
            nc_pg_give_up(c, "an earlier statement's deadline passed while it was half sent");
            nc_error_set(err, NC_E_QUERY_TIMEOUT, NC_K_OPERATIONAL,
                         "statement deadline passed while sending it; connection discarded");
            memcpy(err->sqlstate, "57014", 6);
            return -1;
        }
        if (w < 0 || PQconsumeInput(c->pg) == 0) {
            c->broken = 1;
            nc_pg_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost while sending");
            return -1;
        }
    }
}


/* Wait until the connection has input, driving the cancel request k while
 * it is pending.  1 readable, 0 until passed, -1 socket error, -2 the
 * thread's stop check said stop (only asked before a cancel went out). */
static int wait_result(nc_pg_conn *c, nc_pg_cancel *k, double until)
{
    for (;;) {
        if (k->state == NC_CANCEL_NONE && nc_stop_check())
            return -2;
        struct pollfd pfd[2] = {{PQsocket(c->pg), POLLIN, 0}, {k->fd, k->events, 0}};
        int n = k->state == NC_CANCEL_PENDING ? 2 : 1;
        double slice = nc_stop_slice(until);
        int rc = poll(pfd, (nfds_t)n, nc_ms_left(slice));
        if (rc < 0 && errno != EINTR)
            return -1;
        if (rc > 0 && n == 2 && pfd[1].revents)
            nc_pg_cancel_step(k, pfd[1].revents);
        if (rc > 0 && pfd[0].revents)
            return 1;
        if (slice >= until && nc_now() >= until)
            return 0;
    }
}

/* After the statement ended cancelled: let the cancel request finish (the
 * server closing it says it was processed) before until. */
static void finish_cancel(nc_pg_cancel *k, double until)
{
    while (k->state == NC_CANCEL_PENDING) {
        struct pollfd pfd = {k->fd, k->events, 0};
        int rc = poll(&pfd, 1, nc_ms_left(until));
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0)
            nc_pg_cancel_step(k, pfd.revents);
        else if (rc == 0)
            break;
    }
}

/* The statement was given up on (why) after the cancel k: say why. */
static void given_up(nc_error *err, int why, const nc_pg_cancel *k, double grace)
{
    const char *what = why == WHY_STOP ? "interrupted" : "statement deadline passed";
    int code = why == WHY_STOP ? NC_E_INTERRUPTED : NC_E_QUERY_TIMEOUT;
    switch (k->state) {
    case NC_CANCEL_FAILED:
        nc_error_set(err, code, NC_K_OPERATIONAL, "%s and %s; connection discarded (the statement may still "
                     "run on the server)", what, k->why);
        break;
    case NC_CANCEL_PENDING:
        nc_error_set(err, code, NC_K_OPERATIONAL, "%s and the server did not acknowledge the cancel request "
                     "within %.1f s (server not responding); connection discarded", what, grace);
        break;
    case NC_CANCEL_DONE:
        /* Also what pgbouncer (up to at least 1.18) does with the cancel of a
         * statement still queued for a server connection: it takes and
         * drops the request.  Closing the connection drops the statement. */
        nc_error_set(err, code, NC_K_OPERATIONAL, "%s; the server took the cancel request but the statement "
                     "did not stop within %.1f s (or a pooler such as pgbouncer took it and ignored it, as it "
                     "does while the statement waits for a server connection); connection discarded",
                     what, grace);
        break;
    default:
        nc_error_set(err, code, NC_K_OPERATIONAL, "%s and the server did not answer the cancel within %.1f s; "
                     "connection discarded", what, grace);
    }
    if (code == NC_E_QUERY_TIMEOUT)
        memcpy(err->sqlstate, "57014", 6);
}

void nc_pg_waiter_init(nc_pg_waiter *w, double deadline, int cancel)
{
    memset(w, 0, sizeof *w);
    w->k.fd = -1;
    w->why = WHY_NONE;
    w->cancel = cancel;
    w->wait_until = deadline;
}

int nc_pg_waiter_ready(nc_pg_conn *c, nc_pg_waiter *wt, nc_error *err)
{
    while (PQisBusy(c->pg)) {
        int w = wait_result(c, &wt->k, wt->wait_until);
        if ((w == 0 || w == -2) && wt->why == WHY_NONE && wt->cancel) {
            wt->why = w == 0 ? WHY_DEADLINE : WHY_STOP;
            wt->grace = wt->why == WHY_STOP ? NC_PG_INTERRUPT_GRACE : NC_PG_CANCEL_GRACE;
            nc_pg_cancel_start(&wt->k, c->pg);
            /* No cancel: nothing to wait for, the connection must go. */
            wt->wait_until = wt->k.state == NC_CANCEL_FAILED ? nc_now() : nc_now() + wt->grace;
            continue;
        }
        if (w == 0 || w == -2) {
            nc_pg_give_up(c, wt->why != WHY_NONE ? "the cancel of an earlier statement was not confirmed"
                             : w == -2 ? "an earlier wait for the server was interrupted"
                                       : "the server did not answer before an earlier deadline");
            if (wt->why != WHY_NONE)
                given_up(err, wt->why, &wt->k, wt->grace);
            else if (w == -2)
                nc_error_set(err, NC_E_INTERRUPTED, NC_K_OPERATIONAL, "interrupted; connection discarded");
            else
                nc_error_set(err, NC_E_QUERY_TIMEOUT, NC_K_OPERATIONAL,
                             "the server did not answer before the deadline; connection discarded");
            if (err->code == NC_E_QUERY_TIMEOUT)
                memcpy(err->sqlstate, "57014", 6);
            nc_pg_cancel_close(&wt->k);
            return -1;
        }
        if (w < 0 || PQconsumeInput(c->pg) == 0) {
            c->broken = 1;
            nc_pg_cancel_close(&wt->k);
            nc_pg_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost");
            return -1;
        }
    }
    return 0;
}

int nc_pg_waiter_end(nc_pg_conn *c, nc_pg_waiter *wt, PGresult *error, nc_error *err)
{
    if (PQstatus(c->pg) != CONNECTION_OK)
        c->broken = 1;
    const char *state = error ? PQresultErrorField(error, PG_DIAG_SQLSTATE) : NULL;
    int stopped = wt->why != WHY_NONE && state && !strcmp(state, "57014");
    if (wt->why != WHY_NONE) {
        /* The connection is kept only when our cancel stopped the statement
         * and is known to be processed: any other end (a result, another
         * error) leaves a cancel in flight that could hit the next statement. */
        if (stopped)
            finish_cancel(&wt->k, wt->wait_until);
        if (!stopped)
            nc_pg_give_up(c, "an earlier statement ended while its cancel was in flight (the cancel "
                             "could reach the next statement)");
        else if (wt->k.state == NC_CANCEL_PENDING || wt->k.state == NC_CANCEL_FAILED)
            nc_pg_give_up(c, "the cancel of an earlier statement was not confirmed");
        nc_pg_cancel_close(&wt->k);
    }
    if (!error)
        return 0;
    if (stopped && wt->why == WHY_STOP) {
        nc_error_set(err, NC_E_INTERRUPTED, NC_K_OPERATIONAL,
                     "interrupted; the statement was cancelled on the server");
    } else if (stopped) {
        nc_error_set(err, NC_E_QUERY_TIMEOUT, NC_K_OPERATIONAL,
                     "statement deadline passed; the statement was cancelled on the server");
        memcpy(err->sqlstate, "57014", 6);
    } else {
        nc_pg_result_error(err, error);
    }
    return -1;
}

void nc_pg_waiter_abandon(nc_pg_waiter *wt)
{
    nc_pg_cancel_close(&wt->k);
}

/* Collect results until libpq says the statement is done.  Keeps the last
 * result, or the first error.  cancel: on the deadline (or when the stop
 * check says stop) send a cancel and wait a grace period for the statement
 * to stop (the connection stays usable); without it the connection is given
 * up at once (pings and rollbacks, where the connection is dropped anyway).
 * one_row (single-row mode, nc_pg_stream_next): return the first row's
 * result as soon as it comes, unless a cancel or an error is under way. */
static PGresult *collect_mode(nc_pg_conn *c, double deadline, int cancel, int one_row, nc_error *err)
{
    PGresult *keep = NULL, *error = NULL;
    nc_pg_waiter wt;
    nc_pg_waiter_init(&wt, deadline, cancel);
    for (;;) {
        if (nc_pg_waiter_ready(c, &wt, err) < 0) {
            PQclear(keep);
            PQclear(error);
            return NULL;
        }
        PGresult *r = PQgetResult(c->pg);
        if (!r)
            break;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
            if (!error)
                error = r;
            else
                PQclear(r);
        } else if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            /* COPY needs its own API; refuse cleanly by ending it. */
            PQclear(r);
            nc_pg_give_up(c, "a COPY it could not run (refused mid-protocol)");
            PQclear(keep);
            PQclear(error);
            nc_pg_waiter_abandon(&wt);
            nc_error_set(err, NC_E_NOT_SUPPORTED, NC_K_NOT_SUPPORTED,
                         "COPY is not supported through execute_query");
            return NULL;
        } else if (one_row && st == PGRES_SINGLE_TUPLE && wt.why == WHY_NONE && !error) {
            PQclear(keep);
            return r;   /* more follow: the statement is still running */
        } else {
            PQclear(keep);
            keep = r;
        }
    }
    if (nc_pg_waiter_end(c, &wt, error, err) < 0) {
        PQclear(keep);
        PQclear(error);
        return NULL;
    }
    if (!keep) {
        if (c->broken) {
            nc_pg_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost");
            return NULL;
        }
        nc_error_set(err, NC_E_QUERY, NC_K_INTERNAL, "the server returned no result");
        return NULL;
    }
    return keep;
}

static PGresult *collect(nc_pg_conn *c, double deadline, int cancel, nc_error *err)
{
    return collect_mode(c, deadline, cancel, 0, err);
}

/* Send a statement (the first half of pg_exec); 0, or -1 with err. */
static int send_query(nc_pg_conn *c, const char *sql, int nparams, const Oid *types,
                      const char *const *values, const int *lengths, const int *formats, int single_row,
                      double deadline, nc_error *err)
{
    if (nc_pg_settle(c, deadline, err) < 0 || nc_pg_usable(c, err) < 0)
        return -1;
    int ok = nparams < 0 ? PQsendQuery(c->pg, sql)
                         : PQsendQueryParams(c->pg, sql, nparams, types, values, lengths, formats, 0);
    if (!ok) {
        if (PQstatus(c->pg) != CONNECTION_OK) {
            c->broken = 1;
            nc_pg_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost");
        } else {
            char buf[512];
            copy_trimmed(buf, sizeof buf, PQerrorMessage(c->pg));
            nc_error_set(err, NC_E_QUERY, NC_K_PROGRAMMING, "%s", buf);
        }
        err->sent = NC_SENT_NO;
        return -1;
    }
    /* Right after the send, as libpq asks; cannot fail then. */
    if (single_row)
        PQsetSingleRowMode(c->pg);
    if (nc_pg_flush(c, deadline, err) < 0)
        return -1;   /* partly written, maybe: unknown */
    return 0;
}

static PGresult *pg_exec(nc_pg_conn *c, const char *sql, int nparams, const Oid *types,
                        const char *const *values, const int *lengths, const int *formats,
                        double deadline, int cancel, nc_error *err)
{
    if (send_query(c, sql, nparams, types, values, lengths, formats, 0, deadline, err) < 0)
        return NULL;
    PGresult *r = collect(c, deadline, cancel, err);
    if (!r)
        err->sent = NC_SENT_YES;
    return r;
}

PGresult *nc_pg_exec(nc_pg_conn *c, const char *sql, int nparams, const Oid *types,
                     const char *const *values, const int *lengths, const int *formats,
                     double deadline, nc_error *err)
{
    return pg_exec(c, sql, nparams, types, values, lengths, formats, deadline, 1, err);
}

int nc_pg_stream_send(nc_pg_conn *c, const char *sql, int nparams, const Oid *types,
                      const char *const *values, const int *lengths, const int *formats, double deadline,
                      nc_error *err)
{
    return send_query(c, sql, nparams, types, values, lengths, formats, 1, deadline, err);
}

PGresult *nc_pg_stream_next(nc_pg_conn *c, double deadline, nc_error *err)
{
    PGresult *r = collect_mode(c, deadline, 1, 1, err);
    if (!r)
        err->sent = NC_SENT_YES;
    return r;
}

int nc_pg_command(nc_pg_conn *c, const char *sql, double deadline, nc_error *err)
{
    PGresult *r = nc_pg_exec(c, sql, -1, NULL, NULL, NULL, NULL, deadline, err);
    if (!r)
        return -1;
    PQclear(r);
    return 0;
}

int nc_pg_backend_pid(nc_pg_conn *c)
{
    return c && c->pg ? PQbackendPID(c->pg) : 0;
}

/* ---- the ops ----------------------------------------------------------- */

static int pg_ping(void *vctx, void *vconn, double deadline, nc_error *err)
{
    (void)vctx;
    nc_pg_conn *c = vconn;
    if (c->pending) {
        int rc = settle_reply(c, 1, deadline, err);
        if (rc != 0)
            return rc;   /* 1: still owed, the ping's time is up already */
    }
    /* An empty query is the cheapest full round trip, and it changes
     * nothing: its reply can be left owed like a ROLLBACK's (pending) when
     * the deadline or Ctrl-C ends the wait, so that the caller, not the
     * clock, decides whether the connection goes (nc_backend.h). */
    if (nc_pg_usable(c, err) < 0)
        return -1;
    PGTransactionStatusType status = PQtransactionStatus(c->pg);
    if (!PQsendQuery(c->pg, "")) {
        c->broken = 1;
        nc_pg_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost");
        return -1;
    }
    c->pending = NC_PG_OWED_PING;
    c->pending_status = status;
    if (nc_pg_flush(c, deadline, err) < 0)
        return -1;   /* marked broken: maybe half of it on the wire */
    return settle_reply(c, 1, deadline, err);
}

static int pg_return_state(void *vctx, void *vconn)
{
    (void)vctx;
    nc_pg_conn *c = vconn;
    if (c->broken || PQstatus(c->pg) != CONNECTION_OK)
        return -1;
    switch (nc_pg_txn_status(c)) {   /* a ROLLBACK on its way: idle */
    case PQTRANS_IDLE:
        return c->session_dirty;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
        return 1;
    default:
        return -1;
    }
}

static int pg_reset(void *vctx, void *vconn, double deadline, nc_error *err)
{
    (void)vctx;
    nc_pg_conn *c = vconn;
    if (nc_pg_settle(c, deadline, err) < 0)
        return -1;
    if (!c->session_dirty && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        /* Only the transaction to end: ROLLBACK is sent and the return does
         * not wait for its reply; the next borrow or check reads it (and
         * drops the connection if it failed, before any statement of the
         * next borrower is sent on it). */
        return nc_pg_rollback_send(c, deadline, err);
    }
    /* No cancel grace: a connection that cannot roll back in time is dropped. */
    if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        PGresult *r = pg_exec(c, "ROLLBACK", -1, NULL, NULL, NULL, NULL, deadline, 0, err);
        if (!r)
            return -1;
        PQclear(r);
        if (PQtransactionStatus(c->pg) != PQTRANS_IDLE)
            return -1;
    }
    if (c->session_dirty) {
        /* What the borrower changed (settings, session characteristics,
         * role, prepared statements, LISTEN, temp tables) goes back to the
         * session's defaults, as pgbouncer's server_reset_query does; then
         * the text formats we decode.  Outside a transaction block only,
         * hence after the ROLLBACK and on its own. */
        PGresult *r = pg_exec(c, "DISCARD ALL", -1, NULL, NULL, NULL, NULL, deadline, 0, err);
        if (!r)
            return -1;
        PQclear(r);
        if (fix_styles(c, deadline, err) < 0)
            return -1;
        c->session_dirty = 0;
    }
    return 0;
}

static int pg_settle(void *vctx, void *vconn, double deadline)
{
    (void)vctx;
    nc_pg_conn *c = vconn;
    /* Broken with nothing pending: an earlier no-wait settle (the fast
     * borrow's, which then declined) read a failed ROLLBACK.  Still -1, or
     * the slow borrow lends it when validation is off. */
    if (c->broken)
        return -1;
    if (!c->pending)
        return 0;
    nc_error ignored;
    return settle_reply(c, deadline > 0, deadline, &ignored);   /* 1: late, not judged */
}

static void pg_give_up(void *vctx, void *vconn, const char *why)
{
    (void)vctx;
    nc_pg_give_up(vconn, why);
}

static void pg_close(void *vctx, void *vconn)
{
    (void)vctx;
    nc_pg_conn *c = vconn;
    if (!c)
        return;
    PQfinish(c->pg);
    free(c);
}

const nc_backend_ops nc_pg_ops = {
    .kind = "postgresql",
    .ping_new = 0,
    .connect = pg_connect,
    .looks_alive = pg_looks_alive,
    .ping = pg_ping,
    .return_state = pg_return_state,
    .reset = pg_reset,
    .settle = pg_settle,
    .give_up = pg_give_up,
    .close = pg_close,
    .ctx_free = pg_ctx_free,
};
