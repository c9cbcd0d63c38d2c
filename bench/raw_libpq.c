/*
 * raw_libpq: the floor for the pool benchmarks -- plain libpq loops in C, no pool.
 *
 * Build:  gcc -O2 -pthread -I$(pg_config --includedir) raw_libpq.c -o raw_libpq -L$(pg_config --libdir) -lpq
 *
 * Usage:  raw_libpq DSN MODE [ARGS...]      (prints one JSON object on stdout)
 *
 *   raw_libpq DSN select1 N REPS        REPS runs of N x PQexec("SELECT 1") on one connection
 *                                       (result checked and cleared each time): us per query
 *   raw_libpq DSN select1params N REPS  same with PQexecParams("SELECT 1", 0 params, text result)
 *   raw_libpq DSN threads T SECS [WARM] T threads, one connection each, PQexec("SELECT 1") in a
 *                                       loop; WARM seconds of warm-up, then SECS measured: qps
 *   raw_libpq DSN fetch REPS [TABLE]    REPS runs of PQexec("SELECT * FROM TABLE"): seconds per
 *                                       run for the result alone, and for result + walking every
 *                                       value and converting (int4 -> strtol, float8 -> strtod)
 *   raw_libpq DSN serve                 one connection; reads commands from stdin, one per line,
 *                                       answers each with one JSON line (bench/run.py uses this
 *                                       to interleave its repetitions with the Python workers):
 *                                         select1 N | select1params N   -> {"us": per query}
 *                                         fetch [TABLE]                 -> {"s": .., "s_convert": ..}
 *                                         threads T SECS WARM           -> {"qps": ..} (own conns)
 *                                         quit
 *                                       the first command of each kind runs a warm-up first
 */

#define _GNU_SOURCE
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, PGconn *c)
{
    fprintf(stderr, "raw_libpq: %s: %s\n", what, c ? PQerrorMessage(c) : "(no connection)");
    exit(2);
}

static PGconn *connect_or_die(const char *dsn)
{
    PGconn *c = PQconnectdb(dsn);
    if (c == NULL || PQstatus(c) != CONNECTION_OK)
        die("connect", c);
    return c;
}

static void select1(PGconn *c, int params)
{
    PGresult *r = params ? PQexecParams(c, "SELECT 1", 0, NULL, NULL, NULL, NULL, 0)
                         : PQexec(c, "SELECT 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        die("SELECT 1", c);
    PQclear(r);
}

static double run_select1(PGconn *c, int n, int params)
{
    double t0 = now();
    for (int i = 0; i < n; i++)
        select1(c, params);
    return (now() - t0) / n * 1e6;
}

/* One fetch: *plain = seconds until the PGresult is complete, *conv = plus walking
 * every value; returns the row count. */
static long run_fetch(PGconn *c, const char *sql, double *plain, double *conv)
{
    static volatile double sink;
    double t0 = now();
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("fetch", c);
    double t1 = now();
    long rows = PQntuples(r);
    int nf = PQnfields(r);
    double acc = 0;
    for (long i = 0; i < rows; i++)
        for (int f = 0; f < nf; f++) {
            if (PQgetisnull(r, (int)i, f))
                continue;
            const char *v = PQgetvalue(r, (int)i, f);
            switch (PQftype(r, f)) {
            case 23: /* int4 */
            case 20: /* int8 */
                acc += (double)strtoll(v, NULL, 10);
                break;
            case 701: /* float8 */
                acc += strtod(v, NULL);
                break;
            default:
                acc += (double)PQgetlength(r, (int)i, f);
            }
        }
    double t2 = now();
    sink += acc;
    PQclear(r);
    *plain = t1 - t0;
    *conv = t2 - t0;
    return rows;
}

static void print_list(const char *key, const double *v, int n, double scale)
{
    printf("\"%s\": [", key);
    for (int i = 0; i < n; i++)
        printf("%s%.6f", i ? ", " : "", v[i] * scale);
    printf("]");
}

static int mode_select1(const char *dsn, int n, int reps, int params)
{
    PGconn *c = connect_or_die(dsn);
    double *us = calloc((size_t)reps, sizeof(double));
    for (int i = 0; i < n / 10 + 100; i++)   /* warm-up */
        select1(c, params);
    for (int rep = 0; rep < reps; rep++)
        us[rep] = run_select1(c, n, params);
    printf("{\"mode\": \"%s\", \"n\": %d, \"reps\": %d, ", params ? "select1params" : "select1", n, reps);
    print_list("us_per_op", us, reps, 1.0);
    printf(", \"libpq_version\": %d}\n", PQlibVersion());
    PQfinish(c);
    free(us);
    return 0;
}

/* ---- threads ---------------------------------------------------------- */

struct worker {
    pthread_t tid;
    const char *dsn;
    PGconn *conn;
    _Atomic long count;
};

static atomic_int stop_flag;
static pthread_barrier_t start_barrier;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_barrier_wait(&start_barrier);
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        select1(w->conn, 0);
        atomic_fetch_add_explicit(&w->count, 1, memory_order_relaxed);
    }
    return NULL;
}

static long total(struct worker *ws, int t)
{
    long s = 0;
    for (int i = 0; i < t; i++)
        s += atomic_load(&ws[i].count);
    return s;
}

static int mode_threads(const char *dsn, int t, double secs, double warm)
{
    struct worker *ws = calloc((size_t)t, sizeof(*ws));
    atomic_store(&stop_flag, 0);
    for (int i = 0; i < t; i++) {
        ws[i].dsn = dsn;
        ws[i].conn = connect_or_die(dsn);
    }
    pthread_barrier_init(&start_barrier, NULL, (unsigned)t + 1);
    for (int i = 0; i < t; i++)
        if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
            fprintf(stderr, "raw_libpq: pthread_create failed\n");
            return 2;
        }
    pthread_barrier_wait(&start_barrier);
    usleep((useconds_t)(warm * 1e6));
    long c0 = total(ws, t);
    double t0 = now();
    usleep((useconds_t)(secs * 1e6));
    long c1 = total(ws, t);
    double t1 = now();
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < t; i++)
        pthread_join(ws[i].tid, NULL);
    printf("{\"mode\": \"threads\", \"threads\": %d, \"seconds\": %.6f, \"ops\": %ld, \"qps\": %.1f}\n",
           t, t1 - t0, c1 - c0, (double)(c1 - c0) / (t1 - t0));
    fflush(stdout);
    pthread_barrier_destroy(&start_barrier);
    for (int i = 0; i < t; i++)
        PQfinish(ws[i].conn);
    free(ws);
    return 0;
}

static int mode_serve(const char *dsn)
{
    PGconn *c = connect_or_die(dsn);
    char line[512], arg[256];
    int warmed[3] = {0, 0, 0};
    printf("{\"ready\": true, \"libpq_version\": %d}\n", PQlibVersion());
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        int n, t;
        double secs, warm;
        if (strncmp(line, "quit", 4) == 0)
            break;
        if (sscanf(line, "select1params %d", &n) == 1 || sscanf(line, "select1 %d", &n) == 1) {
            int params = strncmp(line, "select1params", 13) == 0;
            if (!warmed[params]) {
                run_select1(c, n / 10 + 100, params);
                warmed[params] = 1;
            }
            printf("{\"us\": %.6f}\n", run_select1(c, n, params));
        } else if (strncmp(line, "fetch", 5) == 0) {
            char sql[300];
            double p, v;
            if (sscanf(line, "fetch %255s", arg) != 1)
                strcpy(arg, "bench_rows");
            snprintf(sql, sizeof sql, "SELECT * FROM %s", arg);
            if (!warmed[2]) {
                run_fetch(c, sql, &p, &v);
                warmed[2] = 1;
            }
            long rows = run_fetch(c, sql, &p, &v);
            printf("{\"s\": %.6f, \"s_convert\": %.6f, \"rows\": %ld}\n", p, v, rows);
        } else if (sscanf(line, "threads %d %lf %lf", &t, &secs, &warm) == 3) {
            mode_threads(dsn, t, secs, warm);
        } else {
            printf("{\"error\": \"bad command\"}\n");
        }
        fflush(stdout);
    }
    PQfinish(c);
    return 0;
}

/* ---- fetch ------------------------------------------------------------ */

static int mode_fetch(const char *dsn, int reps, const char *table)
{
    PGconn *c = connect_or_die(dsn);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT * FROM %s", table);
    double *plain = calloc((size_t)reps, sizeof(double));
    double *conv = calloc((size_t)reps, sizeof(double));
    long rows = 0;
    double p, v;
    run_fetch(c, sql, &p, &v);                        /* warm-up */
    for (int rep = 0; rep < reps; rep++)
        rows = run_fetch(c, sql, &plain[rep], &conv[rep]);
    printf("{\"mode\": \"fetch\", \"rows\": %ld, \"reps\": %d, ", rows, reps);
    print_list("seconds", plain, reps, 1.0);
    printf(", ");
    print_list("seconds_with_convert", conv, reps, 1.0);
    printf("}\n");
    PQfinish(c);
    free(plain);
    free(conv);
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: raw_libpq DSN select1 N REPS\n"
            "       raw_libpq DSN select1params N REPS\n"
            "       raw_libpq DSN threads T SECS [WARM]\n"
            "       raw_libpq DSN fetch REPS [TABLE]\n"
            "       raw_libpq DSN serve\n");
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        usage();
    const char *dsn = argv[1], *mode = argv[2];
    if (strcmp(mode, "serve") == 0 && argc == 3)
        return mode_serve(dsn);
    if (strcmp(mode, "select1") == 0 && argc == 5)
        return mode_select1(dsn, atoi(argv[3]), atoi(argv[4]), 0);
    if (strcmp(mode, "select1params") == 0 && argc == 5)
        return mode_select1(dsn, atoi(argv[3]), atoi(argv[4]), 1);
    if (strcmp(mode, "threads") == 0 && (argc == 5 || argc == 6))
        return mode_threads(dsn, atoi(argv[3]), atof(argv[4]), argc == 6 ? atof(argv[5]) : 0.5);
    if (strcmp(mode, "fetch") == 0 && (argc == 4 || argc == 5))
        return mode_fetch(dsn, atoi(argv[3]), argc == 5 ? argv[4] : "bench_rows");
    usage();
    return 1;
}
