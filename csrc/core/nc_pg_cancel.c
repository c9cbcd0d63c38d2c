/* nc_pg_cancel.c - cancel requests with a deadline (see nc_pg_cancel.h).
 *
 * libpq's PQcancel blocks until the server closes the cancel connection; a
 * frozen server never does, so a thread calling it may never come back (a
 * process-wide cap on such threads then starved the cancels of healthy
 * servers).  Instead:
 *
 * - libpq >= 17 (LIBPQ_HAS_ASYNC_CANCEL): PQcancelCreate / PQcancelStart /
 *   PQcancelPoll, libpq's own non-blocking cancel (with the connection's
 *   sslmode and gssencmode).
 * - older libpq: we send the protocol's CancelRequest ourselves on a
 *   non-blocking socket, as PQcancel does (plain, to the address the
 *   connection uses).  It needs the backend's secret key, which libpq < 17
 *   has no accessor for; it sits in the PGcancel of PQgetCancel, laid out
 *   as {SockAddr raddr; int be_pid; int be_key; ...} in every libpq from 9.x
 *   to 16.  We read it only when the runtime libpq is one of those and the
 *   struct agrees with the public API: be_pid is PQbackendPID() and raddr
 *   is the connection's peer (getpeername).
 * - otherwise (a libpq we do not know): PQcancel in a detached thread, at
 *   most NC_PG_MAX_CANCEL_THREADS at once; no acknowledgement is awaited.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "nc_pg_cancel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define NC_PG_MAX_CANCEL_THREADS 16

enum { STEP_CONNECT = 1, STEP_SEND, STEP_AWAIT_CLOSE, STEP_LIBPQ };

static void fail(nc_pg_cancel *k, const char *what, int e)
{
    nc_pg_cancel_close(k);
    k->state = NC_CANCEL_FAILED;
    if (e)
        snprintf(k->why, sizeof k->why, "%s: %s", what, strerror(e));
    else
        snprintf(k->why, sizeof k->why, "%s", what);
}

void nc_pg_cancel_close(nc_pg_cancel *k)
{
#ifdef LIBPQ_HAS_ASYNC_CANCEL
    if (k->cc) {
        PQcancelFinish(k->cc);   /* closes its socket */
        k->cc = NULL;
        k->fd = -1;
    }
#endif
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
}

#ifndef LIBPQ_HAS_ASYNC_CANCEL
/* ---- the fallback: PQcancel in a thread ---------------------------------- */

static int threads_in_flight;

/* A forked child has none of its parent's cancel threads: its count starts
 * at zero (an atomic store is all a pthread_atfork child handler may do). */
static void reset_in_child(void)
{
    __atomic_store_n(&threads_in_flight, 0, __ATOMIC_RELAXED);
}

static void register_reset(void)
{
    pthread_atfork(NULL, NULL, reset_in_child);
}

static void *cancel_thread(void *arg)
{
    PGcancel *cancel = arg;
    char buf[256];
    PQcancel(cancel, buf, sizeof buf);
    PQfreeCancel(cancel);
    __atomic_fetch_sub(&threads_in_flight, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void start_thread(nc_pg_cancel *k, PGcancel *cancel)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_reset);
    int n = __atomic_add_fetch(&threads_in_flight, 1, __ATOMIC_RELAXED);
    if (n > NC_PG_MAX_CANCEL_THREADS) {
        __atomic_fetch_sub(&threads_in_flight, 1, __ATOMIC_RELAXED);
        PQfreeCancel(cancel);
        snprintf(k->why, sizeof k->why,
                 "no cancel sent: %d earlier cancel requests still wait for their servers", n - 1);
        k->state = NC_CANCEL_FAILED;
        return;
    }
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 128 * 1024);
    int rc = pthread_create(&t, &a, cancel_thread, cancel);
    pthread_attr_destroy(&a);
    if (rc != 0) {
        __atomic_fetch_sub(&threads_in_flight, 1, __ATOMIC_RELAXED);
        PQfreeCancel(cancel);
        fail(k, "no cancel sent: cannot start a thread", rc);
        return;
    }
    k->state = NC_CANCEL_UNTRACKED;
}

/* ---- our own CancelRequest (libpq < 17) ---------------------------------- */

/* The head of libpq's struct pg_cancel, 9.x to 16 (libpq-int.h, pqcomm.h). */
struct libpq_cancel_head {
    struct {
        struct sockaddr_storage addr;
        socklen_t salen;
    } raddr;
    int be_pid;
    int be_key;
};

static int same_peer(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    switch (a->ss_family) {
    case AF_INET: {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr);
    }
    case AF_UNIX: {
        const struct sockaddr_un *x = (const void *)a, *y = (const void *)b;
        return x->sun_path[0] && !strncmp(x->sun_path, y->sun_path, sizeof x->sun_path);
    }
    default:
        return 0;
    }
}

/* The address and key to cancel pg's statement with, from cancel; 0 when
 * the struct does not look as expected. */
static int read_cancel_head(PGconn *pg, const PGcancel *cancel, struct libpq_cancel_head *out)
{
    int v = PQlibVersion();
    if (v < 90000 || v >= 170000)
        return 0;
    memcpy(out, cancel, sizeof *out);
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    memset(&peer, 0, sizeof peer);
    if (out->be_pid == 0 || out->be_pid != PQbackendPID(pg) || out->raddr.salen == 0 ||
        out->raddr.salen > sizeof out->raddr.addr || getpeername(PQsocket(pg), (struct sockaddr *)&peer, &len) < 0)
        return 0;
    return same_peer(&out->raddr.addr, &peer);
}

static void put32(unsigned char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
}

static void start_own(nc_pg_cancel *k, const struct libpq_cancel_head *h)
{
    put32(k->packet, 16);
    put32(k->packet + 4, (1234u << 16) | 5678u);   /* CANCEL_REQUEST_CODE */
    put32(k->packet + 8, (uint32_t)h->be_pid);
    put32(k->packet + 12, (uint32_t)h->be_key);
    k->fd = socket(h->raddr.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        fail(k, "no cancel sent: socket", errno);
        return;
    }
    k->state = NC_CANCEL_PENDING;
    if (connect(k->fd, (const struct sockaddr *)&h->raddr.addr, h->raddr.salen) == 0) {
        k->step = STEP_SEND;
        nc_pg_cancel_step(k, POLLOUT);
        return;
    }
    if (errno == EINPROGRESS) {
        k->step = STEP_CONNECT;
        k->events = POLLOUT;
        return;
    }
    /* EAGAIN on a Unix socket: the server's listen queue is full. */
    fail(k, "no cancel sent: cannot connect to the server", errno);
}

#endif

void nc_pg_cancel_step(nc_pg_cancel *k, short revents)
{
    if (k->state != NC_CANCEL_PENDING)
        return;
#ifdef LIBPQ_HAS_ASYNC_CANCEL
    (void)revents;
    {
        PostgresPollingStatusType st = PQcancelPoll(k->cc);
        if (st == PGRES_POLLING_OK) {
            nc_pg_cancel_close(k);
            k->state = NC_CANCEL_DONE;
        } else if (st == PGRES_POLLING_FAILED) {
            char msg[160];
            snprintf(msg, sizeof msg, "no cancel sent: %s", PQcancelErrorMessage(k->cc));
            fail(k, msg, 0);
        } else {
            k->fd = PQcancelSocket(k->cc);
            k->events = st == PGRES_POLLING_WRITING ? POLLOUT : POLLIN;
        }
        return;
    }
#else
    if (k->step == STEP_CONNECT) {
        int e = 0;
        socklen_t len = sizeof e;
        if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
            e = errno;
        if (e) {
            fail(k, "no cancel sent: cannot connect to the server", e);
            return;
        }
        if (!(revents & POLLOUT))
            return;
        k->step = STEP_SEND;
    }
    if (k->step == STEP_SEND) {
        while (k->sent < (int)sizeof k->packet) {
            ssize_t n = send(k->fd, k->packet + k->sent, sizeof k->packet - (size_t)k->sent, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                k->events = POLLOUT;
                return;
            }
            if (n <= 0) {
                fail(k, "no cancel sent: cannot write to the server", n < 0 ? errno : EPIPE);
                return;
            }
            k->sent += (int)n;
        }
        /* As PQcancel: the server closing the connection says the request
         * was processed (the backend has its signal). */
        k->step = STEP_AWAIT_CLOSE;
        k->events = POLLIN;
        return;
    }
    /* STEP_AWAIT_CLOSE */
    char buf[64];
    for (;;) {
        ssize_t n = recv(k->fd, buf, sizeof buf, 0);
        if (n > 0)
            continue;   /* the server says nothing here; ignore */
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        break;          /* closed (or reset, which PQcancel takes as done too) */
    }
    nc_pg_cancel_close(k);
    k->state = NC_CANCEL_DONE;
#endif
}

void nc_pg_cancel_start(nc_pg_cancel *k, PGconn *pg)
{
    memset(k, 0, sizeof *k);
    k->fd = -1;
#ifdef LIBPQ_HAS_ASYNC_CANCEL
    k->cc = PQcancelCreate(pg);
    if (!k->cc || PQcancelStatus(k->cc) == CONNECTION_BAD || !PQcancelStart(k->cc)) {
        char msg[160];
        snprintf(msg, sizeof msg, "no cancel sent: %s", k->cc ? PQcancelErrorMessage(k->cc) : "out of memory");
        fail(k, msg, 0);
        return;
    }
    k->state = NC_CANCEL_PENDING;
    k->step = STEP_LIBPQ;
    nc_pg_cancel_step(k, 0);
    return;
#else
    PGcancel *cancel = PQgetCancel(pg);
    if (!cancel) {
        fail(k, "no cancel sent: the connection has no cancel key", 0);
        return;
    }
    struct libpq_cancel_head h;
    if (read_cancel_head(pg, cancel, &h)) {
        PQfreeCancel(cancel);
        start_own(k, &h);
        return;
    }
    start_thread(k, cancel);   /* takes cancel */
#endif
}
