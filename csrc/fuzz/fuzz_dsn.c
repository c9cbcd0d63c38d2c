/* fuzz_dsn.c - libFuzzer target for the core's DSN handling: nc_pg_ctx_new
 * (csrc/core/nc_pg.c), which checks a PostgreSQL connection string (URI or
 * key=value) with libpq's PQconninfoParse, splits the multi-host lists
 * (host, hostaddr, port) it connects to one at a time, and makes the
 * "user@host:port/db" display used in messages.  (sqlite:/// URLs are read
 * by the Python layer, noodlecore/database/config.py, not by the core.)
 *
 * The input is the connection string up to its first NUL.  Checked beyond
 * "no crash, no sanitizer report":
 *   - the answer is the same twice, and it agrees with libpq: a string libpq
 *     cannot parse is refused with 2013, one it parses is refused only for
 *     host/hostaddr/port lists of different lengths;
 *   - a refusal's message is valid UTF-8 (whatever the string holds: libpq
 *     decodes %XX in a URI) and never holds the password;
 *   - the display is NUL-terminated, valid UTF-8 (also when it was cut at
 *     its 256 bytes), and never holds the
 *     password (when the password is not also the user, host, port or
 *     database name, which the display rightly shows);
 *   - nc_pg_split_hosts (DatabaseFailoverManager.from_dsn) accepts what
 *     nc_pg_ctx_new accepts, one piece per host (refusing only an empty
 *     entry of the host lists); each piece is accepted again and splits into
 *     itself (same name), has no target_session_attrs, and its name is valid
 *     UTF-8 without the password (unless hosts and ports joined as a name
 *     joins them make it up, or it is too short to say).
 * A broken promise prints what failed and aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "nc_error.h"
#include "nc_pg.h"
#include "utf8_check.h"   /* csrc/tests: the tests' UTF-8 oracle */

#include "fuzz_check.h"

static int list_len(const char *s)
{
    if (!s)
        return 0;
    int n = 1;
    for (; *s; s++)
        n += *s == ',';
    return n;
}

static int count_in(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* Whether text shown in a name ("host:port") explains pw there: pw is part
 * of the hosts, addresses or ports (or the defaults), or is made of such
 * parts joined by ':' as a name joins host and port (":543", "2:54"). */
static int named_in(const char *pw, const char *const *shown)
{
    char piece[256];
    for (const char *p = pw;;) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n >= sizeof piece)
            return 0;
        memcpy(piece, p, n);
        piece[n] = '\0';
        int found = n == 0 || strstr("5432", piece) || strstr("localhost", piece);
        for (int i = 0; !found && i < 3; i++)
            found = shown[i] && strstr(shown[i], piece);
        if (!found)
            return 0;
        if (!end)
            return 1;
        p = end + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *dsn = malloc(size + 1);
    if (!dsn)
        abort();
    memcpy(dsn, data, size);
    dsn[size] = '\0';

    /* What libpq makes of it, for the checks. */
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &msg);
    PQfreemem(msg);
    const char *password = NULL, *others[5] = {NULL};
    int nh = 0, na = 0, np = 0;
    if (opts) {
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (!o->val)
                continue;
            if (!strcmp(o->keyword, "password"))
                password = o->val;
            else if (!strcmp(o->keyword, "host"))
                others[0] = o->val, nh = list_len(o->val);
            else if (!strcmp(o->keyword, "hostaddr"))
                others[1] = o->val, na = list_len(o->val);
            else if (!strcmp(o->keyword, "port"))
                others[2] = o->val, np = list_len(o->val);
            else if (!strcmp(o->keyword, "user"))
                others[3] = o->val;
            else if (!strcmp(o->keyword, "dbname"))
                others[4] = o->val;
        }
    }
    /* The password can be found in the display only where the display
     * shows another field that holds the same text ("user@host:port/db",
     * host from hostaddr, the defaults localhost and 5432); too short a
     * password says nothing. */
    int pw_secret = password && strlen(password) >= 4;
    if (pw_secret) {
        const char *user = others[3], *db = others[4];
        const char *host = others[0] ? others[0] : others[1] ? others[1] : "localhost";
        size_t cap = 64 + strlen(host) + (user ? strlen(user) : 0) + (others[2] ? strlen(others[2]) : 0)
                     + (db ? strlen(db) : 0);
        char *shown = malloc(cap);
        if (!shown)
            abort();
        snprintf(shown, cap, "%s@%s:%s/%s", user ? user : "", host, others[2] ? others[2] : "5432",
                 db ? db : (user ? user : ""));
        if (strstr(shown, password))
            pw_secret = 0;
        free(shown);
    }
    /* A message quotes parts of a string libpq cannot parse (an option name,
     * a position): the password is looked for there when it cannot be one of
     * those nor libpq's own words: 8 bytes or more with a letter and a digit
     * and no space, found once in the whole string. */
    int pw_in_msg = pw_secret && strlen(password) >= 8 && !strchr(password, ' ') && count_in(dsn, password) == 1;
    int letter = 0, digit = 0;
    for (const char *p = password; pw_in_msg && *p; p++)
        letter |= (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'), digit |= *p >= '0' && *p <= '9';
    pw_in_msg = pw_in_msg && letter && digit;
    nc_error err, err2;
    nc_error_clear(&err);
    nc_error_clear(&err2);
    void *ctx = nc_pg_ctx_new(dsn, &err);
    void *ctx2 = nc_pg_ctx_new(dsn, &err2);
    CHECK(!ctx == !ctx2, "two answers for one string");
    if (!opts) {
        CHECK(!ctx, "a string libpq cannot parse was accepted");
    } else if (!ctx) {
        int hosts = nh > na ? nh : na;
        CHECK(err.code == NC_E_CONFIG, "refused with code %d: %s", err.code, err.message);
        CHECK((hosts > 1 && ((nh && na && nh != na) || (np > 1 && np != hosts))) || hosts > NC_PG_MAX_HOSTS
                  || np > NC_PG_MAX_HOSTS,
              "a string libpq parses, with matching lists and at most %d hosts, was refused: %s", NC_PG_MAX_HOSTS,
              err.message);
    }
    if (!ctx) {
        CHECK(err.code == NC_E_CONFIG || err.code == NC_E_INTERNAL, "refused with code %d", err.code);
        CHECK(!strcmp(err.message, err2.message), "two messages");
        CHECK(utf8_ok(err.message), "the message is not valid UTF-8: %s", err.message);
        CHECK(!pw_in_msg || !strstr(err.message, password), "the password is in the message: %s", err.message);
    } else {
        const char *display = nc_pg_ctx_display(ctx);
        CHECK(display && memchr(display, '\0', 256), "display not NUL-terminated in its 256 bytes");
        CHECK(!strcmp(display, nc_pg_ctx_display(ctx2)), "two displays");
        CHECK(utf8_ok(display), "the display is not valid UTF-8: %s", display);
        /* (the display's invalid UTF-8 bytes become '?', as in the names) */
        CHECK(!pw_secret || strchr(password, '?') || !strstr(display, password),
              "the password is in the display: %s", display);
    }
    if (ctx) {
        char *dsns[NC_PG_MAX_HOSTS], *names[NC_PG_MAX_HOSTS];
        nc_error se;
        nc_error_clear(&se);
        int n = nc_pg_split_hosts(dsn, dsns, names, NC_PG_MAX_HOSTS, &se);
        int hosts = nh > na ? nh : na;
        CHECK(n > 0 || se.code == NC_E_FO_SPLIT_DSN || se.code == NC_E_INTERNAL, "split refused with %d: %s",
              se.code, se.message);
        CHECK(n < 0 || n == (hosts > 0 ? hosts : 1), "%d pieces for %d hosts", n, hosts);
        int pw_named = pw_secret && named_in(password, others);
        for (int i = 0; i < n; i++) {
            CHECK(utf8_ok(names[i]), "a name is not valid UTF-8: %s", names[i]);
            /* (a name's invalid UTF-8 bytes become '?': a password with one may match them) */
            CHECK(!pw_secret || pw_named || strchr(password, '?') || !strstr(names[i], password),
                  "the password is in a name: %s", names[i]);
            PQconninfoOption *po = PQconninfoParse(dsns[i], NULL);
            CHECK(po, "libpq cannot parse piece %d", i);
            for (PQconninfoOption *o = po; o->keyword; o++)
                CHECK(!o->val || strcmp(o->keyword, "target_session_attrs"), "a piece keeps target_session_attrs");
            PQconninfoFree(po);
            char *one[NC_PG_MAX_HOSTS], *nm[NC_PG_MAX_HOSTS];
            nc_error e1;
            nc_error_clear(&e1);
            int k = nc_pg_split_hosts(dsns[i], one, nm, NC_PG_MAX_HOSTS, &e1);
            CHECK(k == 1, "piece %d splits into %d: %s", i, k, e1.message);
            CHECK(k != 1 || !strcmp(nm[0], names[i]), "piece %d is named %s, not %s", i, k == 1 ? nm[0] : "",
                  names[i]);
            for (int j = 0; j < k; j++) {
                free(one[j]);
                free(nm[j]);
            }
            free(dsns[i]);
            free(names[i]);
        }
        nc_pg_ops.ctx_free(ctx);
    }
    if (ctx2)
        nc_pg_ops.ctx_free(ctx2);
    PQconninfoFree(opts);
    free(dsn);
    return 0;
}
