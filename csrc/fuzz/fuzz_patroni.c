/* fuzz_patroni.c - libFuzzer target for the Patroni REST client's parsers
 * (csrc/core/nc_patroni.c): what a member's REST API sends back goes through
 * nc_patroni_parse_http, and its body through nc_patroni_parse_cluster; the
 * input is also read as a bare /cluster document and (up to its first NUL) as
 * a URL for nc_patroni_parse_url.  Inputs are copied into buffers of exactly
 * their size, so ASan sees any read past the end.
 *
 * Checked beyond "no crash, no sanitizer report":
 *   - every call answers 0 or -1, the same twice, and -1 always with the
 *     parser's own code (4026 answers, 4027 URLs) and a message;
 *   - a parsed body lies inside the input (or in the returned copy, for a
 *     chunked one, no longer than the input);
 *   - a parsed cluster has 0..NC_PATRONI_MAX_MEMBERS members whose strings are
 *     NUL-terminated within their fields and whose port is 0..65535;
 *   - a parsed URL has a non-empty host and a port in 1..65535.
 * A broken promise prints what failed and aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nc_error.h"
#include "nc_patroni.h"

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "fuzz_patroni: %s:%d: broken promise: %s: ", __FILE__, \
                    __LINE__, #cond);                                             \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
            abort();                                                              \
        }                                                                         \
    } while (0)

#define TERMINATED(field) (memchr((field), '\0', sizeof(field)) != NULL)

static nc_patroni_cluster c1, c2;

static void check_cluster(const char *buf, size_t len)
{
    nc_error e1, e2;
    nc_error_clear(&e1);
    nc_error_clear(&e2);
    int r1 = nc_patroni_parse_cluster(buf, len, &c1, &e1);
    int r2 = nc_patroni_parse_cluster(buf, len, &c2, &e2);
    CHECK(r1 == r2 && (r1 == 0 || r1 == -1), "answers %d then %d", r1, r2);
    if (r1 < 0) {
        CHECK(e1.code == NC_E_PATRONI_ANSWER && e1.message[0], "code %d", e1.code);
        CHECK(!strcmp(e1.message, e2.message), "messages differ");
        return;
    }
    CHECK(c1.n >= 0 && c1.n <= NC_PATRONI_MAX_MEMBERS && c1.n == c2.n, "n=%d", c1.n);
    CHECK(TERMINATED(c1.scope), "scope");
    for (int i = 0; i < c1.n; i++) {
        const nc_patroni_member *m = &c1.members[i];
        CHECK(TERMINATED(m->name) && TERMINATED(m->role) && TERMINATED(m->state) && TERMINATED(m->host)
              && TERMINATED(m->api_url), "member %d strings", i);
        CHECK(m->port >= 0 && m->port <= 65535, "port %d", m->port);
        CHECK(m->replay_lag >= NC_PATRONI_LAG_UNKNOWN && m->lag >= NC_PATRONI_LAG_UNKNOWN, "lag");
        CHECK(!memcmp(m, &c2.members[i], sizeof *m), "member %d differs", i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);

    /* as a whole HTTP answer */
    int status = 0;
    const char *body = NULL;
    size_t blen = 0;
    char *owned = NULL;
    nc_error err;
    nc_error_clear(&err);
    int r = nc_patroni_parse_http(buf, size, &status, &body, &blen, &owned, &err);
    CHECK(r == 0 || r == -1, "parse_http answered %d", r);
    if (r == 0) {
        CHECK(status >= 100 && status <= 599, "status %d", status);
        if (owned) {
            CHECK(body == owned && blen <= size && owned[blen] == '\0', "chunked body");
        } else {
            CHECK(body >= buf && body + blen <= buf + size, "body outside the input");
        }
        /* the body, in a buffer of its own size */
        char *b = malloc(blen ? blen : 1);
        if (b) {
            memcpy(b, body, blen);
            check_cluster(b, blen);
            free(b);
        }
        free(owned);
    } else {
        CHECK(err.code == NC_E_PATRONI_ANSWER && !owned, "code %d", err.code);
    }

    /* as a bare document */
    check_cluster(buf, size);

    /* as a URL, up to the first NUL */
    size_t ul = strnlen(buf, size);
    char *url = malloc(ul + 1);
    if (url) {
        memcpy(url, buf, ul);
        url[ul] = '\0';
        char host[256];
        int port = -1;
        nc_error_clear(&err);
        r = nc_patroni_parse_url(url, host, sizeof host, &port, &err);
        if (r == 0)
            CHECK(host[0] && strlen(host) < sizeof host && port >= 1 && port <= 65535, "url %s", url);
        else
            CHECK(r == -1 && err.code == NC_E_PATRONI_URL, "url answered %d code %d", r, err.code);
        free(url);
    }
    free(buf);
    return 0;
}
