"""``noodlecore-db demo``: the command, and its one-pool form (``--db DSN``).

Owns: checking the demo's options and choosing the demo (SQLite with a
simulated outage in demo_sqlite, real PostgreSQL servers in demo_postgres,
a real Patroni cluster in demo_patroni),
and the single-pool demo: the workload on one DSN, no outage, the demo's
table removed again if the demo made it.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..config import redact_dsn
from ..connection_pool import DatabaseConnectionPool
from .demo_patroni import run_patroni_demo
from .demo_postgres import run_postgres_demo
from .demo_sqlite import run_sqlite_demo
from .output import EXIT_FAIL, EXIT_OK, Style, UsageError, is_tty, print_json, render_table
from .workload import CREATE_SQL, TABLE, Display, Workload, final_lines, print_problems, sleep_until


def run_single_pool_demo(args: argparse.Namespace, style: Style) -> int:
    url = args.db
    say = (lambda *a: None) if args.json else print
    say(style(f"noodlecore demo: {args.threads} worker threads on a pool of {args.pool_size} connections "
              f"to {redact_dsn(url)} for {args.seconds:g} s (one endpoint: no outage; run without --db for the "
              "failover demo)", "bold"))
    with DatabaseConnectionPool(url, max_connections=args.pool_size, timeout=10) as pool:
        with pool.get_connection() as conn:
            existed = _table_exists(conn, pool.backend_kind)
            conn.execute_query(CREATE_SQL)
        work = Workload(pool.get_connection, args.threads)
        display = Display(live=is_tty() and not args.json, quiet=args.json, style=style, progress=lambda: "")

        def progress() -> str:
            st = pool.get_stats()
            el = max(1e-9, time.monotonic() - display.t0)
            return (f"  {el:5.1f} s  queries {st.query_count:,} ({st.query_count / el:,.0f}/s)  in use "
                    f"{st.active_connections}  idle {st.idle_connections}  waiting {st.requests_waiting}")

        display.progress = progress
        display.start()
        t0 = time.monotonic()
        work.start()
        sleep_until(t0 + args.seconds)
        work.stop()
        elapsed = time.monotonic() - t0
        display.close()
        with pool.get_connection() as conn:
            row = conn.execute_query(f"SELECT count(*) AS orders, coalesce(sum(amount), 0) AS total FROM {TABLE} "
                                     f"WHERE id >= {work.base} AND id < {work.base + 2 ** 31}")[0]
            if not existed:
                conn.execute_query(f"DROP TABLE {TABLE}")
        stats = pool.get_stats().to_dict()
    result = {"orders": row["orders"], "total": round(float(row["total"]), 2)}
    problems = [] if not (work.total("failures") or work.crashed) else \
        [f"{work.total('failures')} operation(s) failed"]
    if args.json:
        print_json({"mode": "single", "simulated": False, "stats": stats, "result": result,
                     "failures": work.total("failures"), "retried": work.total("retried"),
                     "errors_seen": work.last_errors, "seconds": elapsed})
    else:
        print(render_table([result], style))
        for line in final_lines(stats, {}, elapsed, work, style):
            print(line)
        print_problems(problems, work, style)
    return EXIT_FAIL if problems else EXIT_OK


def _table_exists(conn: Any, kind: str) -> bool:
    if kind == "sqlite":
        q = "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = %s"
    else:
        q = "SELECT count(*) AS n FROM pg_catalog.pg_tables WHERE tablename = %s"
    return bool(conn.execute_query(q, (TABLE,))[0]["n"])


def cmd_demo(args: argparse.Namespace) -> int:
    if args.threads < 1 or args.pool_size < 1:
        raise UsageError("--threads and --pool-size must be at least 1")
    if not 0 < args.seconds <= 300:
        raise UsageError("--seconds must be above 0 and at most 300")
    if sum(bool(x) for x in (args.postgres, args.db, args.patroni)) > 1:
        raise UsageError("--postgres, --patroni and --db exclude each other")
    style = Style.for_stdout(args.json)
    if args.patroni:
        return run_patroni_demo(args, style)
    if args.postgres:
        return run_postgres_demo(args, style)
    if args.db:
        return run_single_pool_demo(args, style)
    return run_sqlite_demo(args, style)


