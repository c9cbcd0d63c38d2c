/* nc_probe.c - health probes of one PostgreSQL endpoint (see nc_probe.h).
 *
 * The probe query is driven here on the PGconn of an nc_pg_conn opened with
 * nc_pg_ops.connect: PQsendQuery, then poll() on the socket until the
 * deadline.  On the deadline the connection is simply dropped (PQfinish): a
 * probe has no use for a cancel and its grace period, and a server that
 * does not answer in time is unhealthy as far as the monitor is concerned.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nc_probe.h"
#include "nc_failover.h"
#include "nc_pg.h"
#include "nc_time.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_SQL "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')"

struct nc_pg_prober {
    void *ctx;                  /* nc_pg_ctx */
    nc_pg_conn *conn;           /* the kept-open probe connection, NULL none (under mu) */
    pthread_mutex_t mu;         /* one probe at a time */
    pthread_mutex_t ref_mu;     /* guards refs and freed */
    int refs;                   /* probes in flight */
    int freed;                  /* nc_pg_prober_free was called */
};

nc_pg_prober *nc_pg_prober_new(const char *conninfo, nc_error *err)
{
    void *ctx = nc_pg_ctx_new(conninfo, err);
    if (!ctx)
        return NULL;
    nc_pg_prober *p = calloc(1, sizeof *p);
    if (!p || pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        nc_pg_ops.ctx_free(ctx);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&p->ref_mu, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        nc_pg_ops.ctx_free(ctx);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory");
        return NULL;
    }
    p->ctx = ctx;
    return p;
}

static void prober_destroy(nc_pg_prober *p)
{
    if (p->conn)
        nc_pg_ops.close(p->ctx, p->conn);
    nc_pg_ops.ctx_free(p->ctx);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->ref_mu);
    free(p);
}

/* 0 when the caller may use p (then call prober_leave), -1 when it is freed. */
static int prober_enter(nc_pg_prober *p)
{
    pthread_mutex_lock(&p->ref_mu);
    int ok = !p->freed;
    if (ok)
        p->refs++;
    pthread_mutex_unlock(&p->ref_mu);
    return ok ? 0 : -1;
}

static void prober_leave(nc_pg_prober *p)
{
    pthread_mutex_lock(&p->ref_mu);
    int last = --p->refs == 0 && p->freed;
    pthread_mutex_unlock(&p->ref_mu);
    if (last)
        prober_destroy(p);
}

void nc_pg_prober_free(nc_pg_prober *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->ref_mu);
    p->freed = 1;
    int now = p->refs == 0;
    pthread_mutex_unlock(&p->ref_mu);
    if (now)
        prober_destroy(p);
}

/* Take p->mu before deadline: 0 ok, -1 the deadline passed first. */
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

static void conn_error(char *errbuf, size_t errlen, PGconn *pg, const char *what)
{
    const char *m = pg ? PQerrorMessage(pg) : "";
    size_t len = strlen(m);
    while (len > 0 && (m[len - 1] == '\n' || m[len - 1] == ' '))
        len--;
    if (len)
        snprintf(errbuf, errlen, "%s: %.*s", what, (int)len, m);
    else
        snprintf(errbuf, errlen, "%s", what);
}

/* Run the probe query on pg before deadline.  0 with *role, -1 with errbuf. */
static int run_probe_query(PGconn *pg, double deadline, int *role, char *errbuf, size_t errlen)
{
    if (!PQsendQuery(pg, PROBE_SQL)) {
        conn_error(errbuf, errlen, pg, "probe query could not be sent");
        return -1;
    }
    /* Send it all (the connection is non-blocking). */
    for (;;) {
        int rc = PQflush(pg);
        if (rc == 0)
            break;
        if (rc < 0) {
            conn_error(errbuf, errlen, pg, "connection lost");
            return -1;
        }
        int w = nc_pg_wait(PQsocket(pg), POLLIN | POLLOUT, deadline);
        if (w == 0) {
            snprintf(errbuf, errlen, "probe timed out");
            return -1;
        }
        if (w < 0 || !PQconsumeInput(pg)) {
            conn_error(errbuf, errlen, pg, "connection lost");
            return -1;
        }
    }
    PGresult *keep = NULL;
    int failed = 0;
    for (;;) {
        while (PQisBusy(pg)) {
            int w = nc_pg_wait(PQsocket(pg), POLLIN, deadline);
            if (w == 0) {
                PQclear(keep);
                snprintf(errbuf, errlen, "probe timed out");
                return -1;
            }
            if (w < 0 || !PQconsumeInput(pg)) {
                PQclear(keep);
                conn_error(errbuf, errlen, pg, "connection lost");
                return -1;
            }
        }
        PGresult *r = PQgetResult(pg);
        if (!r)
            break;
        if (PQresultStatus(r) == PGRES_TUPLES_OK && !keep && !failed) {
            keep = r;
            continue;
        }
        if (!failed && PQresultStatus(r) != PGRES_TUPLES_OK) {
            failed = 1;
            const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
            snprintf(errbuf, errlen, "probe query failed: %s", m ? m : PQresStatus(PQresultStatus(r)));
        }
        PQclear(r);
    }
    if (failed || !keep || PQntuples(keep) < 1 || PQnfields(keep) < 2) {
        if (!failed)
            snprintf(errbuf, errlen, "probe query returned no row");
        PQclear(keep);
        return -1;
    }
    const char *rec = PQgetvalue(keep, 0, 0);
    const char *ro = PQgetvalue(keep, 0, 1);
    int read_only = (rec && rec[0] == 't') || (ro && !strcmp(ro, "on"));
    *role = read_only ? NC_ROLE_READ_ONLY : NC_ROLE_WRITABLE;
    PQclear(keep);
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

int nc_pg_prober_probe(nc_pg_prober *p, double deadline, double *latency, int *role, char *errbuf,
                       size_t errlen)
{
    *latency = 0;
    *role = NC_ROLE_UNKNOWN;
    if (errlen)
        errbuf[0] = '\0';
    if (prober_enter(p) < 0) {
        snprintf(errbuf, errlen, "prober is closed");
        return -1;
    }
    if (lock_until(&p->mu, deadline) < 0) {
        snprintf(errbuf, errlen, "probe timed out waiting for an earlier probe");
        prober_leave(p);
        return -1;
    }
    double t0 = nc_now();
    int rc = 0;
    if (p->conn && !nc_pg_ops.looks_alive(p->ctx, p->conn)) {
        /* Closed by the server since the last probe (a restart, a
         * terminated backend): not a verdict on the server, connect again. */
        nc_pg_ops.close(p->ctx, p->conn);
        p->conn = NULL;
    }
    if (!p->conn) {
        nc_error err;
        nc_error_clear(&err);
        p->conn = nc_pg_ops.connect(p->ctx, deadline, &err);
        if (!p->conn) {
            snprintf(errbuf, errlen, "%s", err.message[0] ? err.message : "connect failed");
            rc = -1;
        }
    } else {
        t0 = nc_now();   /* already open: the round trip only */
    }
    if (rc == 0 && run_probe_query(p->conn->pg, deadline, role, errbuf, errlen) < 0) {
        nc_pg_ops.close(p->ctx, p->conn);
        p->conn = NULL;
        *role = NC_ROLE_UNKNOWN;
        rc = -1;
    }
    if (rc == 0)
        *latency = nc_now() - t0;
    else if (errlen)
        one_line(errbuf);
    pthread_mutex_unlock(&p->mu);
    prober_leave(p);
    return rc;
}
