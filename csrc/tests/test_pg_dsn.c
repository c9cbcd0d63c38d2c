/* test_pg_dsn.c - nc_pg_ctx_new, the core's reading of a PostgreSQL DSN,
 * without a server: what it refuses, and that its messages and its display
 * are always valid UTF-8 (the Python layer decodes them).  csrc/fuzz/fuzz_dsn
 * checks the same promises on fuzzed strings; this program holds the cases
 * it found. */
#include <string.h>

#include "check.h"
#include "nc_error.h"
#include "nc_pg.h"
#include "utf8_check.h"

/* A refused string: 2013, a valid UTF-8 message holding want. */
static void refused(const char *dsn, const char *want)
{
    nc_error err;
    nc_error_clear(&err);
    void *ctx = nc_pg_ctx_new(dsn, &err);
    CHECK(ctx == NULL, "%s: accepted", dsn);
    if (ctx) {
        nc_pg_ops.ctx_free(ctx);
        return;
    }
    CHECK(err.code == NC_E_CONFIG, "%s: code %d", dsn, err.code);
    CHECK(utf8_ok(err.message), "%s: message not UTF-8: %s", dsn, err.message);
    CHECK(strstr(err.message, want) != NULL, "%s: message '%s' without '%s'", dsn, err.message, want);
}

/* An accepted string: its display, valid UTF-8. */
static void display(const char *dsn, const char *want)
{
    nc_error err;
    nc_error_clear(&err);
    void *ctx = nc_pg_ctx_new(dsn, &err);
    CHECK(ctx != NULL, "%s: refused: %s", dsn, err.message);
    if (!ctx)
        return;
    const char *d = nc_pg_ctx_display(ctx);
    CHECK(utf8_ok(d), "%s: display not UTF-8: %s", dsn, d);
    CHECK(!strcmp(d, want), "%s: display '%s', expected '%s'", dsn, d, want);
    nc_pg_ops.ctx_free(ctx);
}

/* libpq decodes %XX in a URI: the bytes it gives need not be UTF-8 even
 * when the string is ASCII. */
static void test_percent_decoded_bytes(void)
{
    refused("postgres://u:secretpw@127.0.0.1/app?sslmode=disable&con%ect_timeout=3",
            "invalid URI query parameter: \"con?t_timeout\"");
    refused("postgresql://h/d?%ff=1", "\"?\"");
    display("postgresql://%ff%fe@h/db", "??@h:5432/db");
    display("postgresql://u@h%e9/db", "u@h?:5432/db");
    display("postgresql://u@h/%c3%a9%c3", "u@h:5432/\xc3\xa9");         /* a cut tail goes */
    display("postgresql://u@h/%ed%a0%80", "u@h:5432/???");          /* a surrogate */
    display("postgresql://u@h/%f4%90%80%80", "u@h:5432/????");      /* past U+10FFFF */
    display("postgresql://u@h/%c0%af", "u@h:5432/??");              /* overlong / */
}

static void test_valid_text_kept(void)
{
    display("postgresql://u@h/%c3%a9", "u@h:5432/\xc3\xa9");
    display("user=\xc3\xa9 host=h\xe2\x82\xac dbname=\xf0\x9f\x8d\x9c", "\xc3\xa9@h\xe2\x82\xac:5432/\xf0\x9f\x8d\x9c");
    display("host=a,b port=1,2 dbname=d", "a,b:1,2/d");
    refused("host=a,b,c port=1,2", "lists differ in length");
    refused("host='unterminated", "unterminated quoted string");
}

/* A multi-host string split into one string per endpoint (the failover
 * manager's from_dsn): list order, each host's port, the other settings
 * kept, target_session_attrs dropped, names without the password. */
static void test_split_hosts(void)
{
    char *dsns[NC_PG_MAX_HOSTS], *names[NC_PG_MAX_HOSTS];
    nc_error err;
    nc_error_clear(&err);
    int n = nc_pg_split_hosts("postgresql://u:s3cret@h1:5432,h2:5433/db?target_session_attrs=read-write"
                              "&connect_timeout=3&application_name=it's",
                              dsns, names, NC_PG_MAX_HOSTS, &err);
    CHECK(n == 2, "two: %d %s", n, err.message);
    if (n == 2) {
        CHECK(!strcmp(names[0], "h1:5432") && !strcmp(names[1], "h2:5433"), "names %s %s", names[0], names[1]);
        CHECK(strstr(dsns[0], "host='h1'") && strstr(dsns[0], "port='5432'") && strstr(dsns[1], "host='h2'") &&
                  strstr(dsns[1], "port='5433'"),
              "hosts: %s | %s", dsns[0], dsns[1]);
        CHECK(!strstr(dsns[0], "target_session_attrs") && !strstr(dsns[1], "h1"), "dropped: %s | %s", dsns[0],
              dsns[1]);
        CHECK(strstr(dsns[1], "dbname='db'") && strstr(dsns[1], "user='u'") && strstr(dsns[1], "password='s3cret'") &&
                  strstr(dsns[1], "connect_timeout='3'") && strstr(dsns[1], "application_name='it\\'s'"),
              "kept and quoted: %s", dsns[1]);
        CHECK(!strstr(names[0], "s3cret"), "no password in a name");
        /* Each piece is a valid connection string for one host. */
        for (int i = 0; i < n; i++) {
            char *one[NC_PG_MAX_HOSTS], *nm[NC_PG_MAX_HOSTS];
            int k = nc_pg_split_hosts(dsns[i], one, nm, NC_PG_MAX_HOSTS, &err);
            CHECK(k == 1 && !strcmp(nm[0], names[i]), "piece %d: %d %s", i, k, err.message);
            for (int j = 0; j < k; j++) {
                free(one[j]);
                free(nm[j]);
            }
            free(dsns[i]);
            free(names[i]);
        }
    }
    n = nc_pg_split_hosts("host=a,b,c port=1,2,3 dbname=x", dsns, names, NC_PG_MAX_HOSTS, &err);
    CHECK(n == 3 && !strcmp(names[2], "c:3"), "key=value form: %d", n);
    for (int i = 0; i < n; i++) {
        free(dsns[i]);
        free(names[i]);
    }
    n = nc_pg_split_hosts("host=a,b port=7 dbname=x", dsns, names, NC_PG_MAX_HOSTS, &err);
    CHECK(n == 2 && !strcmp(names[0], "a:7") && !strcmp(names[1], "b:7"), "one port for all: %d", n);
    for (int i = 0; i < n; i++) {
        free(dsns[i]);
        free(names[i]);
    }
    CHECK(nc_pg_split_hosts("host=a,,b", dsns, names, NC_PG_MAX_HOSTS, &err) == -1 && err.code == NC_E_FO_SPLIT_DSN,
          "empty host: %d", err.code);
    CHECK(nc_pg_split_hosts("host=a,b port=1,2,3", dsns, names, NC_PG_MAX_HOSTS, &err) == -1 &&
              err.code == NC_E_CONFIG,
          "lists differ: %d", err.code);
    CHECK(nc_pg_split_hosts("host=a,b,c", dsns, names, 2, &err) == -1 && err.code == NC_E_CONFIG, "over cap");
    CHECK(nc_pg_split_hosts("nonsense", dsns, names, 2, &err) == -1 && err.code == NC_E_CONFIG, "bad string");
}

int main(void)
{
    static const nc_test_case cases[] = {
        {"percent_decoded_bytes", test_percent_decoded_bytes},
        {"valid_text_kept", test_valid_text_kept},
        {"split_hosts", test_split_hosts},
    };
    return nc_run_cases("test_pg_dsn", cases, NC_NCASES(cases));
}
