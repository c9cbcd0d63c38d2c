/* nc_probe.c - health probes of one endpoint (see nc_probe.h).
 *
 * The probe connection is opened with the pool's backend ops.  On
 * PostgreSQL the probe query is driven here on its PGconn: PQsendQuery, then
 * poll() on the socket until the deadline; on the deadline the connection is
 * simply dropped (a probe has no use for a cancel and its grace period, and
 * a server that does not answer in time is unhealthy as far as the monitor
 * is concerned).  Other backends are pinged through ops->ping.
 *
 * Lifetime: refs counts the owner and every probe in flight; the last one
 * out closes the connection, frees the prober and drops the pool reference.
 * So a monitor thread still inside a probe after its monitor gave up waiting
 * for it never touches freed memory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nc_probe.h"
#include "nc_pg.h"
#include "nc_replica.h"
#include "nc_time.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The monitor's probe: the role, and the WAL position read routing
 * measures replica lag with (a primary's current position, a standby's
 * replayed one), in one cheap round trip.  Servers before 10 (other
 * function names) get the role only. */
#define WAL_LSN_SQL                                                                                 \
    " (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text"
#define ROLE_SQL "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')," WAL_LSN_SQL
#define ROLE_SQL_OLD "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')"
#define ROLE_LSN_COL 2
#define DETAIL_LSN_COL 7

/* The status display's probe: the same two columns first, then the version
 * and the replication state; a second statement lists a primary's standbys
 * (pg_current_wal_lsn() is only evaluated off recovery, where it works). */
#define DETAIL_SQL                                                                                  \
    "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only'),"                 \
    " current_setting('server_version'),"                                                           \
    " CASE WHEN pg_is_in_recovery() THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(),"                \
    "   pg_last_wal_replay_lsn())::float8 END,"                                                     \
    " CASE WHEN pg_is_in_recovery() THEN extract(epoch FROM now() -"                                \
    "   pg_last_xact_replay_timestamp())::float8 END,"                                              \
    " CASE WHEN pg_is_in_recovery() THEN (SELECT status FROM pg_stat_wal_receiver LIMIT 1) END,"    \
    " CASE WHEN pg_is_in_recovery() THEN (SELECT sender_host || ':' || sender_port"                 \
    "   FROM pg_stat_wal_receiver LIMIT 1) END," WAL_LSN_SQL ";"                                    \
    "SELECT application_name, client_addr::text, state, sync_state,"                               \
    " CASE WHEN pg_is_in_recovery() THEN NULL ELSE"                                                 \
    "   pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 END,"                             \
    " extract(epoch FROM replay_lag)::float8"                                                       \
    " FROM pg_stat_replication ORDER BY application_name"

struct nc_prober {
    nc_pool *pool;              /* referenced: its ops and ctx open the probe connection */
    const nc_backend_ops *ops;
    void *ctx;
    int pg;                     /* the libpq backend: run the role query */
    int detail;
    void *conn;                 /* the kept-open probe connection, NULL none (under mu) */
    pthread_mutex_t mu;         /* one probe at a time */
    pthread_mutex_t ref_mu;     /* guards refs and freed */
    int refs;                   /* the owner + probes in flight */
    int freed;
    int closed;                 /* nc_prober_close: no more probes, no kept connection */
    int idle_pending;           /* nc_prober_idle found a probe running: it closes as it ends */
};

nc_prober *nc_prober_new(nc_pool *pool, int detail, nc_error *err)
{
    nc_prober *p = calloc(1, sizeof *p);
    if (!p) {
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "cannot create a mutex");
        return NULL;
    }
    if (pthread_mutex_init(&p->ref_mu, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "cannot create a mutex");
        return NULL;
    }
    nc_pool_ref(pool);
    p->pool = pool;
    p->ops = nc_pool_ops(pool);
    p->ctx = nc_pool_ctx(pool);
    p->pg = p->ops == &nc_pg_ops;
    p->detail = detail;
    p->refs = 1;
    return p;
}

static void prober_destroy(nc_prober *p)
{
    if (p->conn)
        p->ops->close(p->ctx, p->conn);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->ref_mu);
    nc_pool_unref(p->pool);
    free(p);
}

static void prober_unref(nc_prober *p)
{
    pthread_mutex_lock(&p->ref_mu);
    int last = --p->refs == 0;
    pthread_mutex_unlock(&p->ref_mu);
    if (last)
        prober_destroy(p);
}

static int is_closed(nc_prober *p)
{
    pthread_mutex_lock(&p->ref_mu);
    int c = p->closed;
    pthread_mutex_unlock(&p->ref_mu);
    return c;
}

void nc_prober_close(nc_prober *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->ref_mu);
    p->closed = 1;
    pthread_mutex_unlock(&p->ref_mu);
    /* A probe holding mu closes the connection itself as it ends: never
     * wait for it here. */
    if (pthread_mutex_trylock(&p->mu) == 0) {
        if (p->conn)
            p->ops->close(p->ctx, p->conn);
        p->conn = NULL;
        pthread_mutex_unlock(&p->mu);
    }
}

void nc_prober_idle(nc_prober *p)
{
    if (!p)
        return;
    /* Never wait for a probe running now: it closes the connection itself
     * as it ends (idle_pending, set before the try, as for closed). */
    pthread_mutex_lock(&p->ref_mu);
    p->idle_pending = 1;
    pthread_mutex_unlock(&p->ref_mu);
    if (pthread_mutex_trylock(&p->mu) == 0) {
        if (p->conn)
            p->ops->close(p->ctx, p->conn);
        p->conn = NULL;
        pthread_mutex_lock(&p->ref_mu);
        p->idle_pending = 0;
        pthread_mutex_unlock(&p->ref_mu);
        pthread_mutex_unlock(&p->mu);
    }
}

/* 1 once when nc_prober_idle asked for the connection to go while a probe
 * ran. */
static int take_idle(nc_prober *p)
{
    pthread_mutex_lock(&p->ref_mu);
    int v = p->idle_pending;
    p->idle_pending = 0;
    pthread_mutex_unlock(&p->ref_mu);
    return v;
}

void nc_prober_free(nc_prober *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->ref_mu);
    int twice = p->freed;
    p->freed = 1;
    pthread_mutex_unlock(&p->ref_mu);
    if (!twice)
        prober_unref(p);
}

/* 0 when the caller may probe (then prober_unref), -1 when it is closed. */
static int prober_enter(nc_prober *p)
{
    pthread_mutex_lock(&p->ref_mu);
    int ok = !p->freed && !p->closed;
    if (ok)
        p->refs++;
    pthread_mutex_unlock(&p->ref_mu);
    return ok ? 0 : -1;
}

/* Take mu before deadline: 0 ok, -1 the deadline passed first. */
static int lock_until(pthread_mutex_t *mu, double deadline)
{
    if (isinf(deadline))
        return pthread_mutex_lock(mu) == 0 ? 0 : -1;
    if (pthread_mutex_trylock(mu) == 0)
        return 0;
    /* pthread_mutex_timedlock takes a CLOCK_REALTIME time. */
    double until = nc_wall() + (deadline - nc_now());
    struct timespec ts = nc_abstime(until);
    for (;;) {
        int rc = pthread_mutex_timedlock(mu, &ts);
        if (rc == 0)
            return 0;
        if (rc != EINTR)
            return -1;
    }
}

static void fail(nc_probe_result *out, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(nc_probe_result *out, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    nc_text_vset(out->error, sizeof out->error, fmt, ap);
    va_end(ap);
    out->error_code = code;
}

static void conn_error(nc_probe_result *out, PGconn *pg, const char *what)
{
    const char *m = pg ? PQerrorMessage(pg) : "";
    size_t len = strlen(m);
    while (len > 0 && (m[len - 1] == '\n' || m[len - 1] == ' '))
        len--;
    if (len)
        fail(out, NC_E_CONNECTION, "%s: %.*s", what, (int)len, m);
    else
        fail(out, NC_E_CONNECTION, "%s", what);
}

/* ---- the PostgreSQL probe query --------------------------------------------------- */

static double number_or_nan(PGresult *r, int row, int col)
{
    if (col >= PQnfields(r) || PQgetisnull(r, row, col))
        return NAN;
    return strtod(PQgetvalue(r, row, col), NULL);
}

static void text_of(char *dst, size_t cap, PGresult *r, int row, int col)
{
    if (col >= PQnfields(r) || PQgetisnull(r, row, col))
        dst[0] = '\0';
    else
        nc_text_set(dst, cap, "%s", PQgetvalue(r, row, col));
}

static void read_detail(PGresult *first, PGresult *second, nc_probe_result *out)
{
    out->detailed = 1;
    out->in_recovery = PQgetvalue(first, 0, 0)[0] == 't';
    text_of(out->server_version, sizeof out->server_version, first, 0, 2);
    out->replay_lag_bytes = number_or_nan(first, 0, 3);
    out->replay_delay = number_or_nan(first, 0, 4);
    text_of(out->receiver_status, sizeof out->receiver_status, first, 0, 5);
    text_of(out->upstream, sizeof out->upstream, first, 0, 6);
    int n = second ? PQntuples(second) : 0;
    if (n > NC_PROBE_MAX_STANDBYS)
        n = NC_PROBE_MAX_STANDBYS;
    for (int i = 0; i < n; i++) {
        nc_probe_standby *s = &out->standbys[i];
        text_of(s->name, sizeof s->name, second, i, 0);
        text_of(s->client_addr, sizeof s->client_addr, second, i, 1);
        text_of(s->state, sizeof s->state, second, i, 2);
        text_of(s->sync_state, sizeof s->sync_state, second, i, 3);
        s->lag_bytes = number_or_nan(second, i, 4);
        s->lag_seconds = number_or_nan(second, i, 5);
    }
    out->nstandbys = n;
}

/* Run the probe query on pg before deadline.  0 with out->role (and the
 * detail), -1 with out->error. */
static int run_query(PGconn *pg, int detail, double deadline, nc_probe_result *out)
{
    int wal = PQserverVersion(pg) >= 100000;
    if (!PQsendQuery(pg, detail ? DETAIL_SQL : wal ? ROLE_SQL : ROLE_SQL_OLD)) {
        conn_error(out, pg, "probe query could not be sent");
        return -1;
    }
    /* Send it all (the connection is non-blocking). */
    for (;;) {
        int rc = PQflush(pg);
        if (rc == 0)
            break;
        if (rc < 0) {
            conn_error(out, pg, "connection lost");
            return -1;
        }
        int w = nc_pg_wait(PQsocket(pg), POLLIN | POLLOUT, deadline);
        if (w == 0) {
            fail(out, NC_E_QUERY_TIMEOUT, "probe timed out");
            return -1;
        }
        if (w < 0 || !PQconsumeInput(pg)) {
            conn_error(out, pg, "connection lost");
            return -1;
        }
    }
    PGresult *rows[2] = {NULL, NULL};
    int nrows = 0, failed = 0;
    for (;;) {
        while (PQisBusy(pg)) {
            int w = nc_pg_wait(PQsocket(pg), POLLIN, deadline);
            if (w == 0 || w < 0 || !PQconsumeInput(pg)) {
                PQclear(rows[0]);
                PQclear(rows[1]);
                if (w == 0)
                    fail(out, NC_E_QUERY_TIMEOUT, "probe timed out");
                else
                    conn_error(out, pg, "connection lost");
                return -1;
            }
        }
        PGresult *r = PQgetResult(pg);
        if (!r)
            break;
        if (PQresultStatus(r) == PGRES_TUPLES_OK && !failed && nrows < 2) {
            rows[nrows++] = r;
            continue;
        }
        if (!failed && PQresultStatus(r) != PGRES_TUPLES_OK) {
            failed = 1;
            const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
            fail(out, NC_E_QUERY, "probe query failed: %s", m ? m : PQresStatus(PQresultStatus(r)));
        }
        PQclear(r);
    }
    if (failed || !rows[0] || PQntuples(rows[0]) < 1 || PQnfields(rows[0]) < 2) {
        if (!failed)
            fail(out, NC_E_QUERY, "probe query returned no row");
        PQclear(rows[0]);
        PQclear(rows[1]);
        return -1;
    }
    const char *rec = PQgetvalue(rows[0], 0, 0);
    const char *ro = PQgetvalue(rows[0], 0, 1);
    int read_only = (rec && rec[0] == 't') || (ro && !strcmp(ro, "on"));
    out->role = read_only ? NC_ROLE_READ_ONLY : NC_ROLE_WRITABLE;
    int lsn_col = detail ? DETAIL_LSN_COL : ROLE_LSN_COL;
    if (lsn_col < PQnfields(rows[0]) && !PQgetisnull(rows[0], 0, lsn_col))
        out->have_lsn = nc_lsn_parse(PQgetvalue(rows[0], 0, lsn_col), &out->lsn) == 0;
    out->in_recovery = rec && rec[0] == 't';
    if (detail)
        read_detail(rows[0], rows[1], out);
    PQclear(rows[0]);
    PQclear(rows[1]);
    return 0;
}

/* One line: control characters (libpq's "\n\tIs the server running ...")
 * become single spaces, no trailing space. */
static void one_line(char *s)
{
    char *o = s;
    for (const char *i = s; *i; i++) {
        unsigned char c = (unsigned char)*i;
        if (c < 0x20 || c == 0x7F || c == ' ') {
            if (o > s && o[-1] != ' ')
                *o++ = ' ';
        } else {
            *o++ = (char)c;
        }
    }
    while (o > s && o[-1] == ' ')
        o--;
    *o = '\0';
}

/* ---- one probe ---------------------------------------------------------------------- */

int nc_prober_probe(nc_prober *p, double deadline, nc_probe_result *out)
{
    memset(out, 0, sizeof *out);
    out->role = NC_ROLE_UNKNOWN;
    out->replay_lag_bytes = out->replay_delay = NAN;
    if (prober_enter(p) < 0) {
        fail(out, NC_E_POOL_CLOSED, "prober is closed");
        return -1;
    }
    if (lock_until(&p->mu, deadline) < 0) {
        fail(out, NC_E_QUERY_TIMEOUT, "probe timed out waiting for an earlier probe");
        prober_unref(p);
        return -1;
    }
    double t0 = nc_now();
    int rc = 0;
    if (p->conn && !p->ops->looks_alive(p->ctx, p->conn)) {
        /* Closed by the server since the last probe (a restart, a
         * terminated backend): not a verdict on the server, connect again. */
        p->ops->close(p->ctx, p->conn);
        p->conn = NULL;
    }
    if (!p->conn) {
        nc_error err;
        nc_error_clear(&err);
        p->conn = p->ops->connect(p->ctx, deadline, &err);
        if (!p->conn) {
            fail(out, err.code ? err.code : NC_E_CONNECTION, "%s", err.message[0] ? err.message : "connect failed");
            rc = -1;
        }
        out->connect_time = nc_now() - t0;
    }
    double q0 = nc_now();
    if (rc == 0) {
        if (p->pg) {
            rc = run_query(((nc_pg_conn *)p->conn)->pg, p->detail, deadline, out);
        } else {
            nc_error err;
            nc_error_clear(&err);
            rc = p->ops->ping(p->ctx, p->conn, deadline, &err);
            if (rc > 0) {
                /* No answer by the probe's deadline: a failed probe. */
                rc = -1;
                if (!err.message[0])
                    nc_error_set(&err, NC_E_CONNECTION, NC_K_OPERATIONAL, "no answer before the probe's deadline");
            }
            if (rc < 0)
                fail(out, err.code ? err.code : NC_E_CONNECTION, "%s", err.message[0] ? err.message : "probe failed");
        }
        if (rc < 0) {
            p->ops->close(p->ctx, p->conn);
            p->conn = NULL;
            out->role = NC_ROLE_UNKNOWN;
        }
    }
    double now = nc_now();
    out->ok = rc == 0;
    if (rc == 0) {
        out->query_time = now - q0;
        out->latency = now - t0;
    } else {
        if (!out->error[0])
            fail(out, NC_E_CONNECTION, "probe failed");
        one_line(out->error);
        nc_utf8_fix_tail(out->error);
    }
    pthread_mutex_unlock(&p->mu);
    /* Closed (or idled: an endpoint that left) while this probe ran:
     * nc_prober_close / nc_prober_idle could not take mu, so the connection
     * is ours to close (the flag was set before their try). */
    if ((is_closed(p) || take_idle(p)) && pthread_mutex_trylock(&p->mu) == 0) {
        if (p->conn)
            p->ops->close(p->ctx, p->conn);
        p->conn = NULL;
        pthread_mutex_unlock(&p->mu);
    }
    prober_unref(p);
    return rc;
}
