"""noodlecore-db: a small command line around the pool.

  noodlecore-db demo [--db URL] [--threads N] [--seconds S] [--json]
      Worker threads borrow from a pool and run queries for a few seconds
      against the embedded default (a SQLite file in a temp dir, no server
      needed), then print what the pool did.
  noodlecore-db query DSN SQL [--param name=value ...] [--json]
      Run one statement and print the rows as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

from .connection_pool import DatabaseConnectionPool
from .errors import Error


def _table(rows: list) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0].keys())
    cells = [[str(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "  ".join("-" * w for w in widths)
    body = "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells)
    return f"{line}\n{sep}\n{body}"


def cmd_demo(args: argparse.Namespace) -> int:
    tmp = None
    url = args.db
    if url is None:
        tmp = tempfile.TemporaryDirectory(prefix="noodlecore-demo-")
        url = f"sqlite:///{os.path.join(tmp.name, 'demo.db')}"
    live = sys.stdout.isatty() and not args.json
    out = (lambda *a: None) if args.json else print
    out(f"noodlecore demo: {args.threads} worker threads on a pool of {args.pool_size} "
        f"connections to {url} for {args.seconds:g} s")
    with DatabaseConnectionPool(url, max_connections=args.pool_size, timeout=10) as pool:
        with pool.get_connection() as conn:
            conn.execute_query("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, "
                               "worker INTEGER, amount REAL)")
        stop = time.monotonic() + args.seconds
        failures: list = []

        def worker(k: int) -> None:
            i = 0
            try:
                while time.monotonic() < stop:
                    with pool.get_connection() as c:
                        if i % 4 == 0:
                            c.execute_query("INSERT INTO orders (worker, amount) VALUES (%s, %s)",
                                            (k, i * 1.5))
                        else:
                            c.execute_query("SELECT count(*) AS n FROM orders WHERE worker = %(w)s",
                                            {"w": k})
                    i += 1
            except Error as exc:
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(args.threads)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(0.25)
            if live:
                s = pool.get_stats()
                sys.stdout.write(f"\r  {time.monotonic() - t0:4.1f} s  queries {s.query_count:7d}  "
                                 f"active {s.active_connections}  idle {s.idle_connections}  "
                                 f"waiting {s.requests_waiting}   ")
                sys.stdout.flush()
        for t in threads:
            t.join()
        if live:
            sys.stdout.write("\n")
        with pool.get_connection() as conn:
            rows = conn.execute_query("SELECT count(*) AS orders, round(sum(amount), 2) AS total "
                                      "FROM orders")
        stats = pool.get_stats()
    if tmp is not None:
        tmp.cleanup()
    elapsed = time.monotonic() - t0
    if args.json:
        print(json.dumps({"stats": stats.to_dict(), "result": rows[0], "failures": len(failures),
                          "seconds": elapsed}, default=str))
    else:
        print(_table(rows))
        print(f"queries: {stats.query_count} in {elapsed:.1f} s "
              f"({stats.query_count / elapsed:,.0f}/s), errors: {stats.error_count}, "
              f"connections opened: {stats.connections_opened}, acquire wait p50/p99: "
              f"{stats.acquire_wait_p50 * 1e6:.0f}/{stats.acquire_wait_p99 * 1e6:.0f} us, "
              f"health: {stats.pool_health_score}")
    return 1 if failures else 0


def cmd_query(args: argparse.Namespace) -> int:
    params = {}
    for p in args.param or []:
        if "=" not in p:
            print(f"noodlecore-db: --param {p!r} is not name=value", file=sys.stderr)
            return 2
        k, v = p.split("=", 1)
        params[k] = v
    with DatabaseConnectionPool(args.dsn, max_connections=1, retry_attempts=1,
                                timeout=args.timeout, connect_timeout=args.timeout) as pool:
        with pool.get_connection() as conn:
            result = conn.execute_query(args.sql, params if params else None, timeout=args.timeout)
    if args.json:
        print(json.dumps(result, default=str))
    elif isinstance(result, list):
        print(_table(result))
    else:
        print(f"{result} row(s) affected")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="noodlecore-db", description="noodlecore database pool tools")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="worker threads on a pool, embedded SQLite by default")
    d.add_argument("--db", help="DSN to use instead of a temporary SQLite file")
    d.add_argument("--threads", type=int, default=8)
    d.add_argument("--pool-size", type=int, default=4)
    d.add_argument("--seconds", type=float, default=3.0)
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.set_defaults(func=cmd_demo)
    q = sub.add_parser("query", help="run one statement and print the rows")
    q.add_argument("dsn")
    q.add_argument("sql")
    q.add_argument("--param", action="append", metavar="NAME=VALUE", help="a %%(name)s parameter")
    q.add_argument("--timeout", type=float, default=10.0)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_query)
    return ap


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Error as exc:
        print(f"noodlecore-db: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
