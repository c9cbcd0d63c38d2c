/* nc_pg.c - the libpq backend.
 *
 * Every wait is a poll() on the connection's socket bounded by a deadline:
 * connecting uses PQconnectStartParams/PQconnectPoll, statements use the
 * asynchronous PQsendQuery* calls on a non-blocking connection.  When a
 * statement's deadline passes, a cancel request is sent from a short-lived
 * detached thread (PQcancel itself blocks until the server closes the cancel
 * connection, which a frozen server never does) and the result is awaited
 * for a short grace period; if it does not come, the connection is marked
 * broken and the pool discards it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nc_pg.h"
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

#define NC_PG_MAX_HOSTS 16

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



int nc_pg_wait(int fd, short events, double deadline)
{
    struct pollfd pfd = {fd, events, 0};
    for (;;) {
        int rc = poll(&pfd, 1, nc_ms_left(deadline));
        if (rc > 0)
            return 1;
        if (rc == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static void set_conn_error(nc_error *err, int code, PGconn *pg, const char *what)
{
    char buf[512];
    copy_trimmed(buf, sizeof buf, pg ? PQerrorMessage(pg) : "out of memory");
    nc_error_set(err, code, NC_K_OPERATIONAL, "%s: %s", what, buf);
    if (code == NC_E_CONNECTION)
        memcpy(err->sqlstate, "08006", 6);
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
        c->broken = 1;
}

/* Connect to host i of a multi-host string (i < 0: the string as it is). */
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
        set_conn_error(err, NC_E_CONNECTION, pg, ctx->display);
        PQfinish(pg);
        return NULL;
    }
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    for (;;) {
        if (st == PGRES_POLLING_OK)
            break;
        if (st == PGRES_POLLING_FAILED) {
            set_conn_error(err, NC_E_CONNECTION, pg, ctx->display);
            PQfinish(pg);
            return NULL;
        }
        int rc = nc_pg_wait(PQsocket(pg), st == PGRES_POLLING_WRITING ? POLLOUT : POLLIN, deadline);
        if (rc <= 0) {
            nc_error_set(err, NC_E_CONNECTION, NC_K_OPERATIONAL,
                         "%s: %s", ctx->display, rc == 0 ? "timeout expired while connecting" : strerror(errno));
            memcpy(err->sqlstate, "08001", 6);
            PQfinish(pg);
            return NULL;
        }
        st = PQconnectPoll(pg);
    }
    if (PQsetnonblocking(pg, 1) != 0) {
        set_conn_error(err, NC_E_CONNECTION, pg, ctx->display);
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
    PQsetNoticeReceiver(pg, note_receiver, c);
    const char *ds = PQparameterStatus(pg, "DateStyle");
    if (!ds || strncmp(ds, "ISO", 3) != 0) {
        if (nc_pg_command(c, "SET DateStyle TO ISO", deadline, err) < 0) {
            nc_error_prefix(err, "%s", ctx->display);
            PQfinish(pg);
            free(c);
            return NULL;
        }
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
    }
    if (err)
        *err = last;
    return NULL;
}

static int pg_looks_alive(void *vctx, void *vconn)
{
    (void)vctx;
    nc_pg_conn *c = vconn;
    if (c->broken || PQstatus(c->pg) != CONNECTION_OK)
        return 0;
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

/* ---- cancel ------------------------------------------------------------ */

static void *cancel_main(void *arg)
{
    PGcancel *cancel = arg;
    char buf[256];
    PQcancel(cancel, buf, sizeof buf);
    PQfreeCancel(cancel);
    return NULL;
}

/* Cancel threads still waiting for a server to answer (a frozen one never
 * does): bounded, so a stream of timeouts against a dead server cannot pile
 * up threads. */
static int cancels_in_flight;
#define NC_PG_MAX_CANCELS 16

static void *cancel_main_counted(void *arg)
{
    cancel_main(arg);
    __atomic_fetch_sub(&cancels_in_flight, 1, __ATOMIC_RELAXED);
    return NULL;
}

/* 0 when a cancel request is on its way, -1 when none could be sent. */
static int start_cancel(nc_pg_conn *c)
{
    if (__atomic_add_fetch(&cancels_in_flight, 1, __ATOMIC_RELAXED) > NC_PG_MAX_CANCELS) {
        __atomic_fetch_sub(&cancels_in_flight, 1, __ATOMIC_RELAXED);
        return -1;
    }
    PGcancel *cancel = PQgetCancel(c->pg);
    if (!cancel) {
        __atomic_fetch_sub(&cancels_in_flight, 1, __ATOMIC_RELAXED);
        return -1;
    }
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 128 * 1024);
    int rc = pthread_create(&t, &a, cancel_main_counted, cancel);
    pthread_attr_destroy(&a);
    if (rc != 0) {
        PQfreeCancel(cancel);
        __atomic_fetch_sub(&cancels_in_flight, 1, __ATOMIC_RELAXED);
        return -1;
    }
    return 0;
}

/* ---- statements -------------------------------------------------------- */

static void set_result_error(nc_error *err, PGresult *res)
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
static int flush_out(nc_pg_conn *c, double deadline, nc_error *err)
{
    for (;;) {
        int rc = PQflush(c->pg);
        if (rc == 0)
            return 0;
        if (rc < 0) {
            c->broken = 1;
            set_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost while sending");
            return -1;
        }
        /* Wait for either direction: the server may be blocked sending to
         * us (notices) until we read. */
        int w = nc_pg_wait(PQsocket(c->pg), POLLIN | POLLOUT, deadline);
        if (w == 0) {
            /* Half a message is on the wire: this connection cannot be reused. */
            c->broken = 1;
            nc_error_set(err, NC_E_QUERY_TIMEOUT, NC_K_OPERATIONAL,
                         "statement deadline passed while sending it; connection discarded");
            memcpy(err->sqlstate, "57014", 6);
            return -1;
        }
        if (w < 0 || PQconsumeInput(c->pg) == 0) {
            c->broken = 1;
            set_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost while sending");
            return -1;
        }
    }
}

/* Collect results until libpq says the statement is done.  Keeps the last
 * result, or the first error.  cancel: on the deadline send a cancel and
 * wait a grace period for the statement to stop (the connection stays
 * usable); without it the connection is given up at the deadline (pings and
 * rollbacks, where the connection is dropped anyway). */
static PGresult *collect(nc_pg_conn *c, double deadline, int cancel, nc_error *err)
{
    PGresult *keep = NULL, *error = NULL;
    int cancelled = 0;
    double wait_until = deadline;
    for (;;) {
        while (PQisBusy(c->pg)) {
            int w = nc_pg_wait(PQsocket(c->pg), POLLIN, wait_until);
            if (w == 0) {
                if (!cancelled && cancel) {
                    cancelled = 1;
                    if (start_cancel(c) < 0)
                        c->broken = 1;   /* cannot cancel: the connection must go */
                    wait_until = nc_now() + NC_PG_CANCEL_GRACE;
                    continue;
                }
                /* The server did not answer (the cancel) in time. */
                c->broken = 1;
                PQclear(keep);
                PQclear(error);
                if (cancel)
                    nc_error_set(err, NC_E_QUERY_TIMEOUT, NC_K_OPERATIONAL,
                                 "statement deadline passed and the server did not answer the cancel "
                                 "within %.1f s; connection discarded", NC_PG_CANCEL_GRACE);
                else
                    nc_error_set(err, NC_E_QUERY_TIMEOUT, NC_K_OPERATIONAL,
                                 "the server did not answer before the deadline; connection discarded");
                memcpy(err->sqlstate, "57014", 6);
                return NULL;
            }
            if (w < 0 || PQconsumeInput(c->pg) == 0) {
                c->broken = 1;
                PQclear(keep);
                PQclear(error);
                set_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost");
                return NULL;
            }
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
            c->broken = 1;
            PQclear(keep);
            PQclear(error);
            nc_error_set(err, NC_E_NOT_SUPPORTED, NC_K_NOT_SUPPORTED,
                         "COPY is not supported through execute_query");
            return NULL;
        } else {
            PQclear(keep);
            keep = r;
        }
    }
    if (PQstatus(c->pg) != CONNECTION_OK)
        c->broken = 1;
    if (error) {
        PQclear(keep);
        const char *state = PQresultErrorField(error, PG_DIAG_SQLSTATE);
        if (cancelled && state && !strcmp(state, "57014")) {
            nc_error_set(err, NC_E_QUERY_TIMEOUT, NC_K_OPERATIONAL,
                         "statement deadline passed; the statement was cancelled on the server");
            memcpy(err->sqlstate, "57014", 6);
        } else {
            set_result_error(err, error);
        }
        PQclear(error);
        return NULL;
    }
    if (!keep) {
        if (c->broken) {
            set_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost");
            return NULL;
        }
        nc_error_set(err, NC_E_QUERY, NC_K_INTERNAL, "the server returned no result");
        return NULL;
    }
    if (cancelled) {
        /* Finished just as the cancel went out: the result is good, but the
         * cancel may still reach the server and hit the next statement, so
         * this connection is not reused. */
        c->broken = 1;
    }
    return keep;
}

static PGresult *pg_exec(nc_pg_conn *c, const char *sql, int nparams, const Oid *types,
                        const char *const *values, const int *lengths, const int *formats,
                        double deadline, int cancel, nc_error *err)
{
    if (c->broken || PQstatus(c->pg) != CONNECTION_OK) {
        c->broken = 1;
        set_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost");
        err->sent = NC_SENT_NO;
        return NULL;
    }
    int ok = nparams < 0 ? PQsendQuery(c->pg, sql)
                         : PQsendQueryParams(c->pg, sql, nparams, types, values, lengths, formats, 0);
    if (!ok) {
        if (PQstatus(c->pg) != CONNECTION_OK) {
            c->broken = 1;
            set_conn_error(err, NC_E_CONNECTION, c->pg, "connection lost");
        } else {
            char buf[512];
            copy_trimmed(buf, sizeof buf, PQerrorMessage(c->pg));
            nc_error_set(err, NC_E_QUERY, NC_K_PROGRAMMING, "%s", buf);
        }
        err->sent = NC_SENT_NO;
        return NULL;
    }
    if (flush_out(c, deadline, err) < 0)
        return NULL;   /* partly written, maybe: unknown */
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
    /* An empty query is the cheapest full round trip.  No cancel on the
     * deadline: a connection that does not answer a ping is dropped. */
    PGresult *r = pg_exec(c, "", -1, NULL, NULL, NULL, NULL, deadline, 0, err);
    if (!r) {
        c->broken = 1;
        return -1;
    }
    PQclear(r);
    return 0;
}

static int pg_return_state(void *vctx, void *vconn)
{
    (void)vctx;
    nc_pg_conn *c = vconn;
    if (c->broken || PQstatus(c->pg) != CONNECTION_OK)
        return -1;
    switch (PQtransactionStatus(c->pg)) {
    case PQTRANS_IDLE:
        return 0;
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
    /* No cancel grace: a connection that cannot roll back in time is dropped. */
    PGresult *r = pg_exec(c, "ROLLBACK", -1, NULL, NULL, NULL, NULL, deadline, 0, err);
    if (!r)
        return -1;
    PQclear(r);
    return PQtransactionStatus(c->pg) == PQTRANS_IDLE ? 0 : -1;
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
    .close = pg_close,
    .ctx_free = pg_ctx_free,
};
