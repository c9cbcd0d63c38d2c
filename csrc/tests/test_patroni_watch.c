/* test_patroni_watch.c - re-reading Patroni while running: the set difference
 * (members that joined, names that are gone), the watch's thread against a
 * local server that answers, then goes away (failures counted, the last answer
 * kept), a stop that ends a fetch waiting on a silent API, bad arguments. */
#include "nc_patroni_watch.h"
#include "nc_patroni_follow.h"
#include "nc_pg.h"
#include "nc_route.h"
#include "check.h"
#include "listen_local.h"

#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
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

/* This process's threads named as the watch names its thread. */
static int watch_threads(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;   /* ended meanwhile */
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
        n += strcmp(comm, NC_PATRONI_WATCH_THREAD_NAME) == 0;
    }
    closedir(d);
    return n;
}

typedef struct stopper {
    nc_patroni_watch *w;
    pthread_barrier_t *go;
} stopper;

static void *stop_main(void *arg)
{
    stopper *s = arg;
    pthread_barrier_wait(s->go);
    nc_patroni_watch_stop(s->w);
    nc_patroni_watch_unref(s->w);
    return NULL;
}

/* A stop (holding its reference) and the owner's free at once, the thread
 * inside a fetch of a silent API (a join takes up to NC_STOP_PERIOD): the
 * free returns only once the thread has ended, whoever joined it, and the
 * memory outlives the stop (ASan, TSan). */
static void test_stop_and_free_from_two_threads(void)
{
    int port;
    int silent = listen_local(&port);
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d", port);
    const char *urls[] = {u};
    CHECK(watch_threads() == 0, "no watch thread before");
    for (int k = 0; k < 20; k++) {
        nc_error err;
        nc_error_clear(&err);
        nc_patroni_watch *w = nc_patroni_watch_new(urls, 1, 0.01, 60.0, &err);
        CHECK(w && nc_patroni_watch_start(w, &err) == 0, "started: %s", err.message);
        if (!w)
            break;
        CHECK(k > 0 || watch_threads() == 1, "the thread is named");
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        stopper s = {w, &go};
        nc_patroni_watch_ref(w);
        pthread_t t;
        pthread_create(&t, NULL, stop_main, &s);
        pthread_barrier_wait(&go);
        nc_patroni_watch_free(w);
        int left = watch_threads();
        CHECK(left == 0, "round %d: the free returned with %d watch thread(s) running", k, left);
        pthread_join(t, NULL);
        pthread_barrier_destroy(&go);
    }
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

/* ---- following the members into a route ----------------------------------------- */

static void test_member_dsn(void)
{
    struct { const char *dsn, *host; int port; const char *want; } cases[] = {
        {"", "10.0.0.1", 5432, "host='10.0.0.1' port=5432"},
        {"  ", "h", 1, "host='h' port=1"},
        {"dbname=app user=u", "db-1.local", 6543, "dbname=app user=u host='db-1.local' port=6543"},
        {"user=u", "it's\\x", 5, "user=u host='it\\'s\\\\x' port=5"},
        {"postgresql://u@x/app", "10.0.0.1", 5432, "postgresql://u@x/app?host=10.0.0.1&port=5432"},
        {"postgres://u@x/app?sslmode=disable", "::1", 7, "postgres://u@x/app?sslmode=disable&host=%3A%3A1&port=7"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *got = nc_patroni_member_dsn(cases[k].dsn, cases[k].host, cases[k].port);
        CHECK(got && !strcmp(got, cases[k].want), "case %zu: %s", k, got ? got : "(null)");
        free(got);
    }
}

static void add_member(nc_patroni_cluster *c, const char *name, const char *host, int port)
{
    member(c, name);
    snprintf(c->members[c->n - 1].host, sizeof c->members[c->n - 1].host, "%s", host);
    c->members[c->n - 1].port = port;
}

typedef struct followed {
    nc_pool *p0;
    nc_route *r;
    nc_patroni_follow *f;
} followed;

/* A route over one PostgreSQL pool named n0 (never connected: no monitor
 * thread runs), followed from dsn. */
static void follow_make(followed *x)
{
    nc_error err;
    nc_error_clear(&err);
    nc_pool_config pc;
    nc_pool_config_defaults(&pc);
    pc.validate = 0;
    pc.max_lifetime = 0;
    void *ctx = nc_pg_ctx_new("host=127.0.0.1 port=1 connect_timeout=1", &err);
    x->p0 = ctx ? nc_pool_new(&pc, &nc_pg_ops, ctx, &err) : NULL;
    nc_monitor_config mc;
    nc_monitor_config_defaults(&mc);
    int prio = 1;
    x->r = x->p0 ? nc_route_new(&x->p0, 1, &prio, 0, &mc, &err) : NULL;
    const char *names[] = {"n0"}, *hosts[] = {"127.0.0.1"};
    int ports[] = {1};
    x->f = x->r ? nc_patroni_follow_new(x->r, names, hosts, ports, 1, "user=u password=secret", &pc, &err) : NULL;
    if (!x->f) {
        printf("FATAL: follow_make: %s\n", err.message);
        exit(2);
    }
}

static void follow_finish(followed *x)
{
    nc_route_close(x->r);
    nc_patroni_follow_free(x->f);
    nc_route_free(x->r);
    nc_pool_shutdown(x->p0, 0);
    nc_pool_free(x->p0);
}

static void test_follow_add_remove_return(void)
{
    followed x;
    follow_make(&x);
    static nc_patroni_cluster c;
    static nc_follow_status st;
    c.n = 0;
    add_member(&c, "n0", "127.0.0.1", 1);
    add_member(&c, "n1", "127.0.0.1", 2);
    member(&c, "n2");   /* no address yet: not followed yet */
    nc_patroni_follow_apply(x.f, &c);
    nc_patroni_follow_status(x.f, &st);
    CHECK(nc_route_count(x.r) == 2 && st.n == 2 && !strcmp(st.eps[1].name, "n1") && st.eps[1].added &&
              st.eps[1].port == 2 && st.added == 1,
          "n1 joined: %d %d", nc_route_count(x.r), st.n);
    CHECK(nc_pool_config_of(nc_route_pool(x.r, 1))->validate == 0, "the pool settings of the others");
    nc_patroni_follow_apply(x.f, &c);
    CHECK(nc_route_count(x.r) == 2, "the same answer again: nothing new");
    /* n2 gets an address, n1 leaves */
    c.n = 0;
    add_member(&c, "n0", "127.0.0.1", 1);
    add_member(&c, "n2", "127.0.0.1", 3);
    nc_patroni_follow_apply(x.f, &c);
    nc_patroni_follow_status(x.f, &st);
    CHECK(st.n == 3 && !strcmp(st.eps[2].name, "n2") && st.eps[1].removed && nc_route_removed(x.r, 1) &&
              !nc_route_removed(x.r, 2) && st.removed == 1,
          "n2 joined, n1 removed: n %d", st.n);
    /* n1 back at another address: refused, stays removed */
    add_member(&c, "n1", "127.0.0.1", 9);
    nc_patroni_follow_apply(x.f, &c);
    nc_patroni_follow_status(x.f, &st);
    CHECK(st.refusals == 1 && strstr(st.last_refusal, "n1") && nc_route_removed(x.r, 1), "refused: %s",
          st.last_refusal);
    CHECK(!strstr(st.last_refusal, "secret"), "no password in the refusal");
    /* back at its address: its slot again */
    c.members[c.n - 1].port = 2;
    nc_patroni_follow_apply(x.f, &c);
    nc_patroni_follow_status(x.f, &st);
    CHECK(st.returned == 1 && !st.eps[1].removed && !nc_route_removed(x.r, 1) && nc_route_count(x.r) == 3,
          "n1 returned to slot 1");
    /* everybody gone but n0: tombstones, the count never shrinks */
    c.n = 0;
    add_member(&c, "n0", "127.0.0.1", 1);
    nc_patroni_follow_apply(x.f, &c);
    CHECK(nc_route_count(x.r) == 3 && nc_route_removed(x.r, 1) && nc_route_removed(x.r, 2) &&
              !nc_route_removed(x.r, 0),
          "tombstones");
    follow_finish(&x);
}

static void test_follow_capacity(void)
{
    followed x;
    follow_make(&x);
    static nc_patroni_cluster c;
    static nc_follow_status st;
    c.n = 0;
    add_member(&c, "n0", "127.0.0.1", 1);
    for (int k = 1; k < NC_ROUTE_CAPACITY + 3; k++) {
        char name[16];
        snprintf(name, sizeof name, "m%d", k);
        add_member(&c, name, "127.0.0.1", 1000 + k);
    }
    nc_patroni_follow_apply(x.f, &c);
    nc_patroni_follow_status(x.f, &st);
    CHECK(nc_route_count(x.r) == NC_ROUTE_CAPACITY && st.n == NC_ROUTE_CAPACITY, "filled: %d", st.n);
    CHECK(st.refusals == 3 && strstr(st.last_refusal, "at most"), "refused the rest: %d %s", st.refusals,
          st.last_refusal);
    follow_finish(&x);
}

/* A status read holding a reference (the binding's, taken with the GIL)
 * outlives the owner's free in another thread (close()): the follower's
 * memory stays until the reader's unref; the pools it made are shut down
 * at the free all the same. */
static void test_follow_status_outlives_free(void)
{
    followed x;
    follow_make(&x);
    static nc_patroni_cluster c;
    static nc_follow_status st;
    c.n = 0;
    add_member(&c, "n0", "127.0.0.1", 1);
    add_member(&c, "n1", "127.0.0.1", 2);
    nc_patroni_follow_apply(x.f, &c);
    nc_patroni_follow_ref(x.f);          /* a status read begins */
    nc_route_close(x.r);
    nc_patroni_follow_free(x.f);         /* the owner's close meanwhile */
    CHECK(nc_pool_is_closed(nc_route_pool(x.r, 1)), "the joined member's pool is shut down at the free");
    nc_patroni_follow_status(x.f, &st);  /* still valid memory (ASan stage) */
    CHECK(st.n == 2 && st.added == 1 && !strcmp(st.eps[1].name, "n1"), "status read after the free: n %d", st.n);
    nc_patroni_follow_unref(x.f);        /* the last reference: freed now */
    nc_route_free(x.r);
    nc_pool_shutdown(x.p0, 0);
    nc_pool_free(x.p0);
}

static int two_endpoints_followed(void *arg)
{
    static nc_follow_status st;
    nc_patroni_follow_status(arg, &st);
    return st.n == 2;
}

/* The watch's thread applies what it fetched. */
static void test_watch_applies_to_the_route(void)
{
    server s = {0};
    s.fd = listen_local(&s.port);
    CHECK(s.fd >= 0, "listen");
    pthread_create(&s.thread, NULL, serve, &s);
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d", s.port);
    const char *urls[] = {u};
    followed x;
    follow_make(&x);
    nc_error err;
    nc_error_clear(&err);
    nc_patroni_watch *w = nc_patroni_watch_new(urls, 1, 0.05, 2.0, &err);
    CHECK(w != NULL, "made: %s", err.message);
    nc_patroni_watch_follow(w, x.f);
    CHECK(nc_patroni_watch_start(w, &err) == 0, "started");
    double end = nc_now() + 10 * nc_time_scale();
    while (!two_endpoints_followed(x.f) && nc_now() < end)
        usleep(10000);
    CHECK(two_endpoints_followed(x.f) && nc_route_count(x.r) == 2, "n1 became endpoint 1");
    nc_patroni_watch_free(w);
    ST(s.stop, 1);
    pthread_join(s.thread, NULL);
    close(s.fd);
    follow_finish(&x);
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"diff", test_diff},
        {"watch_follows_then_counts_failures", test_watch_follows_then_counts_failures},
        {"stop_ends_a_silent_fetch", test_stop_ends_a_silent_fetch},
        {"stop_and_free_from_two_threads", test_stop_and_free_from_two_threads},
        {"bad_arguments", test_bad_arguments},
        {"member_dsn", test_member_dsn},
        {"follow_add_remove_return", test_follow_add_remove_return},
        {"follow_capacity", test_follow_capacity},
        {"follow_status_outlives_free", test_follow_status_outlives_free},
        {"watch_applies_to_the_route", test_watch_applies_to_the_route},
    };
    return nc_run_cases("test_patroni_watch", cases, NC_NCASES(cases));
}
