/* nc_patroni.h - the Patroni REST client: GET /cluster from the first member
 * whose API answers, and what it says about each member.
 *
 * Plain sockets and a deadline (non-blocking connect + poll, consulting the
 * thread's stop check), so the monitor's native threads can use it without
 * Python, and a Python caller can release the GIL around it.  Only what
 * routing needs is kept: name, role, state, host, port, timeline, lag.
 *
 * The parsers (URL, HTTP response, JSON) take untrusted bytes: every input
 * either parses or fails with NC_E_PATRONI_ANSWER, never reads past its end
 * (csrc/fuzz/fuzz_patroni.c holds them to that).
 */
#ifndef NC_PATRONI_H
#define NC_PATRONI_H

#include <stddef.h>

#include "nc_error.h"

#define NC_PATRONI_MAX_MEMBERS 64
#define NC_PATRONI_MAX_URLS 16
#define NC_PATRONI_MAX_BODY (4 * 1024 * 1024)   /* a /cluster answer is a few kB */

/* Lag figures Patroni did not give (the leader has none; "unknown"). */
#define NC_PATRONI_LAG_UNKNOWN (-1LL)

typedef struct nc_patroni_member {
    char name[128];
    char role[32];          /* "leader", "replica", "sync_standby", "quorum_standby", "standby_leader" */
    char state[32];         /* "running", "streaming", "stopped", "starting", ... */
    char host[256];
    int port;               /* 0 when not given */
    long long timeline;     /* -1 when not given */
    long long replay_lag;   /* bytes behind the leader in replay (Patroni >= 3.1), or UNKNOWN */
    long long lag;          /* bytes behind in receive (Patroni 3.0 has only this), or UNKNOWN */
    char api_url[256];
} nc_patroni_member;

typedef struct nc_patroni_cluster {
    char scope[128];
    char source[256];       /* the URL that answered */
    int n;
    nc_patroni_member members[NC_PATRONI_MAX_MEMBERS];
} nc_patroni_cluster;

/* Whether the member is Patroni's leader (its role is "leader" or, in a standby cluster,
 * "standby_leader"; older Patroni said "master"). */
int nc_patroni_is_leader(const nc_patroni_member *m);

/* The lag routing should use: replay_lag when given, else lag, else UNKNOWN. */
long long nc_patroni_member_lag(const nc_patroni_member *m);

/* "http://host:port[/path]" -> host (brackets of an IPv6 literal removed) and port
 * (default 8008).  0, or -1 with NC_E_PATRONI_URL (https is not supported). */
int nc_patroni_parse_url(const char *url, char *host, size_t hostcap, int *port, nc_error *err);

/* An HTTP/1.x response (all bytes until the server closed) -> its status and body
 * (a pointer into buf, or for a chunked body into *owned, which the caller frees).
 * 0, or -1 with NC_E_PATRONI_ANSWER. */
int nc_patroni_parse_http(const char *buf, size_t len, int *status, const char **body, size_t *bodylen,
                          char **owned, nc_error *err);

/* A /cluster JSON document -> out (members in the order given; a member with more than
 * NC_PATRONI_MAX_MEMBERS is an error).  0, or -1 with NC_E_PATRONI_ANSWER. */
int nc_patroni_parse_cluster(const char *json, size_t len, nc_patroni_cluster *out, nc_error *err);

/* GET /cluster from urls[0], then the next on any failure, each within what is left of
 * `timeout` seconds (and at most timeout / (URLs left) each, so one hung member cannot
 * use the whole budget).  0 with out filled, or -1: NC_E_PATRONI_UNREACHABLE naming each
 * URL's failure, NC_E_PATRONI_URL for a malformed URL, NC_E_INTERRUPTED when the
 * thread's stop check said stop. */
int nc_patroni_fetch(const char *const *urls, int nurls, double timeout, nc_patroni_cluster *out, nc_error *err);

#endif
