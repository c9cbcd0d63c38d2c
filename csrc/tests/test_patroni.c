/* test_patroni.c - the Patroni REST client: URLs, HTTP responses (Content-Length,
 * chunked, to the close), the /cluster JSON of Patroni 3 and 4, malformed and cut
 * input (every prefix of a valid answer, in a buffer of exactly that size so a
 * read past the end is caught under ASan), and fetches against a local server:
 * the answer, the fallback past a refused and a silent URL, the deadline. */
#include "nc_patroni.h"
#include "nc_stop.h"
#include "check.h"
#include "listen_local.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Measured shapes (shared reference): Patroni 4.1 with replay_lag, Patroni 3.0 with only lag. */
static const char P4[] =
    "{\"members\": [{\"name\": \"n0\", \"role\": \"leader\", \"state\": \"running\", "
    "\"api_url\": \"http://127.0.0.1:28156/patroni\", \"host\": \"127.0.0.1\", \"port\": 26067, \"timeline\": 1}, "
    "{\"name\": \"n1\", \"role\": \"replica\", \"state\": \"streaming\", \"api_url\": \"http://127.0.0.1:20720/patroni\", "
    "\"host\": \"127.0.0.1\", \"port\": 25749, \"timeline\": 1, \"receive_lag\": 0, \"receive_lsn\": \"0/800000\", "
    "\"replay_lag\": 5242880, \"replay_lsn\": \"0/300000\", \"lag\": 0, \"lsn\": \"0/800000\", "
    "\"tags\": {\"nofailover\": false, \"x\": [1, 2.5e3, null, {\"y\": \"z\"}]}}, "
    "{\"name\": \"n2\", \"role\": \"sync_standby\", \"state\": \"streaming\", \"host\": \"::1\", \"port\": 5433, "
    "\"timeline\": 3, \"lag\": \"unknown\", \"replay_lag\": \"unknown\", \"pending_restart\": true}], "
    "\"scope\": \"demo\", \"pause\": false}";

static const char P3[] =
    "{\"members\":[{\"name\":\"pg-a\",\"role\":\"leader\",\"state\":\"running\",\"api_url\":\"http://10.0.0.1:8008/patroni\","
    "\"host\":\"10.0.0.1\",\"port\":5432,\"timeline\":7},{\"name\":\"pg-b\",\"role\":\"replica\",\"state\":\"running\","
    "\"api_url\":\"http://10.0.0.2:8008/patroni\",\"host\":\"10.0.0.2\",\"port\":5432,\"timeline\":7,\"lag\":1024}],"
    "\"scope\":\"batman\"}";

static void test_cluster_patroni4(void)
{
    nc_patroni_cluster c;
    nc_error err;
    nc_error_clear(&err);
    int rc = nc_patroni_parse_cluster(P4, strlen(P4), &c, &err);
    CHECK(rc == 0, "parses: %s", err.message);
    CHECK(c.n == 3, "three members, got %d", c.n);
    CHECK(!strcmp(c.scope, "demo"), "scope %s", c.scope);
    CHECK(!strcmp(c.members[0].name, "n0") && nc_patroni_is_leader(&c.members[0]), "n0 leads");
    CHECK(c.members[0].port == 26067 && !strcmp(c.members[0].host, "127.0.0.1"), "n0 address");
    CHECK(c.members[0].replay_lag == NC_PATRONI_LAG_UNKNOWN && nc_patroni_member_lag(&c.members[0]) < 0,
          "the leader has no lag");
    CHECK(!strcmp(c.members[0].api_url, "http://127.0.0.1:28156/patroni"), "api_url %s", c.members[0].api_url);
    CHECK(!strcmp(c.members[1].state, "streaming") && !nc_patroni_is_leader(&c.members[1]), "n1 streams");
    CHECK(c.members[1].replay_lag == 5242880 && c.members[1].lag == 0, "n1 lags");
    CHECK(nc_patroni_member_lag(&c.members[1]) == 5242880, "replay lag is the one routing uses");
    CHECK(c.members[1].timeline == 1, "timeline");
    CHECK(!strcmp(c.members[2].role, "sync_standby") && !strcmp(c.members[2].host, "::1"), "n2");
    CHECK(c.members[2].lag == NC_PATRONI_LAG_UNKNOWN && c.members[2].replay_lag == NC_PATRONI_LAG_UNKNOWN,
          "\"unknown\" lag");
    CHECK(c.members[2].timeline == 3 && c.members[2].api_url[0] == '\0', "n2 without api_url");
}

static void test_cluster_patroni3(void)
{
    nc_patroni_cluster c;
    nc_error err;
    nc_error_clear(&err);
    CHECK(nc_patroni_parse_cluster(P3, strlen(P3), &c, &err) == 0, "parses: %s", err.message);
    CHECK(c.n == 2 && !strcmp(c.scope, "batman"), "n=%d", c.n);
    CHECK(!strcmp(c.members[1].state, "running") && c.members[1].lag == 1024, "3.0 replica");
    CHECK(c.members[1].replay_lag == NC_PATRONI_LAG_UNKNOWN && nc_patroni_member_lag(&c.members[1]) == 1024,
          "falls back to lag");
    CHECK(c.members[0].timeline == 7, "timeline");
}

static void test_cluster_strings(void)
{
    nc_patroni_cluster c;
    nc_error err;
    /* escapes, \u with a surrogate pair, a name longer than the field (cut on a character) */
    char doc[1200];
    char longname[400];
    memset(longname, 0, sizeof longname);
    for (int i = 0; i < 100; i++)
        memcpy(longname + i * 3, "\xe2\x82\xac", 3);     /* 300 bytes of euro signs */
    snprintf(doc, sizeof doc,
             "{\"members\":[{\"name\":\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\",\"port\":1},"
             "{\"name\":\"%s\",\"role\":\"replica\"}]}", longname);
    nc_error_clear(&err);
    CHECK(nc_patroni_parse_cluster(doc, strlen(doc), &c, &err) == 0, "parses: %s", err.message);
    CHECK(!strcmp(c.members[0].name, "a\"b\\c/d\n\xc3\xa9\xf0\x9f\x98\x80"), "escapes: %s", c.members[0].name);
    size_t l = strlen(c.members[1].name);
    CHECK(l < sizeof c.members[1].name && l % 3 == 0, "cut on a character (%zu bytes)", l);
    CHECK(!strcmp(c.members[1].role, "replica"), "the next field is still read");
}

static void test_cluster_malformed(void)
{
    static const char *bad[] = {
        "", "[]", "{}", "{\"members\":{}}", "{\"members\":[1]}", "{\"members\":[]} x",
        "{\"members\":[],\"members\":[]}", "{\"members\":[{\"name\":\"a\\x\"}]}",
        "{\"members\":[{\"name\":\"\\ud800\"}]}", "{\"members\":[{\"name\":\"\\u0000\"}]}",
        "{\"members\":[{\"port\":1.}]}", "{\"members\":[{\"port\":-}]}", "{\"members\":[{\"a\":tru}]}",
        "{\"members\":[{\"name\":\"a\tb\"}]}", "{\"members\":[{\"a\":1,}]}", "{\"members\":[{}],}",
        "{\"members\":[{\"name\" \"a\"}]}",
    };
    nc_patroni_cluster c;
    nc_error err;
    for (size_t i = 0; i < NC_NCASES(bad); i++) {
        nc_error_clear(&err);
        int rc = nc_patroni_parse_cluster(bad[i], strlen(bad[i]), &c, &err);
        CHECK(rc == -1 && err.code == NC_E_PATRONI_ANSWER, "refused: %s", bad[i]);
    }
    /* too deep */
    char deep[400];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "{\"members\":[],\"x\":");
    for (int i = 0; i < 100; i++)
        deep[n++] = '[';
    for (int i = 0; i < 100; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    nc_error_clear(&err);
    CHECK(nc_patroni_parse_cluster(deep, n, &c, &err) == -1 && strstr(err.message, "deep"), "depth: %s",
          err.message);
    /* more members than we keep */
    size_t cap = 16 + 4 * (NC_PATRONI_MAX_MEMBERS + 2);
    char *many = malloc(cap);
    n = (size_t)snprintf(many, cap, "{\"members\":[");
    for (int i = 0; i <= NC_PATRONI_MAX_MEMBERS; i++)
        n += (size_t)snprintf(many + n, cap - n, "%s{}", i ? "," : "");
    n += (size_t)snprintf(many + n, cap - n, "]}");
    nc_error_clear(&err);
    CHECK(nc_patroni_parse_cluster(many, n, &c, &err) == -1, "too many members refused");
    free(many);
}

/* Every prefix of a valid document, in a buffer of exactly that length: each fails
 * cleanly (the full one parses), and nothing reads past the end (ASan). */
static void test_cluster_every_prefix(void)
{
    const char *docs[] = {P4, P3};
    for (size_t d = 0; d < 2; d++) {
        size_t len = strlen(docs[d]);
        int failures = 0;
        for (size_t k = 0; k < len; k++) {
            char *buf = malloc(k ? k : 1);
            memcpy(buf, docs[d], k);
            nc_patroni_cluster c;
            nc_error err;
            nc_error_clear(&err);
            if (nc_patroni_parse_cluster(buf, k, &c, &err) == 0)
                failures++;
            free(buf);
        }
        CHECK(failures == 0, "doc %zu: %d prefixes parsed as whole documents", d, failures);
    }
}

static void test_http(void)
{
    int status;
    const char *body;
    size_t blen;
    char *owned;
    nc_error err;
    const char *r1 = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 5\r\n\r\nhello+junk";
    nc_error_clear(&err);
    CHECK(nc_patroni_parse_http(r1, strlen(r1), &status, &body, &blen, &owned, &err) == 0, "%s", err.message);
    CHECK(status == 200 && blen == 5 && !memcmp(body, "hello", 5) && !owned, "content-length body");

    const char *r2 = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n"
                     "E\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n";
    nc_error_clear(&err);
    CHECK(nc_patroni_parse_http(r2, strlen(r2), &status, &body, &blen, &owned, &err) == 0, "%s", err.message);
    CHECK(owned && blen == 23 && !memcmp(body, "Wikipedia in\r\n\r\nchunks.", 23), "chunked body");
    free(owned);

    const char *r3 = "HTTP/1.0 503 Service Unavailable\r\nServer: x\r\n\r\n{\"a\":1}";
    nc_error_clear(&err);
    CHECK(nc_patroni_parse_http(r3, strlen(r3), &status, &body, &blen, &owned, &err) == 0, "%s", err.message);
    CHECK(status == 503 && blen == 7, "body to the close");

    static const char *bad[] = {
        "", "HTTP/1.1", "SSH-2.0-OpenSSH\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nA: b\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n1",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
    };
    for (size_t i = 0; i < NC_NCASES(bad); i++) {
        size_t l = strlen(bad[i]);
        char *buf = malloc(l ? l : 1);      /* exact size: ASan sees a read past the end */
        memcpy(buf, bad[i], l);
        nc_error_clear(&err);
        owned = NULL;
        int rc = nc_patroni_parse_http(buf, l, &status, &body, &blen, &owned, &err);
        CHECK(rc == -1 && err.code == NC_E_PATRONI_ANSWER && !owned, "refused #%zu: %s", i, err.message);
        free(buf);
    }
}

static void test_url(void)
{
    char host[64];
    int port;
    nc_error err;
    nc_error_clear(&err);
    CHECK(nc_patroni_parse_url("http://127.0.0.1:8009/patroni", host, sizeof host, &port, &err) == 0
          && !strcmp(host, "127.0.0.1") && port == 8009, "api_url form");
    CHECK(nc_patroni_parse_url("db1.example", host, sizeof host, &port, &err) == 0
          && !strcmp(host, "db1.example") && port == 8008, "bare host, default port");
    CHECK(nc_patroni_parse_url("http://[::1]:8010", host, sizeof host, &port, &err) == 0
          && !strcmp(host, "::1") && port == 8010, "IPv6 literal");
    static const char *bad[] = {"https://h:8008", "ftp://h", "http://", "http://h:", "http://h:0", "http://h:70000",
                                "http://h:80x", "http://[::1", "http://h x", ""};
    for (size_t i = 0; i < NC_NCASES(bad); i++) {
        nc_error_clear(&err);
        CHECK(nc_patroni_parse_url(bad[i], host, sizeof host, &port, &err) == -1 && err.code == NC_E_PATRONI_URL,
              "refused: '%s'", bad[i]);
    }
    nc_error_clear(&err);
    nc_patroni_parse_url("https://h:8008", host, sizeof host, &port, &err);
    CHECK(strstr(err.message, "https"), "says why: %s", err.message);
}

/* ---- a local server ------------------------------------------------------------ */

typedef struct server {
    int fd, port;
    const char *answer;
    pthread_t thread;
} server;

/* Answers one request: reads until the blank line, writes the answer in pieces, closes. */
static void *serve_one(void *arg)
{
    server *s = arg;
    int c = accept(s->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    char req[2048];
    read_request(c, req, sizeof req);
    if (!strncmp(req, "GET /cluster HTTP/1.1\r\n", 23) && strstr(req, "Connection: close\r\n")) {
        size_t l = strlen(s->answer);
        for (size_t off = 0; off < l; off += 7)        /* in small pieces: the reader must gather */
            if (send(c, s->answer + off, l - off < 7 ? l - off : 7, MSG_NOSIGNAL) < 0)
                break;
    }
    close(c);
    return NULL;
}

static void test_fetch_fallback(void)
{
    static char answer[4096];
    snprintf(answer, sizeof answer, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s", strlen(P4), P4);
    server s = {0};
    s.answer = answer;
    s.fd = listen_local(&s.port);
    CHECK(s.fd >= 0, "listen");
    /* A port nobody listens on (refused at once) and a socket that accepts in the
     * kernel but never answers (the deadline); then the live one. */
    int dead_port, silent_port;
    int dead = listen_local(&dead_port);
    close(dead);
    int silent = listen_local(&silent_port);
    pthread_create(&s.thread, NULL, serve_one, &s);
    char u1[64], u2[64], u3[64];
    snprintf(u1, sizeof u1, "http://127.0.0.1:%d", dead_port);
    snprintf(u2, sizeof u2, "127.0.0.1:%d", silent_port);
    snprintf(u3, sizeof u3, "http://127.0.0.1:%d/patroni", s.port);
    const char *urls[] = {u1, u2, u3};
    nc_patroni_cluster c;
    nc_error err;
    nc_error_clear(&err);
    double t0 = nc_now();
    int rc = nc_patroni_fetch(urls, 3, 3.0, &c, &err);
    double el = nc_now() - t0;
    CHECK(rc == 0, "fetched: %s", err.message);
    CHECK(c.n == 3 && !strcmp(c.source, u3), "from the third URL: %s", c.source);
    /* the silent one waited its share (half of what was left for the two last URLs), no more */
    CHECK(el >= 1.3 && el < 1.5 + 1.0 * nc_time_scale(), "the silent URL waited its share: %.2f s", el);
    pthread_join(s.thread, NULL);
    close(s.fd);
    close(silent);
}

static void test_fetch_all_fail(void)
{
    int silent_port, dead_port;
    int silent = listen_local(&silent_port);
    int dead = listen_local(&dead_port);
    close(dead);
    char u1[64], u2[64];
    snprintf(u1, sizeof u1, "http://127.0.0.1:%d", silent_port);
    snprintf(u2, sizeof u2, "http://127.0.0.1:%d", dead_port);
    const char *urls[] = {u1, u2};
    nc_patroni_cluster c;
    nc_error err;
    nc_error_clear(&err);
    double t0 = nc_now();
    int rc = nc_patroni_fetch(urls, 2, 0.6, &c, &err);
    double el = nc_now() - t0;
    CHECK(rc == -1 && err.code == NC_E_PATRONI_UNREACHABLE, "unreachable: %d %s", err.code, err.message);
    CHECK(el >= 0.25 && el < 0.6 + 1.0 * nc_time_scale(), "within the deadline: %.2f s", el);
    CHECK(strstr(err.message, u1) && strstr(err.message, u2) && strstr(err.message, "timed out"),
          "names each URL's failure: %s", err.message);
    close(silent);

    const char *badurls[] = {"http://127.0.0.1:1", "https://x"};
    nc_error_clear(&err);
    CHECK(nc_patroni_fetch(badurls, 2, 1.0, &c, &err) == -1 && err.code == NC_E_PATRONI_URL,
          "a bad URL is refused before any request");
}

static void test_fetch_bad_answer(void)
{
    server s = {0};
    s.answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]";
    s.fd = listen_local(&s.port);
    pthread_create(&s.thread, NULL, serve_one, &s);
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d", s.port);
    const char *urls[] = {u};
    nc_patroni_cluster c;
    nc_error err;
    nc_error_clear(&err);
    CHECK(nc_patroni_fetch(urls, 1, 2.0, &c, &err) == -1 && err.code == NC_E_PATRONI_UNREACHABLE
          && strstr(err.message, "not a JSON object"), "a wrong answer is a failure of that URL: %s",
          err.message);
    pthread_join(s.thread, NULL);
    close(s.fd);
}


/* The thread's stop check (how Ctrl-C reaches the core) ends a fetch waiting on a
 * hung API long before its deadline, with NC_E_INTERRUPTED and no fallback. */
static double stop_at;

static int stop_after(void *arg)
{
    (void)arg;
    return nc_now() >= stop_at;
}

static void test_fetch_interrupted(void)
{
    int silent_port, live_port;
    int silent = listen_local(&silent_port);
    int live = listen_local(&live_port);    /* never reached: the stop is not a URL's failure */
    char u1[64], u2[64];
    snprintf(u1, sizeof u1, "http://127.0.0.1:%d", silent_port);
    snprintf(u2, sizeof u2, "http://127.0.0.1:%d", live_port);
    const char *urls[] = {u1, u2};
    nc_patroni_cluster c;
    nc_error err;
    nc_error_clear(&err);
    double t0 = nc_now();
    stop_at = t0 + 0.2;
    nc_stop_install(stop_after, NULL);
    int rc = nc_patroni_fetch(urls, 2, 30.0, &c, &err);
    nc_stop_install(NULL, NULL);
    double el = nc_now() - t0;
    CHECK(rc == -1 && err.code == NC_E_INTERRUPTED, "interrupted: %d %s", err.code, err.message);
    CHECK(el >= 0.2 && el < 0.2 + 0.5 * nc_time_scale(), "soon after the stop: %.2f s", el);
    close(silent);
    close(live);
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"cluster_patroni4", test_cluster_patroni4},
        {"cluster_patroni3", test_cluster_patroni3},
        {"cluster_strings", test_cluster_strings},
        {"cluster_malformed", test_cluster_malformed},
        {"cluster_every_prefix", test_cluster_every_prefix},
        {"http", test_http},
        {"url", test_url},
        {"fetch_fallback", test_fetch_fallback},
        {"fetch_all_fail", test_fetch_all_fail},
        {"fetch_bad_answer", test_fetch_bad_answer},
        {"fetch_interrupted", test_fetch_interrupted},
    };
    return nc_run_cases("test_patroni", cases, NC_NCASES(cases));
}
