"""noodlecore-db: the command line of noodlecore.database (``python -m noodlecore.database``).

  noodlecore-db demo [--postgres | --db DSN] [--threads N] [--pool-size N] [--seconds S] [--json]
      Worker threads under load through pools, an outage of the preferred
      endpoint, the failover and the failback the native monitor decides, and
      the final stats.  By default on two embedded SQLite files, no server
      needed, the outage SIMULATED by a flag (and said so); with --postgres on
      a throwaway PostgreSQL primary and streaming standby: a real SIGKILL of
      the primary and a pg_ctl promote.  With --db, a single pool on that DSN
      (no outage).
  noodlecore-db query DSN SQL [--param name=value ...] [--json]
      Run one statement and print the rows as a table.
  noodlecore-db status --endpoint ID=DSN [...] [--timeout S] [--json]
      One probe per endpoint: up/down, role, latency, replication lag.
  noodlecore-db watch --endpoint ID=DSN [...] [--interval S] [--count N] [--json]
      The status, refreshed.
  noodlecore-db bench [--builtin] [--dsn DSN] [--seconds S] [--json] [-- ARGS for bench/run.py]
      The pool benchmark (bench/run.py of a source checkout) or a built-in
      micro-bench of borrow/return and SELECT 1.

Exit status: 0 success; 1 a database, server or scenario failure (an endpoint
down, a query error, an unreachable server); 2 bad usage or input (unknown
command or option, a malformed DSN or parameter); 128+N on signal N (130 on
Ctrl-C).  Errors go to stderr as "noodlecore-db: [code] message".
Colour and live displays appear only when stdout is a terminal (and NO_COLOR
is unset); --json prints machine-readable output only.

Modules: main (the parser and main(), the query command), output (styles,
tables, JSON, log format, exit statuses), workload (what the demos share),
demo, demo_sqlite, demo_postgres, status (status and watch), bench.
"""
