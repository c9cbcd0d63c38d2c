/* nc_patroni_follow.c - a route's endpoints in step with Patroni's members
 * (see nc_patroni_follow.h). */
#include "nc_patroni_follow.h"
#include "nc_pg.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nc_patroni_follow {
    pthread_mutex_t mu;         /* one apply at a time, and the status */
    int refs;                   /* the owner's and each status read's (nc_patroni_follow_ref); atomic */
    nc_route *route;            /* referenced */
    char *dsn;                  /* the template: may hold a password, wiped when freed */
    nc_pool_config pool_cfg;
    int n;
    nc_follow_endpoint eps[NC_MONITOR_ENDPOINTS_MAX];
    nc_pool *own[NC_MONITOR_ENDPOINTS_MAX];   /* the pools made here (owner's use), NULL for the first ones */
    int added, removed, returned, refusals;
    char last_refusal[NC_ERRMSG_MAX];
};

static void wipe_free(char *s)
{
    if (!s)
        return;
    volatile char *v = s;
    while (*v)
        *v++ = 0;
    free(s);
}

/* ---- the DSN of a member --------------------------------------------------------- */

static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

static int only_spaces(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '\f' && *s != '\v')
            return 0;
    return 1;
}

char *nc_patroni_member_dsn(const char *dsn, const char *host, int port)
{
    size_t dl = strlen(dsn), hl = strlen(host);
    /* worst case: every host byte tripled (%XX) or doubled (\x), plus the rest */
    size_t cap = dl + 3 * hl + 64;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t o = 0;
    if (strstr(dsn, "://")) {
        memcpy(out, dsn, dl);
        o = dl;
        o += (size_t)snprintf(out + o, cap - o, "%shost=", strchr(dsn, '?') ? "&" : "?");
        for (const unsigned char *h = (const unsigned char *)host; *h; h++) {
            if (unreserved(*h))
                out[o++] = (char)*h;
            else
                o += (size_t)snprintf(out + o, cap - o, "%%%02X", *h);
        }
        snprintf(out + o, cap - o, "&port=%d", port);
        return out;
    }
    if (!only_spaces(dsn)) {
        memcpy(out, dsn, dl);
        o = dl;
        out[o++] = ' ';
    }
    o += (size_t)snprintf(out + o, cap - o, "host='");
    for (const char *h = host; *h; h++) {
        if (*h == '\\' || *h == '\'')
            out[o++] = '\\';
        out[o++] = *h;
    }
    snprintf(out + o, cap - o, "' port=%d", port);
    return out;
}

/* ---- following -------------------------------------------------------------------- */

nc_patroni_follow *nc_patroni_follow_new(nc_route *r, const char *const *names, const char *const *hosts,
                                         const int *ports, int n, const char *dsn, const nc_pool_config *pool_cfg,
                                         nc_error *err)
{
    if (!r || n < 0 || n > NC_MONITOR_ENDPOINTS_MAX || !dsn || !pool_cfg) {
        nc_error_set(err, NC_E_CONFIG, NC_K_INTERFACE, "Patroni follow: bad arguments");
        return NULL;
    }
    nc_patroni_follow *f = calloc(1, sizeof *f);
    if (!f || !(f->dsn = strdup(dsn)) || pthread_mutex_init(&f->mu, NULL) != 0) {
        if (f)
            wipe_free(f->dsn);
        free(f);
        nc_error_set(err, NC_E_INTERNAL, NC_K_INTERNAL, "out of memory making a Patroni follower");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        nc_text_set(f->eps[i].name, sizeof f->eps[i].name, "%s", names[i]);
        nc_text_set(f->eps[i].host, sizeof f->eps[i].host, "%s", hosts[i] ? hosts[i] : "");
        f->eps[i].port = ports[i];
    }
    f->n = n;
    f->refs = 1;
    f->pool_cfg = *pool_cfg;
    f->pool_cfg.leak_timeout = 0;   /* nobody would take its leak reports (the binding keeps no stacks for it) */
    nc_route_ref(r);
    f->route = r;
    return f;
}

static void refuse(nc_patroni_follow *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(nc_patroni_follow *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    nc_text_vset(f->last_refusal, sizeof f->last_refusal, fmt, ap);
    va_end(ap);
    f->refusals++;
}

static int find(const nc_patroni_follow *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->eps[i].name, name) == 0)
            return i;
    return -1;
}

static int listed(const nc_patroni_cluster *c, const char *name)
{
    for (int k = 0; k < c->n; k++)
        if (strcmp(c->members[k].name, name) == 0)
            return 1;
    return 0;
}

/* A new member: its pool, then its slot.  With f->mu held. */
static void add_member(nc_patroni_follow *f, const nc_patroni_member *mb)
{
    if (f->n >= NC_MONITOR_ENDPOINTS_MAX || f->n >= nc_route_capacity(f->route)) {
        refuse(f, "member %s not followed: the failover manager holds at most %d endpoints (removed ones included)",
               mb->name, nc_route_capacity(f->route));
        return;
    }
    nc_error err;
    nc_error_clear(&err);
    char *dsn = nc_patroni_member_dsn(f->dsn, mb->host, mb->port);
    void *ctx = dsn ? nc_pg_ctx_new(dsn, &err) : NULL;
    wipe_free(dsn);
    nc_pool *p = ctx ? nc_pool_new(&f->pool_cfg, &nc_pg_ops, ctx, &err) : NULL;
    if (!p) {
        refuse(f, "member %s not followed: %s", mb->name, err.message[0] ? err.message : "out of memory");
        return;
    }
    int i = nc_route_add(f->route, p, f->n + 1, &err);
    if (i < 0) {
        nc_pool_shutdown(p, 0);
        nc_pool_free(p);
        refuse(f, "member %s not followed: %s", mb->name, err.message);
        return;
    }
    /* The route and this list grow together (one apply at a time, and
     * nothing else adds to a followed route). */
    nc_follow_endpoint *e = &f->eps[i];
    memset(e, 0, sizeof *e);
    nc_text_set(e->name, sizeof e->name, "%s", mb->name);
    nc_text_set(e->host, sizeof e->host, "%s", mb->host);
    e->port = mb->port;
    e->added = 1;
    f->own[i] = p;
    f->n = i + 1;
    f->added++;
}

void nc_patroni_follow_apply(nc_patroni_follow *f, const nc_patroni_cluster *c)
{
    pthread_mutex_lock(&f->mu);
    for (int k = 0; k < c->n; k++) {
        const nc_patroni_member *mb = &c->members[k];
        int i = find(f, mb->name);
        if (i < 0) {
            if (mb->host[0] && mb->port > 0)
                add_member(f, mb);   /* no address yet: looked at again next time */
            continue;
        }
        nc_follow_endpoint *e = &f->eps[i];
        if (!e->removed)
            continue;
        if (strcmp(e->host, mb->host) != 0 || e->port != mb->port) {
            refuse(f, "member %s came back at %s:%d, not at %s:%d: its endpoint stays removed", mb->name, mb->host,
                   mb->port, e->host, e->port);
            continue;
        }
        if (nc_route_set_removed(f->route, i, 0) == 0) {
            e->removed = 0;
            f->returned++;
        }
    }
    for (int i = 0; i < f->n; i++) {
        nc_follow_endpoint *e = &f->eps[i];
        if (!e->removed && !listed(c, e->name) && nc_route_set_removed(f->route, i, 1) == 0) {
            e->removed = 1;
            f->removed++;
        }
    }
    pthread_mutex_unlock(&f->mu);
}

void nc_patroni_follow_status(nc_patroni_follow *f, nc_follow_status *out)
{
    pthread_mutex_lock(&f->mu);
    out->n = f->n;
    memcpy(out->eps, f->eps, (size_t)f->n * sizeof f->eps[0]);
    out->added = f->added;
    out->removed = f->removed;
    out->returned = f->returned;
    out->refusals = f->refusals;
    memcpy(out->last_refusal, f->last_refusal, sizeof out->last_refusal);
    pthread_mutex_unlock(&f->mu);
}

void nc_patroni_follow_ref(nc_patroni_follow *f)
{
    __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
}

void nc_patroni_follow_unref(nc_patroni_follow *f)
{
    if (!f || __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    nc_route_unref(f->route);   /* may free the route: no lock held here */
    wipe_free(f->dsn);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void nc_patroni_follow_free(nc_patroni_follow *f)
{
    if (!f)
        return;
    /* No apply runs now (the watch's thread is gone), but a status read may:
     * under mu, and the memory stays until its reference goes. */
    pthread_mutex_lock(&f->mu);
    int n = f->n;
    nc_pool *own[NC_MONITOR_ENDPOINTS_MAX];
    memcpy(own, f->own, sizeof own);
    memset(f->own, 0, sizeof f->own);
    pthread_mutex_unlock(&f->mu);
    for (int i = 0; i < n; i++) {
        if (own[i]) {
            /* Closed for borrowers; its memory stays while the route holds it. */
            nc_pool_shutdown(own[i], 0);
            nc_pool_free(own[i]);
        }
    }
    nc_patroni_follow_unref(f);
}
