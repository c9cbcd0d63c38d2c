/* test_patroni_watch.c - re-reading Patroni while running: the set difference
 * (members that joined, names that are gone), the watch's thread against a
 * local server that answers, then goes away (failures counted, the last answer
 * kept), a stop that ends a fetch waiting on a silent API, bad arguments. */
#include "nc_patroni_watch.h"
#include "check.h"
#include "listen_local.h"

#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char BODY[] =
    "{\"members\": [{\"name\": \"n0\", \"role\": \"leader\", \"state\": \"running\", \"host\": \"127.0.0.1\", "
    "\"port\": 5432, \"timeline\": 1}, {\"name\": \"n1\", \"role\": \"replica\", \"state\": \"streaming\", "
    "\"host\": \"127.0.0.1\", \"port\": 5433, \"timeline\": 1, \"lag\": 0}], \"scope\": \"w\"}";

static void member(nc_patroni_cluster *c, const char *name)
{
    memset(&c->members[c->n], 0, sizeof c->members[c->n]);
    snprintf(c->members[c->n].name, sizeof c->members[c->n].name, "%s", name);
    c->n++;
}

static void test_diff(void)
{
    static nc_patroni_cluster c;
    c.n = 0;
    member(&c, "n0");
    member(&c, "n1");
    member(&c, "n3");
    const char *known[] = {"n0", "n2", "n1"};
    int joined[NC_PATRONI_MAX_MEMBERS], gone[3], nj = -1, ng = -1;
    nc_patroni_diff(&c, known, 3, joined, &nj, gone, &ng);
    CHECK(nj == 1 && joined[0] == 2, "n3 joined: %d", nj);
    CHECK(ng == 1 && gone[0] == 1, "n2 gone: %d", ng);
    /* the same set: nothing either way */
    const char *same[] = {"n3", "n1", "n0"};
    nc_patroni_diff(&c, same, 3, joined, &nj, gone, &ng);
    CHECK(nj == 0 && ng == 0, "same set: %d %d", nj, ng);
    /* an empty answer: every known name is gone */
    c.n = 0;
    nc_patroni_diff(&c, known, 3, joined, &nj, gone, &ng);
    CHECK(nj == 0 && ng == 3 && gone[0] == 0 && gone[2] == 2, "all gone: %d %d", nj, ng);
    /* nothing known: every member joined */
    member(&c, "a");
    member(&c, "b");
    nc_patroni_diff(&c, NULL, 0, joined, &nj, gone, &ng);
    CHECK(nj == 2 && ng == 0 && joined[1] == 1, "all joined: %d %d", nj, ng);
}

/* A local API that answers every request until stop is set. */
typedef struct server {
    int fd, port, stop;
    pthread_t thread;
} server;

static void *serve(void *arg)
{
    server *s = arg;
    char answer[2048];
    snprintf(answer, sizeof answer, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(BODY), BODY);
    while (!LD(s->stop)) {
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        char req[2048];
        read_request(c, req, sizeof req);
        (void)!send(c, answer, strlen(answer), MSG_NOSIGNAL);
        close(c);
    }
    return NULL;
}

/* Wait (bounded) until the watch's status satisfies what. */
static int wait_status(nc_patroni_watch *w, nc_patroni_watch_status *st, int (*what)(const nc_patroni_watch_status *),
                       double seconds)
{
    double end = nc_now() + seconds * nc_time_scale();
    for (;;) {
        nc_patroni_watch_status_get(w, st);
        if (what(st))
            return 1;
        if (nc_now() > end)
            return 0;
        usleep(10000);
    }
}

static int two_fetches(const nc_patroni_watch_status *st) { return st->fetches >= 2; }
static int two_failures(const nc_patroni_watch_status *st) { return st->consecutive_failures >= 2; }

static void test_watch_follows_then_counts_failures(void)
{
    server s = {0};
    s.fd = listen_local(&s.port);
    CHECK(s.fd >= 0, "listen");
    pthread_create(&s.thread, NULL, serve, &s);
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d", s.port);
    const char *urls[] = {u};
    nc_error err;
    nc_error_clear(&err);
    nc_patroni_watch *w = nc_patroni_watch_new(urls, 1, 0.05, 2.0, &err);
    CHECK(w != NULL, "made: %s", err.message);
    if (!w)
        return;
    nc_patroni_watch_status *st = malloc(sizeof *st);
    nc_patroni_watch_status_get(w, st);
    CHECK(!st->running && st->fetches == 0 && !st->have_cluster && st->last_ok_age < 0, "nothing before start");
    CHECK(nc_patroni_watch_start(w, &err) == 0 && nc_patroni_watch_start(w, &err) == 0, "started (twice)");
    CHECK(wait_status(w, st, two_fetches, 10), "two answers: %llu", (unsigned long long)st->fetches);
    CHECK(st->running && st->have_cluster && st->cluster.n == 2 && !strcmp(st->cluster.members[1].name, "n1"),
          "the members: %d", st->cluster.n);
    CHECK(st->failures == 0 && st->last_ok_age >= 0, "no failure yet");
    /* the API goes away: refused; failures are counted, the last answer stays */
    ST(s.stop, 1);
    pthread_join(s.thread, NULL);
    close(s.fd);
    CHECK(wait_status(w, st, two_failures, 10), "two failures: %d", st->consecutive_failures);
    CHECK(st->have_cluster && st->cluster.n == 2, "the last answer kept");
    CHECK(strstr(st->last_error, u) != NULL, "the error names the URL: %s", st->last_error);
    nc_patroni_watch_stop(w);
    nc_patroni_watch_status_get(w, st);
    CHECK(!st->running, "stopped");
    free(st);
    nc_patroni_watch_free(w);
}

static void test_stop_ends_a_silent_fetch(void)
{
    int port;
    int silent = listen_local(&port);   /* accepts in the kernel, never answers */
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d", port);
    const char *urls[] = {u};
    nc_error err;
    nc_error_clear(&err);
    nc_patroni_watch *w = nc_patroni_watch_new(urls, 1, 1.0, 60.0, &err);
    CHECK(w && nc_patroni_watch_start(w, &err) == 0, "started: %s", err.message);
    if (!w)
        return;
    usleep(100000);   /* lower bound only: let the fetch begin waiting (the check holds either way) */
    double t0 = nc_now();
    nc_patroni_watch_free(w);
    double el = nc_now() - t0;
    CHECK(el < 1.0 * nc_time_scale(), "the stop did not wait for the 60 s deadline: %.2f s", el);
    close(silent);
}

static void test_bad_arguments(void)
{
    nc_error err;
    const char *ok[] = {"http://127.0.0.1:8008"};
    const char *bad[] = {"https://127.0.0.1:8008"};
    nc_error_clear(&err);
    CHECK(!nc_patroni_watch_new(ok, 0, 1, 1, &err) && err.code == NC_E_PATRONI_URL, "no URL: %d", err.code);
    nc_error_clear(&err);
    CHECK(!nc_patroni_watch_new(ok, 1, 0, 1, &err) && err.code == NC_E_CONFIG, "interval 0: %d", err.code);
    nc_error_clear(&err);
    CHECK(!nc_patroni_watch_new(ok, 1, 1, NAN, &err) && err.code == NC_E_CONFIG, "timeout NaN: %d", err.code);
    nc_error_clear(&err);
    CHECK(!nc_patroni_watch_new(bad, 1, 1, 1, &err) && err.code == NC_E_PATRONI_URL, "https: %d", err.code);
    nc_patroni_watch_free(NULL);
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"diff", test_diff},
        {"watch_follows_then_counts_failures", test_watch_follows_then_counts_failures},
        {"stop_ends_a_silent_fetch", test_stop_ends_a_silent_fetch},
        {"bad_arguments", test_bad_arguments},
    };
    return nc_run_cases("test_patroni_watch", cases, NC_NCASES(cases));
}
